"""VelocityCorrector (online ridge on velocity changes) and its use in TrajectoryPredictor."""

from __future__ import annotations

import numpy as np
import pytest
from gp_windows import predict_allocations
from sklearn.linear_model import Ridge

from intent_perf_ros.core.gp.corrector import BLOCK, VelocityCorrector
from intent_perf_ros.core.gp.features import compute_features, velocity_changes
from intent_perf_ros.core.gp.kernels import gp_loops
from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor

SMALL = dict(max_train=200, hyperopt_points=100, hyperopt_restarts=0, calibration_points=150, max_humans=16,
             online_capacity=200)


def jittery_walkers(n: int, seed: int, noise: float = 0.08) -> np.ndarray:
    """Straight walkers at 1-1.5 m/s whose annotated positions carry ``noise`` m of white noise: the last
    step's velocity is a noisy estimate, the mean of several steps a better one (as in HOTEL)."""
    rng = np.random.default_rng(seed)
    heading = rng.uniform(-np.pi, np.pi, size=n)
    speed = rng.uniform(1.0, 1.5, size=n) * 0.4
    start = rng.uniform(-5.0, 5.0, size=(n, 1, 2))
    k = np.arange(20)[None, :, None]
    direction = np.stack([np.cos(heading), np.sin(heading)], axis=1)[:, None, :]
    return start + k * speed[:, None, None] * direction + noise * rng.normal(size=(n, 20, 2))


def test_velocity_changes_match_numpy_in_both_dtypes() -> None:
    hist = jittery_walkers(7, 0)[:, :8].copy()
    _, _, rot = compute_features(hist, 0.4)
    lags = (1, 2, 3, 5)
    vel = np.diff(hist, axis=1) / 0.4
    c, s = rot[:, 0], rot[:, 1]
    want = np.empty((7, 8))
    for j, lag in enumerate(lags):
        d = vel[:, -1 - lag] - vel[:, -1]
        want[:, 2 * j] = c * d[:, 0] + s * d[:, 1]
        want[:, 2 * j + 1] = -s * d[:, 0] + c * d[:, 1]
    np.testing.assert_allclose(velocity_changes(hist, 0.4, lags, rot), want, rtol=1e-12, atol=1e-12)
    with_speed = np.hstack([want, want * np.linalg.norm(vel[:, -1], axis=1)[:, None]])
    np.testing.assert_allclose(velocity_changes(hist, 0.4, lags, rot, speed_terms=True), with_speed,
                               rtol=1e-12, atol=1e-12)
    out32 = np.zeros((7, 16), dtype=np.float32)
    gp_loops("float32").velocity_changes_into(hist, 7, 0.4, np.asarray(lags, np.int64), rot, out32)
    np.testing.assert_allclose(out32, with_speed, rtol=1e-5, atol=1e-5)


def test_candidates_are_the_ridge_estimates_of_everything_learned() -> None:
    rng = np.random.default_rng(1)
    x, r = rng.normal(size=(300, 6)), rng.normal(size=(300, 4))
    corr = VelocityCorrector(6, 4, (0.5, 20.0))
    for chunk in np.array_split(np.arange(300), 7):
        corr.learn(x[chunk], r[chunk])
    for ridge, w in zip(corr.ridges, corr.candidates_, strict=True):
        want = Ridge(alpha=ridge, fit_intercept=False, solver="cholesky").fit(x, r).coef_.T
        np.testing.assert_allclose(w, want, rtol=1e-10, atol=1e-12)
    assert corr.n_windows_ == 300


def test_the_choice_is_prequential_and_switches_off_where_nothing_is_learnable() -> None:
    rng = np.random.default_rng(2)
    corr = VelocityCorrector(6, 24, (3.0, 10.0, 30.0))
    x = rng.normal(size=(BLOCK, 6))
    corr.learn(x, rng.normal(size=(BLOCK, 24)))
    # the first windows are scored against weights learned from nothing: every candidate ties, no correction
    assert np.all(corr.squared_errors_ == corr.squared_errors_[0])
    assert not corr.active and corr.ridge == 0.0 and np.all(corr.weights_ == 0.0)
    for _ in range(50):  # residuals independent of the features: fitted weights can only add error
        corr.learn(rng.normal(size=(40, 6)), rng.normal(size=(40, 24)))
    assert not corr.active
    np.testing.assert_array_equal(corr.predict(x), np.zeros((BLOCK, 24)))

    corr.reset()
    w_true = rng.normal(size=(6, 24))
    for _ in range(20):
        x = rng.normal(size=(40, 6))
        corr.learn(x, x @ w_true + 0.5 * rng.normal(size=(40, 24)))
    assert corr.active and corr.ridge in (3.0, 10.0, 30.0)
    np.testing.assert_allclose(corr.weights_, w_true, atol=0.1)


