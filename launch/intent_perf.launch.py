"""Launch the four intent_perf_ros nodes on a robot: ros2 launch intent_perf_ros intent_perf.launch.py

Arguments: params_file (defaults to the installed config/intent_perf.yaml), respawn (restart a
crashed node, default true), respawn_delay, use_aggregator (start diagnostic_aggregator with
config/diagnostics_aggregator.yaml when the robot has it), enclave (SROS2 security enclave; empty
= security off), log_level.
"""
from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

NODES = ("gp_inference_node", "belief_node", "mpc_node", "monitor_node")


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("intent_perf_ros"))
    params_file = LaunchConfiguration("params_file")
    respawn = LaunchConfiguration("respawn")
    enclave = LaunchConfiguration("enclave")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "intent_perf.yaml"),
                              description="ROS parameters of all four nodes"),
        DeclareLaunchArgument("respawn", default_value="true", description="restart a node that crashed"),
        DeclareLaunchArgument("respawn_delay", default_value="1.0", description="seconds before a restart"),
        DeclareLaunchArgument("use_aggregator", default_value="false",
                              description="start diagnostic_aggregator for rqt_robot_monitor"),
        DeclareLaunchArgument("enclave", default_value="", description="SROS2 enclave, e.g. /intent_perf"),
        DeclareLaunchArgument("log_level", default_value="info"),
    ]
    nodes = [
        Node(package="intent_perf_ros", executable=name, name=name, output="screen",
             parameters=[params_file], respawn=respawn,
             respawn_delay=LaunchConfiguration("respawn_delay"),
             ros_arguments=["--log-level", LaunchConfiguration("log_level"), "--enclave", enclave])
        for name in NODES
    ]
    aggregator = Node(package="diagnostic_aggregator", executable="aggregator_node", name="diagnostic_aggregator",
                      parameters=[str(share / "config" / "diagnostics_aggregator.yaml")],
                      condition=IfCondition(LaunchConfiguration("use_aggregator")))
    return LaunchDescription([*arguments, *nodes, aggregator])
