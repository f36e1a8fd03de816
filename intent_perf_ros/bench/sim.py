"""Closed-loop simulation (``intent-perf sim``): the MPC drives a unicycle through walking humans.

Each cycle (dt = the controller's step): the humans of ``core.scenario`` are predicted (constant velocity
with growing variance; optionally plus goal-directed alternatives weighted by the BeliefTracker), the
controller computes (v, omega), the robot is integrated exactly as a unicycle and the humans walk on. The
humans do not react to the robot, so the robot alone is responsible for keeping its distance.

Scenarios: empty; crossing (a human crosses the robot's path); head_on (a human walks down the robot's path
towards it); mind_change (one crosses, another changes its goal at 4 s); crowd (12); dense_crowd (20, with a
crossing human and a change of mind).

Per scenario: goal reached, time to goal, minimum robot-human centre distance (checked continuously along
each cycle's straight relative motion, not only at the samples), fallback cycles, solver figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace

import numpy as np

from intent_perf_ros.core.belief.decision import BEHAVIOURS, METHODS, BehaviourSelector, outcome_reward
from intent_perf_ros.core.mpc.controller import Mode, MPCConfig, MPCController
from intent_perf_ros.core.mpc.hypotheses import expand_hypotheses
from intent_perf_ros.core.mpc.model import unicycle_step
from intent_perf_ros.core.scenario import DEFAULT_GOALS, ScenarioConfig, SyntheticScenario


class HeadOnScenario(SyntheticScenario):
    """Human 0 starts beyond the robot's goal and walks straight down the robot's path (to the last goal)."""

    def reset(self) -> None:
        super().reset()
        if self.config.humans:
            start, goal = np.asarray(self.config.robot_start), np.asarray(self.config.robot_goal)
            self.xy[0] = goal + 2.0 * (goal - start) / max(float(np.linalg.norm(goal - start)), 1e-9)
            self.goal_index[0] = len(self.goals) - 1
            self._update_velocity(0.0)


SCENARIOS: dict[str, ScenarioConfig] = {
    "empty": ScenarioConfig(humans=0),
    "crossing": ScenarioConfig(humans=3, seed=1, crossing_human=True),
    "head_on": ScenarioConfig(humans=3, seed=5, goals=(*DEFAULT_GOALS, (-9.0, 0.0))),
    "mind_change": ScenarioConfig(humans=3, seed=2, crossing_human=True, mind_change_at_s=4.0),
    "crowd": ScenarioConfig(humans=12, seed=3),
    "dense_crowd": ScenarioConfig(humans=20, seed=4, crossing_human=True, mind_change_at_s=5.0),
}
PREDICTORS = ("cv", "belief")


class ConstantVelocityPredictor:
    """mean = xy + v t; per-axis variance sigma0^2 + (sigma_v t)^2 (velocity uncertainty grows linearly)."""

    def __init__(self, steps: int, step_dt: float, sigma0: float = 0.05, sigma_v: float = 0.15) -> None:
        self.times = step_dt * np.arange(1, steps + 1)
        self.var_profile = sigma0**2 + (sigma_v * self.times) ** 2

    def predict(self, xy: np.ndarray, vxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = xy[:, None, :] + vxy[:, None, :] * self.times[None, :, None]
        var = np.broadcast_to(self.var_profile[None, :, None], mean.shape).copy()
        return mean, var


def _segment_min_distance(rel0: np.ndarray, rel1: np.ndarray) -> float:
    """Smallest |rel| along the straight lines rel0 -> rel1 (rows: humans): the closest approach."""
    d = rel1 - rel0
    dd = np.einsum("ij,ij->i", d, d)
    t = np.clip(-np.einsum("ij,ij->i", rel0, d) / np.maximum(dd, 1e-12), 0.0, 1.0)
    closest = rel0 + t[:, None] * d
    return float(np.sqrt(np.einsum("ij,ij->i", closest, closest).min()))


def run_scenario(
    name: str,
    config: MPCConfig | None = None,
    predictor: str = "cv",
    max_time_s: float = 60.0,
    pred_dt: float = 0.2,
    pred_steps: int = 12,
    scenario: ScenarioConfig | None = None,
    behaviour: str = "proceed",
    decision_period_s: float = 2.0,
    seed: int = 0,
) -> dict:
    """Simulate one scenario until the goal is reached or ``max_time_s``; returns the report row.

    ``behaviour``: a fixed behaviour of the decision layer (``BEHAVIOURS``), or ``"ucb"`` /
    ``"thompson"`` to let the Bayesian decision layer choose one every ``decision_period_s``,
    rewarded with the period's progress and clearance (``outcome_reward``), as belief_node does.
    """
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    if behaviour not in (*BEHAVIOURS, *METHODS):
        raise ValueError(f"behaviour must be one of {BEHAVIOURS} or a decision method {METHODS}, got {behaviour!r}")
    scen_cfg = scenario if scenario is not None else SCENARIOS[name]
    cfg = config or MPCConfig()
    ctrl = MPCController(cfg)
    ctrl.warmup()
    selector = BehaviourSelector(method=behaviour, seed=seed) if behaviour in METHODS else None
    choice = selector.select() if selector else None
    ctrl.set_behaviour(choice[1] if choice else behaviour)
    period_steps = max(round(decision_period_s / cfg.dt), 1)
    period_start_dist, period_clearance = None, math.inf
    world = (HeadOnScenario if name == "head_on" else SyntheticScenario)(scen_cfg)
    goal = np.asarray(scen_cfg.robot_goal, dtype=np.float64)
    start = np.asarray(scen_cfg.robot_start, dtype=np.float64)
    heading = math.atan2(goal[1] - start[1], goal[0] - start[0])
    state = np.array([start[0], start[1], heading, 0.0, 0.0])
    cv = ConstantVelocityPredictor(pred_steps, pred_dt)
    tracker = None
    if predictor == "belief":
        from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

        tracker = BeliefTracker(BeliefConfig(goals=world.goals, mode="bayes"))
        tracker.warmup()
    top_k = cfg.hypotheses_per_human
    out_mean = np.zeros((max(scen_cfg.humans * top_k, 1), pred_steps, 2))
    out_var = np.zeros_like(out_mean)
    dt = cfg.dt
    min_dist, fallbacks, step_ms, iters = math.inf, 0, [], []
    modes: dict[str, int] = {}
    reached_at = None
    for k in range(round(max_time_s / dt)):
        mean, var = cv.predict(world.xy, world.vxy)
        if tracker is not None and scen_cfg.humans:
            probs = tracker.update(world.time, world.ids, world.xy, world.vxy).probabilities
            n = expand_hypotheses(
                mean, var, world.xy, world.vxy, world.goals, probs, top_k, pred_dt, out_mean, out_var
            )
            mean, var = out_mean[:n], out_var[:n]
        t0 = time.perf_counter()
        res = ctrl.step(state, goal, mean, var, pred_dt)
        step_ms.append((time.perf_counter() - t0) * 1e3)
        iters.append(res.iterations)
        modes[res.mode.name] = modes.get(res.mode.name, 0) + 1
        if res.mode in (Mode.SHIFTED_PLAN, Mode.STOP):
            fallbacks += 1
        if res.mode == Mode.GOAL_REACHED:
            reached_at = k * dt
            break
        rel0 = world.xy - state[:2]
        state = unicycle_step(state, res.v, res.omega, dt)
        world.step(dt)
        if scen_cfg.humans:
            step_dist = _segment_min_distance(rel0, world.xy - state[:2])
            min_dist = min(min_dist, step_dist)
            period_clearance = min(period_clearance, step_dist)
        if selector is not None:
            if period_start_dist is None:
                period_start_dist = res.goal_distance
            if (k + 1) % period_steps == 0:
                clearance = period_clearance if math.isfinite(period_clearance) else 10.0
                selector.update(choice[0], outcome_reward(period_start_dist - res.goal_distance, clearance, 0.0))
                choice = selector.select()
                ctrl.set_behaviour(choice[1])
                period_start_dist, period_clearance = res.goal_distance, math.inf
    steps = np.asarray(step_ms)
    return {
        "scenario": name,
        "humans": scen_cfg.humans,
        "predictor": predictor,
        "behaviour": behaviour,
        "goal_reached": reached_at is not None,
        "time_to_goal_s": reached_at,
        "min_distance_m": min_dist if math.isfinite(min_dist) else None,
        "safety_radius_m": cfg.safety_radius,
        "below_safety_radius": bool(min_dist < cfg.safety_radius),
        "fallback_cycles": fallbacks,
        "cycles": len(step_ms),
        "modes": modes,
        "solver_status_counts": ctrl.stats()["solver_status_counts"],
        "mean_iterations": float(np.mean(iters)),
        "step_ms_median": float(np.median(steps)),
        "step_ms_p99": float(np.percentile(steps, 99)),
        "step_ms_max": float(steps.max()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="intent-perf sim", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to run (repeatable; default: all)",
    )
    ap.add_argument(
        "--predictor",
        choices=PREDICTORS,
        default="cv",
        help="cv: constant velocity; belief: cv + goal-directed hypotheses from the BeliefTracker",
    )
    ap.add_argument("--behaviour", default="proceed", choices=(*BEHAVIOURS, *METHODS),
                    help="fixed behaviour, or ucb/thompson: the Bayesian decision layer chooses every 2 s")
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--max-time", type=float, default=60.0, help="seconds of simulated time per scenario")
    ap.add_argument("--json", metavar="PATH", help="write the report rows as JSON")
    args = ap.parse_args(argv)
    cfg = replace(MPCConfig(), horizon=args.horizon)
    rows = [
        run_scenario(name, cfg, args.predictor, args.max_time, behaviour=args.behaviour)
        for name in args.scenario or list(SCENARIOS)
    ]
    head = (
        f"{'scenario':<12} {'humans':>6} {'reached':>7} {'time_s':>7} {'min_dist_m':>10} {'fallbacks':>9} "
        f"{'iters':>6} {'med_ms':>7} {'p99_ms':>7}"
    )
    print(head)
    for r in rows:
        t = f"{r['time_to_goal_s']:.1f}" if r["goal_reached"] else "-"
        d = f"{r['min_distance_m']:.3f}" if r["min_distance_m"] is not None else "-"
        print(
            f"{r['scenario']:<12} {r['humans']:>6} {r['goal_reached']!s:>7} {t:>7} {d:>10} "
            f"{r['fallback_cycles']:>9} {r['mean_iterations']:>6.1f} {r['step_ms_median']:>7.3f} "
            f"{r['step_ms_p99']:>7.3f}"
        )
    ok = all(r["goal_reached"] and not r["below_safety_radius"] for r in rows)
    print(f"safety radius {cfg.safety_radius} m; all goals reached and never below it: {ok}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "rows": rows,
                    "config": {"horizon": cfg.horizon, "dt": cfg.dt, "predictor": args.predictor},
                    "all_ok": ok,
                },
                f,
                indent=2,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
