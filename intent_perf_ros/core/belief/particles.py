"""Particle filter over (position, velocity, goal) per human, as numba kernels on preallocated slots.

The filter is a mixture particle filter (Vermaak, Doucet and Pérez 2003): each hypothesis
(K goals + wandering) owns its own group of particles and the belief in a goal is the total weight
of its group. Resampling happens within each group, and the number of particles per group is
re-allocated from the group masses with a floor of ``floor`` particles per hypothesis, while the
group mass is preserved exactly. So an unlikely goal keeps a cloud that tracks the human's actual
position, and its belief can grow back as soon as the human turns towards it (change of mind).

Motion (per step of dt seconds), with a = min(1, dt / relax):
  goal k:     v <- v + a (|v| u_k - v) + q_goal sqrt(dt) n,  u_k the unit vector to goal k
              (straight, or bent by a learned GoalFlowField, see model.goal_direction)
              (speed kept, heading relaxes to the goal; v <- v (1 - a) inside the arrival radius)
  wandering:  v <- v + q_wander sqrt(dt) n                     (random walk in velocity)
  p <- p + v dt
Goal switching is a jump-Markov chain: each particle redraws its goal from the track's prior with
probability e = 1 - exp(-rate dt), so in expectation m_k <- (1 - e) m_k + e prior_k.
Observation: position and velocity with independent isotropic Gaussian noise.

Proposal: given a particle's previous state and goal, the new velocity is Gaussian and both
observations are linear in it, so each move is drawn from its posterior given the observation (the
locally optimal proposal) and the particle is weighted by the predictive likelihood p(y | previous
state, goal), which does not depend on the draw (``propagate_slot``). Same model and target as
drawing from the motion model and weighting by p(y | new state) (the bootstrap filter), with about
half the Monte Carlo spread of the accuracy on the training files.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .layout import (
    C_CREATED,
    C_POOL_FULL,
    C_RESAMPLES,
    C_RESETS,
    ERR_TIME,
    OK,
    P_ARRIVE,
    P_ESS,
    P_GOAL_NOISE,
    P_GP_WEIGHT,
    P_POS_SIGMA,
    P_RELAX,
    P_SWITCH_RATE,
    P_TIMEOUT,
    P_VEL_REL,
    P_VEL_SIGMA,
    P_WANDER_NOISE,
)
from .model import (
    check_inputs,
    expire,
    find_slot,
    goal_direction,
    gp_loglik,
    write_output,
)
from .resample import allocate_counts
from .rng import normal_pair, uniform


@njit(cache=True)
def group_masses(w: np.ndarray, g: np.ndarray, masses: np.ndarray, counts: np.ndarray) -> None:
    masses[:] = 0.0
    counts[:] = 0
    for i in range(w.shape[0]):
        masses[g[i]] += w[i]
        counts[g[i]] += 1


@njit(cache=True)
def init_slot(s: int, x: float, y: float, vx: float, vy: float, prior: np.ndarray, floor: int,
              params: np.ndarray, px: np.ndarray, py: np.ndarray, pvx: np.ndarray, pvy: np.ndarray,
              w: np.ndarray, g: np.ndarray, counts: np.ndarray, rng: np.ndarray) -> None:
    """Draw a fresh cloud around the observation; group sizes from the prior, group mass = prior."""
    n = px.shape[1]
    allocate_counts(prior, n, floor, uniform(rng), counts)
    sp = params[P_POS_SIGMA]
    sv = params[P_VEL_SIGMA]
    i = 0
    for k in range(prior.shape[0]):
        wk = prior[k] / counts[k]
        for _ in range(counts[k]):
            a, b = normal_pair(rng)
            px[s, i] = x + sp * a
            py[s, i] = y + sp * b
            a, b = normal_pair(rng)
            pvx[s, i] = vx + sv * a
            pvy[s, i] = vy + sv * b
            w[s, i] = wk
            g[s, i] = k
            i += 1


@njit(cache=True)
def _next_jump(i: int, log_stay: float, rng: np.ndarray) -> int:
    """Index of the next particle to jump after i: i + 1 + Geometric(e) failures (inverse CDF)."""
    if log_stay == 0.0:
        return -2  # e = 0: nobody jumps
    if log_stay == -np.inf:
        return i + 1
    return i + 1 + int(min(math.log(uniform(rng)) / log_stay, 1e9))


@njit(cache=True)
def draw_index(p: np.ndarray, u: float) -> int:
    """Inverse CDF of the discrete distribution p (summing to 1) at u in (0, 1)."""
    cum = 0.0
    for k in range(p.shape[0] - 1):
        cum += p[k]
        if u < cum:
            return k
    return p.shape[0] - 1


@njit(cache=True)
def jump_goals(s: int, dt: float, prior: np.ndarray, params: np.ndarray, g: np.ndarray, rng: np.ndarray) -> None:
    """Change of mind (jump-Markov step): each particle of slot s redraws its goal from the prior with
    probability e = 1 - exp(-rate dt), keeping its state and weight."""
    e = 1.0 - math.exp(-params[P_SWITCH_RATE] * dt)
    # The gaps between jumping particles are geometric: draw the next one instead of a uniform per
    # particle (one log per jump instead of one random number per particle).
    log_stay = math.log1p(-e) if e < 1.0 else -np.inf
    i = _next_jump(-1, log_stay, rng)
    n = g.shape[1]
    while 0 <= i < n:
        g[s, i] = draw_index(prior, uniform(rng))
        i = _next_jump(i, log_stay, rng)


@njit(cache=True)
def propagate_slot(s: int, dt: float, x: float, y: float, vx: float, vy: float, goals: np.ndarray,
                   flow: np.ndarray, prior: np.ndarray, params: np.ndarray, ll_goal: np.ndarray,
                   px: np.ndarray, py: np.ndarray, pvx: np.ndarray, pvy: np.ndarray, w: np.ndarray,
                   g: np.ndarray, ll: np.ndarray, rng: np.ndarray) -> bool:
    """Change of mind, then each particle's move drawn from the locally optimal proposal, and reweighting.

    Given a particle's previous state and goal, the new velocity is Gaussian, v' ~ N(m, q^2 dt I) with
    m the motion model's drift, and both observations are linear in it: y_v = v' + noise (vel_sigma),
    y_p = p + v' dt + noise (pos_sigma). So the move can be drawn from p(v' | m, y) and the particle
    weighted by the predictive likelihood p(y | m) = N(y_v; m, S1) N(y_p; p + dt m1, S2) per axis
    (two scalar Kalman steps), which does not depend on the random draw (Doucet, Godsill and Andrieu
    2000). Same model and target as drawing from the motion model and weighting by p(y | v', p'), with
    much less Monte Carlo noise in the group masses. ``ll_goal`` adds per-hypothesis evidence.
    Returns False if every weight vanished.
    """
    n = px.shape[1]
    k_goals = goals.shape[0]
    if dt > 0.0:
        jump_goals(s, dt, prior, params, g, rng)
    a = min(1.0, dt / params[P_RELAX])
    arrive = params[P_ARRIVE]
    rv = params[P_VEL_SIGMA] ** 2 + params[P_VEL_REL] ** 2 * (vx * vx + vy * vy)
    rp = params[P_POS_SIGMA] ** 2
    # Per axis and hypothesis type (0 goal, 1 wandering): S1, gain K1, S2, gain K2, sd of the draw, log-norm.
    s1g = params[P_GOAL_NOISE] ** 2 * dt + rv
    s1w = params[P_WANDER_NOISE] ** 2 * dt + rv
    p1g = (s1g - rv) * rv / s1g
    p1w = (s1w - rv) * rv / s1w
    s2g = dt * dt * p1g + rp
    s2w = dt * dt * p1w + rp
    k1g = (s1g - rv) / s1g
    k1w = (s1w - rv) / s1w
    k2g = p1g * dt / s2g
    k2w = p1w * dt / s2w
    sdg = math.sqrt(p1g * rp / s2g)
    sdw = math.sqrt(p1w * rp / s2w)
    cg = -math.log(s1g) - math.log(s2g)  # two axes: 2 x (-0.5 log S1 - 0.5 log S2)
    cw = -math.log(s1w) - math.log(s2w)
    top = -np.inf
    for i in range(n):
        k = g[s, i]
        mx = pvx[s, i]
        my = pvy[s, i]
        if k < k_goals:
            ux, uy, d = goal_direction(k, px[s, i], py[s, i], goals, flow, params)
            if d > arrive:
                sp = math.sqrt(mx * mx + my * my)
                mx += a * (sp * ux - mx)
                my += a * (sp * uy - my)
            else:
                mx -= a * mx
                my -= a * my
            s1, k1, s2, k2, sd, c = s1g, k1g, s2g, k2g, sdg, cg
        else:
            s1, k1, s2, k2, sd, c = s1w, k1w, s2w, k2w, sdw, cw
        r1x = vx - mx
        r1y = vy - my
        mx += k1 * r1x
        my += k1 * r1y
        r2x = x - (px[s, i] + dt * mx)
        r2y = y - (py[s, i] + dt * my)
        mx += k2 * r2x
        my += k2 * r2y
        n1, n2 = normal_pair(rng)
        mx += sd * n1
        my += sd * n2
        pvx[s, i] = mx
        pvy[s, i] = my
        px[s, i] += mx * dt
        py[s, i] += my * dt
        v = ll_goal[k] + c - 0.5 * ((r1x * r1x + r1y * r1y) / s1 + (r2x * r2x + r2y * r2y) / s2)
        ll[i] = v
        if v > top and w[s, i] > 0.0:
            top = v
    total = 0.0
    for i in range(n):
        wi = w[s, i] * math.exp(ll[i] - top)
        w[s, i] = wi
        total += wi
    if not (total > 0.0) or not math.isfinite(total):
        return False
    inv = 1.0 / total
    for i in range(n):
        w[s, i] *= inv
    return True


@njit(cache=True)
def _copy_particle(px, py, pvx, pvy, s, i, k, scratch, scratch_g, out):  # pragma: no cover - compiled
    scratch[0, out] = px[s, i]
    scratch[1, out] = py[s, i]
    scratch[2, out] = pvx[s, i]
    scratch[3, out] = pvy[s, i]
    scratch_g[out] = k


@njit(cache=True)
def resample_slot(s: int, floor: int, px: np.ndarray, py: np.ndarray, pvx: np.ndarray, pvy: np.ndarray,
                  w: np.ndarray, g: np.ndarray, masses: np.ndarray, counts: np.ndarray, alloc: np.ndarray,
                  scratch: np.ndarray, scratch_g: np.ndarray, rng: np.ndarray) -> None:
    """Mixture-preserving systematic resampling: new group sizes, then systematic within each group."""
    n = px.shape[1]
    h = masses.shape[0]
    group_masses(w[s], g[s], masses, counts)
    allocate_counts(masses, n, floor, uniform(rng), alloc)
    out = 0
    for k in range(h):
        nk = alloc[k]
        mk = masses[k]
        # Within-group weights w_i / m_k; a group whose mass underflowed to 0 is resampled uniformly.
        uni = not (mk > 0.0)
        scale = 1.0 / max(counts[k], 1) if uni else 1.0 / mk  # an empty group draws no particle
        step = 1.0 / nk
        target = uniform(rng) * step
        cum = 0.0
        j = 0
        last = -1
        for i in range(n):
            if g[s, i] != k:
                continue
            last = i
            cum += scale if uni else w[s, i] * scale
            while j < nk and target < cum:
                _copy_particle(px, py, pvx, pvy, s, i, k, scratch, scratch_g, out)
                out += 1
                j += 1
                target += step
        while j < nk:  # rounding left the group short: repeat its last particle
            _copy_particle(px, py, pvx, pvy, s, last, k, scratch, scratch_g, out)
            out += 1
            j += 1
        scratch[4, out - nk:out] = mk / nk
    for i in range(n):
        px[s, i] = scratch[0, i]
        py[s, i] = scratch[1, i]
        pvx[s, i] = scratch[2, i]
        pvy[s, i] = scratch[3, i]
        w[s, i] = scratch[4, i]
        g[s, i] = scratch_g[i]


@njit(cache=True)
def ess_of(w: np.ndarray, g: np.ndarray, masses: np.ndarray, sq: np.ndarray, counts: np.ndarray
           ) -> tuple[float, float]:
    """(ESS = 1 / sum w_i^2 of the whole cloud, smallest within-group ESS as a share of its group).

    The global ESS alone is blind to the small groups of unlikely goals: their weights barely enter
    it, so they would never be resampled and drift away from the human; each group's own ESS,
    (sum_g w)^2 / sum_g w^2, catches that.
    """
    masses[:] = 0.0
    sq[:] = 0.0
    counts[:] = 0
    for i in range(w.shape[0]):
        k = g[i]
        masses[k] += w[i]
        sq[k] += w[i] * w[i]
        counts[k] += 1
    total = 0.0
    worst = 1.0
    for k in range(masses.shape[0]):
        total += sq[k]
        if sq[k] > 0.0:
            worst = min(worst, masses[k] * masses[k] / sq[k] / counts[k])
    return 1.0 / total, worst


# One explicit signature: compiled at import, and ahead of time by `intent-perf build-kernels` (core/aot.py)
# so belief_node can run without numba. The per-update inputs (ids, xy, vxy, gp) take any layout; every
# later array is the tracker's own, allocated C-contiguous, and typed so (any-layout indexing of the
# particles cost 7% per update). A compiled kernel checks no dtype or layout: pass exactly these types.
@njit(
    "i8(f8, i8[:], f8[:, :], f8[:, :], f8[:, :, :], b1, f8[:, ::1], f8[:, :, :, ::1], f8[::1], f8[::1], i8, "
    "i8[::1], b1[::1], f8[::1], f8[:, ::1], f8[:, ::1], f8[:, ::1], f8[:, ::1], f8[:, ::1], i8[:, ::1], f8[::1], "
    "i8[::1], i8[::1], f8[::1], f8[::1], f8[::1], f8[:, ::1], i8[::1], u8[::1], i8[::1], f8[:, ::1], f8[::1], "
    "f8[::1], i8[::1], b1[::1], i8[::1])",
    cache=True,
)
def particle_update(t: float, ids: np.ndarray, xy: np.ndarray, vxy: np.ndarray, gp: np.ndarray, use_gp: bool,
                    goals: np.ndarray, flow: np.ndarray, prior: np.ndarray, params: np.ndarray, floor: int,
                    slot_id: np.ndarray, active: np.ndarray, last_t: np.ndarray,
                    px: np.ndarray, py: np.ndarray, pvx: np.ndarray, pvy: np.ndarray, w: np.ndarray,
                    g: np.ndarray, masses: np.ndarray, counts: np.ndarray, alloc: np.ndarray,
                    ll_goal: np.ndarray, ll: np.ndarray, sq: np.ndarray, scratch: np.ndarray,
                    scratch_g: np.ndarray,
                    rng: np.ndarray, counters: np.ndarray, out_prob: np.ndarray, out_ent: np.ndarray,
                    out_ess: np.ndarray, out_ml: np.ndarray, out_tracked: np.ndarray, out_slot: np.ndarray
                    ) -> int:
    """One observation of M humans: find or create their slots, predict, weight, resample, report."""
    code = check_inputs(t, ids, xy, vxy, gp, use_gp)
    if code != OK:
        return code
    expire(t, active, last_t, params[P_TIMEOUT], counters)
    n = px.shape[1]
    h = prior.shape[0]
    for i in range(ids.shape[0]):
        s, new = find_slot(ids[i], slot_id, active)
        out_slot[i] = s
        if s < 0:
            counters[C_POOL_FULL] += 1
            write_output(i, prior, 0.0, out_prob, out_ent, out_ess, out_ml, out_tracked, False)
            continue
        x = xy[i, 0]
        y = xy[i, 1]
        vx = vxy[i, 0]
        vy = vxy[i, 1]
        if new:
            active[s] = True
            slot_id[s] = ids[i]
            counters[C_CREATED] += 1
            init_slot(s, x, y, vx, vy, prior, floor, params, px, py, pvx, pvy, w, g, counts, rng)
        else:
            dt = t - last_t[s]
            if dt < 0.0:
                return ERR_TIME
            ll_goal[:] = 0.0
            if use_gp and params[P_GP_WEIGHT] > 0.0:
                gp_loglik(i, x, y, gp, goals, params, ll_goal)
            if not propagate_slot(s, dt, x, y, vx, vy, goals, flow, prior, params, ll_goal, px, py, pvx, pvy,
                                  w, g, ll, rng):
                counters[C_RESETS] += 1
                init_slot(s, x, y, vx, vy, prior, floor, params, px, py, pvx, pvy, w, g, counts, rng)
        last_t[s] = t
        ess, worst = ess_of(w[s], g[s], masses, sq, counts)
        if ess < params[P_ESS] * n or worst < params[P_ESS]:
            resample_slot(s, floor, px, py, pvx, pvy, w, g, masses, counts, alloc, scratch, scratch_g, rng)
            counters[C_RESAMPLES] += 1
            ess = float(n)
        group_masses(w[s], g[s], masses, counts)
        total = 0.0
        for k in range(h):
            total += masses[k]
        for k in range(h):
            masses[k] /= total
        write_output(i, masses, ess, out_prob, out_ent, out_ess, out_ml, out_tracked, True)
    return OK
