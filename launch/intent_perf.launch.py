"""Launch the four intent_perf_ros nodes on a robot: ros2 launch intent_perf_ros intent_perf.launch.py

Arguments: params_file (defaults to the installed config/intent_perf.yaml), respawn (restart a
crashed node, default true), respawn_delay, use_aggregator (start diagnostic_aggregator with
config/diagnostics_aggregator.yaml when the robot has it), enclave (SROS2 security enclave; empty
= security off), log_level, shards (processes of the GP and belief nodes, default 1), composed
(true: the GP, belief and MPC nodes in one process, ``composed_nodes``, as ``intent-perf up
--composed``; less memory and latency, one core for the three; needs shards 1).

With shards:=N > 1 the GP and belief nodes run as N processes each, named ``<node>_<i>`` with
``shard_index`` i and ``shard_count`` N (as ``intent-perf up --shards N``): each predicts and
tracks only the humans whose id hashes to it, and mpc_node plans once it has all N predictions
messages of an observation (docs/benchmarking.md). A parameters file matches node names exactly,
so a renamed shard would miss the ``gp_inference_node:`` section: the file's section of the base
node is read here and given to every shard as its parameters, after the file itself (``/**``).
monitor_node gets ``shard_count`` N, so it expects (reports STALE when silent) every shard by name.
Names come from ``intent_perf_ros.runner.process_names``, the rule ``intent-perf up`` uses.
"""
from pathlib import Path

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from intent_perf_ros.runner import COMPOSED, COMPOSED_NODES, NODES, process_names


def _nodes(context, params_file, respawn, enclave) -> list[Node]:
    """The node actions, with the shard count resolved (an OpaqueFunction: N is only known at launch)."""
    shards = int(LaunchConfiguration("shards").perform(context))
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    composed = LaunchConfiguration("composed").perform(context).lower() in ("true", "1")
    if composed and shards > 1:
        raise ValueError("composed:=true runs one GP and one belief node in the shared process: use shards:=1")
    path = params_file.perform(context)
    sections = yaml.safe_load(Path(path).read_text()) or {}
    common = {"respawn": respawn, "respawn_delay": LaunchConfiguration("respawn_delay"), "output": "screen",
              "ros_arguments": ["--log-level", LaunchConfiguration("log_level"), "--enclave", enclave]}
    actions = []
    if composed:  # no name=: a node name remap would rename all three nodes of the process
        actions.append(Node(package="intent_perf_ros", executable=COMPOSED, parameters=[path], **common))
    for node in NODES:
        if composed and node in COMPOSED_NODES:
            continue
        base = sections.get(node, {}).get("ros__parameters", {})
        for index, name in enumerate(process_names(node, shards)):
            actions.append(Node(package="intent_perf_ros", executable=node, name=name,
                                parameters=[path, *_overrides(node, name, index, shards, base)], **common))
    return actions


def _overrides(node: str, name: str, index: int, shards: int, base: dict) -> list[dict]:
    """Parameters given after the file: a shard's own section, the monitor's shard count."""
    if node == "monitor_node":
        return [{"shard_count": shards}]
    if name != node:
        return [{**base, "shard_index": index, "shard_count": shards}]
    return []


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
        DeclareLaunchArgument("shards", default_value="1",
                              description="processes of the GP and belief nodes, each a shard of the humans"),
        DeclareLaunchArgument("composed", default_value="false",
                              description="the GP, belief and MPC nodes in one process (composed_nodes)"),
    ]
    nodes = OpaqueFunction(function=_nodes, args=[params_file, respawn, enclave])
    aggregator = Node(package="diagnostic_aggregator", executable="aggregator_node", name="diagnostic_aggregator",
                      parameters=[str(share / "config" / "diagnostics_aggregator.yaml")],
                      condition=IfCondition(LaunchConfiguration("use_aggregator")))
    return LaunchDescription([*arguments, nodes, aggregator])
