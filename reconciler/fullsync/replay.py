"""Rebuild the store from the event topics: the distinct users the events name, then a full reconcile.

The full reconcile (the default) lists every user and confirms every active local user it did not list, so
it reads each named user at a page's cost: replay looks none of them up one by one (Keycloak requests:
the realm's pages plus the confirmations). With `--no-reconcile` each distinct user is looked up once.

Replay reads every partition from the beginning (or from a timestamp) up to the end offsets taken when it
starts, without a consumer group, so the live group's committed offsets are untouched. It keeps only the
set of distinct user ids, so its cost grows with distinct users, not with events. Every write is the same
guarded, idempotent apply as the other paths, so a replay is safe to run twice, or beside the live group.
Invalid messages are counted, not dead-lettered (the live consumer did that already).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from reconciler.apply.applier import Applier, ApplyResult, batched
from reconciler.base.config import Settings
from reconciler.clients.kafka import client_options, connect_with_retries, started
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.events import accepted_realms, parse_record
from reconciler.domain.models import SyncedBy
from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import ApplyPolicy
from reconciler.fullsync.reconcile import FullReconcile, ProgressCallback, RunSummary
from reconciler.observability.logs import get_logger

log = get_logger(__name__)

ReplayProgress = Callable[[str, int, int | None], None]  # phase, done, total


@dataclass(slots=True)
class ReplaySummary:
    events_read: int = 0
    hints: int = 0
    distinct_users: int = 0
    lookups: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # ignored_* / invalid_* counts
    applied: ApplyResult = field(default_factory=ApplyResult)
    duration_s: float = 0.0
    reconcile: RunSummary | None = None

    @property
    def outcome(self) -> Outcome:
        return Outcome.SUCCESS if self.reconcile is None else self.reconcile.outcome

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "events_read": self.events_read,
            "hints": self.hints,
            "distinct_users": self.distinct_users,
            "lookups": self.lookups,
            **self.applied.as_dict(),
            "messages": dict(self.outcomes),
            "duration_s": round(self.duration_s, 3),
            "reconcile": self.reconcile.to_dict() if self.reconcile else None,
        }


async def collect_user_ids(
    settings: Settings,
    topics: list[str],
    *,
    since: datetime | None = None,
    progress: ReplayProgress | None = None,
    summary: ReplaySummary,
) -> set[str]:
    """Read the topics up to their end offsets at start; return the distinct user ids they hint at."""
    realms = accepted_realms(settings.keycloak_realm)
    await connect_with_retries(settings, topics)  # an outage is tried again, a refusal ends the command
    user_ids: set[str] = set()
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    async with started(consumer, settings):
        partitions = await topic_partitions(settings, topics)
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        start = await _start_offsets(consumer, partitions, since)
        for tp in partitions:  # explicit positions: no reliance on lazy offset resets
            consumer.seek(tp, start[tp])
        total = sum(max(0, end[tp] - start[tp]) for tp in partitions)
        remaining = {tp for tp in partitions if start[tp] < end[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= end[tp]:
                        break
                    _tally(record.value, realms, summary, user_ids)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if progress:
                progress("reading", summary.events_read, total)
    summary.distinct_users = len(user_ids)
    return user_ids


def _tally(value: bytes | None, realms: frozenset[str], summary: ReplaySummary, user_ids: set[str]) -> None:
    summary.events_read += 1
    result = parse_record(value, realms=realms)
    if result.invalid is not None:
        summary.outcomes[f"invalid_{result.invalid}"] += 1
    elif not result.hints:
        summary.outcomes[f"ignored_{result.ignored}"] += 1
    for hint in result.hints:
        summary.hints += 1
        user_ids.add(hint.user_id)


async def topic_partitions(settings: Settings, topics: list[str]) -> list[TopicPartition]:
    """Every partition of the topics; a topic that does not exist is a usage error (ValueError)."""
    async with started(AIOKafkaAdminClient(**client_options(settings)), settings) as admin:
        described = await admin.describe_topics(topics)
    partitions: list[TopicPartition] = []
    for topic in described:
        if topic.get("error_code") or not topic.get("partitions"):
            raise ValueError(f"topic {topic.get('topic')!r} not found on {settings.kafka_bootstrap_servers}")
        partitions += [TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]]
    return sorted(partitions)


async def _start_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None
) -> dict[TopicPartition, int]:
    """Where each partition's replay starts: its beginning, or the first offset at or after `since`."""
    beginning: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    if since is None:
        return beginning
    found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    end: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    # No record at or after `since` in a partition: nothing to read there.
    return {tp: found[tp].offset if found.get(tp) is not None else end[tp] for tp in partitions}


async def _look_up(
    settings: Settings,
    store: UserStore,
    keycloak: KeycloakAdminClient,
    user_ids: list[str],
    summary: ReplaySummary,
    progress: ReplayProgress | None,
) -> None:
    """Without the full reconcile: each distinct user read once (GET) and applied."""
    applier = Applier(store, keycloak, settings)
    policy = ApplyPolicy.event(synced_by=SyncedBy.REPLAY)
    for ids in batched(user_ids, applier.batch_size):
        summary.applied.add(await applier.observe_and_apply(ids, policy))
        summary.lookups += len(ids)
        if progress:
            progress("applying", summary.lookups, len(user_ids))
    log.info("replay: users applied", lookups=summary.lookups, **summary.applied.as_dict())


async def replay(
    settings: Settings,
    store: UserStore,
    keycloak: KeycloakAdminClient,
    *,
    topics: list[str] | None = None,
    since: datetime | None = None,
    reconcile_after: bool = True,
    allow_mass_deactivation: bool = False,
    progress: ReplayProgress | None = None,
    reconcile_progress: ProgressCallback | None = None,
) -> ReplaySummary:
    """The whole replay: collect ids, then a full reconcile (default) or one lookup and apply per user."""
    started = time.monotonic()
    summary = ReplaySummary()
    await store.ensure_indexes()
    user_ids = sorted(
        await collect_user_ids(
            settings, topics or settings.event_topics, since=since, progress=progress, summary=summary
        )
    )
    log.info("replay: topics read", events=summary.events_read, distinct_users=len(user_ids), topics=topics)
    if reconcile_after:
        # The full reconcile reads every user Keycloak lists and confirms each active local user it does not
        # list: it covers every user the events named, at a page's cost instead of a GET per user.
        log.info("replay: the full reconcile reads the users", distinct_users=len(user_ids))
        summary.reconcile = await FullReconcile(settings, store, keycloak).run(
            allow_mass_deactivation=allow_mass_deactivation, progress=reconcile_progress
        )
    else:
        await _look_up(settings, store, keycloak, user_ids, summary, progress)
    summary.duration_s = time.monotonic() - started
    return summary
