"""The bench result for people: a Markdown summary and PNG plots (latency histogram, latency over
time, RSS and CPU over time; for a soak run, percentiles per time slice). Plots are made headless
(Agg), so this works over ssh and in CI."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from intent_perf_ros.bench.analysis import BenchRun


def _fmt(value: float | None, digits: int = 2) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else f"{value:.{digits}f}"
    )


def plot_latency(run: BenchRun, out: Path) -> list[str]:
    deadline = run.result["deadline_ms"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if run.e2e_ms:
        ax.hist(run.e2e_ms, bins=80, color="tab:blue")
        for key, style in (("p50", ":"), ("p95", "--"), ("p999", "-.")):
            ax.axvline(
                run.result["e2e_ms"][key],
                color="k",
                linestyle=style,
                label=f"{key} {run.result['e2e_ms'][key]:.2f} ms",
            )
        ax.set_yscale("log")
        ax.legend()
    ax.set_xlabel("observation -> command latency [ms]")
    ax.set_ylabel("commands")
    sampled = " sampled" if "soak" in run.result else ""  # a soak run keeps a bounded sample
    ax.set_title(f"latency histogram ({len(run.e2e_ms)} commands{sampled})")
    fig.tight_layout()
    fig.savefig(out / "latency_histogram.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(run.e2e_t_s, run.e2e_ms, ".", markersize=2)
    ax.axhline(deadline, color="r", linestyle="--", label=f"deadline {deadline:.0f} ms")
    ax.set_xlabel("time since replay start [s]")
    ax.set_ylabel("latency [ms]")
    ax.set_title("latency over time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency_over_time.png", dpi=100)
    plt.close(fig)
    return ["latency_histogram.png", "latency_over_time.png"]


def plot_resources(run: BenchRun, out: Path) -> list[str]:
    series = run.result["timeseries"]
    fig, (rss, cpu) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for node, values in series["rss_mb"].items():
        rss.plot(series["t_s"], values, label=node)
    for node, values in series["cpu_percent"].items():
        cpu.plot(series["t_s"], values, label=node)
    rss.set_ylabel("RSS [MB]")
    cpu.set_ylabel("CPU [% of a core]")
    cpu.set_xlabel("time since the stack came up [s]")
    rss.set_title("RSS and CPU per node")
    rss.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rss_over_time.png", dpi=100)
    plt.close(fig)
    return ["rss_over_time.png"]


def plot_soak(run: BenchRun, out: Path) -> list[str]:
    """End-to-end percentiles per time slice of a soak run (none for other runs)."""
    soak = run.result.get("soak")
    if not soak:
        return []
    slices = [s for s in soak["e2e_ms_per_slice"] if s["count"]]
    middle = [(s["t0_s"] + s["t1_s"]) / 2 for s in slices]
    fig, ax = plt.subplots(figsize=(9, 4))
    for key in ("p50", "p95", "p99", "max"):
        ax.plot(middle, [s[key] for s in slices], marker=".", label=key)
    ax.axhline(run.result["deadline_ms"], color="r", linestyle="--", label="deadline")
    ax.axvline(soak["warmup_s"], color="gray", linestyle=":", label="end of warm-up")
    ax.set_xlabel("time since replay start [s]")
    ax.set_ylabel("observation -> command [ms]")
    ax.set_title(f"latency per {soak['slice_s']:g} s slice ({soak['loops']} loops of the bag)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "soak_latency.png", dpi=100)
    plt.close(fig)
    return ["soak_latency.png"]


def soak_markdown(soak: dict) -> list[str]:
    """The report's soak section: memory drift after warm-up, lost commands, latency per slice."""
    warm, end, drift = soak["rss_mb_after_warmup"], soak["rss_mb_end"], soak["rss_drift_percent"]
    return [
        "## Soak",
        "",
        f"{soak['played_s']:.0f} s in {soak['loops']} loops of the bag, {soak['loop_gap_s']:.1f} s apart "
        f"(longer than the nodes' track timeout: every loop's humans are new tracks). RSS is the median of the "
        f"last 5 s at the end of the {soak['warmup_s']:.0f} s warm-up and at the end. Lost commands: "
        f"{soak['lost_commands']}.",
        "",
        "| node | RSS after warm-up [MB] | RSS at the end [MB] | drift |",
        "|---|---|---|---|",
        *(f"| {n} | {_fmt(warm[n], 1)} | {_fmt(end[n], 1)} | {_fmt(drift[n])} % |" for n in warm if n in end),
        f"| total | {_fmt(sum(warm.values()), 1)} | {_fmt(sum(end.values()), 1)} | {_fmt(drift.get('total'))} % |",
        "",
        "| slice [s] | commands | P50 | P95 | P99 | max |",
        "|---|---|---|---|---|---|",
        *(
            f"| {s['t0_s']:.0f}-{s['t1_s']:.0f} | {s['count']} | {_fmt(s['p50'])} | {_fmt(s['p95'])} | "
            f"{_fmt(s['p99'])} | {_fmt(s['max'])} |"
            for s in soak["e2e_ms_per_slice"]
        ),
        "",
    ]


