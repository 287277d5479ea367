"""The consumer-group loop: Kafka records -> user hints -> the coalescing queue -> committed offsets.

Offsets are committed per partition only up to the oldest record whose applies have not all succeeded
(invariant 3, docs/ARCHITECTURE.md). On revocation the revoked partitions' in-flight work is finished and committed first; on stop
the queue drains and the final offsets are committed. Bad messages go to the dead-letter topic (invariant 8).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from reconciler.base.config import Settings
from reconciler.base.errors import Component
from reconciler.clients.kafka import DeadLetters, client_options, kafka_boundary, stop_quietly
from reconciler.domain.events import (
    OrganizationHint,
    ParseResult,
    UserHint,
    parse_record,
    published_after_commit,
)
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger
from reconciler.observability.monitor import FailureMonitor
from reconciler.sources.cdc import ChangeSource
from reconciler.sources.offsets import OffsetTracker, PartitionOffsets
from reconciler.sources.organizations import OrganizationHints
from reconciler.sources.workqueue import CoalescingQueue

log = get_logger(__name__)


class EventConsumer:
    """Runs the event path until `stop` is set, feeding `queue` (started by its owner; it owns retries).
    On stop the queue is drained, so that what was applied is committed."""

    def __init__(
        self,
        settings: Settings,
        queue: CoalescingQueue[UserHint],
        realms: frozenset[str],
        monitor: FailureMonitor | None = None,
        changes: ChangeSource | None = None,
        organizations: OrganizationHints | None = None,
    ) -> None:
        self._settings = settings
        self._monitor = monitor
        self._changes = changes
        self._organizations = organizations  # ORGANIZATIONS_ENABLED: organization events hint their members
        self._expanding: set[asyncio.Task[int]] = set()
        self._topics = settings.consumed_topics if changes is not None else settings.event_topics
        self._realms = realms
        self._queue = queue
        self._offsets = OffsetTracker()
        self._dead_letters = DeadLetters(settings)
        self._consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=settings.kafka_group_id,
            group_instance_id=settings.kafka_group_instance_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.consumer_start_offset,
            max_poll_records=settings.consumer_max_poll_records,
            session_timeout_ms=int(settings.consumer_session_timeout_s * 1000),
        )
        self._paused = False
        self.pauses = 0  # times fetching was paused because too much was pending
        self._last_commit = 0.0
        # per partition: the offset after the last record read (with the highwater: the unread backlog)
        self._next_offsets: dict[TopicPartition, int] = {}
        # records read, and hints they gave: a topic shared with other realms (or full of ignored events)
        # holds far fewer of our users per unread record than one that is all ours
        self._records_read = 0
        self._hints_read = 0
        # readiness: the group has assigned us (possibly zero) partitions and their positions are known
        self.joined = False
        self._unpositioned: set[TopicPartition] | None = None
        self.last_progress = time.monotonic()  # liveness: the poll loop is turning

    def assignment(self) -> set[TopicPartition]:
        """The partitions this member holds now."""
        return set(self._consumer.assignment())

    @property
    def queue(self) -> CoalescingQueue[UserHint]:
        return self._queue

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`, then drain the queue and commit. A Kafka failure is raised as the error
        model's `KafkaFailure` with both clients closed; the queue then goes on (the sweep may feed it) and
        the records in flight are redelivered to the next consumer (nothing past them was committed)."""
        producer = self._dead_letters.producer
        try:
            with kafka_boundary(self._settings):
                await producer.start()
                await self._consumer.start()
                await self._consume(stop)
                log.info("consumer stopping: draining in-flight work", pending_users=len(self._queue))
                await self._queue.close(drain=True, timeout_s=self._settings.consumer_drain_timeout_s)
                await self._commit(force=True)
        finally:
            for task in self._expanding:  # not done, so their records were not committed: redelivered
                task.cancel()
            if stop.is_set():
                await self._queue.close(drain=False)
            await stop_quietly(self._consumer)
            await stop_quietly(producer)
            log.info("consumer stopped")

    async def _consume(self, stop: asyncio.Event) -> None:
        self._consumer.subscribe(self._topics, listener=_Rebalance(self))
        log.info("consumer started", topics=self._topics, group=self._settings.kafka_group_id)
        while not stop.is_set():
            await self._resolve_positions()
            self._apply_backpressure()
            batches = await self._consumer.getmany(
                timeout_ms=200, max_records=self._settings.consumer_max_poll_records
            )
            for records in batches.values():
                for record in records:
                    await self._handle(record)
            if batches:
                self._reachable()
            await self._commit(force=False)
            self._update_lag()
            await self._probe_if_failing()
            self.last_progress = time.monotonic()

    def unread_records(self) -> int:
        """Records in the assigned partitions not fetched yet (the backlog a burst decision looks at)."""
        unread = 0
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            position = self._next_offsets.get(tp)
            if highwater is not None and position is not None:
                unread += max(0, highwater - position)
        return unread

    def waiting_users(self) -> float:
        """Distinct users waiting: those queued, plus the unread records at the distinct users per record
        read so far (see `expected_waiting`)."""
        return expected_waiting(
            queued=len(self._queue),
            unread_records=self.unread_records(),
            records_read=self._records_read,
            hints_read=self._hints_read,
            distinct_share=self._queue.distinct_share,
        )

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._next_offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        offsets = self._offsets.partition(record.topic, record.partition)
        result = self._parse(record)
        self._records_read += 1
        self._hints_read += len(result.hints) + (result.organization is not None)
        if result.invalid is not None:
            await self._dead_letters.publish(record, result.invalid, result.detail or "")
            metrics.EVENTS.labels(topic=record.topic, outcome="dead_lettered").inc()
            offsets.track(record.offset, parts=0)
            return
        if result.organization is not None and self._organizations is not None:
            self._expand(record, offsets, self._organizations, result.organization)
            return
        if not result.hints:
            metrics.EVENTS.labels(topic=record.topic, outcome=f"ignored_{result.ignored or 'other'}").inc()
            offsets.track(record.offset, parts=0)
            return
        metrics.EVENTS.labels(topic=record.topic, outcome="hinted").inc()
        offsets.track(record.offset, parts=len(result.hints))
        received_at = datetime.now(UTC)
        for hint in result.hints:
            hint = dataclasses.replace(hint, received_at=received_at)
            await self._queue.submit(hint.user_id, hint, _done(offsets, record.offset))

    def _expand(
        self,
        record: ConsumerRecord[bytes, bytes],
        offsets: PartitionOffsets,
        organizations: OrganizationHints,
        hint: OrganizationHint,
    ) -> None:
        """An organization event names no user: its members are found (store, Keycloak) in a task of their
        own, so the poll loop goes on, and the record is done once every member's hint was applied."""
        metrics.EVENTS.labels(topic=record.topic, outcome="hinted").inc()
        offsets.track(record.offset, parts=1)
        task = asyncio.create_task(
            organizations.submit(
                hint,
                self._queue,
                _done(offsets, record.offset),
                after_commit=published_after_commit(record.headers),
                received_at=datetime.now(UTC),
            ),
            name="organization-members",
        )
        self._expanding.add(task)
        task.add_done_callback(self._expanding.discard)

    def _parse(self, record: ConsumerRecord[bytes, bytes]) -> ParseResult:
        """A change record (CDC) or an event, by its topic: both become the same user hints."""
        if self._changes is not None and record.topic in self._changes.topics:
            return self._changes.parse(
                record.topic, record.key, record.value, partition=record.partition, offset=record.offset
            )
        return parse_record(
            record.value,
            realms=self._realms,
            headers=record.headers,
            organizations=self._organizations is not None,
        )

    async def _resolve_positions(self) -> None:
        """Fix where newly assigned partitions start (committed offset, or CONSUMER_START_OFFSET for a new
        group) before saying ready: with `latest`, an event made after readiness is never skipped."""
        if self._unpositioned is None:
            return
        for tp in self._unpositioned & self._consumer.assignment():
            await self._consumer.position(tp)
        self._unpositioned = None
        self.joined = True

    def _apply_backpressure(self) -> None:
        """Pause fetching while too much is pending, so memory stays bounded and polling never starves."""
        limit = self._settings.consumer_max_pending_users
        pending = max(len(self._queue), self._offsets.pending_records() // 4)
        assignment = self._consumer.assignment()
        if not self._paused and pending >= limit and assignment:
            self._consumer.pause(*assignment)
            self._paused = True
            self.pauses += 1
            log.info("partitions paused: queue full", pending_users=len(self._queue))
        elif self._paused and pending <= limit // 2:  # (<=: a limit of 1 resumes once empty)
            self._consumer.resume(*assignment)
            self._paused = False
            log.info("partitions resumed", pending_users=len(self._queue))

    async def _commit(self, force: bool, only: set[tuple[str, int]] | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < self._settings.consumer_commit_interval_s:
            return
        moves = self._offsets.to_commit()
        if only is not None:
            moves = {key: point for key, point in moves.items() if key in only}
        if not moves:
            self._last_commit = now
            return
        try:
            await self._consumer.commit(
                {
                    TopicPartition(topic, part): OffsetAndMetadata(point, "")
                    for (topic, part), point in moves.items()
                }
            )
        except (CommitFailedError, KafkaError) as error:
            # A rebalance is under way or the broker is away: the same offsets are committed next time.
            log.warning("offset commit failed; will retry", error=str(error))
            return
        self._offsets.mark_committed(moves)
        self._last_commit = now
        self._reachable()
        log.debug("offsets committed", offsets={f"{t}/{p}": o for (t, p), o in moves.items()})

    def _reachable(self) -> None:
        """The broker answered (records fetched, offsets committed): a Kafka failure is over."""
        if self._monitor is not None:
            self._monitor.succeeded(Component.KAFKA)

    async def _probe_if_failing(self) -> None:
        """While the monitor has Kafka failing, probe it now and then (the monitor spaces the probes), so
        that the failure clears in a quiet group too, also without a readiness endpoint."""
        if self._monitor is not None and self._monitor.failing(Component.KAFKA) is not None:
            await self._monitor.readiness(Component.KAFKA)

    def _update_lag(self) -> None:
        for (topic, part), offsets in self._offsets.items():
            highwater = self._consumer.highwater(TopicPartition(topic, part))
            point = offsets.commit_point()
            if highwater is not None and point is not None:
                metrics.CONSUMER_LAG.labels(topic=topic, partition=str(part)).set(max(0, highwater - point))
            metrics.CONSUMER_LAG_SECONDS.labels(topic=topic, partition=str(part)).set(
                offsets.oldest_pending_age_s()
            )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the revoked partitions' in-flight records and commit them before another member takes over."""
        keys = {(tp.topic, tp.partition) for tp in revoked}
        deadline = time.monotonic() + self._settings.consumer_drain_timeout_s
        # Records finish in the worker tasks; a short poll with a deadline is the simplest wait here.
        while self._offsets.pending_in(keys) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self._offsets.pending_in(keys):
            log.warning("revoked partitions not drained in time; their records will be redelivered")
        await self._commit(force=True, only=keys)
        for topic, part in keys:
            self._offsets.forget(topic, part)
            self._next_offsets.pop(TopicPartition(topic, part), None)
        if keys:
            log.info("partitions revoked", partitions=sorted(f"{t}/{p}" for t, p in keys))

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._unpositioned = set(assigned)
        self._paused = False  # a new assignment starts unpaused
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


def _done(offsets: PartitionOffsets, offset: int) -> Callable[[], None]:
    return lambda: offsets.done(offset)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: EventConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner.on_assigned(set(assigned))


def expected_waiting(
    *, queued: int, unread_records: int, records_read: int, hints_read: int, distinct_share: float
) -> float:
    """Distinct users waiting on the event path: those queued, plus the unread records times the hints a
    record has given so far (records of other realms, ignored events and bad records give none; one hint a
    record before any was read) times the share of hints that named a user not already waiting."""
    hints_per_record = hints_read / records_read if records_read else 1.0
    return queued + unread_records * hints_per_record * distinct_share
