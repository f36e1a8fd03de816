"""Features and targets for trajectory prediction, in the pedestrian's heading-aligned frame.

Target: the future displacement *over constant velocity* (CV), rotated into the frame whose x axis
is the current heading, for steps 1..H: r_k = R (p_{t+k} - p_t - k v_t), shape (H, 2) flattened.
A GP with zero prior mean on r therefore falls back to constant velocity, the strong baseline on
ETH/UCY (Schöller et al. 2020), wherever it has no nearby data.

Motion features (transfer across places): current speed and the recent velocities in the aligned
frame (turning and accelerating show up as lateral / longitudinal components).
Place features (only meaningful within one place, used by the online model): world position and
world velocity, which carry where people in this place tend to go.
"""

from __future__ import annotations

import numba
import numpy as np

MOTION_LAGS = (1, 2, 4, 6)  # default velocities v_{t-lag} used besides the current one
N_PLACE = 4
_MIN_SPEED_STEP = 1e-3  # metres per step below which the heading is taken from a longer baseline


@numba.njit(cache=True)
def features_into(hist, m, dt, lags, motion, place, rot):  # pragma: no cover - compiled
    """Fill motion (m, 1 + 2 len(lags)), place (m, 4) features and rot (m, 2) = (cos, sin) of the heading."""
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
        place[i, 2] = vx / dt
        place[i, 3] = vy / dt


@numba.njit(cache=True)
def compose_into(
    hist, m, rot, resid_mean, resid_var, col_scale, col_var, speed_gain, dt, out_mean, out_var
):  # pragma: no cover - compiled
    """World-frame means and per-axis variances from aligned-frame residual means and variances.

    resid_mean (m, 2H) is in standardised units (times col_scale gives metres); resid_var (m,) is
    the GP variance in the same units, per output column multiplied by col_var (metres^2) and by
    (1 + speed_gain * speed)^2: faster walkers deviate more from constant velocity (a
    heteroscedastic noise the homoscedastic GP cannot express). A diagonal aligned covariance
    diag(a, b) rotated by R^T has world marginals c^2 a + s^2 b and s^2 a + c^2 b.
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
        gain = 1.0 + speed_gain * np.sqrt(vx * vx + vy * vy) / dt
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


def split_windows(windows: np.ndarray, obs_steps: int, pred_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate (K, obs + pred, 2) windows and return (history, future) views."""
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 3 or windows.shape[1] != obs_steps + pred_steps or windows.shape[2] != 2:
        raise ValueError(f"windows must be (K, {obs_steps + pred_steps}, 2) positions, got {windows.shape}")
    if not np.all(np.isfinite(windows)):
        raise ValueError("windows contain NaN or inf; drop windows with missing positions first")
    return windows[:, :obs_steps], windows[:, obs_steps:]


def compute_features(
    history: np.ndarray, dt: float, lags: tuple[int, ...] = MOTION_LAGS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Allocating wrapper: (motion, place, rot) for (M, obs, 2) histories."""
    m = history.shape[0]
    motion = np.empty((m, 1 + 2 * len(lags)))
    place = np.empty((m, N_PLACE))
    rot = np.empty((m, 2))
    features_into(
        np.ascontiguousarray(history, dtype=np.float64), m, dt, np.asarray(lags, np.int64), motion, place, rot
    )
    return motion, place, rot


def residual_targets(history: np.ndarray, future: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Aligned-frame residual over constant velocity, (K, 2H): r_k = R (p_{t+k} - p_t - k v_t)."""
    last = history[:, -1]
    vel = history[:, -1] - history[:, -2]
    steps = np.arange(1, future.shape[1] + 1)[None, :, None]
    world = future - last[:, None] - steps * vel[:, None]
    c = rot[:, 0][:, None]
    s = rot[:, 1][:, None]
    along = c * world[..., 0] + s * world[..., 1]
    cross = -s * world[..., 0] + c * world[..., 1]
    return np.stack([along, cross], axis=-1).reshape(len(history), -1)
