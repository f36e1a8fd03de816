import numpy as np
import pytest

from intent_perf_ros.core.scenario import ScenarioConfig, SyntheticScenario


def test_humans_walk_towards_their_goals_at_their_speed():
    s = SyntheticScenario(ScenarioConfig(humans=4, seed=3, noise_std=0.0))
    to_goal = s.goals[s.goal_index] - s.xy
    heading = to_goal / np.linalg.norm(to_goal, axis=1, keepdims=True)
    np.testing.assert_allclose(np.sum(s.vxy * heading, axis=1), s.speed, rtol=1e-12)
    before = np.linalg.norm(to_goal, axis=1)
    s.step(0.1)
    after = np.linalg.norm(s.goals[s.goal_index] - s.xy, axis=1)
    np.testing.assert_allclose(before - after, 0.1 * s.speed, rtol=1e-6)


def test_same_seed_same_world():
    a, b = SyntheticScenario(ScenarioConfig(seed=7)), SyntheticScenario(ScenarioConfig(seed=7))
    for _ in range(50):
        a.step(0.05)
        b.step(0.05)
    np.testing.assert_array_equal(a.xy, b.xy)


def test_crossing_human_crosses_the_robot_path():
    cfg = ScenarioConfig(humans=1, crossing_human=True, noise_std=0.0)
    s = SyntheticScenario(cfg)
    side = np.sign(s.xy[0, 1])
    for _ in range(200):
        s.step(0.05)
    assert np.sign(s.xy[0, 1]) == -side


def test_mind_change_switches_goal_once():
    s = SyntheticScenario(ScenarioConfig(humans=2, mind_change_at_s=1.0, noise_std=0.0))
    goal = s.goal_index[1]
    for _ in range(30):
        s.step(0.05)
    assert s.goal_index[1] != goal


def test_bad_settings_rejected():
    with pytest.raises(ValueError):
        SyntheticScenario(ScenarioConfig(humans=-1))
    with pytest.raises(ValueError):
        SyntheticScenario().step(0.0)
