"""Systematic resampling (Kitagawa 1996; Douc, Cappé and Moulines 2005).

One uniform draw u ~ U[0, 1/n) places n equally spaced pointers u + j/n on the cumulative
weights; particle i is copied once per pointer in its interval. Each particle is copied
n * w_i times in expectation (unbiased) with the lowest variance of the standard schemes.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def systematic_indices(weights: np.ndarray, u: float, out: np.ndarray) -> None:
    """Write ``len(out)`` indices into ``weights`` (normalised) using the offset ``u`` in [0, 1)."""
    n = out.shape[0]
    step = 1.0 / n
    target = u * step
    cum = 0.0
    j = 0
    last = weights.shape[0] - 1
    for i in range(weights.shape[0]):
        cum += weights[i]
        while j < n and target < cum:
            out[j] = i
            j += 1
            target += step
    # Rounding can leave the cumulative sum a hair under 1; the remaining pointers fall on the last particle.
    while j < n:
        out[j] = last
        j += 1


def systematic_indices_numpy(weights: np.ndarray, u: float, n: int | None = None) -> np.ndarray:
    """The same scheme in plain numpy (cumsum + searchsorted): the benchmark's reference."""
    n = weights.shape[0] if n is None else n
    cum = np.cumsum(weights)
    cum[-1] = max(cum[-1], 1.0)
    return np.searchsorted(cum, (u + np.arange(n)) / n, side="right")


@njit(cache=True)
def allocate_counts(masses: np.ndarray, total: int, floor: int, u: float, out: np.ndarray) -> None:
    """Split ``total`` particles over hypotheses: ``floor`` each, the rest systematically by mass.

    The remainder R = total - H * floor is shared by the same systematic scheme applied to the
    masses, so each hypothesis gets floor + R * m_k particles in expectation (unbiased) and the
    counts always sum to ``total``. ``masses`` must sum to 1.
    """
    h = masses.shape[0]
    rest = total - h * floor
    cum = 0.0
    prev = 0
    for k in range(h):
        cum += masses[k] * rest
        upto = int(np.floor(cum + u)) if k < h - 1 else rest
        upto = min(max(upto, prev), rest)
        out[k] = floor + upto - prev
        prev = upto
