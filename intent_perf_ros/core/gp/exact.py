r"""Exact GP regression with a cached Cholesky factor and an allocation-free batched predict.

Multi-output: all P output columns share one kernel, so one factor ``L`` serves them all (R&W
Alg. 2.1 with Y in place of y). We cache ``beta = L^-1 Y`` rather than ``alpha = L^-T beta``: the
predict solves ``v = L^-1 k_*`` for the variance anyway, and ``mean = v^T beta`` then costs no extra
pass over the factor, while ``beta`` (unlike ``alpha``) can be updated incrementally by the online
model. The predictive variance is the same for every column; callers scale it per output.

Two prediction paths (``predict_with``):
* "inverse" (default): K^-1 and alpha = K^-1 Y are formed once at fit, and a small batch costs
  one symmetric matrix-vector product (``dsymv``; ``dsymm`` for a few queries): var = k** - k^T K^-1 k.
  One query is then memory-bound at the floor (reading the N x N triangle once), where a
  triangular solve is latency-bound and ~3x slower. Batches above ``INVERSE_MAX_QUERIES`` use the
  factor (a triangular solve needs half the flops of ``dsymm``). Costs a second N x N array;
  rounding error grows with cond(K), which the noise variance and jitter bound.
* "solve": v = L \ k_* per query (R&W Alg. 2.1 lines 4-6); used by the online model, whose
  factor changes incrementally.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from intent_perf_ros.core.gp.kernels import RBFParams, gp_loops, rbf, rbf_cross_into
from intent_perf_ros.core.gp.linalg import (
    cho_solve,
    cholesky_jittered,
    symmetric_product_into,
    trsm_lower_inplace,
)

INVERSE_MAX_QUERIES = 16  # above this batch size the compute-bound triangular solve wins


def check_xy(x: np.ndarray, y: np.ndarray | None, dim: int | None = None) -> None:
    """Raise a ValueError that says how to fix malformed training or query data."""
    if x.ndim != 2:
        raise ValueError(f"inputs must be 2-D (n_samples, n_features), got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"inputs have {x.shape[1]} features but the model was fitted with {dim}")
    if not np.all(np.isfinite(x)):
        raise ValueError("inputs contain NaN or inf; drop or repair those rows before fitting")
    if y is not None:
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"targets must be (n_samples, n_outputs) matching inputs {x.shape}, got {y.shape}"
            )
        if not np.all(np.isfinite(y)):
            raise ValueError("targets contain NaN or inf; drop those rows before fitting")


class ExactGP:
    """Exact GP with an ARD RBF kernel; ``predict_into`` writes into caller buffers.

    Parameters
    ----------
    params : kernel hyperparameters (kept fixed; see ``hyperopt.fit_hyperparameters``).
    jitter, max_jitter : relative diagonal jitter tried first and at most (see ``linalg``).
    dtype : "float64" (default) or "float32".
    """

    def __init__(
        self,
        params: RBFParams,
        jitter: float = 1e-10,
        max_jitter: float = 1e-2,
        dtype: str = "float64",
        predict_with: str = "inverse",
    ) -> None:
        self.params = params
        self.jitter = jitter
        self.max_jitter = max_jitter
        self.dtype = dtype
        self.predict_with = predict_with

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray) -> ExactGP:
        """Factor K(X, X) + noise I and cache L and alpha (R&W Alg. 2.1 lines 2-3)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        check_xy(x, y)
        self.x_train_ = np.ascontiguousarray(x)
        self.y_train_ = np.ascontiguousarray(y)
        self._factor()
        return self

    def _factor(self) -> None:
        dt = np.dtype(self.dtype)
        p = self.params
        k = rbf(self.x_train_, self.x_train_, p.lengthscales, p.signal_var)
        k[np.diag_indices_from(k)] += p.noise_var
        lower, self.jitter_ = cholesky_jittered(k.astype(dt, copy=False), self.jitter, self.max_jitter)
        self.L_ = lower
        self.beta_ = np.ascontiguousarray(
            scipy.linalg.solve_triangular(lower, self.y_train_.astype(dt), lower=True, check_finite=False)
        )
        self._set_inverse()
        self._set_scaled()

    def _set_inverse(self) -> None:
        if self.predict_with not in ("inverse", "solve"):
            raise ValueError(f"predict_with must be 'inverse' or 'solve', got {self.predict_with!r}")
        if self.predict_with == "inverse":
            n = self.L_.shape[0]
            k_inv = cho_solve(self.L_, np.eye(n, dtype=self.L_.dtype))
            self.k_inv_ = np.asfortranarray(0.5 * (k_inv + k_inv.T))
            self.alpha_c_ = np.ascontiguousarray(k_inv @ self.y_train_.astype(self.L_.dtype))

    def _set_scaled(self) -> None:
        dt = np.dtype(self.dtype)
        self.inv_lengthscales_ = (1.0 / self.params.lengthscales).astype(dt)
        self.train_scaled_ = np.ascontiguousarray(self.x_train_ * self.inv_lengthscales_, dtype=dt)
        self._buffer = np.empty(0, dtype=dt)
        self._product = np.empty(0, dtype=dt)

    @property
    def n_train(self) -> int:
        return self.x_train_.shape[0] if hasattr(self, "x_train_") else 0

    # -- prediction ------------------------------------------------------------------------------
    def reserve(self, max_queries: int) -> None:
        """Preallocate the (max_queries, N) cross-kernel workspace and compile the numba loops."""
        dt = np.dtype(self.dtype)
        need = max(max_queries, 1) * max(self._capacity(), 1)
        if self._buffer.size < need:
            self._buffer = np.empty(need, dtype=dt)
            self._product = np.empty(need if self.predict_with == "inverse" else 0, dtype=dt)
        probe_q = np.zeros((1, self.train_scaled_.shape[1]), dtype=dt)
        self.predict_into(probe_q, np.empty((1, self.beta_.shape[1]), dt), np.empty(1, dt))

    def _capacity(self) -> int:
        return self.n_train

    def predict_into(
        self, xq: np.ndarray, out_mean: np.ndarray, out_var: np.ndarray, include_noise: bool = True
    ) -> None:
        """Posterior mean (M, P) and variance (M,) of the first M = len(xq) queries, in place.

        ``xq`` must already be validated, C-contiguous and of the model dtype, and so must the outputs
        (the compiled loops check no types). Variance is that of an observation when ``include_noise``
        (latent variance + noise), clipped at zero.
        """
        m = xq.shape[0]
        if m == 0:
            return
        n = self.n_train
        p = self.params
        if self._buffer.size < m * n:
            self._buffer = np.empty(m * n, dtype=self._buffer.dtype)
            self._product = np.empty(m * n if self.predict_with == "inverse" else 0, dtype=self._buffer.dtype)
        ks = self._buffer[: m * n].reshape(m, n)
        rbf_cross_into(xq, self.inv_lengthscales_, self.train_scaled_, p.signal_var, ks)
        prior = p.signal_var + (p.noise_var if include_noise else 0.0)
        if self.predict_with == "inverse" and m <= INVERSE_MAX_QUERIES:
            kq = self._product[: m * n].reshape(m, n)
            np.dot(ks, self.alpha_c_, out=out_mean)  # mean = k_*^T K^-1 Y
            symmetric_product_into(self.k_inv_, ks, kq)  # kq = k_*^T K^-1
            gp_loops(ks.dtype).quad_variance_into(ks, kq, m, prior, out_var)  # var = k** - k_*^T K^-1 k_*
            return
        trsm_lower_inplace(self.L_, ks.T)  # R&W Alg. 2.1 line 5: v = L \ k_*, in place (ks.T is Fortran)
        np.dot(ks, self.beta_, out=out_mean)  # line 4: mean = k_*^T alpha = v^T (L^-1 Y)
        gp_loops(ks.dtype).variance_from_solve_into(ks.T, m, prior, out_var)  # line 6

    def predict(self, xq: np.ndarray, include_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Allocating convenience wrapper around ``predict_into`` (validates the queries)."""
        return allocating_predict(self, xq, self.x_train_.shape[1], self.beta_.shape[1], include_noise)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that fully define the fitted model (for the store)."""
        n = self.n_train
        return {
            "x_train": np.array(self.x_train_),
            "y_train": np.array(self.y_train_),
            "L": np.array(self.L_[:n, :n], order="F"),
            "beta": np.array(self.beta_[:n]),
            "jitter": np.array(self.jitter_),
        }

    def set_state(self, state: dict[str, np.ndarray]) -> ExactGP:
        """Restore a fitted model from ``state()`` without refactoring."""
        dt = np.dtype(self.dtype)
        self.x_train_ = np.ascontiguousarray(state["x_train"], dtype=np.float64)
        self.y_train_ = np.ascontiguousarray(state["y_train"], dtype=np.float64)
        self.L_ = np.asfortranarray(state["L"], dtype=dt)
        self.beta_ = np.ascontiguousarray(state["beta"], dtype=dt)
        self.jitter_ = float(state["jitter"])
        self._set_inverse()
        self._set_scaled()
        return self

    @property
    def alpha_(self) -> np.ndarray:
        """Weights K^-1 Y (R&W Alg. 2.1 line 3), from the cached beta."""
        n = self.n_train
        return scipy.linalg.solve_triangular(
            self.L_[:n, :n], self.beta_[:n], lower=True, trans=1, check_finite=False
        )

    def log_marginal_likelihood(self) -> float:
        """log p(Y | X) summed over output columns (R&W Alg. 2.1 line 8)."""
        n, n_out = self.y_train_.shape
        data_fit = float(np.sum(self.beta_[:n] ** 2))  # y^T K^-1 y = ||L^-1 y||^2
        log_det = 2.0 * float(np.sum(np.log(np.diag(self.L_[:n, :n]))))
        return -0.5 * data_fit - 0.5 * n_out * log_det - 0.5 * n * n_out * np.log(2.0 * np.pi)

    def loo_residuals(self) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out residuals (N, P) and predictive variances (N,) in closed form.

        R&W eq. 5.12: mu_-i = y_i - [K^-1 y]_i / [K^-1]_ii, var_-i = 1 / [K^-1]_ii. Used to
        calibrate variances on training data only.
        """
        n = self.n_train
        k_inv = cho_solve(self.L_[:n, :n], np.eye(n, dtype=self.L_.dtype))
        diag = np.diag(k_inv)
        return self.alpha_[:n] / diag[:, None], 1.0 / diag


def allocating_predict_mean(model, xq: np.ndarray, n_features: int, n_outputs: int) -> np.ndarray:
    """``predict_mean`` of the backends with an O(N) mean path: validate, allocate, ``predict_mean_into``."""
    xq = np.ascontiguousarray(xq, dtype=np.dtype(model.dtype))
    check_xy(xq, None, n_features)
    mean = np.empty((xq.shape[0], n_outputs), dtype=xq.dtype)
    model.predict_mean_into(xq, mean)
    return mean


def allocating_predict(model, xq: np.ndarray, n_features: int, n_outputs: int,
                       include_noise: bool) -> tuple[np.ndarray, np.ndarray]:
    """``predict`` of every GP backend: validate the queries, allocate the outputs, ``predict_into``."""
    xq = np.ascontiguousarray(xq, dtype=np.dtype(model.dtype))
    check_xy(xq, None, n_features)
    mean = np.empty((xq.shape[0], n_outputs), dtype=xq.dtype)
    var = np.empty(xq.shape[0], dtype=xq.dtype)
    model.predict_into(xq, mean, var, include_noise)
    return mean, var
