"""``intent-perf perf``: the performance regression gate.

Runs the micro-benchmarks (GP, MPC, belief) and a short bench replay, and writes one JSON. With
``--baseline FILE`` it compares against a committed baseline and exits 1 when a figure regressed by
more than its tolerance (default 5%, per figure in the baseline or with ``--tolerance-for``).

Machines are noisy, so:
- every timing is divided by a reference computation measured in the same group run (a fixed
  numpy matrix product on one BLAS thread plus a fixed pure-Python loop: the two kinds of work
  this package does),
  and ratios are compared, never times;
- a group is measured ``--repeats`` times and its best run kept;
- a figure that looks regressed is measured again (``--confirm`` times) and only called a
  regression if it stays beyond tolerance every time.
``--short`` is the CI variant (about a minute): fewer repeats, a shorter replay, its own baseline
figures, since short runs measure slightly different things.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import psutil
from threadpoolctl import threadpool_limits

DEFAULT_TOLERANCE = 0.05
PERF_LOG_DIR = Path("out/perf_logs")


def _mpc_figures(data: dict) -> dict[str, float]:
    """Our controller's median step and the fallbacks' per horizon (cvxpy is a reference, not gated)."""
    out = {}
    for row in data["rows"]:
        h = row["horizon"]
        out[f"h{h}.step_median_us"] = row["ours"]["median_us"]
        out[f"h{h}.fallback_shifted_plan_median_us"] = row["fallback_shifted_plan"]["median_us"]
    return out


def _belief_figures(data: dict) -> dict[str, float]:
    """The numba backend's median update (numpy and filterpy are references, not gated)."""
    return {
        "particle.update_median_us": data["particle"]["numba"]["median_us"],
        "bayes.update_median_us": data["bayes"]["numba"]["median_us"],
    }


def _gp_figures(data: dict) -> dict[str, float]:
    """Our exact and sparse predict per (N, M) and the one-point update (scikit-learn and the
    memory-bound floor are references, not gated)."""
    out = {}
    for row in data["predict"]:
        case = f"n{row['n_train']}_m{row['n_queries']}"
        out[f"{case}.predict_us"] = row["ours_us"]
        if "sparse300_us" in row:
            out[f"{case}.sparse300_us"] = row["sparse300_us"]
    out["update.one_point_us"] = data["update"]["update_us"]
    return out


@dataclass(frozen=True)
class MicroBenchmark:
    """A micro-benchmark module (``main(argv)`` writing ``--json PATH``), its arguments and its figures."""

    module: str
    full_args: tuple[str, ...]
    short_args: tuple[str, ...]
    figures: Callable[[dict], dict[str, float]]  # JSON -> {name: time in the unit its suffix says}


# Written by the GP, MPC and belief work; the short settings keep each group to seconds.
MICRO_BENCHMARKS: dict[str, MicroBenchmark] = {
    "gp": MicroBenchmark(
        "intent_perf_ros.bench.gp_benchmark",
        ("--no-torch",),
        ("--sizes", "100", "1000", "--queries", "1", "--no-torch"),
        _gp_figures,
    ),
    "mpc": MicroBenchmark(
        "intent_perf_ros.bench.mpc_benchmark",
        ("--cvxpy-steps", "30"),
        ("--horizons", "20", "--steps", "1000", "--cvxpy-steps", "10"),
        _mpc_figures,
    ),
    "belief": MicroBenchmark(
        "intent_perf_ros.bench.belief_benchmark", (), ("--updates", "200"), _belief_figures
    ),
}


@dataclass
class Figure:
    """One measured figure: ``ratio`` is what is compared (value / reference time for timings)."""

    value: float
    unit: str
    lower_is_better: bool
    ratio: float


@dataclass
class Verdict:
    name: str
    status: str  # ok | improved | regressed | new | missing
    baseline: float | None
    current: float | None
    change: float | None  # fraction, positive = worse
    tolerance: float


def _reference_work(a: np.ndarray) -> float:
    total = float((a @ a).trace())
    acc = 0
    for i in range(20_000):
        acc += i * i % 7
    return total + acc


