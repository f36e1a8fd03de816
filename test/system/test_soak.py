"""CI-sized soak: the four nodes under the synthetic scenario for ~90 s; memory flat, no command lost.

Warm-up (``WARMUP_S`` after the stack answers): what legitimately grows at the start has reached its bound -
numba and OSQP caches, allocator arenas, DDS history buffers, and the GP's online place model, whose FIFO
fills with ``online_capacity`` (300) windows: 5 humans complete a window per 0.4 s grid step each once a
track is 8 s old (window = 20 steps), so the FIFO is full ~32 s after the first observation (measured on
the 2-core machine: the GP node's RSS grew ~2 MB over the first ~35 s, every node was flat after that, and
the drift over the measurement was < 0.1 %). After the warm-up every node's RSS must stay within
``MAX_DRIFT`` of its value at the end of the warm-up (medians of ``EDGE_S`` seconds at either end).

Lost commands: the MPC counts what it published (NodeStats ``msgs_out.cmd_vel``), the driver counts what
it received. With C = published - received at the moment a NodeStats message arrives, C = lost +
in flight (commands published before that snapshot not yet delivered, >= 0); losses only accumulate. The
smallest C of a few arrivals at the end of the warm-up is the baseline (it holds the commands published
before the driver's subscription matched); if the smallest C of a few arrivals at the end is not above it,
no command was lost in between (a loss lifts every later C by one).
"""
from __future__ import annotations

import statistics
import time

import psutil
import pytest
import rclpy
from rclpy.experimental import EventsExecutor

from intent_perf_ros.bench.driver import ScenarioDriver, topic_counts
from intent_perf_ros.core.scenario import ScenarioConfig
from intent_perf_ros.msg import NodeStats
from intent_perf_ros.nodes.common import CONTROL_QOS, STATS_TOPIC
from intent_perf_ros.runner import NodeProcesses, spin_until

pytestmark = [pytest.mark.system]

WARMUP_S = 40.0
MEASURE_S = 50.0
SAMPLE_PERIOD_S = 1.0
EDGE_S = 5.0  # RSS at the start and at the end of the measurement: the median of this many seconds
MAX_DRIFT = 0.05


class RssSampler:
    """RSS of every node process, once per SAMPLE_PERIOD_S, driven from spin_until's condition (no sleeps)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._next = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + SAMPLE_PERIOD_S
        for name, proc in self.processes.items():
            self.samples[name].append((now, proc.memory_info().rss / 2**20))

    def median(self, name: str, start: float, end: float) -> float:
        return statistics.median(mb for t, mb in self.samples[name] if start <= t <= end)


class CommandLedger:
    """Published minus received commands, taken whenever the MPC's NodeStats arrives at the driver."""

    def __init__(self, driver: ScenarioDriver) -> None:
        self.driver = driver
        self.deficits: list[tuple[float, int]] = []
        driver.create_subscription(NodeStats, STATS_TOPIC, self.on_stats, CONTROL_QOS)

    def on_stats(self, msg: NodeStats) -> None:
        if msg.node_name != "mpc_node":
            return
        published = int({kv.key: kv.value for kv in msg.extra}.get("msgs_out.cmd_vel", 0))
        self.deficits.append((time.monotonic(), published - self.driver.commands_received))


def test_soak_memory_is_flat_and_no_command_is_lost(tmp_path):
    stack = NodeProcesses(log_dir=tmp_path, overrides={"gp_inference_node": {
        "dataset_dir": str(tmp_path / "no_data"), "model_cache_dir": str(tmp_path / "models")}})
    stack.start()
    rclpy.init()
    try:
        driver = ScenarioDriver(ScenarioConfig(humans=5, seed=5, crossing_human=True), rate_hz=20.0)
        ledger = CommandLedger(driver)
        executor = EventsExecutor()
        executor.add_node(driver)
        assert spin_until(executor, driver.stack_ready, 120.0, stack), "stack did not come up"
        sampler = RssSampler(stack.pids())
        driver.running = True
        t0 = time.monotonic()
        warm_end, end = t0 + WARMUP_S, t0 + WARMUP_S + MEASURE_S

        def until(deadline: float):
            return lambda: sampler.poll() or time.monotonic() >= deadline

        # spin_until raises if a node process exits; the timeouts only bound a wedged executor.
        assert spin_until(executor, until(warm_end), WARMUP_S + 5.0, stack)
        n = len(ledger.deficits)
        assert spin_until(executor, lambda: sampler.poll() or len(ledger.deficits) >= n + 3, 6.0, stack)
        warm_deficit = min(c for _, c in ledger.deficits[n:])
        answered = len(driver.latencies_ms)
        assert spin_until(executor, until(end), MEASURE_S + 5.0, stack)
        driver.running = False
        n = len(ledger.deficits)
        assert spin_until(executor, lambda: len(ledger.deficits) >= n + 3, 6.0, stack)
        end_deficit = min(c for _, c in ledger.deficits[n:])
        counts = topic_counts(driver)
        assert stack.poll() == {}, "a node process exited"
        executor.shutdown()  # else it keeps the nodes in the ROS graph (see test/nodes/conftest.py)
        driver.destroy_node()
    finally:
        rclpy.try_shutdown()
        codes = stack.stop()
    assert stack.unclean_exits(codes) == {}, f"exit codes {codes}; logs in {tmp_path}"

    assert len(driver.latencies_ms) - answered >= 0.8 * MEASURE_S * driver.rate_hz, "observations went unanswered"
    assert end_deficit <= warm_deficit, f"lost commands: {end_deficit - warm_deficit}; chain {counts}"
    drift = {}
    for name in sampler.samples:
        start_mb = sampler.median(name, warm_end, warm_end + EDGE_S)
        end_mb = sampler.median(name, end - EDGE_S, end)
        drift[name] = (end_mb - start_mb) / start_mb
    assert all(d < MAX_DRIFT for d in drift.values()), {n: f"{100 * d:.1f} %" for n, d in drift.items()}
