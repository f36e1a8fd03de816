"""The process runner: command lines, shard parameter files, and how it tells a teardown hang from a failure."""
import sys

import pytest
import yaml

from intent_perf_ros.runner import NODES, NodeProcesses, default_params_file, expand_shards, process_names


def test_unsharded_stack_runs_each_node_once_with_the_params_file():
    stack = NodeProcesses()
    assert stack.nodes == ("gp_inference_node", "belief_node", "mpc_node", "monitor_node")
    cmd = stack.command("mpc_node")
    assert cmd[:3] == [sys.executable, "-m", "intent_perf_ros.nodes.mpc_node"]
    assert cmd[cmd.index("--params-file") + 1] == str(default_params_file())
    assert "-r" not in cmd


def test_shards_get_renamed_processes_and_their_own_parameter_sections():
    stack = NodeProcesses(shards=3)
    try:
        assert [n for n in stack.nodes if n.startswith("gp_inference_node")] == [
            "gp_inference_node_0", "gp_inference_node_1", "gp_inference_node_2"]
        assert "mpc_node" in stack.nodes and "mpc_node_0" not in stack.nodes
        cmd = stack.command("belief_node_2")
        assert "intent_perf_ros.nodes.belief_node" in cmd and "__node:=belief_node_2" in cmd
        params = yaml.safe_load(stack.params_file.read_text())
        base = yaml.safe_load(default_params_file().read_text())["belief_node"]["ros__parameters"]
        shard = params["belief_node_2"]["ros__parameters"]
        assert shard["shard_index"] == 2 and shard["shard_count"] == 3
        assert {k: shard[k] for k in base} == base
    finally:
        stack.stop()
    assert not stack.params_file.exists()


def test_unknown_node_or_bad_shards_rejected():
    with pytest.raises(ValueError):
        NodeProcesses(nodes=("planner",))
    with pytest.raises(ValueError):
        NodeProcesses(shards=0)


def test_overrides_replace_values_of_the_parameters_file():
    stack = NodeProcesses(overrides={"gp_inference_node": {"dataset_dir": "/elsewhere"}})
    try:
        params = yaml.safe_load(stack.params_file.read_text())
        assert params["gp_inference_node"]["ros__parameters"]["dataset_dir"] == "/elsewhere"
        assert params["gp_inference_node"]["ros__parameters"]["step_dt"] == 0.4  # the rest is kept
    finally:
        stack.stop()


def test_shard_names_follow_one_rule_for_every_user():
    assert process_names("belief_node", 3) == ["belief_node_0", "belief_node_1", "belief_node_2"]
    assert process_names("mpc_node", 3) == ["mpc_node"] and process_names("belief_node", 1) == ["belief_node"]
    expected = expand_shards(["gp_inference_node", "belief_node", "mpc_node", "belief_node_1"], 3)
    assert expected == ["gp_inference_node_0", "gp_inference_node_1", "gp_inference_node_2",
                        "belief_node_0", "belief_node_1", "belief_node_2", "mpc_node", "belief_node_1"]
    stack = NodeProcesses(shards=3)
    try:
        params = yaml.safe_load(stack.params_file.read_text())
        assert params["monitor_node"]["ros__parameters"]["shard_count"] == 3  # it expects every shard
        assert stack.nodes == tuple(expand_shards(NODES, 3))
    finally:
        stack.stop()


def test_a_node_ended_by_its_teardown_watchdog_is_told_from_a_failed_one(tmp_path, monkeypatch):
    """The mechanism of nodes.common.run: faulthandler's watchdog dumps the hung rclpy teardown and
    exits 1. A fake rclpy/node.py hangs in destroy_node the way rcl_node_fini did in CI."""
    (tmp_path / "rclpy").mkdir()
    (tmp_path / "rclpy" / "node.py").write_text("import time\n\n\ndef destroy_node():\n    time.sleep(30)\n")
    scripts = {
        "gp_inference_node": "import faulthandler, runpy, sys\nfake = runpy.run_path(sys.argv[1] + '/rclpy/node.py')\n"
                             "faulthandler.dump_traceback_later(0.2, exit=True)\nfake['destroy_node']()\n",
        "belief_node": "raise SystemExit(1)\n",  # a failure, not a teardown hang
        "mpc_node": "import faulthandler, time\nfaulthandler.dump_traceback_later(0.2, exit=True)\ntime.sleep(30)\n",
        "monitor_node": "pass\n",
    }
    stack = NodeProcesses(log_dir=tmp_path / "logs")
    monkeypatch.setattr(stack, "command", lambda node: [sys.executable, "-c", scripts[node], str(tmp_path)])
    stack.start()
    for process in stack.processes.values():
        process.wait(timeout=20.0)  # each ends on its own; stop() then signals none of them
    codes = stack.stop()
    assert codes == {"gp_inference_node": 1, "belief_node": 1, "mpc_node": 1, "monitor_node": 0}
    assert stack.teardown_hangs == ["gp_inference_node"]  # mpc_node's dump is not in rclpy's destroy_node
    assert stack.unclean_exits(codes) == {"belief_node": 1, "mpc_node": 1}
