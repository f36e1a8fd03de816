"""Start the four node executables as processes with one parameters file, and stop them cleanly.

The stand-in for ``ros2 launch`` where launch is not installed (``intent-perf up``, the demo,
benchmarks and system tests): same executables, same parameters file, signals forwarded,
optional respawn of a crashed node (as the launch file's ``respawn``).
"""
from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml

NODES: tuple[str, ...] = ("gp_inference_node", "belief_node", "mpc_node", "monitor_node")
SHARDED: tuple[str, ...] = ("gp_inference_node", "belief_node")
# The executable that runs these nodes in one process (nodes/composed_nodes.py, ``--composed``).
COMPOSED = "composed_nodes"
COMPOSED_NODES: tuple[str, ...] = ("gp_inference_node", "belief_node", "mpc_node")


def unclean_exits(codes: dict[str, int], teardown_hangs: Iterable[str]) -> dict[str, int]:
    """Exit codes other than 0, except those of teardown hangs: nodes that stopped on the signal and then
    waited in rclpy's teardown until their watchdog ended them (``NodeProcesses.teardown_hangs``)."""
    hangs = set(teardown_hangs)
    return {node: code for node, code in codes.items() if code != 0 and node not in hangs}


def process_names(node: str, shards: int) -> list[str]:
    """Node names of ``node``'s processes in a stack of ``shards`` shards: ``<node>_<i>`` for a sharded
    node, else ``node``. The one naming rule of the runner, the launch file, the bench and the monitor's
    expected nodes: a name that differed in one of them would make a live shard look missing."""
    if shards > 1 and node in SHARDED:
        return [f"{node}_{index}" for index in range(shards)]
    return [node]


def hosted_nodes(process: str) -> tuple[str, ...]:
    """The ROS nodes a process of the stack runs: the three of ``composed_nodes``, else itself."""
    return COMPOSED_NODES if process == COMPOSED else (process,)


def expand_shards(nodes: Iterable[str], shards: int) -> list[str]:
    """``nodes`` with every sharded node replaced by its shards' names (others, and names already of a
    shard such as ``belief_node_1``, kept as they are)."""
    return [name for node in nodes for name in process_names(node, shards)]


def default_params_file() -> Path:
    """``config/intent_perf.yaml`` of the source tree, else of the installed share directory."""
    source = Path(__file__).resolve().parent.parent / "config" / "intent_perf.yaml"
    if source.exists():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("intent_perf_ros")) / "config" / "intent_perf.yaml"


def effective_params(params_file: Path, shards: int, overrides: dict[str, dict], directory: Path) -> Path:
    """The parameters file with ``overrides`` merged in and a section per shard process.

    Overrides are written into each node's own section because rcl lets a node-specific value in a
    parameters file win over a ``-p`` given on the command line. Parameter files match node names
    exactly (no partial wildcards), so each renamed shard (``gp_inference_node_1``) gets its own
    section: the base node's parameters plus ``shard_index`` and ``shard_count``. The monitor gets
    ``shard_count`` too, so that it expects every shard by name (``expand_shards``).
    """
    params = yaml.safe_load(params_file.read_text()) or {}
    for node, values in overrides.items():
        params.setdefault(node, {}).setdefault("ros__parameters", {}).update(values)
    if shards > 1:
        for node in SHARDED:
            base = params.get(node, {}).get("ros__parameters", {})
            for index, name in enumerate(process_names(node, shards)):
                params[name] = {"ros__parameters": {**base, "shard_index": index, "shard_count": shards}}
        params.setdefault("monitor_node", {}).setdefault("ros__parameters", {})["shard_count"] = shards
    out = directory / "params.yaml"
    out.write_text(yaml.dump(params, Dumper=_QuotingDumper))
    return out


class _QuotingDumper(yaml.SafeDumper):
    """Quotes every string (rcl's parser reads YAML 1.1 words such as ``n`` or ``on`` as booleans) and
    writes shared values in full: shard sections share lists, and rcl refuses YAML aliases."""

    def ignore_aliases(self, data) -> bool:
        return True


_QuotingDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style='"'))


