"""Per-node statistics: latency windows, event rates and process resource samples.

Every node records its callback and end-to-end latencies here on every message and reads a
summary once per statistics period (1 Hz by default). The recording side is on the control
path, so it is O(1) and allocates nothing; the summary side reuses preallocated scratch so a
node's steady state stays allocation-free too.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import psutil

# The summary every latency window reports, in this order (NodeStats' *_p50/_p95/_p99/_max_ms).
PERCENTILE_LABELS: tuple[str, ...] = ("p50", "p95", "p99", "max")
_QUANTILES: tuple[float, ...] = (0.50, 0.95, 0.99, 1.0)
_BYTES_PER_MB = 1024.0 * 1024.0


class LatencyWindow:
    """The most recent ``capacity`` latency samples (ms) in a preallocated float64 ring.

    A ring rather than a histogram because percentiles of a few thousand raw samples are exact
    and cost tens of microseconds once per second, while recording stays a single store.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 sample, got {capacity}")
        self._ring = np.zeros(capacity, dtype=np.float64)
        self._scratch = np.empty(capacity, dtype=np.float64)  # percentiles() partitions a copy here
        self._kth = np.zeros(2 * len(_QUANTILES), dtype=np.intp)  # the order statistics they need
        self._head = 0  # index the next sample is written to
        self._size = 0
        self._total = 0

    @property
    def capacity(self) -> int:
        return self._ring.shape[0]

    @property
    def count_total(self) -> int:
        """Samples ever added, including those the ring has since overwritten."""
        return self._total

    def __len__(self) -> int:
        return self._size

    def add(self, value_ms: float) -> None:
        """Record one sample: O(1), no allocation."""
        self._ring[self._head] = value_ms
        self._head += 1
        if self._head == self._ring.shape[0]:
            self._head = 0
        if self._size < self._ring.shape[0]:
            self._size += 1
        self._total += 1

    def percentiles(self, out: np.ndarray | None = None) -> np.ndarray:
        """[p50, p95, p99, max] of the held samples, zeros when empty.

        Equal to ``np.percentile(values, [50, 95, 99, 100], method="linear")`` (same virtual
        index and the same two-sided interpolation numpy uses). One in-place partition of a copy
        in preallocated scratch puts the eight order statistics needed in place, several times
        cheaper than sorting. Pass ``out`` (shape (4,), float64) to avoid the result allocation.
        """
        if out is None:
            out = np.empty(len(_QUANTILES), dtype=np.float64)
        elif out.shape != (len(_QUANTILES),):
            raise ValueError(f"out must have shape ({len(_QUANTILES)},), got {out.shape}")
        n = self._size
        if n == 0:
            out[:] = 0.0
            return out
        held = self._scratch[:n]
        np.copyto(held, self._ring[:n])  # ring order does not matter for percentiles
        kth = self._kth
        for i, q in enumerate(_QUANTILES):
            lower = math.floor((n - 1) * q)
            kth[2 * i] = lower
            kth[2 * i + 1] = min(lower + 1, n - 1)
        held.partition(kth)
        for i, q in enumerate(_QUANTILES):
            out[i] = _linear_quantile(held, q)
        return out

    def values(self) -> np.ndarray:
        """The held samples, oldest first (a new array: for reports and tests, not the hot path)."""
        if self._size < self._ring.shape[0]:
            return self._ring[: self._size].copy()
        return np.concatenate((self._ring[self._head:], self._ring[: self._head]))

    def clear(self) -> None:
        """Forget the held samples (``count_total`` keeps counting: it is a lifetime figure)."""
        self._head = 0
        self._size = 0


def _linear_quantile(values: np.ndarray, q: float) -> float:
    """numpy's "linear" quantile, replicated in scalar arithmetic, of values whose order
    statistics at floor((n - 1) q) and the next index are in their sorted positions.

    numpy interpolates from the upper neighbour when the fraction is >= 0.5, which changes the
    last bits; doing the same keeps our figures identical to ``np.percentile``.
    """
    index = (values.shape[0] - 1) * q
    lower = math.floor(index)
    fraction = index - lower
    below = float(values[lower])
    if fraction == 0.0:
        return below
    above = float(values[lower + 1])
    diff = above - below
    if fraction >= 0.5:
        return above - diff * (1.0 - fraction)
    return below + diff * fraction


class RateMeter:
    """Counts events and reports their rate over the interval since the previous read.

    Reading resets the interval so each statistics message reports the rate of its own period,
    not a lifetime average that hides a stall.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._count = 0
        self._total = 0

    @property
    def total(self) -> int:
        """Events ever counted."""
        return self._total

    def add(self, n: int = 1) -> None:
        self._count += n
        self._total += n

    def rate_and_reset(self) -> float:
        """Events per second since the previous call (or construction); 0.0 for an empty interval."""
        now = self._clock()
        elapsed = now - self._since
        rate = self._count / elapsed if elapsed > 0.0 else 0.0
        self._since = now
        self._count = 0
        return rate


class ProcessSampler:
    """RSS and CPU use of one process, reusing its ``psutil.Process``.

    Creating a Process per sample costs far more than reading it, and its CPU percentage is
    measured between consecutive calls on the same object, so one object lives here.
    """

    def __init__(self, pid: int | None = None) -> None:
        self._process = psutil.Process(pid)
        self._process.cpu_percent(interval=None)  # starts the CPU interval; the first read is 0.0

    def sample(self) -> tuple[float, float]:
        """(RSS in MiB, CPU percent of one core since the previous sample; may exceed 100 when
        several threads run)."""
        with self._process.oneshot():
            rss_mb = self._process.memory_info().rss / _BYTES_PER_MB
            cpu = self._process.cpu_percent(interval=None)
        return rss_mb, cpu
