"""Soak mode of the bench (``intent-perf bench BAG --duration SECONDS``).

The bag is replayed in a loop for that long, with a pause longer than the nodes' track timeout
between loops; the recording is summarised as it goes (bounded memory) and the JSON gains a
``soak`` section: RSS drift per node after a warm-up, lost commands, and end-to-end percentiles per
time slice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import yaml

from intent_perf_ros.bench.analysis import DEADLINE_MS, STAGES, BenchRun, figures, samples
from intent_perf_ros.bench.replay import LatencyDigest, Replayer, Reservoir, play
from intent_perf_ros.runner import default_params_file

# Issue 8 (endurance): after warm-up no node's RSS drifts by 5 % or more, and no command is lost.
GOALS_SOAK = {"rss_drift_percent": 5.0, "lost_commands": 0}
SOAK_FOLD_PERIOD_S = 1.0  # how often a soak run summarises its recording and drops the raw records
SOAK_ANSWER_TIMEOUT_S = 5.0  # a soak observation not answered this long after it was sent is unanswered
SOAK_EDGE_S = 5.0  # RSS at the end of warm-up / of the run: median of the sampler's last 10 samples (0.5 s)
SOAK_MAX_SAMPLES = 2048  # RSS/CPU points kept per node (thinned evenly over the run)
SOAK_RESERVOIR = 20_000  # latency samples kept for the plots
LOOP_GAP_MARGIN_S = 0.5  # pause between loops beyond the longest track timeout


@dataclass
class SoakSettings:
    """``bench --duration``: replay the bag in a loop for ``duration_s`` seconds.

    ``warmup_s``: RSS drift is measured from its end (None: a third of the run, at most 120 s; what
    grows legitimately at the start - numba and QP caches, the GP's online-learning FIFO - must have
    reached its bound by then). ``slice_s``: end-to-end percentiles per slice of the run.
    ``loop_gap_s``: the pause between loops (None: the longest ``track_timeout_s`` of the parameters
    file + 0.5 s): every track has expired when the bag's ids come round again, so a loop boundary is
    new people entering the scene, not an id whose position jumps.
    """

    duration_s: float
    warmup_s: float | None = None
    slice_s: float = 60.0
    loop_gap_s: float | None = None

    def warmup(self) -> float:
        return min(self.duration_s / 3.0, 120.0) if self.warmup_s is None else self.warmup_s

    def check(self) -> None:
        if self.slice_s <= 0 or self.warmup() < 0 or (self.loop_gap_s is not None and self.loop_gap_s < 0):
            raise ValueError("--slice must be positive, --warmup and --loop-gap not negative")
        if self.duration_s < self.warmup() + 2 * SOAK_EDGE_S:
            raise ValueError(
                f"--duration {self.duration_s:g} s leaves no time to measure drift after the "
                f"{self.warmup():.1f} s warm-up: it must be at least warm-up + {2 * SOAK_EDGE_S:g} s"
            )


def track_timeout_s(params_file: Path) -> float:
    """The longest ``track_timeout_s`` in a parameters file, at least the nodes' default of 2 s."""
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    values = [v.get("ros__parameters", {}).get("track_timeout_s") for v in params.values() if isinstance(v, dict)]
    return max([2.0, *(float(v) for v in values if v is not None)])


class CallbackDigest:
    """``callback_summary`` fed one NodeStats window at a time, in bounded memory (soak runs)."""

    def __init__(self) -> None:
        self.p50: dict[str, LatencyDigest] = {}
        self.worst: dict[str, list[float]] = {}  # node -> [p95, p99, max, windows]

    def add(self, msg) -> None:
        if msg.rate_in_hz <= 0:
            return
        self.p50.setdefault(msg.node_name, LatencyDigest()).add([msg.callback_p50_ms])
        w = self.worst.setdefault(msg.node_name, [-math.inf, -math.inf, -math.inf, 0])
        w[:] = [
            max(w[0], msg.callback_p95_ms),
            max(w[1], msg.callback_p99_ms),
            max(w[2], msg.callback_max_ms),
            w[3] + 1,
        ]

    def summary(self, nodes: tuple[str, ...]) -> dict[str, dict[str, float]]:
        return {
            n: {"p50": self.p50[n].percentile(50), "p95": w[0], "p99": w[1], "max": w[2], "windows": w[3]}
            for n in nodes
            if (w := self.worst.get(n))
        }


