"""MPC step micro-benchmark (``intent-perf bench-mpc``): our in-place OSQP step vs the same QP in cvxpy (DPP).

One control step = load predictions + linearise + update the QP in place + warm-started solve + command
extraction (``MPCController.step``). The cvxpy side states the same QP with Parameters (DPP, so cvxpy
canonicalises once and then only maps parameter values), solved by the same OSQP with the same settings; its
timed part is parameter assignment + ``solve`` + reading the command, with the linearisation, reference and
half-planes taken from our controller outside the timed region (in cvxpy's favour). Inputs come from a closed
loop: the robot crosses 5 walking humans (core.scenario), each predicted with 2 hypotheses (constant velocity
and goal-directed). Allocation: tracemalloc over steady-state steps. JSON names the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import tracemalloc

import cvxpy as cp
import numpy as np
import osqp

from intent_perf_ros.core.mpc.controller import Mode, MPCConfig, MPCController
from intent_perf_ros.core.mpc.hypotheses import expand_hypotheses
from intent_perf_ros.core.mpc.model import IOM, IV, unicycle_step
from intent_perf_ros.core.scenario import ScenarioConfig, SyntheticScenario


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "node": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "osqp": osqp.__version__,
        "cvxpy": cp.__version__,
        "load_average": os.getloadavg(),
    }


class Loop:
    """Closed-loop inputs: robot driven by ``ctrl``, 5 humans, 2 hypotheses each; restarts at the goal."""

    def __init__(self, ctrl: MPCController, humans: int = 5, seed: int = 0) -> None:
        self.ctrl = ctrl
        self.world = SyntheticScenario(ScenarioConfig(humans=humans, seed=seed, crossing_human=True))
        self.goal = np.asarray(self.world.config.robot_goal, dtype=np.float64)
        self.pred_dt, self.hp = 0.2, 12
        self.times = self.pred_dt * np.arange(1, self.hp + 1)
        self.mean = np.zeros((2 * humans, self.hp, 2))
        self.var = np.zeros_like(self.mean)
        k = len(self.world.goals)
        self.probs = np.zeros((humans, k + 1))
        self.restart()

    def restart(self) -> None:
        self.world.reset()
        s = np.asarray(self.world.config.robot_start, dtype=np.float64)
        self.state = np.array([s[0], s[1], 0.0, 0.0, 0.0])
        self.ctrl.reset()

    def inputs(self) -> tuple:
        w = self.world
        cv_mean = w.xy[:, None, :] + w.vxy[:, None, :] * self.times[None, :, None]
        cv_var = np.broadcast_to((0.05**2 + (0.15 * self.times) ** 2)[None, :, None], cv_mean.shape).copy()
        self.probs.fill(0.0)
        self.probs[np.arange(len(w.xy)), w.goal_index] = 0.6
        self.probs[:, -1] = 0.4
        n = expand_hypotheses(
            cv_mean, cv_var, w.xy, w.vxy, w.goals, self.probs, 2, self.pred_dt, self.mean, self.var
        )
        return self.state, self.goal, self.mean[:n], self.var[:n], self.pred_dt

    def advance(self, v: float, omega: float, mode: Mode) -> None:
        if mode == Mode.GOAL_REACHED:
            self.restart()
            return
        self.state = unicycle_step(self.state, v, omega, self.ctrl.config.dt)
        self.world.step(self.ctrl.config.dt)


class CvxpyMPC:
    """The controller's QP written in cvxpy with Parameters (DPP), solved by OSQP with the same settings."""

    def __init__(self, ctrl: MPCController) -> None:
        cfg, H, C = ctrl.config, ctrl.config.horizon, ctrl.qp.slots
        self.ctrl = ctrl
        X, U, S = cp.Variable((H + 1, 5)), cp.Variable((H, 2)), cp.Variable(H)
        self.X = X
        self.x0 = cp.Parameter(5)
        self.jac = cp.Parameter((H, 4))
        self.off = cp.Parameter((H, 2))
        self.ref = cp.Parameter((H, 2))  # the position part of q: -2 w r
        self.vlo, self.vhi = cp.Parameter((H, 2)), cp.Parameter((H, 2))
        self.nx, self.ny, self.b = cp.Parameter((H, C)), cp.Parameter((H, C)), cp.Parameter((H, C))
        dt, w = cfg.dt, ctrl._w
        cons = [
            X[0] == self.x0,
            X[1:, 0]
            == X[:-1, 0]
            + cp.multiply(self.jac[:, 0], X[:-1, 2])
            + cp.multiply(self.jac[:, 1], X[:-1, 3])
            + self.off[:, 0],
            X[1:, 1]
            == X[:-1, 1]
            + cp.multiply(self.jac[:, 2], X[:-1, 2])
            + cp.multiply(self.jac[:, 3], X[:-1, 3])
            + self.off[:, 1],
            X[1:, 2] == X[:-1, 2] + dt * X[:-1, 4],
            X[1:, 3] == X[:-1, 3] + dt * U[:, 0],
            X[1:, 4] == X[:-1, 4] + dt * U[:, 1],
            X[1:, 3:5] >= self.vlo,
            X[1:, 3:5] <= self.vhi,
            cp.abs(U[:, 0]) <= cfg.a_max,
            cp.abs(U[:, 1]) <= cfg.alpha_max,
            S >= 0,
        ]
        for j in range(C):
            cons.append(
                cp.multiply(self.nx[:, j], X[1:, 0]) + cp.multiply(self.ny[:, j], X[1:, 1]) + S
                >= self.b[:, j]
            )
        cost = (
            cp.sum(cp.multiply(w, cp.square(X[1:, 0]) + cp.square(X[1:, 1])))
            + cp.sum(cp.multiply(self.ref, X[1:, 0:2]))
            + cfg.q_omega * cp.sum_squares(X[1:, 4])
            + cfg.r_input[0] * cp.sum_squares(U[:, 0])
            + cfg.r_input[1] * cp.sum_squares(U[:, 1])
            + cfg.slack_quadratic * cp.sum_squares(S)
            + cfg.slack_weight * cp.sum(S)
        )
        self.problem = cp.Problem(cp.Minimize(cost), cons)
        assert self.problem.is_dpp()
        self.settings = {
            "eps_abs": cfg.eps_abs,
            "eps_rel": cfg.eps_rel,
            "max_iter": cfg.max_iter,
            "polishing": False,
            "scaling": 0,
            "adaptive_rho_interval": 25,
            "check_termination": 5,
        }

    def load(self) -> None:
        """Copy this step's data from the controller (not timed)."""
        c, qp, H, C = self.ctrl, self.ctrl.qp, self.ctrl.config.horizon, self.ctrl.qp.slots
        self._x0 = c._state.copy()
        self._jac = c.lin.a_entries.copy()
        self._off = c.lin.offset.copy()
        self._ref = c._qpos.copy()
        self._vlo, self._vhi = c._vel_lo.copy(), c._vel_hi.copy()
        normals = qp.ax_hum
        self._nx, self._ny = normals[:, :, 0].copy(), normals[:, :, 1].copy()
        self._b = np.maximum(qp.lo[qp.r_hum :].reshape(H, C), -1e6)  # unused rows: 0 >= -1e6 - s

    def step(self) -> tuple[float, float, str]:
        """Timed part: parameter assignment + solve + command."""
        self.x0.value, self.jac.value, self.off.value, self.ref.value = (
            self._x0,
            self._jac,
            self._off,
            self._ref,
        )
        self.vlo.value, self.vhi.value = self._vlo, self._vhi
        self.nx.value, self.ny.value, self.b.value = self._nx, self._ny, self._b
        self.problem.solve(solver=cp.OSQP, warm_start=True, **self.settings)
        x = self.X.value
        return float(x[1, IV]), float(x[1, IOM]), self.problem.status


