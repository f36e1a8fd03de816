import numpy as np

from intent_perf_ros.core.validation import HumanSanitizer


def test_rules_drop_repair_deduplicate_and_cap():
    ids = np.array([1, 2, 3, 2, 4, 5], dtype=np.int64)
    xy = np.array([[0, 0], [np.nan, 1], [1, 1], [2, 2], [3, 3], [4, 4]], dtype=float)
    vxy = np.array([[0, 0], [0, 0], [np.inf, 0], [1, 1], [0, 0], [0, 0]], dtype=float)
    n, dropped, repaired = HumanSanitizer(capacity=3).apply(ids, xy, vxy, 6)
    # id 2's first entry has a NaN position (dropped), its second wins; id 3's velocity repaired;
    # capacity 3 keeps 1, 3, 2 and drops 4 and 5.
    assert (n, dropped, repaired) == (3, 3, 1)
    np.testing.assert_array_equal(ids[:3], [1, 3, 2])
    np.testing.assert_array_equal(vxy[1], [0.0, 0.0])
    np.testing.assert_array_equal(xy[2], [2.0, 2.0])
    assert np.isfinite(xy[:n]).all() and np.isfinite(vxy[:n]).all()


def test_repeated_id_keeps_the_last_entry():
    ids = np.array([7, 7, 7], dtype=np.int64)
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    n, dropped, _ = HumanSanitizer(capacity=8).apply(ids, xy, np.zeros((3, 2)), 3)
    assert (n, dropped) == (1, 2)
    np.testing.assert_array_equal(xy[0], [2.0, 2.0])


def test_shards_partition_the_humans():
    ids = np.arange(100, dtype=np.int64)
    kept = []
    for shard in range(3):
        mine = ids.copy()
        n, dropped, _ = HumanSanitizer(capacity=100, shard_index=shard, shard_count=3).apply(
            mine, np.zeros((100, 2)), np.zeros((100, 2)), 100)
        assert dropped == 0
        kept.extend(mine[:n])
    assert sorted(kept) == list(range(100))  # every human in exactly one shard


def test_stamp_rules():
    from intent_perf_ros.core.validation import StampCheck

    check = StampCheck(max_future_s=0.5, max_age_s=2.0)
    assert check.check(100.0, 100.1) == (StampCheck.OK, 100.0)
    assert check.check(100.0, 100.2)[0] == StampCheck.OUT_OF_ORDER  # same stamp: zero time step
    assert check.check(99.0, 100.2)[0] == StampCheck.OUT_OF_ORDER
    assert check.check(101.0, 100.2)[0] == StampCheck.FUTURE
    assert check.check(97.0, 100.2)[0] == StampCheck.STALE
    assert check.check(0.0, 100.3) == (StampCheck.REPAIRED, 100.3)
    assert check.check(100.4, 100.4) == (StampCheck.OK, 100.4)
