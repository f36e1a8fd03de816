"""Compiled (numba) loops of the GP predictor: features, kernel distances, variances, online factor updates.

The one numba module of ``core.gp``: ``features``, ``kernels``, ``exact``, ``online``, ``sparse`` and
``predictor`` take these loops through ``kernels.gp_loops`` (``core.aot.load``), so with the build of
``intent-perf build-kernels`` a process that predicts, learns online or even fits never imports numba.

Every loop called from Python has one explicit signature (``core.aot`` compiles exactly that). A loop
whose arrays take the model's dtype (``PredictorConfig.dtype``) exists twice, compiled from one source:
``name`` for float64 and ``name_f4`` for float32 (``kernels.gp_loops`` picks by dtype). Compiled
ahead of time, a loop checks neither dtypes nor layouts, so the signatures below are a contract:
``[:, :]`` takes any layout (views from callers), ``[::1]`` / ``[:, ::1]`` only C-contiguous arrays,
which only the GP classes' own buffers are passed as. ``numba.pycc`` ignores ``fastmath``: the online
updates keep it in lazily typed helpers that their exported entry points call. The build targets any
x86-64 (SSE2 vectors) where the JIT targets this CPU (AVX2): measured on the development machine, the
distance loop takes 10.5 instead of 8.4 us (10 queries x 300 inducing points) and ``OnlineGP.add`` of 4
windows at capacity 1000 3.2 instead of 2.3 ms; results are bit for bit those of the JIT except where
fastmath lets the vector width reorder sums (the online updates: rounding-level differences).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_MIN_SPEED_STEP = 1e-3  # metres per step below which the heading is taken from a longer baseline


def _f4(kernel, signature: str):
    """The float32 twin of ``kernel``: the same source compiled for ``signature`` with {f} = f4."""
    return njit(signature.format(f="f4"), cache=True)(kernel.py_func)


# -- features (features.py) ------------------------------------------------------------------------------
FEATURES_SIG = "void(f8[:, :, :], i8, f8, i8[:], {f}[:, :], {f}[:, :], f8[:, :])"


@njit(FEATURES_SIG.format(f="f8"), cache=True)
def features_into(hist, m, dt, lags, motion, place, rot):  # pragma: no cover - compiled
    """Fill motion (m, 1 + 2 len(lags)), place (m, 5) features and rot (m, 2) = (cos, sin) of the heading."""
    t = hist.shape[1] - 1
    for i in range(m):
        vx = hist[i, t, 0] - hist[i, t - 1, 0]
        vy = hist[i, t, 1] - hist[i, t - 1, 1]
        hx, hy = vx, vy
        norm = np.sqrt(hx * hx + hy * hy)
        if norm < _MIN_SPEED_STEP:
            # standing still: heading from the whole observed displacement, else the world x axis
            hx = hist[i, t, 0] - hist[i, 0, 0]
            hy = hist[i, t, 1] - hist[i, 0, 1]
            norm = np.sqrt(hx * hx + hy * hy)
            if norm < _MIN_SPEED_STEP:
                hx, hy, norm = 1.0, 0.0, 1.0
        c = hx / norm
        s = hy / norm
        rot[i, 0] = c
        rot[i, 1] = s
        motion[i, 0] = (c * vx + s * vy) / dt
        for j in range(lags.shape[0]):
            lag = lags[j]
            ux = hist[i, t - lag, 0] - hist[i, t - lag - 1, 0]
            uy = hist[i, t - lag, 1] - hist[i, t - lag - 1, 1]
            motion[i, 1 + 2 * j] = (c * ux + s * uy) / dt
            motion[i, 2 + 2 * j] = (-s * ux + c * uy) / dt
        place[i, 0] = hist[i, t, 0]
        place[i, 1] = hist[i, t, 1]
        place[i, 2] = c
        place[i, 3] = s
        place[i, 4] = np.sqrt(vx * vx + vy * vy) / dt


features_into_f4 = _f4(features_into, FEATURES_SIG)

CHANGES_SIG = "void(f8[:, :, :], i8, f8, i8[:], f8[:, :], {f}[:, :])"


@njit(CHANGES_SIG.format(f="f8"), cache=True)
def velocity_changes_into(hist, m, dt, lags, rot, out):  # pragma: no cover - compiled
    """out[:, :2 len(lags)] = v_{t-lag} - v_t per lag, (along, cross) in the heading frame ``rot``, in m/s;
    when ``out`` has 4 len(lags) columns, the same times the current speed (m/s) follow."""
    t = hist.shape[1] - 1
    n = lags.shape[0]
    with_speed = out.shape[1] == 4 * n
    for i in range(m):
        c = rot[i, 0]
        s = rot[i, 1]
        vx = hist[i, t, 0] - hist[i, t - 1, 0]
        vy = hist[i, t, 1] - hist[i, t - 1, 1]
        speed = np.sqrt(vx * vx + vy * vy) / dt
        for j in range(n):
            lag = lags[j]
            dx = hist[i, t - lag, 0] - hist[i, t - lag - 1, 0] - vx
            dy = hist[i, t - lag, 1] - hist[i, t - lag - 1, 1] - vy
            along = (c * dx + s * dy) / dt
            cross = (-s * dx + c * dy) / dt
            out[i, 2 * j] = along
            out[i, 2 * j + 1] = cross
            if with_speed:
                out[i, 2 * n + 2 * j] = along * speed
                out[i, 2 * n + 2 * j + 1] = cross * speed


velocity_changes_into_f4 = _f4(velocity_changes_into, CHANGES_SIG)


@njit(cache=True)
def _unsteadiness(hist, i, dt):  # pragma: no cover - compiled
    """rms of v_{j+1} - v_j over the observed steps of pedestrian i, in m/s."""
    t = hist.shape[1] - 1
    acc = 0.0
    for j in range(1, t):
        ax = hist[i, j + 1, 0] - 2.0 * hist[i, j, 0] + hist[i, j - 1, 0]
        ay = hist[i, j + 1, 1] - 2.0 * hist[i, j, 1] + hist[i, j - 1, 1]
        acc += ax * ax + ay * ay
    return np.sqrt(acc / max(t - 1, 1)) / dt


COMPOSE_SIG = "void(f8[:, :, :], i8, f8[:, :], {f}[:, :], {f}[:], f8[:], f8[:], f8, f8, f8, f8[:, :, :], f8[:, :, :])"


@njit(COMPOSE_SIG.format(f="f8"), cache=True)
def compose_into(
    hist, m, rot, resid_mean, resid_var, col_scale, col_var, speed_gain, unsteady_gain, dt, out_mean, out_var
):  # pragma: no cover - compiled
    """World-frame means and per-axis variances from aligned-frame residual means and variances.

    resid_mean (m, 2H) is in standardised units (times col_scale gives metres); resid_var (m,) is
    the GP variance in the same units, per output column multiplied by col_var (metres^2) and by
    (1 + speed_gain * speed + unsteady_gain * unsteadiness)^2: faster and less steady walkers
    deviate more from constant velocity (a heteroscedastic noise the homoscedastic GP cannot
    express). A diagonal aligned covariance diag(a, b) rotated by R^T has world marginals
    c^2 a + s^2 b and s^2 a + c^2 b.
    """
    t = hist.shape[1] - 1
    horizon = out_mean.shape[1]
    for i in range(m):
        c = rot[i, 0]
        s = rot[i, 1]
        px = hist[i, t, 0]
        py = hist[i, t, 1]
        vx = px - hist[i, t - 1, 0]
        vy = py - hist[i, t - 1, 1]
        gain = 1.0 + speed_gain * np.sqrt(vx * vx + vy * vy) / dt + unsteady_gain * _unsteadiness(hist, i, dt)
        scale = resid_var[i] * gain * gain
        for k in range(horizon):
            ra = resid_mean[i, 2 * k] * col_scale[2 * k]
            rb = resid_mean[i, 2 * k + 1] * col_scale[2 * k + 1]
            out_mean[i, k, 0] = px + (k + 1) * vx + c * ra - s * rb
            out_mean[i, k, 1] = py + (k + 1) * vy + s * ra + c * rb
            a = scale * col_var[2 * k]
            b = scale * col_var[2 * k + 1]
            out_var[i, k, 0] = c * c * a + s * s * b
            out_var[i, k, 1] = s * s * a + c * c * b


compose_into_f4 = _f4(compose_into, COMPOSE_SIG)


# -- RBF kernel and GP variances (kernels.py, exact.py, sparse.py) ---------------------------------------
# C-contiguous all: the hot loop of a prediction (contiguous rows vectorise without stride checks)
SQ_DIST_SIG = "void({f}[:, ::1], {f}[::1], {f}[:, ::1], {f}[:, ::1])"


@njit(SQ_DIST_SIG.format(f="f8"), cache=True)
def scaled_sq_dist_into(queries, inv_lengthscales, train_scaled, out):  # pragma: no cover - compiled
    """out[i, j] = sum_d (queries[i, d] / l_d - train_scaled[j, d])^2 for the first queries.shape[0] rows.

    Dimension by dimension, so that the inner loop runs along a row of ``out`` and nothing is allocated.
    """
    m, d = queries.shape
    n = train_scaled.shape[0]
    for i in range(m):
        for j in range(n):
            out[i, j] = 0.0
        for c in range(d):
            qc = queries[i, c] * inv_lengthscales[c]
            for j in range(n):
                diff = qc - train_scaled[j, c]
                out[i, j] += diff * diff


scaled_sq_dist_into_f4 = _f4(scaled_sq_dist_into, SQ_DIST_SIG)

SOLVE_VARIANCE_SIG = "void({f}[:, :], i8, f8, {f}[:])"


@njit(SOLVE_VARIANCE_SIG.format(f="f8"), cache=True)
def variance_from_solve_into(v, m, prior_var, out):  # pragma: no cover - compiled
    """out[i] = max(prior_var - ||v[:, i]||^2, 0) with v = L^-1 k_* (R&W Alg. 2.1, line 6)."""
    n = v.shape[0]
    for i in range(m):
        acc = 0.0
        for j in range(n):
            acc += v[j, i] * v[j, i]
        value = prior_var - acc
        out[i] = value if value > 0.0 else 0.0


variance_from_solve_into_f4 = _f4(variance_from_solve_into, SOLVE_VARIANCE_SIG)

QUAD_VARIANCE_SIG = "void({f}[:, ::1], {f}[:, ::1], i8, f8, {f}[:])"


@njit(QUAD_VARIANCE_SIG.format(f="f8"), cache=True)
def quad_variance_into(ks, kq, m, prior, out):  # pragma: no cover - compiled
    """out[i] = max(prior - ks[i] . kq[i], 0) with kq = ks Q (Q = K^-1, or Kmm^-1 - Sigma when sparse)."""
    for i in range(m):
        acc = 0.0
        for j in range(ks.shape[1]):
            acc += ks[i, j] * kq[i, j]
        value = prior - acc
        out[i] = value if value > 0.0 else 0.0


quad_variance_into_f4 = _f4(quad_variance_into, QUAD_VARIANCE_SIG)


# -- online GP factor updates (online.py) ----------------------------------------------------------------
@njit(cache=True, fastmath=True)
def _drop_first(lflat, n, r, ld_out, beta, x, w):  # pragma: no cover - compiled
    p = beta.shape[1]
    for j in range(r):
        for i in range(r, n):
            x[i] = lflat[i + j * n]
        for q in range(p):
            w[q] = beta[j, q]
        for k in range(r, n):
            col = k * n
            lkk = lflat[k + col]
            rr = np.sqrt(lkk * lkk + x[k] * x[k])
            c = rr / lkk
            s = x[k] / lkk
            inv_c = 1.0 / c
            lflat[k + col] = rr
            seg = lflat[col + k + 1 : col + n]  # slices let LLVM vectorise the rotation
            xs = x[k + 1 : n]
            for i in range(seg.shape[0]):
                lik = (seg[i] + s * xs[i]) * inv_c
                seg[i] = lik
                xs[i] = c * xs[i] - s * lik
            # same rotation on the coefficients: [beta_k; w] <- [[1, s], [-s, 1]] / c [beta_k; w]
            for q in range(p):
                bk = beta[k, q]
                beta[k, q] = (bk + s * w[q]) * inv_c
                w[q] = (w[q] - s * bk) * inv_c
    m = n - r
    for k in range(m):  # ld_out <= n: destination index < source index, so a forward copy is safe
        for i in range(k, m):
            lflat[i + k * ld_out] = lflat[(i + r) + (k + r) * n]
    for i in range(m):
        for q in range(p):
            beta[i, q] = beta[i + r, q]


DROP_FIRST_SIG = "void({f}[::1], i8, i8, i8, {f}[:, ::1], {f}[::1], {f}[::1])"


@njit(DROP_FIRST_SIG.format(f="f8"), cache=True)
def drop_first_into(lflat, n, r, ld_out, beta, x, w):  # pragma: no cover - compiled
    """Remove the first r points from the factor and from beta, in place.

    The result is stored with leading dimension ``ld_out`` (>= n - r, <= n): passing the size the
    factor will have after the next append saves that append a relayout pass.
    """
    _drop_first(lflat, n, r, ld_out, beta, x, w)


drop_first_into_f4 = _f4(drop_first_into, DROP_FIRST_SIG)


@njit(cache=True, fastmath=True)
def _append(lflat, n, ld_in, k, kcross, kappa, beta, y_new, b):  # pragma: no cover - compiled
    m = n + k
    if ld_in != m:
        for col in range(n - 1, -1, -1):  # relayout to ld m, backwards so nothing is overwritten
            for i in range(n - 1, col - 1, -1):
                lflat[i + col * m] = lflat[i + col * ld_in]
    for a in range(k):  # B[:, a] = L \ k_a, column-oriented forward substitution
        ba = b[a]
        for i in range(n):
            ba[i] = kcross[a, i]
        for j in range(n):
            bj = ba[j] / lflat[j + j * m]
            ba[j] = bj
            seg = lflat[j * m + j + 1 : j * m + n]
            tail = ba[j + 1 : n]
            for i in range(seg.shape[0]):
                tail[i] -= seg[i] * bj
    for a in range(k):
        for j in range(n):
            lflat[(n + a) + j * m] = b[a, j]
    for a in range(k):  # C = chol(kappa - B^T B), written into the new diagonal block
        for c in range(a + 1):
            acc = kappa[a, c]
            for j in range(n):
                acc -= b[a, j] * b[c, j]
            for j in range(c):
                acc -= lflat[(n + a) + (n + j) * m] * lflat[(n + c) + (n + j) * m]
            if a == c:
                if acc <= 0.0:
                    return False
                lflat[(n + a) + (n + a) * m] = np.sqrt(acc)
            else:
                lflat[(n + a) + (n + c) * m] = acc / lflat[(n + c) + (n + c) * m]
    p = beta.shape[1]
    for a in range(k):  # beta_new = C \ (y - B^T beta)
        for q in range(p):
            acc = y_new[a, q]
            for j in range(n):
                acc -= b[a, j] * beta[j, q]
            for c in range(a):
                acc -= lflat[(n + a) + (n + c) * m] * beta[n + c, q]
            beta[n + a, q] = acc / lflat[(n + a) + (n + a) * m]
    return True


APPEND_SIG = "b1({f}[::1], i8, i8, i8, {f}[:, :], {f}[:, :], {f}[:, ::1], {f}[:, :], {f}[:, ::1])"


@njit(APPEND_SIG.format(f="f8"), cache=True)
def append_into(lflat, n, ld_in, k, kcross, kappa, beta, y_new, b):  # pragma: no cover - compiled
    """Append k points: kcross (k, n) = K(new, old), kappa (k, k) = K(new, new) + noise. Returns ok.

    The current factor is stored with leading dimension ``ld_in`` (n <= ld_in <= n + k); ``b`` is
    (k, n) scratch.
    """
    return _append(lflat, n, ld_in, k, kcross, kappa, beta, y_new, b)


append_into_f4 = _f4(append_into, APPEND_SIG)


# -- predictor (predictor.py) ----------------------------------------------------------------------------
@njit("b1(f8[:, :, :], i8)", cache=True)
def all_finite(a, m):  # pragma: no cover - compiled
    """Whether the first m (M, T, 2) histories hold only finite values."""
    for i in range(m):
        for j in range(a.shape[1]):
            if not (np.isfinite(a[i, j, 0]) and np.isfinite(a[i, j, 1])):
                return False
    return True


COMBINE_SIG = "void(i8, {f}[:, :], {f}[:], f8[:], {f}[:, :], {f}[:], f8[:], f8)"


@njit(COMBINE_SIG.format(f="f8"), cache=True)
def combine_into(m, mean_a, var_a, shrink_a, mean_b, var_b, shrink_b, inv_prior_b):  # pragma: no cover
    """mean_a = shrink_a * mean_a + shrink_b * mean_b; var_a *= var_b / prior_b when inv_prior_b > 0."""
    for i in range(m):
        for j in range(mean_a.shape[1]):
            mean_a[i, j] = shrink_a[j] * mean_a[i, j] + shrink_b[j] * mean_b[i, j]
        if inv_prior_b > 0.0:
            var_a[i] *= var_b[i] * inv_prior_b


combine_into_f4 = _f4(combine_into, COMBINE_SIG)
