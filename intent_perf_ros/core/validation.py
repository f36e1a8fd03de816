"""Input repair rules shared by the nodes: what is dropped, what is repaired, and how it is counted.

Rules (each applies per human of a TrackedHumans message):
- non-finite position, or one farther than ``max_abs_position`` from the origin on an axis (no map
  is that large; such values are tracker garbage and would overflow squared distances downstream):
  the human is dropped (nothing trustworthy is left to predict from);
- a velocity that is non-finite or faster than ``max_speed``: repaired to zero (the predictor's
  history still carries the motion) and counted as repaired;
- a repeated id within one message: the later entry wins (a tracker that repeats an id sends its
  newest estimate last), earlier ones are dropped;
- more humans than the capacity: the first ``capacity`` (tracker order) are kept, the rest dropped.

Humans that belong to another shard (``core.sharding``) are skipped without being counted.
"""
from __future__ import annotations

import numpy as np

from intent_perf_ros.core import aot

_kernels = aot.load(aot.INPUT_KERNELS)  # ``sanitize``, compiled ahead of time by make (core/aot.py), else JIT
# A TrackedHumans message read from its serialized bytes (writable uint8 buffer) into the sanitizer's inputs;
# returns a ``core.cdr`` code. See ``input_kernels.read_tracked_humans``.
read_tracked_humans = _kernels.read_tracked_humans


class HumanSanitizer:
    """Applies the rules above in place; the counters array is preallocated and reused."""

    def __init__(self, capacity: int, shard_index: int = 0, shard_count: int = 1, max_abs_position: float = 1e5,
                 max_speed: float = 10.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not 0 <= shard_index < max(shard_count, 1):
            raise ValueError(f"need 0 <= shard_index ({shard_index}) < shard_count ({shard_count})")
        self.capacity = capacity
        self.shard_index, self.shard_count = shard_index, max(shard_count, 1)
        self.max_abs_position, self.max_speed = max_abs_position, max_speed
        self._out = np.zeros(3, dtype=np.int64)

    def warmup(self) -> None:
        ids = np.array([1, 1], dtype=np.int64)
        xy = np.zeros((2, 2))
        self.apply(ids, xy, xy.copy(), 2)

    def apply(self, ids: np.ndarray, xy: np.ndarray, vxy: np.ndarray, n: int) -> tuple[int, int, int]:
        """Compact the valid rows of the first ``n`` to the front; return ``(n_valid, dropped, repaired)``.

        Works in place on int64 ``ids`` (M,) and float64 ``xy``, ``vxy`` (M, 2), M >= n.
        """
        if ids.dtype != np.int64 or xy.dtype != np.float64 or vxy.dtype != np.float64 or ids.ndim != 1 \
                or xy.ndim != 2 or vxy.ndim != 2 or xy.shape[1] != 2 or vxy.shape[1] != 2 \
                or min(len(ids), len(xy), len(vxy)) < n:
            raise TypeError("apply() works in place on int64 ids (M,) and float64 xy, vxy (M, 2) with M >= n")
        _kernels.sanitize(ids, xy, vxy, n, self.capacity, self.shard_index, self.shard_count, self.max_abs_position,
                          self.max_speed, self._out)
        return int(self._out[0]), int(self._out[1]), int(self._out[2])


class StampCheck:
    """Rules for observation stamps (seconds on the node's clock); each verdict is counted by the caller.

    - zero stamp (the publisher never set it): repaired with the receive time;
    - more than ``max_future_s`` ahead of the receive time (clock mismatch): dropped;
    - older than ``max_age_s`` at receipt (stale data, e.g. a stalled tracker or a replayed bag):
      dropped - acting on it would steer around where people were, not where they are;
    - not newer than the last accepted stamp (out of order, or a repeated stamp = zero time step):
      dropped, the newer state is already known.
    """

    OK, REPAIRED, FUTURE, STALE, OUT_OF_ORDER = range(5)
    REASONS = ("ok", "zero stamp repaired with receive time", "stamp in the future", "stamp too old",
               "stamp not newer than the previous one")

    def __init__(self, max_future_s: float = 0.5, max_age_s: float = 2.0) -> None:
        if max_future_s < 0.0 or max_age_s <= 0.0:
            raise ValueError("max_future_s must be >= 0 and max_age_s > 0 seconds")
        self.max_future_s, self.max_age_s = max_future_s, max_age_s
        self.last_s = -np.inf

    def check(self, stamp_s: float, now_s: float) -> tuple[int, float]:
        """Return ``(verdict, stamp to use)``; the stamp is remembered when the verdict accepts it."""
        verdict = self.OK
        if stamp_s == 0.0:
            verdict, stamp_s = self.REPAIRED, now_s
        elif stamp_s > now_s + self.max_future_s:
            return self.FUTURE, stamp_s
        elif stamp_s < now_s - self.max_age_s:
            return self.STALE, stamp_s
        if stamp_s <= self.last_s:
            return self.OUT_OF_ORDER, stamp_s
        self.last_s = stamp_s
        return verdict, stamp_s
