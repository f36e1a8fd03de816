"""Human avoidance as linearised, slack-softened half-planes (one row per step and obstacle slot).

For obstacle j at step k with predicted mean c and per-axis variance (sx^2, sy^2), the robot must stay outside

    r = safety_radius + sqrt(chi2_2(confidence)) * max(sx, sy)

i.e. the disc that contains the confidence-level ellipse of a 2-D Gaussian (chi-square with 2 degrees of
freedom: 2.448 sigma at 95 %). The non-convex |p_k - c| >= r is linearised at the nominal position p_bar_k
(the rolled-out previous plan): with n = (p_bar_k - c) / |p_bar_k - c|, the half-plane n . p_k >= n . c + r is
the tangent to the disc facing the nominal, a convex inner approximation of the free space (the usual
sequential-convexification step, e.g. Schulman et al., "Motion planning with sequential convex optimization
and convex collision checking", IJRR 2014).

A robot straight behind a human would face a wall perpendicular to its path and stop (a symmetric deadlock),
so ``pass_bias`` times the path's left unit vector is added to the unit normal, signed towards the side of
the path the nominal already lies on (left when exactly on it): 0.3 tilts it by about 17 degrees. Any unit
normal with that right-hand side gives a tangent half-plane, so the disc stays excluded whatever the tilt.
The step's slack s_k >= 0 enters every row of that step with a penalty (controller.MPCConfig), which keeps
the QP feasible when a human comes too close.
"""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core import aot
from intent_perf_ros.core.mpc.qp import OSQP_INFTY

_kernels = aot.load(aot.MPC_KERNELS)  # compiled ahead of time by make, else JIT
half_planes, interpolate, min_distance = _kernels.half_planes, _kernels.interpolate, _kernels.min_distance


class HumanConstraints:
    """Interpolates predictions onto the controller's step times and fills the half-plane rows in place."""

    def __init__(
        self,
        horizon: int,
        dt: float,
        capacity: int,
        slots: int,
        safety_radius: float,
        confidence: float,
        pass_bias: float = 0.3,
    ) -> None:
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence}")
        if safety_radius < 0.0:
            raise ValueError(f"safety_radius must be >= 0 m, got {safety_radius}")
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0 trajectories, got {capacity}")
        self.horizon, self.dt, self.capacity, self.slots = horizon, dt, capacity, slots
        self.safety_radius = safety_radius
        self.pass_bias = pass_bias
        # chi-square with 2 degrees of freedom has the closed-form quantile -2 ln(1 - p) (scipy.stats
        # would cost a second of import and tens of MB in the node for one number).
        self.kappa = float(np.sqrt(-2.0 * np.log1p(-confidence)))
        H = horizon
        # Predictions at the controller's step times dt*(1..H); row j < count is valid.
        self.mean = np.zeros((capacity, H, 2))
        self.radius = np.zeros((capacity, H))  # inflated radius
        self.count = 0
        self.dropped = 0
        self._i0 = np.zeros(H, dtype=np.intp)
        self._i1 = np.zeros(H, dtype=np.intp)
        self._w = np.zeros(H)
        self._key: tuple[float, int] = (-1.0, -1)
        self._chosen = np.zeros(max(capacity, 1), dtype=np.intp)
        self._dist = np.zeros(max(capacity, 1))

    def _interpolation(self, pred_dt: float, hp: int) -> None:
        """Linear interpolation (extrapolation at both ends) from times pred_dt*(1..hp) to dt*(1..H)."""
        if self._key == (pred_dt, hp):
            return
        t = self.dt * np.arange(1, self.horizon + 1) / pred_dt - 1.0  # fractional index into 0..hp-1
        if hp == 1:
            self._i0[:] = 0
            self._i1[:] = 0
            self._w[:] = 0.0
        else:
            i0 = np.clip(np.floor(t), 0, hp - 2).astype(np.intp)
            self._i0[:] = i0
            self._i1[:] = i0 + 1
            self._w[:] = t - i0
        self._key = (pred_dt, hp)

    def load(
        self, human_mean: np.ndarray, human_var: np.ndarray, pred_dt: float, robot_xy: np.ndarray
    ) -> int:
        """Take n predicted trajectories; keeps the ``capacity`` nearest to the robot. Returns how many, or
        -1 when a prediction holds a NaN/inf (the controller then brakes: it cannot avoid what it cannot
        place)."""
        human_mean = np.asarray(human_mean, dtype=np.float64)  # no copy when already float64
        human_var = np.asarray(human_var, dtype=np.float64)
        if human_mean.ndim != 3 or human_mean.shape[2] != 2:
            raise ValueError(f"human_mean must have shape (n, Hp, 2), got {human_mean.shape}")
        if human_var.shape != human_mean.shape:
            raise ValueError(
                f"human_var must have the shape of human_mean {human_mean.shape}, got {human_var.shape}"
            )
        n, hp = human_mean.shape[0], human_mean.shape[1]
        if n and hp < 1:
            raise ValueError("give at least one predicted step per human (Hp >= 1)")
        if n and not pred_dt > 0.0:
            raise ValueError(f"pred_dt must be positive seconds, got {pred_dt}")
        self.dropped = max(n - self.capacity, 0)
        if n == 0 or self.capacity == 0:
            self.count = 0
            return 0
        self._interpolation(pred_dt, hp)
        if n > self.capacity:
            # Keep the nearest at the first predicted step (rare path: it allocates an index array).
            d = np.sum((human_mean[:, 0, :] - robot_xy) ** 2, axis=1)
            keep = np.argpartition(d, self.capacity - 1)[: self.capacity]
            human_mean, human_var, n = human_mean[keep], human_var[keep], self.capacity
        ok = interpolate(
            human_mean,
            human_var,
            self._i0,
            self._i1,
            self._w,
            self.kappa,
            self.safety_radius,
            self.mean,
            self.radius,
        )
        self.count = n if ok else 0
        return n if ok else -1

    def fill_rows(self, nominal: np.ndarray, normals: np.ndarray, lo: np.ndarray, left: np.ndarray) -> None:
        """Write normals (H, C, 2) and lower bounds (H*C,) for the nominal states x_bar_0..x_bar_H (H+1, 5).

        ``left`` is the unit vector to the left of the direction to the goal (the tilt direction).
        """
        if self.slots:
            half_planes(
                self.mean,
                self.radius,
                self.count,
                nominal,
                left,
                self.pass_bias,
                normals,
                lo,
                self._chosen,
                self._dist,
                -OSQP_INFTY,
            )

    def min_clearance(self, plan_xy: np.ndarray, first_step: int = 0) -> float:
        """Smallest |p - c| - safety_radius of plan positions (K, 2) against the predictions at steps
        first_step+1 .. first_step+K; +inf without humans."""
        return float(min_distance(self.mean, self.count, first_step, plan_xy)) - self.safety_radius
