"""``intent-perf profile <node>``: where one node's core spends time and memory.

The core runs on a synthetic scenario recorded in advance (so the input generation is not
profiled) in separate phases, because each instrument distorts the others: a plain phase for
step latency and RSS growth (psutil), a cProfile phase for the functions over a time threshold,
a tracemalloc phase for allocation sites, and a line_profiler phase when that package is
installed. Everything lands in ``--out``: report.txt, report.json, cprofile.pstats.
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import json
import math
import pstats
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from intent_perf_ros.core.scenario import ScenarioConfig, SyntheticScenario
from intent_perf_ros.core.stats import PERCENTILE_LABELS, LatencyWindow, ProcessSampler


@dataclass
class Workload:
    """One node's core on prepared input: ``step(i)`` processes input message ``i``."""

    description: str
    step: Callable[[int], object]
    line_targets: tuple[Callable[..., object], ...]  # functions line_profiler breaks down


def _recorded_scenario(
    humans: int, seed: int, rate_hz: float, messages: int, crossing: bool = False
) -> tuple[np.ndarray, ...]:
    """ids (M,), goals (K, 2), xy and vxy (messages, M, 2) of a synthetic scenario sampled at ``rate_hz``."""
    scenario = SyntheticScenario(ScenarioConfig(humans=humans, seed=seed, crossing_human=crossing))
    xy = np.empty((messages, humans, 2))
    vxy = np.empty((messages, humans, 2))
    for i in range(messages):
        xy[i] = scenario.xy
        vxy[i] = scenario.vxy
        scenario.step(1.0 / rate_hz)
    return scenario.ids.copy(), scenario.goals.copy(), xy, vxy


def belief_workload(args: argparse.Namespace, messages: int) -> Workload:
    from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

    ids, goals, xy, vxy = _recorded_scenario(args.humans, args.seed, args.rate_hz, messages)
    tracker = BeliefTracker(BeliefConfig(goals=goals, mode=args.belief_mode, seed=args.seed))
    tracker.warmup()
    dt = 1.0 / args.rate_hz
    return Workload(
        description=f"BeliefTracker ({args.belief_mode}), {args.humans} humans at {args.rate_hz:g} Hz",
        step=lambda i: tracker.update(i * dt, ids, xy[i], vxy[i]),
        line_targets=(BeliefTracker.update, BeliefTracker._run),
    )


def mpc_workload(args: argparse.Namespace, messages: int) -> Workload:
    """Closed loop at the controller's own rate: the robot follows its commands between the
    scenario's two robot end points (turning back at each), among humans whose predictions are
    constant-velocity paths with growing variance (the predictor's output shape)."""
    from intent_perf_ros.core.mpc.controller import Mode, MPCConfig, MPCController

    config = MPCConfig()
    _, _, xy, vxy = _recorded_scenario(args.humans, args.seed, 1.0 / config.dt, messages, crossing=True)
    ahead = config.dt * np.arange(1, config.horizon + 1)[None, :, None]  # (1, H, 1) seconds
    means = xy[:, :, None, :] + vxy[:, :, None, :] * ahead  # (messages, M, H, 2)
    variances = np.broadcast_to(0.01 + 0.05 * ahead, means.shape).copy()
    scenario = ScenarioConfig()
    ends = np.array([scenario.robot_start, scenario.robot_goal], dtype=np.float64)
    state = np.zeros(5)
    state[:2] = ends[0]
    target = [1]
    controller = MPCController(config)
    controller.warmup()

    def step(i: int) -> None:
        result = controller.step(state, ends[target[0]], means[i], variances[i], config.dt)
        if result.mode == Mode.GOAL_REACHED:
            target[0] = 1 - target[0]
        state[2] += config.dt * result.omega
        state[0] += config.dt * result.v * math.cos(state[2])
        state[1] += config.dt * result.v * math.sin(state[2])
        state[3], state[4] = result.v, result.omega

    return Workload(
        description=(f"MPCController (horizon {config.horizon}, OSQP), {args.humans} humans "
                     f"at {1 / config.dt:g} Hz"),
        step=step,
        line_targets=(MPCController.step, MPCController._prepare),
    )


def _windows(xy: np.ndarray, length: int) -> np.ndarray:
    """Every run of ``length`` consecutive frames of every human, as (windows, length, 2)."""
    view = np.lib.stride_tricks.sliding_window_view(xy, length, axis=0)  # (n, M, 2, length)
    return np.ascontiguousarray(view.transpose(0, 1, 3, 2)).reshape(-1, length, 2)


