"""``intent-perf load``: sweep humans x input rate (x layouts) and find where the stack saturates.

A layout is how the nodes are spread over processes: N shards of the GP and belief nodes
(``--shards N``, repeatable), or the GP, belief and MPC nodes in one process (``--composed``).

Each point is a short synthetic bag (``make_bag``) replayed in real time through a fresh stack
(``bench.run_bench``: same readiness checks, restamped inputs, loss accounting and process sampling
as ``intent-perf bench``). A fresh stack per point keeps one point's backlog, degradation level or
online-learned model from leaking into the next.

Per point: end-to-end P50/P95/P99, throughput, lost messages, unanswered observations, humans
predicted per observation (the GP and MPC truncate to ``max_humans``: silently fewer humans is a
failure too), mean CPU and peak RSS per process, and the degradation levels the nodes ended on.

Saturation, per layout: the first point, in order of offered load (humans x rate, then humans),
whose P95 exceeds ``--target-ms`` or that lost messages, left observations unanswered or predicted
fewer humans than it was given. The recommendation for ``--target-humans``/``--target-rate`` is taken
only from measured points: the layout with the fewest processes (composed, then 1, 2, ... shards)
whose point at (or the smallest measured point above) the target passed; nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from intent_perf_ros.bench.bags import read_bag
from intent_perf_ros.bench.bench import finite, run_bench
from intent_perf_ros.bench.make_bag import make_bag
from intent_perf_ros.runner import unclean_exits

DEFAULT_HUMANS = (1, 10, 50, 100, 200)
DEFAULT_RATES = (10.0, 30.0, 60.0)
COMPOSED_LAYOUT = "composed"
POINT_KEYS = (
    "layout", "shards", "composed", "humans", "rate_hz", "offered_humans_per_s", "e2e_ms",
    "throughput_predictions_per_s", "lost_messages", "lost_by_topic", "observations", "humans_per_observation",
    "cpu_percent", "rss_mb", "rss_total_mb", "degradation", "gp_backend", "startup_s", "ok", "reasons",
)


def _gp_backend(extra: dict[str, dict[str, str]]) -> str | None:
    """The motion model the GP processes actually ran (``gp.backend`` of NodeStats), e.g. ExactGP."""
    found = sorted(
        {v["gp.backend"] for n, v in extra.items() if n.startswith("gp_inference_node") and "gp.backend" in v}
    )
    return "/".join(found) or None


def layout_name(shards: int, composed: bool) -> str:
    return COMPOSED_LAYOUT if composed else str(shards)


def _processes(layout: str) -> tuple[int, int]:
    """Sort key: fewest node processes first (composed runs three nodes in one)."""
    return (0, 1) if layout == COMPOSED_LAYOUT else (1, int(layout))


def point_result(result: dict, shards: int, humans: int, rate_hz: float, target_ms: float,
                 composed: bool = False) -> dict:
    """One sweep point from a bench result, with its verdict against the target and why."""
    answered = result["observations"]["answered"]
    per_obs = result["throughput_predictions_per_s"] / max(result["throughput_observations_per_s"], 1e-12) \
        if answered else 0.0
    extra = result.get("node_extra", {})
    degradation = {n: int(float(v["degradation.level"])) for n, v in extra.items() if "degradation.level" in v}
    p95 = result["e2e_ms"]["p95"]
    reasons = []
    if not math.isfinite(p95) or p95 > target_ms:
        reasons.append(f"P95 {p95:.2f} ms > {target_ms:g} ms")
    if result["lost_messages"]:
        reasons.append(f"{result['lost_messages']} messages lost")
    if result["observations"]["unanswered"]:
        reasons.append(f"{result['observations']['unanswered']} observations unanswered")
    if answered and per_obs < humans - 0.5:
        reasons.append(f"{per_obs:.1f} of {humans} humans predicted per observation (max_humans)")
    if unclean_exits(result.get("exit_codes", {}), result.get("teardown_hangs", [])):
        reasons.append(f"node exit codes {result['exit_codes']}")
    return {
        "layout": layout_name(shards, composed),
        "shards": shards,
        "composed": composed,
        "humans": humans,
        "rate_hz": rate_hz,
        "offered_humans_per_s": humans * rate_hz,
        "e2e_ms": {k: result["e2e_ms"][k] for k in ("count", "p50", "p95", "p99", "max")},
        "throughput_predictions_per_s": result["throughput_predictions_per_s"],
        "lost_messages": result["lost_messages"],
        "lost_by_topic": {t: v for t, v in result["topics"].items() if v["lost"]},  # with who received what
        "observations": result["observations"],
        "humans_per_observation": per_obs,
        "cpu_percent": result["cpu_percent"],
        "rss_mb": result["rss_mb"],
        "rss_total_mb": result["rss_total_mb"],
        "degradation": degradation,
        "gp_backend": _gp_backend(extra),
        "startup_s": result["startup_s"],
        "ok": not reasons,
        "reasons": reasons,
    }


def _order(point: dict) -> tuple[float, int]:
    return point["offered_humans_per_s"], point["humans"]


def saturation(points: list[dict]) -> dict[str, dict]:
    """Per layout: the first failing point by offered load, and the highest passing load below it."""
    out = {}
    for layout in sorted({p["layout"] for p in points}, key=_processes):
        mine = sorted((p for p in points if p["layout"] == layout), key=_order)
        first = next((p for p in mine if not p["ok"]), None)
        below = [p for p in mine if p["ok"] and (first is None or _order(p) < _order(first))]
        out[layout] = {
            "saturated": first is not None,
            "point": None if first is None else {k: first[k] for k in ("humans", "rate_hz", "offered_humans_per_s")},
            "reasons": [] if first is None else first["reasons"],
            "max_sustained": None if not below else {k: below[-1][k] for k in ("humans", "rate_hz",
                                                                               "offered_humans_per_s")},
            "note": "not saturated within the measured grid" if first is None else "first failing point by load",
        }
    return out


def recommend(points: list[dict], target_humans: int, target_rate: float, target_ms: float) -> dict:
    """The layout with the fewest processes whose measured point covering the target passed (see the
    module docstring)."""
    base = {"target_humans": target_humans, "target_rate_hz": target_rate, "target_p95_ms": target_ms}
    covering = [p for p in points if p["humans"] >= target_humans and p["rate_hz"] >= target_rate]
    if not covering:
        return {**base, "met": False, "layout": None, "shards": None, "backend": None, "degradation": None,
                "evidence": None, "why": "no measured point covers the target load: add it to --humans/--rate"}
    per_layout = {}
    for p in sorted(covering, key=_order):
        per_layout.setdefault(p["layout"], p)  # the smallest measured load at or above the target
    passing = [per_layout[s] for s in sorted(per_layout, key=_processes) if per_layout[s]["ok"]]
    if passing:
        p = passing[0]
        degraded = {n: lvl for n, lvl in p["degradation"].items() if lvl > 0}
        return {**base, "met": True, "layout": p["layout"], "shards": p["shards"], "backend": p["gp_backend"],
                "degradation": degraded or "none: every node at full quality (level 0)",
                "evidence": {k: p[k] for k in ("humans", "rate_hz", "e2e_ms", "lost_messages")},
                "why": f"fewest processes whose measured point ({p['humans']} humans at {p['rate_hz']:g} Hz) passed"}
    best = min(per_layout.values(), key=lambda p: p["e2e_ms"]["p95"] if math.isfinite(p["e2e_ms"]["p95"]) else math.inf)
    degraded = {n: lvl for n, lvl in best["degradation"].items() if lvl > 0}
    return {**base, "met": False, "layout": best["layout"], "shards": best["shards"], "backend": best["gp_backend"],
            "degradation": degraded or "none reached",
            "evidence": {k: best[k] for k in ("humans", "rate_hz", "e2e_ms", "lost_messages", "reasons")},
            "why": f"no measured layout met the target; the lowest P95 came with layout {best['layout']} "
                   f"({'; '.join(best['reasons'])}): measure more layouts, a lighter GP or fewer humans"}


def sweep(
    shard_counts: list[int],
    humans: list[int],
    rates: list[float],
    *,
    duration_s: float = 8.0,
    target_ms: float = 10.0,
    overrides: dict[str, dict] | None = None,
    params_file: str | None = None,
    work_dir: Path | None = None,
    seed: int = 0,
    progress: bool = True,
    composed: bool = False,
) -> list[dict]:
    """Measure every point: a synthetic bag per (humans, rate), a fresh stack per point and layout
    (each shard count, plus the composed layout when ``composed``)."""
    layouts = [(shards, False) for shards in shard_counts] + ([(1, True)] if composed else [])
    owned = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="intent_perf_load_")) if owned else Path(work_dir)
    points = []
    try:
        for n in humans:
            for rate in rates:
                bag_dir = work / f"bag_h{n}_r{rate:g}"
                if not bag_dir.exists():
                    make_bag(bag_dir, humans=n, rate_hz=rate, duration_s=duration_s, seed=seed)
                bag = read_bag(bag_dir)
                for shards, together in layouts:
                    t0 = time.monotonic()
                    layout = layout_name(shards, together)
                    run = run_bench(bag, 1.0, shards=shards, overrides=overrides, params_file=params_file,
                                    log_dir=work / f"logs_{layout}_h{n}_r{rate:g}", progress=False, composed=together)
                    point = point_result(run.result, shards, n, rate, target_ms, together)
                    points.append(point)
                    if progress:
                        print(f"  layout {layout:>8}, {n:4d} humans, {rate:5.1f} Hz: P95 "
                              f"{point['e2e_ms']['p95']:.2f} ms, lost {point['lost_messages']}"
                              f"{'' if point['ok'] else ' - ' + '; '.join(point['reasons'])} "
                              f"({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)
    return points


def table(points: list[dict]) -> str:
    """The terminal table: one row per point."""
    head = (f"{'layout':>8} {'humans':>6} {'Hz':>5} {'P50':>7} {'P95':>7} {'P99':>7} {'pred/s':>8} {'lost':>5} "
            f"{'unans':>5} {'h/obs':>6} {'CPU% sum':>8} {'RSS MB':>7}  verdict")
    rows = [head, "-" * len(head)]
    for p in sorted(points, key=lambda p: (_processes(p["layout"]), *_order(p))):
        e = p["e2e_ms"]
        rows.append(
            f"{p['layout']:>8} {p['humans']:>6} {p['rate_hz']:>5g} {_f(e['p50'])} {_f(e['p95'])} {_f(e['p99'])} "
            f"{p['throughput_predictions_per_s']:>8.0f} {p['lost_messages']:>5} {p['observations']['unanswered']:>5} "
            f"{p['humans_per_observation']:>6.1f} {sum(v for v in p['cpu_percent'].values() if v == v):>8.0f} "
            f"{p['rss_total_mb']:>7.0f}  {'ok' if p['ok'] else '; '.join(p['reasons'])}")
    return "\n".join(rows)


def _f(value: float | None) -> str:
    return f"{value:>7.2f}" if value is not None and math.isfinite(value) else f"{'n/a':>7}"


def plot(points: list[dict], target_ms: float, out: Path) -> None:
    """P95 (solid) and P99 (dashed) against offered load, one colour per layout, failing points
    marked with a cross; log-log because the grid spans 10 to 12,000 humans/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, layout in enumerate(sorted({p["layout"] for p in points}, key=_processes)):
        mine = sorted((p for p in points if p["layout"] == layout), key=_order)
        x = [p["offered_humans_per_s"] for p in mine]
        colour = f"C{i}"
        label = layout if layout == COMPOSED_LAYOUT else f"{layout} shard(s)"
        ax.plot(x, [p["e2e_ms"]["p95"] for p in mine], "o-", color=colour, label=f"{label} P95")
        ax.plot(x, [p["e2e_ms"]["p99"] for p in mine], ".--", color=colour, alpha=0.6, label=f"{label} P99")
        bad = [p for p in mine if not p["ok"]]
        ax.plot([p["offered_humans_per_s"] for p in bad], [p["e2e_ms"]["p95"] for p in bad], "x", color="k",
                markersize=9)
    ax.axhline(target_ms, color="r", linestyle=":", label=f"target {target_ms:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load [humans x observations/s]")
    ax.set_ylabel("observation -> command latency [ms]")
    ax.set_title("latency vs load (x: point failed: P95, loss or truncation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _params(pairs: list[str]) -> dict[str, dict]:
    """``NODE:NAME=VALUE`` (repeatable) -> overrides; VALUE parsed as JSON where it parses."""
    out: dict[str, dict] = {}
    for pair in pairs:
        node, _, assignment = pair.partition(":")
        name, _, text = assignment.partition("=")
        if not (node and name and text):
            raise argparse.ArgumentTypeError(f"--param wants NODE:NAME=VALUE, got {pair!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        out.setdefault(node, {})[name] = value
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intent-perf load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=int, action="append", help="shard count, repeatable to compare (default 1)")
    p.add_argument("--composed", action="store_true",
                   help="also measure the GP, belief and MPC nodes in one process (intent-perf up --composed)")
    p.add_argument("--humans", type=int, nargs="+", default=list(DEFAULT_HUMANS))
    p.add_argument("--rate", type=float, nargs="+", default=list(DEFAULT_RATES), help="input rates [Hz]")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of bag per point (default 8)")
    p.add_argument("--target-ms", type=float, default=10.0, help="P95 end-to-end target (default 10)")
    p.add_argument("--target-humans", type=int, default=100)
    p.add_argument("--target-rate", type=float, default=30.0)
    p.add_argument("--backend", help="GP backend for every point (auto|numpy|numba|torch; default: params file)")
    p.add_argument("--param", action="append", default=[], metavar="NODE:NAME=VALUE",
                   help="parameter override for every point, e.g. gp_inference_node:max_humans=256")
    p.add_argument("--params-file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work-dir", type=Path, help="keep bags and node logs here (default: a temporary directory)")
    p.add_argument("--json", type=Path, help="write the sweep, saturation and recommendation here")
    p.add_argument("--plot", type=Path, help="PNG: latency vs load per shard count")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    shard_counts = sorted(set(args.shards or ([] if args.composed else [1])))
    if shard_counts and min(shard_counts) < 1:
        raise SystemExit("--shards must be >= 1")
    overrides = _params(args.param)
    if args.backend:
        overrides.setdefault("gp_inference_node", {})["backend"] = args.backend
    started = time.time()
    points = sweep(shard_counts, args.humans, args.rate, duration_s=args.duration, target_ms=args.target_ms,
                   overrides=overrides or None, params_file=args.params_file, work_dir=args.work_dir, seed=args.seed,
                   composed=args.composed)
    result = {
        "settings": {"shards": shard_counts, "composed": args.composed, "humans": args.humans, "rates_hz": args.rate,
                     "duration_s": args.duration, "target_ms": args.target_ms, "overrides": overrides,
                     "seed": args.seed, "real_time": True},
        "machine": {"platform": platform.platform(), "cpus": psutil.cpu_count(),
                    "python": platform.python_version()},
        "wall_s": time.time() - started,
        "points": points,
        "saturation": saturation(points),
        "recommendation": recommend(points, args.target_humans, args.target_rate, args.target_ms),
    }
    print(table(points))
    for layout, sat in result["saturation"].items():
        where = (f"saturates at {sat['point']['humans']} humans x {sat['point']['rate_hz']:g} Hz "
                 f"({'; '.join(sat['reasons'])})" if sat["saturated"] else sat["note"])
        kept = sat["max_sustained"]
        below = f"{kept['humans']} humans x {kept['rate_hz']:g} Hz" if kept else "none"
        print(f"layout {layout}: {where}; highest load met before it: {below}")
    rec = result["recommendation"]
    print(f"recommendation for {rec['target_humans']} humans at {rec['target_rate_hz']:g} Hz "
          f"(P95 <= {rec['target_p95_ms']:g} ms, no loss): "
          + (f"layout {rec['layout']}, GP backend {rec['backend']}, degradation {rec['degradation']} - {rec['why']}"
             if rec["met"] else f"NOT MET - {rec['why']}"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(finite(result), indent=2))
        print(f"result written to {args.json}")
    if args.plot:
        plot(points, args.target_ms, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
