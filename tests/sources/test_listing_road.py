"""The event path's listing road for bursts, on the real stack: a backlog of events for most of the realm is
read by one full reconcile instead of one GET per user, applied exactly as single lookups would have been,
and its records are committed only after that apply; a few events are still read one by one; a listing that
another replica holds the lease for leaves the burst to single lookups.

The module has its own realm, database and consumer groups. The consumer reads one user at a time
(CONSUMER_MAX_IN_FLIGHT_USERS=1), which makes single lookups clearly dearer than a listing of this realm.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.events import accepted_realms, parse_record
from reconciler.fullsync.reconcile import FullReconcile, RunSummary
from reconciler.fullsync.scheduler import LEASE_NAME
from tests.conftest import override
from tests.support.kafka import publish
from tests.support.kafka_offsets import (
    Offsets,
    PartitionReader,
    committed_offsets,
    end_offsets,
    seed_group_offsets,
)
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.mirror import assert_mirror
from tests.support.polling import eventually
from tests.support.provider_events import playa_admin_event
from tests.support.service import running_service
from tests.support.user_reads import GetCounter

pytestmark = pytest.mark.stack

REALM_USERS = 150
OTHER_REALM_RECORDS = 40_000  # more than one fetch holds: some are still unread when ours are read


def burst_settings(settings: Settings) -> Settings:
    return override(
        settings,
        kafka_group_id=f"burst-{uuid.uuid4().hex[:8]}",
        reconcile_enabled=True,
        reconcile_interval_s=3600,  # no periodic run during the test: only the burst asks for one
        event_burst_listing=True,
        consumer_max_in_flight_users=1,
        http_enabled=False,
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def all_listings() -> float:
    return sum(
        sample("reconciler_burst_listings_total", outcome=o)
        for o in ("success", "failed", "guard_tripped", "not_run")
    )


@pytest.fixture(scope="module")
async def realm_users(kc_admin: KeycloakTestAdmin) -> list[str]:
    return [await kc_admin.create_user(first_name="Burst", last_name="0") for _ in range(REALM_USERS)]


@pytest.fixture
async def mirrored(settings: Settings, store: UserStore, realm_users: list[str]) -> AsyncIterator[list[str]]:
    """The store mirrors the realm, and a warm successful run is on record (the listing's cost per user
    that the burst switch reads: a cold run's creates would make the listing look dearer than it is)."""
    async with KeycloakAdminClient(settings) as keycloak:
        for _ in range(2):
            summary = await FullReconcile(settings, store, keycloak).run()
            assert summary.ok, summary.error
    yield realm_users


async def backlog(settings: Settings, make_changes: Any) -> Offsets:
    """Start the group at the topics' current end, make the changes while nothing consumes, and return
    the end offsets once their events are all in the topics (the backlog the group starts with)."""
    start = await end_offsets(settings.kafka_bootstrap_servers, settings.event_topics)
    await seed_group_offsets(settings.kafka_bootstrap_servers, settings.kafka_group_id, start)
    expected = await make_changes()
    ends: Offsets = await eventually(
        lambda: end_offsets(settings.kafka_bootstrap_servers, settings.event_topics),
        until=lambda now: sum(now.values()) - sum(start.values()) >= expected,
        timeout_s=30,
        what="the changes' events in the topics",
    )
    assert await committed_offsets(settings.kafka_bootstrap_servers, settings.kafka_group_id) == start
    return ends


async def hinted_users(settings: Settings, start: Offsets, until: Offsets) -> set[str]:
    """The users named by the records between two sets of offsets."""
    ranges = {tp: (start.get(tp, 0), end) for tp, end in until.items() if end > start.get(tp, 0)}
    if not ranges:  # nothing committed in between (and aiokafka fails a consumer stopped at once)
        return set()
    async with PartitionReader(settings.kafka_bootstrap_servers) as reader:
        records = await reader.read(ranges)
    realms = accepted_realms(settings.keycloak_realm)
    return {hint.user_id for r in records for hint in parse_record(r.value, realms=realms).hints}


async def until_committed(settings: Settings, ends: Offsets) -> None:
    async def committed() -> Offsets:
        return await committed_offsets(settings.kafka_bootstrap_servers, settings.kafka_group_id)

    await eventually(
        committed,
        until=lambda now: all(now.get(tp, 0) >= end for tp, end in ends.items() if end > 0),
        timeout_s=60,
        what="the backlog committed",
    )


async def test_a_backlog_for_most_of_the_realm_is_read_by_one_listing_and_committed_after_it(
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    mirrored: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = burst_settings(settings)
    updated, disabled, deleted = mirrored[:-3], mirrored[-3], mirrored[-2:]

    async def changes() -> int:
        await asyncio.gather(*(kc_admin.update_user(uid, lastName="1") for uid in updated))
        await kc_admin.set_enabled(disabled, False)
        for uid in deleted:
            await kc_admin.delete_user(uid)
        return len(mirrored)

    ends = await backlog(config, changes)
    gets = GetCounter(monkeypatch)
    start_offsets = await committed_offsets(config.kafka_bootstrap_servers, config.kafka_group_id)
    committed_when_listed: list[Offsets] = []
    read_singly_before: list[set[str]] = []
    original_run = FullReconcile.run

    async def run_and_look(reconcile: FullReconcile, **kwargs: Any) -> RunSummary:
        # Users read one by one before the backlog's size was known (the first poll sees part of it).
        read_singly_before.append(set(gets.calls))
        summary = await original_run(reconcile, **kwargs)
        # The listing has applied everyone: what is committed by now may only be those users' records.
        committed_when_listed.append(
            await committed_offsets(config.kafka_bootstrap_servers, config.kafka_group_id)
        )
        return summary

    monkeypatch.setattr(FullReconcile, "run", run_and_look)
    listings = sample("reconciler_burst_listings_total", outcome="success")
    covered = sample("reconciler_hints_covered_total")

    async with running_service(config) as service:
        await until_committed(config, ends)
        assert service.scheduler is not None and service.scheduler.last_summary is not None
        assert service.scheduler.last_summary.ok

    assert sample("reconciler_burst_listings_total", outcome="success") == listings + 1
    assert len(committed_when_listed) == 1  # one run
    (singly,) = read_singly_before
    early = await hinted_users(config, start_offsets, committed_when_listed[0])
    # No record of a user that waited for the listing was committed before it had applied.
    assert early <= singly, sorted(early - singly)
    assert len(singly) < len(mirrored) // 4, f"{len(singly)} users read one by one before the listing"
    # Every other hinted user was covered by the listing: no GET of its own after it.
    assert sample("reconciler_hints_covered_total") - covered >= len(mirrored) - len(singly)
    # After it, no user was read one by one (the run's confirmations of the deleted users aside).
    assert set(gets.calls) - set(deleted) == singly - set(deleted), gets.calls
    await assert_mirror(kc_admin, store)  # exactly what single lookups would have written


async def test_a_few_events_are_read_one_by_one(
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    mirrored: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = burst_settings(settings)
    few = mirrored[:3]  # alive: the first test deleted the last two

    async def changes() -> int:
        for uid in few:
            await kc_admin.update_user(uid, lastName="few")
        return len(few)

    ends = await backlog(config, changes)
    gets = GetCounter(monkeypatch)
    listings = all_listings()
    async with running_service(config):
        await until_committed(config, ends)

    assert set(gets.calls) == set(few)  # one by one
    assert (
        sum(sample("reconciler_burst_listings_total", outcome=o) for o in ("success", "failed", "not_run"))
        == listings
    )
    await assert_mirror(kc_admin, store)


async def test_a_backlog_of_another_realms_events_is_no_burst_of_ours(
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    mirrored: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A topic shared by realms: a few changes of ours between thousands of another realm's records are read
    one by one. The waiting users are the unread records times the users a record read so far named; counted
    as one user each, the other realm's records would make a listing of ours look cheaper than 3 GETs."""
    config = override(burst_settings(settings), consumer_max_in_flight_users=8)
    few = mirrored[3:6]
    others = [
        json.dumps(playa_admin_event(realm_id="another-realm", path=f"users/{uuid.uuid4()}")).encode()
        for _ in range(OTHER_REALM_RECORDS)
    ]
    topic = config.kafka_admin_events_topic

    async def changes() -> int:
        await publish(config.kafka_bootstrap_servers, topic, others[: OTHER_REALM_RECORDS // 2])
        for uid in few:
            await kc_admin.update_user(uid, lastName="shared-topic")
        await publish(config.kafka_bootstrap_servers, topic, others[OTHER_REALM_RECORDS // 2 :])
        return len(others) + len(few)

    ends = await backlog(config, changes)
    gets = GetCounter(monkeypatch)
    listings = all_listings()
    async with running_service(config):
        await until_committed(config, ends)

    assert all_listings() == listings, "a listing for a backlog that names 3 users of this realm"
    assert set(gets.calls) == set(few)
    await assert_mirror(kc_admin, store)


async def test_a_burst_whose_listing_another_replica_holds_is_read_one_by_one(
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    mirrored: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = burst_settings(settings)
    active = [uid for uid in mirrored if uid in {u["id"] for u in await kc_admin.list_users()}]

    async def changes() -> int:
        await asyncio.gather(*(kc_admin.update_user(uid, lastName="2") for uid in active))
        return len(active)

    ends = await backlog(config, changes)
    assert await store.acquire_lease(LEASE_NAME, "another-replica", 600)
    gets = GetCounter(monkeypatch)
    not_run = sample("reconciler_burst_listings_total", outcome="not_run")
    try:
        async with running_service(config):
            await until_committed(config, ends)
    finally:
        await store.release_lease(LEASE_NAME, "another-replica")

    assert sample("reconciler_burst_listings_total", outcome="not_run") == not_run + 1
    assert set(gets.calls) == set(active)  # the road closed: every user read by its own GET
    await assert_mirror(kc_admin, store)


async def test_re_checks_after_a_burst_listing_are_read_by_get_and_start_no_more_listings(
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    mirrored: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a re-check after every update (EVENT_RECHECK=always, as for a provider that publishes before
    commit), the burst is read by one listing and each user's re-check by one GET: a re-check is never
    covered by a listing, and it must not make the road list the realm again and again."""
    config = override(burst_settings(settings), event_recheck="always", event_recheck_delay_s=0.5)
    active = [uid for uid in mirrored if uid in {u["id"] for u in await kc_admin.list_users()}]

    async def changes() -> int:
        await asyncio.gather(*(kc_admin.update_user(uid, lastName="rechecked") for uid in active))
        return len(active)

    ends = await backlog(config, changes)
    gets = GetCounter(monkeypatch)
    listings = all_listings()
    async with running_service(config) as service:
        await until_committed(config, ends)

        async def queued() -> int:
            return len(service.queue) if service.queue is not None else -1

        # A pending re-check is not in the queue's length until its delay is over: wait for the GETs.
        await eventually(
            lambda: asyncio.sleep(0, set(gets.calls)),
            until=lambda called: called >= set(active),
            timeout_s=60,
            what="every user's re-check read by GET",
        )
        await eventually(queued, until=lambda n: n == 0, timeout_s=60, what="every re-check done")

    assert all_listings() == listings + 1
    assert set(gets.calls) >= set(active)  # the re-checks, each a GET of its own
    assert gets.total <= 2 * len(active)  # the few read before the backlog's size was known, twice
    await assert_mirror(kc_admin, store)


async def test_a_new_group_starting_at_the_earliest_offset_reads_its_history_by_a_listing(
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    mirrored: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A new group with CONSUMER_START_OFFSET=earliest replays the topics' whole history: here every event
    # of this module's realm so far (the creates and updates above), one GET per user without the road.
    # The module's earlier tests changed users seconds ago: with the default covered margin, a hint read
    # after the listing began whose change was made within the margin before it would start a listing of its
    # own (a CI run saw two). Keycloak and the reconciler share this machine's clock, so no margin is needed.
    config = override(burst_settings(settings), consumer_start_offset="earliest", event_covered_margin_s=0)
    await store.users.update_many({}, {"$set": {"last_name": "drifted"}})  # every document needs a write
    ends = await end_offsets(config.kafka_bootstrap_servers, config.event_topics)
    gets = GetCounter(monkeypatch)
    listings = sample("reconciler_burst_listings_total", outcome="success")

    async with running_service(config):
        await until_committed(config, ends)

    assert sample("reconciler_burst_listings_total", outcome="success") == listings + 1
    assert gets.total < len(mirrored) // 4, f"{gets.total} GETs for a history of {len(mirrored)} users"
    await assert_mirror(kc_admin, store)
