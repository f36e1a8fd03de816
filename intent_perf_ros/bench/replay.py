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

Soak runs (``bench --duration``) last hours, so nothing here needs to grow with the run's length:
``Recording.split`` hands the records of old observations over to be summarised (``LatencyDigest``,
``Reservoir``), and ``ProcessSampler(max_samples=...)`` thins its time series as they grow.
"""

from __future__ import annotations

import importlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import psutil
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message

from intent_perf_ros.bench.bags import HUMANS_TYPE, Bag, RawMessage, read_stamp, restamp
from intent_perf_ros.msg import NodeStats, TrackedHumans
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
    """RSS [MB] and CPU [% of one core] of named processes, sampled into time series.

    ``max_samples``: when the series reach it, every second sample is dropped and from then on only
    every second call is recorded (then every fourth ...), so a run of any length keeps between half
    and all of ``max_samples`` points spread over the whole run. The peak RSS and the RSS of the last
    ``recent`` calls are kept from every call, thinned or not.
    """

    def __init__(self, pids: dict[str, int], max_samples: int | None = None, recent: int = 10) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        for p in self.processes.values():
            p.cpu_percent(None)  # the first call only starts the interval
        self.t0 = time.monotonic()
        self.t_s: list[float] = []
        self.rss_mb: dict[str, list[float]] = {n: [] for n in self.processes}
        self.cpu_percent: dict[str, list[float]] = {n: [] for n in self.processes}
        self.peak_rss_mb: dict[str, float] = {}
        self.recent_rss_mb: dict[str, deque[float]] = {n: deque(maxlen=recent) for n in self.processes}
        self.max_samples = max_samples
        self._stride, self._calls = 1, 0

    def sample(self) -> None:
        keep = self._calls % self._stride == 0
        self._calls += 1
        if keep:
            self.t_s.append(time.monotonic() - self.t0)
        for name, p in self.processes.items():
            try:
                # cpu_percent is the mean since its previous call: read it only for kept samples.
                rss, cpu = p.memory_info().rss / 2**20, (p.cpu_percent(None) if keep else math.nan)
            except psutil.NoSuchProcess:
                rss = cpu = math.nan
            self.recent_rss_mb[name].append(rss)
            if rss > self.peak_rss_mb.get(name, -math.inf):  # False for NaN
                self.peak_rss_mb[name] = rss
            if keep:
                self.rss_mb[name].append(rss)
                self.cpu_percent[name].append(cpu)
        if self.max_samples is not None and len(self.t_s) >= self.max_samples:
            self._thin()

    def _thin(self) -> None:
        self.t_s = self.t_s[::2]
        for series in (self.rss_mb, self.cpu_percent):
            for name in series:
                series[name] = series[name][::2]
        self._stride *= 2


class LatencyDigest:
    """Latencies [ms] in bounded memory: count, mean and max exact; percentiles from a histogram of
    log-spaced bins 1 % wide (from 1 us to ~6 h), so within 0.5 % of the exact value. Hours of
    samples cost 2400 counters, where a list would grow by 100,000 floats an hour at 30 Hz."""

    LOW_MS, RATIO, BINS = 1e-3, 1.01, 2400

    def __init__(self) -> None:
        self.counts = np.zeros(self.BINS, dtype=np.int64)
        self.count, self.total = 0, 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, values_ms) -> None:
        a = np.asarray(values_ms, dtype=np.float64)
        if a.size == 0:
            return
        bins = np.floor(np.log(np.maximum(a, self.LOW_MS) / self.LOW_MS) / math.log(self.RATIO))
        self.counts += np.bincount(np.minimum(bins, self.BINS - 1).astype(np.int64), minlength=self.BINS)
        self.count += int(a.size)
        self.total += float(a.sum())
        self.min, self.max = min(self.min, float(a.min())), max(self.max, float(a.max()))

    def percentile(self, q: float) -> float:
        """The value of rank ``q`` % (the middle of its bin, clamped to the exact min and max)."""
        if self.count == 0:
            return math.nan
        rank = q / 100.0 * (self.count - 1)
        b = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        return min(max(self.LOW_MS * self.RATIO ** (b + 0.5), self.min), self.max)

    def summary(self) -> dict[str, float]:
        """The keys of ``bench.summary``: count, mean, p50, p95, p99, p999, max (NaN when empty)."""
        return {
            "count": self.count,
            "mean": self.total / self.count if self.count else math.nan,
            **{k: self.percentile(q) for k, q in (("p50", 50), ("p95", 95), ("p99", 99), ("p999", 99.9))},
            "max": self.max if self.count else math.nan,
        }


class Reservoir:
    """A uniform random sample of at most ``capacity`` (t, value) pairs of a stream (algorithm R):
    what the report plots of a soak run, whatever its length."""

    def __init__(self, capacity: int, seed: int = 0) -> None:
        self.rows = np.zeros((capacity, 2))
        self.seen = 0
        self._rng = np.random.default_rng(seed)

    def add(self, t, values) -> None:
        batch = np.column_stack([np.asarray(t, dtype=np.float64), np.asarray(values, dtype=np.float64)])
        index = self.seen + np.arange(len(batch))
        capacity = len(self.rows)
        # Item i (0-based) replaces a random slot with probability capacity / (i + 1).
        slot = np.where(index < capacity, index, (self._rng.random(len(batch)) * (index + 1)).astype(np.int64))
        keep = slot < capacity
        self.rows[slot[keep]] = batch[keep]  # whole rows: t and value always come from the same item
        self.seen += len(batch)

    def items(self) -> tuple[list[float], list[float]]:
        """The sample sorted by t."""
        rows = self.rows[: min(self.seen, len(self.rows))]
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        return rows[:, 0].tolist(), rows[:, 1].tolist()


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
    """What came back: per output, (receive time ns, stamp ns); predictions keep their bytes.

    ``progress`` counts per observation sent (by stamp) the commands and beliefs that answered it, and
    ``answers`` all such outputs: the replay's pacing and the drain read these, not the lists, so the
    lists may be ``split`` while the replay runs."""

    sent: dict[int, tuple[int, int]] = field(default_factory=dict)  # stamp -> (send ns, bag time ns)
    predictions: list[tuple[int, int, bytes]] = field(default_factory=list)
    beliefs: list[tuple[int, int]] = field(default_factory=list)
    commands: list[tuple[int, int]] = field(default_factory=list)
    progress: dict[int, list[int]] = field(default_factory=dict)  # stamp -> [commands, beliefs]
    answers: int = 0

    def observed(self, stamp: int, send_ns: int, bag_ns: int) -> None:
        self.sent.setdefault(stamp, (send_ns, bag_ns))
        self.progress.setdefault(stamp, [0, 0])

    def answer(self, stamp: int, kind: int) -> None:
        """An output (kind 0 command, 1 belief) with ``stamp``: counted if it answers an observation."""
        counts = self.progress.get(stamp)
        if counts is not None:
            counts[kind] += 1
            self.answers += 1

    def split(self, before_ns: int) -> Recording:
        """Move the observations stamped before ``before_ns``, and every output stamped before it, into
        a new Recording (returned); an output arriving for them later is dropped at the next split."""
        old = Recording()
        for name in ("sent", "progress"):
            mine = getattr(self, name)
            getattr(old, name).update((s, v) for s, v in mine.items() if s < before_ns)
            setattr(self, name, {s: v for s, v in mine.items() if s >= before_ns})
        for name in ("predictions", "beliefs", "commands"):  # records are (receive ns, stamp, ...)
            records = getattr(self, name)
            setattr(old, name, [r for r in records if r[1] < before_ns])
            setattr(self, name, [r for r in records if r[1] >= before_ns])
        return old


class Replayer(Node):
    """Publishes bag messages (restamped) and records outputs; see the module docstring."""

    def __init__(
        self,
        bag: Bag,
        listen: bool = False,
        sample_pids: dict[str, int] | None = None,
        sample_period_s: float = 0.5,
        shards: int = 1,
        max_samples: int | None = None,
        **node_kwargs,
    ) -> None:
        super().__init__("intent_perf_replayer", **node_kwargs)
        self.bag, self.listen = bag, listen
        # A sharded stack answers each observation with one belief per shard: all must be back.
        self.shards = max(shards, 1)
        self.rec = Recording()
        self._probe: bytes | None = None
        self._probes: set[int] = set()
        self._probe_answers: dict[int, list[int]] = {}  # probe stamp -> [commands, beliefs]
        # Per input topic, named as the nodes' NodeStats name what they received (no leading slash).
        self.published: dict[str, int] = {"humans/tracked": 0, "odom": 0, "goal_pose": 0, "/clock": 0}
        self.received: dict[str, int] = {PREDICTIONS: 0, BELIEF: 0, COMMANDS: 0}  # all outputs tapped
        self.stats: dict[str, NodeStats] = {}
        self.stats_history: list[tuple[float, NodeStats]] = []  # (monotonic receive time, message)
        self.stats_count: dict[str, int] = {}
        self.sampler = ProcessSampler(sample_pids or {}, max_samples)
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
        self.rec.observed(stamp, time.time_ns(), stamp)
        self.published["humans/tracked"] += 1

    def _on_predictions(self, data: bytes) -> None:
        self.rec.predictions.append((time.time_ns(), read_stamp(data), data))
        self.received[PREDICTIONS] += 1

    def _on_belief(self, data: bytes) -> None:
        self._on_answer(data, self.rec.beliefs, BELIEF, 1)

    def _on_command(self, data: bytes) -> None:
        self._on_answer(data, self.rec.commands, COMMANDS, 0)

    def _on_answer(self, data: bytes, records: list, topic: str, kind: int) -> None:
        """A command (kind 0) or belief (kind 1): recorded, and counted for its observation or probe."""
        now, stamp = time.time_ns(), read_stamp(data)
        records.append((now, stamp))
        self.rec.answer(stamp, kind)
        self.received[topic] += 1
        if stamp in self._probes:
            self._probe_answers.setdefault(stamp, [0, 0])[kind] += 1

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
            self.rec.observed(stamp, stamp, message.timestamp_ns)
        return stamp

    def probe(self) -> int:
        """Publish an observation of nobody, stamped now, outside the recording (``prime`` uses it)."""
        if self._probe is None:
            first = next(m for m in self.bag.inputs if m.topic == HUMANS)
            empty = deserialize_message(first.data, TrackedHumans)
            empty.humans = []
            self._probe = serialize_message(empty)
        data = bytearray(self._probe)
        stamp = time.time_ns()
        restamp(data, stamp)
        self.publishers_[HUMANS].publish(bytes(data))
        self._probes.add(stamp)
        return stamp

    def primed(self, belief_links_before: int) -> bool:
        """A probe came back as a command and as every shard's belief, and mpc_node reported more
        beliefs received than ``belief_links_before``: every reliable link between the nodes carries
        data. A link that is matched in the ROS graph may still be completing its reliable
        handshake, and what a writer publishes meanwhile never reaches that (volatile) reader: the
        first seconds of a replay lost 9-45 beliefs or predictions in about half of the runs before
        the bench waited for this."""
        answered = any(commands >= 1 and beliefs >= self.shards for commands, beliefs in self._probe_answers.values())
        return answered and self.counter("mpc_node", f"msgs_in.{BELIEF}") > belief_links_before

    def counter(self, node: str, key: str) -> int:
        """An integer counter of ``node``'s latest NodeStats ``extra`` (0 before any)."""
        msg = self.stats.get(node)
        return next((int(kv.value) for kv in msg.extra if kv.key == key), 0) if msg is not None else 0

    def forget_probes(self) -> None:
        """Drop what the probes left in the recording and the output counts: the replay starts clean."""
        self.rec = Recording()
        self.received = dict.fromkeys(self.received, 0)
        self._probes.clear()
        self._probe_answers.clear()

    def is_answered(self, stamp: int) -> bool:
        """The observation's command and belief (every shard's) have both come back."""
        counts = self.rec.progress.get(stamp)
        return counts is not None and counts[0] >= 1 and counts[1] >= self.shards

    def answered(self) -> int:
        """Observations of the recording whose command and every belief have come back."""
        return sum(1 for s in self.rec.progress if self.is_answered(s))


