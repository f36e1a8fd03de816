"""Latency windows against numpy, rate meters with a fake clock, the process sampler."""
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intent_perf_ros.core.memory import measure_allocations
from intent_perf_ros.core.stats import PERCENTILE_LABELS, LatencyWindow, ProcessSampler, RateMeter


def _numpy_reference(values: np.ndarray) -> np.ndarray:
    return np.percentile(values, [50, 95, 99, 100], method="linear")


def test_empty_window_reports_zeros():
    window = LatencyWindow(16)
    assert len(window) == 0
    assert window.count_total == 0
    np.testing.assert_array_equal(window.percentiles(), np.zeros(4))
    assert len(PERCENTILE_LABELS) == 4


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(st.floats(0.0, 1e4, allow_nan=False), min_size=1, max_size=300),
    capacity=st.integers(1, 64),
)
def test_percentiles_equal_numpy_on_held_samples(samples, capacity):
    window = LatencyWindow(capacity)
    for s in samples:
        window.add(s)
    held = np.asarray(samples[-capacity:])
    np.testing.assert_array_equal(window.values(), held)
    np.testing.assert_array_equal(window.percentiles(), _numpy_reference(held))
    assert len(window) == min(len(samples), capacity)
    assert window.count_total == len(samples)


def test_percentiles_large_random_wrapped():
    rng = np.random.default_rng(1)
    samples = rng.lognormal(0.0, 1.0, 10_000)
    window = LatencyWindow(4096)
    for s in samples:
        window.add(s)
    out = np.empty(4)
    result = window.percentiles(out)
    assert result is out
    np.testing.assert_array_equal(out, _numpy_reference(samples[-4096:]))


def test_percentiles_rejects_wrong_out_shape():
    window = LatencyWindow(8)
    with pytest.raises(ValueError, match="shape"):
        window.percentiles(np.empty(3))


def test_clear_keeps_lifetime_count():
    window = LatencyWindow(4)
    for s in (1.0, 2.0, 3.0, 4.0, 5.0):
        window.add(s)
    window.clear()
    assert len(window) == 0
    assert window.count_total == 5
    window.add(7.0)
    np.testing.assert_array_equal(window.values(), [7.0])
    np.testing.assert_array_equal(window.percentiles(), [7.0, 7.0, 7.0, 7.0])


def test_add_and_percentiles_allocate_nothing_in_steady_state():
    window = LatencyWindow(4096)
    out = np.empty(4)
    values = iter(np.random.default_rng(0).random(100_000).tolist())

    def callback() -> None:
        for _ in range(50):
            window.add(next(values))
        window.percentiles(out)

    report = measure_allocations(callback, calls=200, warmup=100)  # warm-up wraps the ring
    # numpy's partition call itself holds about 2.8 KB while it runs; a copy of the samples is 32 KiB.
    assert report.peak_bytes < 8192, report
    assert report.retained_bytes < 1024, report


def test_rate_meter_reports_events_per_second_of_each_interval():
    now = [100.0]
    meter = RateMeter(clock=lambda: now[0])
    meter.add()
    meter.add(4)
    now[0] = 102.0
    assert meter.rate_and_reset() == pytest.approx(2.5)
    now[0] = 104.0
    assert meter.rate_and_reset() == 0.0
    meter.add(10)
    assert meter.rate_and_reset() == 0.0  # no time elapsed: defined as 0, not a division error
    assert meter.total == 15


def test_process_sampler_reads_this_process():
    sampler = ProcessSampler()
    ballast = np.ones(20_000_000 // 8)  # 20 MB touched: RSS must be at least that
    _ = float(ballast.sum())
    rss_mb, cpu = sampler.sample()
    assert rss_mb > 20.0
    assert cpu >= 0.0
    other = ProcessSampler(os.getpid())
    assert other.sample()[0] > 20.0
