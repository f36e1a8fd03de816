"""One node in-process with a fake peer: rclpy per test, an EventsExecutor, discovery waited on."""
import time
from collections.abc import Callable

import pytest
import rclpy
from rclpy.experimental import EventsExecutor


@pytest.fixture
def ros():
    rclpy.init()
    executor = EventsExecutor()
    nodes = []

    class Graph:
        def add(self, node):
            nodes.append(node)
            executor.add_node(node)
            return node

        def spin_until(self, condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if condition():
                    return True
                executor.spin_once(timeout_sec=0.05)
            return condition()

    try:
        yield Graph()
    finally:
        # Executor first: while it holds the nodes, their publishers stay in the ROS graph for the rest
        # of the pytest process, and a later test that checks the domain for a foreign stack sees them.
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
