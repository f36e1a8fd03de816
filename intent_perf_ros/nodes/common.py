"""Plumbing shared by the four nodes: QoS profiles, stamps, statistics publishing, spinning."""
from __future__ import annotations

import faulthandler
import gc
import inspect
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

import rclpy
from diagnostic_msgs.msg import KeyValue
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.experimental import EventsExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from threadpoolctl import threadpool_limits

from intent_perf_ros.core.degradation import DegradationLadder
from intent_perf_ros.core.stats import LatencyWindow, ProcessSampler
from intent_perf_ros.msg import NodeStats

# Tracker input and odometry: sensor-data style. A late sample is worth less than the next one,
# so best effort with a short queue (compatible with reliable publishers too).
SENSOR_QOS = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST, depth=10,
                        durability=DurabilityPolicy.VOLATILE)
# Derived data between our nodes (predictions, beliefs): every message matters to the stage after
# it and to the loss accounting, so reliable, with a queue that absorbs a burst of a few cycles.
DERIVED_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
# Commands: reliable and shallow - a queued old command is worse than none.
COMMAND_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=5)
# Goals, statistics and diagnostics: reliable, low rate.
CONTROL_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)

STATS_TOPIC = "intent_perf/node_stats"


def stamp_to_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def stamp_to_s(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def wall_ns() -> int:
    """The clock stamps are compared against (system time, as rclpy's default clock)."""
    return time.time_ns()


class NodeStatistics:
    """Counts and latency windows of one node, published as NodeStats every ``period_s``.

    Callback latency is measured around the node's own work; end-to-end latency is the time from
    the originating observation's stamp to this node's output (valid on one clock, i.e. one machine
    or synchronised clocks).
    """

    def __init__(self, node: Node, period_s: float, extra: Callable[[], dict[str, str]] | None = None,
                 ladder: DegradationLadder | None = None) -> None:
        self._node = node
        self._extra = extra
        self._warned: dict[tuple[int, int], float] = {}
        self.ladder = ladder
        self.callback_ms = LatencyWindow()
        self.e2e_ms = LatencyWindow()
        self.msgs_in = self.msgs_out = self.dropped = self.repaired = self.errors = 0
        self.topic_in: dict[str, int] = {}
        self.topic_out: dict[str, int] = {}
        self._sampler = ProcessSampler()
        self._last_publish = time.monotonic()
        self._last_in = self._last_out = 0
        self._publisher = node.create_publisher(NodeStats, STATS_TOPIC, CONTROL_QOS)
        self._timer = node.create_timer(period_s, self.publish)

    def received(self, topic: str) -> None:
        self.msgs_in += 1
        self.topic_in[topic] = self.topic_in.get(topic, 0) + 1

    def sent(self, topic: str, stamp_ns: int | None = None) -> None:
        self.msgs_out += 1
        self.topic_out[topic] = self.topic_out.get(topic, 0) + 1
        if stamp_ns is not None:
            self.e2e_ms.add((wall_ns() - stamp_ns) * 1e-6)

    def guarded(self, callback: Callable[..., None]) -> Callable[..., None]:
        """Wrap a subscription or timer callback so that no message or tick can kill the node:
        failures are counted in ``errors`` and logged (rate-limited); the next call runs as usual."""
        logger = self._node.get_logger()
        name = callback.__name__
        last_logged = [-math.inf]

        def call(*args) -> None:
            try:
                callback(*args)
            except Exception as exc:  # the node must survive any single message
                self.errors += 1
                now = time.monotonic()
                if now - last_logged[0] >= 5.0:  # cheap throttle (see warn())
                    last_logged[0] = now
                    logger.error(f"{name} failed and was skipped: {exc!r}")

        # rclpy passes a timer callback a TimerInfo when it accepts an argument: keep the arity.
        if inspect.signature(callback).parameters:
            def guarded_callback(msg) -> None:
                call(msg)
        else:
            def guarded_callback() -> None:
                call()

        return guarded_callback

    def warn(self, message: str, period_s: float = 5.0) -> None:
        """A warning at most once per ``period_s`` per call site. rclpy's ``throttle_duration_sec``
        inspects the caller's frame on every call (about 0.5 ms) before throttling, which a bad input
        stream would pay per message; this check costs a dictionary lookup."""
        site = sys._getframe(1).f_code.co_firstlineno, sys._getframe(1).f_lineno
        now = time.monotonic()
        if now - self._warned.get(site, -math.inf) >= period_s:
            self._warned[site] = now
            self._node.get_logger().warning(message)

    def callback_done(self, start_ns: int) -> None:
        """Record the callback's duration; it also drives the degradation ladder (graceful degradation)."""
        ms = (time.perf_counter_ns() - start_ns) * 1e-6
        self.callback_ms.add(ms)
        if self.ladder is not None:
            before = self.ladder.level
            if self.ladder.observe(ms) != before:
                self._node.get_logger().warning(
                    f"cycle time {'over' if self.ladder.level > before else 'back under'} the "
                    f"{self.ladder.budget_ms:g} ms budget: now running '{self.ladder.name}' "
                    f"(level {self.ladder.level} of {len(self.ladder.levels) - 1})")

    def publish(self) -> None:
        now = time.monotonic()
        elapsed = max(now - self._last_publish, 1e-9)
        msg = NodeStats()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.node_name = self._node.get_name()
        msg.window_s = elapsed
        (msg.callback_p50_ms, msg.callback_p95_ms, msg.callback_p99_ms,
         msg.callback_max_ms) = (float(v) for v in self.callback_ms.percentiles())
        msg.e2e_p50_ms, msg.e2e_p95_ms, msg.e2e_p99_ms, msg.e2e_max_ms = (float(v) for v in self.e2e_ms.percentiles())
        msg.msgs_in, msg.msgs_out = self.msgs_in, self.msgs_out
        msg.dropped, msg.repaired, msg.errors = self.dropped, self.repaired, self.errors
        msg.rate_in_hz = (self.msgs_in - self._last_in) / elapsed
        msg.rate_out_hz = (self.msgs_out - self._last_out) / elapsed
        msg.rss_mb, msg.cpu_percent = self._sampler.sample()
        extra = {f"msgs_in.{t}": str(c) for t, c in self.topic_in.items()}
        extra.update({f"msgs_out.{t}": str(c) for t, c in self.topic_out.items()})
        if self._extra is not None:
            extra.update(self._extra())
        if self.ladder is not None:
            extra.update({f"degradation.{k}": str(v) for k, v in self.ladder.stats().items()})
        msg.extra = [KeyValue(key=k, value=v) for k, v in extra.items()]
        self._publisher.publish(msg)
        # Percentiles describe one statistics period, so a slow burst shows up in the period it happened.
        self.callback_ms.clear()
        self.e2e_ms.clear()
        self._last_publish, self._last_in, self._last_out = now, self.msgs_in, self.msgs_out


def set_realtime_priority(priority: int) -> str | None:
    """SCHED_FIFO at ``priority`` (1-99) for every thread of this process, the executor's and the
    middleware's receive threads alike, so that the observation-to-command path preempts everything else
    on a core. Returns why it could not be set (it needs CAP_SYS_NICE or an rtprio limit), else None.
    Linux's RT throttling (kernel.sched_rt_runtime_us) still leaves 5 % of each second to other tasks."""
    try:
        for thread in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(thread), os.SCHED_FIFO, os.sched_param(priority))
    except (AttributeError, OSError) as exc:
        return f"SCHED_FIFO priority {priority} refused ({exc}): grant CAP_SYS_NICE or an rtprio limit"
    return None


