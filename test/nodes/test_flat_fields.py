"""Flat per-human fields: what a node writes through the pool is what a subscriber reads, bytes and all."""
import array

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message

from intent_perf_ros.msg import BeliefArray, IntentPredictionArray
from intent_perf_ros.nodes.flat_fields import FieldPool, belief_layout, prediction_layout, read_fields


def test_predictions_survive_serialisation_through_the_pool():
    rng = np.random.default_rng(0)
    n, steps = 7, 5
    ids = rng.permutation(1000)[:n]
    state, mean, var = rng.normal(size=(n, 4)), rng.normal(size=(n, steps, 2)), rng.uniform(size=(n, steps, 2))
    pool = FieldPool(prediction_layout(steps), max_count=10)
    _, views = pool.buffers(n)
    views["ids"][:], views["state"][:], views["mean"][:], views["variance"][:] = ids, state, mean, var
    msg = IntentPredictionArray(step_dt=0.4, horizon_steps=steps)
    pool.assign(msg, n)
    received = deserialize_message(serialize_message(msg), IntentPredictionArray)
    fields = read_fields(received, prediction_layout(received.horizon_steps))
    np.testing.assert_array_equal(fields["ids"], ids)
    np.testing.assert_array_equal(fields["state"], state)
    np.testing.assert_array_equal(fields["mean"], mean)
    np.testing.assert_array_equal(fields["variance"], var)
    # human i's step k as the message comment says: mean[2 (i H + k - 1)] is x
    assert received.mean[2 * (3 * steps + 2 - 1)] == mean[3, 1, 0]
    assert received.state[4 * 3 + 2] == state[3, 2]


def test_beliefs_survive_serialisation_and_an_empty_message_is_valid():
    pool = FieldPool(belief_layout(3), max_count=4)
    _, views = pool.buffers(2)
    views["ids"][:] = (5, 9)
    views["probabilities"][:] = ((0.7, 0.2, 0.1), (0.1, 0.1, 0.8))
    views["most_likely_goal"][:] = (0, 2)
    msg = BeliefArray(goal_labels=["a", "b", "wandering"])
    pool.assign(msg, 2)
    fields = read_fields(deserialize_message(serialize_message(msg), BeliefArray), belief_layout(3))
    np.testing.assert_array_equal(fields["probabilities"], [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert fields["most_likely_goal"].tolist() == [0, 2] and fields["ids"].tolist() == [5, 9]
    pool.assign(msg, 0)
    empty = read_fields(deserialize_message(serialize_message(msg), BeliefArray), belief_layout(3))
    assert empty["probabilities"].shape == (0, 3) and empty["ids"].shape == (0,)


def test_the_pool_hands_out_the_same_buffers_for_a_count_and_refuses_too_many():
    pool = FieldPool(prediction_layout(12), max_count=3)
    first, _ = pool.buffers(2)
    again, _ = pool.buffers(2)
    assert all(first[name] is again[name] for name in first)
    assert len(first["mean"]) == 2 * 12 * 2 and first["ids"].typecode == "I"
    with pytest.raises(ValueError, match="4 humans"):
        pool.buffers(4)


@pytest.mark.parametrize("field, values", [
    ("state", array.array("d", [0.0] * 7)),
    ("mean", array.array("d", [0.0] * 47)),
    ("variance", array.array("d")),
])
def test_arrays_that_disagree_with_the_ids_are_refused_naming_the_field(field, values):
    msg = IntentPredictionArray(horizon_steps=12, ids=array.array("I", [1, 2]), state=array.array("d", [0.0] * 8),
                                mean=array.array("d", [0.0] * 48), variance=array.array("d", [0.0] * 48))
    read_fields(msg, prediction_layout(12))  # consistent as built
    setattr(msg, field, values)
    with pytest.raises(ValueError, match=f"'{field}' holds {len(values)} values"):
        read_fields(msg, prediction_layout(12))
