"""The process runner's command lines and shard parameter files (no processes started)."""
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
