"""Compiled (numba) loops of the input side of gp_inference_node: ``tracks.TrackHistory``,
``validation.HumanSanitizer`` and ``validation.read_tracked_humans``.

Their Python classes take these loops through ``core.aot.load``: with the build of
``intent-perf build-kernels`` the node runs them without numba. Each loop has one explicit signature,
which is a contract once compiled ahead of time (no dtype or layout is checked then): ``[:, :]`` takes
any layout, ``[::1]`` only C-contiguous arrays (the classes' own buffers); the classes check or convert
what callers pass.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from intent_perf_ros.core.cdr import CDR_MALFORMED, CDR_OK, CDR_UNSUPPORTED
from intent_perf_ros.core.sharding import shard_of


# -- TrackHistory (tracks.py) ------------------------------------------------------------------------------
@njit("void(f8[:, :, ::1], i8[::1], i8[::1], i8[::1], i8[:], f8, f8[:, :], i8, f8, i8[::1])", cache=True)
def append(raw, heads, counts, grid_counts, slots, t, xy, n, max_speed, jumps):  # pragma: no cover - compiled
    """Append the observations xy[:n] at time t to the rings of slots[:n]; restart a slot whose position
    jumped faster than max_speed (counted in jumps[0])."""
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


@njit("void(f8[:, :, ::1], i8[::1], i8[::1], f8[:, ::1], i8[:], f8, f8[:, :], i8, f8, f8[:, :, ::1], i8[::1])",
      cache=True)
def append_grid(grid, grid_counts, grid_last, prev, slots, t, xy, n, step_dt, pending, pending_n):  # pragma: no cover
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


TIMEOUTS, EVICTIONS, OUT_OF_ORDER = 0, 1, 2  # observe's counters


@njit(
    "void(f8, i8[:], f8[:, :], i8, f8, f8, i8[::1], f8[::1], i8[::1], i8[::1], f8[:, ::1], f8[:, :, ::1], i8[::1], "
    "i8[::1], i8[::1], f8[:, :, ::1], i8[::1], f8[:, ::1], f8, f8[:, :, ::1], i8[::1], i8[::1], i8[::1])",
    cache=True,
)
def observe(t, ids, xy, n, timeout, max_speed, id_of, last_seen, slots, fresh_slots, fresh_xy, raw, heads, counts,
            grid_counts, grid, grid_last, prev, step_dt, pending, pending_n, jumps, counters):  # pragma: no cover
    """``TrackHistory.observe`` in one call: free the slots of ids unseen for over ``timeout``, find or take
    each human's slot (a free one, else evict the stalest not claimed earlier in this message), then
    append the observations newer than their slot's newest to the rings and the grid sampler."""
    cap = id_of.shape[0]
    for s in range(cap):
        if id_of[s] >= 0 and last_seen[s] < t - timeout:
            id_of[s] = -1
            last_seen[s] = -np.inf
            counters[TIMEOUTS] += 1
    for i in range(n):
        slot = -1
        for s in range(cap):
            if id_of[s] == ids[i]:
                slot = s
                break
        if slot < 0:
            for s in range(cap):
                if id_of[s] < 0:
                    slot = s
                    break
        if slot < 0:  # full: the stalest slot no earlier human of this message holds
            stalest = np.inf
            for s in range(cap):
                claimed = False
                for j in range(i):
                    if slots[j] == s:
                        claimed = True
                        break
                if not claimed and (slot < 0 or last_seen[s] < stalest):
                    slot, stalest = s, last_seen[s]
            counters[EVICTIONS] += 1
        if id_of[slot] != ids[i]:  # a new track in this slot
            id_of[slot] = ids[i]
            heads[slot] = 0
            counts[slot] = 0
            grid_counts[slot] = -1
            last_seen[slot] = -np.inf
        slots[i] = slot
    m = 0
    for i in range(n):
        if last_seen[slots[i]] < t:
            fresh_slots[m] = slots[i]
            fresh_xy[m, 0], fresh_xy[m, 1] = xy[i, 0], xy[i, 1]
            m += 1
        else:
            counters[OUT_OF_ORDER] += 1
    append(raw, heads, counts, grid_counts, fresh_slots, t, fresh_xy, m, max_speed, jumps)
    append_grid(grid, grid_counts, grid_last, prev, fresh_slots, t, fresh_xy, m, step_dt, pending, pending_n)
    for i in range(n):
        last_seen[slots[i]] = max(last_seen[slots[i]], t)


@njit("void(f8[:, :, ::1], i8[::1], i8[::1], i8[:], f8[:, :], i8, f8, f8[:, :, :])", cache=True)
def resample(raw, heads, counts, slots, vxy, n, step_dt, out):  # pragma: no cover - compiled
    """out[i] = the history of slot slots[i] resampled at obs_steps times step_dt apart ending at its newest
    observation; before its first observation, extrapolated backwards with the velocity vxy[i]."""
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


