"""Unicycle robot model: state [x, y, theta, v, omega], input [a, alpha] (linear and angular acceleration).

The controller linearises the Euler-discretised unicycle

    x+ = x + dt v cos(theta),  y+ = y + dt v sin(theta),  theta+ = theta + dt omega,
    v+ = v + dt a,             omega+ = omega + dt alpha

along a nominal trajectory (the previous plan's inputs rolled out from the measured state), which gives
x_{k+1} = A_k x_k + B u_k + c_k with only four entries of A_k and two of c_k changing (the position rows).
The command sent to the base is the planned velocity state at step 1, (v_1, omega_1) = (v_0 + dt a_0,
omega_0 + dt alpha_0), so acceleration limits hold on the command by construction.
"""

from __future__ import annotations

import numpy as np

from intent_perf_ros.core import aot

_kernels = aot.load(aot.MPC_KERNELS)  # compiled ahead of time by make, else JIT
rollout_linearise = _kernels.rollout_linearise


NX = 5  # state: x, y, theta, v, omega
NU = 2  # input: a, alpha
IX, IY, ITH, IV, IOM = range(NX)


class UnicycleLinearisation:
    """Preallocated rollout + linearisation for a horizon of ``horizon`` steps of ``dt`` seconds."""

    def __init__(self, horizon: int, dt: float, speed_floor: float) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 step, got {horizon}")
        if not dt > 0.0:
            raise ValueError(f"dt must be positive seconds, got {dt}")
        self.horizon = horizon
        self.dt = dt
        # Linearising at v = 0 removes the heading -> position coupling (d x+/d theta = -dt v sin theta), so
        # a robot at rest would see no benefit in turning. The speed used *only for the Jacobian* is floored
        # at this value; the model stays exact along theta = theta_bar for any v.
        self.speed_floor = speed_floor
        self.nominal = np.zeros((horizon + 1, NX))  # rolled-out nominal states x_0..x_H
        self.inputs = np.zeros((horizon, NU))  # nominal inputs u_0..u_{H-1}
        self.a_entries = np.zeros((horizon, 4))  # per step: dx/dtheta, dx/dv, dy/dtheta, dy/dv (times dt)
        self.offset = np.zeros((horizon, 2))  # c_k for the x and y rows

    def update(self, state: np.ndarray) -> np.ndarray:
        """Roll the nominal inputs out from ``state`` (nonlinear Euler model); linearise along it."""
        rollout_linearise(
            state, self.inputs, self.dt, self.speed_floor, self.nominal, self.a_entries, self.offset
        )
        return self.nominal


def unicycle_step(state: np.ndarray, v: float, omega: float, dt: float) -> np.ndarray:
    """Exact integration of the unicycle for ``dt`` seconds at constant (v, omega); used by the simulation."""
    x, y, th = float(state[IX]), float(state[IY]), float(state[ITH])
    if abs(omega) < 1e-9:
        x += v * dt * np.cos(th)
        y += v * dt * np.sin(th)
    else:
        x += v / omega * (np.sin(th + omega * dt) - np.sin(th))
        y -= v / omega * (np.cos(th + omega * dt) - np.cos(th))
    return np.array([x, y, th + omega * dt, v, omega])
