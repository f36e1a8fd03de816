"""Heteroscedastic variance: speed/unsteadiness gain, its calibration, and the heading place features."""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core.gp.features import (
    compose_into,
    compute_features,
    gain_features,
    variance_gain,
)
from intent_perf_ros.core.gp.predictor import TrajectoryPredictor


def jittery_histories(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vel = rng.uniform(-1.0, 1.0, size=(n, 1, 2)) + rng.uniform(0.0, 0.3, size=(n, 1, 1)) * rng.normal(
        size=(n, 7, 2)
    )
    hist = np.zeros((n, 8, 2))
    hist[:, 1:] = np.cumsum(0.4 * vel, axis=1)
    return hist + rng.uniform(-5, 5, size=(n, 1, 2))


def test_gain_features_match_a_direct_computation() -> None:
    hist = jittery_histories(5, 0)
    speed, unsteady = gain_features(hist, 0.4)
    for i in range(5):
        v = [(hist[i, j + 1] - hist[i, j]) / 0.4 for j in range(7)]
        assert np.isclose(speed[i], np.hypot(*v[-1]))
        dv = [np.sum((v[j + 1] - v[j]) ** 2) for j in range(6)]
        assert np.isclose(unsteady[i], np.sqrt(np.mean(dv)))


def test_compose_scales_variance_by_the_gain_and_rotates_it() -> None:
    hist = jittery_histories(6, 1)
    _, _, rot = compute_features(hist, 0.4)
    m, horizon = 6, 12
    resid_var = np.linspace(0.5, 1.5, m)
    col_var = np.linspace(0.01, 1.0, 2 * horizon)
    out_mean, out_var = np.empty((m, horizon, 2)), np.empty((m, horizon, 2))
    a, b = 0.7, 4.0
    compose_into(hist, m, rot, np.zeros((m, 2 * horizon)), resid_var, np.ones(2 * horizon), col_var,
                 a, b, 0.4, out_mean, out_var)
    g2 = variance_gain(*gain_features(hist, 0.4), a, b)
    along = (resid_var * g2)[:, None] * col_var[None, 0::2]
    cross = (resid_var * g2)[:, None] * col_var[None, 1::2]
    c, s = rot[:, 0][:, None], rot[:, 1][:, None]
    np.testing.assert_allclose(out_var[..., 0], c * c * along + s * s * cross, rtol=1e-12)
    np.testing.assert_allclose(out_var[..., 1], s * s * along + c * c * cross, rtol=1e-12)


def test_place_features_are_position_heading_and_speed() -> None:
    hist = jittery_histories(4, 2)
    _, place, rot = compute_features(hist, 0.4)
    v = (hist[:, -1] - hist[:, -2]) / 0.4
    np.testing.assert_allclose(place[:, :2], hist[:, -1])
    np.testing.assert_allclose(place[:, 2:4], v / np.linalg.norm(v, axis=1, keepdims=True))
    np.testing.assert_allclose(place[:, 2:4], rot)
    np.testing.assert_allclose(place[:, 4], np.linalg.norm(v, axis=1))


def test_calibration_recovers_heteroscedastic_gain_and_prefers_it_to_a_flat_gp_variance() -> None:
    """Residuals with std (1 + 0.5 speed + 5 unsteadiness): the grid maximum likelihood finds the gain,
    chooses the constant variance over an uninformative 'GP variance', and covers 95% per stratum."""
    rng = np.random.default_rng(3)
    n = 20000
    gx = np.stack([rng.uniform(0, 2, n), rng.uniform(0, 0.3, n)], axis=1)
    std = 1.0 + 0.5 * gx[:, 0] + 5.0 * gx[:, 1]
    err = std[:, None] * rng.normal(size=(n, 24))
    pred = TrajectoryPredictor()
    pred.col_scale_ = np.ones(24)
    noise_var = rng.uniform(0.2, 1.0, n)  # unrelated to the residuals
    pred._calibrate(err, noise_var, gx, allow_constant=True)
    assert not pred.use_motion_variance_
    assert abs(pred.speed_gain_ - 0.5) <= 0.25 and abs(pred.unsteady_gain_ - 5.0) <= 1.0
    var = variance_gain(gx[:, 0], gx[:, 1], pred.speed_gain_, pred.unsteady_gain_)[:, None] * pred.col_var_
    d2 = err**2 / var
    inside = (d2[:, 0::2] + d2[:, 1::2]) <= 5.991464547107979
    for stratum in (gx[:, 1] < 0.1, gx[:, 1] > 0.2):
        assert 0.93 <= inside[stratum].mean() <= 0.97
    # a homoscedastic 95% circle would be too small for the unsteady walkers: the gain is what fixes them
    radius2 = np.quantile(err[:, 0::2] ** 2 + err[:, 1::2] ** 2, 0.95, axis=0)
    assert np.mean((err[:, 0::2] ** 2 + err[:, 1::2] ** 2)[gx[:, 1] > 0.2] <= radius2) < 0.9


def test_calibration_keeps_an_informative_gp_variance() -> None:
    rng = np.random.default_rng(4)
    n = 5000
    gp_var = rng.uniform(0.1, 3.0, n)
    err = np.sqrt(gp_var)[:, None] * rng.normal(size=(n, 24))
    pred = TrajectoryPredictor()
    pred.col_scale_ = np.ones(24)
    pred._calibrate(err, gp_var, np.zeros((n, 2)), allow_constant=True)
    assert pred.use_motion_variance_
    np.testing.assert_allclose(pred.calibration_, 1.0, atol=0.1)
