"""The launch file's node selection, run against small stand-ins for launch and launch_ros.

launch and launch_ros are not installable here (see docs), so ``ros2 launch`` cannot run; what the
file decides - which executables, names and parameters for given arguments - is plain Python and is
checked here against the runner, which ``intent-perf up`` uses.
"""
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from intent_perf_ros.runner import NodeProcesses

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "intent_perf.launch.py"
PARAMS = str(Path(__file__).resolve().parents[2] / "config" / "intent_perf.yaml")


class _Argument:
    def __init__(self, value: str) -> None:
        self.value = value

    def perform(self, _context) -> str:
        return self.value


@pytest.fixture
def launch_file(monkeypatch):
    arguments = {"respawn_delay": "1.0", "log_level": "info"}

    class Node:
        def __init__(self, **kwargs) -> None:
            self.kwargs = kwargs

    stand_ins = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.conditions", "launch.substitutions", "launch_ros", "launch_ros.actions")}
    stand_ins["launch"].LaunchDescription = list
    stand_ins["launch.actions"].DeclareLaunchArgument = lambda *args, **kwargs: args
    stand_ins["launch.actions"].OpaqueFunction = lambda **kwargs: kwargs
    stand_ins["launch.conditions"].IfCondition = lambda condition: condition
    stand_ins["launch.substitutions"].LaunchConfiguration = lambda name: _Argument(arguments[name])
    stand_ins["launch_ros.actions"].Node = Node
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("intent_perf_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def nodes(shards: int = 1, composed: bool = False) -> list[dict]:
        arguments.update(shards=str(shards), composed=str(composed).lower())
        return [node.kwargs for node in module._nodes(None, _Argument(PARAMS), "true", "")]

    return nodes


@pytest.mark.parametrize(("shards", "composed"), [(1, False), (3, False), (1, True)])
def test_launch_starts_the_processes_intent_perf_up_starts(launch_file, shards, composed):
    actions = launch_file(shards, composed)
    stack = NodeProcesses(shards=shards, composed=composed)
    try:
        # A composed process has no name of its own: a name remap would rename all three of its nodes.
        assert [a.get("name", a["executable"]) for a in actions] == list(stack.nodes)
        assert [a["executable"] for a in actions] == [stack.node_of[name] for name in stack.nodes]
    finally:
        stack.stop()
    assert all(a["parameters"][0] == PARAMS and a["respawn"] == "true" for a in actions)
    for action in actions:
        overrides = action["parameters"][1:]
        if action["executable"] == "monitor_node":
            assert overrides == [{"shard_count": shards}]
        elif shards > 1 and action["executable"] in ("gp_inference_node", "belief_node"):
            index = int(action["name"].rsplit("_", 1)[1])
            assert overrides[0]["shard_index"] == index and overrides[0]["shard_count"] == shards
        else:
            assert overrides == []


def test_composed_with_shards_is_refused(launch_file):
    with pytest.raises(ValueError, match="shards"):
        launch_file(2, True)
    with pytest.raises(ValueError, match="shards"):
        NodeProcesses(shards=2, composed=True)
