"""A node killed with SIGKILL: the MPC slows to a stop, the runner respawns the node, control resumes."""
import signal

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.experimental import EventsExecutor

from intent_perf_ros.bench.driver import ScenarioDriver
from intent_perf_ros.core.scenario import ScenarioConfig
from intent_perf_ros.msg import ControlStatus
from intent_perf_ros.runner import NodeProcesses, spin_until

pytestmark = pytest.mark.system

STALE_MODES = (ControlStatus.MODE_STALE_SLOW, ControlStatus.MODE_STALE_STOP)


def test_killed_predictor_is_respawned_and_the_robot_waits_for_it(tmp_path):
    stack = NodeProcesses(log_dir=tmp_path, respawn=True, overrides={"gp_inference_node": {
        "dataset_dir": str(tmp_path / "no_data"), "model_cache_dir": str(tmp_path / "models")}})
    stack.start()
    rclpy.init()
    try:
        driver = ScenarioDriver(ScenarioConfig(humans=3, seed=2), rate_hz=20.0)
        executor = EventsExecutor()
        executor.add_node(driver)
        assert spin_until(executor, driver.stack_ready, 120.0, stack)
        driver.running = True
        assert spin_until(executor, lambda: len(driver.latencies_ms) >= 20, 30.0)
        old_pid = stack.pids()["gp_inference_node"]
        stack.kill("gp_inference_node", signal.SIGKILL)

        def respawning(condition):  # the supervision loop of `intent-perf up --respawn`
            return lambda: bool(stack.poll()) or condition()

        def gp_diagnostic_level() -> int | None:
            statuses = [s for s in driver.diagnostics.status if s.name == "gp_inference_node: latency"]
            return int.from_bytes(statuses[0].level, "little") if statuses else None

        # Before the supervisor notices: the MPC slows down and the monitor marks the dead node STALE.
        n_status = len(driver.statuses)
        assert spin_until(executor, lambda: any(m in STALE_MODES for m in driver.statuses[n_status:]), 10.0), \
            "the MPC did not react to missing predictions"
        assert spin_until(executor, lambda: gp_diagnostic_level() == DiagnosticStatus.STALE[0], 10.0), \
            "the monitor did not report the killed node STALE"
        assert spin_until(executor, respawning(lambda: stack.pids()["gp_inference_node"] != old_pid), 10.0)
        assert stack.restarts["gp_inference_node"] == 1
        answered = len(driver.latencies_ms)
        # Bounded recovery: the restarted node warms up and commands answer observations again.
        assert spin_until(executor, respawning(lambda: len(driver.latencies_ms) >= answered + 20), 60.0)
        assert driver.statuses[-1] not in STALE_MODES
        executor.shutdown()  # else it keeps the nodes in the ROS graph (see test/nodes/conftest.py)
        driver.destroy_node()
    finally:
        rclpy.try_shutdown()
        codes = stack.stop(sig=signal.SIGTERM)
    assert stack.unclean_exits(codes) == {}, f"SIGTERM must stop every node cleanly: {codes}"
