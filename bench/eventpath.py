"""Event-path and replay benchmarks: admin events published straight to dedicated topics, consumed by the
real `Service` (consumer and scheduler, so that bursts can take the listing road) in a fresh process, users
read from the real Keycloak.

The publisher runs in the orchestrator and the consumer in its own process, so the consumer's peak RSS is
its own. Event-to-done time is exact per event: the job wraps the event path's worker
(`hint_apply.HintApplier`), and each hint counts when the worker is done with it: its user applied and
written, or covered by a full reconcile that wrote the user (the listing road for bursts).
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient, UpdateOne

from bench import cpu, seed
from bench.env import make_settings, stack_env
from bench.measure import Stopwatch, install_store_counter, keycloak_requests
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.document import F
from reconciler.domain.events import AFTER_COMMIT, PUBLISHED_HEADER, UserHint
from reconciler.fullsync.reconcile import FullReconcile
from reconciler.fullsync.replay import replay
from reconciler.observability import metrics
from reconciler.service import Service
from reconciler.sources import hint_apply, workqueue
from tests.support import kafka_offsets

Spec = dict[str, Any]
PARTITIONS = 3  # as the stack's event topics


def admin_event(realm: str, user_id: str, time_ms: int) -> bytes:
    """A USER UPDATE admin event as the Keycloak Kafka providers serialise Keycloak's AdminEvent."""
    event = {
        "@class": "org.keycloak.events.admin.AdminEvent",
        "time": time_ms,
        "realmId": realm,
        "authDetails": {
            "realmId": "master",
            "clientId": "admin-cli",
            "userId": "00000000-0000-4000-8000-000000000001",
            "ipAddress": "127.0.0.1",
        },
        "resourceType": "USER",
        "operationType": "UPDATE",
        "resourcePath": f"users/{user_id}",
        "representation": json.dumps({"firstName": "Changed"}),
        "error": None,
    }
    return json.dumps(event).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- topics and publishing (orchestrator side) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topics:
    admin_events: str
    dead_letters: str

    @classmethod
    def fresh(cls, label: str) -> Topics:
        run = uuid.uuid4().hex[:8]
        return cls(f"bench.{label}.{run}.admin-events", f"bench.{label}.{run}.dlq")


async def create_topics(bootstrap: str, topics: Topics) -> None:
    await kafka_offsets.create_topics(bootstrap, {topics.admin_events: PARTITIONS, topics.dead_letters: 1})


async def delete_topics(bootstrap: str, topics: Topics) -> None:
    await kafka_offsets.delete_topics(bootstrap, [topics.admin_events, topics.dead_letters])


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # The providers send a null key: one user's events land on any partition.
    return AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)


def record_headers(after_commit: bool) -> list[tuple[str, bytes]] | None:
    """The headers of a record: our listener (`keycloak-spi-config/kafka-listener/`) marks every record it
    publishes after Keycloak's commit with `x-published: after-commit`; the other providers set none."""
    return [(PUBLISHED_HEADER, AFTER_COMMIT)] if after_commit else None


def record_key(user_id: str, after_commit: bool) -> bytes | None:
    """Our listener keys a record by the user id; the providers that publish before commit send no key."""
    return user_id.encode() if after_commit else None


