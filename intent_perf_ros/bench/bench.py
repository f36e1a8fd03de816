"""``intent-perf bench BAG``: replay a bag through the four nodes and measure them.

Starts the node processes (or, with ``--attach``, uses a stack that already runs), replays the bag
at ``--rate`` (1.0 = recorded pace, 5 = five times faster, ``max`` = as fast as the stack answers)
and records every output. Reports observation-to-command latency (percentiles and per stage),
throughput in human predictions per second, published vs received messages per topic, RSS and CPU
per node over time, misses of the 10 ms deadline and, at rate 1, prediction error against the
bag's ground truth. See ``replay.py`` for how latency is measured (restamped inputs).

Soak mode (``--duration SECONDS``, ``soak.py``): the bag in a loop, summarised as it goes. What the
recording means is computed in ``analysis.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import psutil
import rclpy
from rclpy.context import Context
from rclpy.experimental import EventsExecutor

from intent_perf_ros.bench.analysis import BenchRun, analyse
from intent_perf_ros.bench.bags import Bag, parse_topic_map, read_bag
from intent_perf_ros.bench.floor import compare, print_floor, transport_floor
from intent_perf_ros.bench.replay import (
    BELIEF,
    HUMANS,
    PREDICTIONS,
    Replayer,
    find_node_pids,
    play,
)
from intent_perf_ros.bench.soak import (
    GOALS_SOAK,
    SOAK_MAX_SAMPLES,
    Soak,
    SoakSettings,
    pause_between_loops_s,
    play_soak,
    print_soak,
    recent_rss,
)
from intent_perf_ros.runner import (
    COMPOSED,
    NODES,
    NodeProcesses,
    expand_shards,
    hosted_nodes,
    process_names,
    spin_until,
    unclean_exits,
)

STACK_NODES = ("gp_inference_node", "belief_node", "mpc_node")
# The goals on this 2-core machine (synthetic scenario, 10 humans, 30 Hz, four processes).
GOALS_REAL_TIME = {"e2e_p95_ms": 2.0, "e2e_p999_ms": 5.0, "lost_messages": 0, "rss_total_mb": 600.0}
GOAL_PREDICTIONS_PER_S_MAX = 20_000.0


def _extras(stats: dict) -> dict[str, dict[str, int]]:
    """Per node, the integer counters of its latest NodeStats ``extra`` (``msgs_in.<topic>`` ...)."""
    out = {}
    for node, msg in stats.items():
        values = {}
        for kv in msg.extra:
            if kv.key.startswith(("msgs_in.", "msgs_out.")):
                values[kv.key] = int(float(kv.value))
        out[node] = values
    return out


def topic_loss(
    before: dict,
    after: dict,
    published: dict[str, int],
    replayer_in: dict[str, int],
    shards: int = 1,
) -> dict:
    """Published vs received per topic during the run, from counter deltas of NodeStats.

    ``published``: what the replayer sent per input topic (None where it did not publish);
    ``replayer_in``: what the replayer received of the outputs it taps. Commands are counted as the
    answers to predictions (one per predictions message the MPC received): the stale-input
    watchdog's own commands are not messages of the chain and are excluded.

    With ``shards`` > 1 the GP and belief processes are ``<node>_<i>``: every GP shard receives every
    observation (each one is a consumer), predictions and beliefs published are summed over shards,
    a belief shard counts only its own shard's predictions as received (it ignores the others), and
    the MPC answers one command per complete cycle of ``shards`` predictions messages.
    """

    def delta(node: str, key: str) -> int:
        return after.get(node, {}).get(key, 0) - before.get(node, {}).get(key, 0)

    if shards > 1:
        gp, belief = process_names("gp_inference_node", shards), process_names("belief_node", shards)
        predictions_out = sum(delta(n, f"msgs_out.{PREDICTIONS}") for n in gp)
        mpc_predictions = delta("mpc_node", f"msgs_in.{PREDICTIONS}")
        chain = {
            "humans/tracked": (published.get("humans/tracked"), {n: delta(n, "msgs_in.humans/tracked") for n in gp}),
            "odom": (published.get("odom"), {"mpc_node": delta("mpc_node", "msgs_in.odom")}),
            "goal_pose": (published.get("goal_pose"), {"mpc_node": delta("mpc_node", "msgs_in.goal_pose")}),
            PREDICTIONS: (
                predictions_out,
                {
                    "belief_nodes": sum(delta(n, f"msgs_in.{PREDICTIONS}") for n in belief),
                    "mpc_node": mpc_predictions,
                    "bench": replayer_in[PREDICTIONS],
                },
            ),
            BELIEF: (
                sum(delta(n, f"msgs_out.{BELIEF}") for n in belief),
                {"mpc_node": delta("mpc_node", f"msgs_in.{BELIEF}"), "bench": replayer_in[BELIEF]},
            ),
            "cmd_vel": (mpc_predictions // shards, {"bench": replayer_in["cmd_vel"]}),
        }
        return _loss(chain)

    chain = {
        "humans/tracked": (
            published.get("humans/tracked"),
            {"gp_inference_node": delta("gp_inference_node", "msgs_in.humans/tracked")},
        ),
        "odom": (published.get("odom"), {"mpc_node": delta("mpc_node", "msgs_in.odom")}),
        "goal_pose": (published.get("goal_pose"), {"mpc_node": delta("mpc_node", "msgs_in.goal_pose")}),
        PREDICTIONS: (
            delta("gp_inference_node", f"msgs_out.{PREDICTIONS}"),
            {
                "belief_node": delta("belief_node", f"msgs_in.{PREDICTIONS}"),
                "mpc_node": delta("mpc_node", f"msgs_in.{PREDICTIONS}"),
                "bench": replayer_in[PREDICTIONS],
            },
        ),
        BELIEF: (
            delta("belief_node", f"msgs_out.{BELIEF}"),
            {"mpc_node": delta("mpc_node", f"msgs_in.{BELIEF}"), "bench": replayer_in[BELIEF]},
        ),
        "cmd_vel": (delta("mpc_node", f"msgs_in.{PREDICTIONS}"), {"bench": replayer_in["cmd_vel"]}),
    }
    return _loss(chain)


def _loss(chain: dict) -> dict:
    """Per topic: what was published, what each consumer received, and the shortfall summed."""
    out = {}
    for topic, (sent, received) in chain.items():
        if sent is None:  # listen mode: someone else published it
            out[topic] = {"published": None, "received": received, "lost": 0}
            continue
        out[topic] = {
            "published": sent,
            "received": received,
            "lost": sum(max(sent - r, 0) for r in received.values()),
        }
    return out


def prime(replayer: Replayer, executor: EventsExecutor, stack: NodeProcesses | None, names: tuple[str, ...],
          timeout_s: float) -> None:
    """Send probes (observations of nobody) until every link between the nodes carried one
    (``Replayer.primed``), then wait for two more NodeStats per node so that the counters the loss is
    computed from start after the probes; the probes leave nothing in the recording."""
    links_before = replayer.counter("mpc_node", f"msgs_in.{BELIEF}")
    deadline = time.monotonic() + timeout_s
    while not replayer.primed(links_before):
        if time.monotonic() > deadline:
            raise RuntimeError(f"probes not answered through every node within {timeout_s} s")
        replayer.probe()
        spin_until(executor, lambda: replayer.primed(links_before), 0.1, stack)
    settled = {n: replayer.stats_count.get(n, 0) + 2 for n in names}
    spin_until(executor, lambda: all(replayer.stats_count.get(n, 0) >= c for n, c in settled.items()), 5.0, stack)
    replayer.forget_probes()


def stack_nodes(shards: int = 1) -> tuple[str, ...]:
    """Names of the measured node processes (monitor excluded): sharded GP and belief processes are
    named by ``runner.process_names``, so readiness and counters use the names the processes have."""
    return tuple(expand_shards(STACK_NODES, shards))


def _not_ready(r: Replayer, shards: int = 1) -> list[str]:
    """What the stack still lacks: nodes that have not reported, and unmatched links of the chain
    (the bench's own taps included). Every shard must be up: a cycle completes only with all of them."""
    missing = [f"NodeStats of {n}" for n in stack_nodes(shards) if n not in r.stats]
    if not r.matched(shards if not r.listen else 1):
        missing.append(
            "a subscriber of every input topic" if not r.listen else "a publisher of /humans/tracked"
        )
    links = {
        f"{shards + 2} subscribers of {PREDICTIONS}": r.count_subscribers(PREDICTIONS) >= shards + 2,
        f"{shards} publishers of {PREDICTIONS}": r.count_publishers(PREDICTIONS) >= shards,
        f"2 subscribers of {BELIEF}": r.count_subscribers(BELIEF) >= 2,
        f"{shards} publishers of {BELIEF}": r.count_publishers(BELIEF) >= shards,
        "a publisher of cmd_vel": r.count_publishers("cmd_vel") >= 1,
    }
    return missing + [name for name, ok in links.items() if not ok]


def crowded(r: Replayer, shards: int = 1) -> list[str]:
    """Publishers beyond one stack and one player: another stack on the same ROS_DOMAIN_ID would
    add its messages to every count and latency here. A sharded stack has ``shards`` publishers of
    predictions and beliefs."""
    expected = {HUMANS: 1, PREDICTIONS: shards, BELIEF: shards, "cmd_vel": 1}
    found = {t: r.count_publishers(t) for t in expected}
    return [f"{n} publishers of {t}" for t, n in found.items() if n > expected[t]]


def proportional_set_mb(pids: dict[str, int]) -> dict[str, float]:
    """PSS per process, read once after the replay. RSS counts a shared library's pages in every
    process that maps it (the four nodes share numpy, rclpy, LLVM...), so the RSS sum overstates what
    the stack takes together; PSS splits shared pages between their users, and sums. Reading it walks
    the process's page tables (about 5 ms for a node), too slow to sample during the run."""
    pss = {}
    for name, pid in pids.items():
        try:
            pss[name] = psutil.Process(pid).memory_full_info().pss / 2**20
        except psutil.Error:
            continue
    return pss


def run_bench(
    bag: Bag,
    rate: float | None = 1.0,
    *,
    attach: bool = False,
    listen: bool = False,
    params_file: str | None = None,
    log_dir: str | Path = "out/bench_logs",
    max_in_flight: int = 4,
    startup_timeout_s: float = 180.0,
    listen_idle_s: float = 3.0,
    progress: bool = True,
    ros_args: dict[str, list[str]] | None = None,
    stack: NodeProcesses | None = None,
    shards: int = 1,
    overrides: dict[str, dict] | None = None,
    soak: SoakSettings | None = None,
    composed: bool = False,
) -> BenchRun:
    """One replay; see the module docstring. ``rate=None`` is ``--rate max``; ``ros_args`` per node
    are added to the started processes' command lines (e.g. ``["-p", "backend:=numpy"]``).
    ``stack``: node processes the caller started and will stop (several replays, one start-up).
    ``shards``: GP and belief processes (as ``intent-perf up --shards``); with ``attach`` it says how
    many shards the running stack has. ``overrides``: parameter values per node for started stacks
    (``NodeProcesses``), e.g. ``{"gp_inference_node": {"backend": "numpy"}}``. ``soak``: replay the
    bag in a loop (``bench --duration``) and add the ``soak`` section. ``composed``: the GP, belief and
    MPC nodes in one process (``intent-perf up --composed``); memory is then per process."""
    if listen and not attach:
        raise ValueError("--listen measures a stack that runs already: use it with --attach")
    if soak is not None:
        if listen:
            raise ValueError("--duration replays the bag in a loop: it cannot be used with --listen")
        soak.check()
    if stack is not None:
        shards = max(sum(1 for n in stack.nodes if n.startswith("gp_inference_node")), 1)
    names = stack_nodes(shards)
    owned = (
        None
        if attach or stack
        else NodeProcesses(params_file, log_dir=log_dir, ros_args=ros_args, shards=shards, overrides=overrides,
                           composed=composed)
    )
    if owned is not None:
        owned.start()
    stack = stack or owned
    gap_s = pause_between_loops_s(soak, stack.params_file if stack else params_file) if soak else 0.0
    soaking: Soak | None = None
    context = Context()
    rclpy.init(context=context)
    exit_codes: dict[str, int] = {}
    teardown_hangs: list[str] = []
    try:
        executor = EventsExecutor(context=context)
        pids = stack.pids() if stack is not None else find_node_pids((*names, *NODES[3:], COMPOSED))
        replayer = Replayer(
            bag,
            listen=listen,
            sample_pids=pids,
            context=context,
            shards=shards,
            max_samples=SOAK_MAX_SAMPLES if soak else None,
        )
        executor.add_node(replayer)
        startup_start = time.monotonic()
        if not spin_until(executor, lambda: not _not_ready(replayer, shards), startup_timeout_s, stack):
            where = f"see {log_dir}/*.log" if stack else "is the stack running in this ROS_DOMAIN_ID?"
            raise RuntimeError(
                f"the stack did not come up within {startup_timeout_s} s, missing: "
                f"{', '.join(_not_ready(replayer, shards))}; {where}"
            )
        startup_s = time.monotonic() - startup_start
        if crowded(replayer, shards):
            raise RuntimeError(
                f"{', '.join(crowded(replayer, shards))}: another stack or player shares "
                f"ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}; run the bench on a free domain"
            )
        if not listen:
            prime(replayer, executor, stack, names, startup_timeout_s)
        before = _extras(replayer.stats)
        counts_before = dict(replayer.stats_count)
        spin = lambda timeout: executor.spin_once(timeout_sec=timeout)  # noqa: E731
        play_start, play_start_mono = time.time_ns(), time.monotonic()
        bar = _progress(None if soak else sum(1 for m in bag.inputs if m.topic == "/humans/tracked"), progress)
        if listen:
            spin_until(executor, lambda: len(replayer.rec.sent) > 0, startup_timeout_s)
            last = [len(replayer.rec.sent), time.monotonic()]

            def idle() -> bool:
                if len(replayer.rec.sent) != last[0]:
                    bar.update(len(replayer.rec.sent) - last[0])
                    last[:] = [len(replayer.rec.sent), time.monotonic()]
                return time.monotonic() - last[1] > listen_idle_s

            spin_until(executor, idle, 24 * 3600.0, stack)
        elif soak is not None:
            soaking = Soak(soak, replayer, play_start, play_start_mono)
            play_soak(replayer, soaking, spin, rate, max_in_flight, gap_s, lambda: bar.update(1))
            rss_end = recent_rss(replayer)
        else:
            play(replayer, spin, rate, max_in_flight, progress=lambda: bar.update(1))
        bar.close()
        play_end, play_end_mono = time.time_ns(), time.monotonic()
        # Drain: every observation answered (command and belief), or nothing new for a second. Only
        # outputs answering a sent observation count: the watchdog's commands after the replay would
        # otherwise keep the wait alive for its whole 30 s whenever one observation went unanswered.
        seen = [replayer.rec.answers, time.monotonic()]

        def drained() -> bool:
            if replayer.rec.answers != seen[0]:
                seen[:] = [replayer.rec.answers, time.monotonic()]
            return replayer.answered() >= len(replayer.rec.sent) or time.monotonic() - seen[1] > 1.0

        spin_until(executor, drained, 30.0, stack)
        pss = proportional_set_mb(pids)
        # Counters are final once every stack node reported twice more after the last input.
        settled = {n: replayer.stats_count.get(n, 0) + 2 for n in names}
        spin_until(
            executor, lambda: all(replayer.stats_count.get(n, 0) >= c for n, c in settled.items()), 5.0
        )
        replayer.sampler.sample()
        if soaking is not None:
            result, run = soaking.finish(play_end, play_end_mono)
        else:
            result, run = analyse(replayer, bag, play_start, play_end, score=listen or rate == 1.0)
        published = {
            t: (None if listen else replayer.published[t]) for t in ("humans/tracked", "odom", "goal_pose")
        }
        if listen:
            published["humans/tracked"] = len(replayer.rec.sent)
        taps = {
            PREDICTIONS: replayer.received[PREDICTIONS],
            BELIEF: replayer.received[BELIEF],
            "cmd_vel": result["observations"]["answered"],
        }
        topics = topic_loss(before, _extras(replayer.stats), published, taps, shards)
        sampler = replayer.sampler
        node_stats = {n: replayer.stats[n] for n in names if n in replayer.stats}
        intruders = crowded(replayer, shards)
        if soaking is not None:
            callbacks = soaking.callbacks.summary(names)  # the windows were folded as they came
        else:
            # NodeStats windows that overlap the replay (published up to one period after its end).
            windows = [m for t, m in replayer.stats_history if play_start_mono < t <= play_end_mono + 1.5]
            callbacks = callback_summary(windows, names)
        busy = (play_start_mono - sampler.t0, play_end_mono - sampler.t0)
        stats_reports = {n: replayer.stats_count.get(n, 0) - counts_before.get(n, 0) for n in names}
        executor.shutdown()  # before destroying its node (see nodes.common.run)
        replayer.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        if owned is not None:
            exit_codes = owned.stop()
            teardown_hangs = owned.teardown_hangs
    rss = dict(sampler.peak_rss_mb)
    # Nodes no process sample covers report their own RSS; the nodes of composed_nodes share its process.
    sampled = {node for process in rss for node in hosted_nodes(process)}
    for n, msg in node_stats.items():
        if n not in sampled:
            rss.setdefault(n, float(msg.rss_mb))
    result.update(
        {
            "bag": {
                "path": str(bag.path),
                "storage": bag.storage,
                "duration_s": bag.duration_s,
                "topics": bag.counts(),
                "ground_truth": bool(bag.ground_truth),
                "topic_map": bag.topic_map,
            },
            "settings": {
                "rate": "max" if rate is None else rate,
                "attach": attach,
                "listen": listen,
                "max_in_flight": max_in_flight if rate is None else None,
                "restamped": not listen,
                "shards": shards,
                "composed": COMPOSED in pids,
            },
            "machine": {
                "platform": platform.platform(),
                "cpus": psutil.cpu_count(),
                "python": platform.python_version(),
            },
            "startup_s": startup_s,
            "warnings": [f"during the run: {', '.join(intruders)} (counts include a foreign stack)"]
            if intruders
            else [],
            "wall_s": (play_end - play_start) * 1e-9,
            "topics": topics,
            "lost_messages": sum(t["lost"] for t in topics.values()),
            "rss_mb": rss,
            "rss_total_mb": sum(rss.values()),
            "pss_mb": pss,
            "pss_total_mb": sum(pss.values()),
            "cpu_percent": _mean_during(sampler.t_s, sampler.cpu_percent, *busy),
            "node_callback_ms": callbacks,
            "node_extra": {n: {kv.key: kv.value for kv in m.extra} for n, m in node_stats.items()},
            "node_stats_reports": stats_reports,
            "timeseries": {"t_s": sampler.t_s, "rss_mb": sampler.rss_mb, "cpu_percent": sampler.cpu_percent},
            "exit_codes": exit_codes,
            "teardown_hangs": teardown_hangs,  # exited 1 by their teardown watchdog (nodes.common.run)
        }
    )
    if soaking is not None:
        result["soak"] = soaking.section(result["wall_s"], gap_s, rss_end, topics["cmd_vel"]["lost"])
    result["goals"] = goals(result)
    return run


def _mean_during(t_s: list[float], series: dict[str, list[float]], start: float, end: float) -> dict:
    """Mean of each series over the samples taken while the bag played (all samples if none)."""
    inside = [i for i, t in enumerate(t_s) if start <= t <= end] or list(range(len(t_s)))
    return {n: float(np.nanmean([v[i] for i in inside])) for n, v in series.items() if v}


def callback_summary(windows: list, nodes: tuple[str, ...] = STACK_NODES) -> dict[str, dict[str, float]]:
    """Per node, callback time over its NodeStats windows during the replay: the median of the
    window medians, the worst window's P95 and P99, and the maximum (windows are ~1 s)."""
    out = {}
    for node in nodes:
        mine = [m for m in windows if m.node_name == node and m.rate_in_hz > 0]
        if mine:
            out[node] = {
                "p50": float(np.median([m.callback_p50_ms for m in mine])),
                "p95": max(m.callback_p95_ms for m in mine),
                "p99": max(m.callback_p99_ms for m in mine),
                "max": max(m.callback_max_ms for m in mine),
                "windows": len(mine),
            }
    return out


def goals(result: dict) -> list[dict]:
    """The issue's goals that apply to this run, each with its measured value and verdict."""
    checks = []
    if result["settings"]["rate"] == 1.0:
        measured = {
            "e2e_p95_ms": result["e2e_ms"]["p95"],
            "e2e_p999_ms": result["e2e_ms"]["p999"],
            "lost_messages": result["lost_messages"],
            "rss_total_mb": result["rss_total_mb"],
        }
        for name, target in GOALS_REAL_TIME.items():
            value = measured[name]
            ok = (
                value == 0
                if name == "lost_messages"
                else value < target
                if name == "rss_total_mb"
                else value <= target
            )
            checks.append({"name": name, "target": target, "value": value, "met": bool(ok)})
    if "soak" in result:
        drift = [v for n, v in result["soak"]["rss_drift_percent"].items() if n != "total"]
        worst = max(drift, default=math.nan)  # growth is what leaks; no drift measured is not met
        lost = result["soak"]["lost_commands"]
        checks.append(
            {
                "name": "rss_drift_percent",
                "target": GOALS_SOAK["rss_drift_percent"],
                "value": worst,
                "met": bool(worst < GOALS_SOAK["rss_drift_percent"]),
            }
        )
        checks.append(
            {"name": "lost_commands", "target": GOALS_SOAK["lost_commands"], "value": lost, "met": lost == 0}
        )
    if result["settings"]["rate"] == "max":
        value = result["throughput_predictions_per_s"]
        checks.append(
            {
                "name": "throughput_predictions_per_s",
                "target": GOAL_PREDICTIONS_PER_S_MAX,
                "value": value,
                "met": value >= GOAL_PREDICTIONS_PER_S_MAX,
            }
        )
    return checks


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    # disable=None: a bar on a terminal, nothing in logs or CI.
    return tqdm(total=total, unit="obs", desc="replay", disable=None if enabled else True, leave=False)


def finite(value):
    """NaN/inf -> None, recursively, so the JSON is strict (json.dumps would write NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def print_summary(result: dict) -> None:
    e, s = result["e2e_ms"], result["settings"]
    print(
        f"intent-perf bench {result['bag']['path']} at rate {s['rate']}, {s['shards']} shard(s): "
        f"{result['observations']['answered']}/{result['observations']['sent']} observations answered "
        f"in {result['wall_s']:.1f} s"
    )
    print(
        f"  e2e ms: P50 {e['p50']:.2f}  P95 {e['p95']:.2f}  P99 {e['p99']:.2f}  P99.9 {e['p999']:.2f}  "
        f"max {e['max']:.2f}; deadline ({result['deadline_ms']:.0f} ms) misses {result['deadline_misses']}"
    )
    cost = result["stage_cost_ms"]
    print("  stage P50/P95 ms: " + ", ".join(f"{k} {v['p50']:.2f}/{v['p95']:.2f}" for k, v in cost.items()))
    print(
        f"  throughput {result['throughput_predictions_per_s']:.0f} human predictions/s; "
        f"lost messages {result['lost_messages']}; RSS total {result['rss_total_mb']:.0f} MB "
        f"({', '.join(f'{n} {v:.0f}' for n, v in result['rss_mb'].items())}); "
        f"PSS total {result['pss_total_mb']:.0f} MB (shared pages counted once)"
    )
    if result["predictions_error"]:
        pe = result["predictions_error"]
        print(
            f"  prediction error: ADE {pe['ade_m']:.3f} m FDE {pe['fde_m']:.3f} m "
            f"(constant velocity {pe['cv_ade_m']:.3f}/{pe['cv_fde_m']:.3f}) over {pe['count']} predictions"
        )
    if "soak" in result:
        print_soak(result["soak"])
    for warning in result["warnings"]:
        print(f"  WARNING: {warning}")
    for g in result["goals"]:
        print(f"  goal {g['name']}: {g['value']:.3f} vs {g['target']} -> {'met' if g['met'] else 'NOT MET'}")


def _rate(text: str) -> float | None:
    if text == "max":
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("--rate must be positive or 'max'")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="intent-perf bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "bag", type=Path, help="rosbag2 directory (mcap or sqlite3), e.g. from intent-perf make-bag"
    )
    p.add_argument(
        "--rate", type=_rate, default=1.0, help="1.0 recorded pace, 5 = 5x, max = as fast as it answers"
    )
    p.add_argument("--max-in-flight", type=int, default=4, help="--rate max: unanswered observations at once")
    p.add_argument(
        "--attach", action="store_true", help="measure a stack that already runs (no processes started)"
    )
    p.add_argument(
        "--listen",
        action="store_true",
        help="with --attach: publish nothing, measure while `ros2 bag play BAG` plays it",
    )
    p.add_argument("--topic-map", help="BAG_TOPIC=PACKAGE_TOPIC[,...] for bags with other topic names")
    p.add_argument("--params-file")
    p.add_argument(
        "--shards",
        type=int,
        default=1,
        help="GP and belief processes each (as intent-perf up --shards); with --attach: the running stack's",
    )
    p.add_argument(
        "--composed",
        action="store_true",
        help="the GP, belief and MPC nodes in one process (as intent-perf up --composed)",
    )
    p.add_argument(
        "--duration",
        type=float,
        help="soak: replay the bag in a loop for this many seconds; adds the JSON's soak section",
    )
    p.add_argument(
        "--warmup", type=float, help="soak: RSS drift is measured after this (default: a third, at most 120 s)"
    )
    p.add_argument("--slice", type=float, default=60.0, help="soak: e2e percentiles per slice of this many s")
    p.add_argument(
        "--loop-gap",
        type=float,
        help="soak: pause between loops (default: the longest track_timeout_s of the parameters + 0.5 s)",
    )
    p.add_argument("--log-dir", default="out/bench_logs")
    p.add_argument(
        "--startup-timeout", type=float, default=180.0, help="seconds for the stack to come up (default 180)"
    )
    p.add_argument("--json", type=Path, help="write the result here")
    p.add_argument("--report", type=Path, help="write report.md and PNG plots into this directory")
    p.add_argument("--check-goals", action="store_true", help="exit 1 when a goal of the issue is not met")
    p.add_argument("--floor", action="store_true",
                   help="after the replay, the same observations through relays doing no work (bench-floor): "
                        "this machine's latency floor, side by side")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    soak = None if args.duration is None else SoakSettings(args.duration, args.warmup, args.slice, args.loop_gap)
    if soak is not None:
        if args.listen:
            parser.error("--duration replays the bag in a loop: it cannot be used with --listen")
        try:
            soak.check()
        except ValueError as exc:
            parser.error(str(exc))
    if args.floor and (args.attach or soak is not None or args.rate is None or args.composed or args.shards > 1):
        parser.error("--floor relays the bag once at a given rate through one process per node, as the "
                     "default layout runs: not with --attach, --duration, --rate max, --composed or --shards")
    bag = read_bag(args.bag, parse_topic_map(args.topic_map))
    run = run_bench(
        bag,
        args.rate,
        attach=args.attach,
        listen=args.listen,
        params_file=args.params_file,
        log_dir=args.log_dir,
        max_in_flight=args.max_in_flight,
        startup_timeout_s=args.startup_timeout,
        shards=args.shards,
        soak=soak,
        composed=args.composed,
    )
    if args.floor:
        run.result["floor"] = transport_floor(bag, args.rate, Path(args.log_dir) / "floor")
        run.result["floor"].update(compare(run.result["e2e_ms"], run.result["floor"]))
    print_summary(run.result)
    if "floor" in run.result:
        print_floor(run.result["floor"], run.result["e2e_ms"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(finite(run.result), indent=2))
        print(f"result written to {args.json}")
    if args.report:
        from intent_perf_ros.bench import report

        print(f"report written to {report.write_report(run, args.report)}")
    failed = bool(unclean_exits(run.result["exit_codes"], run.result["teardown_hangs"]))
    return 1 if failed or (args.check_goals and not all(g["met"] for g in run.result["goals"])) else 0


if __name__ == "__main__":
    raise SystemExit(main())