def gp_inference_workload(args: argparse.Namespace, messages: int) -> Workload:
    """Prediction for every human per message, from a predictor fitted on synthetic windows of
    another seed (a smaller hyperparameter search than the node's, to start quickly) and fed some
    online windows so both the motion and the place GP are exercised."""
    from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor

    config = PredictorConfig(hyperopt_points=min(200, args.gp_train_windows), hyperopt_restarts=1,
                             max_humans=max(args.humans, 1), seed=args.seed)
    obs, length, rate_hz = config.obs_steps, config.obs_steps + config.pred_steps, 1.0 / config.step_dt
    _, _, train_xy, _ = _recorded_scenario(20, args.seed + 1, rate_hz, 200)
    windows = _windows(train_xy, length)[::3]
    if len(windows) < args.gp_train_windows + 200:
        raise SystemExit(f"--gp-train-windows must be at most {len(windows) - 200}")
    n = args.gp_train_windows
    fitted, online = windows[:n], windows[n : n + 200]
    predictor = TrajectoryPredictor(config).fit(fitted)
    predictor.warmup()
    predictor.add_windows(online)
    _, _, xy, _ = _recorded_scenario(args.humans, args.seed, rate_hz, messages + obs - 1)
    histories = _windows(xy, obs).reshape(messages, args.humans, obs, 2)
    out_mean = np.empty((args.humans, config.pred_steps, 2))
    out_var = np.empty_like(out_mean)
    return Workload(
        description=(f"TrajectoryPredictor fitted on {len(fitted)} synthetic windows + {len(online)} online, "
                     f"{args.humans} humans at {rate_hz:g} Hz"),
        step=lambda i: predictor.predict(histories[i], out_mean, out_var),
        line_targets=(TrajectoryPredictor.predict,),
    )


