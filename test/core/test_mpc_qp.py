"""The MPC QP against independent references: cvxpy on the same data, finite differences, the unicycle."""

import cvxpy as cp
import numpy as np
import pytest

from intent_perf_ros.core.mpc.controller import Mode, MPCConfig, MPCController
from intent_perf_ros.core.mpc.model import IOM, IV, IX, IY, NX, UnicycleLinearisation, unicycle_step

H = 15


def _humans(hp=H, xy=(2.0, 0.05), vxy=(0.0, 0.0), var=0.01):
    t = 0.1 * np.arange(1, hp + 1)
    mean = np.empty((1, hp, 2))
    mean[0, :, 0] = xy[0] + vxy[0] * t
    mean[0, :, 1] = xy[1] + vxy[1] * t
    return mean, np.full((1, hp, 2), var)


def _tight(**kw):
    return MPCConfig(horizon=H, eps_abs=1e-7, eps_rel=1e-7, max_iter=20000, time_limit_s=0.0, **kw)


def test_solution_matches_cvxpy_on_the_same_qp():
    ctrl = MPCController(_tight())
    state = np.array([0.0, 0.0, 0.2, 0.5, 0.1])
    mean, var = _humans()
    res = ctrl.step(state, np.array([5.0, 0.5]), mean, var, 0.1)
    assert res.mode == Mode.OPTIMAL and res.solver_status == "solved"
    qp = ctrl.qp
    x_osqp, _ = qp.solution()
    z = cp.Variable(qp.n)
    A = qp.a_current()
    lo = np.where(qp.lo <= -1e29, -np.inf, qp.lo)
    hi = np.where(qp.hi >= 1e29, np.inf, qp.hi)
    fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
    cons = [A[fin_lo] @ z >= lo[fin_lo], A[fin_hi] @ z <= hi[fin_hi]]
    obj = 0.5 * cp.sum(cp.multiply(qp.p_diag, cp.square(z))) + qp.q @ z
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve(solver=cp.CLARABEL)
    ours = 0.5 * np.sum(qp.p_diag * x_osqp**2) + qp.q @ x_osqp
    assert ours == pytest.approx(prob.value, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(x_osqp, z.value, atol=1e-3)


def test_plan_satisfies_bounds_and_dynamics():
    cfg = _tight()
    ctrl = MPCController(cfg)
    state = np.array([1.0, -1.0, -0.5, 0.3, -0.2])
    mean, var = _humans(xy=(2.5, -1.5))
    for _ in range(8):  # closed loop, so that the nominal (previous plan) is a good linearisation point
        res = ctrl.step(state, np.array([6.0, 2.0]), mean, var, 0.1)
        state = unicycle_step(state, res.v, res.omega, cfg.dt)
    x, _ = ctrl.qp.solution()
    state = ctrl.qp.states(x)[0].copy()
    s = ctrl.qp.states(x)
    u = ctrl.qp.inputs(x)
    tol = 1e-5
    np.testing.assert_allclose(s[0], state, atol=tol)
    assert np.all(s[1:, IV] <= cfg.v_max + tol) and np.all(s[1:, IV] >= cfg.v_min - tol)
    assert np.all(np.abs(s[1:, IOM]) <= cfg.omega_max + tol)
    assert np.all(np.abs(u[:, 0]) <= cfg.a_max + tol) and np.all(np.abs(u[:, 1]) <= cfg.alpha_max + tol)
    assert np.all(ctrl.qp.slacks(x) >= -tol)
    # Every equality row (initial state, linearised dynamics) holds.
    a = ctrl.qp.a_current()
    eq = slice(0, ctrl.qp.n_state)
    np.testing.assert_allclose(a[eq] @ x, ctrl.qp.lo[eq], atol=tol)
    # Velocities/heading follow the (exactly linear) integrator rows.
    np.testing.assert_allclose(s[1:, IV], s[:-1, IV] + cfg.dt * u[:, 0], atol=tol)
    np.testing.assert_allclose(s[1:, IOM], s[:-1, IOM] + cfg.dt * u[:, 1], atol=tol)
    np.testing.assert_allclose(s[1:, 2], s[:-1, 2] + cfg.dt * s[:-1, IOM], atol=tol)
    # Positions: the nonlinear Euler model along the plan differs from the linearised one only by the
    # linearisation error, second order in the plan's change from the previous plan (millimetres here).
    nonlin = s[:-1, :2] + cfg.dt * s[:-1, IV, None] * np.c_[np.cos(s[:-1, 2]), np.sin(s[:-1, 2])]
    assert np.max(np.abs(nonlin - s[1:, :2])) < 0.005


def test_linearisation_matches_finite_differences_and_rollout():
    lin = UnicycleLinearisation(horizon=6, dt=0.1, speed_floor=0.0)
    rng = np.random.default_rng(3)
    lin.inputs[:] = rng.normal(size=(6, 2))
    state = np.array([0.3, -0.2, 0.7, 0.8, 0.3])
    nominal = lin.update(state)
    # Rollout = repeated Euler steps.
    ref = state.copy()
    for k in range(6):
        ref = np.array(
            [
                ref[0] + 0.1 * ref[3] * np.cos(ref[2]),
                ref[1] + 0.1 * ref[3] * np.sin(ref[2]),
                ref[2] + 0.1 * ref[4],
                ref[3] + 0.1 * lin.inputs[k, 0],
                ref[4] + 0.1 * lin.inputs[k, 1],
            ]
        )
        np.testing.assert_allclose(nominal[k + 1], ref, atol=1e-12)

    def f(z):
        return np.array([z[0] + 0.1 * z[3] * np.cos(z[2]), z[1] + 0.1 * z[3] * np.sin(z[2])])

    for k in range(6):
        z = nominal[k].copy()
        jac = np.zeros((2, NX))
        for i in range(NX):
            e = np.zeros(NX)
            e[i] = 1e-6
            jac[:, i] = (f(z + e) - f(z - e)) / 2e-6
        np.testing.assert_allclose(lin.a_entries[k], [jac[0, 2], jac[0, 3], jac[1, 2], jac[1, 3]], atol=1e-8)
        # Affine model is exact at the nominal point: f(z) = z_xy + A_offdiag z + c.
        pred = (
            z[:2]
            + np.array(
                [
                    lin.a_entries[k, 0] * z[2] + lin.a_entries[k, 1] * z[3],
                    lin.a_entries[k, 2] * z[2] + lin.a_entries[k, 3] * z[3],
                ]
            )
            + lin.offset[k]
        )
        np.testing.assert_allclose(pred, f(z), atol=1e-12)


def test_command_is_the_planned_velocity_and_tracks_the_plan():
    """The mapping plan -> (v, omega): the base executing the command for dt lands on the plan's x_1."""
    cfg = _tight()
    ctrl = MPCController(cfg)
    state = np.array([0.0, 0.0, 0.3, 0.6, 0.0])
    res = ctrl.step(state, np.array([5.0, 0.0]), np.zeros((0, H, 2)), np.zeros((0, H, 2)), 0.1)
    s = ctrl.qp.states(ctrl.qp.solution()[0])
    assert res.v == pytest.approx(s[1, IV], abs=1e-9) and res.omega == pytest.approx(s[1, IOM], abs=1e-9)
    # Plan step 1 moves with v_0 (Euler); the base moves with the command for dt: they differ by at most
    # dt^2 a_max (speed change) + dt^2 v omega (curvature), i.e. about a centimetre.
    moved = unicycle_step(state, res.v, res.omega, cfg.dt)
    assert (
        np.hypot(*(moved[:2] - s[1, IX : IY + 1]))
        < cfg.dt**2 * (cfg.a_max + cfg.v_max * cfg.omega_max) + 1e-6
    )


def test_warm_start_reduces_iterations():
    class ColdStart(MPCController):
        def _prepare(self, *args):
            super()._prepare(*args)
            self.qp.warm_start(np.zeros(self.qp.n), np.zeros(self.qp.m))

    totals = []
    for cls in (MPCController, ColdStart):
        ctrl = cls(MPCConfig(horizon=H, time_limit_s=0.0, max_iter=4000))
        state = np.array([0.0, 0.0, 0.0, 0.0, 0.0])
        mean, var = _humans(xy=(3.0, 2.0), vxy=(0.0, -0.5))
        total = 0
        for _ in range(30):
            res = ctrl.step(state, np.array([6.0, 0.0]), mean, var, 0.1)
            total += res.iterations
            state = unicycle_step(state, res.v, res.omega, 0.1)
            mean[..., 1] -= 0.05
        totals.append(total)
    assert totals[0] < 0.7 * totals[1], totals
