"""Systematic resampling: unbiased counts (statistical, fixed seed), normalised weights, ESS trigger."""
from __future__ import annotations

import numpy as np
import pytest

from intent_perf_ros.core.belief.layout import new_state
from intent_perf_ros.core.belief.particles import ess_of, resample_slot
from intent_perf_ros.core.belief.resample import allocate_counts, systematic_indices, systematic_indices_numpy
from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

DRAWS = 4000


def expected_count_tolerance(expected: np.ndarray, draws: int) -> np.ndarray:
    """5 standard errors of a mean of counts that take floor(e) or ceil(e) (Bernoulli on the fraction)."""
    frac = expected - np.floor(expected)
    return 5.0 * np.sqrt(np.maximum(frac * (1.0 - frac), 1e-12) / draws) + 1e-9


def test_systematic_counts_are_unbiased_and_minimal_variance():
    rng = np.random.default_rng(0)
    w = rng.gamma(0.5, size=50)
    w /= w.sum()
    n = 50
    out = np.empty(n, dtype=np.int64)
    total = np.zeros(50)
    for _ in range(DRAWS):
        systematic_indices(w, rng.random(), out)
        counts = np.bincount(out, minlength=50)
        # Systematic resampling copies particle i floor(n w_i) or ceil(n w_i) times, never further off.
        assert np.all(np.abs(counts - n * w) < 1.0 + 1e-9)
        total += counts
    expected = n * w
    assert np.all(np.abs(total / DRAWS - expected) < expected_count_tolerance(expected, DRAWS))


def test_numba_and_numpy_versions_agree():
    rng = np.random.default_rng(1)
    w = rng.random(1000)
    w /= w.sum()
    out = np.empty(1000, dtype=np.int64)
    for u in (0.0, 0.3, 0.999):
        systematic_indices(w, u, out)
        np.testing.assert_array_equal(out, systematic_indices_numpy(w, u))


def test_group_allocation_is_unbiased_with_floor():
    rng = np.random.default_rng(2)
    masses = np.array([0.7, 0.2, 0.06, 0.04])
    out = np.empty(4, dtype=np.int64)
    total = np.zeros(4)
    for _ in range(DRAWS):
        allocate_counts(masses, 1000, 20, rng.random(), out)
        assert out.sum() == 1000 and np.all(out >= 20)
        total += out
    expected = 20 + masses * (1000 - 80)
    assert np.all(np.abs(total / DRAWS - expected) < expected_count_tolerance(expected, DRAWS))


def make_slot(rng, n=400, h=4):
    px = rng.normal(size=(1, n))
    py = rng.normal(size=(1, n))
    pvx = rng.normal(size=(1, n))
    pvy = rng.normal(size=(1, n))
    g = rng.integers(0, h, size=(1, n))
    w = rng.gamma(0.3, size=(1, n))
    w[0, g[0] == 3] *= 1e-3  # one unlikely group, as after a long straight walk
    w /= w.sum()
    return px, py, pvx, pvy, w, g


def test_mixture_resampling_keeps_weights_normalised_masses_exact_and_means_unbiased():
    rng = np.random.default_rng(3)
    n, h, floor = 400, 4, 10
    base = make_slot(rng, n, h)
    masses0 = np.bincount(base[5][0], weights=base[4][0], minlength=h)
    mean0 = np.array([np.sum(base[4][0] * base[0][0] * (base[5][0] == k)) / masses0[k] for k in range(h)])
    scratch = np.zeros((5, n))
    scratch_g = np.zeros(n, dtype=np.int64)
    masses = np.zeros(h)
    counts = np.zeros(h, dtype=np.int64)
    alloc = np.zeros(h, dtype=np.int64)
    state = new_state(7)
    means = np.zeros(h)
    runs = 400
    for _ in range(runs):
        px, py, pvx, pvy, w, g = (a.copy() for a in base)
        resample_slot(0, floor, px, py, pvx, pvy, w, g, masses, counts, alloc, scratch, scratch_g, state)
        assert w.sum() == pytest.approx(1.0, abs=1e-12)
        after = np.bincount(g[0], weights=w[0], minlength=h)
        np.testing.assert_allclose(after, masses0, rtol=1e-12)  # belief unchanged by resampling
        sizes = np.bincount(g[0], minlength=h)
        assert np.all(sizes >= floor) and sizes.sum() == n
        for k in range(h):
            sel = g[0] == k
            assert np.allclose(w[0, sel], w[0, sel][0])  # equal weights within a group after resampling
            means[k] += px[0, sel].mean() / runs
    # The resampled group mean of x estimates the weighted mean without bias: compare with the
    # spread of one run's estimate (weighted variance over the group size) divided by the runs.
    for k in range(h):
        sel = base[5][0] == k
        wk = base[4][0, sel] / masses0[k]
        var = np.sum(wk * (base[0][0, sel] - mean0[k]) ** 2)
        n_k = floor + masses0[k] * (n - h * floor)
        assert abs(means[k] - mean0[k]) < 5.0 * np.sqrt(var / n_k / runs)


def test_ess_definition():
    w = np.array([0.5, 0.5, 0.0, 0.0])
    g = np.array([0, 0, 1, 1])
    ess, worst = ess_of(w, g, np.zeros(2), np.zeros(2), np.zeros(2, dtype=np.int64))
    assert ess == pytest.approx(2.0)
    assert worst == pytest.approx(1.0)  # group 1 has no weight at all: nothing to judge
    w = np.array([0.9, 0.05, 0.049, 0.001])
    ess, worst = ess_of(w, g, np.zeros(2), np.zeros(2), np.zeros(2, dtype=np.int64))
    assert ess == pytest.approx(1.0 / np.sum(w**2))
    assert worst == pytest.approx(min(0.95**2 / (0.9**2 + 0.05**2) / 2, 0.05**2 / (0.049**2 + 0.001**2) / 2))


@pytest.mark.parametrize(("threshold", "expect_resample"), [(1e-6, False), (1.0, True)])
def test_ess_trigger(threshold, expect_resample):
    goals = np.array([[10.0, 0.0], [0.0, 10.0]])
    tracker = BeliefTracker(BeliefConfig(goals=goals, ess_threshold=threshold, particles=500))
    tracker.warmup()
    for k in range(6):
        out = tracker.update(0.4 * k, np.array([1]), np.array([[0.48 * k, 0.0]]), np.array([[1.2, 0.0]]))
    resamples = tracker.stats()["resamples"]
    if expect_resample:
        assert resamples == 6 and out.ess[0] == 500
    else:
        assert resamples == 0 and out.ess[0] < 500
