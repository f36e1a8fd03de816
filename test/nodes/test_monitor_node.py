"""monitor_node alone: levels from NodeStats, STALE when a node stops reporting."""
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.parameter import Parameter

from intent_perf_ros.msg import NodeStats
from intent_perf_ros.nodes.common import CONTROL_QOS, STATS_TOPIC
from intent_perf_ros.nodes.monitor_node import MonitorNode


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
