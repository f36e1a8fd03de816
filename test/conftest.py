"""Test isolation: each test process gets its own ROS domain, localhost discovery and log directory.

Set at import, before anything initialises rclpy; node processes started by tests inherit them.
"""
import os
import tempfile

os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="intent_perf_roslog_")
