"""monitor_node alone: levels from NodeStats, STALE when a node stops reporting, shards expected by name."""
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter

from intent_perf_ros.core.health import Level
from intent_perf_ros.msg import NodeStats
from intent_perf_ros.nodes.common import CONTROL_QOS, STATS_TOPIC
from intent_perf_ros.nodes.monitor_node import MonitorNode
from intent_perf_ros.runner import SHARDED, NodeProcesses


def test_levels_follow_thresholds_and_silence_turns_stale(ros):
    ros.add(MonitorNode(parameter_overrides=[Parameter("publish_period_s", value=0.2),
                                             Parameter("stale_after_s", value=1.0),
                                             Parameter("expected_nodes", value=["gp_inference_node"])]))
    peer = ros.add(Node("fake_node"))
    stats_pub = peer.create_publisher(NodeStats, STATS_TOPIC, CONTROL_QOS)
    arrays: list[DiagnosticArray] = []
    peer.create_subscription(DiagnosticArray, "/diagnostics", arrays.append, CONTROL_QOS)
    assert ros.spin_until(lambda: stats_pub.get_subscription_count() > 0 and arrays)

    def status(name: str) -> DiagnosticStatus | None:
        found = [s for s in arrays[-1].status if s.name == name] if arrays else []
        return found[0] if found else None

    # Never heard from: STALE.
    assert status("gp_inference_node: latency").level == DiagnosticStatus.STALE
    stats = NodeStats(node_name="gp_inference_node", callback_p95_ms=20.0, rss_mb=100.0, msgs_in=100)
    stats_pub.publish(stats)
    assert ros.spin_until(lambda: status("gp_inference_node: latency").level == DiagnosticStatus.WARN)
    assert status("gp_inference_node: memory").level == DiagnosticStatus.OK
    keys = {kv.key for kv in status("gp_inference_node: latency").values}
    assert "callback_p95_ms" in keys
    # Silence: STALE again within the timeout.
    assert ros.spin_until(lambda: status("gp_inference_node: latency").level == DiagnosticStatus.STALE, 5.0)


def test_monitor_expects_every_shard_the_runner_starts(ros):
    # The monitor reads the parameters file `intent-perf up --shards 3` gives it.
    stack = NodeProcesses(shards=3)
    try:
        monitor = ros.add(MonitorNode(cli_args=["--ros-args", "--params-file", str(stack.params_file)]))
    finally:
        stack.stop()
    shards = {f"{node}_{i}" for node in SHARDED for i in range(3)}
    assert set(monitor.expected_nodes) == shards | {"mpc_node"}
    assert set(monitor.expected_nodes) == {n for n in stack.nodes if n != "monitor_node"}
    # Never heard from: every shard is STALE by name, and no unsharded name is reported missing.
    reports = monitor.health.reports(time.monotonic())
    stale = {r.name.split(":")[0] for r in reports if r.level == Level.STALE}
    assert shards <= stale and stale.isdisjoint(SHARDED)