class NodeProcesses:
    """The node processes of one stack; ``respawn`` restarts a node that exits while running.

    With ``shards`` > 1 the GP and belief nodes run as that many processes each, named
    ``<node>_<index>``; every other node runs once. With ``composed`` the GP, belief and MPC nodes
    run in one process, ``composed_nodes`` (same node names). ``overrides`` maps a node to parameter
    values that replace those of the parameters file.
    """

    def __init__(self, params_file: Path | str | None = None, nodes: tuple[str, ...] = NODES, respawn: bool = False,
                 log_dir: Path | str | None = None, ros_args: dict[str, list[str]] | None = None,
                 env: dict[str, str] | None = None, shards: int = 1,
                 overrides: dict[str, dict] | None = None, composed: bool = False) -> None:
        unknown = set(nodes) - set(NODES)
        if unknown:
            raise ValueError(f"unknown nodes {sorted(unknown)}; choose from {', '.join(NODES)}")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        if composed and shards > 1:
            raise ValueError("composed runs one GP and one belief node in the shared process: use shards 1")
        if composed:
            nodes = tuple(dict.fromkeys(COMPOSED if node in COMPOSED_NODES else node for node in nodes))
        self.params_file = Path(params_file) if params_file else default_params_file()
        self._scratch = None
        if shards > 1 or overrides:
            self._scratch = tempfile.TemporaryDirectory(prefix="intent_perf_params_")
            self.params_file = effective_params(self.params_file, shards, overrides or {}, Path(self._scratch.name))
        # process name -> executable (a node's, or composed_nodes)
        self.node_of = {name: node for node in nodes for name in process_names(node, shards)}
        self.nodes = tuple(self.node_of)
        self.respawn = respawn
        self.log_dir = Path(log_dir) if log_dir else None
        self.ros_args = ros_args or {}
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = dict.fromkeys(self.nodes, 0)
        self.teardown_hangs: list[str] = []  # processes of the last stop() that hung in rclpy's teardown
        self._logs: list = []

    def command(self, name: str) -> list[str]:
        node = self.node_of[name]
        rename = ["-r", f"__node:={name}"] if name != node else []
        return [sys.executable, "-m", f"intent_perf_ros.nodes.{node}", "--ros-args", *rename,
                "--params-file", str(self.params_file), *self.ros_args.get(node, [])]

    def start(self) -> None:
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self._spawn(node)

    def _spawn(self, node: str) -> None:
        output = None
        if self.log_dir:
            # A fresh log per run; a respawned node appends to its predecessor's.
            mode = "ab" if node in self.processes else "wb"
            output = open(self.log_dir / f"{node}.log", mode)  # noqa: SIM115 - closed in stop()
            self._logs.append(output)
        # A session of its own: a terminal's Ctrl-C reaches us, and we decide what the nodes get.
        self.processes[node] = subprocess.Popen(self.command(node), stdout=output, stderr=subprocess.STDOUT
                                                if output else None, env=self.env, start_new_session=True)

    def poll(self) -> dict[str, int]:
        """Exit codes of nodes that have exited; respawns them when ``respawn`` is set."""
        exited = {}
        for node, process in list(self.processes.items()):
            code = process.poll()
            if code is None:
                continue
            exited[node] = code
            if self.respawn:
                self.restarts[node] += 1
                self._spawn(node)
        return exited

    def pids(self) -> dict[str, int]:
        return {node: p.pid for node, p in self.processes.items()}

    def kill(self, node: str, sig: int = signal.SIGKILL) -> None:
        self.processes[node].send_signal(sig)

    def stop(self, timeout_s: float = 10.0, sig: int = signal.SIGINT) -> dict[str, int]:
        """Signal every node, wait up to ``timeout_s``, SIGKILL what is left; return the exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        codes = {}
        for node, process in self.processes.items():
            try:
                codes[node] = process.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGUSR1)  # the node dumps its stacks into its log (faulthandler)
                try:
                    codes[node] = process.wait(1.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    codes[node] = process.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self.teardown_hangs = [node for node, code in codes.items() if code == 1 and self._hung_in_teardown(node)]
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        return codes

    def _hung_in_teardown(self, node: str) -> bool:
        """Whether the node's log ends with the dump of ``nodes.common.run``'s teardown watchdog: spinning
        had stopped and rclpy's Node.destroy_node did not return (a middleware hang, see there)."""
        if self.log_dir is None:
            return False
        try:
            tail = (self.log_dir / f"{node}.log").read_text(errors="replace")[-4000:]
        except OSError:
            return False
        dump = tail.rpartition("Timeout (0:00:")[2]
        return bool(dump) and "in destroy_node" in dump and "rclpy/node.py" in dump

    def unclean_exits(self, codes: dict[str, int]) -> dict[str, int]:
        """``unclean_exits`` of these codes and the teardown hangs of the last ``stop()``."""
        return unclean_exits(codes, self.teardown_hangs)

    def __enter__(self) -> NodeProcesses:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def spin_until(executor, condition: Callable[[], bool], timeout_s: float, stack: NodeProcesses | None = None) -> bool:
    """Spin ``executor`` (anything with ``spin_once``) until ``condition()`` holds; False on time-out.
    Fails fast when a process of ``stack`` exited, instead of waiting out the time-out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if stack is not None and (dead := stack.poll()):
            where = f" in {stack.log_dir}" if stack.log_dir else ""
            raise RuntimeError(f"node process exited: {dead} (exit codes); see the node logs{where}")
        executor.spin_once(timeout_sec=0.05)
    return condition()


def up(params_file: str | None, respawn: bool, nodes: tuple[str, ...] = NODES, shards: int = 1,
       composed: bool = False) -> int:
    """``intent-perf up``: run the stack until SIGINT/SIGTERM, then stop it; exit 0 if all nodes did."""
    stack = NodeProcesses(params_file, nodes=nodes, respawn=respawn, shards=shards, composed=composed)
    stopping = []

    def request_stop(signum, _frame) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack.start()
    print(f"intent-perf up: {', '.join(f'{n} (pid {p})' for n, p in stack.pids().items())}; Ctrl-C stops",
          flush=True)
    failed = False
    while not stopping:
        for node, code in stack.poll().items():
            print(f"intent-perf up: {node} exited with {code}" + (", respawned" if respawn else ""), flush=True)
            failed = failed or not respawn
        if failed:
            break
        time.sleep(0.2)
    codes = stack.stop(sig=stopping[0] if stopping else signal.SIGINT)
    print(f"intent-perf up: stopped, exit codes {codes}", flush=True)
    return 0 if not failed and all(c == 0 for c in codes.values()) else 1
