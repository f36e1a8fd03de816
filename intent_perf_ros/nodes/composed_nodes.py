"""composed_nodes: the GP, belief and MPC nodes in one process, spun by one executor.

The nodes are unchanged (same names, parameters and topics, so the parameters file, the monitor
and the bench see the same graph); what changes is that predictions reach the belief and MPC
nodes inside one process instead of crossing to two others, and one interpreter, one numba runtime
and one copy of the shared libraries serve all three (RSS 236 MB instead of 618 MB for three
processes, measured with `intent-perf bench`).
rclpy has no component container (that is rclcpp's), so this is the Python counterpart of
composing nodes. The cost: one core does all three nodes' work, and a crash takes all three down
(respawn restarts them together).
"""
from __future__ import annotations

from intent_perf_ros.nodes.belief_node import BeliefNode
from intent_perf_ros.nodes.common import run
from intent_perf_ros.nodes.gp_inference_node import GpInferenceNode
from intent_perf_ros.nodes.mpc_node import MpcNode


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run((GpInferenceNode, BeliefNode, MpcNode), args))


if __name__ == "__main__":
    main()
