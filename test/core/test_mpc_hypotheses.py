"""expand_hypotheses: the GP prediction first, then goal-directed alternatives for the likeliest goals."""

import numpy as np
import pytest

from intent_perf_ros.core.mpc.hypotheses import expand_hypotheses

HP = 10
DT = 0.4


def _inputs(m=2):
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(m, HP, 2))
    var = np.abs(rng.normal(size=(m, HP, 2)))
    xy = np.array([[0.0, 0.0], [5.0, 5.0]])[:m]
    vxy = np.array([[1.0, 0.0], [0.0, 0.0]])[:m]
    goals = np.array([[0.0, 10.0], [10.0, 0.0], [1.0, 0.0]])
    return mean, var, xy, vxy, goals


def test_gp_then_goal_directed_in_probability_order():
    mean, var, xy, vxy, goals = _inputs()
    probs = np.array([[0.1, 0.6, 0.25, 0.05], [0.02, 0.03, 0.01, 0.94]])  # human 1 mostly wandering
    out_m, out_v = np.zeros((6, HP, 2)), np.zeros((6, HP, 2))
    n = expand_hypotheses(mean, var, xy, vxy, goals, probs, 3, DT, out_m, out_v)
    assert n == 4  # human 0: GP + goals 1, 2; human 1: GP only (no goal above min_prob)
    np.testing.assert_array_equal(out_m[0], mean[0])
    np.testing.assert_array_equal(out_v[0], var[0])
    t = DT * np.arange(1, HP + 1)
    np.testing.assert_allclose(out_m[1, :, 0], np.minimum(1.0 * t, 10.0))  # goal (10, 0) at 1 m/s
    np.testing.assert_allclose(out_m[1, :, 1], 0.0)
    np.testing.assert_allclose(out_m[2, -1], goals[2])  # reaches the near goal (1, 0) and stays there
    np.testing.assert_array_equal(out_v[1], var[0])
    np.testing.assert_array_equal(out_m[3], mean[1])


def test_without_goal_probabilities_only_the_gp_and_capacity_respected():
    mean, var, xy, vxy, goals = _inputs()
    out_m, out_v = np.zeros((2, HP, 2)), np.zeros((2, HP, 2))
    assert expand_hypotheses(mean, var, xy, vxy, goals, None, 2, DT, out_m, out_v) == 2
    probs = np.full((2, 4), 0.25)
    small_m, small_v = np.zeros((3, HP, 2)), np.zeros((3, HP, 2))
    assert expand_hypotheses(mean, var, xy, vxy, goals, probs, 3, DT, small_m, small_v) == 3


def test_standing_human_walks_at_min_speed():
    mean, var, xy, vxy, goals = _inputs()
    probs = np.array([[0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    out_m, out_v = np.zeros((4, HP, 2)), np.zeros((4, HP, 2))
    expand_hypotheses(mean, var, xy, vxy, goals, probs, 2, DT, out_m, out_v, min_speed=0.5)
    step = np.linalg.norm(out_m[2, 1] - out_m[2, 0])
    assert step == pytest.approx(0.5 * DT)


def test_shapes_are_validated():
    mean, var, xy, vxy, goals = _inputs()
    out = np.zeros((4, HP, 2))
    with pytest.raises(ValueError, match="goal_probs must have shape"):
        expand_hypotheses(mean, var, xy, vxy, goals, np.ones((2, 3)), 2, DT, out, out.copy())
    with pytest.raises(ValueError, match="out_mean/out_var"):
        expand_hypotheses(mean, var, xy, vxy, goals, None, 2, DT, np.zeros((4, HP + 1, 2)), out)
