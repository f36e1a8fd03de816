"""Cholesky factorisation with adaptive jitter, and allocation-free triangular solves.

A kernel matrix that is positive definite in exact arithmetic can fail to factor in floating
point (near-duplicate inputs, tiny noise). Rather than a fixed large jitter, which biases every
prediction, we start from the requested one and grow it tenfold until the factorisation succeeds
(the GPy / GPflow practice), and report what was used.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.linalg import blas


def cholesky_jittered(k: np.ndarray, jitter: float, max_jitter: float) -> tuple[np.ndarray, float]:
    """Lower factor of ``k + jitter * I`` in Fortran order, with the jitter actually added.

    ``k`` is validated by the caller, so ``check_finite`` is off. Raises ``np.linalg.LinAlgError``
    with advice when even ``max_jitter`` does not make the matrix factorable.
    """
    scale = float(np.mean(np.diag(k))) if k.shape[0] else 1.0
    added = jitter
    while True:
        try:
            shifted = k + (added * scale) * np.eye(k.shape[0], dtype=k.dtype) if added > 0 else k
            lower = scipy.linalg.cholesky(shifted, lower=True, check_finite=False)
            return np.asfortranarray(lower), added
        except np.linalg.LinAlgError:
            if added >= max_jitter:
                raise np.linalg.LinAlgError(
                    f"kernel matrix not positive definite even with relative jitter {added:g}; "
                    "remove duplicate training inputs or raise the noise variance / max_jitter"
                ) from None
            added = max(added * 10.0, 1e-12)


def trsm_lower_inplace(lower: np.ndarray, rhs_f: np.ndarray, transpose: bool = False) -> None:
    """Solve ``lower @ x = rhs_f`` (or ``lower.T @ x = rhs_f``) in place; ``rhs_f`` must be
    Fortran-contiguous (no copy is made)."""
    fn = blas.dtrsm if lower.dtype == np.float64 else blas.strsm
    fn(1.0, lower, rhs_f, side=0, lower=1, trans_a=int(transpose), diag=0, overwrite_b=1)


def cho_solve(lower: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """K^-1 rhs from the lower factor (R&W Alg. 2.1 line 3: alpha = L^T \\ (L \\ y))."""
    return scipy.linalg.cho_solve((lower, True), rhs, check_finite=False)


def symmetric_product_into(sym_f: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """out = rows @ sym for a symmetric Fortran-ordered ``sym`` and C-ordered (m, n) ``rows``, no copies.

    One row is ``dsymv`` (reads one triangle: the memory-bound floor); more rows are ``dsymm`` on the
    transposed (Fortran-ordered) views, out^T = sym @ rows^T.
    """
    single = sym_f.dtype == np.float32
    if rows.shape[0] == 1:
        (blas.ssymv if single else blas.dsymv)(1.0, sym_f, rows[0], y=out[0], overwrite_y=1, lower=1)
    else:
        (blas.ssymm if single else blas.dsymm)(1.0, sym_f, rows.T, c=out.T, overwrite_c=1, lower=1)
