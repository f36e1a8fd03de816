"""The four nodes as four processes: stamps end to end, diagnostics, bad input, clean shutdown."""
import math
import os

import psutil
import pytest
import rclpy
from rclpy.experimental import EventsExecutor

from intent_perf_ros.bench.driver import ScenarioDriver
from intent_perf_ros.core.scenario import ScenarioConfig
from intent_perf_ros.msg import HumanState, TrackedHumans
from intent_perf_ros.runner import NodeProcesses, spin_until

pytestmark = pytest.mark.system


def shm_files() -> set[str]:
    return {f for f in os.listdir("/dev/shm") if "fastrtps" in f or "fastdds" in f}


def orphaned(files: set[str]) -> set[str]:
    """Those of ``files`` that no live process maps or holds open (other ROS processes may share /dev/shm)."""
    in_use = set()
    for proc in psutil.process_iter():
        try:
            in_use.update(os.path.basename(m.path) for m in proc.memory_maps(grouped=False))
            in_use.update(os.path.basename(f.path) for f in proc.open_files())
        except (psutil.Error, OSError):
            continue
    # A port's named semaphore is closed between uses; it belongs to whoever holds the port's segment.
    return {f for f in files if f not in in_use and f.removeprefix("sem.").removesuffix("_mutex") not in in_use}


def bad_messages(frame_id: str) -> list[TrackedHumans]:
    nan_human = TrackedHumans(humans=[HumanState(id=1, x=math.nan, y=0.0), HumanState(id=2, x=1.0, y=math.inf)])
    nan_velocity = TrackedHumans(humans=[HumanState(id=3, x=2.0, y=2.0, vx=math.nan, vy=0.0)])
    empty = TrackedHumans()
    wrong_frame = TrackedHumans(humans=[HumanState(id=4, x=1.0, y=1.0)])
    for msg in (nan_human, nan_velocity, empty):
        msg.header.frame_id = frame_id
    wrong_frame.header.frame_id = "odom_somewhere_else"
    return [nan_human, nan_velocity, empty, wrong_frame]


def test_stack_end_to_end(tmp_path):
    before = shm_files()
    # The GP starts unfitted (constant velocity + online learning): fitting on ETH/UCY is the GP tests' job
    # and would cost minutes on a fresh machine here.
    stack = NodeProcesses(log_dir=tmp_path, overrides={"gp_inference_node": {
        "dataset_dir": str(tmp_path / "no_data"), "model_cache_dir": str(tmp_path / "models")}})
    stack.start()
    rclpy.init()
    try:
        driver = ScenarioDriver(ScenarioConfig(humans=3, seed=1), rate_hz=20.0)
        executor = EventsExecutor()
        executor.add_node(driver)
        assert spin_until(executor, driver.stack_ready, 120.0, stack), "stack did not come up"
        driver.running = True
        spin_until(executor, lambda: len(driver.latencies_ms) >= 40, 30.0, stack)
        # Bad input between good ticks: stamped like observations so answers can be matched.
        for msg in bad_messages(driver.frame_id):
            msg.header.stamp = driver.get_clock().now().to_msg()
            driver.humans_pub.publish(msg)
        answered = len(driver.latencies_ms)
        assert spin_until(executor, lambda: len(driver.latencies_ms) >= answered + 40, 30.0, stack)
        driver.running = False
        stats_seen = {n: driver.stats_count.get(n, 0) for n in ("gp_inference_node", "mpc_node")}
        assert spin_until(executor, lambda: all(driver.stats_count.get(n, 0) > c for n, c in stats_seen.items())
                          and driver.diagnostics is not None, 10.0)
        gp_stats = driver.stats["gp_inference_node"]
        diagnostics = {s.name: s for s in driver.diagnostics.status}
        pids = list(stack.pids().values())
        executor.shutdown()  # else it keeps the nodes in the ROS graph (see test/nodes/conftest.py)
        driver.destroy_node()
    finally:
        rclpy.try_shutdown()
        codes = stack.stop()
    assert stack.unclean_exits(codes) == {}, f"exit codes {codes}; logs in {tmp_path}"
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert orphaned(shm_files() - before) == set(), "FastDDS shared memory left behind"

    # Commands carry the stamp of the observation they answer, and they are finite and bounded.
    assert len(driver.latencies_ms) >= 80
    assert all(0.0 < ms < 1000.0 for ms in driver.latencies_ms)
    assert math.isfinite(driver.command[0]) and abs(driver.command[0]) <= 1.0 + 1e-9
    # Bad input was counted, not fatal: 2 humans with non-finite positions + the wrong frame dropped,
    # one non-finite velocity repaired.
    assert gp_stats.dropped >= 3 and gp_stats.repaired >= 1
    for name in ("gp_inference_node: latency", "belief_node: memory", "mpc_node: cpu",
                 "pipeline: end-to-end latency"):
        assert name in diagnostics, sorted(diagnostics)
    latency = {kv.key for kv in diagnostics["gp_inference_node: latency"].values}
    assert any(key.endswith("_ms") for key in latency)
