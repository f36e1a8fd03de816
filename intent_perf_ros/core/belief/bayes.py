"""Discrete Bayes filter over goals: the cheap mode for many humans (H numbers per human).

The same motion model as the particle filter, collapsed onto the last observation: under goal k
the next velocity is predicted from the previous observed one, v_k = v + a (|v| u_k - v), and the
new observed velocity is scored with an isotropic Gaussian of variance 2 sigma_v^2 + q_goal^2 dt
(two noisy observations plus diffusion). Wandering predicts v unchanged with q_wander instead.
Before the update the belief passes through the same change-of-mind chain,
p_k <- (1 - e) p_k + e prior_k, e = 1 - exp(-rate dt) (a human who changes their mind picks a new
goal as a new track would), so no hypothesis ever reaches zero.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .layout import (
    C_CREATED,
    C_POOL_FULL,
    ERR_TIME,
    OK,
    P_ARRIVE,
    P_GOAL_NOISE,
    P_GP_WEIGHT,
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


@njit(cache=True)
def bayes_step(s: int, dt: float, vx: float, vy: float, goals: np.ndarray, flow: np.ndarray, prior: np.ndarray,
               params: np.ndarray, prob: np.ndarray, state: np.ndarray, ll: np.ndarray) -> None:
    """Predict (change of mind) and correct slot s with the observed velocity; ``ll`` holds extra evidence."""
    k_goals = goals.shape[0]
    h = k_goals + 1
    e = 1.0 - math.exp(-params[P_SWITCH_RATE] * dt)
    a = min(1.0, dt / params[P_RELAX])
    x = state[s, 0]
    y = state[s, 1]
    ux = state[s, 2]
    uy = state[s, 3]
    speed = math.sqrt(ux * ux + uy * uy)
    base = 2.0 * (params[P_VEL_SIGMA] ** 2 + params[P_VEL_REL] ** 2 * (vx * vx + vy * vy))
    var_g = base + params[P_GOAL_NOISE] ** 2 * dt
    var_w = base + params[P_WANDER_NOISE] ** 2 * dt
    for k in range(h):
        if k < k_goals:
            gx, gy, d = goal_direction(k, x, y, goals, flow, params)
            if d > params[P_ARRIVE]:
                px = ux + a * (speed * gx - ux)
                py = uy + a * (speed * gy - uy)
            else:
                px = ux * (1.0 - a)
                py = uy * (1.0 - a)
            var = var_g
        else:
            px = ux
            py = uy
            var = var_w
        rx = vx - px
        ry = vy - py
        # log N(v; v_k, var I) in 2-D, up to the shared constant -log(2 pi).
        ll[k] += -0.5 * (rx * rx + ry * ry) / var - math.log(var)
    top = -np.inf
    for k in range(h):
        top = max(top, ll[k])
    total = 0.0
    for k in range(h):
        p = ((1.0 - e) * prob[s, k] + e * prior[k]) * math.exp(ll[k] - top)
        prob[s, k] = p
        total += p
    for k in range(h):
        prob[s, k] /= total


# One explicit signature: compiled at import, and ahead of time by `intent-perf build-kernels` (core/aot.py)
# so belief_node can run without numba. The per-update inputs (ids, xy, vxy, gp) take any layout; every
# later array is the tracker's own, allocated C-contiguous, and typed so (as particle_update's: faster).
# A compiled kernel checks no dtype or layout: pass exactly these types.
@njit(
    "i8(f8, i8[:], f8[:, :], f8[:, :], f8[:, :, :], b1, f8[:, ::1], f8[:, :, :, ::1], f8[::1], f8[::1], "
    "i8[::1], b1[::1], f8[::1], f8[:, ::1], f8[:, ::1], f8[::1], i8[::1], f8[:, ::1], f8[::1], f8[::1], i8[::1], "
    "b1[::1], i8[::1])",
    cache=True,
)
def bayes_update(t: float, ids: np.ndarray, xy: np.ndarray, vxy: np.ndarray, gp: np.ndarray, use_gp: bool,
                 goals: np.ndarray, flow: np.ndarray, prior: np.ndarray, params: np.ndarray,
                 slot_id: np.ndarray, active: np.ndarray, last_t: np.ndarray, prob: np.ndarray,
                 state: np.ndarray, ll: np.ndarray,
                 counters: np.ndarray, out_prob: np.ndarray, out_ent: np.ndarray, out_ess: np.ndarray,
                 out_ml: np.ndarray, out_tracked: np.ndarray, out_slot: np.ndarray) -> int:
    """One observation of M humans in Bayes mode.

    The reported ``ess`` is the effective number of hypotheses 1 / sum_k p_k^2 (Kish's effective
    sample size of the goal probabilities as weights): H for a uniform belief, 1 when certain.
    """
    code = check_inputs(t, ids, xy, vxy, gp, use_gp)
    if code != OK:
        return code
    expire(t, active, last_t, params[P_TIMEOUT], counters)
    h = prior.shape[0]
    for i in range(ids.shape[0]):
        s, new = find_slot(ids[i], slot_id, active)
        out_slot[i] = s
        if s < 0:
            counters[C_POOL_FULL] += 1
            write_output(i, prior, 0.0, out_prob, out_ent, out_ess, out_ml, out_tracked, False)
            continue
        if new:
            active[s] = True
            slot_id[s] = ids[i]
            counters[C_CREATED] += 1
            for k in range(h):
                prob[s, k] = prior[k]
        else:
            dt = t - last_t[s]
            if dt < 0.0:
                return ERR_TIME
            ll[:] = 0.0
            if use_gp and params[P_GP_WEIGHT] > 0.0:
                gp_loglik(i, xy[i, 0], xy[i, 1], gp, goals, params, ll)
            if dt > 0.0:
                bayes_step(s, dt, vxy[i, 0], vxy[i, 1], goals, flow, prior, params, prob, state, ll)
        state[s, 0] = xy[i, 0]
        state[s, 1] = xy[i, 1]
        state[s, 2] = vxy[i, 0]
        state[s, 3] = vxy[i, 1]
        last_t[s] = t
        sq = 0.0
        for k in range(h):
            sq += prob[s, k] * prob[s, k]
        write_output(i, prob[s], 1.0 / sq, out_prob, out_ent, out_ess, out_ml, out_tracked, True)
    return OK
