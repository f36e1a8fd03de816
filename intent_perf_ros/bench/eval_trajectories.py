"""ETH/UCY evaluation of the trajectory predictor the node runs (8 observed -> 12 predicted steps).

Settings (see issue 3):
* ``offline``: leave one scene out - fit and tune on the other scenes plus the extra files only.
* ``online``: as offline, and the predictor also learns (``add_windows``) from windows of the
  evaluated recording whose whole 20-frame window ended before the evaluated window starts, in
  time order; the online memory is reset at the start of each recording file.
Metrics per scene: ADE/FDE (m) of ours and of constant velocity (last step), coverage95 (fraction
of true future positions inside the predicted 95% ellipse, per-axis variances), and the mean
predict() time per pedestrian, predictions batched per frame as the node does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from intent_perf_ros.core.gp.predictor import CHI2_2_95, PredictorConfig, TrajectoryPredictor
from intent_perf_ros.core.gp.retune import RETUNE_EVERY
from intent_perf_ros.datasets import eth_ucy

METRICS = ("ade", "fde", "cv_ade", "cv_fde", "coverage95", "us_per_prediction")


def recordings(names: list[str], data_dir: Path) -> list[eth_ucy.Windows]:
    return [eth_ucy.windows(eth_ucy.load_file(data_dir / name)) for name in names]


def training_set(held_out: str, data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of every other scene plus the extra files, a group label per recording file, and
    each window's start time in steps (the predictor replays the online protocol on them)."""
    names = [n for s, files in eth_ucy.SCENE_FILES.items() if s != held_out for n in files]
    parts = recordings([*names, *eth_ucy.EXTRA_TRAIN_FILES], data_dir)
    xy = np.concatenate([p.xy for p in parts])
    groups = np.concatenate([np.full(len(p.xy), i) for i, p in enumerate(parts)])
    frames = np.concatenate([p.start_frame // eth_ucy.FRAME_STEP for p in parts])
    return xy, groups, frames


def evaluate_recording(
    pred: TrajectoryPredictor, rec: eth_ucy.Windows, online: bool, chosen: np.ndarray, acc: dict,
    retune_every: int = RETUNE_EVERY,
) -> None:
    """Predict the chosen windows of one recording frame by frame, learning causally if online."""
    cfg = pred.config
    obs, horizon = cfg.obs_steps, cfg.pred_steps
    end_frame = rec.start_frame + eth_ucy.FRAME_STEP * (obs + horizon - 1)
    by_end = np.argsort(end_frame, kind="stable")
    learned = 0
    out_mean = np.empty((cfg.max_humans, horizon, 2))
    out_var = np.empty((cfg.max_humans, horizon, 2))
    for start in np.unique(rec.start_frame[chosen]):
        if online:
            stop = int(np.searchsorted(end_frame[by_end], start, side="left"))  # ended strictly before
            if stop > learned:
                done = by_end[learned:stop]
                pred.add_windows(rec.xy[done], end_frame[done] // eth_ucy.FRAME_STEP)
                learned = stop
                if pred.place_retune_due(every=retune_every):  # the node does it in a child process (gp.background)
                    pred.retune_place_now()
        idx = chosen[rec.start_frame[chosen] == start]
        for lo in range(0, idx.size, cfg.max_humans):
            batch = idx[lo : lo + cfg.max_humans]
            hist = np.ascontiguousarray(rec.xy[batch, :obs])
            truth = rec.xy[batch, obs:]
            m = batch.size
            t0 = time.perf_counter()
            pred.predict(hist, out_mean, out_var)
            acc["seconds"] += time.perf_counter() - t0
            mean, var = out_mean[:m], out_var[:m]
            err = np.linalg.norm(mean - truth, axis=2)
            vel = hist[:, -1] - hist[:, -2]
            cv = hist[:, -1][:, None] + np.arange(1, horizon + 1)[None, :, None] * vel[:, None]
            cv_err = np.linalg.norm(cv - truth, axis=2)
            d2 = ((mean - truth) ** 2 / np.maximum(var, 1e-12)).sum(axis=2)
            acc["ade"] += err.mean(axis=1).sum()
            acc["fde"] += err[:, -1].sum()
            acc["cv_ade"] += cv_err.mean(axis=1).sum()
            acc["cv_fde"] += cv_err[:, -1].sum()
            acc["inside"] += (d2 <= CHI2_2_95).sum()
            acc["points"] += d2.size
            acc["n"] += m


def evaluate_scene(
    scene: str, settings: list[str], cfg: PredictorConfig, data_dir: Path, max_windows: int | None, seed: int,
    retune_every: int = RETUNE_EVERY,
) -> dict:
    xy, groups, frames = training_set(scene, data_dir)
    recs = recordings(list(eth_ucy.SCENE_FILES[scene]), data_dir)
    total = sum(len(r.xy) for r in recs)
    rng = np.random.default_rng(seed)
    keep = (
        np.sort(rng.choice(total, size=max_windows, replace=False))
        if max_windows is not None and max_windows < total
        else np.arange(total)
    )
    result = {}
    pred = TrajectoryPredictor(cfg).fit(xy, groups, frames)
    pred.warmup()
    for setting in settings:
        acc = dict.fromkeys(("ade", "fde", "cv_ade", "cv_fde", "inside", "points", "n", "seconds"), 0.0)
        offset = 0
        for rec in recs:
            chosen = keep[(keep >= offset) & (keep < offset + len(rec.xy))] - offset
            offset += len(rec.xy)
            pred.reset_online()
            evaluate_recording(pred, rec, setting == "online", chosen, acc, retune_every)
        n = acc["n"]
        result[setting] = {
            "ade": acc["ade"] / n,
            "fde": acc["fde"] / n,
            "cv_ade": acc["cv_ade"] / n,
            "cv_fde": acc["cv_fde"] / n,
            "coverage95": acc["inside"] / acc["points"],
            "us_per_prediction": 1e6 * acc["seconds"] / n,
            "n_windows": int(n),
            "n_windows_total": int(total),
            "stats": pred.stats(),
        }
        pred.reset_online()
    return result


def print_table(results: dict) -> None:
    for setting, per_scene in results.items():
        print(f"\n[{setting}]")
        print(
            f"{'scene':8s} {'ADE':>7s} {'FDE':>7s} {'CV ADE':>7s} {'CV FDE':>7s} {'dADE%':>7s} {'dFDE%':>7s} "
            f"{'cov95':>6s} {'us/pred':>8s} {'windows':>9s}"
        )
        for scene, r in per_scene.items():
            dade = 100.0 * (r["ade"] / r["cv_ade"] - 1.0)
            dfde = 100.0 * (r["fde"] / r["cv_fde"] - 1.0)
            windows = f"{r.get('n_windows', '')}"
            print(
                f"{scene:8s} {r['ade']:7.3f} {r['fde']:7.3f} {r['cv_ade']:7.3f} {r['cv_fde']:7.3f} "
                f"{dade:7.1f} "
                f"{dfde:7.1f} {r['coverage95']:6.3f} {r['us_per_prediction']:8.1f} {windows:>9s}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="intent-perf eval-trajectories", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--setting", choices=("offline", "online", "both"), default="both")
    parser.add_argument("--json", type=Path, help="write {'offline': {...}, 'online': {...}} here")
    parser.add_argument("--scenes", nargs="+", choices=eth_ucy.SCENES, default=list(eth_ucy.SCENES))
    parser.add_argument(
        "--max-windows",
        type=int,
        default=None,
        help="evaluate at most this many windows per scene (random subset, fixed seed); "
        "online learning still sees every earlier window",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--backend", choices=("auto", "numpy", "torch"), default="auto")
    parser.add_argument(
        "--retune-every",
        type=int,
        default=RETUNE_EVERY,
        help="online: re-tune the place GP after every N windows it learns, as the node does (0: never)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads (default 1: on a shared 2-core machine more threads oversubscribe)",
    )
    args = parser.parse_args(argv)
    with threadpool_limits(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or eth_ucy.default_data_dir()
    if not data_dir.exists():
        print(
            f"ETH/UCY data not found at {data_dir}; set INTENT_PERF_ETH_UCY or pass --data-dir",
            file=sys.stderr,
        )
        return 2
    settings = ["offline", "online"] if args.setting == "both" else [args.setting]
    cfg = PredictorConfig(backend=args.backend, seed=args.seed)
    results: dict[str, dict] = {s: {} for s in settings}
    for scene in args.scenes:
        t0 = time.perf_counter()
        per_setting = evaluate_scene(scene, settings, cfg, data_dir, args.max_windows, args.seed, args.retune_every)
        for setting in settings:
            results[setting][scene] = per_setting[setting]
        print(f"{scene}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for setting in settings:
        scenes = [results[setting][s] for s in args.scenes]
        results[setting]["average"] = {k: float(np.mean([r[k] for r in scenes])) for k in METRICS}
    print_table(results)
    if args.max_windows is not None:
        print(
            f"\nnote: at most {args.max_windows} windows per scene evaluated "
            f"(random subset, seed {args.seed})"
        )
    if args.json:  # exactly the schema: six figures per scene and for the average
        exact = {
            setting: {scene: {k: float(r[k]) for k in METRICS} for scene, r in per_scene.items()}
            for setting, per_scene in results.items()
        }
        args.json.write_text(json.dumps(exact, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
