"""DegradationLadder with synthetic cycle times: when it steps down, when it restores, that it does not flap."""
from __future__ import annotations

import math

import numpy as np
import pytest

from intent_perf_ros.core.degradation import NODE_LEVELS, DegradationLadder, LadderSettings

GP = NODE_LEVELS["gp_inference_node"]
BUDGET = 10.0


def feed(ladder: DegradationLadder, times_ms) -> list[int]:
    """Levels after each cycle."""
    return [ladder.observe(float(ms)) for ms in times_ms]


def test_sustained_overload_steps_down_one_level_at_a_time():
    ladder = DegradationLadder(GP, BUDGET)
    levels = feed(ladder, [25.0] * 200)
    # Level 1 after down_after cycles over budget, then one more level per down_after + cooldown cycles.
    assert levels[8] == 0 and levels[9] == 1
    assert np.all(np.diff(levels) >= 0) and np.all(np.diff(levels) <= 1), "one level at a time, only down"
    assert levels[-1] == len(GP) - 1 and ladder.name == "constant_velocity"
    assert ladder.changes == ladder.downs == len(GP) - 1 and ladder.ups == 0
    assert ladder.degraded


def test_a_single_spike_or_a_short_burst_does_not_degrade():
    ladder = DegradationLadder(GP, BUDGET)
    feed(ladder, [5.0] * 50 + [500.0] + [5.0] * 50)  # one 50x spike
    assert ladder.level == 0 and ladder.changes == 0
    feed(ladder, [30.0] * 5 + [5.0] * 50)  # a burst shorter than down_after
    assert ladder.level == 0 and ladder.changes == 0


def test_restores_full_mode_when_the_load_falls():
    ladder = DegradationLadder(GP, BUDGET)
    feed(ladder, [25.0] * 200)
    cheapest = len(GP) - 1
    assert ladder.level == cheapest
    levels = feed(ladder, [2.0] * 1000)
    assert levels[-1] == 0 and ladder.name == "full"
    assert np.all(np.diff(levels) <= 0), "only up while the load stays low"
    # Each step up waits up_after cycles of low load: slower going up than coming down.
    first_up = levels.index(cheapest - 1)
    assert first_up >= ladder.settings.up_after - 1
    assert ladder.ups == cheapest and ladder.changes == 2 * cheapest


def test_load_inside_the_hysteresis_band_holds_the_level():
    """Load that sits at the budget (noise around it) must not flap between two levels."""
    rng = np.random.default_rng(0)
    ladder = DegradationLadder(GP, BUDGET)
    feed(ladder, [25.0] * 15)
    assert ladder.level == 1
    changes = ladder.changes
    # Between restore_fraction * budget and the budget, with +-20 % noise on every cycle.
    feed(ladder, 8.0 * (1.0 + 0.2 * rng.uniform(-1.0, 1.0, 5000)))
    assert ladder.level == 1 and ladder.changes == changes


def test_noise_around_the_budget_changes_level_rarely():
    """Cycle times straddling the budget (EWMA around it): a change needs sustained evidence each time."""
    rng = np.random.default_rng(1)
    ladder = DegradationLadder(GP, BUDGET)
    feed(ladder, BUDGET * (1.0 + 0.5 * rng.uniform(-1.0, 1.0, 5000)))
    assert ladder.changes <= 4


def test_no_oscillation_when_only_the_cheaper_level_fits_the_budget():
    """Full mode costs 15 ms, the first degraded level 4 ms: probing back up is backed off exponentially, so
    over 10 000 cycles the ladder spends under 5 % of the cycles over budget instead of ~25 % (a probe every
    ~80 cycles without the back-off)."""
    cost = {0: 15.0, 1: 4.0, 2: 3.0, 3: 1.0}
    ladder = DegradationLadder(GP, BUDGET)
    s = ladder.settings
    level = 0
    history = []
    for _ in range(10_000):
        level = ladder.observe(cost[level])
        history.append(level)
    assert max(history) == 1, "never degrades further than needed"
    over_budget = sum(1 for lv in history if cost[lv] > BUDGET)
    assert over_budget < 0.05 * len(history)
    doublings = math.log2(s.max_up_after / s.up_after)
    assert ladder.changes <= 2 * (doublings + len(history) / s.max_up_after + 1)
    assert ladder.stats()["up_after"] == s.max_up_after
    # ...and once the load really falls, the backed-off wait is what it takes to restore, then it is reset.
    cost[0] = 3.0
    for _ in range(2 * s.max_up_after):
        level = ladder.observe(cost[level])
    assert level == 0
    feed(ladder, [3.0] * s.probe_window)
    assert ladder.stats()["up_after"] == s.up_after


def test_non_finite_and_negative_times_are_ignored_not_load():
    ladder = DegradationLadder(GP, BUDGET)
    feed(ladder, [math.nan, math.inf, -1.0] * 100)
    assert ladder.level == 0 and ladder.ignored == 300 and ladder.cycles == 0
    assert math.isnan(ladder.ewma_ms)


def test_stats_and_reset():
    ladder = DegradationLadder(NODE_LEVELS["mpc_node"], 5.0, down_after=2, cooldown=0)
    feed(ladder, [9.0] * 4)
    stats = ladder.stats()
    assert stats["level"] == 2 and stats["name"] == "fewer_hypotheses" and stats["downs"] == 2
    assert set(stats) >= {"level", "name", "budget_ms", "ewma_ms", "changes", "downs", "ups", "cycles"}
    ladder.reset()
    assert ladder.level == 0 and ladder.name == "full" and ladder.changes == 3


def test_single_level_ladder_never_changes():
    ladder = DegradationLadder(("full",), BUDGET)
    feed(ladder, [100.0] * 100)
    assert ladder.level == 0 and ladder.changes == 0


@pytest.mark.parametrize("kwargs", [
    {"levels": (), "budget_ms": 10.0},
    {"levels": ("a", "a"), "budget_ms": 10.0},
    {"levels": GP, "budget_ms": 0.0},
    {"levels": GP, "budget_ms": math.nan},
    {"levels": GP, "budget_ms": 10.0, "alpha": 0.0},
    {"levels": GP, "budget_ms": 10.0, "restore_fraction": 1.0},
    {"levels": GP, "budget_ms": 10.0, "down_after": 0},
    {"levels": GP, "budget_ms": 10.0, "spike_clip": 1.0},
    {"levels": GP, "budget_ms": 10.0, "up_after": 100, "max_up_after": 50},
])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DegradationLadder(**kwargs)


def test_every_node_ladder_starts_with_full():
    for levels in NODE_LEVELS.values():
        assert levels[0] == "full" and len(set(levels)) == len(levels)
    assert LadderSettings().restore_fraction < 1.0
