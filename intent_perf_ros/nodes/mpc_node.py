"""mpc_node: odometry, goal, predictions and beliefs in; velocity command and solver status out.

The controller runs once per predictions message (so each command carries the stamp of the
observation it answers) and, from a timer, whenever predictions are late: then the stale-input
watchdog slows the robot down and stops it.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node

from intent_perf_ros.core import aot
from intent_perf_ros.core.cache import QP_STRUCTURES
from intent_perf_ros.core.degradation import NODE_LEVELS, DegradationLadder
from intent_perf_ros.core.mpc import hypotheses
from intent_perf_ros.core.mpc.controller import ControlResult, Mode, MPCConfig, MPCController
from intent_perf_ros.core.shard_cycles import ShardCycles
from intent_perf_ros.msg import BeliefArray, ControlStatus, IntentPredictionArray
from intent_perf_ros.nodes.common import (
    COMMAND_QOS,
    CONTROL_QOS,
    DERIVED_QOS,
    SENSOR_QOS,
    NodeStatistics,
    run,
    stamp_to_ns,
)
from intent_perf_ros.nodes.flat_fields import belief_layout, prediction_layout, read_fields

ODOM_TOPIC = "odom"
GOAL_TOPIC = "goal_pose"
PREDICTIONS_TOPIC = "intent/predictions"
BELIEF_TOPIC = "intent/belief"
CMD_TOPIC = "cmd_vel"
STATUS_TOPIC = "mpc/status"
SHORT_HORIZON, FEWER_HYPOTHESES = 1, 2  # degradation levels (core.degradation.NODE_LEVELS)
BELIEF_TIMEOUT_S = 2.0  # an older belief of a human is not used (uniform instead)

kernels = aot.load(aot.MPC_KERNELS)  # compiled ahead of time by make, else JIT


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class MpcNode(Node):
    """Human-aware MPC around ``core.mpc``; parameters are read once at start-up."""

    def __init__(self, **node_options) -> None:
        super().__init__("mpc_node", **node_options)
        self.frame_id: str = self.declare_parameter("frame_id", "map").value
        self.base_frame_id: str = self.declare_parameter("base_frame_id", "base_link").value
        self.max_humans: int = self.declare_parameter("max_humans", 32).value
        self.top_k: int = self.declare_parameter("hypotheses_per_human", 2).value
        self.control_period_s: float = self.declare_parameter("control_period_s", 0.1).value
        self.stale_after_s: float = self.declare_parameter("predictions_late_after_s", 0.25).value
        goal = list(self.declare_parameter("initial_goal", [0.0, 0.0, 0.0]).value)  # x, y, use (0/1)
        bounds = list(self.declare_parameter("map_bounds", [-1000.0, 1000.0, -1000.0, 1000.0]).value)
        if len(bounds) != 4 or bounds[0] >= bounds[1] or bounds[2] >= bounds[3]:
            raise ValueError(f"map_bounds must be [x_min, x_max, y_min, y_max] with min < max, got {bounds}")
        self.map_bounds: tuple[float, float, float, float] = tuple(bounds)
        stats_period_s: float = self.declare_parameter("stats_period_s", 1.0).value
        budget_ms: float = self.declare_parameter("cycle_budget_ms", 5.0).value
        config = MPCConfig(
            horizon=self.declare_parameter("horizon", 20).value,
            dt=self.declare_parameter("dt", 0.1).value,
            v_max=self.declare_parameter("v_max", 1.0).value,
            omega_max=self.declare_parameter("omega_max", 1.5).value,
            a_max=self.declare_parameter("a_max", 1.0).value,
            safety_radius=self.declare_parameter("safety_radius", 0.6).value,
            confidence=self.declare_parameter("confidence", 0.95).value,
            time_limit_s=self.declare_parameter("time_limit_s", 0.005).value,
            max_iter=self.declare_parameter("max_iter", 200).value,
            max_humans=self.max_humans,
            hypotheses_per_human=self.top_k,
        )
        # The full controller, and the degraded one with half the horizon, both built and warmed up now.
        self.controllers = (MPCController(config), MPCController(replace(config, horizon=max(config.horizon // 2, 2))))
        for controller in self.controllers:
            controller.warmup()
        hypotheses.warmup()

        self._state = np.zeros(5)  # x, y, theta, v, omega
        self._odom_time: float | None = None
        self._odom_stamp_ns = 0
        self._goal = np.array(goal[:2], dtype=np.float64)
        self._has_goal = len(goal) > 2 and goal[2] > 0.5
        self._last_predictions = -math.inf
        # The latest belief per human id (store_beliefs / load_predictions kernels): ids, received at
        # (monotonic s), number of hypotheses, probabilities; rows in use first.
        belief_rows = 4 * self.max_humans
        self._belief_ids = np.full(belief_rows, -1, dtype=np.int64)
        self._belief_time = np.full(belief_rows, -math.inf)
        self._belief_k1 = np.zeros(belief_rows, dtype=np.int64)
        self._belief_probs = np.zeros((belief_rows, 64))
        self._belief_rows = 0
        self._order = np.zeros(self.max_humans, dtype=np.int64)
        self._goals = np.zeros((0, 2))
        cap = self.max_humans
        self._pred_mean = np.zeros((cap, 64, 2))
        self._pred_var = np.zeros((cap, 64, 2))
        self._xy = np.zeros((cap, 2))
        self._vxy = np.zeros((cap, 2))
        self._probs = np.zeros((cap, 64))
        self._hyp_mean = np.zeros((cap * self.top_k, 64, 2))
        self._hyp_var = np.zeros((cap * self.top_k, 64, 2))
        self._no_humans = np.zeros((0, 1, 2))
        self._no_goal = np.full(2, math.nan)
        self._behaviour = "proceed"
        self._cycles: ShardCycles | None = None

        self.stats = NodeStatistics(self, stats_period_s, self._extra_stats,
                                    DegradationLadder(NODE_LEVELS["mpc_node"], budget_ms))
        self._cmd = TwistStamped()
        self._cmd.header.frame_id = self.base_frame_id
        self._status = ControlStatus()
        self._status.header.frame_id = self.frame_id
        self.cmd_publisher = self.create_publisher(TwistStamped, CMD_TOPIC, COMMAND_QOS)
        self.status_publisher = self.create_publisher(ControlStatus, STATUS_TOPIC, CONTROL_QOS)
        self.create_subscription(Odometry, ODOM_TOPIC, self.stats.guarded(self.on_odom), SENSOR_QOS)
        self.create_subscription(PoseStamped, GOAL_TOPIC, self.stats.guarded(self.on_goal), CONTROL_QOS)
        self.create_subscription(IntentPredictionArray, PREDICTIONS_TOPIC, self.stats.guarded(self.on_predictions),
                                 DERIVED_QOS)
        self.create_subscription(BeliefArray, BELIEF_TOPIC, self.stats.guarded(self.on_belief), DERIVED_QOS)
        self.create_timer(self.control_period_s, self.stats.guarded(self.on_timer))

    def on_odom(self, msg: Odometry) -> None:
        self.stats.received(ODOM_TOPIC)
        p, q, t = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
        values = (p.x, p.y, q.x, q.y, q.z, q.w, t.linear.x, t.angular.z)
        if not all(math.isfinite(v) for v in values):
            self.stats.dropped += 1
            self.stats.warn("dropping odometry with non-finite pose or twist")
            return
        self._state[:] = (p.x, p.y, yaw_from_quaternion(q.x, q.y, q.z, q.w), t.linear.x, t.angular.z)
        self._odom_time = time.monotonic()
        self._odom_stamp_ns = stamp_to_ns(msg.header.stamp)

    def on_goal(self, msg: PoseStamped) -> None:
        self.stats.received(GOAL_TOPIC)
        x, y = msg.pose.position.x, msg.pose.position.y
        x_min, x_max, y_min, y_max = self.map_bounds
        if msg.header.frame_id != self.frame_id or not (x_min <= x <= x_max and y_min <= y <= y_max):
            # The comparison is False for NaN too: a non-finite goal is outside every map.
            self.stats.dropped += 1
            self.stats.warn(
                f"dropping goal ({x}, {y}) in frame '{msg.header.frame_id}': expected frame '{self.frame_id}' "
                f"and a position inside map_bounds {self.map_bounds}")
            return
        self._goal[:] = (x, y)
        self._has_goal = True

    def on_belief(self, msg: BeliefArray) -> None:
        self.stats.received(BELIEF_TOPIC)
        k = len(msg.goal_x) - 1  # the last hypothesis is "wandering" and has no position
        if not 1 <= k + 1 <= self._belief_probs.shape[1]:
            self.stats.dropped += 1
            self.stats.warn(f"dropping beliefs over {k + 1} hypotheses: 1 to {self._belief_probs.shape[1]} expected")
            return
        if self._goals.shape[0] != k:
            self._goals = np.zeros((k, 2))
        self._goals[:, 0] = msg.goal_x[:k]
        self._goals[:, 1] = msg.goal_y[:k]
        if msg.behaviour != self._behaviour and msg.behaviour:
            try:
                for controller in self.controllers:
                    controller.set_behaviour(msg.behaviour)
                self._behaviour = msg.behaviour
            except ValueError as exc:
                self.stats.dropped += 1
                self.stats.warn(f"ignoring behaviour: {exc}")
        try:
            fields = read_fields(msg, belief_layout(k + 1))
        except ValueError as exc:
            self.stats.dropped += 1
            self.stats.warn(f"dropping the beliefs of a malformed belief message: {exc}")
            return
        # Merged by id: with sharded belief nodes each message holds only its shard's humans.
        self._belief_rows = kernels.store_beliefs(self._belief_ids, self._belief_time, self._belief_k1,
                                                  self._belief_probs, self._belief_rows, fields["ids"],
                                                  fields["probabilities"], time.monotonic())

    def on_predictions(self, msg: IntentPredictionArray) -> None:
        start = time.perf_counter_ns()
        self.stats.received(PREDICTIONS_TOPIC)
        if not (0.0 < msg.step_dt < 60.0) or not msg.horizon_steps > 0:  # NaN fails too
            # Not counted as fresh: the watchdog keeps slowing the robot down if only such messages come.
            self.stats.dropped += 1
            self.stats.warn(f"dropping predictions with step_dt {msg.step_dt} s and horizon_steps {msg.horizon_steps}")
            return
        shards = max(msg.shard_count, 1)
        if shards == 1:
            parts = [msg]
        else:  # sharded predictors: plan once all shards delivered this observation (core.sharding)
            if self._cycles is None or self._cycles.shard_count != shards:
                self._cycles = ShardCycles(shards)
            parts = self._cycles.add(stamp_to_ns(msg.header.stamp), msg.shard_index, msg)
            if parts is None:
                return
        steps = min(int(msg.horizon_steps), self._pred_mean.shape[1])
        step_dt = float(msg.step_dt)
        loaded = self._load(parts, steps)
        if loaded is None:  # not fresh either: the watchdog slows the robot down if only such messages come
            return
        self._last_predictions = time.monotonic()
        n, steps = loaded
        count = self._expand(n, steps, step_dt, self._goals.shape[0] > 0)
        width = max(steps, 1)
        self._control(stamp_to_ns(msg.header.stamp), self._hyp_mean[:count, :width], self._hyp_var[:count, :width],
                      step_dt, 0.0)
        self.stats.callback_done(start)

    def _load(self, parts: list[IntentPredictionArray], steps: int) -> tuple[int, int] | None:
        """Copy every shard's predictions (and the belief of each human) into the preallocated arrays.

        Returns the number of humans and of horizon steps that every shard's message holds, or None
        when a message is malformed: the cycle is dropped rather than planned without its humans."""
        try:
            fields = [read_fields(part, prediction_layout(int(part.horizon_steps))) for part in parts]
        except ValueError as exc:
            self.stats.dropped += 1
            self.stats.warn(f"dropping a cycle with a malformed predictions message: {exc}")
            return None
        steps = min(steps, *(f["mean"].shape[1] for f in fields))
        merged = fields[0] if len(fields) == 1 else \
            {name: np.concatenate([f[name][:, :steps] if f[name].ndim == 3 else f[name] for f in fields])
             for name in fields[0]}
        # In id order (load_predictions): shards' messages arrive in any order, and the QP's constraint
        # order (hence OSQP's iterates) must not depend on it, so that sharded and unsharded stacks plan
        # the same. Above max_humans the highest ids are left out (counted).
        n = kernels.load_predictions(merged["ids"], merged["state"], merged["mean"], merged["variance"], steps,
                                     self._belief_ids, self._belief_time, self._belief_k1, self._belief_probs,
                                     self._belief_rows, time.monotonic(), BELIEF_TIMEOUT_S,
                                     self._goals.shape[0] + 1, self._order, self._pred_mean, self._pred_var,
                                     self._xy, self._vxy, self._probs)
        self.stats.dropped += merged["ids"].shape[0] - n
        return n, steps

    def _expand(self, n: int, steps: int, pred_dt: float, use_belief: bool) -> int:
        if n == 0:
            return 0
        k1 = self._goals.shape[0] + 1
        return hypotheses.expand_hypotheses(
            self._pred_mean[:n, :steps], self._pred_var[:n, :steps], self._xy[:n], self._vxy[:n], self._goals,
            self._probs[:n, :k1] if use_belief else None,
            1 if self.stats.ladder.level >= FEWER_HYPOTHESES else self.top_k, pred_dt,
            self._hyp_mean[:, :steps], self._hyp_var[:, :steps])

    def controller(self) -> MPCController:
        """The full controller, or the short-horizon one while the degradation ladder says so."""
        return self.controllers[1] if self.stats.ladder.level >= SHORT_HORIZON else self.controllers[0]

    def on_timer(self) -> None:
        """Watchdog: without fresh predictions the controller still runs, slowing down and stopping."""
        age = time.monotonic() - self._last_predictions
        if age > self.stale_after_s:
            self._control(self._odom_stamp_ns, self._no_humans, self._no_humans, 0.4, age)

    def _control(self, stamp_ns: int, mean: np.ndarray, var: np.ndarray, pred_dt: float, input_age_s: float) -> None:
        odom_age = math.inf if self._odom_time is None else time.monotonic() - self._odom_time
        try:
            result = self.controller().step(self._state, self._goal if self._has_goal else self._no_goal, mean, var,
                                          pred_dt, input_age_s=max(input_age_s, odom_age))
        except Exception as exc:
            self.stats.errors += 1
            self.stats.warn(f"controller failed, commanding a stop: {exc!r}")
            result = ControlResult(v=0.0, omega=0.0, mode=Mode.STOP, solver_status=f"exception: {type(exc).__name__}")
        cmd, status = self._cmd, self._status  # reused: publish serialises them before returning
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        cmd.header.stamp.sec, cmd.header.stamp.nanosec = sec, nanosec
        cmd.twist.linear.x = float(result.v)
        cmd.twist.angular.z = float(result.omega)
        self.cmd_publisher.publish(cmd)
        # Only commands answering an observation have an end-to-end latency; watchdog ones answer the clock.
        self.stats.sent(CMD_TOPIC, stamp_ns if input_age_s == 0.0 else None)
        status.header.stamp.sec, status.header.stamp.nanosec = sec, nanosec
        status.mode = int(result.mode)
        status.solver_status = result.solver_status
        status.iterations = int(result.iterations)
        status.solve_time_ms = float(result.solve_time_ms)
        status.min_predicted_clearance = float(result.min_clearance)
        status.goal_distance = float(result.goal_distance)
        status.humans_considered = int(result.humans_considered)
        self.status_publisher.publish(status)
        self.stats.sent(STATUS_TOPIC)

    def _extra_stats(self) -> dict[str, str]:
        extra = {f"mpc.{k}": str(v) for k, v in self.controllers[0].stats().items()}
        extra.update({f"mpc_short.{k}": str(v) for k, v in self.controllers[1].stats().items()})
        extra.update({f"cache.qp.{k}": str(v) for k, v in QP_STRUCTURES.stats().items()})
        return extra


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run(MpcNode, args))


if __name__ == "__main__":
    main()
