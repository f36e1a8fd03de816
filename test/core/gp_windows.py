"""Shared by the GP store and fleet-sharing tests: small synthetic training windows and a predict helper."""
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
