"""Graceful degradation: a ladder of cheaper modes, stepped by the node's own measured cycle time.

A node feeds every cycle's duration to ``DegradationLadder.observe``. The ladder keeps an exponentially
weighted moving average (EWMA) of it, each sample first clipped to ``spike_clip * budget_ms``, and

* steps DOWN one level (cheaper) once the EWMA has been above ``budget_ms`` for ``down_after`` consecutive
  cycles - one slow cycle (a page fault, a GC pause, a scheduler hiccup) moves the EWMA by at most
  ``alpha * (spike_clip - 1) * budget`` and not for ``down_after`` cycles in a row, so a single spike, however
  long, does not degrade (without the clip one 50x spike would hold an EWMA above budget for a dozen cycles);
* steps UP one level (back towards full) once the EWMA has been below ``restore_fraction * budget_ms`` for
  ``up_after`` consecutive cycles - the gap between the two thresholds (hysteresis) and the longer wait
  going up keep a load that sits at the budget from flapping between two levels;
* after any change, waits ``cooldown`` cycles before judging again and restarts the EWMA from the first
  measurement at the new level, because times measured at the old level say nothing about the new one;
* backs off probing: when a step up is undone by a step down within ``probe_window`` cycles (the better
  level is still too expensive: the load did not fall, the cheaper level just hid it), the wait before the
  next step up doubles, up to ``max_up_after``; an up that holds for ``probe_window`` cycles resets it.
  So a load that only the cheaper level can carry costs one short probe (about ``cooldown + down_after``
  cycles over budget) per ``max_up_after`` cycles, not an oscillation every ``up_after`` cycles.

Why per-cycle counts and not seconds: the ladder is deterministic and testable with synthetic timings, and a
node's cycle is its natural unit (a GP node at 20 Hz waits 20 cycles = 1 s by default).

Levels, cheapest last (what each level switches is documented in ``NODE_LEVELS``; level 0 is full quality).
The ladder only decides; the node applies the level (it knows its own knobs) and reports ``stats()`` in its
NodeStats ``extra`` so the monitor puts it on ``/diagnostics``. ROS-free: no imports beyond the standard
library.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# The order each node degrades in (index = level). A node should move by one level at a time and apply
# everything of the levels above it too (each level is cumulative).
NODE_LEVELS: dict[str, tuple[str, ...]] = {
    # gp_inference_node: stop feeding the online place GP (its update is the O(n^2) part), then constant
    # velocity with the prior variance (no GP at all). The fitted motion GP is already sparse above
    # PredictorConfig.sparse_threshold windows, so there is no separate exact -> sparse step.
    "gp_inference_node": ("full", "no_online_learning", "constant_velocity"),
    # belief_node: particle filter with fewer particles, then the discrete Bayes filter.
    "belief_node": ("full", "fewer_particles", "bayes"),
    # mpc_node: shorter horizon, then fewer intent hypotheses per human (top-1: the GP prediction only).
    "mpc_node": ("full", "short_horizon", "fewer_hypotheses"),
}


@dataclass(frozen=True)
class LadderSettings:
    """Tuning of a DegradationLadder; the defaults suit a node cycling at 10-30 Hz."""

    alpha: float = 0.2  # EWMA weight of the newest cycle (0.2: about the last 10 cycles matter)
    down_after: int = 10  # consecutive cycles with EWMA > budget before stepping down
    up_after: int = 50  # consecutive cycles with EWMA < restore_fraction * budget before stepping up
    restore_fraction: float = 0.6  # hysteresis: load must fall this far below the budget to restore
    spike_clip: float = 2.0  # a cycle counts as at most this many budgets in the EWMA (spike robustness)
    cooldown: int = 10  # cycles after a change that are not judged (the new level settles)
    probe_window: int = 100  # an up undone by a down within this many cycles doubles the wait before ups
    max_up_after: int = 800  # ... up to this many cycles


    def validate(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.down_after < 1 or self.up_after < 1 or self.cooldown < 0 or self.probe_window < 0:
            raise ValueError("down_after and up_after must be >= 1 cycle, cooldown and probe_window >= 0 cycles")
        if self.max_up_after < self.up_after:
            raise ValueError(f"max_up_after ({self.max_up_after}) must be >= up_after ({self.up_after})")
        if not self.spike_clip > 1.0:
            raise ValueError(f"spike_clip must be > 1 (a multiple of the budget), got {self.spike_clip}")
        if not 0.0 < self.restore_fraction < 1.0:
            raise ValueError(f"restore_fraction must be in (0, 1) (hysteresis), got {self.restore_fraction}")


class DegradationLadder:
    """Chooses a level of ``levels`` (index 0: full quality, last: cheapest) from measured cycle times.

    ``observe(ms)`` returns the level to use for the next cycle. ``changes`` counts every change,
    ``downs``/``ups`` each direction; ``stats()`` is what the node publishes.
    """

    def __init__(self, levels: tuple[str, ...], budget_ms: float, settings: LadderSettings | None = None,
                 alpha: float | None = None, down_after: int | None = None, up_after: int | None = None,
                 restore_fraction: float | None = None, cooldown: int | None = None,
                 probe_window: int | None = None, max_up_after: int | None = None,
                 spike_clip: float | None = None) -> None:
        if len(levels) < 1 or len(set(levels)) != len(levels):
            raise ValueError(f"levels must be distinct names, full quality first, got {levels}")
        if not (math.isfinite(budget_ms) and budget_ms > 0.0):
            raise ValueError(f"budget_ms must be a positive number of milliseconds, got {budget_ms}")
        base = settings or LadderSettings()
        overrides = {k: v for k, v in {"alpha": alpha, "down_after": down_after, "up_after": up_after,
                                       "restore_fraction": restore_fraction, "cooldown": cooldown,
                                       "probe_window": probe_window, "max_up_after": max_up_after,
                                       "spike_clip": spike_clip}.items()
                     if v is not None}
        self.settings = LadderSettings(**{**base.__dict__, **overrides})
        self.settings.validate()
        self.levels = tuple(levels)
        self.budget_ms = float(budget_ms)
        self.level = 0
        self.changes = self.downs = self.ups = 0
        self.cycles = 0
        self.ignored = 0  # non-finite or negative measurements (a clock glitch is not load)
        self.ewma_ms = math.nan
        self.last_ms = math.nan
        self._over = self._under = 0
        self._cooldown = 0
        self._up_wait = self.settings.up_after
        self._since_change = 0
        self._last_step = 0

    @property
    def name(self) -> str:
        return self.levels[self.level]

    @property
    def degraded(self) -> bool:
        return self.level > 0

    def observe(self, cycle_ms: float) -> int:
        """Account one cycle's duration (ms); returns the level for the next cycle."""
        if not (math.isfinite(cycle_ms) and cycle_ms >= 0.0):
            self.ignored += 1
            return self.level
        s = self.settings
        self.cycles += 1
        self._since_change += 1
        if self._last_step < 0 and self._since_change == s.probe_window:
            self._up_wait = s.up_after  # the last step up held: the load really fell
        self.last_ms = cycle_ms
        sample = min(cycle_ms, s.spike_clip * self.budget_ms)
        self.ewma_ms = sample if math.isnan(self.ewma_ms) else self.ewma_ms + s.alpha * (sample - self.ewma_ms)
        if self._cooldown > 0:
            self._cooldown -= 1
            return self.level
        if self.ewma_ms > self.budget_ms:
            self._over += 1
            self._under = 0
        elif self.ewma_ms < s.restore_fraction * self.budget_ms:
            self._under += 1
            self._over = 0
        else:  # inside the hysteresis band: hold, and let neither direction accumulate
            self._over = self._under = 0
        if self._over >= s.down_after and self.level < len(self.levels) - 1:
            self._change(+1)
        elif self._under >= self._up_wait and self.level > 0:
            self._change(-1)
        return self.level

    def _change(self, step: int) -> None:
        if step > 0 and self._last_step < 0 and self._since_change < self.settings.probe_window:
            self._up_wait = min(2 * self._up_wait, self.settings.max_up_after)
        self._last_step = step
        self._since_change = 0
        self.level += step
        self.changes += 1
        if step > 0:
            self.downs += 1
        else:
            self.ups += 1
        self._over = self._under = 0
        self._cooldown = self.settings.cooldown
        self.ewma_ms = math.nan  # re-learn the cost of the new level from its own cycles

    def reset(self) -> None:
        """Back to full quality (e.g. after the node was reconfigured); counters are kept."""
        if self.level != 0:
            self.level = 0
            self.changes += 1
            self.ups += 1
        self._over = self._under = self._cooldown = 0
        self._up_wait = self.settings.up_after
        self._last_step = 0
        self.ewma_ms = math.nan

    def stats(self) -> dict[str, str | int | float]:
        """Figures for NodeStats ``extra`` (prefix them, e.g. ``degradation.level``)."""
        return {
            "level": self.level,
            "name": self.name,
            "levels": len(self.levels),
            "budget_ms": self.budget_ms,
            "ewma_ms": self.ewma_ms,
            "last_ms": self.last_ms,
            "changes": self.changes,
            "downs": self.downs,
            "ups": self.ups,
            "up_after": self._up_wait,
            "cycles": self.cycles,
            "ignored": self.ignored,
        }
