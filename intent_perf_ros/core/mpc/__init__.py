"""ROS-free MPC: unicycle LTV model, sparse OSQP problem built once, human half-planes."""
