"""Stateful human-aware MPC: setup once, then ``step()`` per cycle (update in place, warm start, solve).

A cycle never rebuilds the QP: it rolls the previous plan's inputs out from the measured state, linearises the
unicycle along that rollout (model.py), rewrites the changing values of A and the vectors q, l, u in place
(qp.py, constraints.py), warm starts OSQP from the shifted previous primal/dual solution and solves with a
bounded ``time_limit``/``max_iter``. When OSQP does not return a solution, the command comes from the previous
plan shifted by the steps elapsed (while the robot is still on it and it keeps clear of the current
predictions), else from a controlled stop at the acceleration limits: both are a few numpy operations, far
cheaper than the solve. Commands are always finite and inside [v_min, v_max] x [-omega_max, omega_max].
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import osqp

from intent_perf_ros.core import aot
from intent_perf_ros.core.cache import cached_problem
from intent_perf_ros.core.mpc.constraints import HumanConstraints
from intent_perf_ros.core.mpc.model import IOM, IV, IX, IY, NX, UnicycleLinearisation
from intent_perf_ros.core.mpc.watchdog import StaleInputWatchdog

_kernels = aot.load(aot.MPC_KERNELS)  # compiled ahead of time by make, else JIT
gather, reference_and_bounds, stage_dynamics = _kernels.gather, _kernels.reference_and_bounds, _kernels.stage_dynamics


class Mode(IntEnum):
    """Values match the ControlStatus message constants."""

    OPTIMAL = 0
    SHIFTED_PLAN = 1
    STOP = 2
    STALE_SLOW = 3
    STALE_STOP = 4
    GOAL_REACHED = 5
    NO_GOAL = 6


@dataclass(frozen=True)
class MPCConfig:
    horizon: int = 20  # steps
    dt: float = 0.1  # [s] step of the plan and of the control loop
    v_max: float = 1.0  # [m/s]
    v_min: float = 0.0  # [m/s] <= 0; negative allows reversing
    omega_max: float = 1.5  # [rad/s]
    a_max: float = 1.0  # [m/s^2]
    alpha_max: float = 3.0  # [rad/s^2]
    q_position: float = 1.0  # weight of the squared distance to the reference, per step
    q_omega: float = 0.05  # weight of omega^2 (damps weaving)
    r_input: tuple[float, float] = (0.1, 0.02)  # weights of a^2 and alpha^2
    terminal_weight: float = 5.0  # multiplies q_position at the last step
    safety_radius: float = 0.6  # [m] robot radius + human radius
    confidence: float = 0.95  # radius inflated by sqrt(chi2_2(confidence)) * predicted std
    # Slack penalties. A large *linear* weight (an exact penalty) needs dual values that large on every
    # inactive slack bound, which ADMM reaches slowly (30-50 iterations per step instead of 10-20 in a run
    # with one human); a large quadratic weight lets the slack grow only as (tracking gain)/slack_quadratic.
    slack_weight: float = 1.0  # linear penalty on the per-step slack
    slack_quadratic: float = 1e4  # quadratic penalty on the slack
    max_humans: int = 32  # predicted trajectories kept = max_humans * hypotheses_per_human (nearest)
    hypotheses_per_human: int = 2
    obstacle_slots: int = 10  # half-plane rows per step; with more trajectories, the nearest per step
    time_limit_s: float = 0.005  # OSQP time limit per solve
    max_iter: int = 200
    eps_abs: float = 1e-3  # OSQP tolerances (an absolute 1 mm on residuals in metres)
    eps_rel: float = 1e-2
    goal_tolerance: float = 0.2  # [m] GOAL_REACHED inside this distance
    speed_floor: float = 0.1  # [m/s] lowest speed used in the Jacobian (see model.py)
    max_shift_steps: int = 5  # a failed solve may reuse the previous plan for at most this many cycles
    plan_tolerance: float = 0.3  # [m] ... and only while the robot is this close to it
    slow_factor: float = 0.5  # speed limit factor of the "slow" behaviour
    detour_offset: float = 1.0  # [m] lateral reference offset of the detour behaviours
    pass_bias: float = 0.3  # tilt of the half-plane normals towards passing on one side (constraints.py)
    slow_after_s: float = 0.3  # stale-input watchdog
    stop_after_s: float = 1.0
    osqp_settings: dict = field(default_factory=dict)  # extra OSQP settings (override the defaults below)

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.horizon >= 2, f"horizon must be >= 2 steps, got {self.horizon}")
        need(self.dt > 0.0, f"dt must be positive seconds, got {self.dt}")
        need(
            self.v_min <= 0.0 < self.v_max,
            f"need v_min <= 0 < v_max, got v_min={self.v_min}, v_max={self.v_max}",
        )
        for name in ("omega_max", "a_max", "alpha_max", "q_position", "terminal_weight", "slack_weight"):
            need(getattr(self, name) > 0.0, f"{name} must be positive, got {getattr(self, name)}")
        for name in ("q_omega", "slack_quadratic", "safety_radius", "goal_tolerance", "speed_floor"):
            need(getattr(self, name) >= 0.0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(
            len(self.r_input) == 2 and min(self.r_input) >= 0.0,
            f"r_input must be two weights >= 0 (a, alpha), got {self.r_input}",
        )
        need(
            self.max_humans >= 0 and self.hypotheses_per_human >= 1 and self.obstacle_slots >= 0,
            "max_humans and obstacle_slots must be >= 0, hypotheses_per_human >= 1",
        )
        need(
            self.time_limit_s >= 0.0 and self.max_iter >= 1,
            "time_limit_s must be >= 0 (0: none), max_iter >= 1",
        )
        need(0.0 < self.slow_factor <= 1.0, f"slow_factor must be in (0, 1], got {self.slow_factor}")
        need(self.max_shift_steps >= 0, f"max_shift_steps must be >= 0, got {self.max_shift_steps}")


@dataclass
class ControlResult:
    """One cycle's command and diagnostics (the controller reuses one instance)."""

    v: float = 0.0
    omega: float = 0.0
    mode: Mode = Mode.STOP
    solver_status: str = "not_run"
    iterations: int = 0
    solve_time_ms: float = 0.0
    min_clearance: float = math.inf
    goal_distance: float = math.nan
    humans_considered: int = 0