def floor_markdown(r: dict) -> list[str]:
    """The transport floor measured after the replay (``bench --floor``), beside our figures."""
    if "floor" not in r:
        return []
    f, idle = r["floor"], r["floor"]["idle_penalty"]
    ratio = lambda k: r["e2e_ms"][k] / f["e2e_ms"][k]  # noqa: E731
    return [
        f"Transport floor, measured after the replay: {f['description']} ({f['observations']} observations, "
        f"lost {sum(f['lost'].values())}).",
        "",
        "| | P50 | P95 | P99 | P99.9 | max |",
        "|---|---|---|---|---|---|",
        f"| floor | {_fmt(f['e2e_ms']['p50'])} | {_fmt(f['e2e_ms']['p95'])} | {_fmt(f['e2e_ms']['p99'])} | "
        f"{_fmt(f['e2e_ms']['p999'])} | {_fmt(f['e2e_ms']['max'])} |",
        f"| ours / floor | {ratio('p50'):.2f}x | {ratio('p95'):.2f}x | {ratio('p99'):.2f}x | {ratio('p999'):.2f}x | "
        f"{ratio('max'):.2f}x |",
        "",
        f"A fixed piece of work takes {idle['after_idle_us']:.0f} us after {idle['period_s'] * 1e3:.0f} ms idle "
        f"against {idle['back_to_back_us']:.0f} us back to back ({idle['ratio']:.1f}x): at this rate every "
        "callback runs on a cold core.",
        "",
    ]