async def publish_burst(
    bootstrap: str, topic: str, realm: str, user_ids: list[str], *, after_commit: bool = True
) -> float:
    """One event per entry of `user_ids`, as fast as the producer goes; returns the seconds it took."""
    producer = _producer(bootstrap)
    await producer.start()
    headers = record_headers(after_commit)
    watch = Stopwatch()
    try:
        pending = [
            await producer.send(
                topic, admin_event(realm, uid, now_ms()), key=record_key(uid, after_commit), headers=headers
            )
            for uid in user_ids
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return watch.seconds()


async def publish_steady(
    bootstrap: str, topic: str, realm: str, user_ids: list[str], rate: float, *, after_commit: bool = True
) -> float:
    """One event per entry of `user_ids`, `rate` per second on a fixed schedule, each stamped when sent."""
    producer = _producer(bootstrap)
    await producer.start()
    headers = record_headers(after_commit)
    watch = Stopwatch()
    try:
        pending = []
        for n, uid in enumerate(user_ids):
            delay = n / rate - watch.seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            event = admin_event(realm, uid, now_ms())
            key = record_key(uid, after_commit)
            pending.append(await producer.send(topic, event, key=key, headers=headers))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return watch.seconds()


# --- the consumer job (its own process) ---------------------------------------------------------------------


class LatencyRecorder:
    """Every hint the event path is done with: when (wall time) and how long after its event's time."""

    def __init__(self, expected: int) -> None:
        self._expected = expected
        self.values: list[float] = []
        self.applied_at: list[float] = []
        self.all_applied = asyncio.Event()

    def observe(self, amount: float) -> None:
        self.values.append(amount)
        self.applied_at.append(time.time())
        if len(self.values) >= self._expected:
            self.all_applied.set()


def _trace_hints(recorder: LatencyRecorder) -> None:
    """Wrap the event path's worker (`HintApplier.__call__`): when it is done with a user's hints (applied
    and written, or covered by a full reconcile that wrote the user: the listing road), each hint is
    recorded with event-to-done = now - the event's time. Not when it hands them back for later (`Later`,
    while a listing runs) or raises (the queue retries). Follow-up re-checks are not events."""
    original = hint_apply.HintApplier.__call__
    later = getattr(workqueue, "Later", None)

    async def traced(self: hint_apply.HintApplier, user_id: str, hints: list[UserHint]) -> Any:
        result = await original(self, user_id, hints)
        if later is None or not isinstance(result, later):
            now = datetime.now(UTC)
            for hint in hints:
                if hint.event_time is not None and not hint.recheck:
                    recorder.observe(max(0.0, (now - hint.event_time).total_seconds()))
        return result

    hint_apply.HintApplier.__call__ = traced  # type: ignore[method-assign]


def _burst_setting(spec: Spec) -> dict[str, Any]:
    """EVENT_BURST_LISTING as the spec says (default: the setting's default), where the reconciler has it."""
    if "burst_listing" in spec and "event_burst_listing" in Settings.model_fields:
        return {"event_burst_listing": bool(spec["burst_listing"])}
    return {}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def _lookups() -> int:
    total = 0
    for metric in metrics.LOOKUPS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("outcome") in ("found", "not_found"):
                total += int(sample.value)
    return total


async def _fresh_database(uri: str, database: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        await client.drop_database(database)
    finally:
        await client.close()


def _signal_ready(path: str) -> None:
    Path(path).write_text("ready")


async def _job_settings(spec: Spec, *, fresh: bool = True, **overrides: Any) -> Settings:
    """A job's settings: its realm, its topic and dead-letter topic only, and (`fresh`) a database emptied
    first."""
    settings = make_settings(
        stack_env(),
        spec["realm"],
        spec["database"],
        kafka_admin_events_topic=spec["topic"],
        kafka_user_events_topic="",
        kafka_dead_letter_topic=spec["dlq"],
        **overrides,
    )
    if fresh:
        await _fresh_database(settings.mongodb_uri.get_secret_value(), settings.mongodb_database)
    return settings


DRIFTED_FIRST_NAME = "Drifted"
DRIFT_BATCH = 500


async def drifted_store(settings: Settings, size: int, user_ids: list[str]) -> dict[str, Any]:
    """Make the store hold every user of the realm, the documents of `user_ids` drifted from Keycloak (their
    first name), so that every hint's apply needs a write (an update, not a create).

    The store is filled once by an untimed full reconcile and kept between runs (a count tells whether it is
    complete); each run then drifts its own users again by bulk writes of single-document updates on the
    `external_id` index (cheaper here than one `update_many` of the whole collection, ~5 ms per document on
    a loaded SecantusDB; and no `$in` of ids, ~26 s for 5,000 ids). Untimed: before the consumer starts.
    """
    watch = Stopwatch()
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        await store.ensure_indexes()
        # Only benchmark jobs use this store: a lease left by an interrupted job would refuse the listing
        # road's run (`not_run`) and close the road for a lease TTL.
        await store.leases.delete_many({})
        filled = False
        if await store.users.count_documents({F.IS_ACTIVE: True}) != size:
            await store.users.drop()
            await store.ensure_indexes()
            for _ in range(2):
                # The second run is warm: the listing road's cost model reads the last run's cost per
                # listed user, and production's periodic runs are warm ones (a cold run is mostly writes).
                summary = await FullReconcile(settings, store, keycloak).run()
                if not summary.ok:
                    raise RuntimeError(f"filling the event store failed: {summary.error}")
            filled = True
    fill_s = watch.seconds()
    # Its own client: a bulk write of 500 updates may take longer than the reconciler's socket timeout here.
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongodb_uri.get_secret_value(), socketTimeoutMS=600_000
    )
    modified = 0
    try:
        users = client[settings.mongodb_database][settings.mongodb_users_collection]
        for start in range(0, len(user_ids), DRIFT_BATCH):
            batch = user_ids[start : start + DRIFT_BATCH]
            ops = [
                UpdateOne({F.EXTERNAL_ID: uid}, {"$set": {F.FIRST_NAME: DRIFTED_FIRST_NAME}}) for uid in batch
            ]
            modified += (await users.bulk_write(ops, ordered=False)).modified_count
    finally:
        await client.close()
    drift_s = watch.seconds() - fill_s
    return {
        "store_filled_now": filled,
        "store_fill_seconds": fill_s,
        "store_drift_seconds": drift_s,
        "store_drifted_documents": modified,
        # The store's own update rate in the same minute: what any road's writes of these users are bound by.
        "store_update_floor_per_s": modified / drift_s if drift_s > 0 else None,
    }


async def events_job(spec: Spec) -> dict[str, Any]:
    """Run the consumer until `expected` hints were applied (or `timeout_s`), then stop it."""
    drifted = "drifted_size" in spec
    settings = await _job_settings(
        spec,
        fresh=not drifted,
        kafka_group_id=f"bench-{uuid.uuid4().hex[:8]}",
        # The scheduler runs so that a burst can take the listing road (EVENT_BURST_LISTING, it asks the
        # scheduler for a run); its periodic runs never come due within a job.
        reconcile_enabled=True,
        reconcile_interval_s=1e7,
        http_enabled=False,
        consumer_enabled=True,
        # Only the shutdown after the measurement: the re-checks still queued then are not waited for.
        consumer_drain_timeout_s=3.0,
        **_burst_setting(spec),
    )
    drift_ids = [seed.user_id(spec["realm"], i) for i in range(int(spec.get("distinct_users", 0)))]
    prepared = await drifted_store(settings, int(spec["drifted_size"]), drift_ids) if drifted else {}
    counter = install_store_counter(settings.mongodb_users_collection)
    expected = int(spec["expected"])
    recorder = LatencyRecorder(expected)
    _trace_hints(recorder)
    service = Service(settings)
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + 60
    while service.consumer is None or not service.consumer.joined:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the consumer did not join its group")
        await asyncio.sleep(0.05)
    counter.enabled = True
    lookups_before, requests_before = _lookups(), keycloak_requests()
    cpu_before = cpu.snapshot()
    profiler = cProfile.Profile() if spec.get("profile") else None
    if profiler:
        profiler.enable()
    _signal_ready(spec["ready_file"])
    waiter = asyncio.create_task(recorder.all_applied.wait())
    await asyncio.wait([waiter, task], timeout=float(spec["timeout_s"]), return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if profiler:
        profiler.disable()
        Path(spec["profile"]).parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(spec["profile"])
    applied = len(recorder.values)
    lookups = _lookups() - lookups_before
    requests = {
        op: n - requests_before.get(op, 0)
        for op, n in keycloak_requests().items()
        if n - requests_before.get(op, 0)
    }
    store = counter.to_dict()
    cpu_seconds = cpu.spent(cpu_before, cpu.snapshot())
    service.stop.set()
    await task
    if applied < expected:
        raise RuntimeError(f"only {applied} of {expected} hints applied within {spec['timeout_s']} s")
    event_times = [at - lat for at, lat in zip(recorder.applied_at, recorder.values, strict=True)]
    window = max(recorder.applied_at) - min(event_times)
    return {
        "events": expected,
        "seconds": window,
        "events_per_s": expected / window,
        "distinct_users": int(spec.get("distinct_users", 0)),
        "users_per_s": int(spec.get("distinct_users", 0)) / window,
        "lookups": lookups,
        "lookups_per_s": lookups / window,
        "keycloak_requests": sum(requests.values()),
        "keycloak_requests_by_operation": requests,
        "latency_p50_ms": percentile(recorder.values, 50) * 1000,
        "latency_p95_ms": percentile(recorder.values, 95) * 1000,
        "latency_p99_ms": percentile(recorder.values, 99) * 1000,
        "latency_max_ms": max(recorder.values) * 1000,
        "store": "drifted" if drifted else "empty",
        # Per process, from the consumer's readiness (just before the first event) to the last hint.
        "cpu_seconds": cpu_seconds,
        **prepared,
        **store,
    }


async def replay_job(spec: Spec) -> dict[str, Any]:
    """`reconciler replay` of one topic into an empty database, without the full reconcile that follows."""
    settings = await _job_settings(spec)
    counter = install_store_counter(settings.mongodb_users_collection)
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        counter.enabled = True
        watch = Stopwatch()
        summary = await replay(
            settings,
            store,
            keycloak,
            topics=[spec["topic"]],
            reconcile_after=bool(spec.get("reconcile_after", True)),
        )
        seconds = watch.seconds()
        counter.enabled = False
    requests = keycloak_requests()
    return {
        "seconds": seconds,
        "events_read": summary.events_read,
        "distinct_users": summary.distinct_users,
        "lookups": summary.lookups,
        "keycloak_get_user_requests": requests.get("get_user", 0),
        "keycloak_requests": sum(requests.values()),
        "applied": summary.applied.as_dict(),
        **counter.to_dict(),
    }


JOBS: dict[str, Callable[[Spec], Any]] = {"events": events_job, "replay": replay_job}
