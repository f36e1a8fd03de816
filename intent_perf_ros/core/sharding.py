"""Which shard handles which human: a stable hash of the id, the same in every process and run.

Python's ``hash()`` of an int is the int itself (ids 0..N-1 would map round-robin, and a tracker
that numbers ids by parity would unbalance shards); the splitmix64 finaliser mixes all bits.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def shard_of(track_id: int, shard_count: int) -> int:
    """Shard index in ``[0, shard_count)`` of a human id (splitmix64 finaliser, Steele et al. 2014)."""
    if shard_count <= 1:
        return 0
    z = np.uint64(track_id) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z % np.uint64(shard_count))  # not int(): numba would type that as a float
