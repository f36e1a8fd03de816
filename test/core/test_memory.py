"""Array pool exhaustion and statistics; ring buffer ordering, wrap-around and views."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intent_perf_ros.core.memory import ArrayPool, RingBuffer, measure_allocations


def test_pool_lends_preallocated_arrays_and_counts_misses_when_exhausted():
    pool = ArrayPool((3, 2), dtype=np.float32, capacity=2)
    a = pool.acquire()
    b = pool.acquire()
    assert a.shape == (3, 2) and a.dtype == np.float32
    assert a is not b
    assert pool.stats() == {"capacity": 2, "borrowed": 2, "peak_borrowed": 2, "misses": 0}
    c = pool.acquire()  # exhausted: a fresh array, never blocks
    assert c.shape == (3, 2) and c.dtype == np.float32
    assert pool.stats() == {"capacity": 2, "borrowed": 3, "peak_borrowed": 3, "misses": 1}
    for array in (c, b, a):
        pool.release(array)
    assert pool.stats() == {"capacity": 2, "borrowed": 0, "peak_borrowed": 3, "misses": 1}
    # The missed array was dropped: the next two loans are the two pooled arrays again.
    again = {id(pool.acquire()), id(pool.acquire())}
    assert again == {id(a), id(b)}
    assert pool.stats()["misses"] == 1


def test_pool_borrow_returns_the_array_even_when_the_block_raises():
    pool = ArrayPool((4,), capacity=1)
    with pool.borrow() as a:
        a[:] = 1.0
        assert pool.stats()["borrowed"] == 1
    assert pool.stats()["borrowed"] == 0
    with pytest.raises(RuntimeError), pool.borrow() as b:
        raise RuntimeError("callback failed")
    assert b is a
    assert pool.stats() == {"capacity": 1, "borrowed": 0, "peak_borrowed": 1, "misses": 0}


def test_pool_rejects_double_and_foreign_release():
    pool = ArrayPool((2,), capacity=1)
    a = pool.acquire()
    pool.release(a)
    with pytest.raises(ValueError, match="released twice"):
        pool.release(a)
    with pytest.raises(ValueError, match="not on loan"):
        pool.release(np.empty(2))


def test_pool_rejects_zero_capacity():
    with pytest.raises(ValueError, match="capacity"):
        ArrayPool((2,), capacity=0)


# A steady-state loop may create small Python objects (ints, views) but no numpy buffer: the
# smallest buffer the test below would catch is a pool miss, 256*5 float64 = 10 KiB.
STEADY_PEAK_BYTES = 4096


def test_measure_allocations_sees_a_per_call_buffer_and_retained_growth():
    transient = measure_allocations(lambda: np.empty(1000), calls=50)
    assert transient.peak_bytes >= 8000
    assert transient.retained_bytes < 1000
    kept: list[np.ndarray] = []
    growing = measure_allocations(lambda: kept.append(np.zeros(100)), calls=50)
    assert growing.retained_bytes >= 50 * 800
    assert growing.calls == 50


def test_pool_and_ring_allocate_nothing_in_steady_state():
    pool = ArrayPool((256, 5), capacity=2)
    ring = RingBuffer(32, 5)
    row = np.arange(5.0)

    def callback() -> None:
        with pool.borrow() as a, pool.borrow() as b:
            a[0] = row
            b[0] = row
        row[0] += 1.0
        ring.append(row)
        ring.latest(min(7, len(ring)))  # contiguous or wrapped, depending on the position
        ring.last()

    report = measure_allocations(callback, calls=2000, warmup=100)
    assert report.peak_bytes < STEADY_PEAK_BYTES, report
    assert report.retained_bytes < STEADY_PEAK_BYTES, report
    assert pool.stats()["misses"] == 0


def test_ring_latest_is_ordered_across_wrap_around():
    ring = RingBuffer(4, 2)
    for i in range(6):
        ring.append([i, 10 * i])
    assert len(ring) == 4
    np.testing.assert_array_equal(ring.latest(4), [[2, 20], [3, 30], [4, 40], [5, 50]])
    np.testing.assert_array_equal(ring.latest(1), [[5, 50]])
    np.testing.assert_array_equal(ring.last(), [5, 50])
    assert ring.latest(0).shape == (0, 2)


def test_ring_latest_is_a_view_when_contiguous_and_scratch_otherwise():
    ring = RingBuffer(5, 1)
    for i in range(7):  # rows 5 and 6 sit at slots 0 and 1
        ring.append([i])
    contiguous = ring.latest(2)
    assert np.shares_memory(contiguous, ring._data)
    wrapped = ring.latest(4)
    assert not np.shares_memory(wrapped, ring._data)
    assert np.shares_memory(wrapped, ring._scratch)
    np.testing.assert_array_equal(wrapped.ravel(), [3, 4, 5, 6])


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 60),
    capacity=st.integers(1, 16),
    k_fraction=st.floats(0.0, 1.0),
)
def test_ring_matches_the_tail_of_a_list(n, capacity, k_fraction):
    ring = RingBuffer(capacity, 3)
    rows = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    for r in rows:
        ring.append(r)
    held = rows[-capacity:] if n else rows
    assert len(ring) == len(held)
    k = round(k_fraction * len(held))
    np.testing.assert_array_equal(ring.latest(k), held[len(held) - k:])
    if n:
        np.testing.assert_array_equal(ring.last(), rows[-1])


def test_ring_errors_and_clear():
    ring = RingBuffer(3, 2)
    with pytest.raises(IndexError, match="empty"):
        ring.last()
    ring.append([1, 2])
    with pytest.raises(ValueError, match="between 0 and the 1 rows"):
        ring.latest(2)
    with pytest.raises(ValueError):
        ring.append([1, 2, 3])
    ring.clear()
    assert len(ring) == 0
    with pytest.raises(ValueError, match=">= 1"):
        RingBuffer(0, 2)