def play(
    replayer: Replayer,
    spin_once: Callable[[float], None],
    rate: float | None,
    max_in_flight: int = 4,
    stall_s: float = 1.0,
    progress: Callable[[], None] | None = None,
    until: float | None = None,
) -> None:
    """Publish every input message: at ``rate`` x the recorded pace, or (``rate=None``) as fast as the
    stack answers, keeping at most ``max_in_flight`` observations without both their command and
    their belief (the slowest branch sets the pace; an observation that stays unanswered ``stall_s``
    no longer counts, so a lost message cannot stop the replay). ``until``: a ``time.monotonic()``
    deadline after which nothing more is published (a soak run's end, mid-bag).

    ``spin_once(timeout_s)`` runs the caller's executor, which delivers the outputs meanwhile.
    """
    inputs = replayer.bag.inputs
    if not inputs:
        return
    start, bag_start = time.monotonic_ns(), inputs[0].timestamp_ns
    pending: deque[int] = deque()  # stamps of observations published and maybe unanswered, oldest first
    for message in inputs:
        if rate is not None:
            target = start + (message.timestamp_ns - bag_start) / rate
            while (now := time.monotonic_ns()) < target:
                spin_once(min((target - now) * 1e-9, 0.05))
        elif message.topic == HUMANS:
            while True:
                oldest_live = time.time_ns() - int(stall_s * 1e9)
                while pending and (replayer.is_answered(pending[0]) or pending[0] < oldest_live):
                    pending.popleft()
                if sum(1 for s in pending if not replayer.is_answered(s)) < max_in_flight:
                    break
                spin_once(0.01)
        if until is not None and time.monotonic() >= until:
            return
        stamp = replayer.publish(message)
        if rate is None and message.topic == HUMANS:
            pending.append(stamp)
        if progress is not None and message.topic == HUMANS:
            progress()
