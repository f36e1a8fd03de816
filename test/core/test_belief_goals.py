"""Goal sets: labels, validation, learning exits from track endpoints."""
from __future__ import annotations

import numpy as np
import pytest

from intent_perf_ros.core.belief.goals import (
    EndpointGoalLearner,
    GoalFlowField,
    hypothesis_labels,
    track_endpoints,
)


def test_learner_finds_endpoint_clusters_and_drops_outliers():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 15.0]])
    sizes = (30, 20, 10)
    pts = np.vstack([c + 0.4 * rng.standard_normal((n, 2)) for c, n in zip(centres, sizes, strict=True)])
    pts = np.vstack([pts, [[30.0, 30.0]]])  # a single stray endpoint is not a goal
    learner = EndpointGoalLearner(radius_m=2.0, min_support=3).fit(pts)
    assert learner.goals_.shape == (3, 2)
    np.testing.assert_allclose(learner.goals_, centres, atol=0.3)  # ordered by support
    np.testing.assert_array_equal(learner.support_, sizes)
    assert learner.prior_.sum() == pytest.approx(1.0)
    assert EndpointGoalLearner(radius_m=2.0, max_goals=2).fit(pts).goals_.shape == (2, 2)


def test_track_endpoints_skip_short_tracks():
    tracks = [np.array([[0.0, 0.0], [3.0, 0.0]]), np.array([[5.0, 5.0], [5.2, 5.0]])]
    np.testing.assert_array_equal(track_endpoints(tracks), [[3.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(track_endpoints(tracks, both_ends=False), [[3.0, 0.0]])


def test_labels_and_errors():
    assert hypothesis_labels(2) == ("goal0", "goal1", "wandering")
    assert hypothesis_labels(1, ["door"]) == ("door", "wandering")
    with pytest.raises(ValueError, match="reserved"):
        hypothesis_labels(1, ["wandering"])
    with pytest.raises(ValueError, match="unique"):
        hypothesis_labels(2, ["a", "a"])
    with pytest.raises(ValueError, match="min_support"):
        EndpointGoalLearner(min_support=5).fit(np.zeros((3, 2)))


def test_origin_destination_prior_follows_flows():
    from intent_perf_ros.core.belief.goals import OriginDestinationPrior

    goals = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    starts = np.repeat(goals[[0, 0, 0, 1]], [8, 1, 0, 5], axis=0)
    ends = np.repeat(goals[[1, 2, 2, 0]], [8, 1, 0, 5], axis=0)
    od = OriginDestinationPrior(alpha=1.0, near_m=3.0).fit(goals, starts, ends, np.array([0.4, 0.4, 0.2]))
    p = od.predict(np.array([0.5, 0.5]))
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p, (np.array([0.0, 8.0, 1.0]) + 3 * np.array([0.4, 0.4, 0.2])) / 12.0)
    np.testing.assert_allclose(od.predict(np.array([50.0, 50.0])), [0.4, 0.4, 0.2])  # far from every goal


def test_flow_field_bends_the_goal_direction():
    """People reach goal 0 (east) by going north first, around an obstacle: the field learns that."""
    from intent_perf_ros.core.belief.tracker import BeliefConfig, BeliefTracker

    goals = np.array([[10.0, 0.0], [-10.0, 0.0]])
    leg = np.column_stack([np.zeros(12), np.linspace(0.0, 5.5, 12)])  # north along x = 0
    tracks = [leg + np.array([0.1 * k, 0.0]) for k in range(5)]
    field = GoalFlowField(cell_m=1.0, shrink=1.0).fit(goals, tracks, np.zeros(5, dtype=int))
    assert field.field_.shape[0] == 2 and np.all(field.field_[1] == 0)
    ends = []
    for flow in (None, field):
        tracker = BeliefTracker(BeliefConfig(goals=goals, flow=flow, seed=0))
        for k in range(10):
            out = tracker.update(0.4 * k, np.array([1]), np.array([[0.05, 0.5 * k]]), np.array([[0.0, 1.25]]))
        ends.append(out.probabilities[0, 0])
    assert ends[1] > ends[0] + 0.2  # walking north is evidence for goal 0 only with the field
