"""gp_inference_node alone with a fake tracker: one prediction per human, the observation's stamp."""
import itertools
import math
import time

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message, serialize_message

from intent_perf_ros.core.gp.retune import PLACE_GRID
from intent_perf_ros.msg import HumanState, IntentPredictionArray, TrackedHumans
from intent_perf_ros.nodes.common import DERIVED_QOS, SENSOR_QOS
from intent_perf_ros.nodes.flat_fields import prediction_layout, read_fields
from intent_perf_ros.nodes.gp_inference_node import GpInferenceNode


def test_every_tracked_human_is_predicted_with_the_observation_stamp(ros, tmp_path):
    gp = ros.add(GpInferenceNode(parameter_overrides=[
        Parameter("model_cache_dir", value=str(tmp_path / "models")),
        Parameter("dataset_dir", value=str(tmp_path / "no_data")),  # constant-velocity start, no fit
        Parameter("max_stamp_age_s", value=1e10),  # the test's own time line, decades ago
    ]))
    peer = ros.add(Node("fake_tracker"))
    pub = peer.create_publisher(TrackedHumans, "humans/tracked", SENSOR_QOS)
    received: list[IntentPredictionArray] = []
    peer.create_subscription(IntentPredictionArray, "intent/predictions", received.append, DERIVED_QOS)
    assert ros.spin_until(lambda: pub.get_subscription_count() and gp.publisher.get_subscription_count())

    stamps = []
    for k in range(40):  # three humans walking along x at 1 m/s, 10 Hz
        msg = TrackedHumans()
        msg.header.frame_id = "map"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k // 10, (k % 10) * 100_000_000
        t = k * 0.1
        msg.humans = [HumanState(id=i, x=t, y=float(i), vx=1.0, vy=0.0) for i in (3, 7, 11)]
        stamps.append((msg.header.stamp.sec, msg.header.stamp.nanosec))
        pub.publish(msg)
        assert ros.spin_until(lambda k=k: len(received) > k, 5.0)
    bad = TrackedHumans(humans=[HumanState(id=1, x=math.nan), HumanState(id=2, x=5.0, y=0.0, vx=math.inf)])
    bad.header.frame_id = "map"
    bad.header.stamp.sec = 1005
    pub.publish(bad)
    assert ros.spin_until(lambda: len(received) > 40, 5.0)

    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in received[:40]] == stamps
    last = received[39]
    assert last.horizon_steps == 12 and math.isclose(last.step_dt, 0.4)
    fields = read_fields(last, prediction_layout(12))
    assert sorted(fields["ids"]) == [3, 7, 11]
    for human, state, mean, var in zip(fields["ids"], fields["state"], fields["mean"], fields["variance"],
                                       strict=True):
        np.testing.assert_allclose(state, [3.9, float(human), 1.0, 0.0])  # the last observation
        assert np.isfinite(mean).all() and (var >= 0).all() and np.isfinite(var).all()
        # A straight walk at 1 m/s: the prediction continues it (constant velocity before any fit).
        np.testing.assert_allclose(mean[:, 0], 3.9 + 0.4 * np.arange(1, 13), atol=0.05)
        np.testing.assert_allclose(mean[:, 1], float(human), atol=0.05)
        assert np.all(np.diff(var[:, 0]) >= 0)  # uncertainty grows with the horizon
    # The NaN human was dropped, the infinite velocity repaired: one prediction, counted.
    assert list(received[40].ids) == [2]
    assert gp.stats.dropped == 1 and gp.stats.repaired == 1


def test_the_raw_callback_publishes_exactly_what_the_deserialising_one_does(ros, tmp_path):
    def node() -> GpInferenceNode:
        return ros.add(GpInferenceNode(parameter_overrides=[
            Parameter("model_cache_dir", value=str(tmp_path / "models")),
            Parameter("dataset_dir", value=str(tmp_path / "no_data")),
            Parameter("max_stamp_age_s", value=1e10),
            Parameter("max_humans", value=4),  # six humans in a message: two dropped and counted
            Parameter("learn_period_s", value=1e6),
        ]))

    objects, raw = node(), node()
    published = {objects: [], raw: []}
    for gp in published:
        # a copy of each message as published (the node reuses its message object)
        gp.publisher.publish = lambda msg, out=published[gp]: out.append(
            deserialize_message(serialize_message(msg), IntentPredictionArray))

    def message(k: int) -> TrackedHumans:
        msg = TrackedHumans(humans=[HumanState(id=i, x=0.1 * k + i, y=math.sin(0.1 * k + i), vx=1.0,
                                               vy=math.nan if (i, k) == (2, 7) else 0.0) for i in range(6)])
        msg.header.frame_id = "odom" if k == 11 else "map"  # one in another frame: dropped
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k // 10, (k % 10) * 100_000_000
        return msg

    for k in range(30):
        objects.on_humans(message(k))
        raw.on_humans_cdr(serialize_message(message(k)))
    assert len(published[raw]) == 29
    assert published[raw] == published[objects]
    assert (raw.stats.dropped, raw.stats.repaired) == (objects.stats.dropped, objects.stats.repaired) == (1 + 2 * 29, 1)
    raw.on_humans_cdr(serialize_message(message(30))[:-9])  # cut short: dropped, counted, nothing published
    assert raw.stats.dropped == objects.stats.dropped + 1 and len(published[raw]) == 29


