"""Test-side Kafka bookkeeping: topics, end offsets, a consumer group's committed offsets, reading ranges.

Uses plain aiokafka clients without a group (except to seed a group's starting offsets), so reading never
disturbs the group under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from tests.support.kafka_clients import connection

Offsets = dict[TopicPartition, int]


async def create_topics(
    bootstrap: str, topics: Mapping[str, int], configs: Mapping[str, str] | None = None
) -> None:
    """Create topics (name -> partitions) unless they exist, with optional topic configs."""
    admin = AIOKafkaAdminClient(**connection(bootstrap))
    await admin.start()
    try:
        for name, partitions in topics.items():
            try:
                await admin.create_topics(
                    [NewTopic(name, partitions, 1, topic_configs=dict(configs or {}))], timeout_ms=30_000
                )
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    # Metadata propagates asynchronously: wait until every partition is visible.
    await end_offsets(bootstrap, topics, expect_partitions=topics)


async def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    admin = AIOKafkaAdminClient(**connection(bootstrap))
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


async def end_offsets(
    bootstrap: str, topics: Iterable[str], *, expect_partitions: Mapping[str, int] | None = None
) -> Offsets:
    """The current end offset (next offset to be written) of every partition of `topics`."""
    consumer = AIOKafkaConsumer(**connection(bootstrap), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            counts = {t: sum(1 for tp in partitions if tp.topic == t) for t in topics}
            complete = all(counts[t] > 0 for t in counts) and all(
                counts.get(t, 0) >= n for t, n in (expect_partitions or {}).items()
            )
            if complete:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"topics {sorted(topics)} have no partitions (seen {counts})")
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str) -> Offsets:
    """The group's committed offsets (partitions without a commit are absent)."""
    admin = AIOKafkaAdminClient(**connection(bootstrap))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}


async def seed_group_offsets(bootstrap: str, group: str, offsets: Offsets) -> None:
    """Commit `offsets` for a group that has no members yet, so it starts reading there (not at offset 0)."""
    consumer = AIOKafkaConsumer(**connection(bootstrap), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        await consumer.stop()


class PartitionReader:
    """Reads records of several partitions by offset range, remembering what it has read already."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._records: dict[TopicPartition, dict[int, ConsumerRecord[bytes, bytes]]] = {}
        self._span: dict[TopicPartition, tuple[int, int]] = {}  # offsets [from, until) read completely

    async def __aenter__(self) -> PartitionReader:
        self._consumer = AIOKafkaConsumer(
            **connection(self._bootstrap),
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def read(
        self, ranges: Mapping[TopicPartition, tuple[int, int]], timeout_s: float = 60
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """All records with start <= offset < end of each partition (transaction markers leave gaps)."""
        assert self._consumer is not None
        consumer = self._consumer
        wanted = {tp: (start, end) for tp, (start, end) in ranges.items() if end > start}
        todo: dict[TopicPartition, tuple[int, int]] = {}
        for tp, (start, end) in wanted.items():
            span = self._span.get(tp)
            if span is None or start < span[0]:
                self._records[tp], self._span[tp] = {}, (start, start)
                todo[tp] = (start, end)
            elif end > span[1]:
                todo[tp] = (span[1], end)
        if todo:
            consumer.assign(list(todo))
            for tp, (start, _) in todo.items():
                consumer.seek(tp, start)
            deadline = time.monotonic() + timeout_s
            while todo:
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not read {todo} within {timeout_s}s")
                batches = await consumer.getmany(*todo, timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        self._records[tp][record.offset] = record
                for tp in list(todo):
                    position = await consumer.position(tp)
                    self._span[tp] = (self._span[tp][0], max(self._span[tp][1], min(position, todo[tp][1])))
                    if position >= todo[tp][1]:
                        del todo[tp]
        out: list[ConsumerRecord[bytes, bytes]] = []
        for tp, (start, end) in wanted.items():
            records = self._records[tp]
            out.extend(records[o] for o in range(start, end) if o in records)
        return out
