"""Closed-loop simulation: goals reached, never closer than the safety radius, report and CLI."""

import json

import numpy as np
import pytest

from intent_perf_ros.bench import sim
from intent_perf_ros.core.mpc.controller import MPCConfig

# No OSQP time limit here: a loaded test machine must not change the closed loop (the CLI keeps 5 ms).
CFG = MPCConfig(time_limit_s=0.0)


@pytest.mark.parametrize("name", ["crossing", "head_on", "mind_change", "crowd"])
def test_scenario_reaches_goal_and_keeps_distance(name):
    row = sim.run_scenario(name, CFG, max_time_s=40.0)
    assert row["goal_reached"], row
    assert row["min_distance_m"] >= row["safety_radius_m"], row
    assert not row["below_safety_radius"]
    # Straight-line distance 12 m at <= 1 m/s: cannot be faster than 12 s.
    assert 12.0 <= row["time_to_goal_s"] < 40.0


def test_belief_hypotheses_option_runs():
    row = sim.run_scenario("mind_change", CFG, predictor="belief", max_time_s=40.0)
    assert row["goal_reached"] and row["min_distance_m"] >= row["safety_radius_m"]


def test_segment_min_distance_matches_dense_sampling():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    t = np.linspace(0.0, 1.0, 20001)[:, None, None]
    dense = np.linalg.norm(a + t * (b - a), axis=2).min()
    assert sim._segment_min_distance(a, b) == pytest.approx(dense, abs=1e-6)


def test_main_writes_json(tmp_path):
    out = tmp_path / "sim.json"
    assert sim.main(["--scenario", "empty", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["all_ok"] and data["rows"][0]["scenario"] == "empty" and data["rows"][0]["goal_reached"]


def test_decision_layer_reaches_the_goal_sooner_than_a_fixed_conservative_behaviour_and_stays_safe():
    from intent_perf_ros.bench.sim import run_scenario

    conservative = run_scenario("crossing", predictor="belief", behaviour="slow")
    for method in ("ucb", "thompson"):
        decided = run_scenario("crossing", predictor="belief", behaviour=method)
        assert decided["goal_reached"] and conservative["goal_reached"]
        assert decided["time_to_goal_s"] < conservative["time_to_goal_s"]
        assert not decided["below_safety_radius"]
