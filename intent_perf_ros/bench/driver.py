"""A stand-in robot and people tracker that drives the node stack and measures what comes back.

Publishes the synthetic scenario's humans and the simulated robot's odometry at a fixed rate,
integrates the received velocity commands (unicycle), and records every command's
observation-to-command latency from its propagated stamp, plus the nodes' NodeStats and the
monitor's /diagnostics.
"""
from __future__ import annotations

import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node

from intent_perf_ros.core.scenario import ScenarioConfig, SyntheticScenario
from intent_perf_ros.msg import ControlStatus, HumanState, NodeStats, TrackedHumans
from intent_perf_ros.nodes.common import COMMAND_QOS, CONTROL_QOS, SENSOR_QOS, STATS_TOPIC, stamp_to_ns, wall_ns

STACK_NODES = ("gp_inference_node", "belief_node", "mpc_node")


def _stamp(msg_header, ns: int, frame_id: str) -> None:
    msg_header.stamp.sec, msg_header.stamp.nanosec = divmod(ns, 1_000_000_000)
    msg_header.frame_id = frame_id


class ScenarioDriver(Node):
    """Plays a SyntheticScenario into the stack in real time and records the stack's answers."""

    def __init__(self, scenario: ScenarioConfig, rate_hz: float = 30.0, frame_id: str = "map") -> None:
        super().__init__("intent_perf_driver")
        self.scenario = SyntheticScenario(scenario)
        self.rate_hz = rate_hz
        self.frame_id = frame_id
        self.robot = np.array([*scenario.robot_start, 0.0])  # x, y, theta
        self.command = np.zeros(2)  # v, omega
        self.running = False
        self.published = {"humans/tracked": 0, "odom": 0, "goal_pose": 0}
        self.observation_stamps: set[int] = set()
        self.latencies_ms: list[float] = []
        self.commands_received = 0
        self.commands_unmatched = 0
        self.stats: dict[str, NodeStats] = {}
        self.stats_count: dict[str, int] = {}
        self.diagnostics: DiagnosticArray | None = None
        self.min_distance = math.inf
        self.statuses: list[int] = []
        self.humans_pub = self.create_publisher(TrackedHumans, "humans/tracked", SENSOR_QOS)
        self.odom_pub = self.create_publisher(Odometry, "odom", SENSOR_QOS)
        self.goal_pub = self.create_publisher(PoseStamped, "goal_pose", CONTROL_QOS)
        self.create_subscription(TwistStamped, "cmd_vel", self.on_command, COMMAND_QOS)
        self.create_subscription(ControlStatus, "mpc/status", self.on_status, CONTROL_QOS)
        self.create_subscription(NodeStats, STATS_TOPIC, self.on_stats, CONTROL_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, CONTROL_QOS)
        self.create_timer(1.0 / rate_hz, self.tick)
        self.create_timer(1.0, self.publish_goal)

    def stack_ready(self) -> bool:
        """Every stack node reported once and every topic of the chain is matched."""
        return (all(n in self.stats for n in STACK_NODES)
                and self.humans_pub.get_subscription_count() >= 1
                and self.odom_pub.get_subscription_count() >= 1
                and self.goal_pub.get_subscription_count() >= 1
                and self.count_subscribers("intent/predictions") >= 2
                and self.count_subscribers("intent/belief") >= 1
                and self.count_publishers("cmd_vel") >= 1
                and self.count_publishers("/diagnostics") >= 1)

    def tick(self) -> None:
        if not self.running:
            return
        dt = 1.0 / self.rate_hz
        v, omega = self.command
        self.robot += (v * math.cos(self.robot[2]) * dt, v * math.sin(self.robot[2]) * dt, omega * dt)
        self.scenario.step(dt)
        self.min_distance = min(self.min_distance, float(
            np.min(np.linalg.norm(self.scenario.xy - self.robot[:2], axis=1), initial=math.inf)))
        odom = Odometry()
        _stamp(odom.header, wall_ns(), self.frame_id)
        odom.child_frame_id = "base_link"
        odom.pose.pose.position.x, odom.pose.pose.position.y = float(self.robot[0]), float(self.robot[1])
        odom.pose.pose.orientation.z = math.sin(self.robot[2] / 2.0)
        odom.pose.pose.orientation.w = math.cos(self.robot[2] / 2.0)
        odom.twist.twist.linear.x, odom.twist.twist.angular.z = float(v), float(omega)
        self.odom_pub.publish(odom)
        self.published["odom"] += 1
        humans = TrackedHumans()
        stamp = wall_ns()
        _stamp(humans.header, stamp, self.frame_id)
        s = self.scenario
        humans.humans = [HumanState(id=int(s.ids[i]), x=float(s.xy[i, 0]), y=float(s.xy[i, 1]),
                                    vx=float(s.vxy[i, 0]), vy=float(s.vxy[i, 1])) for i in range(len(s.ids))]
        self.observation_stamps.add(stamp)
        self.humans_pub.publish(humans)
        self.published["humans/tracked"] += 1

    def publish_goal(self) -> None:
        goal = PoseStamped()
        _stamp(goal.header, wall_ns(), self.frame_id)
        goal.pose.position.x, goal.pose.position.y = map(float, self.scenario.config.robot_goal)
        goal.pose.orientation.w = 1.0
        self.goal_pub.publish(goal)
        self.published["goal_pose"] += 1

    def on_command(self, msg: TwistStamped) -> None:
        now = wall_ns()
        self.commands_received += 1
        v, omega = msg.twist.linear.x, msg.twist.angular.z
        if math.isfinite(v) and math.isfinite(omega):
            self.command[:] = (v, omega)
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp in self.observation_stamps:
            self.latencies_ms.append((now - stamp) * 1e-6)
        else:
            self.commands_unmatched += 1

    def on_status(self, msg: ControlStatus) -> None:
        self.statuses.append(msg.mode)

    def on_stats(self, msg: NodeStats) -> None:
        self.stats[msg.node_name] = msg
        self.stats_count[msg.node_name] = self.stats_count.get(msg.node_name, 0) + 1

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        self.diagnostics = msg


def topic_counts(driver: ScenarioDriver) -> dict[str, dict]:
    """Per topic: messages published by the producer, received by each consumer, and lost."""
    def extra(node: str, key: str) -> int:
        stats = driver.stats.get(node)
        if stats is None:
            return 0
        return int({kv.key: kv.value for kv in stats.extra}.get(key, 0))

    chain = {
        "humans/tracked": (driver.published["humans/tracked"], ("gp_inference_node",)),
        "odom": (driver.published["odom"], ("mpc_node",)),
        "intent/predictions": (extra("gp_inference_node", "msgs_out.intent/predictions"),
                               ("belief_node", "mpc_node")),
        "intent/belief": (extra("belief_node", "msgs_out.intent/belief"), ("mpc_node",)),
        # Commands answering observations: one per predictions message the MPC received. The watchdog's
        # commands (no fresh predictions, e.g. after the last observation) are counted apart by the driver.
        "cmd_vel": (extra("mpc_node", "msgs_in.intent/predictions"), ("driver",)),
    }
    out = {}
    for topic, (published, consumers) in chain.items():
        received = {c: (len(driver.latencies_ms) if c == "driver" else extra(c, f"msgs_in.{topic}"))
                    for c in consumers}
        out[topic] = {"published": published, "received": received,
                      "lost": sum(max(published - r, 0) for r in received.values())}
    return out


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"count": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    a = np.asarray(values_ms)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"count": int(a.size), "p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(a.max())}
