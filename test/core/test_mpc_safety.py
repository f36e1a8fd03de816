"""Human avoidance, fallbacks, watchdog, behaviours and input validation of the MPC controller."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intent_perf_ros.core.mpc.controller import Mode, MPCConfig, MPCController
from intent_perf_ros.core.mpc.model import IOM, IV, IX, IY, unicycle_step
from intent_perf_ros.core.mpc.watchdog import StaleInputWatchdog

H = 15  # no OSQP time limit in these tests (time_limit_s=0): a loaded machine must not change a mode
NONE = (np.zeros((0, H, 2)), np.zeros((0, H, 2)))


@pytest.fixture(scope="module")
def ctrl():
    c = MPCController(MPCConfig(horizon=H, time_limit_s=0.0))
    c.warmup(5)
    return c


def _static(xy, var=0.01, n_steps=H):
    mean = np.tile(np.asarray(xy, float), (1, n_steps, 1))
    return mean, np.full(mean.shape, var)


def _plan(c):
    return c.qp.states(c.qp.solution()[0])


def test_human_on_the_straight_line_pushes_the_plan_away(ctrl):
    ctrl.reset()
    state = np.array([0.0, 0.0, 0.0, 0.8, 0.0])
    goal = np.array([6.0, 0.0])
    mean, var = _static((2.0, 0.0))
    free = ctrl.step(state, goal, *NONE, 0.1)
    assert free.mode == Mode.OPTIMAL
    assert np.max(np.abs(_plan(ctrl)[:, IY])) < 1e-3  # without the human: straight
    ctrl.reset()
    radius = ctrl.config.safety_radius + ctrl.humans.kappa * math.sqrt(0.01)
    for _ in range(15):
        res = ctrl.step(state, goal, mean, var, 0.1)
        assert res.mode == Mode.OPTIMAL
        plan = _plan(ctrl)
        # Every planned position is outside the inflated disc, up to the solver tolerance.
        assert np.min(np.hypot(plan[1:, IX] - 2.0, plan[1:, IY])) > radius - 0.01
        assert res.min_clearance > 0.0
        state = unicycle_step(state, res.v, res.omega, 0.1)
    assert np.max(np.abs(plan[:, IY])) > 0.3  # it goes around


def test_every_hypothesis_is_avoided(ctrl):
    ctrl.reset()
    state = np.array([0.0, 0.0, 0.0, 0.5, 0.0])
    mean = np.stack([_static((2.0, 0.8))[0][0], _static((2.0, -0.8))[0][0]])
    res = ctrl.step(state, np.array([5.0, 0.0]), mean, np.full(mean.shape, 0.01), 0.1)
    assert res.humans_considered == 2
    plan = _plan(ctrl)
    for centre in ((2.0, 0.8), (2.0, -0.8)):
        d = np.hypot(plan[1:, IX] - centre[0], plan[1:, IY] - centre[1])
        assert d.min() > ctrl.config.safety_radius


def test_solver_failure_gives_shifted_plan_then_controlled_stop():
    cfg = MPCConfig(horizon=H, time_limit_s=0.0, max_shift_steps=3)
    c = MPCController(cfg)
    state = np.array([0.0, 0.0, 0.0, 0.5, 0.0])
    goal = np.array([5.0, 0.0])
    res = c.step(state, goal, *NONE, 0.1)
    assert res.mode == Mode.OPTIMAL
    plan = _plan(c).copy()
    c.qp.set_limits(time_limit_s=1e-9, max_iter=1)  # the solver now always fails
    for j in range(1, 4):
        state = np.r_[plan[j, :3], plan[j, IV], plan[j, IOM]]  # the robot follows the old plan
        res = c.step(state, goal, *NONE, 0.1)
        assert res.mode == Mode.SHIFTED_PLAN
        assert res.solver_status in ("max_iter_reached", "time_limit_reached")
        assert res.v == pytest.approx(plan[j + 1, IV]) and res.omega == pytest.approx(plan[j + 1, IOM])
    v0 = 0.9
    res = c.step(np.array([0.5, 0.0, 0.0, v0, 0.6]), goal, *NONE, 0.1)  # plan expired: controlled stop
    assert res.mode == Mode.STOP
    assert res.v == pytest.approx(v0 - cfg.a_max * cfg.dt) and res.omega == pytest.approx(
        0.6 - cfg.alpha_max * cfg.dt
    )
    stats = c.stats()
    assert stats["fallbacks"] == 4 and stats["shifted"] == 3 and stats["stops"] == 1


def test_shifted_plan_is_refused_when_a_human_now_blocks_it():
    c = MPCController(MPCConfig(horizon=H, time_limit_s=0.0))
    state = np.array([0.0, 0.0, 0.0, 0.5, 0.0])
    c.step(state, np.array([5.0, 0.0]), *NONE, 0.1)
    plan = _plan(c).copy()
    c.qp.set_limits(time_limit_s=1e-9, max_iter=1)
    state = np.r_[plan[1, :3], plan[1, IV], plan[1, IOM]]
    res = c.step(state, np.array([5.0, 0.0]), *_static(plan[4, :2]), 0.1)
    assert res.mode == Mode.STOP


@settings(max_examples=40, deadline=None)
@given(
    state=st.lists(st.floats(-1e3, 1e3) | st.just(math.nan) | st.just(math.inf), min_size=5, max_size=5),
    goal=st.lists(st.floats(-20, 20) | st.just(math.nan), min_size=2, max_size=2),
    human=st.lists(st.floats(-5, 5) | st.just(math.nan), min_size=2, max_size=2),
    var=st.floats(0, 10) | st.just(math.nan),
    age=st.floats(0, 3) | st.just(math.nan),
)
def test_command_is_always_finite_and_within_bounds(ctrl, state, goal, human, var, age):
    cfg = ctrl.config
    res = ctrl.step(np.array(state), np.array(goal), *_static(human, var), 0.1, input_age_s=age)
    assert math.isfinite(res.v) and math.isfinite(res.omega)
    assert cfg.v_min <= res.v <= cfg.v_max and abs(res.omega) <= cfg.omega_max
    assert isinstance(res.mode, Mode)


def test_watchdog_ramp():
    wd = StaleInputWatchdog(slow_after_s=0.3, stop_after_s=1.0)
    assert wd.speed_scale(0.0) == 1.0 and wd.speed_scale(0.3) == 1.0
    assert wd.speed_scale(0.65) == pytest.approx(0.5)
    assert wd.speed_scale(1.0) == 0.0 and wd.speed_scale(5.0) == 0.0 and wd.speed_scale(math.nan) == 0.0
    with pytest.raises(ValueError, match="slow_after_s < stop_after_s"):
        StaleInputWatchdog(1.0, 0.5)


def test_stale_inputs_slow_then_stop_then_resume():
    cfg = MPCConfig(horizon=H, time_limit_s=0.0)
    c = MPCController(cfg)
    goal = np.array([10.0, 0.0])
    state = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    res = c.step(state, goal, *NONE, 0.1, input_age_s=0.0)
    assert res.mode == Mode.OPTIMAL and res.v > 0.95
    state = np.array([0.0, 0.0, 0.0, 0.5, 0.0])
    res = c.step(state, goal, *NONE, 0.1, input_age_s=0.65)  # half speed
    assert res.mode == Mode.STALE_SLOW and res.v <= 0.5 * cfg.v_max + 1e-3
    res = c.step(state, goal, *NONE, 0.1, input_age_s=2.0)
    assert res.mode == Mode.STALE_STOP and res.v == pytest.approx(0.5 - cfg.a_max * cfg.dt)
    res = c.step(state, goal, *NONE, 0.1, input_age_s=0.0)
    assert res.mode == Mode.OPTIMAL and res.v > 0.5


def test_goal_reached_and_no_goal_decelerate():
    c = MPCController(MPCConfig(horizon=H, time_limit_s=0.0))
    state = np.array([1.0, 1.0, 0.0, 0.3, -0.1])
    res = c.step(state, np.array([1.05, 1.0]), *NONE, 0.1)
    assert res.mode == Mode.GOAL_REACHED and res.v == pytest.approx(0.2) and res.omega == pytest.approx(0.0)
    res = c.step(state, np.array([math.nan, math.nan]), *NONE, 0.1)
    assert res.mode == Mode.NO_GOAL and res.v == pytest.approx(0.2)


def test_more_humans_than_capacity_keeps_the_nearest():
    c = MPCController(MPCConfig(horizon=H, time_limit_s=0.0, max_humans=2, hypotheses_per_human=1))
    xs = np.array([9.0, 1.5, 7.0, 2.0])
    mean = np.zeros((4, H, 2))
    mean[:, :, 0] = xs[:, None]
    mean[:, :, 1] = 3.0
    res = c.step(np.zeros(5), np.array([5.0, 0.0]), mean, np.full(mean.shape, 0.01), 0.1)
    assert res.humans_considered == 2 and c.stats()["humans_dropped"] == 2
    assert sorted(c.humans.mean[:2, 0, 0]) == [1.5, 2.0]


def test_behaviours_shape_the_plan():
    c = MPCController(MPCConfig(horizon=H, time_limit_s=0.0))
    state = np.array([0.0, 0.0, 0.0, 0.5, 0.0])
    goal = np.array([8.0, 0.0])
    c.set_behaviour("slow")
    c.step(state, goal, *NONE, 0.1)
    assert np.max(_plan(c)[1:, IV]) <= 0.5 * c.config.v_max + 1e-3
    for name, sign in (("detour_left", 1.0), ("detour_right", -1.0)):
        c.reset()
        c.set_behaviour(name)
        c.step(state, goal, *NONE, 0.1)
        assert sign * _plan(c)[-1, IY] > 0.2
    c.reset()
    c.set_behaviour("yield")
    c.step(state, goal, *NONE, 0.1)
    assert _plan(c)[-1, IV] < 0.1  # brakes to wait
    with pytest.raises(ValueError, match="unknown behaviour"):
        c.set_behaviour("dance")


def test_input_validation_says_what_to_fix(ctrl):
    with pytest.raises(ValueError, match="shape \\(5,\\)"):
        ctrl.step(np.zeros(4), np.zeros(2), *NONE, 0.1)
    with pytest.raises(ValueError, match="goal must be"):
        ctrl.step(np.zeros(5), np.zeros(3), *NONE, 0.1)
    with pytest.raises(ValueError, match="human_var must have the shape"):
        ctrl.step(np.zeros(5), np.ones(2), np.zeros((1, H, 2)), np.zeros((2, H, 2)), 0.1)
    with pytest.raises(ValueError, match="pred_dt must be positive"):
        ctrl.step(np.zeros(5), np.ones(2), np.zeros((1, H, 2)), np.zeros((1, H, 2)), 0.0)
    with pytest.raises(ValueError, match="v_min <= 0 < v_max"):
        MPCController(MPCConfig(v_min=0.5))


def test_predictions_are_interpolated_onto_controller_steps():
    c = MPCController(MPCConfig(horizon=H, time_limit_s=0.0, dt=0.1))
    t = 0.4 * np.arange(1, 6)  # coarser prediction steps (0.4 s), 5 of them
    mean = np.zeros((1, 5, 2))
    mean[0, :, 0] = 3.0 + 0.5 * t
    mean[0, :, 1] = 4.0
    c.step(np.zeros(5), np.array([5.0, 0.0]), mean, np.full(mean.shape, 0.01), 0.4)
    np.testing.assert_allclose(c.humans.mean[0, :, 0], 3.0 + 0.5 * 0.1 * np.arange(1, H + 1), atol=1e-12)


def test_nan_prediction_brakes():
    c = MPCController(MPCConfig(horizon=H, time_limit_s=0.0))
    mean, var = _static((2.0, 0.0))
    mean[0, 3, 1] = math.nan
    res = c.step(np.array([0.0, 0.0, 0.0, 0.8, 0.0]), np.array([5.0, 0.0]), mean, var, 0.1)
    assert res.mode == Mode.STOP and res.v == pytest.approx(0.7) and c.stats()["invalid_inputs"] == 1