WORKLOADS: dict[str, Callable[[argparse.Namespace, int], Workload]] = {
    "belief": belief_workload, "gp_inference": gp_inference_workload, "mpc": mpc_workload,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intent-perf profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("node", choices=sorted(WORKLOADS), help="whose core to profile")
    parser.add_argument("--steps", type=int, default=2000, help="messages per phase (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="messages before measuring (default 200)")
    parser.add_argument("--humans", type=int, default=5)
    parser.add_argument("--rate-hz", type=float, default=30.0,
                        help="belief input rate (default 30); gp_inference and mpc run at their models' step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gp-train-windows", type=int, default=500,
                        help="windows the profiled GP is fitted on (default 500; more: slower predictions)")
    parser.add_argument("--belief-mode", choices=("particle", "bayes"), default="particle")
    parser.add_argument("--threshold-ms", type=float, default=0.01,
                        help="list functions whose cumulative time per message exceeds this (default 0.01)")
    parser.add_argument("--top", type=int, default=15, help="allocation sites to list (default 15)")
    parser.add_argument("--rss-every", type=int, default=50, help="sample RSS every N messages (default 50)")
    parser.add_argument("--out", default=None, help="report directory (default out/profile/<node>)")
    return parser


def _latency_phase(workload: Workload, start: int, steps: int, rss_every: int) -> dict:
    window = LatencyWindow(steps)
    sampler = ProcessSampler()
    rss_at: list[int] = []
    rss_mb: list[float] = []
    step = workload.step
    for i in range(start, start + steps):
        if (i - start) % rss_every == 0:
            rss_at.append(i - start)
            rss_mb.append(sampler.sample()[0])
        t0 = time.perf_counter()
        step(i)
        window.add((time.perf_counter() - t0) * 1e3)
    rss_at.append(steps)
    rss_mb.append(sampler.sample()[0])
    slope = float(np.polyfit(rss_at, rss_mb, 1)[0]) * 1000.0 if len(rss_at) > 1 else 0.0
    return {
        "step_ms": dict(zip(PERCENTILE_LABELS, window.percentiles().tolist(), strict=True)),
        "rss_mb": {"start": rss_mb[0], "end": rss_mb[-1], "max": max(rss_mb),
                   "growth": rss_mb[-1] - rss_mb[0], "slope_per_1000_messages": slope},
    }


def _cprofile_phase(
    workload: Workload, start: int, steps: int, threshold_ms: float, out_dir: Path
) -> list[dict]:
    profiler = cProfile.Profile()
    step = workload.step
    profiler.enable()
    for i in range(start, start + steps):
        step(i)
    profiler.disable()
    profiler.dump_stats(out_dir / "cprofile.pstats")
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in pstats.Stats(profiler).stats.items():
        per_message_ms = cumulative / steps * 1e3
        if per_message_ms >= threshold_ms and filename != __file__:  # not this driver's own wrapper
            rows.append({
                "function": f"{name} ({filename}:{line})",
                "cumulative_ms_per_message": per_message_ms,
                "own_ms_per_message": own / steps * 1e3,
                "calls_per_message": calls / steps,
            })
    rows.sort(key=lambda r: r["cumulative_ms_per_message"], reverse=True)
    return rows


def _tracemalloc_phase(workload: Workload, start: int, steps: int, top: int) -> dict:
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    step = workload.step
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot().filter_traces(ignore)
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for i in range(start, start + steps):
            step(i)
        current, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot().filter_traces(ignore)
    finally:
        tracemalloc.stop()
    sites = [
        {"site": str(diff.traceback[0]), "retained_bytes": diff.size_diff, "blocks": diff.count_diff}
        for diff in after.compare_to(before, "lineno") if diff.size_diff != 0
    ][:top]
    return {"peak_bytes_above_start": peak - base, "retained_bytes": current - base, "top_sites": sites}


def _line_profile_phase(workload: Workload, start: int, steps: int, out_dir: Path) -> str | None:
    """Runs only where line_profiler is installed (it is optional); returns the report's file name."""
    if importlib.util.find_spec("line_profiler") is None or not workload.line_targets:
        return None
    from line_profiler import LineProfiler

    profiler = LineProfiler(*workload.line_targets)
    step = profiler(workload.step)
    for i in range(start, start + steps):
        step(i)
    text = io.StringIO()
    profiler.print_stats(stream=text, output_unit=1e-3)
    (out_dir / "line_profile.txt").write_text(text.getvalue())
    return "line_profile.txt"


def _text_report(report: dict) -> str:
    lat, rss, alloc = report["latency"]["step_ms"], report["latency"]["rss_mb"], report["tracemalloc"]
    lines = [
        f"profile of {report['node']}: {report['description']}",
        f"{report['steps']} messages per phase after {report['warmup']} warm-up",
        "step latency (ms, uninstrumented): " + "  ".join(f"{k} {v:.3f}" for k, v in lat.items()),
        (f"RSS (MiB): start {rss['start']:.1f}  end {rss['end']:.1f}  max {rss['max']:.1f}  "
         f"growth {rss['growth']:+.2f}  slope {rss['slope_per_1000_messages']:+.3f} per 1000 messages"),
        "",
        f"functions over {report['threshold_ms']} ms per message (cumulative, under cProfile):",
        f"{'cum ms/msg':>11} {'own ms/msg':>11} {'calls/msg':>10}  function",
    ]
    lines += [
        f"{r['cumulative_ms_per_message']:11.4f} {r['own_ms_per_message']:11.4f} "
        f"{r['calls_per_message']:10.2f}  {r['function']}"
        for r in report["functions"]
    ]
    lines += [
        "",
        (f"tracemalloc: peak {alloc['peak_bytes_above_start'] / 1024:.1f} KiB above the start, "
         f"{alloc['retained_bytes'] / 1024:.1f} KiB retained after {report['steps']} messages"),
        f"{'retained B':>11} {'blocks':>7}  allocation site",
    ]
    lines += [f"{s['retained_bytes']:11d} {s['blocks']:7d}  {s['site']}" for s in alloc["top_sites"]]
    lines.append("")
    lines.append(f"line_profiler: {report['line_profile'] or 'not installed (pip install line_profiler)'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.rss_every < 1:
        raise SystemExit("--steps and --rss-every must be >= 1 and --warmup >= 0")
    out_dir = Path(args.out or f"out/profile/{args.node}")
    out_dir.mkdir(parents=True, exist_ok=True)
    phases = 4
    workload = WORKLOADS[args.node](args, args.warmup + phases * args.steps)
    for i in range(args.warmup):
        workload.step(i)
    starts = [args.warmup + k * args.steps for k in range(phases)]
    report = {
        "node": args.node,
        "description": workload.description,
        "steps": args.steps,
        "warmup": args.warmup,
        "threshold_ms": args.threshold_ms,
        "latency": _latency_phase(workload, starts[0], args.steps, args.rss_every),
        "functions": _cprofile_phase(workload, starts[1], args.steps, args.threshold_ms, out_dir),
        "tracemalloc": _tracemalloc_phase(workload, starts[2], args.steps, args.top),
        "line_profile": _line_profile_phase(workload, starts[3], args.steps, out_dir),
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = _text_report(report)
    (out_dir / "report.txt").write_text(text)
    print(text, end="")
    print(f"written to {out_dir}/ (report.txt, report.json, cprofile.pstats)")
    return 0
