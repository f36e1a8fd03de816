"""Sparse (DTC/VFE) GP converges to the exact GP as the inducing set approaches the training set."""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core.gp.exact import ExactGP
from intent_perf_ros.core.gp.kernels import RBFParams
from intent_perf_ros.core.gp.sparse import SparseGP

PARAMS = RBFParams(np.array([0.9, 1.4]), 1.1, 0.04)


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 2))
    y = np.sin(2 * x[:, :1]) * np.cos(x[:, 1:]) + 0.1 * rng.normal(size=(150, 1))
    return x, y, rng.normal(size=(25, 2))


def test_inducing_equal_to_training_points_is_exact() -> None:
    x, y, xq = _data()
    exact_mean, exact_var = ExactGP(PARAMS, jitter=0.0).fit(x, y).predict(xq)
    sparse = SparseGP(PARAMS, inducing=x, jitter=1e-10).fit(x, y)
    sparse.reserve(25)
    mean, var = sparse.predict(xq)
    np.testing.assert_allclose(mean, exact_mean, atol=1e-6)
    # the precomputed Q = Kmm^-1 - Sigma cancels two large matrices when Z = X (Kmm is then as
    # ill-conditioned as it gets), so the variance agrees to ~1e-5 here, not to rounding
    np.testing.assert_allclose(var, exact_var, atol=1e-4)


def test_error_shrinks_as_inducing_set_grows() -> None:
    x, y, xq = _data()
    exact_mean, exact_var = ExactGP(PARAMS).fit(x, y).predict(xq)
    errors = []
    for m in (10, 40, 150):
        mean, var = SparseGP(PARAMS, n_inducing=m).fit(x, y).predict(xq)
        errors.append(np.abs(mean - exact_mean).max() + np.abs(var - exact_var).max())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-4


def test_mean_only_prediction_equals_the_full_one() -> None:
    x, y, xq = _data()
    sparse = SparseGP(PARAMS, n_inducing=40).fit(x, y)
    sparse.reserve(25)
    mean, var = np.empty((25, 1)), np.empty(25)
    sparse.predict_into(xq, mean, var)
    mean_only = np.full((25, 1), np.nan)
    sparse.predict_mean_into(xq, mean_only)
    np.testing.assert_array_equal(mean_only, mean)
    np.testing.assert_array_equal(sparse.predict_mean(xq), mean)  # the allocating wrapper
