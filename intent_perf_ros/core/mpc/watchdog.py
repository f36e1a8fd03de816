"""Stale-input watchdog: full speed while inputs are fresh, a linear ramp down, then a stop."""

from __future__ import annotations

import math


class StaleInputWatchdog:
    """``speed_scale(age)`` is 1 up to ``slow_after_s``, falls linearly to 0 at ``stop_after_s``, 0 beyond.

    The age is that of the oldest input the command depends on (odometry, humans, predictions). A fresh
    input restores the scale at once: the controller's acceleration limits smooth the resumption.
    """

    def __init__(self, slow_after_s: float = 0.3, stop_after_s: float = 1.0) -> None:
        if not 0.0 <= slow_after_s < stop_after_s:
            raise ValueError(
                f"need 0 <= slow_after_s < stop_after_s, got slow_after_s={slow_after_s}, "
                f"stop_after_s={stop_after_s}"
            )
        self.slow_after_s = slow_after_s
        self.stop_after_s = stop_after_s

    def speed_scale(self, age_s: float) -> float:
        # NaN (no input ever received) and negative ages (clock skew) count as stale and fresh respectively.
        if math.isnan(age_s) or age_s >= self.stop_after_s:
            return 0.0
        if age_s <= self.slow_after_s:
            return 1.0
        return (self.stop_after_s - age_s) / (self.stop_after_s - self.slow_after_s)
