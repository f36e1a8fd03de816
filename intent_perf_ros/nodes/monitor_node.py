"""monitor_node: every node's NodeStats in, diagnostic_msgs/DiagnosticArray on /diagnostics out."""
from __future__ import annotations

import socket
import time
from dataclasses import fields

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from intent_perf_ros.core.health import HealthModel, NodeSnapshot, Thresholds
from intent_perf_ros.msg import NodeStats
from intent_perf_ros.nodes.common import CONTROL_QOS, STATS_TOPIC, run

DIAGNOSTICS_TOPIC = "/diagnostics"
_SNAPSHOT_FIELDS = tuple(f.name for f in fields(NodeSnapshot) if f.name not in ("node_name", "extra"))


class MonitorNode(Node):
    """Judges latency, memory, CPU and error rate per node against parameter thresholds."""

    def __init__(self) -> None:
        super().__init__("monitor_node")
        defaults = Thresholds()
        thresholds = Thresholds(**{name: float(self.declare_parameter(name, float(getattr(defaults, name))).value)
                                   for name in Thresholds.field_names()})
        period_s: float = self.declare_parameter("publish_period_s", 1.0).value
        hardware_id: str = self.declare_parameter("hardware_id", socket.gethostname()).value
        expected = list(self.declare_parameter(
            "expected_nodes", ["gp_inference_node", "belief_node", "mpc_node"]).value)
        self.health = HealthModel(thresholds, hardware_id, pipeline_node="mpc_node", expected_nodes=expected)
        self.publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, CONTROL_QOS)
        self.create_subscription(NodeStats, STATS_TOPIC, self.on_stats, CONTROL_QOS)
        self.create_timer(period_s, self.publish)

    def on_stats(self, msg: NodeStats) -> None:
        snapshot = NodeSnapshot(node_name=msg.node_name, extra={kv.key: kv.value for kv in msg.extra},
                                **{name: getattr(msg, name) for name in _SNAPSHOT_FIELDS})
        self.health.update(snapshot, time.monotonic())

    def publish(self) -> None:
        out = DiagnosticArray()
        out.header.stamp = self.get_clock().now().to_msg()
        out.status = [
            DiagnosticStatus(level=bytes([int(r.level)]), name=r.name, message=r.message, hardware_id=r.hardware_id,
                             values=[KeyValue(key=k, value=v) for k, v in r.values])
            for r in self.health.reports(time.monotonic())
        ]
        self.publisher.publish(out)


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run(MonitorNode, args))


if __name__ == "__main__":
    main()
