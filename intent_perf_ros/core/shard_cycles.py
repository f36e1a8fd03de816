"""Merging sharded streams: the per-shard messages of one observation, collected until all are in.

Apart from ``sharding`` (the id hash, a numba kernel) so that mpc_node, which only merges, need not
load numba (``core.aot``).
"""
from __future__ import annotations


class ShardCycles:
    """Collects the per-shard messages of one observation (same stamp) until all shards are in.

    A cycle completes when ``shard_count`` distinct shards delivered its stamp. Older incomplete
    cycles are abandoned when a newer one completes (a shard lost a message or died), and counted.
    """

    def __init__(self, shard_count: int, max_pending: int = 16) -> None:
        if shard_count < 1:
            raise ValueError(f"shard_count must be >= 1, got {shard_count}")
        self.shard_count = shard_count
        self.max_pending = max_pending
        self._pending: dict[int, dict[int, object]] = {}
        self.abandoned = 0

    def add(self, stamp_ns: int, shard_index: int, item: object) -> list[object] | None:
        """Add one shard's item; returns the cycle's items (shard order) once complete, else None."""
        if not 0 <= shard_index < self.shard_count:
            raise ValueError(f"shard_index {shard_index} outside [0, {self.shard_count})")
        cycle = self._pending.setdefault(stamp_ns, {})
        cycle[shard_index] = item
        if len(cycle) < self.shard_count:
            if len(self._pending) > self.max_pending:
                del self._pending[min(self._pending)]
                self.abandoned += 1
            return None
        del self._pending[stamp_ns]
        for old in [s for s in self._pending if s < stamp_ns]:
            del self._pending[old]
            self.abandoned += 1
        return [cycle[i] for i in range(self.shard_count)]
