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
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .model import (
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
def predict_slot(s: int, dt: float, goals: np.ndarray, flow: np.ndarray, prior: np.ndarray, params: np.ndarray,
                 px: np.ndarray, py: np.ndarray, pvx: np.ndarray, pvy: np.ndarray, g: np.ndarray, rng: np.ndarray
                 ) -> None:
    """Change of mind, then the goal-conditioned motion of every particle of slot s over dt seconds."""
    n = px.shape[1]
    k_goals = goals.shape[0]
    # Change of mind (jump-Markov step): each particle redraws its goal from the prior with probability e.
    # A particle that jumps keeps its state and weight, so the group it joins inherits a sample of
    # where the human actually is; that is what lets an unlikely goal's cloud follow the human.
    e = 1.0 - math.exp(-params[P_SWITCH_RATE] * dt)
    # The gaps between jumping particles are geometric: draw the next one instead of a uniform per
    # particle (one log per jump instead of one random number per particle).
    log_stay = math.log1p(-e) if e < 1.0 else -np.inf
    next_jump = _next_jump(-1, log_stay, rng)
    a = min(1.0, dt / params[P_RELAX])
    qg = params[P_GOAL_NOISE] * math.sqrt(dt)
    qw = params[P_WANDER_NOISE] * math.sqrt(dt)
    arrive = params[P_ARRIVE]
    for i in range(n):
        if i == next_jump:
            g[s, i] = draw_index(prior, uniform(rng))
            next_jump = _next_jump(i, log_stay, rng)
        k = g[s, i]
        vx = pvx[s, i]
        vy = pvy[s, i]
        n1, n2 = normal_pair(rng)
        if k < k_goals:
            ux, uy, d = goal_direction(k, px[s, i], py[s, i], goals, flow, params)
            if d > arrive:
                sp = math.sqrt(vx * vx + vy * vy)
                vx += a * (sp * ux - vx) + qg * n1
                vy += a * (sp * uy - vy) + qg * n2
            else:
                vx += -a * vx + qg * n1
                vy += -a * vy + qg * n2
        else:
            vx += qw * n1
            vy += qw * n2
        pvx[s, i] = vx
        pvy[s, i] = vy
        px[s, i] += vx * dt
        py[s, i] += vy * dt


@njit(cache=True)
def weight_slot(s: int, x: float, y: float, vx: float, vy: float, params: np.ndarray, ll_goal: np.ndarray,
                px: np.ndarray, py: np.ndarray, pvx: np.ndarray, pvy: np.ndarray, w: np.ndarray,
                g: np.ndarray, ll: np.ndarray) -> bool:
    """Multiply by the observation likelihood (log domain, max-shifted); False if every weight vanished."""
    n = px.shape[1]
    ip = 0.5 / params[P_POS_SIGMA] ** 2
    iv = 0.5 / (params[P_VEL_SIGMA] ** 2 + params[P_VEL_REL] ** 2 * (vx * vx + vy * vy))
    top = -np.inf
    for i in range(n):
        ex = px[s, i] - x
        ey = py[s, i] - y
        fx = pvx[s, i] - vx
        fy = pvy[s, i] - vy
        v = ll_goal[g[s, i]] - ip * (ex * ex + ey * ey) - iv * (fx * fx + fy * fy)
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


@njit(cache=True)
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
            if dt > 0.0:
                predict_slot(s, dt, goals, flow, prior, params, px, py, pvx, pvy, g, rng)
            ll_goal[:] = 0.0
            if use_gp and params[P_GP_WEIGHT] > 0.0:
                gp_loglik(i, x, y, gp, goals, params, ll_goal)
            if not weight_slot(s, x, y, vx, vy, params, ll_goal, px, py, pvx, pvy, w, g, ll):
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
