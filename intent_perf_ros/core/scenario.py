"""Synthetic scenario: humans walking to goals around a robot that drives to its own goal.

Used by ``intent-perf demo``, the closed-loop simulation, bag generation and the benchmarks, so
every tool sees the same world. Each human walks towards its goal at a preferred speed with
smoothed (Ornstein-Uhlenbeck) velocity noise and picks another goal on arrival. Optionally one
human crosses the robot's straight path and one changes its mind half-way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_GOALS: tuple[tuple[float, float], ...] = (
    (-8.0, -8.0), (8.0, -8.0), (8.0, 8.0), (-8.0, 8.0), (0.0, 8.0), (0.0, -8.0),
)


@dataclass(frozen=True)
class ScenarioConfig:
    humans: int = 5
    seed: int = 0
    goals: tuple[tuple[float, float], ...] = DEFAULT_GOALS
    speed_min: float = 0.9  # [m/s] preferred walking speeds are drawn uniformly in this range
    speed_max: float = 1.4
    noise_std: float = 0.1  # [m/s] stationary std of the velocity noise
    noise_tau_s: float = 1.0  # correlation time of the velocity noise
    arrive_radius: float = 0.5  # [m] a goal counts as reached inside this radius
    robot_start: tuple[float, float] = (-6.0, 0.0)
    robot_goal: tuple[float, float] = (6.0, 0.0)
    crossing_human: bool = False  # human 0 walks across the robot's straight path to its goal
    mind_change_at_s: float | None = None  # human 1 (or 0) switches to another goal at this time


class SyntheticScenario:
    """Deterministic (given the seed) human motion; arrays are preallocated and updated in place."""

    def __init__(self, config: ScenarioConfig = ScenarioConfig()) -> None:
        if config.humans < 0:
            raise ValueError(f"humans must be >= 0, got {config.humans}")
        if len(config.goals) < 2:
            raise ValueError("give at least two goals so humans have somewhere to go")
        self.config = config
        self.goals = np.asarray(config.goals, dtype=np.float64)
        self.ids = np.arange(1, config.humans + 1, dtype=np.int64)
        self.xy = np.zeros((config.humans, 2))
        self.vxy = np.zeros((config.humans, 2))
        self.goal_index = np.zeros(config.humans, dtype=np.int64)
        self.speed = np.zeros(config.humans)
        self._noise = np.zeros((config.humans, 2))
        self._mind_changed = False
        self.time = 0.0
        self.reset()

    def reset(self) -> None:
        cfg = self.config
        self._rng = np.random.default_rng(cfg.seed)
        n_goals = len(self.goals)
        for i in range(cfg.humans):
            start = self._rng.integers(n_goals)
            self.goal_index[i] = (start + 1 + self._rng.integers(n_goals - 1)) % n_goals
            self.xy[i] = self.goals[start] + self._rng.uniform(0.0, 1.0) * (
                self.goals[self.goal_index[i]] - self.goals[start]
            ) * 0.5
        self.speed[:] = self._rng.uniform(cfg.speed_min, cfg.speed_max, cfg.humans)
        if cfg.crossing_human and cfg.humans > 0:
            self._place_crossing_human()
        self._noise[:] = 0.0
        self._mind_changed = False
        self.time = 0.0
        self._update_velocity(0.0)

    def _place_crossing_human(self) -> None:
        """Human 0 starts beside the robot's path so that it crosses it near the midpoint."""
        start = np.asarray(self.config.robot_start)
        goal = np.asarray(self.config.robot_goal)
        mid = 0.5 * (start + goal)
        direction = (goal - start) / max(np.linalg.norm(goal - start), 1e-9)
        normal = np.array([-direction[1], direction[0]])
        self.xy[0] = mid - 5.0 * normal
        far_side = mid + 8.0 * normal
        self.goal_index[0] = int(np.argmin(np.linalg.norm(self.goals - far_side, axis=1)))

    def step(self, dt: float) -> None:
        """Advance every human by ``dt`` seconds (positions first, then velocities)."""
        if dt <= 0.0:
            raise ValueError(f"dt must be positive, got {dt}")
        self.xy += self.vxy * dt
        self.time += dt
        cfg = self.config
        if cfg.mind_change_at_s is not None and not self._mind_changed and self.time >= cfg.mind_change_at_s:
            who = min(1, cfg.humans - 1)
            if who >= 0:
                self.goal_index[who] = (self.goal_index[who] + len(self.goals) // 2) % len(self.goals)
            self._mind_changed = True
        arrived = np.linalg.norm(self.goals[self.goal_index] - self.xy, axis=1) < cfg.arrive_radius
        for i in np.flatnonzero(arrived):
            self.goal_index[i] = (self.goal_index[i] + 1 + self._rng.integers(len(self.goals) - 1)) % len(
                self.goals
            )
        self._update_velocity(dt)

    def _update_velocity(self, dt: float) -> None:
        cfg = self.config
        if dt > 0.0 and cfg.noise_std > 0.0:
            # Exact discretisation of an Ornstein-Uhlenbeck process with correlation time tau.
            decay = np.exp(-dt / cfg.noise_tau_s)
            self._noise *= decay
            self._noise += cfg.noise_std * np.sqrt(1.0 - decay**2) * self._rng.standard_normal(self._noise.shape)
        to_goal = self.goals[self.goal_index] - self.xy
        distance = np.maximum(np.linalg.norm(to_goal, axis=1, keepdims=True), 1e-9)
        self.vxy[:] = to_goal / distance * self.speed[:, None] + self._noise