class Soak:
    """The streaming side of a soak run. Every ``SOAK_FOLD_PERIOD_S`` the observations sent more than
    ``SOAK_ANSWER_TIMEOUT_S`` ago are summarised into digests and their raw records dropped (as are the
    NodeStats windows), so the bench's memory does not grow with the run's length."""

    def __init__(self, settings: SoakSettings, replayer: Replayer, play_start_ns: int, play_start_mono: float) -> None:
        self.settings, self.replayer = settings, replayer
        self.start_ns, self.start_mono = play_start_ns, play_start_mono
        self.e2e = LatencyDigest()
        self.stages = {k: LatencyDigest() for k in STAGES}
        self.costs = {k: LatencyDigest() for k in STAGES}
        self.sent = self.answered = self.misses = self.humans = 0
        self.last_answer_ns: int | None = None
        self.reservoir = Reservoir(SOAK_RESERVOIR)
        self.callbacks = CallbackDigest()
        self.open_slices: dict[int, LatencyDigest] = {}
        self.slices: list[dict] = []
        self.loops = 0
        self.rss_warm: dict[str, float] | None = None
        self.bench_rss_warm = math.nan
        self._next_fold = play_start_mono + SOAK_FOLD_PERIOD_S

    def spin(self, spin_once: Callable[[float], None]) -> Callable[[float], None]:
        """``spin_once`` followed by the soak's bookkeeping: what ``play`` gets to run the executor."""

        def spin_and_fold(timeout_s: float) -> None:
            spin_once(timeout_s)
            self.tick()

        return spin_and_fold

    def tick(self) -> None:
        now = time.monotonic()
        if self.rss_warm is None and now >= self.start_mono + self.settings.warmup() + SOAK_EDGE_S:
            self.rss_warm = recent_rss(self.replayer)
            self.bench_rss_warm = _own_rss_mb()
        if now >= self._next_fold:
            self._next_fold = now + SOAK_FOLD_PERIOD_S
            cutoff_ns = time.time_ns() - int(SOAK_ANSWER_TIMEOUT_S * 1e9)
            self.fold(cutoff_ns)
            self._close_slices((cutoff_ns - self.start_ns) * 1e-9)
            self.fold_windows(math.inf)

    def fold(self, before_ns: float) -> None:
        """Summarise the observations stamped before ``before_ns`` and drop their records."""
        s = samples(self.replayer.rec.split(before_ns), self.start_ns)
        e2e = np.asarray(s.e2e_ms)
        t_s = np.asarray(s.t_ns, dtype=np.float64) * 1e-9
        self.sent += s.sent
        self.answered += e2e.size
        self.misses += int((e2e > DEADLINE_MS).sum()) + s.sent - e2e.size
        self.humans += sum(len(p.ids) for p in s.answered)
        if s.last_answer_ns is not None:
            self.last_answer_ns = max(self.last_answer_ns or 0, s.last_answer_ns)
        self.e2e.add(e2e)
        for k in STAGES:
            self.stages[k].add(s.stages[k])
            self.costs[k].add(s.costs[k])
        self.reservoir.add(t_s, e2e)
        index = np.floor(t_s / self.settings.slice_s).astype(np.int64)
        for k in np.unique(index):
            self.open_slices.setdefault(int(k), LatencyDigest()).add(e2e[index == k])

    def _close_slices(self, until_s: float) -> None:
        """Slices that end before ``until_s`` receive no more samples: keep their summary only."""
        width = self.settings.slice_s
        while (k := len(self.slices)) * width + width <= until_s:
            e2e = self.open_slices.pop(k, LatencyDigest()).summary()
            self.slices.append({"t0_s": k * width, "t1_s": (k + 1) * width, **e2e})

    def fold_windows(self, until_mono: float) -> None:
        """NodeStats windows received since the replay started (and before ``until_mono``) into the digest."""
        for t, msg in self.replayer.stats_history:
            if self.start_mono < t <= until_mono:
                self.callbacks.add(msg)
        self.replayer.stats_history.clear()

    def finish(self, play_end_ns: int, play_end_mono: float) -> tuple[dict, BenchRun]:
        """Fold what is left and return the result's usual figures (``analyse``'s keys) and the run."""
        self.fold(math.inf)
        # Nothing is published after duration_s (``play(until=...)``): the slices cover [0, duration_s).
        width = self.settings.slice_s
        self._close_slices(math.ceil(self.settings.duration_s / width) * width)
        self.fold_windows(play_end_mono + 1.5)
        last = play_end_ns if self.last_answer_ns is None else self.last_answer_ns
        result = figures(
            self.sent,
            self.answered,
            self.misses,
            self.humans,
            max((last - self.start_ns) * 1e-9, 1e-9),
            self.e2e.summary(),
            {k: v.summary() for k, v in self.stages.items()},
            {k: v.summary() for k, v in self.costs.items()},
        )
        result["predictions_error"] = None  # raw predictions are not kept for hours
        return result, BenchRun(result, *self.reservoir.items())

    def section(self, played_s: float, gap_s: float, rss_end: dict[str, float], lost_commands: int) -> dict:
        """The JSON's ``soak`` section."""
        warm = self.rss_warm or {}
        nodes = [n for n in rss_end if n in warm]
        drift = {n: 100.0 * (rss_end[n] - warm[n]) / warm[n] for n in nodes}
        if nodes:
            total_warm = sum(warm[n] for n in nodes)
            drift["total"] = 100.0 * (sum(rss_end[n] for n in nodes) - total_warm) / total_warm
        return {
            "duration_s": self.settings.duration_s,
            "played_s": played_s,
            "loops": self.loops,
            "loop_gap_s": gap_s,
            "warmup_s": self.settings.warmup(),
            "slice_s": self.settings.slice_s,
            "rss_mb_after_warmup": warm,
            "rss_mb_end": rss_end,
            "rss_drift_percent": drift,
            "lost_commands": lost_commands,
            "e2e_ms_per_slice": self.slices,
            # The bench's own memory must stay flat too (raw records are dropped as they are summarised).
            "bench_rss_mb": {"after_warmup": self.bench_rss_warm, "end": _own_rss_mb()},
        }


