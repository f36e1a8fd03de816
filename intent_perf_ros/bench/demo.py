"""``intent-perf demo``: the four nodes as four processes, a synthetic scenario, a short report."""
from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import psutil
import rclpy
from rclpy.experimental import EventsExecutor

from intent_perf_ros.bench.driver import STACK_NODES, ScenarioDriver, latency_summary, topic_counts
from intent_perf_ros.core.scenario import ScenarioConfig
from intent_perf_ros.runner import NodeProcesses, spin_until, unclean_exits

WARMUP_S = 2.0  # scenario seconds before latencies count (see run_demo)


def run_demo(duration_s: float = 20.0, humans: int = 5, rate_hz: float = 30.0, seed: int = 0,
             params_file: str | None = None, log_dir: str = "out/demo_logs", startup_timeout_s: float = 900.0,
             ros_args: dict[str, list[str]] | None = None) -> dict:
    scenario = ScenarioConfig(humans=humans, seed=seed, crossing_human=True)
    stack = NodeProcesses(params_file, log_dir=log_dir, ros_args=ros_args)
    stack.start()
    print(f"starting the four nodes (logs in {log_dir}/); on the first run the GP node fits its model on "
          "ETH/UCY and caches it, which takes a while", flush=True)
    rclpy.init()
    try:
        driver = ScenarioDriver(scenario, rate_hz=rate_hz)
        executor = EventsExecutor()
        executor.add_node(driver)
        t0 = time.monotonic()
        if not spin_until(executor, driver.stack_ready, startup_timeout_s, stack):
            raise RuntimeError(f"the stack did not come up within {startup_timeout_s} s; see {log_dir}/*.log")
        startup_s = time.monotonic() - t0
        driver.running = True
        # The first observations after start-up can wait for one reliable retransmission (0.1-0.25 s
        # measured) while DDS completes the handshake of a link the graph already shows as matched:
        # reported apart as the warm-up, so that the figures describe the running stack.
        spin_until(executor, lambda: False, WARMUP_S, stack)
        measured_from = len(driver.latencies_ms)
        spin_until(executor, lambda: False, duration_s, stack)
        driver.running = False
        # Counters are final once every node reported twice more after the last input.
        settled = {n: driver.stats_count.get(n, 0) + 2 for n in STACK_NODES}
        spin_until(executor, lambda: all(driver.stats_count.get(n, 0) >= c for n, c in settled.items()), 5.0)
        rss = {node: psutil.Process(pid).memory_info().rss / 2**20 for node, pid in stack.pids().items()}
        diagnostics = driver.diagnostics
        executor.shutdown()  # before destroying its node (see nodes.common.run)
        driver.destroy_node()
    finally:
        rclpy.try_shutdown()
        exit_codes = stack.stop()
    levels = {}
    if diagnostics is not None:
        for status in diagnostics.status:
            levels[status.name] = int.from_bytes(status.level, "little")
    return {
        "machine": {"platform": platform.platform(), "cpus": psutil.cpu_count()},
        "scenario": {"humans": humans, "rate_hz": rate_hz, "duration_s": duration_s, "seed": seed},
        "startup_s": startup_s,
        "warmup_s": WARMUP_S,
        "e2e_ms_warmup": latency_summary(driver.latencies_ms[:measured_from]),
        "e2e_ms": latency_summary(driver.latencies_ms[measured_from:]),
        "observations": driver.published["humans/tracked"],
        "commands": {"received": driver.commands_received, "answering_observations": len(driver.latencies_ms),
                     "watchdog": driver.commands_unmatched},
        "topics": topic_counts(driver),
        "rss_mb": rss,
        "min_human_distance_m": driver.min_distance,
        "diagnostics": levels,
        "exit_codes": exit_codes,
        "teardown_hangs": stack.teardown_hangs,  # exited 1 by their teardown watchdog (nodes.common.run)
    }


def print_report(report: dict) -> None:
    e2e = report["e2e_ms"]
    s = report["scenario"]
    print(f"\nintent-perf demo: {s['humans']} humans at {s['rate_hz']:.0f} Hz for {s['duration_s']:.0f} s "
          f"({report['machine']['cpus']} CPUs, start-up {report['startup_s']:.1f} s)")
    print(f"observation -> command latency over {e2e['count']} commands: P50 {e2e['p50']:.2f} ms  "
          f"P95 {e2e['p95']:.2f} ms  P99 {e2e['p99']:.2f} ms  max {e2e['max']:.2f} ms")
    warm = report["e2e_ms_warmup"]
    print(f"  (the first {report['warmup_s']:g} s, apart: {warm['count']} commands, max {warm['max']:.2f} ms)")
    print(f"{'topic':<22}{'published':>10}  received by")
    for topic, c in report["topics"].items():
        received = ", ".join(f"{node} {n}" for node, n in c["received"].items())
        print(f"{topic:<22}{c['published']:>10}  {received}   lost {c['lost']}")
    print("RSS: " + ", ".join(f"{node} {mb:.0f} MB" for node, mb in report["rss_mb"].items())
          + f" (total {sum(report['rss_mb'].values()):.0f} MB)")
    worst = max(report["diagnostics"].values(), default=math.nan)
    print(f"/diagnostics: {len(report['diagnostics'])} statuses, worst level {worst} (0 OK, 1 WARN, 2 ERROR, 3 STALE)")
    print(f"closest approach robot-human {report['min_human_distance_m']:.2f} m; exit codes {report['exit_codes']}")


def main(args) -> int:
    report = run_demo(duration_s=args.duration, humans=args.humans, rate_hz=args.rate_hz, seed=args.seed,
                      params_file=args.params_file)
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"report written to {args.json}")
    lost = sum(c["lost"] for c in report["topics"].values())
    if lost:
        print(f"WARNING: {lost} messages lost (queues keep the newest; a busy machine starves a node)")
    return 1 if unclean_exits(report["exit_codes"], report["teardown_hangs"]) else 0
