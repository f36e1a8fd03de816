"""First-callback latency: after the configure-time precompute, is the first call as fast as the rest?

Issue 9 asks that a node's first callback be within 2x of steady state. For each core (GP predictor,
belief tracker, MPC controller) a fresh interpreter (nothing compiled, nothing imported, BLAS pools sized
by ``--threads`` from the start, as in a node that just started) imports the core, builds it as its node
does (the GP predictor is loaded from a diskcache store, as ``default_predictor`` does on a warm
restart), runs ``warmup()``, then times the first call and the next ``--calls`` calls on synthetic input
that changes every call. Reported per fresh process: import, construction (or load) and warmup seconds
(the configure-time cost), the first call, the median of the rest and their ratio, in wall and in
thread CPU time (see ``measure``). Modes: ``warmup`` (what the nodes do today), ``none`` (belief, MPC:
what the precompute saves; the GP predictor refuses to predict without it) and ``warmup+batch`` (GP:
one extra predict of a full ``max_humans`` batch after ``warmup()``, the proposed warmup; see
docs/caches.md). Each variant runs ``--repeats`` times because one first call per process is a single
sample; the verdict uses the median ratio over those processes. Exit status 1 when a core in mode
``warmup`` misses the goal in wall time.

    python -m intent_perf_ros.bench.first_callback --json out/first_callback.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

GOAL_RATIO = 2.0
HUMANS = 20
OBS, PRED, STEP_DT = 8, 12, 0.4
CONTROL_DT = 0.1
VARIANTS = (
    ("gp", "warmup"), ("gp", "warmup+batch"), ("belief", "warmup"), ("belief", "none"), ("mpc", "warmup"),
    ("mpc", "none"),
)


def _walk(n_steps: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    """(HUMANS, n_steps, 2) positions of people walking with slowly turning velocities."""
    vel = rng.normal(0.0, 0.8, size=(HUMANS, 1, 2)) + rng.normal(0.0, 0.05, size=(HUMANS, n_steps, 2)).cumsum(1)
    return rng.uniform(-8.0, 8.0, size=(HUMANS, 1, 2)) + np.cumsum(vel * dt, axis=1)


def _gp(store_dir: str, calls: int, mode: str, rng: np.random.Generator) -> tuple[dict, Callable[[int], None]]:
    t0 = time.perf_counter()
    from intent_perf_ros.core.gp.predictor import PredictorConfig
    from intent_perf_ros.core.gp.store import load_predictor

    t1 = time.perf_counter()
    pred = load_predictor(store_dir, _gp_config(PredictorConfig))
    t2 = time.perf_counter()
    pred.warmup()
    if mode == "warmup+batch":  # every buffer row and the BLAS paths at full size, not just one history
        m = pred.config.max_humans
        batch = np.zeros((m, OBS, 2))
        batch[:, :, 0] = np.arange(OBS) * 0.5
        pred.predict(batch, np.empty((m, PRED, 2)), np.empty((m, PRED, 2)))
    t3 = time.perf_counter()
    walk = _walk(OBS + calls + 1, STEP_DT, rng)
    hists = [np.ascontiguousarray(walk[:, i : i + OBS]) for i in range(calls + 1)]
    mean, var = np.empty((HUMANS, PRED, 2)), np.empty((HUMANS, PRED, 2))

    def call(i: int) -> None:
        pred.predict(hists[i], mean, var)

    return {"import_s": t1 - t0, "construct_s": t2 - t1, "warmup_s": t3 - t2}, call


def _gp_config(config_cls):
    # Moderate fit settings keep the parent's fit short; max_train=1000 keeps predict at realistic cost.
    return config_cls(max_humans=64, max_train=1000, hyperopt_points=200, hyperopt_restarts=0)


def _belief(calls: int, mode: str, rng: np.random.Generator) -> tuple[dict, Callable[[int], None]]:
    t0 = time.perf_counter()
    from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

    t1 = time.perf_counter()
    goals = np.array([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    tracker = BeliefTracker(BeliefConfig(goals=goals, particles=1000, capacity=64))
    t2 = time.perf_counter()
    if mode == "warmup":
        tracker.warmup()
    t3 = time.perf_counter()
    walk = _walk(calls + 2, CONTROL_DT, rng)
    ids = np.arange(HUMANS, dtype=np.int64)
    xy = [np.ascontiguousarray(walk[:, i]) for i in range(calls + 1)]
    vxy = [np.ascontiguousarray((walk[:, i + 1] - walk[:, i]) / CONTROL_DT) for i in range(calls + 1)]
    ahead = STEP_DT * np.arange(1, PRED + 1)[None, :, None]
    pred = [np.ascontiguousarray(xy[i][:, None] + ahead * vxy[i][:, None]) for i in range(calls + 1)]

    def call(i: int) -> None:
        tracker.update(i * CONTROL_DT, ids, xy[i], vxy[i], pred[i], STEP_DT)

    return {"import_s": t1 - t0, "construct_s": t2 - t1, "warmup_s": t3 - t2}, call


def _mpc(calls: int, mode: str, rng: np.random.Generator) -> tuple[dict, Callable[[int], int]]:
    t0 = time.perf_counter()
    from intent_perf_ros.core.mpc.controller import MPCConfig, MPCController

    t1 = time.perf_counter()
    ctrl = MPCController(MPCConfig())
    t2 = time.perf_counter()
    if mode == "warmup":
        ctrl.warmup()
    t3 = time.perf_counter()
    horizon = ctrl.config.horizon
    # Humans crossing the robot's path (the x axis) one after another; goal far enough never to be reached.
    start = np.column_stack([np.linspace(2.0, 18.0, 5), rng.uniform(-6.0, -3.0, 5)])
    vel = np.column_stack([np.zeros(5), rng.uniform(0.6, 1.0, 5)])
    ahead = CONTROL_DT * np.arange(1, horizon + 1)[None, :, None]
    var = np.full((5, horizon, 2), 0.02)
    state, goal = np.zeros(5), np.array([100.0, 0.0])

    def call(i: int) -> int:
        now = start + vel * (i * CONTROL_DT)
        res = ctrl.step(state, goal, now[:, None] + ahead * vel[:, None], var, CONTROL_DT)
        state[0] += CONTROL_DT * res.v * np.cos(state[2])
        state[1] += CONTROL_DT * res.v * np.sin(state[2])
        state[2] += CONTROL_DT * res.omega
        state[3], state[4] = res.v, res.omega
        return res.iterations

    return {"import_s": t1 - t0, "construct_s": t2 - t1, "warmup_s": t3 - t2}, call


def measure(core: str, mode: str, calls: int, seed: int, store_dir: str) -> dict:
    """One run in this (fresh) process: configure-time costs, first call and the median of the next ``calls``.

    Each call is timed twice: wall time (what a callback sees, preemption included) and this thread's CPU
    time (the work the call did, page faults and compilation included, not the waits for a core another
    process holds). On a busy machine one first call per process is mostly scheduling noise in wall time.
    Calls return the solver's iterations where there is a solver (MPC), so a slow first call can be told
    apart: more work (no previous plan to warm start from) or slower work (compilation, cold memory).
    """
    rng = np.random.default_rng(seed)
    if core == "gp":
        info, call = _gp(store_dir, calls, mode, rng)
    else:
        info, call = {"belief": _belief, "mpc": _mpc}[core](calls, mode, rng)
    wall = np.empty(calls + 1)
    cpu = np.empty(calls + 1)
    work = []
    for i in range(calls + 1):
        c, t = time.thread_time(), time.perf_counter()
        done = call(i)
        wall[i], cpu[i] = time.perf_counter() - t, time.thread_time() - c
        work.append(done)
    out = dict(info)
    for name, times in (("", wall * 1e3), ("cpu_", cpu * 1e3)):
        median = float(np.median(times[1:]))
        out[f"{name}first_ms"] = float(times[0])
        out[f"{name}median_ms"] = median
        out[f"{name}p90_ms"] = float(np.percentile(times[1:], 90))
        out[f"{name}ratio"] = float(times[0]) / median
    if work[0] is not None:
        out["first_iterations"] = work[0]
        out["median_iterations"] = float(np.median(work[1:]))
    return out


def _spawn_measure(core: str, mode: str, calls: int, seed: int, store_dir: str, threads: int) -> dict:
    """``measure`` in a new interpreter whose BLAS/OpenMP pools have ``threads`` threads from the start."""
    env = {**os.environ, **{f"{lib}_NUM_THREADS": str(threads) for lib in ("OPENBLAS", "OMP", "MKL")}}
    code = (
        "import json, sys; from intent_perf_ros.bench.first_callback import measure; "
        "print(json.dumps(measure(*json.loads(sys.argv[1]))))"
    )
    args = json.dumps([core, mode, calls, seed, store_dir])
    out = subprocess.run([sys.executable, "-c", code, args], env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{core} run failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fit_store(directory: str) -> None:
    """Fit the GP once in this (parent) process and store it, so the children start from a stored model."""
    from intent_perf_ros.core.gp.predictor import PredictorConfig, TrajectoryPredictor
    from intent_perf_ros.core.gp.store import save_predictor

    rng = np.random.default_rng(0)
    windows = np.concatenate([_walk(OBS + PRED, STEP_DT, rng) for _ in range(60)])  # 1200 windows
    save_predictor(TrajectoryPredictor(_gp_config(PredictorConfig)).fit(windows), directory)


def _machine(threads: int) -> dict:
    return {
        "blas_threads": threads,
        "node": platform.node(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average": os.getloadavg(),
    }


def run(cores: list[str], calls: int, repeats: int, threads: int) -> dict:
    """Every variant of ``cores`` in ``repeats`` fresh processes, one at a time (they do not compete)."""
    results = []
    with tempfile.TemporaryDirectory(prefix="intent_perf_first_callback_") as store_dir:
        if "gp" in cores:
            t = time.perf_counter()
            _fit_store(store_dir)
            fit_s = time.perf_counter() - t
        for core, mode in VARIANTS:
            if core not in cores:
                continue
            runs = [_spawn_measure(core, mode, calls, rep, store_dir, threads) for rep in range(repeats)]
            wall = float(np.median([r["ratio"] for r in runs]))
            cpu = float(np.median([r["cpu_ratio"] for r in runs]))
            entry = {
                "core": core,
                "mode": mode,
                "runs": runs,
                "median_ratio": wall,
                "median_cpu_ratio": cpu,
                "within_goal": wall <= GOAL_RATIO,
                "within_goal_cpu": cpu <= GOAL_RATIO,
            }
            if core == "gp":
                entry["parent_fit_s"] = fit_s
            results.append(entry)
    return {"goal_ratio": GOAL_RATIO, "calls": calls, "repeats": repeats, "humans": HUMANS,
            "machine": _machine(threads), "results": results}


def print_table(report: dict) -> None:
    print(f"{'core':7} {'mode':12} {'import s':>8} {'build s':>8} {'warmup s':>8} {'first ms':>9} "
          f"{'median ms':>9} {'wall ratios':>18} {'cpu ratios':>18}  goal: median ratio <= {report['goal_ratio']:g}")
    for e in report["results"]:
        runs = e["runs"]
        med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        wall = " ".join(f"{r['ratio']:.1f}" for r in runs)
        cpu = " ".join(f"{r['cpu_ratio']:.1f}" for r in runs)
        verdict = f"wall {'yes' if e['within_goal'] else 'NO'}, cpu {'yes' if e['within_goal_cpu'] else 'NO'}"
        if "first_iterations" in med:
            verdict += f" (iterations {med['first_iterations']:.0f} vs {med['median_iterations']:.0f})"
        print(f"{e['core']:7} {e['mode']:12} {med['import_s']:8.2f} {med['construct_s']:8.3f} "
              f"{med['warmup_s']:8.2f} {med['first_ms']:9.3f} {med['median_ms']:9.3f} {wall:>18} {cpu:>18}  "
              f"{verdict if e['mode'] != 'none' else '-'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", default="gp,belief,mpc", help="comma-separated subset of gp,belief,mpc")
    parser.add_argument("--calls", type=int, default=200, help="steady-state calls after the first")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads in each timed process (default 1: four node processes share the cores)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    cores = [c for c in args.cores.split(",") if c]
    unknown = set(cores) - {"gp", "belief", "mpc"}
    if unknown or not cores:
        parser.error(f"--cores takes gp, belief and/or mpc, got {args.cores!r}")
    if min(args.calls, args.repeats, args.threads) < 1:
        parser.error("--calls, --repeats and --threads must be >= 1")
    report = run(cores, args.calls, args.repeats, args.threads)
    print_table(report)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if all(e["within_goal"] for e in report["results"] if e["mode"] == "warmup") else 1


if __name__ == "__main__":
    sys.exit(main())