def markdown(run: BenchRun, images: list[str]) -> str:
    r = run.result
    e, s = r["e2e_ms"], r["settings"]
    lines = [
        f"# intent-perf bench: `{r['bag']['path']}`",
        "",
        f"Rate {s['rate']}, {s.get('shards', 1)} shard(s) of the GP and belief nodes, "
        f"{'attached to a running stack' if s['attach'] else 'node processes started'}, "
        f"{r['machine']['cpus']} CPUs ({r['machine']['platform']}). {r['observations']['answered']} of "
        f"{r['observations']['sent']} observations answered in {r['wall_s']:.1f} s.",
        "",
        *(f"**Warning:** {w}" for w in r["warnings"]),
        "",
        "## Goals",
        "",
        "| goal | target | measured | |",
        "|---|---|---|---|",
        *(
            f"| {g['name']} | {g['target']} | {_fmt(float(g['value']), 3)} | "
            f"{'met' if g['met'] else '**NOT MET**'} |"
            for g in r["goals"]
        ),
        "",
        "## Latency (ms)",
        "",
        "| | P50 | P95 | P99 | P99.9 | max |",
        "|---|---|---|---|---|---|",
        f"| observation -> command | {_fmt(e['p50'])} | {_fmt(e['p95'])} | {_fmt(e['p99'])} | "
        f"{_fmt(e['p999'])} | {_fmt(e['max'])} |",
        *(
            f"| observation -> {k} output | {_fmt(v['p50'])} | {_fmt(v['p95'])} | {_fmt(v['p99'])} | "
            f"{_fmt(v['p999'])} | {_fmt(v['max'])} |"
            for k, v in r["stages_ms"].items()
            if k != "control"
        ),
        "",
        "What each stage costs (from the previous stage's output to this one's, as the bench receives them):",
        "",
        "| stage | P50 | P95 | P99 | max |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {_fmt(v['p50'])} | {_fmt(v['p95'])} | {_fmt(v['p99'])} | {_fmt(v['max'])} |"
            for k, v in r["stage_cost_ms"].items()
        ),
        "",
        *floor_markdown(r),
        "Callback time inside each node (its ~1 s NodeStats windows during the replay: median of the window "
        "medians, worst window's P95/P99, max):",
        "",
        "| node | P50 | P95 | P99 | max |",
        "|---|---|---|---|---|",
        *(
            f"| {n} | {_fmt(v['p50'])} | {_fmt(v['p95'])} | {_fmt(v['p99'])} | {_fmt(v['max'])} |"
            for n, v in r["node_callback_ms"].items()
        ),
        "",
        f"Deadline misses (> {r['deadline_ms']:.0f} ms or unanswered): {r['deadline_misses']} "
        f"({100 * r['deadline_miss_fraction']:.2f}%).",
        "",
        "## Throughput and loss",
        "",
        f"{_fmt(r['throughput_predictions_per_s'], 0)} human predictions/s "
        f"({_fmt(r['throughput_observations_per_s'], 0)} observations/s) through the whole pipeline; "
        f"lost messages: {r['lost_messages']}.",
        "",
        "| topic | published | received by | lost |",
        "|---|---|---|---|",
        *(
            f"| {t} | {c['published'] if c['published'] is not None else '(not ours)'} | "
            f"{', '.join(f'{n} {v}' for n, v in c['received'].items())} | {c['lost']} |"
            for t, c in r["topics"].items()
        ),
        "",
        "## Memory and CPU",
        "",
        "| node | peak RSS [MB] | PSS at the end [MB] | mean CPU [% of a core] |",
        "|---|---|---|---|",
        *(f"| {n} | {_fmt(v, 0)} | {_fmt(r['pss_mb'].get(n), 0)} | {_fmt(r['cpu_percent'].get(n), 0)} |"
          for n, v in r["rss_mb"].items()),
        f"| total | {_fmt(r['rss_total_mb'], 0)} | {_fmt(r['pss_total_mb'], 0)} | |",
        "",
        "PSS counts pages shared between the processes (libraries' code) once, split among them; RSS counts them "
        "in every process.",
        "",
    ]
    pe = r["predictions_error"]
    lines += ["## Prediction error against the bag's ground truth", ""]
    if pe:
        lines += [
            f"ADE {pe['ade_m']:.3f} m, FDE {pe['fde_m']:.3f} m over {pe['count']} predictions; constant "
            f"velocity from the same observations: ADE {pe['cv_ade_m']:.3f} m, FDE {pe['cv_fde_m']:.3f} m.",
            "",
        ]
    else:
        lines += ["Not scored (no ground truth topic in the bag, rate other than 1, or a soak run).", ""]
    if "soak" in r:
        lines += soak_markdown(r["soak"])
    lines += ["## Plots", "", *(f"![{name}]({name})" for name in images), ""]
    return "\n".join(lines)


def write_report(run: BenchRun, directory: Path | str) -> Path:
    """Write report.md and the plots into ``directory``; returns the Markdown file's path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    images = plot_latency(run, out) + plot_resources(run, out) + plot_soak(run, out)
    path = out / "report.md"
    path.write_text(markdown(run, images))
    return path
