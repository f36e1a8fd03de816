"""Features and targets for trajectory prediction, in the pedestrian's heading-aligned frame.

Target: the future displacement *over constant velocity* (CV), rotated into the frame whose x axis
is the current heading, for steps 1..H: r_k = R (p_{t+k} - p_t - k v_t), shape (H, 2) flattened.
A GP with zero prior mean on r therefore falls back to constant velocity, the strong baseline on
ETH/UCY (Schöller et al. 2020), wherever it has no nearby data.

Motion features (transfer across places): current speed and the recent velocities in the aligned
frame (turning and accelerating show up as lateral / longitudinal components).
Place features (only meaningful within one place, used by the online model): world position, world
heading (cos, sin) and speed, which carry where people in this place tend to go. Heading and speed
get separate lengthscales: with the world velocity as input (before), a 0.6 m/s lengthscale meant
a 90 degree turn at 0.4 m/s counted as "similar". Full online evaluation against the velocity
features: HOTEL ADE/FDE -12.3%/-13.8% vs CV (was -6.6%/-8.2%), but UNIV +0.1%/-1.6% (was
-1.4%/-2.9%) and ZARA1 -3.9%/-4.6% (was -5.4%/-6.5%); average -5.0%/-6.6% (was -4.9%/-6.5%).
Variance features (``gain_features``): current speed and *unsteadiness*, the rms change of velocity
between consecutive observed steps (m/s). Both scale the predicted spread (``compose_into``); the
unsteadiness is what transfers to a place recorded differently (ETH: 2-5x the other scenes).
"""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core.gp.kernels import gp_loops

MOTION_LAGS = (1, 2, 4, 6)  # default velocities v_{t-lag} used besides the current one
N_PLACE = 5
# The loops themselves live in ``loops`` (numba; compiled ahead of time by make). These two take
# float64 features and residuals; a float32 predictor calls their twins through ``gp_loops``.
# ``features_into(hist, m, dt, lags, motion, place, rot)``: fill motion (m, 1 + 2 len(lags)), place (m, 5)
# features and rot (m, 2) = (cos, sin) of the heading of the first m (M, obs, 2) histories.
# ``compose_into(hist, m, rot, resid_mean, resid_var, col_scale, col_var, speed_gain, unsteady_gain, dt,
# out_mean, out_var)``: world-frame means and per-axis variances from aligned-frame residuals.
features_into = gp_loops("float64").features_into
compose_into = gp_loops("float64").compose_into
velocity_changes_into = gp_loops("float64").velocity_changes_into


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


def velocity_changes(
    history: np.ndarray, dt: float, lags: tuple[int, ...], rot: np.ndarray, speed_terms: bool = False
) -> np.ndarray:
    """Allocating wrapper: (M, 2 len(lags)) velocity changes v_{t-lag} - v_t in the heading frame ``rot``,
    followed by the same times the current speed with ``speed_terms`` (M, 4 len(lags))."""
    out = np.empty((history.shape[0], (4 if speed_terms else 2) * len(lags)))
    velocity_changes_into(np.ascontiguousarray(history, dtype=np.float64), history.shape[0], dt,
                          np.asarray(lags, np.int64), np.ascontiguousarray(rot, dtype=np.float64), out)
    return out


def gain_features(history: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """(speed, unsteadiness) in m/s of (M, obs, 2) histories, as ``compose_into`` computes them."""
    vel = np.diff(history, axis=1) / dt
    speed = np.linalg.norm(vel[:, -1], axis=1)
    if vel.shape[1] < 2:
        return speed, np.zeros_like(speed)
    unsteady = np.sqrt(np.mean(np.sum(np.diff(vel, axis=1) ** 2, axis=2), axis=1))
    return speed, unsteady


def variance_gain(
    speed: np.ndarray, unsteady: np.ndarray, speed_gain: float, unsteady_gain: float
) -> np.ndarray:
    """Squared std multiplier of each window: (1 + speed_gain * speed + unsteady_gain * unsteadiness)^2."""
    return (1.0 + speed_gain * speed + unsteady_gain * unsteady) ** 2


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
