"""Sparse GP with inducing points (DTC / VFE predictive distribution).

With inducing inputs Z (m points), Lm = chol(Kmm), V = Lm^-1 Kmn, B = I + V V^T / sn2 = LB LB^T
(Titsias 2009; Quiñonero-Candela & Rasmussen 2005, eq. 20-21):
    mean_*  = k_*m Sigma Kmn y / sn2,   Sigma = (Kmm + Kmn Knm / sn2)^-1 = Lm^-T B^-1 Lm^-1
    var_*   = k_** - k_*m Kmm^-1 k_m* + k_*m Sigma k_m* (+ sn2)
Fitting is done stably through a = Lm^-1 k_m* and c = LB^-1 a (var_* = k_** - ||a||^2 + ||c||^2),
but for prediction we precompute Q = Kmm^-1 - Sigma = Lm^-T (I - B^-1) Lm^-1 and w = Sigma Kmn y / sn2,
so a query is one matrix-vector product with Q (m x m, a few hundred kB that stay in cache)
instead of two latency-bound triangular solves: var_* = k_** - k^T Q k, mean_* = k^T w.
When Z equals the training inputs this is exactly the full GP (tested).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from intent_perf_ros.core.gp.exact import allocating_predict, allocating_predict_mean, check_xy
from intent_perf_ros.core.gp.kernels import RBFParams, gp_loops, rbf, rbf_cross_into
from intent_perf_ros.core.gp.linalg import cholesky_jittered, symmetric_product_into


def select_inducing(x: np.ndarray, lengthscales: np.ndarray, n_inducing: int, seed: int = 0) -> np.ndarray:
    """k-means++ seeding in lengthscale-scaled space: well-spread inducing inputs, no Lloyd iterations."""
    from sklearn.cluster import kmeans_plusplus

    if n_inducing >= x.shape[0]:
        return x.copy()
    centers, _ = kmeans_plusplus(x / lengthscales, n_inducing, random_state=seed)
    return centers * lengthscales


class SparseGP:
    """DTC/VFE sparse GP with the same ``predict_into`` interface as ``ExactGP``."""

    def __init__(
        self,
        params: RBFParams,
        inducing: np.ndarray | None = None,
        n_inducing: int = 300,
        jitter: float = 1e-8,
        max_jitter: float = 1e-2,
        dtype: str = "float64",
        seed: int = 0,
    ) -> None:
        self.params = params
        self.inducing = inducing
        self.n_inducing = n_inducing
        self.jitter = jitter
        self.max_jitter = max_jitter
        self.dtype = dtype
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray) -> SparseGP:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        check_xy(x, y)
        p = self.params
        dt = np.dtype(self.dtype)
        z = (
            np.asarray(self.inducing, dtype=np.float64)
            if self.inducing is not None
            else select_inducing(x, p.lengthscales, self.n_inducing, self.seed)
        )
        kmm = rbf(z, z, p.lengthscales, p.signal_var)
        self.Lm_, self.jitter_ = cholesky_jittered(kmm, self.jitter, self.max_jitter)
        v = scipy.linalg.solve_triangular(
            self.Lm_, rbf(z, x, p.lengthscales, p.signal_var), lower=True, check_finite=False
        )
        b = np.eye(z.shape[0]) + (v @ v.T) / p.noise_var
        self.LB_, _ = cholesky_jittered(b, 0.0, self.max_jitter)
        gamma = scipy.linalg.solve_triangular(self.LB_, v @ y, lower=True, check_finite=False) / p.noise_var
        lm_inv = scipy.linalg.solve_triangular(self.Lm_, np.eye(z.shape[0]), lower=True, check_finite=False)
        c = scipy.linalg.solve_triangular(self.LB_, lm_inv, lower=True, check_finite=False)  # LB^-1 Lm^-1
        q = lm_inv.T @ lm_inv - c.T @ c
        self.Q_ = np.asfortranarray(0.5 * (q + q.T), dtype=dt)
        self.w_ = np.ascontiguousarray(c.T @ gamma, dtype=dt)
        self.inducing_ = z
        self.inv_lengthscales_ = (1.0 / p.lengthscales).astype(dt)
        self.train_scaled_ = np.ascontiguousarray(z * self.inv_lengthscales_, dtype=dt)
        self.n_train_seen_ = x.shape[0]
        self._buffer = np.empty(0, dtype=dt)
        self._product = np.empty(0, dtype=dt)
        return self

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that fully define the fitted model (for the store)."""
        return {
            "inducing": self.inducing_,
            "Q": self.Q_,
            "w": self.w_,
            "n_train": np.array(self.n_train_seen_),
            "jitter": np.array(self.jitter_),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> SparseGP:
        """Restore a fitted model from ``state()``."""
        dt = np.dtype(self.dtype)
        self.inducing_ = np.ascontiguousarray(state["inducing"], dtype=np.float64)
        self.Q_ = np.asfortranarray(state["Q"], dtype=dt)
        self.w_ = np.ascontiguousarray(state["w"], dtype=dt)
        self.n_train_seen_ = int(state["n_train"])
        self.jitter_ = float(state["jitter"])
        self.inv_lengthscales_ = (1.0 / self.params.lengthscales).astype(dt)
        self.train_scaled_ = np.ascontiguousarray(self.inducing_ * self.inv_lengthscales_, dtype=dt)
        self._buffer = np.empty(0, dtype=dt)
        self._product = np.empty(0, dtype=dt)
        return self

    @property
    def n_train(self) -> int:
        return getattr(self, "n_train_seen_", 0)

    def reserve(self, max_queries: int) -> None:
        """Preallocate the (max_queries, m) workspace and compile the numba loops."""
        dt = np.dtype(self.dtype)
        need = max(max_queries, 1) * self.train_scaled_.shape[0]
        if self._buffer.size < need:
            self._buffer = np.empty(need, dtype=dt)
            self._product = np.empty(need, dtype=dt)
        probe = np.zeros((1, self.train_scaled_.shape[1]), dtype=dt)
        self.predict_into(probe, np.empty((1, self.w_.shape[1]), dt), np.empty(1, dt))

    def predict_into(
        self, xq: np.ndarray, out_mean: np.ndarray, out_var: np.ndarray, include_noise: bool = True
    ) -> None:
        """Posterior mean (M, P) and variance (M,) in place; ``xq`` validated, model dtype."""
        m = xq.shape[0]
        if m == 0:
            return
        n_ind = self.train_scaled_.shape[0]
        p = self.params
        if self._buffer.size < m * n_ind:
            self._buffer = np.empty(m * n_ind, dtype=self._buffer.dtype)
            self._product = np.empty(m * n_ind, dtype=self._buffer.dtype)
        ks = self._buffer[: m * n_ind].reshape(m, n_ind)
        kq = self._product[: m * n_ind].reshape(m, n_ind)
        rbf_cross_into(xq, self.inv_lengthscales_, self.train_scaled_, p.signal_var, ks)
        np.dot(ks, self.w_, out=out_mean)
        symmetric_product_into(self.Q_, ks, kq)
        gp_loops(ks.dtype).quad_variance_into(ks, kq, m, p.signal_var + (p.noise_var if include_noise else 0.0),
                                              out_var)

    def predict_mean_into(self, xq: np.ndarray, out_mean: np.ndarray) -> None:
        """Posterior mean (M, P) only, in place: the first two lines of ``predict_into`` without the
        O(M m^2) variance, for callers that do not use the model's variance."""
        m = xq.shape[0]
        if m == 0:
            return
        n_ind = self.train_scaled_.shape[0]
        if self._buffer.size < m * n_ind:
            self._buffer = np.empty(m * n_ind, dtype=self._buffer.dtype)
            self._product = np.empty(m * n_ind, dtype=self._buffer.dtype)
        ks = self._buffer[: m * n_ind].reshape(m, n_ind)
        rbf_cross_into(xq, self.inv_lengthscales_, self.train_scaled_, self.params.signal_var, ks)
        np.dot(ks, self.w_, out=out_mean)

    def predict_mean(self, xq: np.ndarray) -> np.ndarray:
        """Allocating wrapper around ``predict_mean_into``."""
        return allocating_predict_mean(self, xq, self.train_scaled_.shape[1], self.w_.shape[1])

    def predict(self, xq: np.ndarray, include_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Allocating convenience wrapper around ``predict_into``."""
        return allocating_predict(self, xq, self.train_scaled_.shape[1], self.w_.shape[1], include_noise)
