"""Squared-exponential (RBF) kernel with one lengthscale per input dimension (ARD).

k(x, x') = sf2 * exp(-0.5 * sum_d ((x_d - x'_d) / l_d)^2)   (Rasmussen & Williams eq. 5.1 / 4.9)

The hot path works on inputs already divided by their lengthscales, so a kernel entry costs one
squared distance and one ``exp``; the numba loops write into caller-owned buffers.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _scaled_sq_dist_into(queries, inv_lengthscales, train_scaled, out):  # pragma: no cover - compiled
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


def rbf_cross_into(queries: np.ndarray, inv_lengthscales: np.ndarray, train_scaled: np.ndarray, signal_var: float,
                   out: np.ndarray) -> None:
    """out[i, j] = k(queries[i], train[j]) for the first ``queries.shape[0]`` rows of ``out``.

    Distances in numba, the exponential by numpy's SIMD loop: numba calls the scalar libm ``exp`` per
    entry, which made the whole kernel 2.3x slower for 100 queries x 300 inducing points (423 vs
    183 us measured); the same at one query. Allocates nothing.
    """
    _scaled_sq_dist_into(queries, inv_lengthscales, train_scaled, out)
    block = out[: queries.shape[0]]
    np.multiply(block, -0.5, out=block)
    np.exp(block, out=block)
    np.multiply(block, signal_var, out=block)


@numba.njit(cache=True)
def variance_from_solve_into(v, m, prior_var, out):  # pragma: no cover - compiled
    """out[i] = max(prior_var - ||v[:, i]||^2, 0) with v = L^-1 k_* (R&W Alg. 2.1, line 6)."""
    n = v.shape[0]
    for i in range(m):
        acc = 0.0
        for j in range(n):
            acc += v[j, i] * v[j, i]
        value = prior_var - acc
        out[i] = value if value > 0.0 else 0.0


@numba.njit(cache=True)
def quad_variance_into(ks, kq, m, prior, out):  # pragma: no cover - compiled
    """out[i] = max(prior - ks[i] . kq[i], 0) with kq = ks Q (Q = K^-1, or Kmm^-1 - Sigma when sparse)."""
    for i in range(m):
        acc = 0.0
        for j in range(ks.shape[1]):
            acc += ks[i, j] * kq[i, j]
        value = prior - acc
        out[i] = value if value > 0.0 else 0.0


def rbf(a: np.ndarray, b: np.ndarray, lengthscales: np.ndarray, signal_var: float) -> np.ndarray:
    """Dense kernel matrix K(a, b) (allocating; for fitting, not the prediction path)."""
    sa = a / lengthscales
    sb = b / lengthscales
    sq = (sa * sa).sum(1)[:, None] + (sb * sb).sum(1)[None, :] - 2.0 * sa @ sb.T
    np.maximum(sq, 0.0, out=sq)
    return signal_var * np.exp(-0.5 * sq)


def rbf_with_grad(
    x: np.ndarray, lengthscales: np.ndarray, signal_var: float
) -> tuple[np.ndarray, np.ndarray]:
    """K(x, x) and dK/dlog(l_d) for each d, shape (d, n, n) (R&W eq. 5.9 applied to eq. 4.9)."""
    k = rbf(x, x, lengthscales, signal_var)
    scaled = x / lengthscales
    grads = np.empty((x.shape[1], x.shape[0], x.shape[0]))
    for d in range(x.shape[1]):
        diff = scaled[:, d][:, None] - scaled[:, d][None, :]
        # d/dlog l of exp(-0.5 (dx/l)^2) = (dx/l)^2 * exp(...)
        np.multiply(k, diff * diff, out=grads[d])
    return k, grads


class RBFParams:
    """Hyperparameters of an ARD RBF kernel plus Gaussian observation noise."""

    def __init__(self, lengthscales: np.ndarray, signal_var: float, noise_var: float) -> None:
        self.lengthscales = np.asarray(lengthscales, dtype=np.float64).ravel()
        self.signal_var = float(signal_var)
        self.noise_var = float(noise_var)
        if not (np.all(self.lengthscales > 0) and self.signal_var > 0 and self.noise_var >= 0):
            raise ValueError(
                "lengthscales and signal_var must be > 0 and noise_var >= 0; "
                f"got {self.lengthscales}, {self.signal_var}, {self.noise_var}"
            )

    def to_log(self) -> np.ndarray:
        """Unconstrained vector (log l_1..log l_d, log sf2, log sn2) the optimiser works on."""
        return np.concatenate([np.log(self.lengthscales), [np.log(self.signal_var), np.log(self.noise_var)]])

    @classmethod
    def from_log(cls, theta: np.ndarray) -> RBFParams:
        return cls(np.exp(theta[:-2]), float(np.exp(theta[-2])), float(np.exp(theta[-1])))

    def __repr__(self) -> str:
        return (
            f"RBFParams(lengthscales={np.array2string(self.lengthscales, precision=3)}, "
            f"signal_var={self.signal_var:.4g}, noise_var={self.noise_var:.4g})"
        )
