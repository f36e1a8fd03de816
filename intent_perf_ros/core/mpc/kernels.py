"""Compiled (numba) loops of one control step; each replaces a dozen small numpy calls (about 1 us each).

All kernels write into preallocated arrays and allocate nothing. Explicit signatures (any layout) compile
them at import, so no call in the control loop can trigger a compilation for a new argument layout;
``cache=True`` keeps the machine code in __pycache__, so only the first import on a machine takes seconds.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit("void(f8[:], f8[:, :], f8, f8, f8[:, :], f8[:, :], f8[:, :])", cache=True, nogil=True)
def rollout_linearise(state, inputs, dt, speed_floor, nominal, a_entries, offset):  # pragma: no cover - numba
    """Euler rollout of ``inputs`` from ``state`` into ``nominal`` (H+1, 5), then the Jacobian entries
    (dx/dtheta, dx/dv, dy/dtheta, dy/dv) * dt and the offsets c_k at (theta_k, max(|v_k|, floor))."""
    H = inputs.shape[0]
    for i in range(5):
        nominal[0, i] = state[i]
    for k in range(H):
        x, y, th, v, om = nominal[k, 0], nominal[k, 1], nominal[k, 2], nominal[k, 3], nominal[k, 4]
        c, s = math.cos(th), math.sin(th)
        nominal[k + 1, 0] = x + dt * v * c
        nominal[k + 1, 1] = y + dt * v * s
        nominal[k + 1, 2] = th + dt * om
        nominal[k + 1, 3] = v + dt * inputs[k, 0]
        nominal[k + 1, 4] = om + dt * inputs[k, 1]
        vl = v if abs(v) >= speed_floor else speed_floor
        a_entries[k, 0] = -dt * vl * s
        a_entries[k, 1] = dt * c
        a_entries[k, 2] = dt * vl * c
        a_entries[k, 3] = dt * s
        offset[k, 0] = dt * vl * s * th
        offset[k, 1] = -dt * vl * c * th


@njit(
    "b1(f8[:, :, :], f8[:, :, :], intp[:], intp[:], f8[:], f8, f8, f8[:, :, :], f8[:, :])",
    cache=True,
    nogil=True,
)
def interpolate(mean_in, var_in, i0, i1, w, kappa, safety_radius, mean_out, radius_out):  # pragma: no cover
    """mean_out[j, k] = linear interpolation of mean_in[j] at fractional index i0[k] + w[k];
    radius_out[j, k] = safety_radius + kappa * sqrt(max(var_x, var_y)) of the
    interpolated variances (clipped at 0). Returns False when any input value is not finite."""
    n, H, hp = mean_in.shape[0], i0.shape[0], mean_in.shape[1]
    for j in range(n):
        for k in range(hp):
            for c in range(2):
                if not (math.isfinite(mean_in[j, k, c]) and math.isfinite(var_in[j, k, c])):
                    return False
    for j in range(n):
        for k in range(H):
            a, b, t = i0[k], i1[k], w[k]
            mean_out[j, k, 0] = mean_in[j, a, 0] + t * (mean_in[j, b, 0] - mean_in[j, a, 0])
            mean_out[j, k, 1] = mean_in[j, a, 1] + t * (mean_in[j, b, 1] - mean_in[j, a, 1])
            vx = max(var_in[j, a, 0] + t * (var_in[j, b, 0] - var_in[j, a, 0]), 0.0)
            vy = max(var_in[j, a, 1] + t * (var_in[j, b, 1] - var_in[j, a, 1]), 0.0)
            radius_out[j, k] = safety_radius + kappa * math.sqrt(max(vx, vy))
    return True


@njit(
    "void(f8[:, :, :], f8[:, :], intp, f8[:, :], f8[:], f8, f8[:, :, :], f8[:], intp[:], f8[:], f8)",
    cache=True,
    nogil=True,
)
def half_planes(
    mean, radius, n, nominal, left, pass_bias, normals, lo, chosen, dist, neg_infty
):  # pragma: no cover
    """For each step k = 1..H, the C obstacles nearest to the nominal position get a row
    n . p_k + s_k >= n . c + r (normals (H, C, 2), lo (H*C,)); unused rows get n = 0 and lo = -infinity."""
    H, C = normals.shape[0], normals.shape[1]
    for k in range(H):
        px, py = nominal[k + 1, 0], nominal[k + 1, 1]
        m = min(C, n)
        # Partial selection sort of the m nearest (n is a few tens at most).
        for j in range(n):
            dx, dy = px - mean[j, k, 0], py - mean[j, k, 1]
            dist[j] = dx * dx + dy * dy
            chosen[j] = j
        if n > C:
            for a in range(m):
                best = a
                for b in range(a + 1, n):
                    if dist[chosen[b]] < dist[chosen[best]]:
                        best = b
                chosen[a], chosen[best] = chosen[best], chosen[a]
        for a in range(m):
            j = chosen[a]
            cx, cy = mean[j, k, 0], mean[j, k, 1]
            dx, dy = px - cx, py - cy
            d = math.sqrt(dx * dx + dy * dy)
            if d < 1e-6:  # nominal on top of the human: no outward normal, push to the left
                dx, dy, d = left[0], left[1], 1.0
            dx /= d
            dy /= d
            if pass_bias > 0.0:
                side = pass_bias if dx * left[0] + dy * left[1] >= 0.0 else -pass_bias
                dx += side * left[0]
                dy += side * left[1]
                d = math.sqrt(dx * dx + dy * dy)
                dx /= d
                dy /= d
            normals[k, a, 0] = dx
            normals[k, a, 1] = dy
            lo[k * C + a] = dx * cx + dy * cy + radius[j, k]
        for a in range(m, C):
            normals[k, a, 0] = 0.0
            normals[k, a, 1] = 0.0
            lo[k * C + a] = neg_infty


@njit("f8(f8[:, :, :], intp, intp, f8[:, :])", cache=True, nogil=True)
def min_distance(mean, n, first, xy):  # pragma: no cover - numba
    """min over j < n, k of |xy[k] - mean[j, first + k]| (xy (K, 2)); +inf when n == 0 or K == 0."""
    best = np.inf
    for j in range(n):
        for k in range(xy.shape[0]):
            dx, dy = xy[k, 0] - mean[j, first + k, 0], xy[k, 1] - mean[j, first + k, 1]
            d = dx * dx + dy * dy
            best = min(best, d)
    return math.sqrt(best)


@njit(
    "void(f8[:], f8, f8, f8, f8, f8, f8, f8, f8[:], f8[:, :], f8, f8, f8, f8, f8, f8[:, :], f8[:, :])",
    cache=True,
    nogil=True,
)
def reference_and_bounds(
    st,
    dx,
    dy,
    dist,
    v_ref,
    lateral,
    taper,
    dt,
    weights,
    qpos,
    v_lo,
    v_hi,
    om_hi,
    a_max,
    alpha_max,
    vel_lo,
    vel_hi,
):  # pragma: no cover - numba
    """Position part of q (-2 w_k r_k, carrot points at v_ref along the line to the goal, clipped there,
    shifted ``lateral`` m to the left tapering to 0 over the last ``taper`` m) and the velocity bounds of
    x_1..x_H, relaxed to what the accelerations can reach from the measured velocities."""
    H = weights.shape[0]
    for k in range(H):
        s = min(v_ref * dt * (k + 1), dist)
        lat = lateral * min(max((dist - s) / taper, 0.0), 1.0) if taper > 0.0 else 0.0
        qpos[k, 0] = -2.0 * weights[k] * (st[0] + s * dx - lat * dy)
        qpos[k, 1] = -2.0 * weights[k] * (st[1] + s * dy + lat * dx)
        reach_v = a_max * dt * (k + 1)
        reach_om = alpha_max * dt * (k + 1)
        vel_hi[k, 0] = max(v_hi, st[3] - reach_v)
        vel_lo[k, 0] = min(v_lo, st[3] + reach_v)
        vel_hi[k, 1] = max(om_hi, abs(st[4]) - reach_om)
        vel_lo[k, 1] = -vel_hi[k, 1]


@njit("void(f8[:], f8[:, :], f8[:, :], f8[:, :], f8[:, :], f8[:, :])", cache=True, nogil=True)
def stage_dynamics(state, a_entries, offset, ax_dyn, dyn_lo, dyn_hi):  # pragma: no cover - numba
    """Dynamics rows of the QP: x_0 = state, the changing A values (-A_k's entries: the rows read
    x_{k+1} - A_k x_k - B u_k = c_k) and c_k on the position rows (dyn_lo/dyn_hi are (H+1, 5) views)."""
    H = a_entries.shape[0]
    for i in range(5):
        dyn_lo[0, i] = state[i]
        dyn_hi[0, i] = state[i]
    for k in range(H):
        for e in range(4):
            ax_dyn[k, e] = -a_entries[k, e]
        for i in range(2):
            dyn_lo[k + 1, i] = offset[k, i]
            dyn_hi[k + 1, i] = offset[k, i]


@njit("void(f8[:], intp[:], b1, f8[:])", cache=True, nogil=True)
def gather(src, index, use, out):  # pragma: no cover - numba
    """out[i] = src[index[i]] when ``use``, else 0 (the shifted warm start, or a cold one)."""
    for i in range(out.shape[0]):
        out[i] = src[index[i]] if use else 0.0


@njit(
    "i8(f8[:, :, :], f8[:, :, :], f8[:, :], f8[:, :], f8[:, :], f8[:, :], b1, i8, f8, f8[:, :, :], f8[:, :, :], "
    "f8, f8)",
    cache=True,
    nogil=True,
)
def expand_hypotheses_into(
    pred_mean, pred_var, current_xy, current_vxy, goals, goal_probs, use_probs, top_k, pred_dt, out_mean, out_var,
    min_prob, min_speed
):  # pragma: no cover - compiled
    """``hypotheses.expand_hypotheses`` after its checks. One signature with every array of any layout:
    the node passes strided views of its buffers, the benchmarks contiguous arrays."""
    hp = pred_mean.shape[1]
    n_goals = goals.shape[0]
    cap = out_mean.shape[0]
    written = 0
    for i in range(pred_mean.shape[0]):
        if written >= cap:
            break
        out_mean[written] = pred_mean[i]
        out_var[written] = pred_var[i]
        written += 1
        if not use_probs or top_k == 1:
            continue
        speed = max(np.hypot(current_vxy[i, 0], current_vxy[i, 1]), min_speed)
        # Goals in decreasing probability, ties by index (a stable argsort of -p), one selection scan
        # per alternative: the next goal after (p_prev, g_prev) in that order.
        p_prev, g_prev = np.inf, -1
        for _ in range(top_k - 1):
            if written >= cap:
                break
            g = -1
            for k in range(n_goals):
                p = goal_probs[i, k]
                after = p < p_prev or (p == p_prev and k > g_prev)
                if after and (g < 0 or p > goal_probs[i, g]):
                    g = k
            if g < 0 or goal_probs[i, g] < min_prob:
                break
            p_prev, g_prev = goal_probs[i, g], g
            dx, dy = goals[g, 0] - current_xy[i, 0], goals[g, 1] - current_xy[i, 1]
            dist = np.hypot(dx, dy)
            for t in range(hp):
                # walk straight to the goal at the human's speed and stop there
                f = min(speed * pred_dt * (t + 1), dist) / dist if dist >= 1e-9 else 0.0
                out_mean[written, t, 0] = current_xy[i, 0] + f * dx
                out_mean[written, t, 1] = current_xy[i, 1] + f * dy
            out_var[written] = pred_var[i]
            written += 1
    return written


@njit(cache=True, nogil=True)
def _row_of(table_ids, used, human):  # pragma: no cover - compiled into its callers
    """The row of ``human`` among the first ``used`` rows of the belief table, else -1."""
    for j in range(used):
        if table_ids[j] == human:
            return j
    return -1


@njit("i8(i8[:], f8[:], i8[:], f8[:, :], i8, u4[:], f8[:, :], f8)", cache=True, nogil=True)
def store_beliefs(table_ids, table_time, table_k1, table_probs, used, ids, probs, now):  # pragma: no cover
    """Write each human's belief row ``probs[i]`` (K+1 hypotheses) into the table under ``ids[i]``, received
    at ``now``: its row if the id has one, else the next unused row, else the stalest row. Returns the
    number of rows in use. The table keeps the latest belief of every human the MPC may have to load."""
    cap, k1 = table_ids.shape[0], probs.shape[1]
    for i in range(ids.shape[0]):
        row = _row_of(table_ids, used, ids[i])
        if row < 0:
            if used < cap:
                row = used
                used += 1
            else:
                row = 0
                for j in range(1, cap):
                    if table_time[j] < table_time[row]:
                        row = j
        table_ids[row] = ids[i]
        table_time[row] = now
        table_k1[row] = k1
        for k in range(k1):
            table_probs[row, k] = probs[i, k]
    return used


@njit(
    "i8(u4[:], f8[:, :], f8[:, :, :], f8[:, :, :], i8, i8[:], f8[:], i8[:], f8[:, :], i8, f8, f8, i8, "
    "i8[:], f8[:, :, :], f8[:, :, :], f8[:, :], f8[:, :], f8[:, :])",
    cache=True,
    nogil=True,
)
def load_predictions(
    ids, state, mean, var, steps, table_ids, table_time, table_k1, table_probs, used, now, timeout, k1, order,
    out_mean, out_var, out_xy, out_vxy, out_probs
):  # pragma: no cover - numba
    """Copy the humans with the ``order.shape[0]`` smallest ids (in id order, ties in arrival order: the
    QP's constraint order must not depend on the order shards arrive in) into the outputs: mean and
    variance of the first ``steps`` steps, position, velocity, and with ``k1`` > 1 hypotheses the
    belief stored for that id when it has ``k1`` entries and is younger than ``timeout``, else uniform.
    Returns how many were copied; the rest (the highest ids) are left out."""
    cap, n = order.shape[0], 0
    if cap == 0:
        return 0
    for i in range(ids.shape[0]):  # insertion into the sorted prefix, keeping the cap smallest
        if n == cap and ids[i] >= ids[order[n - 1]]:
            continue
        pos = n if n < cap else cap - 1  # when full, the largest is overwritten
        while pos > 0 and ids[order[pos - 1]] > ids[i]:
            order[pos] = order[pos - 1]
            pos -= 1
        order[pos] = i
        if n < cap:
            n += 1
    for r in range(n):
        src = order[r]
        for t in range(steps):
            for c in range(2):
                out_mean[r, t, c] = mean[src, t, c]
                out_var[r, t, c] = var[src, t, c]
        out_xy[r, 0], out_xy[r, 1] = state[src, 0], state[src, 1]
        out_vxy[r, 0], out_vxy[r, 1] = state[src, 2], state[src, 3]
        if k1 > 1:
            row = _row_of(table_ids, used, ids[src])
            fresh = row >= 0 and table_k1[row] == k1 and now - table_time[row] < timeout
            for k in range(k1):
                out_probs[r, k] = table_probs[row, k] if fresh else 1.0 / k1
    return n
