"""belief_node alone with a fake predictor: belief follows the walking direction, stamps kept."""
import array

import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter

from intent_perf_ros.msg import BeliefArray, IntentPrediction, IntentPredictionArray
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
        msg = IntentPredictionArray(step_dt=0.4, horizon_steps=3)
        msg.header.stamp.sec, msg.header.stamp.nanosec = 50 + k // 10, (k % 10) * 100_000_000
        x = 0.12 * k
        p = IntentPrediction(id=4, x=x, y=0.0, vx=1.2, vy=0.0)
        p.mean_x = array.array("d", [x + 0.48, x + 0.96, x + 1.44])
        p.mean_y = array.array("d", [0.0] * 3)
        p.var_x = p.var_y = array.array("d", [0.01, 0.04, 0.09])
        msg.predictions = [p]
        pub.publish(msg)
        assert ros.spin_until(lambda k=k: len(received) > k, 5.0)
    last = received[-1]
    assert (last.header.stamp.sec, last.header.stamp.nanosec) == (52, 900_000_000)
    assert list(last.goal_labels)[:2] == ["east", "west"] and len(last.goal_labels) == 3  # + wandering
    (state,) = last.beliefs
    assert state.id == 4 and abs(sum(state.probabilities) - 1.0) < 1e-9
    assert state.most_likely_goal == 0 and state.probabilities[0] > 0.8
    # Bayes mode (the default) publishes the effective number of hypotheses, 1 / sum p^2.
    assert state.effective_sample_size == pytest.approx(1.0 / sum(p * p for p in state.probabilities))
    assert 1.0 <= state.effective_sample_size < 1.6
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
