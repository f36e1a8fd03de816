"""mpc_node alone with a fake robot and predictor: stamps, bounds, watchdog."""
import itertools
import math

from flat_messages import standing_human
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter

from intent_perf_ros.msg import ControlStatus, IntentPredictionArray
from intent_perf_ros.nodes.common import COMMAND_QOS, CONTROL_QOS, DERIVED_QOS, SENSOR_QOS
from intent_perf_ros.nodes.mpc_node import MpcNode


def test_commands_carry_the_prediction_stamp_and_stop_when_predictions_stop(ros):
    mpc = ros.add(MpcNode(parameter_overrides=[Parameter("initial_goal", value=[5.0, 0.0, 1.0]),
                                               Parameter("predictions_late_after_s", value=0.2)]))
    peer = ros.add(Node("fake_robot"))
    odom_pub = peer.create_publisher(Odometry, "odom", SENSOR_QOS)
    pred_pub = peer.create_publisher(IntentPredictionArray, "intent/predictions", DERIVED_QOS)
    commands: list[TwistStamped] = []
    statuses: list[ControlStatus] = []
    odom = Odometry()
    odom.header.frame_id = "map"
    odom.pose.pose.orientation.w = 1.0
    odom.twist.twist.linear.x = 0.5

    def base_follows(cmd: TwistStamped) -> None:  # an ideal base: odometry reports the commanded speed
        commands.append(cmd)
        odom.twist.twist.linear.x = cmd.twist.linear.x
        odom.header.stamp = peer.get_clock().now().to_msg()
        odom_pub.publish(odom)

    peer.create_subscription(TwistStamped, "cmd_vel", base_follows, COMMAND_QOS)
    peer.create_subscription(ControlStatus, "mpc/status", statuses.append, CONTROL_QOS)
    assert ros.spin_until(lambda: odom_pub.get_subscription_count() and pred_pub.get_subscription_count()
                          and mpc.cmd_publisher.get_subscription_count())
    sent = []
    for k in range(10):
        odom.header.stamp = peer.get_clock().now().to_msg()
        odom_pub.publish(odom)
        stamp = peer.get_clock().now().to_msg()
        sent.append((stamp.sec, stamp.nanosec))
        pred_pub.publish(standing_human((stamp.sec, stamp.nanosec), (3.0, 2.0)))
        assert ros.spin_until(lambda k=k: sum((c.header.stamp.sec, c.header.stamp.nanosec) in sent
                                              for c in commands) > k, 5.0)
    answered = [c for c in commands if (c.header.stamp.sec, c.header.stamp.nanosec) in sent]
    assert len(answered) == 10
    for c in answered:
        assert math.isfinite(c.twist.linear.x) and 0.0 <= c.twist.linear.x <= 1.0
        assert abs(c.twist.angular.z) <= 1.5
    assert any(c.twist.linear.x > 0.0 for c in answered)  # it drives towards the goal
    assert any(s.mode == ControlStatus.MODE_OPTIMAL for s in statuses)

    # No more predictions: the watchdog slows the robot down and stops it.
    n_before, n_status = len(commands), len(statuses)
    assert ros.spin_until(lambda: len(commands) > n_before and commands[-1].twist.linear.x == 0.0, 10.0)
    stale = [c.twist.linear.x for c in commands[n_before:]]
    assert all(b <= a + 1e-9 for a, b in itertools.pairwise(stale))  # monotone slow-down
    assert any(s.mode in (ControlStatus.MODE_STALE_SLOW, ControlStatus.MODE_STALE_STOP) for s in statuses[n_status:])
