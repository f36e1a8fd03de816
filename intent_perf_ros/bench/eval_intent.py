"""ETH/UCY evaluation of goal inference (``intent-perf eval-intent``).

Protocol, per scene (ETH, HOTEL, UNIV, ZARA1, ZARA2; UNIV's two recordings together):
* Evaluated tracks: at least ``--min-frames`` annotations (default 8 = 3.2 s) and at least
  ``--min-travel`` metres (default 2) between first and last position, i.e. people going somewhere.
* Goals, learned for each evaluated track separately, leave-one-out: average-linkage clusters
  (``EndpointGoalLearner``) of both endpoints of every *other* track of the scene that travelled
  at least 1 m. The evaluated track never contributes to its own goals.
* True goal: the learned goal nearest to the evaluated track's last position.
* The filter is fed the first ceil(f T) positions (f = 25%, 50%, 75%; at least 2), starting at the
  second one with velocities from finite differences (causal), and reports its belief then.
  Prior of a new track (``--prior``): ``od`` (default) the origin -> destination flows of the other
  tracks given the goal nearest the first observed position (``OriginDestinationPrior``, alpha 1),
  ``marginal`` each goal's share of endpoints; times (1 - ``--wander-prior``), and
  ``--wander-prior`` on wandering. Filter settings are BeliefConfig's defaults, chosen on the extra
  training files (crowds_zara03, uni_examples), never on the five evaluated scenes.
* ``--train`` evaluates the training files instead (``--scenes zara3 uni_examples``, same
  protocol, their ``average`` over the two), and ``--set NAME=VALUE`` overrides a numeric
  BeliefConfig setting: together, the way to compare settings without touching the five scenes.
* ``--flow-cell C`` (off by default) also learns a GoalFlowField (cells of C metres) from the other
  tracks, each labelled with the goal nearest its end, and bends the motion model along it.
* Particle mode draws its random numbers from seed ``--seed`` + the track's row, so a rerun with
  another ``--seed`` shows the Monte Carlo spread of the figures (about +-1 point on the average).
* Top-1 accuracy: the most likely of the K + 1 hypotheses equals the true goal (wandering counts
  as wrong). Log-loss: -ln p(true goal), probabilities clipped at 1e-9.
* Baseline (heading only): p_k proportional to exp(kappa cos theta_k), theta_k the angle between
  the last observed displacement and the direction to goal k. Its kappa is the best of a grid on
  the scene itself (an oracle tuning that favours the baseline), so log-losses compare fairly.
The JSON (``--json``) has one object per scene and ``average`` (unweighted mean of the five), each
with exactly ``acc25 acc50 acc75 logloss50 baseline_acc50 baseline_logloss50``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from intent_perf_ros.core.belief.goals import (
    EndpointGoalLearner,
    GoalFlowField,
    OriginDestinationPrior,
    track_endpoints,
)
from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker
from intent_perf_ros.datasets import eth_ucy

# The extra training files: filter settings are chosen on these, never on the five evaluated scenes.
TRAIN_FILES: dict[str, tuple[str, ...]] = {
    "zara3": ("crowds_zara03.txt",),
    "uni_examples": ("uni_examples.txt",),
}
SCENE_FILES: dict[str, tuple[str, ...]] = {**eth_ucy.SCENE_FILES, **TRAIN_FILES}
FRACTIONS = (0.25, 0.5, 0.75)
KEYS = ("acc25", "acc50", "acc75", "logloss50", "baseline_acc50", "baseline_logloss50")
KAPPAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
FRAME_DT = eth_ucy.STEP_DT / eth_ucy.FRAME_STEP
CLIP = 1e-9


def observed_counts(length: int) -> list[int]:
    return [max(2, math.ceil(f * length)) for f in FRACTIONS]


def heading_scores(xy: np.ndarray, n: int, goals: np.ndarray) -> np.ndarray:
    """cos theta_k between the last observed displacement and the direction to each goal (K,)."""
    d = xy[n - 1] - xy[n - 2]
    to = goals - xy[n - 1]
    dn = np.hypot(*d)
    tn = np.hypot(to[:, 0], to[:, 1])
    if dn == 0.0:
        return np.zeros(goals.shape[0])
    return (to @ d) / (dn * np.maximum(tn, 1e-9))


def run_filter(
    tracker: BeliefTracker, frames: np.ndarray, xy: np.ndarray, stops: list[int]
) -> list[np.ndarray]:
    """Belief after each number of observed positions in ``stops`` (positions 0..n-1)."""
    out = []
    pid = np.zeros(1, dtype=np.int64)
    t = frames * FRAME_DT
    for j in range(1, max(stops)):
        v = (xy[j] - xy[j - 1]) / (t[j] - t[j - 1])
        result = tracker.update(float(t[j]), pid, xy[j][None], v[None])
        if j + 1 in stops:
            out.extend(result.probabilities[0].copy() for s in stops if s == j + 1)
    return out


def evaluate_scene(scene: str, args: argparse.Namespace, data_dir: Path) -> tuple[dict, dict]:
    """(the six metrics, extra information) of one scene; see the module docstring for the protocol."""
    all_tracks = [
        tr for name in SCENE_FILES[scene] for tr in eth_ucy.tracks(eth_ucy.load_file(data_dir / name))
    ]
    ends, owner = [], []
    for i, tr in enumerate(all_tracks):
        pts = track_endpoints([tr.xy], both_ends=True, min_travel_m=1.0)
        ends.append(pts)
        owner.extend([i] * len(pts))
    ends = np.vstack(ends)
    owner = np.asarray(owner)
    starts = np.array([tr.xy[0] for tr in all_tracks])
    finals = np.array([tr.xy[-1] for tr in all_tracks])
    moving = np.hypot(*(finals - starts).T) >= 1.0
    travel = np.hypot(*(finals - starts).T)
    evaluated = [
        i
        for i, tr in enumerate(all_tracks)
        if len(tr.frames) >= args.min_frames and travel[i] >= args.min_travel
    ]
    if args.max_tracks and len(evaluated) > args.max_tracks:
        pick = np.random.default_rng(0).choice(len(evaluated), args.max_tracks, replace=False)
        evaluated = [evaluated[i] for i in sorted(pick)]
    learner = EndpointGoalLearner(
        radius_m=args.goal_radius, min_support=args.min_support, max_goals=args.max_goals
    )
    hits = np.zeros((len(evaluated), 3))
    losses = np.zeros((len(evaluated), 3))
    base_hits = np.zeros(len(evaluated))
    base_cos, base_true = [], []
    n_goals = []
    for row, i in enumerate(evaluated):
        tr = all_tracks[i]
        learner.fit(ends[owner != i])
        goals = learner.goals_
        n_goals.append(goals.shape[0])
        true = int(np.argmin(np.hypot(*(goals - tr.xy[-1]).T)))
        others = moving.copy()
        others[i] = False
        flow = None
        if args.flow_cell > 0:
            idx = np.flatnonzero(others)
            labels = np.argmin(
                np.hypot(finals[idx, None, 0] - goals[None, :, 0], finals[idx, None, 1] - goals[None, :, 1]),
                axis=1,
            )
            flow = GoalFlowField(cell_m=args.flow_cell).fit(goals, [all_tracks[j].xy for j in idx], labels)
        if args.prior == "od":
            goal_prior = (
                OriginDestinationPrior()
                .fit(goals, starts[others], finals[others], learner.prior_)
                .predict(tr.xy[0])
            )
        else:
            goal_prior = learner.prior_
        prior = np.append(goal_prior * (1.0 - args.wander_prior), args.wander_prior)
        tracker = BeliefTracker(
            BeliefConfig(
                goals=goals,
                mode=args.mode,
                particles=args.particles,
                capacity=1,
                seed=args.seed + row,
                prior=prior,
                flow=flow,
                **getattr(args, "overrides", {}),
            )
        )
        stops = observed_counts(len(tr.frames))
        beliefs = run_filter(tracker, tr.frames, tr.xy, stops)
        for f, p in enumerate(beliefs):
            hits[row, f] = float(np.argmax(p) == true)
            losses[row, f] = -math.log(max(p[true], CLIP))
        cos = heading_scores(tr.xy, stops[1], goals)
        base_hits[row] = float(np.argmax(cos) == true)
        base_cos.append(cos)
        base_true.append(true)
    # Baseline log-loss at 50% for each kappa of the grid; keep the best (oracle tuning).
    best = math.inf
    for kappa in KAPPAS:
        total = 0.0
        for cos, true in zip(base_cos, base_true, strict=True):
            z = kappa * cos
            logp = z[true] - (z.max() + math.log(np.exp(z - z.max()).sum()))
            total -= max(logp, math.log(CLIP))
        best = min(best, total / len(base_cos))
    result = {
        "acc25": hits[:, 0].mean(),
        "acc50": hits[:, 1].mean(),
        "acc75": hits[:, 2].mean(),
        "logloss50": losses[:, 1].mean(),
        "baseline_acc50": base_hits.mean(),
        "baseline_logloss50": best,
    }
    info = {
        "tracks": len(evaluated),
        "goals_mean": float(np.mean(n_goals)),
        "logloss25": losses[:, 0].mean(),
        "logloss75": losses[:, 2].mean(),
    }
    return {k: float(v) for k, v in result.items()}, info


# BeliefConfig fields that are not numeric model settings (set by the protocol, not by --set).
NOT_SETTABLE = ("goals", "labels", "mode", "particles", "capacity", "seed", "prior", "flow")


def parse_overrides(items: list[str]) -> dict[str, float]:
    """``["name=value", ...]`` -> {name: float}; names must be numeric BeliefConfig fields."""
    fields = {f.name for f in dataclasses.fields(BeliefConfig)} - set(NOT_SETTABLE)
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            raise ValueError(f"--set wants NAME=VALUE with NAME one of {sorted(fields)}, got {item!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"--set {name}: {value!r} is not a number") from None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intent-perf eval-intent", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the per-scene results here")
    parser.add_argument("--mode", choices=("particle", "bayes"), default="particle")
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="first random seed (track i of a scene uses seed + i); rerun with others to see the "
        "particle filter's Monte Carlo spread",
    )
    parser.add_argument(
        "--scenes",
        nargs="+",
        choices=list(SCENE_FILES),
        default=list(eth_ucy.SCENES),
        help="scenes to evaluate (default: the five); zara3 and uni_examples are the training files",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="evaluate the training files (zara3, uni_examples) instead of the five scenes: the only "
        "place to choose filter settings",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a numeric BeliefConfig setting, e.g. --set bayes_relax_time_s=1.0 (repeatable)",
    )
    parser.add_argument(
        "--max-tracks",
        type=int,
        default=0,
        help="evaluate at most this many tracks per scene (a fixed random subset; 0 = all)",
    )
    parser.add_argument("--min-frames", type=int, default=8)
    parser.add_argument("--min-travel", type=float, default=2.0)
    parser.add_argument("--goal-radius", type=float, default=2.0, help="clustering distance of endpoints, m")
    parser.add_argument("--min-support", type=int, default=3)
    parser.add_argument("--max-goals", type=int, default=12)
    parser.add_argument("--wander-prior", type=float, default=0.05)
    parser.add_argument(
        "--prior",
        choices=("od", "marginal"),
        default="od",
        help="prior of a new track: origin-destination flows or endpoint shares",
    )
    parser.add_argument(
        "--flow-cell",
        type=float,
        default=0.0,
        help="learn a per-goal flow field with cells of this size (m); 0 = straight lines",
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    data_dir = args.data_dir or eth_ucy.default_data_dir()
    if not data_dir.is_dir():
        print(
            f"ETH/UCY data not found at {data_dir}; set INTENT_PERF_ETH_UCY or pass --data-dir",
            file=sys.stderr,
        )
        return 2
    if not 0 < args.wander_prior < 1:
        parser.error("--wander-prior must be in (0, 1)")
    if args.train:
        args.scenes = list(TRAIN_FILES)
    try:
        args.overrides = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))
    BeliefTracker(
        BeliefConfig(goals=np.zeros((1, 2)), mode=args.mode, particles=args.particles, **args.overrides)
    ).warmup()
    report = {}
    print(f"{'scene':7s} {'tracks':>6s} {'goals':>5s} " + " ".join(f"{k:>18s}" for k in KEYS) + "  seconds")
    for scene in args.scenes:
        start = time.perf_counter()
        report[scene], info = evaluate_scene(scene, args, data_dir)
        print(
            f"{scene:7s} {info['tracks']:6d} {info['goals_mean']:5.1f} "
            + " ".join(f"{report[scene][k]:18.3f}" for k in KEYS)
            + f"  {time.perf_counter() - start:7.1f}"
        )
    report["average"] = {k: float(np.mean([report[s][k] for s in args.scenes])) for k in KEYS}
    print(f"{'average':7s} {'':6s} {'':5s} " + " ".join(f"{report['average'][k]:18.3f}" for k in KEYS))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
