import numpy as np
import pytest

from intent_perf_ros.core.tracks import TrackHistory


def straight_line(t: float, speed: np.ndarray, origin: np.ndarray) -> np.ndarray:
    return origin + speed * t


def test_history_resamples_a_straight_walk_exactly():
    speed, origin = np.array([1.2, -0.4]), np.array([3.0, 1.0])
    tracks = TrackHistory(capacity=4, obs_steps=8, step_dt=0.4)
    ids = np.array([5])
    for k in range(200):  # 30 Hz for 6.6 s
        t = k / 30.0
        tracks.observe(t, ids, straight_line(t, speed, origin)[None], 1)
    out = np.zeros((1, 8, 2))
    tracks.history(np.array([speed]), 1, out)
    t_last = 199 / 30.0
    expected = np.array([straight_line(t_last - 0.4 * (7 - k), speed, origin) for k in range(8)])
    np.testing.assert_allclose(out[0], expected, atol=1e-9)


def test_new_track_is_extrapolated_backwards_with_its_velocity():
    tracks = TrackHistory(capacity=2, obs_steps=4, step_dt=0.5)
    tracks.observe(10.0, np.array([1]), np.array([[2.0, 2.0]]), 1)
    out = np.zeros((1, 4, 2))
    tracks.history(np.array([[1.0, 0.0]]), 1, out)
    np.testing.assert_allclose(out[0, :, 0], [0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(out[0, :, 1], 2.0)


def test_completed_windows_are_the_track_on_the_time_grid():
    tracks = TrackHistory(capacity=2, obs_steps=2, step_dt=0.5, window=4)
    ids = np.array([3])
    for k in range(61):  # 10 Hz for 6 s, x = t
        t = k / 10.0
        tracks.observe(t, ids, np.array([[t, 0.0]]), 1)
    windows = tracks.take_windows()
    assert len(windows) > 0
    np.testing.assert_allclose(np.diff(windows[:, :, 0], axis=1), 0.5, atol=1e-9)  # grid spacing
    np.testing.assert_allclose(windows[:, 0, 0] % 0.5, 0.0, atol=1e-9)
    assert len(tracks.take_windows()) == 0  # taken once


def test_full_pool_evicts_the_stalest_track_and_timeouts_free_slots():
    tracks = TrackHistory(capacity=2, obs_steps=2, step_dt=0.4, timeout_s=1.0)
    xy = np.zeros((1, 2))
    tracks.observe(0.0, np.array([1]), xy, 1)
    tracks.observe(0.1, np.array([2]), xy, 1)
    tracks.observe(0.2, np.array([3]), xy, 1)  # pool full: id 1 (seen longest ago) goes
    assert tracks.evictions == 1 and len(tracks) == 2
    tracks.observe(5.0, np.array([4]), xy, 1)  # 2 and 3 timed out
    assert tracks.timeouts == 2 and len(tracks) == 1


def test_out_of_order_observation_is_ignored_but_counted():
    tracks = TrackHistory(capacity=2, obs_steps=2, step_dt=0.4)
    tracks.observe(1.0, np.array([1]), np.array([[1.0, 0.0]]), 1)
    tracks.observe(0.5, np.array([1]), np.array([[9.0, 9.0]]), 1)
    out = np.zeros((1, 2, 2))
    tracks.history(np.zeros((1, 2)), 1, out)
    assert tracks.out_of_order == 1
    np.testing.assert_allclose(out[0, -1], [1.0, 0.0])


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        TrackHistory(step_dt=0.0)


def test_an_id_that_jumps_starts_a_new_history():
    tracks = TrackHistory(capacity=2, obs_steps=3, step_dt=0.5, max_speed=4.0)
    ids = np.array([1])
    for k in range(10):
        tracks.observe(k * 0.1, ids, np.array([[k * 0.1, 0.0]]), 1)
    tracks.observe(1.0, ids, np.array([[50.0, 50.0]]), 1)  # 70 m in 0.1 s: another person
    out = np.zeros((1, 3, 2))
    tracks.history(np.zeros((1, 2)), 1, out)
    assert tracks.jumps == 1
    np.testing.assert_allclose(out[0], [[50.0, 50.0]] * 3)  # no mixing with the old track


def test_new_ids_of_one_message_never_evict_each_other():
    """Pool of 2 full of ids 1 and 2; one message brings 3 and 4: each evicts one old track, and 3's fresh
    slot (never seen, the stalest of all) is not taken by 4."""
    tracks = TrackHistory(capacity=2, obs_steps=2, step_dt=0.4)
    tracks.observe(0.0, np.array([1, 2]), np.array([[0.0, 0.0], [5.0, 5.0]]), 2)
    tracks.observe(0.1, np.array([3, 4]), np.array([[1.0, 1.0], [2.0, 2.0]]), 2)
    assert tracks.evictions == 2 and len(tracks) == 2
    out = np.zeros((2, 2, 2))
    tracks.history(np.zeros((2, 2)), 2, out)
    np.testing.assert_allclose(out[:, -1], [[1.0, 1.0], [2.0, 2.0]])  # each its own, single observation
    tracks.observe(0.2, np.array([4, 3]), np.array([[2.5, 2.0], [1.5, 1.0]]), 2)  # known ids: no eviction
    assert tracks.evictions == 2
    tracks.history(np.zeros((2, 2)), 2, out)
    np.testing.assert_allclose(out[:, -1], [[2.5, 2.0], [1.5, 1.0]])


def test_observe_rejects_more_humans_than_slots():
    tracks = TrackHistory(capacity=2, obs_steps=2, step_dt=0.4)
    with pytest.raises(ValueError, match="capacity"):
        tracks.observe(0.0, np.arange(3), np.zeros((3, 2)), 3)
