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

import numba
import numpy as np


@numba.njit(cache=True)
def _append(raw, heads, counts, grid_counts, slots, t, xy, n, max_speed, jumps):  # pragma: no cover - compiled
    ring = raw.shape[1]
    for i in range(n):
        s = slots[i]
        h = heads[s]
        if counts[s] > 0:  # an id whose position jumps faster than anyone walks is a new person
            last = (h - 1) % ring
            dt = t - raw[s, last, 0]
            dist = np.hypot(xy[i, 0] - raw[s, last, 1], xy[i, 1] - raw[s, last, 2])
            if dist > max_speed * max(dt, 1e-3):
                counts[s] = 0
                grid_counts[s] = -1
                jumps[0] += 1
        raw[s, h, 0] = t
        raw[s, h, 1] = xy[i, 0]
        raw[s, h, 2] = xy[i, 1]
        heads[s] = (h + 1) % ring
        if counts[s] < ring:
            counts[s] += 1


@numba.njit(cache=True)
def _append_grid(grid, grid_counts, grid_last, prev, slots, t, xy, n, step_dt, pending, pending_n):  # pragma: no cover
    """Interpolate each track onto the grid k*step_dt; copy completed windows into ``pending``."""
    window = grid.shape[1]
    for i in range(n):
        s = slots[i]
        k_now = np.int64(np.floor(t / step_dt))
        if grid_counts[s] < 0:  # first observation of this slot: start the grid here
            grid_last[s] = k_now
            grid_counts[s] = 0
        else:
            t0, x0, y0 = prev[s, 0], prev[s, 1], prev[s, 2]
            for k in range(grid_last[s] + 1, k_now + 1):
                tk = k * step_dt
                w = (tk - t0) / (t - t0) if t > t0 else 1.0
                c = grid_counts[s]
                if c == window:  # shift left by one: windows overlap by window-1 samples
                    for j in range(window - 1):
                        grid[s, j, 0] = grid[s, j + 1, 0]
                        grid[s, j, 1] = grid[s, j + 1, 1]
                    c -= 1
                grid[s, c, 0] = x0 + w * (xy[i, 0] - x0)
                grid[s, c, 1] = y0 + w * (xy[i, 1] - y0)
                grid_counts[s] = c + 1
                if c + 1 == window and pending_n[0] < pending.shape[0]:
                    p = pending_n[0]
                    for j in range(window):
                        pending[p, j, 0] = grid[s, j, 0]
                        pending[p, j, 1] = grid[s, j, 1]
                    pending_n[0] = p + 1
            if k_now > grid_last[s]:
                grid_last[s] = k_now
        prev[s, 0] = t
        prev[s, 1] = xy[i, 0]
        prev[s, 2] = xy[i, 1]


@numba.njit(cache=True)
def _resample(raw, heads, counts, slots, vxy, n, step_dt, out):  # pragma: no cover - compiled
    ring = raw.shape[1]
    obs = out.shape[1]
    for i in range(n):
        s = slots[i]
        c = counts[s]
        newest = (heads[s] - 1) % ring
        t_new = raw[s, newest, 0]
        oldest = (heads[s] - c) % ring
        j = newest  # walks back monotonically as target times decrease
        back = 0
        for k in range(obs - 1, -1, -1):
            tk = t_new - (obs - 1 - k) * step_dt
            while back < c - 1 and raw[s, j, 0] > tk:
                j = (j - 1) % ring
                back += 1
            if raw[s, j, 0] > tk or c == 1:  # before the first observation: constant velocity backwards
                t0 = raw[s, oldest, 0]
                out[i, k, 0] = raw[s, oldest, 1] - vxy[i, 0] * (t0 - tk)
                out[i, k, 1] = raw[s, oldest, 2] - vxy[i, 1] * (t0 - tk)
            elif back == 0:
                out[i, k, 0] = raw[s, j, 1]
                out[i, k, 1] = raw[s, j, 2]
            else:
                nxt = (j + 1) % ring
                t0 = raw[s, j, 0]
                t1 = raw[s, nxt, 0]
                w = (tk - t0) / (t1 - t0) if t1 > t0 else 1.0
                out[i, k, 0] = raw[s, j, 1] + w * (raw[s, nxt, 1] - raw[s, j, 1])
                out[i, k, 1] = raw[s, j, 2] + w * (raw[s, nxt, 2] - raw[s, j, 2])


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
        self._slot_of: dict[int, int] = {}
        self._id_of = np.full(capacity, -1, dtype=np.int64)
        self._free = list(range(capacity - 1, -1, -1))
        self.slots = np.zeros(capacity, dtype=np.int64)
        self.evictions = 0
        self.timeouts = 0
        self.out_of_order = 0

    def __len__(self) -> int:
        return len(self._slot_of)

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
        """
        self._expire(t)
        for i in range(n):
            self.slots[i] = self._slot_for(int(ids[i]), self.slots[:i])
        fresh = self._last_seen[self.slots[:n]] < t
        if not fresh.all():
            self.out_of_order += int(n - fresh.sum())
            order = np.flatnonzero(fresh)
            fresh_slots = self.slots[order]
            _append(self._raw, self._heads, self._counts, self._grid_counts, fresh_slots, t, xy[order], len(order),
                    self.max_speed, self._jumps)
            _append_grid(self._grid, self._grid_counts, self._grid_last, self._prev, fresh_slots, t,
                         xy[order], len(order), self.step_dt, self._pending, self._pending_n)
        else:
            _append(self._raw, self._heads, self._counts, self._grid_counts, self.slots, t, xy, n, self.max_speed,
                    self._jumps)
            _append_grid(self._grid, self._grid_counts, self._grid_last, self._prev, self.slots, t, xy, n,
                         self.step_dt, self._pending, self._pending_n)
        self._last_seen[self.slots[:n]] = np.maximum(self._last_seen[self.slots[:n]], t)
        return n

    def history(self, vxy: np.ndarray, n: int, out: np.ndarray) -> None:
        """Write the resampled histories of the humans of the last ``observe`` into ``out[:n]``."""
        _resample(self._raw, self._heads, self._counts, self.slots, vxy, n, self.step_dt, out)

    def take_windows(self) -> np.ndarray:
        """Completed training windows since the last call (a view valid until the next observe)."""
        count = int(self._pending_n[0])
        self._pending_n[0] = 0
        return self._pending[:count]

    def _slot_for(self, track_id: int, claimed: np.ndarray) -> int:
        """The slot of ``track_id``, taking a free one or evicting the stalest one not ``claimed``
        by an earlier human of the same message (a new slot's last_seen is -inf until observed)."""
        slot = self._slot_of.get(track_id)
        if slot is not None:
            return slot
        if not self._free:
            candidates = self._last_seen.copy()
            candidates[claimed] = np.inf
            victim = int(np.argmin(candidates))
            self._release(victim)
            self.evictions += 1
        slot = self._free.pop()
        self._slot_of[track_id] = slot
        self._id_of[slot] = track_id
        self._heads[slot] = 0
        self._counts[slot] = 0
        self._grid_counts[slot] = -1
        self._last_seen[slot] = -np.inf
        return slot

    def _expire(self, t: float) -> None:
        stale = np.flatnonzero((self._id_of >= 0) & (self._last_seen < t - self.timeout_s))
        for slot in stale:
            self._release(int(slot))
            self.timeouts += 1

    def _release(self, slot: int) -> None:
        del self._slot_of[int(self._id_of[slot])]
        self._id_of[slot] = -1
        self._last_seen[slot] = -np.inf
        self._free.append(slot)
