"""Memory discipline for the nodes: array pools and fixed-size ring buffers.

After warm-up a node's callback must not allocate numpy buffers per message (allocation costs
about 4x a pool pop and grows RSS under load). Pools hand out preallocated scratch arrays;
ring buffers keep bounded time series (observations per human) with O(1) appends.
"""
from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import numpy as np
from numpy.typing import ArrayLike, DTypeLike


class ArrayPool:
    """A fixed number of preallocated arrays of one shape and dtype, lent out and given back.

    Exhaustion never blocks the control path: the pool allocates a fresh array and counts a
    miss, so a ``misses`` figure above zero says the capacity is too small. Borrowed arrays hold
    whatever their previous borrower wrote; fill them before reading.
    """

    def __init__(self, shape: tuple[int, ...], dtype: DTypeLike = np.float64, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 array, got {capacity}")
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self._capacity = capacity
        self._free = [np.empty(self._shape, dtype=self._dtype) for _ in range(capacity)]
        self._owned = {id(a): a for a in self._free}  # the dict keeps ids valid (arrays stay alive)
        self._lent: set[int] = set()  # ids of arrays currently out, pooled or missed
        self._peak = 0
        self._misses = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def acquire(self) -> np.ndarray:
        """Take an array; pair with :meth:`release` (or use :meth:`borrow`)."""
        if self._free:
            array = self._free.pop()
        else:
            array = np.empty(self._shape, dtype=self._dtype)
            self._misses += 1
        self._lent.add(id(array))
        self._peak = max(self._peak, len(self._lent))
        return array

    def release(self, array: np.ndarray) -> None:
        """Give an array back. Pool arrays return to the free list; arrays allocated on a miss
        are dropped, so the pool never grows beyond its capacity."""
        key = id(array)
        if key not in self._lent:
            raise ValueError(
                "array is not on loan from this pool (released twice, or acquired elsewhere); "
                "release exactly the array acquire() returned, once"
            )
        self._lent.discard(key)
        if self._owned.get(key) is array:
            self._free.append(array)

    def borrow(self) -> _Loan:
        """Context manager lending an array for the ``with`` block: ``with pool.borrow() as a:``."""
        return _Loan(self)

    def stats(self) -> dict[str, int]:
        """Usage figures for the node's statistics message (``extra`` key-values)."""
        return {
            "capacity": self._capacity,
            "borrowed": len(self._lent),
            "peak_borrowed": self._peak,
            "misses": self._misses,
        }


class _Loan:
    """One ``with`` block's loan; a slotted class because it is cheaper than a generator."""

    __slots__ = ("_array", "_pool")

    def __init__(self, pool: ArrayPool) -> None:
        self._pool = pool
        self._array: np.ndarray | None = None

    def __enter__(self) -> np.ndarray:
        self._array = self._pool.acquire()
        return self._array

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        array, self._array = self._array, None
        if array is not None:
            self._pool.release(array)


class RingBuffer:
    """A fixed number of rows (e.g. per-human observations ``(t, x, y, vx, vy)``) in a numpy ring.

    Appending overwrites the oldest row once full. Reads of the most recent rows are views when
    they do not wrap and otherwise land in a preallocated scratch; either way they are valid
    only until the next :meth:`append` or :meth:`latest`.
    """

    def __init__(self, capacity: int, width: int, dtype: DTypeLike = np.float64) -> None:
        if capacity < 1 or width < 1:
            raise ValueError(f"capacity and width must be >= 1, got capacity={capacity}, width={width}")
        self._data = np.zeros((capacity, width), dtype=dtype)
        self._scratch = np.empty_like(self._data)
        self._head = 0  # row the next append writes
        self._size = 0

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    @property
    def width(self) -> int:
        return self._data.shape[1]

    def __len__(self) -> int:
        return self._size

    def append(self, row: ArrayLike) -> None:
        """Store one row of ``width`` values: O(1); allocation-free when ``row`` is an ndarray."""
        self._data[self._head] = row
        self._head += 1
        if self._head == self._data.shape[0]:
            self._head = 0
        if self._size < self._data.shape[0]:
            self._size += 1

    def latest(self, k: int) -> np.ndarray:
        """The most recent ``k`` rows, oldest first: a view of the ring when they are contiguous,
        else the two pieces copied into scratch (only the k rows, never the whole buffer)."""
        if not 0 <= k <= self._size:
            raise ValueError(f"k must be between 0 and the {self._size} rows held, got {k}")
        capacity = self._data.shape[0]
        start = self._head - k
        if start >= 0:
            return self._data[start : self._head]
        start += capacity
        first = capacity - start
        out = self._scratch[:k]
        out[:first] = self._data[start:]
        out[first:] = self._data[: self._head]
        return out

    def last(self) -> np.ndarray:
        """The newest row (a view)."""
        if self._size == 0:
            raise IndexError("ring buffer is empty: append a row before reading the last one")
        return self._data[self._head - 1]

    def clear(self) -> None:
        self._head = 0
        self._size = 0


@dataclass(frozen=True)
class AllocationReport:
    """What repeated calls allocated, as tracemalloc (which numpy reports its buffers to) saw it."""

    calls: int
    peak_bytes: int  # most traced memory above the starting level at any moment during the calls
    retained_bytes: int  # traced memory still held after the calls, above the starting level


def measure_allocations(fn: Callable[[], object], calls: int = 100, warmup: int = 10) -> AllocationReport:
    """Run ``fn`` ``warmup`` times untraced, then ``calls`` times under tracemalloc.

    The steady-state rule's probe: a callback that allocates a numpy buffer per message shows
    at least that buffer's size in ``peak_bytes`` even though it is freed again, and one that
    keeps what it allocates shows growth in ``retained_bytes``. Results of ``fn`` are dropped at
    once, so returning a fresh array counts as allocating it. Python objects count too, and a
    numpy call such as ``sort`` holds about 2.6 KB of bookkeeping while it runs, so compare
    ``peak_bytes`` with the smallest buffer the check must catch rather than with zero.
    """
    if tracemalloc.is_tracing():
        raise RuntimeError("tracemalloc is already tracing; stop it before measuring allocations")
    for _ in range(warmup):
        fn()
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(calls):
            fn()
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return AllocationReport(calls=calls, peak_bytes=peak - start, retained_bytes=end - start)
