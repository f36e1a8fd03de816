"""``intent-perf``: the one command line of the package, with a subcommand per task."""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommands implemented by a module's ``main(argv)`` with its own argparse (help passes through).
DELEGATED = {
    "make-bag": ("intent_perf_ros.bench.make_bag",
                 "write a rosbag2 (mcap/sqlite3) of the input topics: synthetic scenario or ETH/UCY"),
    "bench": ("intent_perf_ros.bench.bench", "replay a bag through the nodes: latency, throughput, loss, RSS, report"),
    "perf": ("intent_perf_ros.bench.perf", "performance regression gate against perf/baseline.json"),
    "load": ("intent_perf_ros.bench.load", "sweep humans x rate (x shards): saturation point and recommendation"),
    "sim": ("intent_perf_ros.bench.sim", "closed-loop simulation of the MPC among walking humans"),
    "eval-trajectories": ("intent_perf_ros.bench.eval_trajectories",
                          "GP prediction accuracy on ETH/UCY (ADE/FDE, calibration) vs constant velocity"),
    "eval-intent": ("intent_perf_ros.bench.eval_intent", "goal inference accuracy on ETH/UCY vs a heading baseline"),
    "profile": ("intent_perf_ros.bench.profile", "profile one node's core (cProfile, tracemalloc, RSS)"),
    "bench-gp": ("intent_perf_ros.bench.gp_benchmark", "GP predict/update micro-benchmark vs scikit-learn"),
    "bench-mpc": ("intent_perf_ros.bench.mpc_benchmark", "MPC step micro-benchmark vs cvxpy"),
    "bench-belief": ("intent_perf_ros.bench.belief_benchmark", "belief update micro-benchmark vs numpy/filterpy"),
    "bench-gpu": ("intent_perf_ros.bench.gpu_benchmark", "GP on torch (CUDA when present) vs numpy, crossover"),
    "first-callback": ("intent_perf_ros.bench.first_callback", "first call vs steady state of each core after warm-up"),
    "bench-floor": ("intent_perf_ros.bench.floor",
                    "the bench's topology with relays doing no work: the latency floor of this machine"),
    "build-kernels": ("intent_perf_ros.core.aot",
                      "compile the MPC, belief and GP kernels ahead of time (make does it): mpc_node, belief_node "
                      "and gp_inference_node run without numba"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intent-perf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the four nodes as processes until Ctrl-C (ros2 launch stand-in)")
    up.add_argument("--params-file", help="ROS parameters file (default: config/intent_perf.yaml)")
    up.add_argument("--respawn", action="store_true", help="restart a node that exits")
    up.add_argument("--shards", type=int, default=1, help="processes of the GP and belief nodes (default 1)")
    up.add_argument("--composed", action="store_true",
                    help="run the GP, belief and MPC nodes in one process (composed_nodes): less memory and latency")
    demo = sub.add_parser("demo", help="run the nodes on a synthetic scenario and print a latency/loss/RSS report")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds of scenario (default 20)")
    demo.add_argument("--humans", type=int, default=5)
    demo.add_argument("--rate-hz", type=float, default=30.0, help="tracker and odometry rate")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--params-file")
    demo.add_argument("--json", help="also write the report as JSON to this path")
    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        raise SystemExit(module.main(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command == "up":
        from intent_perf_ros.runner import up

        raise SystemExit(up(args.params_file, args.respawn, shards=args.shards, composed=args.composed))
    if args.command == "demo":
        from intent_perf_ros.bench import demo

        raise SystemExit(demo.main(args))