def reference_ms(repeats: int = 31) -> float:
    """Fastest of ``repeats`` runs of the fixed reference computation, in ms: on a shared machine
    the minimum moves by a few percent between runs where the median moves by 40%."""
    a = np.random.default_rng(0).standard_normal((256, 256))
    times = []
    # One BLAS thread: with threads, a loaded 2-core machine turns a 0.6 ms product into 15-35 ms.
    # Set once, outside the timing: switching costs more the more libraries the process has loaded.
    with threadpool_limits(1):
        for _ in range(repeats):
            start = time.perf_counter_ns()
            _reference_work(a)
            times.append((time.perf_counter_ns() - start) * 1e-6)
    return min(times)


def figure(
    value: float, unit: str, reference: float, lower_is_better: bool = True, normalise: bool = True
) -> Figure:
    """A figure normalised by the reference: times divided by it, rates multiplied by it."""
    ratio = value if not normalise else value / reference if lower_is_better else value * reference
    return Figure(float(value), unit, lower_is_better, float(ratio))


def measure_micro(group: str, short: bool) -> dict[str, Figure]:
    """Run one micro-benchmark module; no figures if it is not there (yet)."""
    spec = MICRO_BENCHMARKS[group]
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError:
        print(f"perf: {spec.module} not found, group {group} skipped")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.json"
        before = reference_ms()
        code = module.main(["--json", str(path), *(spec.short_args if short else spec.full_args)])
        after = reference_ms()
        if code not in (0, None) or not path.exists():
            raise RuntimeError(f"{spec.module} failed (exit {code}) or wrote no --json")
        data = json.loads(path.read_text())
    reference = 0.5 * (before + after)
    return {
        f"{group}.{name.lstrip('.')}": figure(value, name.rsplit("_", 1)[-1], reference)
        for name, value in spec.figures(data).items()
    }


def measure_bench(short: bool, params_file: str | None = None) -> dict[str, Figure]:
    """A synthetic bag (10 humans, 30 Hz) replayed in real time and at --rate max through one stack."""
    from intent_perf_ros.bench.bags import read_bag
    from intent_perf_ros.bench.bench import run_bench
    from intent_perf_ros.bench.make_bag import make_bag
    from intent_perf_ros.runner import NodeProcesses

    seconds_real_time, seconds_max = (8.0, 4.0) if short else (30.0, 10.0)
    with tempfile.TemporaryDirectory() as tmp:
        make_bag(Path(tmp) / "rt", humans=10, rate_hz=30.0, duration_s=seconds_real_time)
        make_bag(Path(tmp) / "max", humans=10, rate_hz=30.0, duration_s=seconds_max, seed=1)
        before = reference_ms()
        stack = NodeProcesses(params_file, log_dir=PERF_LOG_DIR)
        stack.start()
        try:
            real_time = run_bench(read_bag(Path(tmp) / "rt"), 1.0, stack=stack, progress=False).result
            fastest = run_bench(read_bag(Path(tmp) / "max"), None, stack=stack, progress=False).result
        finally:
            codes = stack.stop()
        if any(codes.values()):
            raise RuntimeError(f"node processes exited with {codes}; see {PERF_LOG_DIR}/*.log")
        ref = 0.5 * (before + reference_ms())
    e2e = real_time["e2e_ms"]
    return {
        "bench.e2e_p50_ms": figure(e2e["p50"], "ms", ref),
        "bench.e2e_p95_ms": figure(e2e["p95"], "ms", ref),
        "bench.e2e_p99_ms": figure(e2e["p99"], "ms", ref),
        "bench.max_rate_predictions_per_s": figure(
            fastest["throughput_predictions_per_s"], "1/s", ref, False
        ),
        "bench.rss_total_mb": figure(real_time["rss_total_mb"], "MB", ref, normalise=False),
    }


