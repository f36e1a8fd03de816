"""Transport floor of the bench: the same observations through relay processes that do no work.

An observation's command in the four-process stack crosses three process boundaries: bench ->
gp_inference_node -> mpc_node -> bench, and belief_node wakes on every prediction too.
``transport_floor`` replays a bag's observations, restamped, at the bag's pace through three
relay processes wired the same way (a GP relay forwarding each observation, a belief relay and an
MPC relay each forwarding the GP relay's message, the nodes' QoS profiles and executor) and
measures observation-to-"command" latency as the bench does, tapping the same three outputs. What
the real stack adds to these figures is its nodes' work.

It also times a fixed piece of Python and numpy work back to back and after sleeping one
observation period: how much slower work runs once the core went idle (caches and branch
predictors cold, the host's other tenants ran), which every node pays at each observation at 30 Hz
and none pays in a back-to-back micro-benchmark.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.experimental import EventsExecutor
from rclpy.node import Node

from intent_perf_ros.bench.analysis import summary
from intent_perf_ros.bench.bags import Bag, read_bag, read_stamp, restamp
from intent_perf_ros.bench.replay import HUMANS
from intent_perf_ros.msg import TrackedHumans
from intent_perf_ros.nodes.common import COMMAND_QOS, DERIVED_QOS, SENSOR_QOS, run

OBSERVATIONS, PREDICTIONS = "floor/observations", "floor/predictions"
BELIEFS, COMMANDS = "floor/beliefs", "floor/commands"
# (node name, input, output): the bench's critical path and the belief branch beside it.
RELAYS = (("floor_gp", OBSERVATIONS, PREDICTIONS), ("floor_belief", PREDICTIONS, BELIEFS),
          ("floor_mpc", PREDICTIONS, COMMANDS))
QOS = {OBSERVATIONS: SENSOR_QOS, PREDICTIONS: DERIVED_QOS, BELIEFS: DERIVED_QOS, COMMANDS: COMMAND_QOS}


class FloorRelay(Node):
    """Republishes every message of ``input_topic`` unchanged (serialised bytes) on ``output_topic``."""

    def __init__(self, **node_options) -> None:
        super().__init__("floor_relay", **node_options)
        source: str = self.declare_parameter("input_topic", OBSERVATIONS).value
        target: str = self.declare_parameter("output_topic", PREDICTIONS).value
        publisher = self.create_publisher(TrackedHumans, target, QOS[target])
        self.create_subscription(TrackedHumans, source, publisher.publish, QOS[source], raw=True)


class FloorSource(Node):
    """Publishes observations and records when each tap (predictions, beliefs, commands) returns them."""

    def __init__(self, **node_options) -> None:
        super().__init__("floor_source", **node_options)
        self.publisher = self.create_publisher(TrackedHumans, OBSERVATIONS, SENSOR_QOS)
        self.arrivals: dict[str, dict[int, int]] = {topic: {} for topic in (PREDICTIONS, BELIEFS, COMMANDS)}
        for topic, arrivals in self.arrivals.items():
            self.create_subscription(TrackedHumans, topic, lambda data, a=arrivals: a.setdefault(
                read_stamp(data), time.time_ns()), QOS[topic], raw=True)

    def send(self, data: bytes) -> int:
        """Publish ``data`` restamped with the current wall-clock time; returns the stamp."""
        message = bytearray(data)
        stamp = time.time_ns()
        restamp(message, stamp)
        self.publisher.publish(bytes(message))
        return stamp

    def answered(self, stamp: int) -> bool:
        return all(stamp in arrivals for arrivals in self.arrivals.values())


def idle_penalty(period_s: float, repeats: int = 200) -> dict[str, float]:
    """Median time of one fixed piece of work back to back and after sleeping ``period_s``."""
    matrix = np.random.default_rng(0).random((64, 64))

    def work() -> None:
        total = 0
        for i in range(300):
            total += i * i
        for _ in range(20):
            matrix.sum(axis=0)

    timings = {}
    for name, pause in (("back_to_back_us", 0.0), ("after_idle_us", period_s)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            work()
            times.append((time.perf_counter_ns() - start) * 1e-3)
            if pause:
                time.sleep(pause)
        timings[name] = float(np.median(times[repeats // 10:]))
    timings["ratio"] = timings["after_idle_us"] / timings["back_to_back_us"]
    timings["period_s"] = period_s
    return timings


def _spin_until(executor: EventsExecutor, condition, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        executor.spin_once(timeout_sec=0.02)
    return True


def transport_floor(bag: Bag, rate: float = 1.0, log_dir: Path | None = None, startup_timeout_s: float = 60.0) -> dict:
    """Replay ``bag``'s observations at ``rate`` x its pace through the relays; latency as the bench's."""
    observations = [m for m in bag.inputs if m.topic == HUMANS]
    if not observations:
        raise ValueError(f"{bag.path} has no {HUMANS} messages to replay")
    logs = []
    relays = []
    for name, source, target in RELAYS:
        log = subprocess.DEVNULL
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed below, after the process
            logs.append(log)
        relays.append(subprocess.Popen(
            [sys.executable, "-m", "intent_perf_ros.bench.floor", "--relay", "--ros-args", "-r", f"__node:={name}",
             "-p", f"input_topic:={source}", "-p", f"output_topic:={target}"], stdout=log, stderr=subprocess.STDOUT))
    context = Context()
    rclpy.init(context=context)
    try:
        executor = EventsExecutor(context=context)
        source = FloorSource(context=context)
        executor.add_node(source)
        if not _spin_until(executor, lambda: source.publisher.get_subscription_count() >= 1 and all(
                source.count_publishers(t) >= 1 for t in source.arrivals), startup_timeout_s):
            raise RuntimeError(f"the floor relays did not come up within {startup_timeout_s} s")
        # Probes until one came back on every tap: a matched reliable link may still be handshaking.
        probes: list[int] = []
        deadline = time.monotonic() + startup_timeout_s
        while not any(source.answered(p) for p in probes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no probe came back through the floor relays within {startup_timeout_s} s")
            probes.append(source.send(observations[0].data))
            _spin_until(executor, lambda: source.answered(probes[-1]), 0.1)
        _spin_until(executor, lambda: False, 0.5)  # late probe answers, then a clean slate
        for arrivals in source.arrivals.values():
            arrivals.clear()
        sent = []
        start, bag_start = time.monotonic_ns(), observations[0].timestamp_ns
        for message in observations:
            target = start + (message.timestamp_ns - bag_start) / rate
            while (now := time.monotonic_ns()) < target:
                executor.spin_once(timeout_sec=min((target - now) * 1e-9, 0.05))
            sent.append(source.send(message.data))
        _spin_until(executor, lambda: all(source.answered(s) for s in sent), 2.0)
        commands = source.arrivals[COMMANDS]
        e2e = [(commands[s] - s) * 1e-6 for s in sent if s in commands]
        period_s = (observations[-1].timestamp_ns - bag_start) * 1e-9 / max(len(observations) - 1, 1) / rate
        return {
            "description": "the bench's topology (GP, belief and MPC relays, one process each) forwarding the "
                           "observations without any work",
            "observations": len(sent),
            "lost": {topic: len(sent) - sum(1 for s in sent if s in arrivals)
                     for topic, arrivals in source.arrivals.items()},
            "e2e_ms": summary(e2e),
            "idle_penalty": idle_penalty(period_s),
        }
    finally:
        rclpy.try_shutdown(context=context)
        for process in relays:
            process.terminate()
        for process in relays:
            try:
                process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


def compare(ours: dict, floor: dict) -> dict[str, float]:
    """Our e2e percentiles over the floor's, measured in one run."""
    return {f"ratio_{k}": ours[k] / floor["e2e_ms"][k] for k in ("p50", "p95", "p99", "p999")}


