"""monitor_node: every node's NodeStats in, diagnostic_msgs/DiagnosticArray on /diagnostics out."""
from __future__ import annotations

import socket
import time
from dataclasses import fields

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from intent_perf_ros.core.health import HealthModel, NodeSnapshot, Thresholds
from intent_perf_ros.monitoring.prometheus_exporter import PrometheusExporter
from intent_perf_ros.msg import NodeStats
from intent_perf_ros.nodes.common import CONTROL_QOS, STATS_TOPIC, run
from intent_perf_ros.runner import expand_shards

DIAGNOSTICS_TOPIC = "/diagnostics"
_SNAPSHOT_FIELDS = tuple(f.name for f in fields(NodeSnapshot) if f.name not in ("node_name", "extra"))


class MonitorNode(Node):
    """Judges latency, memory, CPU and error rate per node against parameter thresholds."""

    def __init__(self, **node_options) -> None:
        super().__init__("monitor_node", **node_options)
        defaults = Thresholds()
        thresholds = Thresholds(**{name: float(self.declare_parameter(name, float(getattr(defaults, name))).value)
                                   for name in Thresholds.field_names()})
        period_s: float = self.declare_parameter("publish_period_s", 1.0).value
        hardware_id: str = self.declare_parameter("hardware_id", socket.gethostname()).value
        expected = list(self.declare_parameter(
            "expected_nodes", ["gp_inference_node", "belief_node", "mpc_node"]).value)
        # Set by `intent-perf up --shards N` and the launch file's shards:=N: a sharded node runs as N
        # processes with their own names, and each of them must be reported missing on its own.
        shard_count: int = self.declare_parameter("shard_count", 1).value
        self.expected_nodes: tuple[str, ...] = tuple(expand_shards(expected, shard_count))
        self.health = HealthModel(thresholds, hardware_id, pipeline_node="mpc_node",
                                  expected_nodes=self.expected_nodes)
        # Off by default; binds to loopback unless an address is configured (nothing listens outside by default).
        port: int = self.declare_parameter("prometheus_port", 0).value
        address: str = self.declare_parameter("prometheus_address", "127.0.0.1").value
        self.exporter: PrometheusExporter | None = None
        if port > 0:
            self.exporter = PrometheusExporter(port, address)
            self.exporter.start()
            self.get_logger().info(f"Prometheus metrics on http://{address}:{self.exporter.port}/metrics")
        self.publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, CONTROL_QOS)
        self.create_subscription(NodeStats, STATS_TOPIC, self.on_stats, CONTROL_QOS)
        self.create_timer(period_s, self.publish)

    def on_stats(self, msg: NodeStats) -> None:
        snapshot = NodeSnapshot(node_name=msg.node_name, extra={kv.key: kv.value for kv in msg.extra},
                                **{name: getattr(msg, name) for name in _SNAPSHOT_FIELDS})
        self.health.update(snapshot, time.monotonic())
        if self.exporter is not None:
            self.exporter.update(snapshot)

    def publish(self) -> None:
        out = DiagnosticArray()
        out.header.stamp = self.get_clock().now().to_msg()
        out.status = [
            DiagnosticStatus(level=bytes([int(r.level)]), name=r.name, message=r.message, hardware_id=r.hardware_id,
                             values=[KeyValue(key=k, value=v) for k, v in r.values])
            for r in self.health.reports(time.monotonic())
        ]
        self.publisher.publish(out)

    def destroy_node(self) -> None:
        if self.exporter is not None:
            self.exporter.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run(MonitorNode, args))


if __name__ == "__main__":
    main()