TEARDOWN_TIMEOUT_S = 5.0  # for destroying the nodes and shutting rclpy down once spinning stopped


def run(node_factories: Callable[[], Node] | Sequence[Callable[[], Node]], args: list[str] | None = None) -> int:
    """``main()`` of every node process: init, spin until SIGINT/SIGTERM, clean shutdown, exit code 0.

    Several factories put several nodes in one process (``nodes.composed``), spun by one executor.
    The EventsExecutor halves the per-message overhead of the SingleThreadedExecutor; its
    ``spin()`` can ignore shutdown, so it is driven with ``spin_once`` (a ``use_events_executor``
    parameter of false selects the SingleThreadedExecutor; in one process every node must ask for the
    EventsExecutor to get it). A ``realtime_priority`` parameter above 0 runs the process at that
    SCHED_FIFO priority (``set_realtime_priority``; the highest of its nodes' values). Signals only set
    a flag: rclpy's own handler shuts the context down while ``spin_once`` may be waiting in C++, which
    once left a node hanging past its stop timeout; here the loop ends between two ``spin_once`` calls.
    """
    factories = (node_factories,) if callable(node_factories) else tuple(node_factories)
    # One BLAS thread per node: the matrices are small (thread hand-offs cost more than they save) and
    # the nodes share the robot's few cores; measured: a 20-human GP batch 12-16 ms with 2 threads, 1.4-2.9 ms with 1.
    threadpool_limits(limits=1)
    # SIGUSR1 dumps every thread's stack to stderr: the runner sends it before killing a node that
    # did not stop in time, so the log says where it hung.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda received, _frame: stop.append(received))
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    nodes: list[Node] = []
    executor: Executor | None = None
    try:
        for factory in factories:
            nodes.append(factory())
        # Start-up leaves ~135k long-lived objects (numba's type system, compiled code, models); a full
        # cyclic collection walks them all - 80 ms measured in mpc_node, a latency spike whenever Python
        # decides to run one. Freezing moves them out of the collector's reach; later garbage is still
        # collected as usual.
        gc.collect()
        gc.freeze()
        use_events = all([node.declare_parameter("use_events_executor", True).value for node in nodes])
        executor = EventsExecutor() if use_events else SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
        # After the executor: its threads, and the middleware's, exist now and all get the priority.
        priority = max(node.declare_parameter("realtime_priority", 0).value for node in nodes)
        if priority > 0:
            refused = set_realtime_priority(priority)
            log = nodes[0].get_logger()
            log.warning(refused) if refused else log.info(f"running at SCHED_FIFO priority {priority}")
        while not stop and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    finally:
        # rclpy's Node.destroy_node (rcl_node_fini in Fast DDS) hung twice in about 16 CI runs of the
        # suite, 10 s until SIGKILL, with the executor still holding the nodes (mpc_node) and without
        # (monitor_node). It holds the GIL there, so only faulthandler's C watchdog thread can bound it:
        # after TEARDOWN_TIMEOUT_S it dumps every thread into the log and exits with status 1, which
        # ``runner.NodeProcesses`` reports as a teardown hang (``teardown_hangs``).
        faulthandler.dump_traceback_later(TEARDOWN_TIMEOUT_S, exit=True)
        if executor is not None:
            executor.shutdown()  # the executor lets go of the nodes (middleware callbacks unregistered) first
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
    return 0