def better(a: Figure, b: Figure) -> Figure:
    """The better of two measurements of one figure (noise only ever makes things look worse)."""
    return min(a, b, key=lambda f: f.ratio if f.lower_is_better else -f.ratio)


def measure(
    groups: list[str], short: bool, repeats: int, measure_group: Callable[[str, bool], dict[str, Figure]]
) -> dict[str, Figure]:
    """Each group ``repeats`` times, keeping each figure's best measurement."""
    figures: dict[str, Figure] = {}
    for group in groups:
        for _ in range(repeats):
            for name, f in measure_group(group, short).items():
                figures[name] = better(figures[name], f) if name in figures else f
    return figures


def tolerance_of(name: str, per_figure: dict[str, float], default: float) -> float:
    """The figure's own tolerance, else the first matching glob (``bench.*``), else the default."""
    if name in per_figure:
        return per_figure[name]
    return next((tol for pattern, tol in per_figure.items() if fnmatch.fnmatchcase(name, pattern)), default)


def compare(
    current: dict[str, Figure], baseline: dict[str, dict], tolerance: float, per_figure: dict[str, float]
) -> list[Verdict]:
    """Verdict per figure of either side; the change is signed so that positive is worse."""
    verdicts = []
    for name in sorted({*current, *baseline}):
        tol = tolerance_of(name, per_figure, tolerance)
        if name not in baseline:
            verdicts.append(Verdict(name, "new", None, current[name].ratio, None, tol))
            continue
        base = baseline[name]["ratio"]
        if name not in current:
            verdicts.append(Verdict(name, "missing", base, None, None, tol))
            continue
        now = current[name].ratio
        change = now / base - 1.0 if baseline[name]["lower_is_better"] else base / now - 1.0
        status = "regressed" if change > tol else "improved" if change < -tol else "ok"
        verdicts.append(Verdict(name, status, base, now, change, tol))
    return verdicts


def gate(
    groups: list[str],
    short: bool,
    repeats: int,
    confirm: int,
    baseline: dict[str, dict],
    tolerance: float,
    per_figure: dict[str, float],
    measure_group: Callable[[str, bool], dict[str, Figure]],
) -> tuple[dict[str, Figure], list[Verdict]]:
    """Measure, compare, and re-measure the groups of apparently regressed figures up to ``confirm`` times:
    a regression is only called when the best of all measurements is still beyond tolerance."""
    current = measure(groups, short, repeats, measure_group)
    verdicts = compare(current, baseline, tolerance, per_figure)
    for _ in range(confirm):
        suspects = sorted({v.name.split(".")[0] for v in verdicts if v.status == "regressed"})
        if not suspects:
            break
        print(f"perf: re-measuring {', '.join(suspects)} before calling a regression")
        for name, f in measure(suspects, short, 1, measure_group).items():
            current[name] = better(current[name], f) if name in current else f
        verdicts = compare(current, baseline, tolerance, per_figure)
    return current, verdicts


def load_baseline(path: Path, variant: str) -> tuple[dict[str, dict], dict[str, float]]:
    """Figures and per-figure tolerances of one variant of a baseline file."""
    data = json.loads(Path(path).read_text())
    if variant not in data.get("variants", {}):
        raise ValueError(
            f"{path} has no '{variant}' baseline; write one with "
            f"intent-perf perf{' --short' if variant == 'short' else ''} --write-baseline {path}"
        )
    entry = data["variants"][variant]
    return entry["figures"], entry.get("tolerances", {})


