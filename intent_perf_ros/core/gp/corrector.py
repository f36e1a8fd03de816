"""Online ridge regression of what the GPs leave unexplained in this place, on the recent velocity changes.

Some places are annotated or walked so that the last step's velocity is a noisy estimate of the next
ones: in HOTEL, constant velocity from the mean velocity of the last three steps has a 22% lower ADE
than from the last step; in ZARA2, from the mean of the last two, a 6% higher one. Which smoothing
(or none) helps is a property of the place, so it is learned online, like the place GP, and not
offline across places (a ridge regression fitted on the other scenes had a 3-27% higher ADE than
constant velocity on four of the five held-out scenes).

Model, per output column (aligned, standardised residual after the motion and place GPs):
    r = x^T w + noise,   x = (v_{t-lag} - v_t) for the configured lags, (along, cross), m/s,
                         and (with ``corrector_speed_terms``) the same times the current speed
with w the ridge estimate (X^T X + lambda I)^-1 X^T R over every window this place completed (its
sufficient statistics; a window's residual is taken against the model that predicts it, before it
is learned: stacking). The ridge lambda is chosen from ``ridges`` - or no correction at all - by
prequential squared error (Dawid 1984): each block of completed windows is first scored by every
candidate's current weights, then learned. So the corrector is causal and switches itself off in a place where
it does not help.
"""

from __future__ import annotations

import numpy as np

BLOCK = 16  # windows scored per prequential step: a node learns a few per tick, a restore hundreds at once


class VelocityCorrector:
    """Ridge regression of residuals on velocity changes, ridge chosen by prequential error."""

    def __init__(self, n_features: int, n_outputs: int, ridges: tuple[float, ...], dtype: str = "float64") -> None:
        if n_features < 1 or n_outputs < 1:
            raise ValueError(f"need at least one feature and one output, got {n_features} and {n_outputs}")
        if not ridges or any(not np.isfinite(r) or r <= 0 for r in ridges):
            raise ValueError(f"ridges must be positive and finite, got {ridges}")
        self.n_features = n_features
        self.n_outputs = n_outputs
        self.ridges = tuple(float(r) for r in ridges)
        self.dtype = np.dtype(dtype)
        self.weights_ = np.zeros((n_features, n_outputs), dtype=self.dtype)  # of the chosen candidate
        self.reset()

    def reset(self) -> None:
        """Forget the place."""
        self.gram_ = np.zeros((self.n_features, self.n_features))  # X^T X
        self.cross_ = np.zeros((self.n_features, self.n_outputs))  # X^T R
        self.candidates_ = np.zeros((len(self.ridges), self.n_features, self.n_outputs))
        self.squared_errors_ = np.zeros(len(self.ridges) + 1)  # prequential; index 0: no correction
        self.choice_ = 0
        self.n_windows_ = 0
        self.weights_.fill(0.0)

    @property
    def active(self) -> bool:
        return self.choice_ > 0

    @property
    def ridge(self) -> float:
        """The chosen ridge, 0 while no correction is chosen."""
        return self.ridges[self.choice_ - 1] if self.choice_ else 0.0

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Correction (K, n_outputs) for (K, n_features) windows (allocating; learning path)."""
        return features @ self.weights_

    def add_into(self, features: np.ndarray, mean: np.ndarray, scratch: np.ndarray) -> None:
        """mean += features @ w, all three of the model dtype with equal row counts (no allocation)."""
        np.dot(features, self.weights_, out=scratch)
        np.add(mean, scratch, out=mean)

    def learn(self, features: np.ndarray, residuals: np.ndarray) -> None:
        """Score every candidate on these completed windows, then learn them, ``BLOCK`` windows at a time
        (so windows restored in bulk are scored as if they had come in small batches)."""
        if features.shape[0] != residuals.shape[0] or features.shape[1:] != (self.n_features,) \
                or residuals.shape[1:] != (self.n_outputs,):
            raise ValueError(f"need (K, {self.n_features}) features and (K, {self.n_outputs}) residuals, "
                             f"got {features.shape} and {residuals.shape}")
        for lo in range(0, features.shape[0], BLOCK):
            self._learn_block(features[lo : lo + BLOCK], residuals[lo : lo + BLOCK])

    def _learn_block(self, features: np.ndarray, residuals: np.ndarray) -> None:
        self.squared_errors_[0] += np.sum(residuals**2)
        for i, w in enumerate(self.candidates_):
            self.squared_errors_[i + 1] += np.sum((residuals - features @ w) ** 2)
        self.gram_ += features.T @ features
        self.cross_ += features.T @ residuals
        eye = np.eye(self.n_features)
        for i, ridge in enumerate(self.ridges):
            self.candidates_[i] = np.linalg.solve(self.gram_ + ridge * eye, self.cross_)
        self.n_windows_ += features.shape[0]
        self.choice_ = int(np.argmin(self.squared_errors_))  # ties (nothing learned yet): no correction
        self.weights_[:] = self.candidates_[self.choice_ - 1] if self.choice_ else 0.0
