"""Counter-based random numbers for numba kernels, one state word per tracker.

splitmix64 (Steele, Lea and Flood 2014) gives each tracker its own reproducible stream without
touching numba's global generator, so two trackers with the same seed produce the same beliefs
whatever else runs in the process. Normals come in pairs from Marsaglia's polar method. A
tracker's state is ``layout.new_state(seed)`` (plain Python: no numba needed to make one).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)


@njit(cache=True)
def next_u64(state: np.ndarray) -> np.uint64:
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True)
def uniform(state: np.ndarray) -> float:
    """Uniform on the open interval (0, 1): 53 random bits, offset by half a step so log() is safe."""
    return ((next_u64(state) >> _S11) + 0.5) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def normal_pair(state: np.ndarray) -> tuple[float, float]:
    """Two independent standard normals (Marsaglia's polar method: no sine or cosine, 1.27 tries)."""
    while True:
        u = 2.0 * uniform(state) - 1.0
        v = 2.0 * uniform(state) - 1.0
        s = u * u + v * v
        if 0.0 < s < 1.0:
            f = math.sqrt(-2.0 * math.log(s) / s)
            return u * f, v * f