def test_sustained_overload_degrades_to_constant_velocity_and_keeps_predicting(ros, tmp_path):
    gp = ros.add(GpInferenceNode(parameter_overrides=[
        Parameter("model_cache_dir", value=str(tmp_path / "models")),
        Parameter("dataset_dir", value=str(tmp_path / "no_data")),
        Parameter("max_stamp_age_s", value=1e10),
        Parameter("cycle_budget_ms", value=1e-6),  # every cycle is over budget
    ]))
    peer = ros.add(Node("fake_tracker"))
    pub = peer.create_publisher(TrackedHumans, "humans/tracked", SENSOR_QOS)
    received: list[IntentPredictionArray] = []
    peer.create_subscription(IntentPredictionArray, "intent/predictions", received.append, DERIVED_QOS)
    assert ros.spin_until(lambda: pub.get_subscription_count() and gp.publisher.get_subscription_count())
    levels = []
    for k in range(60):
        msg = TrackedHumans(humans=[HumanState(id=1, x=0.1 * k, y=0.0, vx=1.0, vy=0.0)])
        msg.header.frame_id = "map"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k // 10, (k % 10) * 100_000_000
        pub.publish(msg)
        assert ros.spin_until(lambda k=k: len(received) > k, 5.0)
        levels.append(gp.stats.ladder.level)
    assert levels[0] == 0 and max(levels) == 2, levels  # one level at a time, down to constant velocity
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(levels))
    assert gp.stats.ladder.name == "constant_velocity"
    assert all(np.isfinite(m.mean).all() and len(m.mean) == 24 for m in received)


def test_online_learning_takes_a_bounded_evenly_spaced_chunk_per_tick(ros, tmp_path):
    gp = ros.add(GpInferenceNode(parameter_overrides=[
        Parameter("model_cache_dir", value=str(tmp_path / "models")),
        Parameter("dataset_dir", value=str(tmp_path / "no_data")),
        Parameter("max_stamp_age_s", value=1e10),
        Parameter("learn_period_s", value=1e6),  # learn() is called by the test, not by the timer
        Parameter("learn_max_windows", value=5),
    ]))
    learned: list[np.ndarray] = []
    gp.predictor.add_windows = lambda windows, *_: learned.append(windows.copy())
    completed: list[np.ndarray] = []
    take = gp.tracks.take_windows
    gp.tracks.take_windows = lambda: completed.append(take().copy()) or completed[-1]

    def walk(steps: range) -> None:  # five humans at 1 m/s, 10 Hz; a window is 20 steps of 0.4 s
        for k in steps:
            msg = TrackedHumans(humans=[HumanState(id=i, x=0.1 * k, y=float(i), vx=1.0, vy=0.0) for i in range(5)])
            msg.header.frame_id = "map"
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k // 10, (k % 10) * 100_000_000
            gp.on_humans(msg)

    walk(range(120))
    gp.learn()
    assert len(completed[0]) > 20  # about 4 s of windows from five humans
    assert len(learned) == 1 and len(learned[0]) == 5
    np.testing.assert_array_equal(learned[0][[0, -1]], completed[0][[0, -1]])  # spread over the backlog
    walk(range(120, 124))  # one more grid step: one window per human, as many as the bound, all learned
    gp.learn()
    assert len(completed[1]) == 5 and np.array_equal(learned[1], completed[1])
    assert gp._windows_learned == 10
    assert gp._windows_skipped == len(completed[0]) - 5