# -- HumanSanitizer (validation.py) -----------------------------------------------------------------------
@njit("void(i8[:], f8[:, :], f8[:, :], i8, i8, i8, i8, f8, f8, i8[::1])", cache=True)
def sanitize(ids, xy, vxy, n, capacity, shard_index, shard_count, max_abs_position, max_speed,
             out):  # pragma: no cover - compiled
    """The rules of ``validation`` applied in place to the first n rows; out = (kept, dropped, repaired)."""
    dropped = 0
    repaired = 0
    keep = 0
    for i in range(n):
        if shard_count > 1 and shard_of(ids[i], shard_count) != shard_index:
            continue
        if not (abs(xy[i, 0]) <= max_abs_position and abs(xy[i, 1]) <= max_abs_position):  # NaN fails too
            dropped += 1
            continue
        duplicate = False
        for j in range(i + 1, n):
            if ids[j] == ids[i] and abs(xy[j, 0]) <= max_abs_position and abs(xy[j, 1]) <= max_abs_position:
                duplicate = True
                break
        if duplicate:
            dropped += 1
            continue
        if keep >= capacity:
            dropped += 1
            continue
        if not (vxy[i, 0] * vxy[i, 0] + vxy[i, 1] * vxy[i, 1] <= max_speed * max_speed):  # NaN/inf fail
            vxy[i, 0] = 0.0
            vxy[i, 1] = 0.0
            repaired += 1
        ids[keep] = ids[i]
        xy[keep, 0] = xy[i, 0]
        xy[keep, 1] = xy[i, 1]
        vxy[keep, 0] = vxy[i, 0]
        vxy[keep, 1] = vxy[i, 1]
        keep += 1
    out[0] = keep
    out[1] = dropped
    out[2] = repaired


# -- TrackedHumans from its serialized bytes (gp_inference_node) --------------------------------------------

@njit("i8(u1[::1], i8[::1], f8[:, ::1], f8[:, ::1], i8[::1])", cache=True)
def read_tracked_humans(buf, ids, xy, vxy, header_out):  # pragma: no cover - compiled
    """Read a serialized ``TrackedHumans`` (std_msgs/Header header, HumanState[] humans) without building
    a Python object per human: what rclpy's deserialisation and a copy loop over the HumanState objects
    did. Plain CDR (XCDR1), little endian only: 4-byte encapsulation header 00 01, then every field
    aligned to its size relative to the end of that header (OMG CDR: a HumanState is uint32 id,
    4 bytes of padding, 4 float64). The first ``len(ids)`` humans go to ids/xy/vxy.

    Returns CDR_OK, CDR_UNSUPPORTED (another representation: the caller deserialises it the usual way) or
    CDR_MALFORMED (a length points past the end of the bytes); nothing is read out of bounds.
    """
    size = buf.shape[0] - 4  # payload bytes after the encapsulation header
    if size < 0 or buf[0] != 0 or buf[1] != 1:
        return CDR_UNSUPPORTED
    words = buf[4 : 4 + size // 4 * 4].view(np.uint32)  # 4-aligned fields, indexed by offset // 4
    doubles = buf[4 : 4 + size // 8 * 8].view(np.float64)  # 8-aligned fields, indexed by offset // 8
    if size < 12:
        return CDR_MALFORMED
    sec = np.int64(words[0])
    if sec >= 2**31:  # int32
        sec -= 2**32
    frame_len = np.int64(words[2])  # with the terminating NUL
    if frame_len < 1 or 12 + frame_len > size:
        return CDR_MALFORMED
    p = (12 + frame_len + 3) // 4 * 4
    if p + 4 > size:
        return CDR_MALFORMED
    count = np.int64(words[p // 4])
    p += 4
    capacity = ids.shape[0]
    for i in range(count):
        if p + 4 > size:
            return CDR_MALFORMED
        human_id = words[p // 4]
        p = (p + 4 + 7) // 8 * 8
        if p + 32 > size:
            return CDR_MALFORMED
        if i < capacity:
            ids[i] = human_id
            xy[i, 0] = doubles[p // 8]
            xy[i, 1] = doubles[p // 8 + 1]
            vxy[i, 0] = doubles[p // 8 + 2]
            vxy[i, 1] = doubles[p // 8 + 3]
        p += 32
    header_out[0] = sec
    header_out[1] = np.int64(words[1])
    header_out[2] = 4 + 12
    header_out[3] = frame_len - 1
    header_out[4] = count
    return CDR_OK
