import numpy as np
import pytest

from intent_perf_ros.core.shard_cycles import ShardCycles
from intent_perf_ros.core.sharding import shard_of


def test_hash_is_balanced():
    counts = np.bincount(np.array([shard_of(i, 3) for i in range(3000)], dtype=np.int64), minlength=3)
    assert counts.min() > 900  # consecutive ids spread evenly (round-robin would be exact; a bad mix is not)
    assert all(shard_of(i, 1) == 0 for i in range(10))


def test_hash_matches_reference_splitmix64():
    def splitmix64(x: int) -> int:
        mask = (1 << 64) - 1
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    for i in (0, 1, 2, 17, 123456, 2**31 - 1):
        assert shard_of(i, 7) == splitmix64(i) % 7


def test_cycle_completes_when_every_shard_delivered():
    cycles = ShardCycles(3)
    assert cycles.add(10, 0, "a") is None
    assert cycles.add(10, 2, "c") is None
    assert cycles.add(10, 1, "b") == ["a", "b", "c"]


def test_incomplete_older_cycle_is_abandoned():
    cycles = ShardCycles(2)
    assert cycles.add(10, 0, "old") is None
    assert cycles.add(20, 0, "x") is None
    assert cycles.add(20, 1, "y") == ["x", "y"]
    assert cycles.abandoned == 1
    with pytest.raises(ValueError):
        cycles.add(30, 2, "bad")
