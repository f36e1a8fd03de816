"""expand_hypotheses: the GP prediction first, then goal-directed alternatives for the likeliest goals."""

import numpy as np
import pytest

from intent_perf_ros.core.mpc import kernels as jit_kernels
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


def _reference(mean, var, xy, vxy, goals, probs, top_k, out_m, out_v, min_prob=0.05, min_speed=0.5):
    """The rule as plain numpy: a stable argsort of -p per human."""
    written, times = 0, DT * np.arange(1, mean.shape[1] + 1)
    for i in range(mean.shape[0]):
        if written >= out_m.shape[0]:
            break
        out_m[written], out_v[written] = mean[i], var[i]
        written += 1
        speed = max(float(np.hypot(*vxy[i])), min_speed)
        for extra, g in enumerate(np.argsort(-probs[i, :-1], kind="stable")):
            if extra >= top_k - 1 or written >= out_m.shape[0] or probs[i, g] < min_prob:
                break
            to_goal = goals[g] - xy[i]
            dist = float(np.hypot(*to_goal))
            out_m[written] = xy[i] + (np.minimum(speed * times, dist) / dist)[:, None] * to_goal
            out_v[written] = var[i]
            written += 1
    return written


@pytest.mark.parametrize("seed", range(5))
def test_kernel_matches_the_argsort_reference_with_ties_and_a_full_output(seed):
    rng = np.random.default_rng(seed)
    m, k = 30, 6
    mean, var = rng.normal(size=(m, HP, 2)), rng.uniform(size=(m, HP, 2))
    xy, vxy, goals = rng.uniform(-8, 8, (m, 2)), rng.normal(size=(m, 2)), rng.uniform(-8, 8, (k, 2))
    probs = rng.choice([0.0, 0.04, 0.1, 0.2, 0.3], size=(m, k + 1))  # many ties, some under min_prob
    probs /= probs.sum(axis=1, keepdims=True)
    for top_k, cap in ((3, 100), (4, 50)):  # the second fills the output before the last human
        out_m, out_v = np.full((cap, HP, 2), np.nan), np.full((cap, HP, 2), np.nan)
        ref_m, ref_v = out_m.copy(), out_v.copy()
        n = expand_hypotheses(mean, var, xy, vxy, goals, probs, top_k, DT, out_m, out_v)
        assert n == _reference(mean, var, xy, vxy, goals, probs, top_k, ref_m, ref_v)
        np.testing.assert_allclose(out_m[:n], ref_m[:n], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(out_v[:n], ref_v[:n])


def test_strided_views_use_the_one_compiled_signature():
    """mpc_node passes views such as ``buffer[:n, :steps]``: no layout may compile in a callback (the JIT
    kernels; the ahead-of-time ones cannot compile at all)."""
    big, probs, out = np.zeros((10, 64, 2)), np.full((10, 64), 0.25), np.zeros((40, 64, 2))
    args = (big[:5, :HP], big[:5, :HP] + 1.0, np.zeros((5, 2)), np.ones((5, 2)),
            np.array([[5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]), probs[:5, :4])
    n = expand_hypotheses(*args, 2, DT, out[:, :HP], np.zeros((40, 64, 2))[:, :HP])
    assert n == 10
    assert jit_kernels.expand_hypotheses_into(*args, True, 2, DT, out[:, :HP], np.zeros((40, 64, 2))[:, :HP],
                                              0.05, 0.5) == n
    assert len(jit_kernels.expand_hypotheses_into.overloads) == 1
