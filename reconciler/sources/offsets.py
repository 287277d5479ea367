"""Which Kafka offsets may be committed: per partition, everything below the oldest record not yet done.

Records finish out of order (users are applied concurrently); a partition's commit point only moves past a
record once it and every record before it are done. That is what makes a crash lose nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class PartitionOffsets:
    """Pending records of one partition, in offset order."""

    pending: OrderedDict[int, int] = field(default_factory=OrderedDict)  # offset -> outstanding parts
    received_at: dict[int, float] = field(default_factory=dict)
    next_offset: int | None = None  # one past the highest offset seen
    committed: int | None = None  # the last offset committed to Kafka

    def track(self, offset: int, parts: int) -> None:
        """A record arrived; it is done after `parts` calls to `done` (0: done already)."""
        if parts > 0:
            self.pending[offset] = parts
            self.received_at[offset] = time.monotonic()
        self.next_offset = offset + 1 if self.next_offset is None else max(self.next_offset, offset + 1)

    def done(self, offset: int) -> None:
        parts = self.pending.get(offset)
        if parts is None:
            return
        if parts <= 1:
            del self.pending[offset]
            self.received_at.pop(offset, None)
        else:
            self.pending[offset] = parts - 1

    def commit_point(self) -> int | None:
        """The offset to commit (Kafka's "next record to read"), or None when nothing was seen."""
        if self.pending:
            return next(iter(self.pending))
        return self.next_offset

    def oldest_pending_age_s(self) -> float:
        if not self.pending:
            return 0.0
        return time.monotonic() - self.received_at[next(iter(self.pending))]


class OffsetTracker:
    """Commit points of every assigned partition, keyed by (topic, partition)."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], PartitionOffsets] = {}

    def partition(self, topic: str, partition: int) -> PartitionOffsets:
        key = (topic, partition)
        if key not in self._partitions:
            self._partitions[key] = PartitionOffsets()
        return self._partitions[key]

    def forget(self, topic: str, partition: int) -> None:
        self._partitions.pop((topic, partition), None)

    def pending_records(self) -> int:
        return sum(len(p.pending) for p in self._partitions.values())

    def pending_in(self, keys: set[tuple[str, int]]) -> int:
        return sum(len(p.pending) for key, p in self._partitions.items() if key in keys)

    def to_commit(self) -> dict[tuple[str, int], int]:
        """Partitions whose commit point moved since the last commit."""
        moves: dict[tuple[str, int], int] = {}
        for key, offsets in self._partitions.items():
            point = offsets.commit_point()
            if point is not None and point != offsets.committed:
                moves[key] = point
        return moves

    def mark_committed(self, moves: dict[tuple[str, int], int]) -> None:
        for key, point in moves.items():
            if key in self._partitions:
                self._partitions[key].committed = point

    def items(self) -> list[tuple[tuple[str, int], PartitionOffsets]]:
        return list(self._partitions.items())
