"""Belief update benchmark (``intent-perf bench-belief``): numba kernels vs plain numpy, side by side.

Cases, each timed per update over ``--updates`` steady-state updates after a warm-up:
* ``particle_numba``: BeliefTracker.update for 10 humans x 1000 particles, 4 goals + wandering.
* ``particle_numpy``: the same motion model, likelihood and per-human systematic resampling
  written as vectorised numpy over the (10, 1000) particle arrays (resampling every update, which
  is what the tracker does in practice on these tracks). It skips the mixture bookkeeping and
  draws from the motion model (bootstrap proposal) where the tracker draws each move from its
  posterior given the observation (locally optimal proposal, a little more arithmetic per
  particle), so it is a lower bound on what a numpy version of the tracker would cost.
* ``bayes_numba`` and ``bayes_numpy``: 100 humans in Bayes-filter mode.
* ``resample_*``: systematic resampling of 1000 weights alone: filterpy's ``systematic_resample``
  (Python while-loop), numpy cumsum + searchsorted, and the numba kernel the tracker uses.
Allocation: tracemalloc around ``--updates`` steady-state tracker updates: bytes still held after
them that were allocated in the tracker's own files, in total, and the peak above the start (the
transient objects of one call: numba's boxing of the arguments). The JSON (``--json``) also names
the machine and the library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import filterpy
import numba
import numpy as np
from filterpy.monte_carlo import systematic_resample as filterpy_systematic_resample

from intent_perf_ros.core.belief.resample import systematic_indices, systematic_indices_numpy
from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

GOALS = np.array([[15.0, 0.0], [0.0, 15.0], [-15.0, 0.0], [0.0, -15.0]])
DT = 0.4
TARGET_US = 1000.0  # the goal for 10 humans x 1000 particles


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "filterpy": filterpy.__version__,
    }


def stats_us(samples_ns: list[int]) -> dict[str, float]:
    us = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {
        "median_us": float(np.median(us)),
        "p95_us": float(np.percentile(us, 95)),
        "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()),
        "n": int(us.size),
    }


def time_calls(fn: Callable[[int], object], n: int) -> list[int]:
    out = []
    for k in range(n):
        start = time.perf_counter_ns()
        fn(k)
        out.append(time.perf_counter_ns() - start)
    return out


class Crowd:
    """Humans walking straight to random goals (observations with noise), for any number of humans."""

    def __init__(self, humans: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.xy = rng.uniform(-5.0, 5.0, size=(humans, 2))
        target = GOALS[rng.integers(0, len(GOALS), size=humans)]
        d = target - self.xy
        self.v = 1.2 * d / np.linalg.norm(d, axis=1, keepdims=True)
        self.ids = np.arange(humans, dtype=np.int64)
        self.obs_xy = self.xy.copy()
        self.obs_v = self.v.copy()

    def step(self) -> None:
        self.xy += self.v * DT
        # Wrap around so the humans stay in the scene however long the benchmark runs.
        self.xy[np.abs(self.xy) > 12.0] *= -0.5
        np.add(self.xy, 0.05 * self.rng.standard_normal(self.xy.shape), out=self.obs_xy)
        np.add(self.v, 0.1 * self.rng.standard_normal(self.v.shape), out=self.obs_v)


def bench_tracker(mode: str, humans: int, particles: int, updates: int) -> tuple[dict, dict]:
    cfg = BeliefConfig(goals=GOALS, mode=mode, particles=particles, capacity=max(64, humans))
    tracker = BeliefTracker(cfg)
    tracker.warmup()
    crowd = Crowd(humans)
    frames = []
    for _ in range(updates + 20):
        crowd.step()
        frames.append((crowd.obs_xy.copy(), crowd.obs_v.copy()))
    for k in range(20):
        tracker.update(k * DT, crowd.ids, *frames[k])

    def one(k: int) -> None:
        tracker.update((k + 20) * DT, crowd.ids, *frames[k + 20])

    result = stats_us(time_calls(one, updates))
    result["resamples_per_update"] = tracker.stats()["resamples"] / tracker.stats()["updates"]
    # Allocation over a second pass of the same updates (time keeps moving forward). Times are
    # built beforehand so the loop itself creates no objects; tracemalloc then attributes what is
    # still held afterwards, and the peak, to the tracker's own source files.
    times = [(k + 20 + updates) * DT for k in range(updates)]
    tracemalloc.start(8)
    try:
        before = tracemalloc.take_snapshot()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for t, (xy, v) in zip(times, frames[20:], strict=True):
            tracker.update(t, crowd.ids, xy, v)
        after_bytes, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    mine = [tracemalloc.Filter(True, "*intent_perf_ros/core/belief/*")]
    diff = after.filter_traces(mine).compare_to(before.filter_traces(mine), "filename")
    held = sum(d.size_diff for d in diff)
    alloc = {
        "updates": updates,
        "bytes_held_by_tracker_code": int(held),
        "bytes_held_total": after_bytes - base,
        "peak_bytes_above_start": peak - base,
    }
    return result, alloc


class NumpyParticles:
    """Vectorised numpy particle filter with the tracker's motion and observation model."""

    def __init__(self, humans: int, particles: int, cfg: BeliefConfig, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.cfg = cfg
        h = len(GOALS) + 1
        self.g = np.tile(np.arange(particles) % h, (humans, 1))
        self.p = np.zeros((humans, particles, 2))
        self.v = np.zeros((humans, particles, 2))
        self.w = np.full((humans, particles), 1.0 / particles)
        self.goal_xy = np.vstack([GOALS, np.zeros((1, 2))])
        self.rows = np.arange(humans)[:, None]

    def init(self, xy: np.ndarray, v: np.ndarray) -> None:
        self.p[:] = xy[:, None, :] + self.cfg.pos_sigma_m * self.rng.standard_normal(self.p.shape)
        self.v[:] = v[:, None, :] + self.cfg.vel_sigma * self.rng.standard_normal(self.v.shape)

    def update(self, xy: np.ndarray, v_obs: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        a = min(1.0, DT / cfg.relax_time_s)
        wandering = self.g == len(GOALS)
        d = self.goal_xy[self.g] - self.p
        dist = np.linalg.norm(d, axis=2, keepdims=True)
        speed = np.linalg.norm(self.v, axis=2, keepdims=True)
        desired = speed * d / np.maximum(dist, 1e-9)
        drift = np.where(wandering[..., None], 0.0, a * (desired - self.v))
        q = np.where(wandering, cfg.wander_noise, cfg.goal_noise)[..., None] * np.sqrt(DT)
        self.v += drift + q * self.rng.standard_normal(self.v.shape)
        self.p += self.v * DT
        ll = (
            -0.5 * np.sum((self.p - xy[:, None, :]) ** 2, axis=2) / cfg.pos_sigma_m**2
            - 0.5 * np.sum((self.v - v_obs[:, None, :]) ** 2, axis=2) / cfg.vel_sigma**2
        )
        self.w *= np.exp(ll - ll.max(axis=1, keepdims=True))
        self.w /= self.w.sum(axis=1, keepdims=True)
        probs = np.stack([np.sum(self.w * (self.g == k), axis=1) for k in range(len(GOALS) + 1)], axis=1)
        # Systematic resampling per human: cumsum + searchsorted on one offset per row.
        n = self.w.shape[1]
        cum = np.cumsum(self.w, axis=1)
        cum[:, -1] = 1.0
        pos = (self.rng.random((self.w.shape[0], 1)) + np.arange(n)) / n
        idx = np.stack([np.searchsorted(c, u, side="right") for c, u in zip(cum, pos, strict=True)])
        self.p = self.p[self.rows, idx]
        self.v = self.v[self.rows, idx]
        self.g = self.g[self.rows, idx]
        self.w.fill(1.0 / n)
        return probs


def bench_numpy_particles(humans: int, particles: int, updates: int) -> dict:
    crowd = Crowd(humans)
    pf = NumpyParticles(humans, particles, BeliefConfig(goals=GOALS))
    crowd.step()
    pf.init(crowd.obs_xy, crowd.obs_v)
    frames = []
    for _ in range(updates + 5):
        crowd.step()
        frames.append((crowd.obs_xy.copy(), crowd.obs_v.copy()))
    for k in range(5):
        pf.update(*frames[k])
    return stats_us(time_calls(lambda k: pf.update(*frames[k + 5]), updates))


def bench_numpy_bayes(humans: int, updates: int) -> dict:
    """The Bayes-mode model vectorised over humans and goals in numpy."""
    cfg = BeliefConfig(goals=GOALS)
    crowd = Crowd(humans)
    h = len(GOALS) + 1
    prob = np.full((humans, h), 1.0 / h)
    last_xy = crowd.obs_xy.copy()
    last_v = crowd.obs_v.copy()
    frames = []
    for _ in range(updates):
        crowd.step()
        frames.append((crowd.obs_xy.copy(), crowd.obs_v.copy()))
    a = min(1.0, DT / cfg.bayes_relax_time_s)
    e = 1.0 - np.exp(-cfg.switch_rate_hz * DT)
    var = 2 * cfg.vel_sigma**2 + np.append(np.full(len(GOALS), cfg.goal_noise**2), cfg.wander_noise**2) * DT

    def one(k: int) -> None:
        nonlocal prob, last_xy, last_v
        xy, v = frames[k]
        d = GOALS[None, :, :] - last_xy[:, None, :]
        u = d / np.linalg.norm(d, axis=2, keepdims=True)
        speed = np.linalg.norm(last_v, axis=1)[:, None, None]
        prev = last_v[:, None, :]
        pred = np.concatenate([prev + a * (speed * u - prev), prev], axis=1)
        ll = -0.5 * np.sum((v[:, None, :] - pred) ** 2, axis=2) / var - np.log(var)
        post = ((1 - e) * prob + e / h) * np.exp(ll - ll.max(axis=1, keepdims=True))
        prob = post / post.sum(axis=1, keepdims=True)
        last_xy, last_v = xy, v

    return stats_us(time_calls(one, updates))


def bench_resampling(particles: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    w = rng.gamma(1.0, size=particles)
    w /= w.sum()
    out = np.empty(particles, dtype=np.int64)
    systematic_indices(w, 0.5, out)
    cases = {
        "filterpy_systematic_resample": lambda k: filterpy_systematic_resample(w),
        "numpy_cumsum_searchsorted": lambda k: systematic_indices_numpy(w, 0.5),
        "numba_systematic_indices": lambda k: systematic_indices(w, 0.5, out),
    }
    return {name: stats_us(time_calls(fn, repeats)) for name, fn in cases.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intent-perf belief-bench", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--updates", type=int, default=300, help="timed updates per case")
    parser.add_argument("--humans", type=int, default=10, help="humans in the particle-filter case")
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--bayes-humans", type=int, default=100)
    args = parser.parse_args(argv)
    if args.updates < 10 or args.humans < 1 or args.bayes_humans < 1 or args.particles < 20:
        parser.error("need --updates >= 10, --humans >= 1, --bayes-humans >= 1 and --particles >= 20")
    particle, particle_alloc = bench_tracker("particle", args.humans, args.particles, args.updates)
    bayes, bayes_alloc = bench_tracker("bayes", args.bayes_humans, args.particles, args.updates)
    report = {
        "machine": machine(),
        "settings": {"goals": len(GOALS), "hypotheses": len(GOALS) + 1, "dt_s": DT, "updates": args.updates},
        "particle": {
            "humans": args.humans,
            "particles": args.particles,
            "numba": particle,
            "numpy": bench_numpy_particles(args.humans, args.particles, args.updates),
        },
        "bayes": {
            "humans": args.bayes_humans,
            "numba": bayes,
            "numpy": bench_numpy_bayes(args.bayes_humans, args.updates),
        },
        "resampling": {"particles": args.particles, **bench_resampling(args.particles, args.updates)},
        "allocation": {"particle": particle_alloc, "bayes": bayes_alloc},
    }
    p, b = report["particle"], report["bayes"]
    report["goal"] = {
        "particle_median_under_1ms": p["numba"]["median_us"] < TARGET_US,
        "particle_p95_under_1ms": p["numba"]["p95_us"] < TARGET_US,
        "no_allocation_held": particle_alloc["bytes_held_by_tracker_code"] <= 0
        and bayes_alloc["bytes_held_by_tracker_code"] <= 0,
    }
    print(f"machine: {report['machine']['cpu']} ({report['machine']['logical_cpus']} logical CPUs)")
    print(f"{'case':44s} {'median us':>10s} {'p95 us':>10s}")
    rows = [
        (f"particle {p['humans']}x{p['particles']} numba (tracker)", p["numba"]),
        (f"particle {p['humans']}x{p['particles']} numpy", p["numpy"]),
        (f"bayes {b['humans']} humans numba (tracker)", b["numba"]),
        (f"bayes {b['humans']} humans numpy", b["numpy"]),
    ]
    rows += [
        (f"resample {args.particles}: {k}", v) for k, v in report["resampling"].items() if k != "particles"
    ]
    for name, s in rows:
        print(f"{name:44s} {s['median_us']:10.1f} {s['p95_us']:10.1f}")
    print(f"allocation: {report['allocation']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
