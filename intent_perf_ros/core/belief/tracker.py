"""Per-human belief over goals in a fixed pool of preallocated slots (the API the belief node calls).

Every array the update touches is allocated in the constructor (or when a call brings more humans
than any before), so a steady-state ``update`` allocates nothing: one numba call does the slot
bookkeeping, the filtering and the outputs. Run ``warmup()`` at start-up (it compiles the kernels
when they come from the JIT rather than from ``intent-perf build-kernels``).

Pool: ids are matched to slots; a new id takes the first free slot; an id not seen for more than
``track_timeout_s`` is dropped (its slot freed) at the start of the next update. When every slot
is taken a new id gets no slot: its row reports the prior, entropy of the prior, ESS 0,
``most_likely`` -1 and ``tracked`` False, and ``stats()["pool_full_events"]`` counts it; it is
retried on every update and gets a slot once one frees up (no tracked human is evicted).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from intent_perf_ros.core import aot

from . import layout
from .goals import GoalFlowField, hypothesis_labels, validate_goals
from .layout import new_state

# The update kernels compiled ahead of time by make (core/aot.py: then no numba in this process), else JIT.
_bayes = aot.load(aot.BELIEF_BAYES_KERNELS)
_particles = aot.load(aot.BELIEF_PARTICLE_KERNELS)

MODES = ("particle", "bayes")


@dataclass
class BeliefConfig:
    """Settings of a BeliefTracker (units: metres, seconds).

    goals: (K, 2) goal positions; labels: K names or None (``goal0``...); the wandering hypothesis
    is added last. prior: H = K + 1 probabilities for a new track (None: uniform).
    mode: "particle" (mixture particle filter) or "bayes" (discrete Bayes filter, cheap).
    min_particle_share: floor on each hypothesis's share of particles after resampling (None:
    min(0.02, 0.5 / H)). flow: a fitted GoalFlowField for these goals, or None (straight lines).
    relax_time_s is the particle filter's relaxation time towards the goal direction and
    bayes_relax_time_s the Bayes filter's (each chosen on the training files for its mode; the
    Bayes filter scores one observed velocity step against the next, so a shorter time suits it).
    The motion and observation parameters are listed in ``layout.py``.
    """

    goals: np.ndarray
    labels: Sequence[str] | None = None
    mode: str = "particle"
    particles: int = 1000
    capacity: int = 64
    track_timeout_s: float = 2.0
    seed: int = 0
    prior: np.ndarray | None = None
    relax_time_s: float = 1.5
    bayes_relax_time_s: float = 0.7
    goal_noise: float = 0.3
    wander_noise: float = 0.8
    pos_sigma_m: float = 0.2
    vel_sigma: float = 0.3
    vel_rel: float = 0.0
    switch_rate_hz: float = 0.05
    arrive_radius_m: float = 0.5
    ess_threshold: float = 0.5
    min_particle_share: float | None = None
    gp_weight: float = 0.3
    gp_sigma_m: float = 1.0
    flow: GoalFlowField | None = None

    def kernel_params(self) -> np.ndarray:
        p = np.empty(layout.N_PARAMS)
        p[layout.P_RELAX] = self.bayes_relax_time_s if self.mode == "bayes" else self.relax_time_s
        p[layout.P_GOAL_NOISE] = self.goal_noise
        p[layout.P_WANDER_NOISE] = self.wander_noise
        p[layout.P_POS_SIGMA] = self.pos_sigma_m
        p[layout.P_VEL_SIGMA] = self.vel_sigma
        p[layout.P_SWITCH_RATE] = self.switch_rate_hz
        p[layout.P_ARRIVE] = self.arrive_radius_m
        p[layout.P_ESS] = self.ess_threshold
        p[layout.P_GP_WEIGHT] = self.gp_weight
        p[layout.P_GP_SIGMA] = self.gp_sigma_m
        p[layout.P_TIMEOUT] = self.track_timeout_s
        p[layout.P_VEL_REL] = self.vel_rel
        if self.flow is None:
            # A zero field: every lookup falls back to the straight line to the goal.
            p[layout.P_FLOW_CELL], p[layout.P_FLOW_SHRINK] = 1.0, 1.0
            p[layout.P_FLOW_X0], p[layout.P_FLOW_Y0] = 0.0, 0.0
        else:
            p[layout.P_FLOW_CELL] = self.flow.cell_m
            p[layout.P_FLOW_X0], p[layout.P_FLOW_Y0] = self.flow.origin_
            p[layout.P_FLOW_SHRINK] = self.flow.shrink
        return p


class BeliefResult:
    """Outputs of the last update, rows aligned with its ids; arrays are views reused by the next update.

    probabilities (M, H) rows summing to 1 (last column: wandering); entropy (M,) nats; ess (M,)
    effective sample size: of the particles in particle mode, 1 / sum_k p_k^2 (the effective number
    of hypotheses, 1 to H) in Bayes mode, 0 for untracked rows; most_likely (M,) hypothesis
    index (-1 when untracked); tracked (M,) bool (False: the pool was full); slot (M,) slot or -1.
    """

    __slots__ = ("entropy", "ess", "most_likely", "probabilities", "slot", "tracked")

    def __init__(self, probabilities: np.ndarray, entropy: np.ndarray, ess: np.ndarray,
                 most_likely: np.ndarray, tracked: np.ndarray, slot: np.ndarray) -> None:
        self.probabilities = probabilities
        self.entropy = entropy
        self.ess = ess
        self.most_likely = most_likely
        self.tracked = tracked
        self.slot = slot


class BeliefTracker:
    """Belief over each tracked human's goal (see the module docstring for the pool's behaviour)."""

    def __init__(self, config: BeliefConfig) -> None:
        cfg = config
        self.config = cfg
        self.goals = validate_goals(cfg.goals)
        k = self.goals.shape[0]
        h = k + 1
        self.labels = hypothesis_labels(k, cfg.labels)
        if cfg.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
        if cfg.capacity < 1:
            raise ValueError(f"capacity must be >= 1 slots, got {cfg.capacity}")
        positive = ("track_timeout_s", "relax_time_s", "bayes_relax_time_s", "goal_noise", "wander_noise",
                    "pos_sigma_m", "vel_sigma", "gp_sigma_m")
        for name in positive:
            if not getattr(cfg, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(cfg, name)}")
        if min(cfg.switch_rate_hz, cfg.arrive_radius_m, cfg.gp_weight, cfg.vel_rel) < 0:
            raise ValueError("switch_rate_hz, arrive_radius_m, gp_weight and vel_rel must be >= 0")
        if not 0 < cfg.ess_threshold <= 1:
            raise ValueError(f"ess_threshold is a share of the particles in (0, 1], got {cfg.ess_threshold}")
        if cfg.prior is None:
            self.prior = np.full(h, 1.0 / h)
        else:
            self.prior = np.ascontiguousarray(cfg.prior, dtype=np.float64)
            if self.prior.shape != (h,) or not np.all(self.prior > 0) or not np.all(np.isfinite(self.prior)):
                raise ValueError(f"prior must be {h} positive numbers (K goals + wandering), got {cfg.prior}")
            self.prior = self.prior / self.prior.sum()
        n = int(cfg.particles)
        if cfg.mode == "particle":
            share = min(0.02, 0.5 / h) if cfg.min_particle_share is None else cfg.min_particle_share
            if not 0 <= share * h < 1:
                raise ValueError(f"min_particle_share * {h} hypotheses must be below 1, got {share}")
            self.floor = max(1, int(share * n))
            if n < 2 * h or h * self.floor >= n:
                raise ValueError(f"{n} particles are too few for {h} hypotheses; use at least {4 * h}")
        if cfg.flow is None:
            self._flow = np.zeros((k, 1, 1, 2))
        else:
            self._flow = np.ascontiguousarray(getattr(cfg.flow, "field_", None), dtype=np.float64)
            if self._flow.ndim != 4 or self._flow.shape[0] != k or self._flow.shape[3] != 2:
                raise ValueError(f"flow must be a GoalFlowField fitted on these {k} goals")
        self._params = cfg.kernel_params()
        cap = int(cfg.capacity)
        self._slot_id = np.zeros(cap, dtype=np.int64)
        self._active = np.zeros(cap, dtype=np.bool_)
        self._last_t = np.zeros(cap)
        self._counters = np.zeros(layout.N_COUNTERS, dtype=np.int64)
        self._rng = new_state(cfg.seed)
        self._ll = np.zeros(max(n, h)) if cfg.mode == "particle" else np.zeros(h)
        self._ll_goal = np.zeros(h)
        if cfg.mode == "particle":
            self._px, self._py, self._pvx, self._pvy, self._w = np.zeros((5, cap, n))
            self._g = np.zeros((cap, n), dtype=np.int64)
            self._masses = np.zeros(h)
            self._sq = np.zeros(h)
            self._counts = np.zeros(h, dtype=np.int64)
            self._alloc = np.zeros(h, dtype=np.int64)
            self._scratch = np.zeros((5, n))
            self._scratch_g = np.zeros(n, dtype=np.int64)
        else:
            self._prob = np.zeros((cap, h))
            self._state = np.zeros((cap, 4))
        self._no_gp = np.zeros((1, 1, 2))
        self._grow_outputs(cap)
        # Time of the last update and the update count live in arrays: rebinding Python floats and
        # ints would keep a fresh object alive after every update.
        self._clock = np.array([-np.inf])
        self._updates = np.zeros(1, dtype=np.int64)

    def _grow_outputs(self, m: int) -> None:
        h = self.prior.shape[0]
        self._out_prob = np.zeros((m, h))
        self._out_ent = np.zeros(m)
        self._out_ess = np.zeros(m)
        self._out_ml = np.zeros(m, dtype=np.int64)
        self._out_tracked = np.zeros(m, dtype=np.bool_)
        self._out_slot = np.zeros(m, dtype=np.int64)
        self._views: BeliefResult | None = None
        self._views_m = -1

    def _result(self, m: int) -> BeliefResult:
        if self._views_m != m:
            self._views = BeliefResult(self._out_prob[:m], self._out_ent[:m], self._out_ess[:m],
                                       self._out_ml[:m], self._out_tracked[:m], self._out_slot[:m])
            self._views_m = m
        return self._views

    def warmup(self) -> None:
        """Run every kernel once on a throw-away copy of this tracker (a JIT kernel compiles or loads
        from numba's cache on its first call; compiled ahead of time, this only touches their code)."""
        twin = BeliefTracker(BeliefConfig(**{**self.config.__dict__, "capacity": 2}))
        ids = np.array([1, 2], dtype=np.int64)
        xy = np.zeros((2, 2))
        vxy = np.ones((2, 2))
        gp = np.ones((2, 3, 2))
        twin._run(0.0, ids, xy, vxy, None, 0.4)
        twin._run(0.4, ids, xy + 0.4, vxy, gp, 0.4)
        twin._run(0.8, ids[:1], xy[:1] + 0.8, vxy[:1], None, 0.4)

    def reset(self) -> None:
        """Forget every track (e.g. after the clock jumped backwards); counters are kept."""
        self._active[:] = False
        self._clock[0] = -np.inf

    def update(self, t: float, ids: np.ndarray, xy: np.ndarray, vxy: np.ndarray,
               pred_mean: np.ndarray | None = None, pred_dt: float = 0.4) -> BeliefResult:
        """Assimilate one observation of M humans at time ``t`` (s); returns the reused BeliefResult.

        ids (M,) int; xy (M, 2) m; vxy (M, 2) m/s; pred_mean (M, Hp, 2) optional predicted positions
        (the GP's mean path, ``pred_dt`` s apart), used as extra tempered evidence about the goal.
        """
        return self._run(t, ids, xy, vxy, pred_mean, pred_dt)

    def _run(self, t: float, ids: np.ndarray, xy: np.ndarray, vxy: np.ndarray, pred_mean: np.ndarray | None,
             pred_dt: float) -> BeliefResult:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        xy = np.ascontiguousarray(xy, dtype=np.float64)
        vxy = np.ascontiguousarray(vxy, dtype=np.float64)
        m = ids.shape[0]
        if ids.ndim != 1 or xy.shape != (m, 2) or vxy.shape != (m, 2):
            raise ValueError(f"need shapes ids (M,), xy (M, 2) and vxy (M, 2); "
                             f"got {ids.shape}, {xy.shape}, {vxy.shape}")
        use_gp = pred_mean is not None
        if use_gp:
            gp = np.ascontiguousarray(pred_mean, dtype=np.float64)
            if gp.ndim != 3 or gp.shape[0] != m or gp.shape[2] != 2 or gp.shape[1] < 1:
                raise ValueError(f"pred_mean must have shape (M={m}, Hp >= 1, 2), got {gp.shape}")
            if not pred_dt > 0:
                raise ValueError(f"pred_dt must be > 0 s, got {pred_dt}")
        else:
            gp = self._no_gp
        t = float(t)
        if t < self._clock[0]:
            raise ValueError(f"time went backwards ({t} < {self._clock[0]}); "
                             "call reset() after a clock jump")
        if m > self._out_prob.shape[0]:
            self._grow_outputs(m)
        if self.config.mode == "particle":
            code = _particles.particle_update(
                t, ids, xy, vxy, gp, use_gp, self.goals, self._flow, self.prior, self._params, self.floor,
                self._slot_id, self._active, self._last_t, self._px, self._py, self._pvx, self._pvy, self._w,
                self._g, self._masses, self._counts, self._alloc, self._ll_goal, self._ll, self._sq,
                self._scratch, self._scratch_g, self._rng, self._counters, self._out_prob, self._out_ent,
                self._out_ess, self._out_ml, self._out_tracked, self._out_slot)
        else:
            code = _bayes.bayes_update(
                t, ids, xy, vxy, gp, use_gp, self.goals, self._flow, self.prior, self._params, self._slot_id,
                self._active, self._last_t, self._prob, self._state, self._ll, self._counters, self._out_prob,
                self._out_ent, self._out_ess, self._out_ml, self._out_tracked, self._out_slot)
        if code == layout.ERR_NONFINITE:
            raise ValueError(f"t, xy, vxy or pred_mean contain NaN, infinity, positions beyond "
                             f"+-{layout.MAX_COORDINATE:g} m or speeds beyond {layout.MAX_SPEED:g} m/s; "
                             "drop those humans before update()")
        if code == layout.ERR_DUPLICATE:
            raise ValueError("ids contain duplicates; give each human one row per update")
        if code == layout.ERR_TIME:
            raise ValueError("a track's time went backwards; call reset() after a clock jump")
        self._clock[0] = t
        self._updates[0] += 1
        return self._result(m)

    def stats(self) -> dict:
        c = self._counters
        return {
            "mode": self.config.mode,
            "active_tracks": int(self._active.sum()),
            "capacity": int(self._active.shape[0]),
            "particles": int(self.config.particles) if self.config.mode == "particle" else 0,
            "hypotheses": len(self.labels),
            "updates": int(self._updates[0]),
            "pool_full_events": int(c[layout.C_POOL_FULL]),
            "resamples": int(c[layout.C_RESAMPLES]),
            "tracks_created": int(c[layout.C_CREATED]),
            "tracks_dropped": int(c[layout.C_DROPPED]),
            "particle_resets": int(c[layout.C_RESETS]),
        }

    def belief_of(self, pid: int) -> np.ndarray | None:
        """Current goal probabilities (H,) of one tracked id (a copy), or None if it holds no slot."""
        hit = np.flatnonzero(self._active & (self._slot_id == pid))
        if hit.size == 0:
            return None
        s = int(hit[0])
        if self.config.mode == "bayes":
            return self._prob[s].copy()
        masses = np.bincount(self._g[s], weights=self._w[s], minlength=len(self.labels))
        return masses / masses.sum()
