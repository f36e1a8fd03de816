"""Python install definition: console scripts and data files.

On a ROS install, colcon builds this package with CMake (messages need it) and CMakeLists.txt
installs the same modules and executables; here `make` uses this file for an editable install.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "intent_perf_ros"
# composed_nodes runs the first three in one process (nodes/composed_nodes.py).
NODES = ("gp_inference_node", "belief_node", "mpc_node", "monitor_node", "composed_nodes")

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Human intent prediction, belief tracking and human-aware MPC as ROS 2 nodes",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    python_requires=">=3.10",
    data_files=[
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/msg", glob("msg/*.msg")),
    ],
    entry_points={
        "console_scripts": [
            "intent-perf = intent_perf_ros.cli:main",
            *(f"{node} = intent_perf_ros.nodes.{node}:main" for node in NODES),
        ],
    },
)
