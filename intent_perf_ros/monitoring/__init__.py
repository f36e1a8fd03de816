"""Exports of the monitor's figures outside ROS (Prometheus), for fleets that scrape robots."""
