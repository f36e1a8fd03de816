"""ROS-free algorithms: importable and testable without rclpy (numpy, numba, osqp; torch lazily)."""