def test_a_restarted_node_at_the_same_site_starts_with_the_learned_place_model(ros, tmp_path):
    def node(site: str) -> GpInferenceNode:
        return GpInferenceNode(parameter_overrides=[
            Parameter("model_cache_dir", value=str(tmp_path / "models")),
            Parameter("dataset_dir", value=str(tmp_path / "no_data")),
            Parameter("max_stamp_age_s", value=1e10),
            Parameter("learn_period_s", value=1e6),  # learn() is called by the test
            Parameter("learn_max_windows", value=1000),
            Parameter("place_site", value=site),
        ])

    first = node("lab")
    for k in range(160):  # five humans walking arcs, 10 Hz: windows complete from step 76 on
        a = 0.01 * k
        msg = TrackedHumans(humans=[HumanState(id=i, x=0.1 * k, y=i + 3.0 * math.sin(a), vx=1.0,
                                               vy=0.3 * math.cos(a)) for i in range(5)])
        msg.header.frame_id = "map"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k // 10, (k % 10) * 100_000_000
        first.on_humans(msg)
    first.learn()
    learned = first.predictor.learned_windows()
    assert len(learned) > 20 and first.predictor.stats()["n_online"] == len(learned)
    history = learned[:3, :8].copy()
    mean_a, var_a = np.zeros((3, 12, 2)), np.zeros((3, 12, 2))
    first.predictor.predict(history, mean_a, var_a)
    first.destroy_node()  # stores the windows

    second = ros.add(node("lab"))
    np.testing.assert_array_equal(second.predictor.learned_windows(), learned)
    mean_b, var_b = np.zeros((3, 12, 2)), np.zeros((3, 12, 2))
    second.predictor.predict(history, mean_b, var_b)
    np.testing.assert_allclose(mean_b, mean_a, rtol=0, atol=1e-9)
    other = ros.add(node("warehouse"))  # another site starts cold
    assert other.predictor.stats()["n_online"] == 0
    cold = np.zeros((3, 12, 2))
    other.predictor.predict(history, cold, np.zeros((3, 12, 2)))
    assert np.abs(cold - mean_a).max() > 1e-3  # the place model did change the prediction


def test_the_place_gp_is_retuned_in_a_child_process_and_adopted_by_a_later_tick(ros, tmp_path):
    gp = ros.add(GpInferenceNode(parameter_overrides=[
        Parameter("model_cache_dir", value=str(tmp_path / "models")),
        Parameter("dataset_dir", value=str(tmp_path / "no_data")),
        Parameter("max_stamp_age_s", value=1e10),
        Parameter("learn_period_s", value=1e6),  # learn() is called by the test
        Parameter("learn_max_windows", value=1000),
        Parameter("place_retune_first", value=300),
    ]))
    for k in range(500):  # 50 s of six humans on arcs at 10 Hz, learned once per test second
        a = 0.01 * k
        msg = TrackedHumans(humans=[HumanState(id=i, x=0.1 * k, y=i + (1 + i % 3) * math.sin(a), vx=1.0,
                                               vy=0.1 * (1 + i % 3) * math.cos(a)) for i in range(6)])
        msg.header.frame_id = "map"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k // 10, (k % 10) * 100_000_000
        gp.on_humans(msg)
        if k % 10 == 9 and not gp.retuner.busy:
            gp.learn()
    assert gp.retuner.busy  # started once 300 timed windows (20 s) were learned; the node's thread went on
    deadline = time.monotonic() + 120.0
    while gp.retuner._thread.is_alive():
        assert time.monotonic() < deadline, "no answer from the re-tuning child"
        gp.retuner._thread.join(0.1)
    gp.learn()  # the next tick adopts it
    assert gp._retunes_run == 1 and gp.retuner.failures == 0
    extra = gp._extra_stats()
    assert extra["place_retunes_run"] == "1" and extra["place_retune_failures"] == "0"
    # Without an offline fit the place GP starts with DEFAULT_PLACE_PARAMS, none of the grid: whichever
    # candidate the replay chose, the node adopted it
    assert extra["gp.place_retunes"] == "1"
    assert any(p.same_as(gp.predictor.place_model_.params) for p in PLACE_GRID)


def test_learning_runs_in_the_slack_after_a_published_prediction(ros, tmp_path):
    gp = ros.add(GpInferenceNode(parameter_overrides=[
        Parameter("model_cache_dir", value=str(tmp_path / "models")),
        Parameter("dataset_dir", value=str(tmp_path / "no_data")),
        Parameter("max_stamp_age_s", value=1e10),
        Parameter("learn_period_s", value=0.0),  # armed after every prediction
    ]))
    peer = ros.add(Node("fake_tracker_learning"))
    pub = peer.create_publisher(TrackedHumans, "humans/tracked", SENSOR_QOS)
    received: list[IntentPredictionArray] = []
    peer.create_subscription(IntentPredictionArray, "intent/predictions", received.append, DERIVED_QOS)
    assert ros.spin_until(lambda: pub.get_subscription_count() and gp.publisher.get_subscription_count())
    for k in range(100):  # two humans, 10 Hz stamps: windows complete from step 76 on
        msg = TrackedHumans(humans=[HumanState(id=i, x=0.1 * k, y=float(i), vx=1.0, vy=0.0) for i in range(2)])
        msg.header.frame_id = "map"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k // 10, (k % 10) * 100_000_000
        pub.publish(msg)
        assert ros.spin_until(lambda k=k: len(received) > k, 5.0)
        if k == 60:
            assert gp._windows_learned == 0  # no window complete yet
    assert ros.spin_until(lambda: gp._learn_timer.is_canceled(), 2.0)  # fired once, then disarmed
    assert gp._windows_learned > 0 and gp.predictor.stats()["n_online"] == gp._windows_learned
