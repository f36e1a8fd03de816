"""Pieces shared by the particle and Bayes kernels: slot pool, outputs, GP evidence, goal direction.

The parameter and counter layout, return codes and input limits are plain constants in layout.py.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .layout import (
    C_DROPPED,
    ERR_DUPLICATE,
    ERR_NONFINITE,
    MAX_COORDINATE,
    MAX_SPEED,
    OK,
    P_ARRIVE,
    P_FLOW_CELL,
    P_FLOW_SHRINK,
    P_FLOW_X0,
    P_FLOW_Y0,
    P_GP_SIGMA,
    P_GP_WEIGHT,
)


@njit(cache=True)
def check_inputs(t: float, ids: np.ndarray, xy: np.ndarray, vxy: np.ndarray, gp: np.ndarray, use_gp: bool
                 ) -> int:
    if not math.isfinite(t):
        return ERR_NONFINITE
    m = ids.shape[0]
    for i in range(m):
        for j in range(2):
            # NaN and infinity fail these comparisons too; beyond the limits squared distances overflow.
            if not (abs(xy[i, j]) <= MAX_COORDINATE and abs(vxy[i, j]) <= MAX_SPEED):
                return ERR_NONFINITE
        for j in range(i):
            if ids[j] == ids[i]:
                return ERR_DUPLICATE
    if use_gp:
        for i in range(gp.shape[0]):
            for h in range(gp.shape[1]):
                for j in range(2):
                    if not math.isfinite(gp[i, h, j]):
                        return ERR_NONFINITE
    return OK


@njit(cache=True)
def expire(t: float, active: np.ndarray, last_t: np.ndarray, timeout: float, counters: np.ndarray) -> None:
    """Free slots whose human has not been seen for longer than ``timeout`` seconds."""
    for s in range(active.shape[0]):
        if active[s] and t - last_t[s] > timeout:
            active[s] = False
            counters[C_DROPPED] += 1


@njit(cache=True)
def find_slot(pid: np.int64, slot_id: np.ndarray, active: np.ndarray) -> tuple[int, bool]:
    """(slot, is_new) for ``pid``: its slot, else the first free one, else (-1, True) if the pool is full."""
    free = -1
    for s in range(active.shape[0]):
        if active[s]:
            if slot_id[s] == pid:
                return s, False
        elif free < 0:
            free = s
    return free, True


@njit(cache=True)
def write_output(i: int, probs: np.ndarray, ess: float, out_prob: np.ndarray, out_ent: np.ndarray,
                 out_ess: np.ndarray, out_ml: np.ndarray, out_tracked: np.ndarray, tracked: bool) -> None:
    """Row i of the result: probabilities, entropy -sum p ln p (nats), ESS and the arg-max hypothesis."""
    ent = 0.0
    best = 0
    for k in range(probs.shape[0]):
        p = probs[k]
        out_prob[i, k] = p
        if p > 0.0:
            ent -= p * math.log(p)
        if p > probs[best]:
            best = k
    out_ent[i] = ent
    out_ess[i] = ess
    out_ml[i] = best if tracked else -1
    out_tracked[i] = tracked


@njit(cache=True)
def log_i0e(kappa: float) -> float:
    """log(I0(kappa) exp(-kappa)): series for small kappa, Hankel asymptotic expansion above 15."""
    if kappa < 15.0:
        term = 1.0
        total = 1.0
        q = 0.25 * kappa * kappa
        for j in range(1, 60):
            term *= q / (j * j)
            total += term
            if term < 1e-17 * total:
                break
        return math.log(total) - kappa
    inv = 1.0 / kappa
    return -0.5 * math.log(2.0 * math.pi * kappa) + math.log(1.0 + inv / 8.0 + 9.0 * inv * inv / 128.0)


# A predicted displacement longer than this (m) over the horizon is no walk; it also keeps dn^2 finite.
MAX_GP_DISPLACEMENT = 1e4


@njit(cache=True)
def gp_loglik(i: int, x: float, y: float, gp: np.ndarray, goals: np.ndarray, params: np.ndarray,
              out: np.ndarray) -> None:
    """Evidence from the GP's predicted path: a von Mises model of its heading relative to each goal.

    With d the predicted displacement over the horizon, treated as one noisy velocity observation
    (isotropic Gaussian, sd ``P_GP_SIGMA``) whose length is known, the likelihood of goal k reduces
    to exp(kappa (cos theta_k - 1)), kappa = |d|^2 / sigma^2 tempered by ``P_GP_WEIGHT`` (successive
    GP predictions are strongly correlated, so each counts for a fraction of an observation). The
    wandering hypothesis takes the heading as uniform, whose marginal is I0(kappa) exp(-kappa).
    A goal already within the arrival radius counts as cos theta = 1.
    """
    hp = gp.shape[1]
    dx = gp[i, hp - 1, 0] - x
    dy = gp[i, hp - 1, 1] - y
    dn = math.hypot(dx, dy)
    k_goals = goals.shape[0]
    if not dn < MAX_GP_DISPLACEMENT:  # beyond any walk (or non-finite): the prediction carries no evidence
        for k in range(k_goals + 1):
            out[k] = 0.0
        return
    sig = params[P_GP_SIGMA]
    kappa = params[P_GP_WEIGHT] * dn * dn / (sig * sig)
    for k in range(k_goals):
        gx = goals[k, 0] - x
        gy = goals[k, 1] - y
        gn = math.sqrt(gx * gx + gy * gy)
        cos = 1.0 if (gn <= params[P_ARRIVE] or dn == 0.0) else (dx * gx + dy * gy) / (dn * gn)
        out[k] = kappa * (cos - 1.0)
    out[k_goals] = log_i0e(kappa)


@njit(cache=True)
def goal_direction(k: int, x: float, y: float, goals: np.ndarray, flow: np.ndarray, params: np.ndarray
                   ) -> tuple[float, float, float]:
    """(ux, uy, distance) for a human at (x, y) heading to goal k: the unit vector of S + shrink * u.

    u is the straight line to the goal and S the flow field's summed unit directions of people who
    went to goal k from this cell (zero outside the grid, or when no field was learned).
    """
    dx = goals[k, 0] - x
    dy = goals[k, 1] - y
    d = math.sqrt(dx * dx + dy * dy)
    if d == 0.0:
        return 0.0, 0.0, 0.0
    shrink = params[P_FLOW_SHRINK]
    ux = shrink * dx / d
    uy = shrink * dy / d
    cell = params[P_FLOW_CELL]
    fx = (x - params[P_FLOW_X0]) / cell
    fy = (y - params[P_FLOW_Y0]) / cell
    if 0.0 <= fx < flow.shape[1] and 0.0 <= fy < flow.shape[2]:
        ux += flow[k, int(fx), int(fy), 0]
        uy += flow[k, int(fx), int(fy), 1]
    n = math.sqrt(ux * ux + uy * uy)
    if n == 0.0:
        return dx / d, dy / d, d
    return ux / n, uy / n, d
