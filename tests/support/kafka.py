"""Test-side Kafka helpers: watch a topic from its current end, publish raw messages."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from tests.support.kafka_clients import connection


class TopicWatcher:
    """Reads every partition of a topic from the end offsets taken at start (no consumer group)."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.seen: list[ConsumerRecord[bytes, bytes]] = []
        self._returned = 0

    async def next_record(self, timeout_s: float = 15.0) -> ConsumerRecord[bytes, bytes]:
        """The next record not yet returned by this method, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self._returned >= len(self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no further record within {timeout_s}s")
            batches = await self._consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                self.seen.extend(records)
        self._returned += 1
        return self.seen[self._returned - 1]

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 15.0
    ) -> dict[str, Any]:
        """The first JSON message (already seen or arriving before the deadline) for which `match` holds."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for record in self.seen[checked:]:
                checked += 1
                try:
                    message = json.loads(record.value or b"null")
                except ValueError:
                    continue
                if isinstance(message, dict) and match(message):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching message within {timeout_s}s among {len(self.seen)} seen")
            batches = await self._consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000))
            for records in batches.values():
                self.seen.extend(records)


@asynccontextmanager
async def watch_topic(bootstrap: str, topic: str) -> AsyncIterator[TopicWatcher]:
    # Without a group, a subscription is assigned every partition of the topic by the client itself.
    consumer = AIOKafkaConsumer(topic, **connection(bootstrap), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + 15
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"topic {topic} has no partitions (is the stack up?)"
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        await consumer.seek_to_end(*partitions)
        for partition in partitions:  # resolve the end positions now, before the caller acts
            await consumer.position(partition)
        yield TopicWatcher(consumer)
    finally:
        await consumer.stop()


async def publish(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(**connection(bootstrap), acks="all", linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(topic, value, key=key) for value in values]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()
