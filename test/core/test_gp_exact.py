"""Exact GP against scikit-learn, marginal-likelihood gradient against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, WhiteKernel
from sklearn.gaussian_process.kernels import ConstantKernel as C

from intent_perf_ros.core.gp.exact import ExactGP
from intent_perf_ros.core.gp.hyperopt import fit_hyperparameters, neg_lml_and_grad
from intent_perf_ros.core.gp.kernels import RBFParams

PARAMS = RBFParams(np.array([0.7, 1.3, 2.1]), 1.4, 0.05)


def _data(n: int, p: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = np.sin(x @ rng.normal(size=(3, p))) + 0.1 * rng.normal(size=(n, p))
    return x, y


def _sklearn(x: np.ndarray, y: np.ndarray, params: RBFParams) -> GaussianProcessRegressor:
    kernel = C(params.signal_var, "fixed") * RBF(params.lengthscales, "fixed") + WhiteKernel(
        params.noise_var, "fixed"
    )
    # sklearn adds ``alpha`` to the diagonal; ours adds jitter relative to the mean diagonal
    alpha = 1e-10 * (params.signal_var + params.noise_var)
    return GaussianProcessRegressor(kernel, alpha=alpha, optimizer=None).fit(x, y)


@pytest.mark.parametrize("n", [5, 200])
@pytest.mark.parametrize("m", [1, 3, 17])  # single query (dsymv), small batch (dsymm), large (solve)
@pytest.mark.parametrize("predict_with", ["inverse", "solve"])
def test_mean_and_variance_match_sklearn(n: int, m: int, predict_with: str) -> None:
    x, y = _data(n)
    xq = np.random.default_rng(1).normal(size=(m, 3))
    ours = ExactGP(PARAMS, jitter=1e-10, predict_with=predict_with).fit(x, y)
    ours.reserve(m)
    mean, var = ours.predict(xq)
    ref_mean, ref_std = _sklearn(x, y, PARAMS).predict(xq, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, atol=1e-9)
    np.testing.assert_allclose(var, ref_std[:, 0] ** 2 if ref_std.ndim == 2 else ref_std**2, atol=1e-9)


def test_log_marginal_likelihood_matches_sklearn() -> None:
    x, y = _data(100, p=1)
    ours = ExactGP(PARAMS, jitter=1e-10).fit(x, y)
    assert ours.log_marginal_likelihood() == pytest.approx(
        _sklearn(x, y, PARAMS).log_marginal_likelihood_value_, rel=1e-9
    )


def test_float32_is_close_to_float64() -> None:
    x, y = _data(100)
    xq = np.random.default_rng(2).normal(size=(5, 3))
    m64, v64 = ExactGP(PARAMS).fit(x, y).predict(xq)
    m32, v32 = ExactGP(PARAMS, dtype="float32").fit(x, y).predict(xq)
    assert m32.dtype == np.float32
    np.testing.assert_allclose(m32, m64, atol=1e-3)
    np.testing.assert_allclose(v32, v64, atol=1e-3)


def test_lml_gradient_matches_finite_differences() -> None:
    x, y = _data(60, p=2)
    groups = [(x[:30], y[:30]), (x[30:], y[30:])]
    theta = PARAMS.to_log()
    _, grad = neg_lml_and_grad(theta, groups)
    eps = 1e-6
    fd = np.array(
        [
            (neg_lml_and_grad(theta + e, groups)[0] - neg_lml_and_grad(theta - e, groups)[0]) / (2 * eps)
            for e in np.eye(theta.size) * eps
        ]
    )
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def test_hyperparameter_fit_improves_likelihood_and_finds_noise() -> None:
    x, y = _data(150, p=1)
    fitted, lml = fit_hyperparameters([(x, y)], n_restarts=1)
    start = -neg_lml_and_grad(RBFParams(np.ones(3), 0.5, 0.5).to_log(), [(x, y)])[0]
    assert lml > start
    assert 0.001 < fitted.noise_var < 0.05  # data noise std 0.1 -> variance 0.01


def test_adaptive_jitter_handles_duplicate_inputs() -> None:
    x, y = _data(20, p=1)
    x = np.concatenate([x, x])  # exact duplicates, noise-free kernel: singular without jitter
    y = np.concatenate([y, y])
    model = ExactGP(RBFParams(np.ones(3), 1.0, 0.0), jitter=0.0).fit(x, y)
    assert model.jitter_ > 0
    mean, var = model.predict(x[:3])
    assert np.all(np.isfinite(mean)) and np.all(var >= 0)


def test_bad_input_raises_with_advice() -> None:
    x, y = _data(10, p=1)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ExactGP(PARAMS).fit(x, y)
    with pytest.raises(ValueError, match="features"):
        ExactGP(PARAMS).fit(*_data(10)).predict(np.zeros((2, 4)))
