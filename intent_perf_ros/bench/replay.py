"""A replayer node: plays a bag's input topics into the stack and records every output with its time.

Latency from propagated stamps: every node copies the observation's header stamp into what it
derives from it (predictions, beliefs, commands). The replayer therefore **restamps** each input
message with the wall-clock time at which it publishes it (a write of 8 bytes into the serialised
message, see ``bags.restamp``), and an output carrying stamp S received at time R took R - S from
observation to output. This holds on one clock (one machine, or PTP-synchronised machines).

Consequence for ``--rate`` other than 1: the nodes see the bag's time compressed (stamps advance at
wall-clock speed while the humans move ``rate`` times faster per second), so predictions are scored
against ground truth at rate 1 only; latency and throughput figures are valid at any rate.

Listen mode (``listen=True``) publishes nothing, for a bag played by ``ros2 bag play`` into a stack on
a robot: then stamps are the recorded ones, and latency is measured from the moment the replayer
itself receives an observation to the moment it receives the command with that stamp.
"""

from __future__ import annotations

import importlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from intent_perf_ros.bench.bags import HUMANS_TYPE, Bag, RawMessage, read_stamp, restamp
from intent_perf_ros.msg import NodeStats
from intent_perf_ros.nodes.common import COMMAND_QOS, CONTROL_QOS, DERIVED_QOS, SENSOR_QOS, STATS_TOPIC

HUMANS = "/humans/tracked"
PREDICTIONS, BELIEF, COMMANDS = "intent/predictions", "intent/belief", "cmd_vel"
_PUBLISH_QOS = {
    HUMANS: SENSOR_QOS,
    "/odom": SENSOR_QOS,
    "/goal_pose": CONTROL_QOS,
    "/clock": QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
}


def message_class(msgtype: str) -> type:
    """rclpy class of a ``pkg/msg/Name`` type string."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class ProcessSampler:
    """RSS [MB] and CPU [% of one core] of named processes, sampled into time series."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        for p in self.processes.values():
            p.cpu_percent(None)  # the first call only starts the interval
        self.t0 = time.monotonic()
        self.t_s: list[float] = []
        self.rss_mb: dict[str, list[float]] = {n: [] for n in self.processes}
        self.cpu_percent: dict[str, list[float]] = {n: [] for n in self.processes}

    def sample(self) -> None:
        self.t_s.append(time.monotonic() - self.t0)
        for name, p in self.processes.items():
            try:
                rss, cpu = p.memory_info().rss / 2**20, p.cpu_percent(None)
            except psutil.NoSuchProcess:
                rss = cpu = float("nan")
            self.rss_mb[name].append(rss)
            self.cpu_percent[name].append(cpu)


def find_node_pids(nodes: tuple[str, ...]) -> dict[str, int]:
    """Pids of running node processes by command line (``-m intent_perf_ros.nodes.X`` or executable X)."""
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        for node in nodes:
            if node not in found and any(
                arg == f"intent_perf_ros.nodes.{node}" or arg.endswith(f"/{node}") for arg in cmdline[:3]
            ):
                found[node] = proc.info["pid"]
    return found


@dataclass
class Recording:
    """What came back: per output, (receive time ns, stamp ns); predictions keep their bytes."""

    sent: dict[int, tuple[int, int]] = field(default_factory=dict)  # stamp -> (send ns, bag time ns)
    predictions: list[tuple[int, int, bytes]] = field(default_factory=list)
    beliefs: list[tuple[int, int]] = field(default_factory=list)
    commands: list[tuple[int, int]] = field(default_factory=list)


