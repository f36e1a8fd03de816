"""TrajectoryPredictor: constant-velocity fallback, learning, online updates, allocation-free predict."""

from __future__ import annotations

import numpy as np
import pytest
from gp_windows import predict_allocations

from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor

SMALL = dict(
    max_train=300,
    hyperopt_points=150,
    hyperopt_restarts=0,
    calibration_points=200,
    max_humans=16,
    online_capacity=200,
)


def curved_windows(n: int, seed: int, turn: float = 0.08, origin: float = 0.0) -> np.ndarray:
    """Pedestrians at 1-1.5 m/s turning at a constant rate (sign random), with 2 cm position noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 20, 2))
    for i in range(n):
        heading = rng.uniform(-np.pi, np.pi)
        rate = turn * rng.choice([-1.0, 1.0])
        speed = rng.uniform(1.0, 1.5) * 0.4
        pos = origin + rng.uniform(-5, 5, size=2)
        for k in range(20):
            out[i, k] = pos
            heading += rate
            pos = pos + speed * np.array([np.cos(heading), np.sin(heading)])
    return out + 0.02 * rng.normal(size=out.shape)


def cv_prediction(hist: np.ndarray) -> np.ndarray:
    vel = hist[:, -1] - hist[:, -2]
    return hist[:, -1][:, None] + np.arange(1, 13)[None, :, None] * vel[:, None]


def test_unfitted_predictor_is_constant_velocity_with_growing_variance() -> None:
    pred = TrajectoryPredictor(PredictorConfig(max_humans=4))
    pred.warmup()
    hist = curved_windows(3, 0)[:, :8].copy()
    mean, var = np.empty((3, 12, 2)), np.empty((3, 12, 2))
    pred.predict(hist, mean, var)
    np.testing.assert_allclose(mean, cv_prediction(hist), atol=1e-12)
    assert np.all(np.isfinite(var)) and np.all(var > 0)
    assert np.all(np.diff(var.sum(axis=2), axis=1) > 0)
    pred.predict(np.empty((0, 8, 2)), mean, var)  # M = 0 is a no-op
    assert pred.stats()["backend"] == "constant_velocity"


def test_input_errors_say_how_to_fix() -> None:
    pred = TrajectoryPredictor(PredictorConfig(max_humans=2))
    out = np.empty((3, 12, 2))
    with pytest.raises(RuntimeError, match="warmup"):
        pred.predict(np.zeros((1, 8, 2)), out, out)
    pred.warmup()
    with pytest.raises(ValueError, match="max_humans"):
        pred.predict(np.zeros((3, 8, 2)), out, out)
    bad = np.zeros((1, 8, 2))
    bad[0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pred.predict(bad, out, out)
    with pytest.raises(ValueError, match=r"\(M, 8, 2\)"):
        pred.predict(np.zeros((1, 7, 2)), out, out)


@pytest.fixture(scope="module")
def fitted() -> TrajectoryPredictor:
    pred = TrajectoryPredictor(PredictorConfig(**SMALL)).fit(curved_windows(400, 1))
    pred.warmup()
    return pred


def test_fitted_predictor_learns_turning_and_is_calibrated(fitted: TrajectoryPredictor) -> None:
    test = curved_windows(16, 2)
    hist = test[:, :8].copy()
    mean, var = np.empty((16, 12, 2)), np.empty((16, 12, 2))
    fitted.predict(hist, mean, var)
    ours = np.linalg.norm(mean - test[:, 8:], axis=2).mean()
    cv = np.linalg.norm(cv_prediction(hist) - test[:, 8:], axis=2).mean()
    assert ours < 0.5 * cv
    inside = (((mean - test[:, 8:]) ** 2 / var).sum(axis=2) <= 5.991).mean()
    assert inside > 0.8
    stats = fitted.stats()
    assert stats["fitted"] and stats["n_train"] == 300 and not stats["sparse"]


def test_predict_allocates_nothing_in_steady_state(fitted: TrajectoryPredictor) -> None:
    fitted.add_windows(curved_windows(30, 5))
    kept, peak = predict_allocations(fitted, curved_windows(16, 3)[:, :8].copy())
    # one (16 x 300) kernel workspace would be 38 kB; only small view objects may come and go
    assert kept < 1024
    assert peak < 4096
    fitted.reset_online()


def veering_windows(n: int, seed: int) -> np.ndarray:
    """A place where people walk east in a straight line, then veer north (not visible in the history)."""
    rng = np.random.default_rng(seed)
    k = np.arange(20)
    out = np.empty((n, 20, 2))
    for i in range(n):
        speed = rng.uniform(0.4, 0.55)
        out[i, :, 0] = rng.uniform(-3.0, 0.0) + speed * k
        out[i, :, 1] = rng.normal(0.0, 0.3) + 0.03 * np.clip(k - 7, 0, None) ** 2
    return out + 0.02 * rng.normal(size=out.shape)


def test_online_learning_adapts_to_a_place() -> None:
    pred = TrajectoryPredictor(PredictorConfig(**SMALL)).fit(curved_windows(300, 1))
    pred.warmup()
    local = veering_windows(216, 8)
    test = local[200:]
    hist = test[:, :8].copy()
    mean, var = np.empty((16, 12, 2)), np.empty((16, 12, 2))
    pred.predict(hist, mean, var)
    before = np.linalg.norm(mean - test[:, 8:], axis=2).mean()
    for chunk in np.array_split(local[:200], 10):
        pred.add_windows(chunk)
    pred.predict(hist, mean, var)
    after = np.linalg.norm(mean - test[:, 8:], axis=2).mean()
    stats = pred.stats()
    assert stats["n_online"] == 200 and stats["incremental_updates"] == 9 and stats["refits"] == 2
    assert after < 0.5 * before


def test_online_variance_adapts_to_a_noisier_place(fitted: TrajectoryPredictor) -> None:
    fitted.reset_online()
    np.testing.assert_array_equal(fitted.col_var_eff_, fitted.col_var_)
    noisy = curved_windows(200, 11)
    noisy[:, 8:] += np.random.default_rng(12).normal(0.0, 0.5, size=noisy[:, 8:].shape)
    fitted.add_windows(noisy)
    assert np.all(fitted.col_var_eff_ > 2.0 * fitted.col_var_)
    fitted.reset_online()
    np.testing.assert_array_equal(fitted.col_var_eff_, fitted.col_var_)


def timed_places(n: int, seed: int, learnable: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two places of ``n`` veering windows each, two windows starting per step, with group labels.

    learnable: everyone in a place veers the same way (north in one, south in the other);
    otherwise each pedestrian veers north or south at random, which no place model can foresee.
    """
    parts, groups, frames = [], [], []
    rng = np.random.default_rng(seed)
    for g, sign in enumerate((1.0, -1.0)):
        w = veering_windows(n, seed + g)
        flip = np.full(n, sign) if learnable else rng.choice([-1.0, 1.0], size=n)
        w[:, :, 1] *= flip[:, None]
        parts.append(w)
        groups.append(np.full(n, g))
        frames.append(np.arange(n) // 2)
    return np.concatenate(parts), np.concatenate(groups), np.concatenate(frames)


def test_place_settings_are_chosen_by_simulated_online_use() -> None:
    from intent_perf_ros.core.gp.predictor import DEFAULT_PLACE_PARAMS, PLACE_GRID

    cfg = PredictorConfig(**SMALL, place_sim_cuts=6)
    xy, groups, frames = timed_places(300, 20, learnable=True)
    pred = TrajectoryPredictor(cfg).fit(xy, groups, frames)
    assert any(pred.place_params_ is p for p in PLACE_GRID)
    # the cross-track veer of the later steps is what a place teaches: trusted
    assert np.all(pred.place_shrink_[13::2] > 0.5)
    xy, groups, frames = timed_places(300, 20, learnable=False)
    pred = TrajectoryPredictor(cfg).fit(xy, groups, frames)
    assert np.all(pred.place_shrink_[13::2] < 0.3)
    assert pred.place_stride_ in cfg.place_strides
    # without start times nothing is simulated: default settings, full trust, every window learned
    pred = TrajectoryPredictor(cfg).fit(xy, groups)
    assert pred.place_params_ is DEFAULT_PLACE_PARAMS and np.all(pred.place_shrink_ == 1.0)
    assert pred.place_stride_ == 1


def test_the_place_gp_learns_the_windows_on_its_stride() -> None:
    cfg = PredictorConfig(**{**SMALL, "online_capacity": 30}, place_sim_cuts=6, place_strides=(3,))
    xy, groups, frames = timed_places(300, 20, learnable=True)
    pred = TrajectoryPredictor(cfg).fit(xy, groups, frames)
    assert pred.place_stride_ == 3
    pred.warmup()
    local = veering_windows(90, 30)
    ends = np.arange(90) + 19.0  # starts 0..89
    for chunk in np.array_split(np.arange(90), 9):
        pred.add_windows(local[chunk], ends[chunk])
    # every window until full (starts 0..29), then only starts on a multiple of 3, the oldest dropped
    assert pred.stats()["n_online"] == 30 and pred.stats()["place_stride"] == 3
    np.testing.assert_array_equal(pred.learned_windows(), local[np.r_[10:30, 30:90:3]][-30:])
    assert pred.corrector_.n_windows_ == 90  # the corrector and the variance adaptation see every window
    pred.add_windows(local[:5])  # no times (restored from the site store): learned even when full
    np.testing.assert_array_equal(pred.learned_windows()[-5:], local[:5])
    with pytest.raises(ValueError, match="place_strides"):
        PredictorConfig(place_strides=(0,))


def test_shrink_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="worst_place"):
        PredictorConfig(place_shrink_rule="mean")


