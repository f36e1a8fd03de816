"""Per-human observation histories in preallocated slots.

Each tracked id owns a slot holding a ring of raw observations ``(t, x, y)``. From it the
predictor's input is resampled: ``obs_steps`` positions ``step_dt`` apart ending at the newest
observation (linear interpolation; before the first observation, extrapolated backwards with the
current velocity, i.e. a constant-velocity prior for new tracks). The slot also samples the track
on the absolute time grid ``k * step_dt``; every completed run of ``window`` grid samples is a
training window for online learning (the past it saw and the future that actually happened).

When every slot is taken, a new id evicts the slot seen longest ago (counted): on a robot the
humans that appeared last are the ones that matter. An id whose position jumps faster than
``max_speed`` (a tracker that reused an id, or swapped two) restarts its history (counted).
"""
from __future__ import annotations

import numpy as np

from intent_perf_ros.core import aot

# The loops (append, append_grid, resample) compiled ahead of time by make (core/aot.py: then no numba
# in this process), else the JIT module.
_kernels = aot.load(aot.INPUT_KERNELS)


class TrackHistory:
    """Slots of raw observation rings plus the grid sampler for online-learning windows."""

    def __init__(self, capacity: int = 64, ring: int = 128, obs_steps: int = 8, step_dt: float = 0.4,
                 window: int = 20, timeout_s: float = 2.0, max_pending: int = 256, max_speed: float = 4.0) -> None:
        if capacity < 1 or ring < 2 or obs_steps < 1 or window < 2:
            raise ValueError("capacity >= 1, ring >= 2, obs_steps >= 1 and window >= 2 are required")
        if step_dt <= 0.0:
            raise ValueError(f"step_dt must be positive, got {step_dt}")
        self.capacity, self.obs_steps, self.step_dt, self.timeout_s = capacity, obs_steps, step_dt, timeout_s
        self.max_speed = max_speed
        self._jumps = np.zeros(1, dtype=np.int64)
        self._raw = np.zeros((capacity, ring, 3))
        self._heads = np.zeros(capacity, dtype=np.int64)
        self._counts = np.zeros(capacity, dtype=np.int64)
        self._grid = np.zeros((capacity, window, 2))
        self._grid_counts = np.full(capacity, -1, dtype=np.int64)
        self._grid_last = np.zeros(capacity, dtype=np.int64)
        self._prev = np.zeros((capacity, 3))
        self._last_seen = np.full(capacity, -np.inf)
        self._pending = np.zeros((max_pending, window, 2))
        self._pending_n = np.zeros(1, dtype=np.int64)
        self._id_of = np.full(capacity, -1, dtype=np.int64)  # -1: a free slot
        self.slots = np.zeros(capacity, dtype=np.int64)
        self._fresh_slots = np.zeros(capacity, dtype=np.int64)
        self._fresh_xy = np.zeros((capacity, 2))
        self._counters = np.zeros(3, dtype=np.int64)  # input_kernels.TIMEOUTS, EVICTIONS, OUT_OF_ORDER

    def __len__(self) -> int:
        return int(np.count_nonzero(self._id_of >= 0))

    @property
    def timeouts(self) -> int:
        """Slots freed because their id was not seen for ``timeout_s``."""
        return int(self._counters[0])

    @property
    def evictions(self) -> int:
        """Slots taken from the stalest track because every slot was in use."""
        return int(self._counters[1])

    @property
    def out_of_order(self) -> int:
        """Observations not newer than their track's newest one (ignored; the human is still predicted)."""
        return int(self._counters[2])

    @property
    def jumps(self) -> int:
        """Histories restarted because an id's position jumped faster than ``max_speed``."""
        return int(self._jumps[0])

    def warmup(self) -> None:
        """Compile the kernels on a scratch history so the first real message pays nothing."""
        scratch = TrackHistory(capacity=2, ring=4, obs_steps=self.obs_steps, step_dt=self.step_dt,
                               window=self._grid.shape[1], max_pending=2)
        ids = np.array([1], dtype=np.int64)
        xy = np.zeros((1, 2))
        out = np.zeros((1, self.obs_steps, 2))
        for k in range(3):
            scratch.observe(k * self.step_dt, ids, xy, 1)
            scratch.history(xy, 1, out)
        scratch.take_windows()

    def observe(self, t: float, ids: np.ndarray, xy: np.ndarray, n: int) -> int:
        """Record the first ``n`` humans observed at time ``t`` (s); fills ``self.slots[:n]``.

        Observations older than a slot's newest one are ignored for that human (counted in
        ``out_of_order``) and its slot is still reported so it gets a prediction. Returns ``n``.
        One compiled call (``input_kernels.observe``): per-human slot lookups in Python and a dozen
        small numpy calls cost 42 us back to back and 150 us after 33 ms idle for 10 humans.
        """
        if not 0 <= n <= self.capacity:
            raise ValueError(f"n must be in [0, {self.capacity}] (the capacity), got {n}")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.shape[0] < n:
            raise ValueError(f"ids must be a 1-D array of at least {n} ids, got shape {ids.shape}")
        _kernels.observe(float(t), ids, _float64_rows(xy, n, "xy"), n, self.timeout_s, self.max_speed, self._id_of,
                         self._last_seen, self.slots, self._fresh_slots, self._fresh_xy, self._raw, self._heads,
                         self._counts, self._grid_counts, self._grid, self._grid_last, self._prev, self.step_dt,
                         self._pending, self._pending_n, self._jumps, self._counters)
        return n

    def history(self, vxy: np.ndarray, n: int, out: np.ndarray) -> None:
        """Write the resampled histories of the humans of the last ``observe`` into ``out[:n]``, a float64
        (>= n, obs_steps, 2) array."""
        if out.dtype != np.float64 or out.ndim != 3 or out.shape[0] < n or out.shape[1:] != (self.obs_steps, 2):
            raise TypeError(f"out must be a float64 (>= {n}, {self.obs_steps}, 2) array, got {out.dtype} {out.shape}")
        _kernels.resample(self._raw, self._heads, self._counts, self.slots, _float64_rows(vxy, n, "vxy"), n,
                          self.step_dt, out)

    def take_windows(self) -> np.ndarray:
        """Completed training windows since the last call (a view valid until the next observe)."""
        count = int(self._pending_n[0])
        self._pending_n[0] = 0
        return self._pending[:count]


def _float64_rows(a: np.ndarray, n: int, name: str) -> np.ndarray:
    """``a`` as a float64 (M >= n, 2) array (no copy when it is one): the compiled loops check no types."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < n:
        raise ValueError(f"{name} must be (M >= {n}, 2), got shape {a.shape}")
    return a
