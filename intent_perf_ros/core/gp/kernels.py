"""Squared-exponential (RBF) kernel with one lengthscale per input dimension (ARD).

k(x, x') = sf2 * exp(-0.5 * sum_d ((x_d - x'_d) / l_d)^2)   (Rasmussen & Williams eq. 5.1 / 4.9)

The hot path works on inputs already divided by their lengthscales, so a kernel entry costs one
squared distance and one ``exp``; the numba loops (``loops``) write into caller-owned buffers.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from intent_perf_ros.core import aot

# The GP's numba loops (``loops``): compiled ahead of time by make (core/aot.py: no numba in this process), else JIT.
_LOOPS = aot.load(aot.GP_KERNELS)
# Loops whose arrays take the model's dtype; ``loops`` compiles each for float64 and, as ``name_f4``, float32.
_DTYPE_LOOPS = ("features_into", "velocity_changes_into", "compose_into", "scaled_sq_dist_into",
                "variance_from_solve_into", "quad_variance_into", "drop_first_into", "append_into", "combine_into")
_F8 = SimpleNamespace(**{name: getattr(_LOOPS, name) for name in _DTYPE_LOOPS})
_F4 = SimpleNamespace(**{name: getattr(_LOOPS, name + "_f4") for name in _DTYPE_LOOPS})
_BY_DTYPE = {np.dtype(np.float64): _F8, "float64": _F8, np.float64: _F8,
             np.dtype(np.float32): _F4, "float32": _F4, np.float32: _F4}
all_finite = _LOOPS.all_finite  # float64 histories only


def gp_loops(dtype) -> SimpleNamespace:
    """The loops of ``core.gp.loops`` for model arrays of ``dtype`` ("float64"/"float32" or the numpy dtype).

    Compiled ahead of time they check no argument types: every array a loop's signature gives the model
    dtype must have exactly this dtype (``ExactGP``, ``OnlineGP``, ``SparseGP`` and the predictor keep
    their buffers so); the others are float64 or int64 whatever the model dtype.
    """
    return _BY_DTYPE[dtype]


def rbf_cross_into(queries: np.ndarray, inv_lengthscales: np.ndarray, train_scaled: np.ndarray, signal_var: float,
                   out: np.ndarray) -> None:
    """out[i, j] = k(queries[i], train[j]) for the first ``queries.shape[0]`` rows of ``out``.

    All four arrays C-contiguous, of the model dtype (that of ``out``). Distances in numba, the exponential by
    numpy's SIMD loop: numba calls the scalar libm ``exp`` per entry, which made the whole kernel
    2.3x slower for 100 queries x 300 inducing points (423 vs 183 us measured); the same at one
    query. Allocates nothing.
    """
    _BY_DTYPE[out.dtype].scaled_sq_dist_into(queries, inv_lengthscales, train_scaled, out)
    block = out[: queries.shape[0]]
    np.multiply(block, -0.5, out=block)
    np.exp(block, out=block)
    np.multiply(block, signal_var, out=block)


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

    def same_as(self, other: RBFParams) -> bool:
        """Equal values (a stored model's parameters are copies of the grid's, not the same objects)."""
        return (self.signal_var == other.signal_var and self.noise_var == other.noise_var
                and np.array_equal(self.lengthscales, other.lengthscales))

    @classmethod
    def from_log(cls, theta: np.ndarray) -> RBFParams:
        return cls(np.exp(theta[:-2]), float(np.exp(theta[-2])), float(np.exp(theta[-1])))

    def __repr__(self) -> str:
        return (
            f"RBFParams(lengthscales={np.array2string(self.lengthscales, precision=3)}, "
            f"signal_var={self.signal_var:.4g}, noise_var={self.noise_var:.4g})"
        )