def test_warmup_predicts_a_full_batch_and_one_query() -> None:
    pred = TrajectoryPredictor(PredictorConfig(**SMALL)).fit(curved_windows(300, 1))
    sizes = []
    original = pred.predict

    def spy(history, out_mean, out_var):
        sizes.append(history.shape[0])
        original(history, out_mean, out_var)

    pred.predict = spy
    pred.warmup()
    assert sizes == [SMALL["max_humans"], 1]


def test_motion_factors_below_the_minimum_fall_back_to_constant_velocity() -> None:
    # turning at the same rate in both places transfers: the later cross-track outputs are trusted
    xy = np.concatenate([curved_windows(200, 30), curved_windows(200, 31, origin=50.0)])
    groups = np.repeat([0, 1], 200)
    pred = TrajectoryPredictor(PredictorConfig(**SMALL)).fit(xy, groups)
    assert np.all(pred.motion_shrink_[13::2] > 0.5)
    strict = TrajectoryPredictor(PredictorConfig(**SMALL, motion_min_shrink=1.01)).fit(xy, groups)
    assert np.all(strict.motion_shrink_ == 0.0)


def test_refit_on_the_same_windows_reuses_the_fitted_hyperparameters(monkeypatch) -> None:
    import intent_perf_ros.core.gp.hyperopt as hyperopt_module  # imported by fit() only (scipy.optimize)

    calls = []
    real = hyperopt_module.fit_hyperparameters

    def counting_fit(groups, **kw):
        calls.append(kw)
        return real(groups, **kw)

    monkeypatch.setattr(hyperopt_module, "fit_hyperparameters", counting_fit)
    windows = curved_windows(200, 11)
    first = TrajectoryPredictor(PredictorConfig(**SMALL)).fit(windows)
    again = TrajectoryPredictor(PredictorConfig(**SMALL)).fit(windows.copy())
    assert len(calls) == 1
    np.testing.assert_array_equal(first.motion_params_.lengthscales, again.motion_params_.lengthscales)
    assert first.motion_lml_ == again.motion_lml_
    TrajectoryPredictor(PredictorConfig(**SMALL)).fit(curved_windows(200, 12))  # other data: fitted
    TrajectoryPredictor(PredictorConfig(**{**SMALL, "seed": 1})).fit(windows)  # other settings: fitted
    assert len(calls) == 3