class Replayer(Node):
    """Publishes bag messages (restamped) and records outputs; see the module docstring."""

    def __init__(
        self,
        bag: Bag,
        listen: bool = False,
        sample_pids: dict[str, int] | None = None,
        sample_period_s: float = 0.5,
        shards: int = 1,
        **node_kwargs,
    ) -> None:
        super().__init__("intent_perf_replayer", **node_kwargs)
        self.bag, self.listen = bag, listen
        # A sharded stack answers each observation with one belief per shard: all must be back.
        self.shards = max(shards, 1)
        self.rec = Recording()
        # Per input topic, named as the nodes' NodeStats name what they received (no leading slash).
        self.published: dict[str, int] = {"humans/tracked": 0, "odom": 0, "goal_pose": 0, "/clock": 0}
        self.stats: dict[str, NodeStats] = {}
        self.stats_history: list[tuple[float, NodeStats]] = []  # (monotonic receive time, message)
        self.stats_count: dict[str, int] = {}
        self.sampler = ProcessSampler(sample_pids or {})
        self.publishers_: dict[str, object] = {}
        if listen:
            self.create_subscription(
                message_class(HUMANS_TYPE), HUMANS, self._on_observation, SENSOR_QOS, raw=True
            )
        else:
            for topic in {m.topic: m.msgtype for m in bag.inputs}.items():
                self.publishers_[topic[0]] = self.create_publisher(
                    message_class(topic[1]), topic[0], _PUBLISH_QOS[topic[0]]
                )
        # Raw (undeserialised) taps: recording must cost the replayer next to nothing at --rate max.
        for msgtype, topic, callback, qos in (
            ("intent_perf_ros/msg/IntentPredictionArray", PREDICTIONS, self._on_predictions, DERIVED_QOS),
            ("intent_perf_ros/msg/BeliefArray", BELIEF, self._on_belief, DERIVED_QOS),
            ("geometry_msgs/msg/TwistStamped", COMMANDS, self._on_command, COMMAND_QOS),
        ):
            self.create_subscription(message_class(msgtype), topic, callback, qos, raw=True)
        self.create_subscription(NodeStats, STATS_TOPIC, self._on_stats, CONTROL_QOS)
        self.create_timer(sample_period_s, self.sampler.sample)

    # --- outputs -------------------------------------------------------------------------------
    def _on_observation(self, data: bytes) -> None:
        stamp = read_stamp(data)
        self.rec.sent.setdefault(stamp, (time.time_ns(), stamp))
        self.published["humans/tracked"] += 1

    def _on_predictions(self, data: bytes) -> None:
        self.rec.predictions.append((time.time_ns(), read_stamp(data), data))

    def _on_belief(self, data: bytes) -> None:
        self.rec.beliefs.append((time.time_ns(), read_stamp(data)))

    def _on_command(self, data: bytes) -> None:
        self.rec.commands.append((time.time_ns(), read_stamp(data)))

    def _on_stats(self, msg: NodeStats) -> None:
        self.stats[msg.node_name] = msg
        self.stats_history.append((time.monotonic(), msg))
        self.stats_count[msg.node_name] = self.stats_count.get(msg.node_name, 0) + 1

    # --- inputs --------------------------------------------------------------------------------
    def matched(self, shards: int = 1) -> bool:
        """Every input topic has a subscriber, observations one per GP shard (listen mode: someone
        publishes observations). An observation sent before every shard matched would be lost."""
        if self.listen:
            return self.count_publishers(HUMANS) >= 1
        return all(
            p.get_subscription_count() >= (shards if t == HUMANS else 1)
            for t, p in self.publishers_.items()
            if t != "/clock"
        )

    def publish(self, message: RawMessage) -> int:
        """Publish restamped with the current wall-clock time; returns the stamp."""
        data = bytearray(message.data)
        stamp = time.time_ns()
        restamp(data, stamp)
        self.publishers_[message.topic].publish(bytes(data))
        self.published[message.topic.lstrip("/") if message.topic != "/clock" else "/clock"] += 1
        if message.topic == HUMANS:
            self.rec.sent[stamp] = (stamp, message.timestamp_ns)
        return stamp

    def answered(self) -> int:
        """Observations whose command and belief (every shard's) have both come back."""
        sent = self.rec.sent
        beliefs: dict[int, int] = {}
        for _, s in self.rec.beliefs:
            if s in sent:
                beliefs[s] = beliefs.get(s, 0) + 1
        return min(
            sum(1 for _, s in self.rec.commands if s in sent),
            sum(1 for n in beliefs.values() if n >= self.shards),
        )


def play(
    replayer: Replayer,
    spin_once: Callable[[float], None],
    rate: float | None,
    max_in_flight: int = 4,
    stall_s: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> None:
    """Publish every input message: at ``rate`` x the recorded pace, or (``rate=None``) as fast as the
    stack answers, keeping at most ``max_in_flight`` observations without both their command and
    their belief (the slowest branch sets the pace; an observation that stays unanswered ``stall_s``
    no longer counts, so a lost message cannot stop the replay).

    ``spin_once(timeout_s)`` runs the caller's executor, which delivers the outputs meanwhile.
    """
    inputs = replayer.bag.inputs
    if not inputs:
        return
    start, bag_start = time.monotonic_ns(), inputs[0].timestamp_ns
    commanded: set[int] = set()
    belief_count: dict[int, int] = {}  # stamp -> belief messages (one per shard)
    believed: set[int] = set()  # stamps with every shard's belief
    pending: deque[int] = deque()  # stamps of observations published and maybe unanswered, oldest first
    seen = [0, 0]  # commands and beliefs already looked at
    for message in inputs:
        if rate is not None:
            target = start + (message.timestamp_ns - bag_start) / rate
            while (now := time.monotonic_ns()) < target:
                spin_once(min((target - now) * 1e-9, 0.05))
        elif message.topic == HUMANS:
            while True:
                rec = replayer.rec
                commanded.update(s for _, s in rec.commands[seen[0] :])
                for _, s in rec.beliefs[seen[1] :]:
                    belief_count[s] = belief_count.get(s, 0) + 1
                    if belief_count[s] >= replayer.shards:
                        believed.add(s)
                seen[:] = [len(rec.commands), len(rec.beliefs)]
                oldest_live = time.time_ns() - int(stall_s * 1e9)
                while pending and (
                    (pending[0] in commanded and pending[0] in believed) or pending[0] < oldest_live
                ):
                    pending.popleft()
                if sum(1 for s in pending if s not in commanded or s not in believed) < max_in_flight:
                    break
                spin_once(0.01)
        stamp = replayer.publish(message)
        if rate is None and message.topic == HUMANS:
            pending.append(stamp)
        if progress is not None and message.topic == HUMANS:
            progress()
