"""belief_node: predictions in, belief over each human's goal and the selected robot behaviour out."""
from __future__ import annotations

import array
import math
import time
from dataclasses import replace

import numpy as np
from rclpy.node import Node
from rclpy.subscription_content_filter_options import ContentFilterOptions

from intent_perf_ros.core.belief.decision import BehaviourSelector, outcome_reward
from intent_perf_ros.core.belief.layout import MAX_COORDINATE, MAX_SPEED
from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker
from intent_perf_ros.core.degradation import NODE_LEVELS, DegradationLadder
from intent_perf_ros.msg import BeliefArray, ControlStatus, IntentPredictionArray
from intent_perf_ros.nodes.common import CONTROL_QOS, DERIVED_QOS, NodeStatistics, run, stamp_to_ns, stamp_to_s
from intent_perf_ros.nodes.flat_fields import FieldPool, belief_layout, prediction_layout, read_fields

PREDICTIONS_TOPIC = "intent/predictions"
BELIEF_TOPIC = "intent/belief"
STATUS_TOPIC = "mpc/status"


class BeliefNode(Node):
    """Per-human goal belief (Bayes or particle filter) plus the Bayesian behaviour selection."""

    def __init__(self, **node_options) -> None:
        super().__init__("belief_node", **node_options)
        goals_x = list(self.declare_parameter("goals_x", [-8.0, 8.0, 8.0, -8.0, 0.0, 0.0]).value)
        goals_y = list(self.declare_parameter("goals_y", [-8.0, -8.0, 8.0, 8.0, 8.0, -8.0]).value)
        labels = list(self.declare_parameter("goal_labels", ["sw", "se", "ne", "nw", "n", "s"]).value)
        if len(goals_x) != len(goals_y) or len(labels) != len(goals_x) or not goals_x:
            raise ValueError("goals_x, goals_y and goal_labels must be non-empty lists of the same length")
        mode: str = self.declare_parameter("mode", "bayes").value
        particles: int = self.declare_parameter("particles", 500).value
        self.capacity: int = self.declare_parameter("capacity", 64).value
        track_timeout_s: float = self.declare_parameter("track_timeout_s", 2.0).value
        relax_time_s: float = self.declare_parameter("relax_time_s", 1.5).value
        bayes_relax_time_s: float = self.declare_parameter("bayes_relax_time_s", 0.7).value
        method: str = self.declare_parameter("decision_method", "thompson").value
        decision_period_s: float = self.declare_parameter("decision_period_s", 2.0).value
        seed: int = self.declare_parameter("seed", 0).value
        stats_period_s: float = self.declare_parameter("stats_period_s", 1.0).value
        budget_ms: float = self.declare_parameter("cycle_budget_ms", 4.0).value
        # Sharding: belief shard i follows the humans of prediction shard i (the same id hash).
        self.shard_index: int = self.declare_parameter("shard_index", 0).value
        self.shard_count: int = self.declare_parameter("shard_count", 1).value

        config = BeliefConfig(
            goals=np.column_stack([goals_x, goals_y]).astype(np.float64), labels=tuple(labels), mode=mode,
            particles=particles, capacity=self.capacity, track_timeout_s=track_timeout_s, seed=seed,
            relax_time_s=relax_time_s, bayes_relax_time_s=bayes_relax_time_s)
        # Degradation (particle mode): a quarter of the particles, then the discrete Bayes filter. All
        # trackers are built and warmed up now; switching starts the new one's beliefs from the prior.
        self.trackers = [BeliefTracker(config)]
        if mode == "particle":
            self.trackers += [BeliefTracker(replace(config, particles=max(particles // 4, 4 * (len(goals_x) + 1)))),
                              BeliefTracker(replace(config, mode="bayes"))]
        for tracker in self.trackers:
            tracker.warmup()
        levels = NODE_LEVELS["belief_node"][:len(self.trackers)]
        self.selector = BehaviourSelector(method=method, seed=seed)
        self._behaviour = self.selector.select()
        self._progress_start: float | None = None
        self._latest_status: ControlStatus | None = None
        self._labels = list(self.trackers[0].labels)
        self._message = BeliefArray(goal_labels=self._labels, goal_x=array.array("d", [*goals_x, math.nan]),
                                    goal_y=array.array("d", [*goals_y, math.nan]))
        self._fields = FieldPool(belief_layout(len(self._labels)), self.capacity)
        self._ids = np.zeros(self.capacity, dtype=np.int64)
        self._xy = np.zeros((self.capacity, 2))
        self._vxy = np.zeros((self.capacity, 2))
        self._pred = np.zeros((self.capacity, 64, 2))

        self.stats = NodeStatistics(self, stats_period_s, self._extra_stats, DegradationLadder(levels, budget_ms))
        self.publisher = self.create_publisher(BeliefArray, BELIEF_TOPIC, DERIVED_QOS)
        # With shards, DDS drops the other shards' predictions before rclpy deserialises them (a
        # content-filtered topic); on_predictions still checks, for middlewares without filtering.
        shard_filter = ContentFilterOptions("shard_index = %0 AND shard_count = %1",
                                            [str(self.shard_index), str(self.shard_count)]) \
            if self.shard_count > 1 else None
        subscription = self.create_subscription(
            IntentPredictionArray, PREDICTIONS_TOPIC, self.stats.guarded(self.on_predictions), DERIVED_QOS,
            content_filter_options=shard_filter)
        self.shard_filtered: bool = subscription.is_cft_enabled
        self.create_subscription(ControlStatus, STATUS_TOPIC, self.stats.guarded(self.on_status), CONTROL_QOS)
        self.create_timer(decision_period_s, self.stats.guarded(self.decide))

    def on_predictions(self, msg: IntentPredictionArray) -> None:
        start = time.perf_counter_ns()
        if max(msg.shard_count, 1) != self.shard_count or msg.shard_index != self.shard_index % self.shard_count:
            return  # another shard's humans (or a stack configured with other shards)
        self.stats.received(PREDICTIONS_TOPIC)
        steps = min(int(msg.horizon_steps), self._pred.shape[1])
        try:
            fields = read_fields(msg, prediction_layout(int(msg.horizon_steps)))
        except ValueError as exc:
            self.stats.dropped += 1
            self.stats.warn(f"dropping a malformed predictions message: {exc}")
            return
        n = min(len(fields["ids"]), self.capacity)
        if n < len(fields["ids"]):
            self.stats.dropped += len(fields["ids"]) - n
        self._ids[:n] = fields["ids"][:n]
        self._xy[:n] = fields["state"][:n, :2]
        self._vxy[:n] = fields["state"][:n, 2:]
        self._pred[:n, :steps] = fields["mean"][:n, :steps]
        n = self._drop_implausible(n, steps)
        out = self._message
        out.header = msg.header
        _, views = self._fields.buffers(n)
        if n:
            result = self.tracker.update(stamp_to_s(msg.header.stamp), self._ids[:n], self._xy[:n], self._vxy[:n],
                                         self._pred[:n, :steps] if steps else None, float(msg.step_dt))
            views["ids"][:] = self._ids[:n]
            views["probabilities"][:] = result.probabilities[:n]
            views["entropy"][:] = result.entropy[:n]
            views["effective_sample_size"][:] = result.ess[:n]
            views["most_likely_goal"][:] = result.most_likely[:n]
        self._fields.assign(out, n)
        _, out.behaviour, out.behaviour_score, out.exploration_bonus = self._behaviour
        self.publisher.publish(out)
        self.stats.sent(BELIEF_TOPIC, stamp_to_ns(msg.header.stamp))
        self.stats.callback_done(start)

    @property
    def tracker(self) -> BeliefTracker:
        """The tracker of the current degradation level."""
        return self.trackers[self.stats.ladder.level]

    def _drop_implausible(self, n: int, steps: int) -> int:
        """Rule: a prediction with a non-finite or implausible value (beyond the tracker's limits) or a
        repeated id is dropped and counted; the other humans of the message are still assimilated."""
        xy, vxy, pred = self._xy[:n], self._vxy[:n], self._pred[:n, :steps]
        ok = ((np.abs(xy) <= MAX_COORDINATE).all(axis=1) & (np.abs(vxy) <= MAX_SPEED).all(axis=1)
              & np.isfinite(pred).all(axis=(1, 2)))
        _, first = np.unique(self._ids[:n][::-1], return_index=True)  # the last entry of an id wins
        unique = np.zeros(n, dtype=bool)
        unique[n - 1 - first] = True
        ok &= unique
        if ok.all():
            return n
        keep = np.flatnonzero(ok)
        for buffer in (self._ids, self._xy, self._vxy, self._pred):
            buffer[:keep.size] = buffer[keep]
        self.stats.dropped += n - keep.size
        self.stats.warn(f"dropping {n - keep.size} predictions with non-finite or implausible values or a repeated id")
        return int(keep.size)

    def on_status(self, msg: ControlStatus) -> None:
        self._latest_status = msg
        if self._progress_start is None and math.isfinite(msg.goal_distance):
            self._progress_start = msg.goal_distance

    def decide(self) -> None:
        """Score the behaviour of the period that ended (progress and clearance), then choose anew."""
        status = self._latest_status
        if status is None or self._progress_start is None or not math.isfinite(status.goal_distance):
            return
        # The MPC reports clearance beyond its safety radius (negative inside it); the reward takes a
        # distance, so a plan inside the radius counts as touching (0 m: the heaviest penalty).
        clearance = max(status.min_predicted_clearance, 0.0) if math.isfinite(status.min_predicted_clearance) \
            else 10.0
        reward = outcome_reward(progress_m=self._progress_start - status.goal_distance, clearance_m=clearance,
                                human_deviation_m=0.0)
        self.selector.update(self._behaviour[0], reward)
        self._behaviour = self.selector.select()
        self._progress_start = status.goal_distance

    def _extra_stats(self) -> dict[str, str]:
        extra = {f"belief.{k}": str(v) for k, v in self.tracker.stats().items()}
        extra["behaviour"] = self._behaviour[1]
        return extra


def main(args: list[str] | None = None) -> None:
    raise SystemExit(run(BeliefNode, args))


if __name__ == "__main__":
    main()