def test_a_constant_motion_variance_skips_the_gp_variance_and_predicts_the_same() -> None:
    pred = TrajectoryPredictor(PredictorConfig(**{**SMALL, "sparse_threshold": 200, "n_inducing": 60}))
    pred.fit(curved_windows(400, 1))
    pred.warmup()
    assert hasattr(pred.motion_model_, "predict_mean_into")  # sparse above the threshold
    hist = curved_windows(16, 3)[:, :8].copy()
    pred.use_motion_variance_ = False  # what the calibration chose on ETH/UCY
    model = pred.motion_model_
    calls = []
    model.predict_into = lambda *args: calls.append(1) or type(model).predict_into(model, *args)
    fast = np.empty((16, 12, 2)), np.empty((16, 12, 2))
    pred.predict(hist, *fast)
    assert calls == []  # the mean-only path: no O(M m^2) variance
    model.predict_mean_into = None  # force the path that computes the variance and drops it
    full = np.empty((16, 12, 2)), np.empty((16, 12, 2))
    pred.predict(hist, *full)
    assert calls == [1]
    np.testing.assert_array_equal(fast[0], full[0])
    np.testing.assert_array_equal(fast[1], full[1])


def test_a_failed_online_factorisation_falls_back_to_the_offline_model(fitted: TrajectoryPredictor) -> None:
    fitted.add_windows(curved_windows(30, 5))
    hist = curved_windows(16, 3)[:, :8].copy()

    def indefinite(*_args) -> None:
        raise np.linalg.LinAlgError("not positive definite even with the largest jitter")

    fitted.place_model_.add = indefinite
    fitted.add_windows(curved_windows(10, 6))  # must not raise
    assert fitted.place_model_ is None and fitted.stats()["place_failures"] == 1
    after = np.empty((16, 12, 2)), np.empty((16, 12, 2))
    fitted.predict(hist, *after)
    fitted.reset_online()
    offline = np.empty((16, 12, 2)), np.empty((16, 12, 2))
    fitted.predict(hist, *offline)
    np.testing.assert_array_equal(after[0], offline[0])  # the offline motion model alone
    fitted.add_windows(curved_windows(10, 7))  # and the place is learned anew
    assert fitted.stats()["n_online"] == 10
    fitted.reset_online()
