"""Shared by the GP tests: small synthetic training windows, a predict helper, allocations of a predict."""
import tracemalloc

import numpy as np

from intent_perf_ros.core.gp.predictor import TrajectoryPredictor


def random_windows(n: int, seed: int) -> np.ndarray:
    """``n`` 20-step windows: a random drift per window plus small Gaussian steps."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.05, size=(n, 20, 2)) + rng.uniform(-0.5, 0.5, size=(n, 1, 2))
    return np.cumsum(steps, axis=1)


def predict_all(pred: TrajectoryPredictor, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, var = np.empty((len(hist), 12, 2)), np.empty((len(hist), 12, 2))
    pred.predict(hist, mean, var)
    return mean, var


def predict_allocations(pred: TrajectoryPredictor, hist: np.ndarray, calls: int = 50) -> tuple[int, int]:
    """Bytes still allocated after ``calls`` predictions into the same outputs, and the peak above the
    start (tracemalloc), after one untraced call."""
    mean, var = np.empty((len(hist), 12, 2)), np.empty((len(hist), 12, 2))
    pred.predict(hist, mean, var)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(calls):
            pred.predict(hist, mean, var)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current - base, peak - base