def save_baseline(
    path: Path,
    variant: str,
    figures: dict[str, Figure],
    tolerances: dict[str, float],
    only: set[str] | None = None,
) -> None:
    """Write ``figures`` (or those named in ``only``) into one variant of the file, keeping the rest."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {"schema": 1, "variants": {}}
    entry = data["variants"].setdefault(variant, {"figures": {}, "tolerances": {}})
    for name, f in figures.items():
        if only is None or name in only:
            entry["figures"][name] = asdict(f)
    entry["tolerances"] = {**entry.get("tolerances", {}), **tolerances}
    entry["machine"] = {"platform": platform.platform(), "cpus": psutil.cpu_count()}
    entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _tolerance_item(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=FRACTION, e.g. bench.e2e_p95_ms=0.3")
    return name, float(value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="intent-perf perf", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--short", action="store_true", help="the CI variant (about a minute)")
    p.add_argument(
        "--groups", default="gp,mpc,belief,bench", help="comma-separated subset of gp,mpc,belief,bench"
    )
    p.add_argument("--json", type=Path, help="write all figures and verdicts here")
    p.add_argument(
        "--baseline", type=Path, help="compare against this baseline file (e.g. perf/baseline.json)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=f"allowed regression as a fraction (default {DEFAULT_TOLERANCE}, or the baseline's per figure)",
    )
    p.add_argument(
        "--tolerance-for", type=_tolerance_item, action="append", default=[], metavar="NAME=FRACTION"
    )
    p.add_argument("--repeats", type=int, default=None, help="runs per group, best kept (default 3, short 1)")
    p.add_argument("--confirm", type=int, default=2, help="re-measurements before a regression is called")
    p.add_argument("--write-baseline", type=Path, help="write the figures as this variant's baseline")
    p.add_argument(
        "--update-baseline",
        action="store_true",
        help="with --baseline: write improved and new figures into it (keep the baseline current)",
    )
    p.add_argument("--params-file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    variant = "short" if args.short else "full"
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = set(groups) - {*MICRO_BENCHMARKS, "bench"}
    if unknown:
        raise SystemExit(f"unknown groups {sorted(unknown)}; choose from gp, mpc, belief, bench")
    repeats = args.repeats or (1 if args.short else 3)

    def measure_group(group: str, short: bool) -> dict[str, Figure]:
        return measure_bench(short, args.params_file) if group == "bench" else measure_micro(group, short)

    baseline, tolerances = load_baseline(args.baseline, variant) if args.baseline else ({}, {})
    tolerances = {**tolerances, **dict(args.tolerance_for)}
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    current, verdicts = gate(
        groups,
        args.short,
        repeats,
        args.confirm if args.baseline else 0,
        baseline,
        tolerance,
        tolerances,
        measure_group,
    )
    if args.baseline:
        # Figures of groups not run this time are not "missing".
        verdicts = [v for v in verdicts if v.status != "missing" or v.name.split(".")[0] in groups]
    print_table(current, verdicts if args.baseline else None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "variant": variant,
                    "figures": {n: asdict(f) for n, f in current.items()},
                    "verdicts": [asdict(v) for v in verdicts] if args.baseline else None,
                },
                indent=2,
            )
        )
    if args.write_baseline:
        save_baseline(args.write_baseline, variant, current, dict(args.tolerance_for))
        print(f"perf: baseline '{variant}' written to {args.write_baseline}")
    if args.update_baseline and args.baseline:
        changed = {v.name for v in verdicts if v.status in ("improved", "new")}
        if changed:
            save_baseline(args.baseline, variant, current, {}, only=changed)
            print(f"perf: baseline updated with {len(changed)} improved or new figures")
    return 1 if any(v.status == "regressed" for v in verdicts) else 0


def print_table(current: dict[str, Figure], verdicts: list[Verdict] | None) -> None:
    by_name = {v.name: v for v in verdicts or []}
    print(f"{'figure':<48}{'value':>12} {'unit':<6}{'ratio':>12}{'change':>9}  verdict")
    for name in sorted({*current, *by_name}):
        f, v = current.get(name), by_name.get(name)
        value = f"{f.value:12.4g} {f.unit:<6}{f.ratio:12.4g}" if f else f"{'-':>12} {'':<6}{'-':>12}"
        change = f"{100 * v.change:+8.1f}%" if v and v.change is not None else f"{'':>9}"
        print(
            f"{name:<48}{value}{change}  {v.status if v else ''}"
            + (f" (tolerance {100 * v.tolerance:.0f}%)" if v and v.status == "regressed" else "")
        )


if __name__ == "__main__":
    raise SystemExit(main())