# What each behaviour does: (speed limits times slow_factor?, reference speed factor, lateral offset sign).
# proceed: full speed towards the goal. slow: speed limit and reference speed times slow_factor.
# yield: reference held at the current position (the robot brakes and waits, the half-planes still push it
#   out of a human's way). detour_left/right: reference shifted detour_offset metres left/right of the
#   straight line to the goal, tapering to zero over the last 2*detour_offset metres.
BEHAVIOURS: dict[str, tuple[bool, float, float]] = {
    "proceed": (False, 1.0, 0.0),
    "slow": (True, 1.0, 0.0),
    "yield": (False, 0.0, 0.0),
    "detour_left": (False, 1.0, 1.0),
    "detour_right": (False, 1.0, -1.0),
}
_OK = (osqp.SolverStatus.OSQP_SOLVED.value, osqp.SolverStatus.OSQP_SOLVED_INACCURATE.value)
_STATUS_NAMES = {s.value: s.name.removeprefix("OSQP_").lower() for s in osqp.SolverStatus}
_STATUS_NAMES[-1] = "update_rejected"


class MPCController:
    """Setup once (``__init__`` factorises), ``warmup()``, then ``step()`` every control cycle."""

    def __init__(self, config: MPCConfig = MPCConfig()) -> None:
        config.validate()
        self.config = cfg = config
        H = cfg.horizon
        # No OSQP scaling: with it, every update of A re-runs the Ruiz equilibration (an A update at H=20
        # took 74 us with 10 scaling passes, 13 us without); the variables are already in comparable units
        # (m, rad, m/s, rad/s) and mean iterations in a closed-loop run were 17.2 without vs 17.0 with.
        settings = {
            "verbose": False,
            "scaling": 0,
            "eps_abs": cfg.eps_abs,
            "eps_rel": cfg.eps_rel,
            "polishing": False,
            "warm_starting": True,
            "max_iter": cfg.max_iter,
            "time_limit": cfg.time_limit_s or 1e10,  # OSQP default 1e10 s = no limit
            "adaptive_rho_interval": 25,
            "check_termination": 5,
        }
        settings.update(cfg.osqp_settings)
        self.capacity = cfg.max_humans * cfg.hypotheses_per_human
        slots = min(cfg.obstacle_slots, self.capacity)
        # The QP structure per (horizon, dt, slots, settings) comes from a byte-bounded LRU: a controller
        # rebuilt with the same settings (e.g. a horizon restored after degradation) skips the Python build.
        self.qp = qp = cached_problem(H, cfg.dt, slots, settings)
        self.lin = UnicycleLinearisation(H, cfg.dt, cfg.speed_floor)
        self.humans = HumanConstraints(
            H, cfg.dt, self.capacity, slots, cfg.safety_radius, cfg.confidence, cfg.pass_bias
        )
        self.watchdog = StaleInputWatchdog(cfg.slow_after_s, cfg.stop_after_s)
        # Cost (fixed): position weights on x_1..x_H, omega, inputs, slacks.
        self._w = np.full(H, cfg.q_position)
        self._w[-1] *= cfg.terminal_weight
        states_p = qp.p_diag[: qp.n_state].reshape(H + 1, NX)
        states_p[1:, IX] = self._w
        states_p[1:, IY] = self._w
        states_p[1:, IOM] = cfg.q_omega
        inputs_p = qp.p_diag[qp.u0 : qp.s0].reshape(H, 2)
        inputs_p[:, 0], inputs_p[:, 1] = cfg.r_input
        qp.p_diag[qp.s0 :] = cfg.slack_quadratic
        qp.q[qp.s0 :] = cfg.slack_weight
        # P holds 2*(1/2 z'Pz): OSQP minimises 1/2 z'Pz + q'z, so the weights above are doubled.
        qp.p_diag *= 2.0
        inp_lo = qp.lo[qp.r_inp : qp.r_slk].reshape(H, 2)
        inp_hi = qp.hi[qp.r_inp : qp.r_slk].reshape(H, 2)
        inp_lo[:, 0], inp_lo[:, 1] = -cfg.a_max, -cfg.alpha_max
        inp_hi[:, 0], inp_hi[:, 1] = cfg.a_max, cfg.alpha_max
        # Views written every step.
        self._dyn_lo = qp.lo[: qp.n_state].reshape(H + 1, NX)
        self._dyn_hi = qp.hi[: qp.n_state].reshape(H + 1, NX)
        self._vel_lo = qp.lo[qp.r_vel : qp.r_inp].reshape(H, 2)
        self._vel_hi = qp.hi[qp.r_vel : qp.r_inp].reshape(H, 2)
        self._hum_lo = qp.lo[qp.r_hum :]
        self._qpos = qp.position_q()[1:]
        self._left = np.zeros(2)
        self._xw = np.zeros(qp.n)
        self._yw = np.zeros(qp.m)
        self._x_prev = np.zeros(qp.n)
        self._y_prev = np.zeros(qp.m)
        self._xw_states = qp.states(self._xw)
        self._nominal_u = self.lin.inputs.reshape(-1)
        self._hold = np.zeros((H, 2))
        self._state = np.zeros(NX)
        self._goal = np.zeros(2)
        self.result = ControlResult()
        self._behaviour = BEHAVIOURS["proceed"]
        self.behaviour = "proceed"
        qp.setup()
        self.reset()

    # ------------------------------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget the previous plan, the warm start and the statistics (e.g. after a new goal far away)."""
        self.lin.inputs.fill(0.0)
        self._has_plan = False
        self._has_duals = False
        self._since_plan = 0
        self._stats = {
            "steps": 0,
            "solves": 0,
            "optimal": 0,
            "fallbacks": 0,
            "shifted": 0,
            "stops": 0,
            "iterations": 0,
            "humans_dropped": 0,
            "invalid_inputs": 0,
            "max_step_ms": 0.0,
            "total_step_ms": 0.0,
        }
        self._status_counts: dict[str, int] = {}

    def set_behaviour(self, name: str) -> None:
        """One of "proceed", "slow", "yield", "detour_left", "detour_right" (see BEHAVIOURS)."""
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {name!r}; use one of {sorted(BEHAVIOURS)}")
        self._behaviour = BEHAVIOURS[name]
        self.behaviour = name

    def stats(self) -> dict:
        s = dict(self._stats)
        s["mean_iterations"] = s["iterations"] / s["solves"] if s["solves"] else 0.0
        s["mean_step_ms"] = s["total_step_ms"] / s["steps"] if s["steps"] else 0.0
        s["solver_status_counts"] = dict(self._status_counts)
        return s

    def warmup(self, steps: int = 20) -> None:
        """Solve a dummy approach past one person so that caches, rho adaptation and branches are primed."""
        state = np.zeros(NX)
        goal = np.array([4.0, 0.0])
        hp = self.config.horizon
        mean = np.zeros((1, hp, 2))
        mean[0, :, 0] = 2.0
        mean[0, :, 1] = 0.3
        var = np.full((1, hp, 2), 0.01)
        for _ in range(steps):
            res = self.step(state, goal, mean, var, self.config.dt)
            state[IX] += self.config.dt * res.v * math.cos(state[2])
            state[IY] += self.config.dt * res.v * math.sin(state[2])
            state[2] += self.config.dt * res.omega
            state[IV], state[IOM] = res.v, res.omega
        self.reset()

    def step(
        self,
        state: np.ndarray,
        goal: np.ndarray,
        human_mean: np.ndarray,
        human_var: np.ndarray,
        pred_dt: float,
        input_age_s: float = 0.0,
    ) -> ControlResult:
        """One control cycle. Returns the controller's reused ``ControlResult`` (copy it to keep it)."""
        t0 = time.perf_counter()
        cfg, res = self.config, self.result
        if np.shape(state) != (NX,):
            raise ValueError(
                f"state must be [x, y, theta, v, omega] (shape (5,)), got shape {np.shape(state)}"
            )
        if np.shape(goal) != (2,):
            raise ValueError(f"goal must be [x, y] (shape (2,)); pass NaNs for no goal, got {np.shape(goal)}")
        self._stats["steps"] += 1
        res.solver_status, res.iterations, res.solve_time_ms = "not_run", 0, 0.0
        st = self._state
        np.copyto(st, state)
        n = self.humans.load(human_mean, human_var, pred_dt, st[:2])
        self._stats["humans_dropped"] += self.humans.dropped
        res.humans_considered = max(n, 0)
        scale = self.watchdog.speed_scale(input_age_s)
        if not np.isfinite(st).all():
            # Without a valid state there is nothing to decelerate from: command zero.
            self._stats["invalid_inputs"] += 1
            return self._finish(res, 0.0, 0.0, Mode.STOP, t0, clearance=math.nan)
        if n < 0:  # a prediction with NaN/inf: that human cannot be avoided, so brake
            self._stats["invalid_inputs"] += 1
            return self._stop(res, Mode.STOP, t0)
        np.copyto(self._goal, goal)
        gx, gy = self._goal[0] - st[IX], self._goal[1] - st[IY]
        dist = math.hypot(gx, gy)
        res.goal_distance = dist
        if not math.isfinite(dist):
            return self._stop(res, Mode.NO_GOAL, t0)
        if dist < cfg.goal_tolerance:
            return self._stop(res, Mode.GOAL_REACHED, t0)
        if scale <= 0.0:
            return self._stop(res, Mode.STALE_STOP, t0)
        self._prepare(st, gx / dist, gy / dist, dist, scale)
        qp = self.qp
        t_solve = time.perf_counter()
        if qp.update_step():
            status, iters = qp.solve()
        else:  # OSQP refused the data (e.g. l > u): its previous problem must not be solved again
            status, iters = -1, 0
        res.solve_time_ms = (time.perf_counter() - t_solve) * 1e3
        res.solver_status, res.iterations = _STATUS_NAMES.get(status, str(status)), iters
        self._stats["solves"] += 1
        self._stats["iterations"] += iters
        self._status_counts[res.solver_status] = self._status_counts.get(res.solver_status, 0) + 1
        if status in _OK:
            x, y = qp.solution()
            states = qp.states(x)
            v, om = float(states[1, IV]), float(states[1, IOM])
            if math.isfinite(v) and math.isfinite(om) and np.isfinite(x).all():
                self._store_plan(x, y)
                self._stats["optimal"] += 1
                mode = Mode.OPTIMAL if scale >= 1.0 else Mode.STALE_SLOW
                return self._finish(
                    res, v, om, mode, t0, clearance=self.humans.min_clearance(states[1:, IX : IY + 1])
                )
        return self._fallback(res, t0)

    # --------------------------------------------------------------------------------------------- internals
    def _prepare(self, st: np.ndarray, dx: float, dy: float, dist: float, scale: float) -> None:
        """Write this cycle's vectors and A values into the QP's preallocated arrays."""
        cfg, qp, lin = self.config, self.qp, self.lin
        use_slow, ref_factor, side = self._behaviour
        cap = scale * (cfg.slow_factor if use_slow else 1.0)
        reference_and_bounds(
            st,
            dx,
            dy,
            dist,
            cfg.v_max * cap * ref_factor,
            side * cfg.detour_offset,
            2.0 * cfg.detour_offset,
            cfg.dt,
            self._w,
            self._qpos,
            cfg.v_min * cap,
            cfg.v_max * cap,
            cfg.omega_max,
            cfg.a_max,
            cfg.alpha_max,
            self._vel_lo,
            self._vel_hi,
        )
        # Linearisation along the rollout of the shifted previous inputs.
        nominal = lin.update(st)
        stage_dynamics(st, lin.a_entries, lin.offset, qp.ax_dyn, self._dyn_lo, self._dyn_hi)
        self._left[0], self._left[1] = -dy, dx
        self.humans.fill_rows(nominal, qp.ax_hum, self._hum_lo, self._left)
        # Warm start: the rollout for the states, shifted inputs/slacks and duals of the last solution.
        gather(self._x_prev, qp.x_shift, self._has_plan, self._xw)
        self._xw_states[:] = nominal
        gather(self._y_prev, qp.y_shift, self._has_duals, self._yw)
        qp.warm_start(self._xw, self._yw)

    def _store_plan(self, x: np.ndarray, y: np.ndarray) -> None:
        # osqp's binding hands out fresh arrays on every solve, so keeping references costs no copy.
        self._x_prev, self._y_prev = x, y
        u0, s0 = self.qp.u0, self.qp.s0
        # Next cycle's nominal inputs: this plan's u_1..u_{H-1}, then zero (hold the velocities).
        self._nominal_u[:-2] = x[u0 + 2 : s0]
        self._nominal_u[-2:] = 0.0
        self._has_plan = self._has_duals = True
        self._since_plan = 0

    def _fallback(self, res: ControlResult, t0: float) -> ControlResult:
        """Shifted previous plan while it is valid, else a controlled stop."""
        cfg = self.config
        self._stats["fallbacks"] += 1
        self._has_duals = False
        self._since_plan += 1
        j = self._since_plan
        H = cfg.horizon
        if self._has_plan and j <= cfg.max_shift_steps and j < H:
            plan = self.qp.states(self._x_prev)
            off = math.hypot(self._state[IX] - plan[j, IX], self._state[IY] - plan[j, IY])
            # The old plan's positions p_{j+1..H} against the current predictions at steps 1..H-j.
            clearance = self.humans.min_clearance(plan[j + 1 :, IX : IY + 1])
            if off <= cfg.plan_tolerance and clearance >= 0.0:
                self._stats["shifted"] += 1
                # The rollout of the next cycle must start from this plan's remaining inputs.
                self._nominal_u[:-2] = self._nominal_u[2:].copy()
                self._nominal_u[-2:] = 0.0
                return self._finish(
                    res, plan[j + 1, IV], plan[j + 1, IOM], Mode.SHIFTED_PLAN, t0, clearance=clearance
                )
        self._has_plan = False
        self.lin.inputs.fill(0.0)
        return self._stop(res, Mode.STOP, t0)

    def _stop(self, res: ControlResult, mode: Mode, t0: float) -> ControlResult:
        """Decelerate both velocities towards zero at the acceleration limits; the plan is dropped."""
        cfg, st = self.config, self._state
        if mode == Mode.STOP:
            self._stats["stops"] += 1
        else:
            self._has_plan = self._has_duals = False
            self.lin.inputs.fill(0.0)
        dv, dom = cfg.a_max * cfg.dt, cfg.alpha_max * cfg.dt
        v = st[IV] - min(max(st[IV], -dv), dv)
        om = st[IOM] - min(max(st[IOM], -dom), dom)
        self._hold[:] = st[IX : IY + 1]
        return self._finish(res, v, om, mode, t0, clearance=self.humans.min_clearance(self._hold))

    def _finish(
        self, res: ControlResult, v: float, om: float, mode: Mode, t0: float, clearance: float
    ) -> ControlResult:
        cfg = self.config
        v = float(v) if math.isfinite(v) else 0.0
        om = float(om) if math.isfinite(om) else 0.0
        res.v = min(max(v, cfg.v_min), cfg.v_max)
        res.omega = min(max(om, -cfg.omega_max), cfg.omega_max)
        res.mode = mode
        res.min_clearance = clearance
        ms = (time.perf_counter() - t0) * 1e3
        self._stats["total_step_ms"] += ms
        self._stats["max_step_ms"] = max(self._stats["max_step_ms"], ms)
        return res
