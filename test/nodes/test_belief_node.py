"""belief_node alone with a fake predictor: belief follows the walking direction, stamps kept."""
import math

import pytest
from flat_messages import predictions_message
from rclpy.node import Node
from rclpy.parameter import Parameter

from intent_perf_ros.msg import BeliefArray, IntentPredictionArray
from intent_perf_ros.nodes.belief_node import BeliefNode
from intent_perf_ros.nodes.common import DERIVED_QOS


def test_belief_converges_to_the_goal_the_human_walks_to(ros):
    belief = ros.add(BeliefNode(parameter_overrides=[
        Parameter("goals_x", value=[10.0, -10.0]), Parameter("goals_y", value=[0.0, 0.0]),
        Parameter("goal_labels", value=["east", "west"])]))
    peer = ros.add(Node("fake_predictor"))
    pub = peer.create_publisher(IntentPredictionArray, "intent/predictions", DERIVED_QOS)
    received: list[BeliefArray] = []
    peer.create_subscription(BeliefArray, "intent/belief", received.append, DERIVED_QOS)
    assert ros.spin_until(lambda: pub.get_subscription_count() and belief.publisher.get_subscription_count())
    for k in range(30):  # walking east at 1.2 m/s, 10 Hz
        x = 0.12 * k
        pub.publish(predictions_message((50 + k // 10, (k % 10) * 100_000_000), [4], [[x, 0.0, 1.2, 0.0]],
                                        [[[x + 0.48, 0.0], [x + 0.96, 0.0], [x + 1.44, 0.0]]],
                                        [[[0.01, 0.01], [0.04, 0.04], [0.09, 0.09]]]))
        assert ros.spin_until(lambda k=k: len(received) > k, 5.0)
    last = received[-1]
    assert (last.header.stamp.sec, last.header.stamp.nanosec) == (52, 900_000_000)
    assert list(last.goal_labels)[:2] == ["east", "west"] and len(last.goal_labels) == 3  # + wandering
    assert list(last.ids) == [4] and len(last.probabilities) == 3
    assert abs(sum(last.probabilities) - 1.0) < 1e-9
    assert list(last.most_likely_goal) == [0] and last.probabilities[0] > 0.8
    # Bayes mode (the default) publishes the effective number of hypotheses, 1 / sum p^2.
    (ess,) = last.effective_sample_size
    assert ess == pytest.approx(1.0 / sum(p * p for p in last.probabilities))
    assert 1.0 <= ess < 1.6
    (entropy,) = last.entropy
    assert entropy == pytest.approx(-sum(p * math.log(p) for p in last.probabilities if p > 0))
    assert last.behaviour in ("proceed", "slow", "yield", "detour_left", "detour_right")


def test_decision_period_with_the_plan_inside_the_safety_radius_is_scored_not_fatal(ros):
    from intent_perf_ros.msg import ControlStatus

    belief = ros.add(BeliefNode())
    belief.on_status(ControlStatus(goal_distance=6.0, min_predicted_clearance=0.5))
    belief.on_status(ControlStatus(goal_distance=5.5, min_predicted_clearance=-0.3))  # inside the radius
    before = belief.selector.posterior()[0].copy()
    belief.decide()
    assert belief.stats.errors == 0
    assert not (belief.selector.posterior()[0] == before).all(), "the period's outcome updated the model"


def test_a_belief_shard_receives_only_its_shards_predictions(ros):
    belief = ros.add(BeliefNode(parameter_overrides=[Parameter("shard_index", value=1),
                                                     Parameter("shard_count", value=2)]))
    assert belief.shard_filtered  # FastDDS filters the topic before rclpy deserialises a sample
    peer = ros.add(Node("fake_predictor_shards"))
    pub = peer.create_publisher(IntentPredictionArray, "intent/predictions", DERIVED_QOS)
    received: list[BeliefArray] = []
    peer.create_subscription(BeliefArray, "intent/belief", received.append, DERIVED_QOS)
    assert ros.spin_until(lambda: pub.get_subscription_count() and belief.publisher.get_subscription_count())
    for k in range(6):  # shards 0, 1, 0, 1, ...: human 10 + k of shard k % 2
        pub.publish(predictions_message((60 + k, 0), [10 + k], [[float(k), 0.0, 1.0, 0.0]], [[[k + 0.4, 0.0]]],
                                        [[[0.01, 0.01]]], shard_index=k % 2, shard_count=2))
    assert ros.spin_until(lambda: len(received) >= 3, 5.0)
    assert not ros.spin_until(lambda: len(received) > 3, 0.5)  # and no more
    assert [list(m.ids) for m in received] == [[11], [13], [15]]
    assert belief.stats.msgs_in == 3