def _own_rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def recent_rss(replayer: Replayer) -> dict[str, float]:
    """Per sampled node, the median RSS of the sampler's last few samples (robust to one odd sample)."""
    return {n: float(np.nanmedian(v)) for n, v in replayer.sampler.recent_rss_mb.items() if v}


def play_soak(
    replayer: Replayer,
    soak: Soak,
    spin: Callable[[float], None],
    rate: float | None,
    max_in_flight: int,
    gap_s: float,
    progress: Callable[[], None],
) -> None:
    """Replay the bag in loops until the soak's duration is over, pausing ``gap_s`` between loops.
    Stamps are the publish time, so they stay monotonic and fresh across loops."""
    end = soak.start_mono + soak.settings.duration_s
    spin = soak.spin(spin)
    while time.monotonic() < end:
        soak.loops += 1
        play(replayer, spin, rate, max_in_flight, progress=progress, until=end)
        gap_end = min(time.monotonic() + gap_s, end)
        while (now := time.monotonic()) < gap_end:
            spin(min(gap_end - now, 0.05))


def pause_between_loops_s(soak: SoakSettings, params_file: Path | str | None) -> float:
    """The pause between soak loops: as asked, else the longest track timeout + a margin."""
    if soak.loop_gap_s is not None:
        return soak.loop_gap_s
    return track_timeout_s(Path(params_file) if params_file else default_params_file()) + LOOP_GAP_MARGIN_S


def print_soak(soak: dict) -> None:
    drift = ", ".join(f"{n} {v:+.2f}%" for n, v in soak["rss_drift_percent"].items())
    print(
        f"  soak: {soak['played_s']:.0f} s, {soak['loops']} loops ({soak['loop_gap_s']:.1f} s apart); "
        f"RSS drift after the {soak['warmup_s']:.0f} s warm-up: {drift or 'not measured'}; "
        f"lost commands {soak['lost_commands']}"
    )
    for sl in soak["e2e_ms_per_slice"]:
        print(
            f"    {sl['t0_s']:6.0f}-{sl['t1_s']:<6.0f} s: {sl['count']:6d} commands, e2e ms P50 {sl['p50']:.2f} "
            f"P95 {sl['p95']:.2f} P99 {sl['p99']:.2f} max {sl['max']:.2f}"
        )

