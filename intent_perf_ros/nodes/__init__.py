"""Thin ROS 2 nodes: parameters, QoS, subscriptions, publishing and statistics around ``core``."""