def noise_probe(n: int = 2000) -> dict:
    """A fixed single-threaded workload (sorting 4000 floats, about 100 us) timed like a step: its tail is
    the machine's own scheduling noise (other processes on the 2 cores), not the controller's."""
    a = np.random.default_rng(0).normal(size=4000)
    b = np.empty_like(a)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        b[:] = a
        b.sort()
        ts.append(time.perf_counter() - t0)
    return _percentiles(ts)


def _percentiles(a: list[float]) -> dict:
    x = np.asarray(a) * 1e6
    return {
        "median_us": float(np.median(x)),
        "p99_us": float(np.percentile(x, 99)),
        "mean_us": float(x.mean()),
        "max_us": float(x.max()),
        "over_1ms": int(np.sum(x > 1000.0)),
        "n": len(a),
    }


def bench_horizon(horizon: int, steps: int, cvxpy_steps: int, humans: int) -> dict:
    ctrl = MPCController(MPCConfig(horizon=horizon))
    ctrl.warmup()
    loop = Loop(ctrl, humans)
    ref = CvxpyMPC(ctrl)
    ours, theirs, iters, diffs, modes = [], [], [], [], {}
    gc.disable()  # a collection inside a timed step says nothing about either implementation
    try:
        for i in range(steps):
            args = loop.inputs()
            t0 = time.perf_counter()
            res = ctrl.step(*args)
            ours.append(time.perf_counter() - t0)
            modes[res.mode.name] = modes.get(res.mode.name, 0) + 1
            iters.append(res.iterations)
            if (
                i % max(steps // cvxpy_steps, 1) == 0
                and res.solver_status != "not_run"
                and len(theirs) < cvxpy_steps
            ):
                ref.load()
                t0 = time.perf_counter()
                v, om, status = ref.step()
                theirs.append(time.perf_counter() - t0)
                if res.mode == Mode.OPTIMAL and status == "optimal":
                    diffs.append(max(abs(v - res.v), abs(om - res.omega)))
            loop.advance(res.v, res.omega, res.mode)
    finally:
        gc.enable()
    # Allocation check: steady-state steps under tracemalloc (slower, so not part of the timings).
    tracemalloc.start()
    for _ in range(20):
        res = ctrl.step(*loop.inputs())
        loop.advance(res.v, res.omega, res.mode)
    peaks, nets = [], []
    n_alloc = 200
    for _ in range(n_alloc):
        args = loop.inputs()  # inputs are made outside the measured region
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        res = ctrl.step(*args)
        after, peak = tracemalloc.get_traced_memory()
        peaks.append(peak - before)
        nets.append(after - before)
        loop.advance(res.v, res.omega, res.mode)
    tracemalloc.stop()
    # Fallback cost (the shifted plan and the controlled stop) against the solve it replaces.
    ctrl.reset()
    loop.restart()
    for _ in range(5):
        res = ctrl.step(*loop.inputs())
        loop.advance(res.v, res.omega, res.mode)
    fb = []
    for _ in range(2000):
        ctrl._since_plan = 0
        t0 = time.perf_counter()
        ctrl._fallback(ctrl.result, t0)
        fb.append(time.perf_counter() - t0)
        ctrl._has_plan = True
    stop = []
    for _ in range(2000):
        t0 = time.perf_counter()
        ctrl._stop(ctrl.result, Mode.STOP, t0)
        stop.append(time.perf_counter() - t0)
    o, t = _percentiles(ours), _percentiles(theirs)
    return {
        "horizon": horizon,
        "humans": humans,
        "trajectories": 2 * humans,
        "qp_variables": ctrl.qp.n,
        "qp_constraints": ctrl.qp.m,
        "ours": o,
        "cvxpy_dpp_osqp": t,
        "speedup_median": t["median_us"] / o["median_us"],
        "speedup_p99": t["p99_us"] / o["p99_us"],
        "mean_iterations": float(np.mean(iters)),
        "modes": modes,
        "command_max_abs_diff_vs_cvxpy": float(max(diffs)) if diffs else None,
        "fallback_shifted_plan": _percentiles(fb),
        "fallback_stop": _percentiles(stop),
        "alloc_peak_bytes_per_step_median": float(np.median(peaks)),
        "alloc_peak_bytes_per_step_max": float(max(peaks)),
        "alloc_net_bytes_total": int(sum(nets)),
        "alloc_steps": n_alloc,
        "noise_probe": noise_probe(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="intent-perf bench-mpc", description=__doc__.splitlines()[0])
    ap.add_argument("--horizons", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--steps", type=int, default=3000, help="timed steps of our controller per horizon")
    ap.add_argument("--cvxpy-steps", type=int, default=300, help="timed cvxpy steps per horizon")
    ap.add_argument("--humans", type=int, default=5)
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)
    rows = [bench_horizon(h, args.steps, args.cvxpy_steps, args.humans) for h in args.horizons]
    print(
        f"{'H':>3} {'ours med us':>11} {'p99 us':>8} {'cvxpy med us':>12} {'p99 us':>8} {'x med':>6} "
        f"{'iters':>5} {'fallback us':>11} {'stop us':>7} {'alloc peak B':>12} {'net B':>6} {'|du|':>8}"
    )
    for r in rows:
        d = r["command_max_abs_diff_vs_cvxpy"]
        print(
            f"{r['horizon']:>3} {r['ours']['median_us']:>11.1f} {r['ours']['p99_us']:>8.1f} "
            f"{r['cvxpy_dpp_osqp']['median_us']:>12.1f} {r['cvxpy_dpp_osqp']['p99_us']:>8.1f} "
            f"{r['speedup_median']:>6.1f} {r['mean_iterations']:>5.1f} "
            f"{r['fallback_shifted_plan']['median_us']:>11.1f} {r['fallback_stop']['median_us']:>7.1f} "
            f"{r['alloc_peak_bytes_per_step_median']:>12.0f} {r['alloc_net_bytes_total']:>6d} "
            f"{(d if d is not None else math.nan):>8.1e}"
        )
    out = {"machine": machine(), "rows": rows, "argv": sys.argv if argv is None else argv}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