def print_floor(floor: dict, ours: dict | None = None) -> None:
    e, idle = floor["e2e_ms"], floor["idle_penalty"]
    print(f"  transport floor (relays doing no work, same topology): e2e ms P50 {e['p50']:.2f}  P95 {e['p95']:.2f}  "
          f"P99.9 {e['p999']:.2f}; lost {sum(floor['lost'].values())}")
    if ours is not None:
        r = compare(ours, floor)
        print(f"  ours / floor: P50 {r['ratio_p50']:.2f}x  P95 {r['ratio_p95']:.2f}x  P99.9 {r['ratio_p999']:.2f}x")
    print(f"  work after {idle['period_s'] * 1e3:.0f} ms idle: {idle['after_idle_us']:.0f} us against "
          f"{idle['back_to_back_us']:.0f} us back to back ({idle['ratio']:.1f}x)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--relay":
        return run(FloorRelay)  # its --ros-args are in sys.argv, as for the nodes
    p = argparse.ArgumentParser(prog="intent-perf bench-floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 directory: its observations are replayed")
    p.add_argument("--rate", type=float, default=1.0, help="x the recorded pace (default 1.0)")
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)
    floor = transport_floor(read_bag(args.bag), args.rate)
    print(f"intent-perf bench-floor {args.bag} at rate {args.rate}: {floor['observations']} observations")
    print_floor(floor)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(floor, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