def test_windows_learned_in_bulk_are_scored_block_by_block() -> None:
    rng = np.random.default_rng(3)
    x, r = rng.normal(size=(100, 6)), rng.normal(size=(100, 24)) + rng.normal(size=(100, 6)) @ rng.normal(size=(6, 24))
    bulk, chunked = VelocityCorrector(6, 24, (3.0, 30.0)), VelocityCorrector(6, 24, (3.0, 30.0))
    bulk.learn(x, r)
    for lo in range(0, 100, BLOCK):
        chunked.learn(x[lo : lo + BLOCK], r[lo : lo + BLOCK])
    np.testing.assert_allclose(bulk.squared_errors_, chunked.squared_errors_, rtol=1e-12)
    np.testing.assert_array_equal(bulk.weights_, chunked.weights_)
    assert bulk.squared_errors_[1] != bulk.squared_errors_[0]  # scored by weights of earlier blocks


def test_input_errors_say_what_is_expected() -> None:
    with pytest.raises(ValueError, match="ridges must be positive"):
        VelocityCorrector(6, 24, (0.0,))
    with pytest.raises(ValueError, match=r"need \(K, 6\) features and \(K, 24\) residuals"):
        VelocityCorrector(6, 24, (1.0,)).learn(np.zeros((3, 5)), np.zeros((3, 24)))
    with pytest.raises(ValueError, match="corrector_lags"):
        PredictorConfig(corrector_lags=(1, 7))


@pytest.fixture(scope="module")
def pair() -> tuple[TrajectoryPredictor, TrajectoryPredictor]:
    """Two unfitted predictors (constant velocity plus what they learn online): the default corrector,
    and none (corrector_lags=()). A motion GP fitted on such walkers would learn the smoothing itself."""
    on = TrajectoryPredictor(PredictorConfig(**SMALL))
    off = TrajectoryPredictor(PredictorConfig(**SMALL, corrector_lags=()))
    for pred in (on, off):
        pred.warmup()
    return on, off


def test_a_place_with_noisy_velocities_is_corrected_online(pair) -> None:
    on, off = pair
    local = jittery_walkers(464, 4)
    test = local[400:]
    for pred in (on, off):
        pred.reset_online()
        for chunk in np.array_split(local[:400], 20):
            pred.add_windows(chunk)
    assert on.stats()["corrector_ridge"] > 0 and on.stats()["corrector_windows"] == 400
    assert off.stats()["corrector_ridge"] == 0.0
    _, _, rot = compute_features(test[:, :8], 0.4)
    changes = velocity_changes(test[:, :8], 0.4, (1, 2, 3), rot, speed_terms=True)
    errors = {"on": [], "off": []}
    for batch in np.array_split(np.arange(64), 4):
        hist = test[batch, :8].copy()
        means = {}
        for name, pred in (("on", on), ("off", off)):
            means[name], var = np.empty((16, 12, 2)), np.empty((16, 12, 2))
            pred.predict(hist, means[name], var)
            errors[name].append(np.linalg.norm(means[name] - test[batch, 8:], axis=2).mean())
        # the difference is exactly the corrector's term, rotated to the world frame
        shift = ((changes[batch] @ on.corrector_.weights_) * on.col_scale_).reshape(16, 12, 2)
        c, s = rot[batch, 0][:, None], rot[batch, 1][:, None]
        world = np.stack([c * shift[..., 0] - s * shift[..., 1], s * shift[..., 0] + c * shift[..., 1]], axis=-1)
        np.testing.assert_allclose(means["on"] - world, means["off"], atol=1e-9)
    # measured: 0.50 against 0.91 m; constant velocity from the mean of the last 3 (4) velocities: 0.40 (0.33) m
    assert np.mean(errors["on"]) < 0.65 * np.mean(errors["off"])


def test_the_corrector_learns_without_the_place_gp() -> None:
    pred = TrajectoryPredictor(PredictorConfig(**SMALL, use_place_model=False))
    pred.warmup()
    for chunk in np.array_split(jittery_walkers(400, 10), 4):  # the first is only scored: all candidates tie
        pred.add_windows(chunk)
    assert pred.corrector_.active and pred.stats()["n_online"] == 0


def test_predict_with_an_active_corrector_allocates_nothing(pair) -> None:
    on, _ = pair
    on.reset_online()
    for chunk in np.array_split(jittery_walkers(400, 5), 4):
        on.add_windows(chunk)
    assert on.corrector_.active
    kept, peak = predict_allocations(on, jittery_walkers(16, 6)[:, :8].copy())
    assert kept < 1024
    assert peak < 4096
    on.reset_online()
    assert not on.corrector_.active and on.stats()["corrector_windows"] == 0


def test_float32_predictor_applies_the_same_correction() -> None:
    train, local = jittery_walkers(300, 7, noise=0.02), jittery_walkers(400, 8)
    hist = jittery_walkers(16, 9)[:, :8].copy()
    means = []
    for dtype in ("float64", "float32"):  # fitted: the motion GP's float32 loops run too
        pred = TrajectoryPredictor(PredictorConfig(**SMALL, dtype=dtype)).fit(train)
        pred.warmup()
        for chunk in np.array_split(local, 4):
            pred.add_windows(chunk)
        assert pred.corrector_.active
        mean, var = np.empty((16, 12, 2)), np.empty((16, 12, 2))
        pred.predict(hist, mean, var)
        means.append(mean)
    np.testing.assert_allclose(means[1], means[0], atol=2e-3)
