"""UserStore and the Applier's writes on the real store: monotonic writes, stale handling, lease, run records."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import NetworkTimeout

from reconciler.apply.applier import Applier
from reconciler.apply.batching import GroupRead
from reconciler.base.config import Settings
from reconciler.base.errors import StoreUnavailable
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import LeaseTaken, UserStore
from reconciler.domain.document import F, UserWrite, WriteStatus, utc_now
from reconciler.domain.models import KeycloakUser, Observation
from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import Action, ApplyPolicy, plan
from tests.support.polling import eventually

pytestmark = pytest.mark.stack

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
async def applier(store: UserStore, store_settings: Settings) -> AsyncIterator[Applier]:
    # apply() never calls Keycloak (group/role sync is off); the client is only a constructor argument.
    async with KeycloakAdminClient(store_settings) as keycloak:
        yield Applier(store, keycloak, store_settings)


def kc_user(user_id: str, **fields: Any) -> KeycloakUser:
    values: dict[str, Any] = {"id": user_id, "username": f"u-{user_id[:8]}", "enabled": True}
    values.update(fields)
    return KeycloakUser(**values)


async def test_indexes_are_idempotent_and_external_id_is_unique(store: UserStore) -> None:
    await store.ensure_indexes()
    indexes = await store.users.index_information()
    unique = [spec for spec in indexes.values() if spec["key"] == [("external_id", 1)]]
    assert unique and unique[0].get("unique") is True
    assert any(spec["key"] == [("is_active", 1)] for spec in indexes.values())


async def test_write_statuses_per_operation_in_one_bulk_write(store: UserStore) -> None:
    existing, newer, missing, fresh = new_id(), new_id(), new_id(), new_id()
    first = await store.write_users(
        [
            UserWrite(existing, at(1), {F.USERNAME: "existing", F.IS_ACTIVE: True}, insert_fields={"x": 1}),
            UserWrite(newer, at(10), {F.USERNAME: "newer", F.IS_ACTIVE: True}, insert_fields={"x": 1}),
        ]
    )
    assert first == (WriteStatus.INSERTED, WriteStatus.INSERTED)

    outcome = await store.write_users(
        [
            UserWrite(existing, at(2), {F.USERNAME: "existing-2"}, insert_fields={"x": 1}),  # newer: updates
            UserWrite(newer, at(5), {F.USERNAME: "older"}, insert_fields={"x": 1}),  # older: E11000 -> stale
            UserWrite(missing, at(5), {F.IS_ACTIVE: False}),  # no upsert, no document -> stale
            UserWrite(fresh, at(5), {F.USERNAME: "fresh"}, insert_fields={"x": 1}),  # created
        ]
    )
    assert outcome == (
        WriteStatus.UPDATED,
        WriteStatus.STALE,
        WriteStatus.STALE,
        WriteStatus.INSERTED,
    )
    assert (await store.get_user(existing) or {})[F.USERNAME] == "existing-2"
    assert (await store.get_user(newer) or {})[F.USERNAME] == "newer"
    assert await store.get_user(missing) is None
    created = await store.get_user(fresh)
    assert created is not None and created["x"] == 1 and uuid.UUID(created["_id"])


async def test_non_upsert_write_against_a_newer_document_is_stale(store: UserStore) -> None:
    user_id = new_id()
    await store.write_users([UserWrite(user_id, at(10), {F.IS_ACTIVE: True}, insert_fields={})])
    outcome = await store.write_users(
        [UserWrite(user_id, at(5), {F.IS_ACTIVE: False}), UserWrite(new_id(), at(5), {F.IS_ACTIVE: False})]
    )
    assert outcome == (WriteStatus.STALE, WriteStatus.STALE)
    assert (await store.get_user(user_id) or {})[F.IS_ACTIVE] is True


async def test_a_document_written_without_observed_at_is_overwritten(store: UserStore) -> None:
    user_id = new_id()
    await store.users.insert_one({"_id": new_id(), F.EXTERNAL_ID: user_id, F.USERNAME: "from-login"})
    outcome = await store.write_users([UserWrite(user_id, at(1), {F.USERNAME: "from-keycloak"})])
    assert outcome == (WriteStatus.UPDATED,)
    assert (await store.get_user(user_id) or {})[F.USERNAME] == "from-keycloak"


async def test_older_observation_never_overwrites_a_newer_one(applier: Applier, store: UserStore) -> None:
    """Invariant 2: apply t2 then t1 -> the document keeps t2's fields."""
    user_id = new_id()
    t2 = await applier.apply(
        [Observation(user_id, kc_user(user_id, first_name="Newer"), at(2))], ApplyPolicy.event()
    )
    assert t2[Action.CREATED] == 1
    t1 = await applier.apply(
        [Observation(user_id, kc_user(user_id, first_name="Older", enabled=False), at(1))],
        ApplyPolicy.reconcile(),
    )
    assert t1[Action.STALE] == 1 and t1.written == 0
    doc = await store.get_user(user_id)
    assert doc is not None
    assert doc[F.FIRST_NAME] == "Newer" and doc[F.IS_ACTIVE] is True and doc[F.OBSERVED_AT] == at(2)


async def test_older_creation_racing_a_newer_one_is_stale_not_an_error(
    applier: Applier, store: UserStore
) -> None:
    """Both see no document; the newer creation lands first; the older upsert hits E11000 -> stale."""
    user_id = new_id()
    await store.write_users(
        [UserWrite(user_id, at(9), {F.USERNAME: "newest", F.IS_ACTIVE: True}, insert_fields={})]
    )
    # Plan as if the document did not exist yet (the store read happened before the newer write).
    (change,) = plan(
        [Observation(user_id, kc_user(user_id), at(3))], {}, ApplyPolicy.reconcile(), now=utc_now()
    ).changes
    assert change.action is Action.CREATED and change.write is not None
    assert await store.write_users([change.write]) == (WriteStatus.STALE,)
    assert (await store.get_user(user_id) or {})[F.USERNAME] == "newest"


async def test_a_planned_creation_is_an_insert_that_equals_the_upsert_it_replaces(store: UserStore) -> None:
    """No document at read time: a plain insert; the document is the one the guarded upsert would make."""
    by_insert, by_upsert = new_id(), new_id()
    fields = {F.USERNAME: "same", F.IS_ACTIVE: False, F.DEACTIVATED_AT: at(1)}
    writes = [
        UserWrite(by_insert, at(1), fields, insert_fields={F.CREATED_AT: at(0)}, expect_absent=True),
        UserWrite(by_upsert, at(1), fields, insert_fields={F.CREATED_AT: at(0)}),
    ]
    assert await store.write_users(writes) == (WriteStatus.INSERTED, WriteStatus.INSERTED)
    inserted, upserted = await store.get_user(by_insert), await store.get_user(by_upsert)
    assert inserted is not None and upserted is not None
    assert inserted.pop("_id") != upserted.pop("_id")
    assert inserted.pop(F.EXTERNAL_ID) == by_insert and upserted.pop(F.EXTERNAL_ID) == by_upsert
    assert inserted == upserted


async def test_an_insert_that_finds_a_document_is_decided_by_the_guard(store: UserStore) -> None:
    """A document appeared after the read: older -> overwritten (updated, its _id and created_at kept);
    newer -> stale; the other inserts of the same bulk write land."""
    older, newer, fresh = new_id(), new_id(), new_id()
    await store.write_users(
        [
            UserWrite(older, at(1), {F.USERNAME: "older"}, insert_fields={F.CREATED_AT: at(1)}),
            UserWrite(newer, at(9), {F.USERNAME: "newer"}, insert_fields={F.CREATED_AT: at(9)}),
        ]
    )
    before = await store.get_user(older)
    assert before is not None

    def creation(user_id: str) -> UserWrite:
        return UserWrite(
            user_id, at(5), {F.USERNAME: "at-5"}, insert_fields={F.CREATED_AT: at(5)}, expect_absent=True
        )

    outcome = await store.write_users([creation(older), creation(newer), creation(fresh)])
    assert outcome == (WriteStatus.UPDATED, WriteStatus.STALE, WriteStatus.INSERTED)
    after = await store.get_user(older)
    assert after is not None and after[F.USERNAME] == "at-5" and after[F.OBSERVED_AT] == at(5)
    assert after["_id"] == before["_id"] and after[F.CREATED_AT] == at(1)
    assert (await store.get_user(newer) or {})[F.USERNAME] == "newer"
    assert (await store.get_user(fresh) or {})[F.USERNAME] == "at-5"
    with pytest.raises(ValueError, match="what to insert"):
        UserWrite(fresh, at(6), {}, expect_absent=True)


async def test_concurrent_applies_in_random_order_keep_the_latest_observation(
    applier: Applier, store: UserStore
) -> None:
    user_id = new_id()
    observations = [
        Observation(user_id, kc_user(user_id, first_name=f"v{i}", enabled=i % 3 != 0), at(i))
        for i in range(1, 26)
    ]
    random.Random(7).shuffle(observations)
    results = await asyncio.gather(*(applier.apply([obs], ApplyPolicy.event()) for obs in observations))
    assert sum(r[Action.CREATED] for r in results) == 1
    doc = await store.get_user(user_id)
    assert doc is not None
    assert doc[F.FIRST_NAME] == "v25" and doc[F.OBSERVED_AT] == at(25) and doc[F.IS_ACTIVE] is True


async def test_not_found_user_is_never_created_and_an_existing_one_is_soft_deactivated(
    applier: Applier, store: UserStore
) -> None:
    ghost = new_id()
    result = await applier.apply([Observation(ghost, None, at(1))], ApplyPolicy.event())
    assert result.written == 0 and await store.get_user(ghost) is None

    user_id = new_id()
    await applier.apply([Observation(user_id, kc_user(user_id), at(1))], ApplyPolicy.event())
    result = await applier.apply([Observation(user_id, None, at(2))], ApplyPolicy.event())
    assert result[Action.DEACTIVATED] == 1
    doc = await store.get_user(user_id)
    assert doc is not None
    assert doc[F.IS_ACTIVE] is False
    assert doc[F.DEACTIVATION_REASON] == "deleted_in_keycloak"
    assert isinstance(doc[F.DEACTIVATED_AT], datetime)
    assert doc[F.USERNAME] == f"u-{user_id[:8]}"  # soft: the profile stays

    result = await applier.apply([Observation(user_id, kc_user(user_id), at(3))], ApplyPolicy.event())
    assert result[Action.REACTIVATED] == 1
    doc = await store.get_user(user_id)
    assert doc is not None and doc[F.IS_ACTIVE] is True
    assert F.DEACTIVATED_AT not in doc and F.DEACTIVATION_REASON not in doc


async def test_a_404_without_a_document_leaves_a_tombstone_that_makes_older_observations_stale(
    applier: Applier, store: UserStore
) -> None:
    user_id = new_id()
    await applier.apply([Observation(user_id, None, at(5))], ApplyPolicy.event())  # deleted, never mirrored
    assert await store.find_tombstones([user_id]) == {user_id: at(5)}
    await applier.apply(
        [Observation(user_id, None, at(4))], ApplyPolicy.event()
    )  # an older 404 keeps the newer
    assert await store.find_tombstones([user_id]) == {user_id: at(5)}

    # A reconcile page read before the deletion, applied after it: stale, not a resurrection.
    result = await applier.apply([Observation(user_id, kc_user(user_id), at(3))], ApplyPolicy.reconcile())
    assert result[Action.STALE] == 1 and await store.get_user(user_id) is None
    # A newer observation (the id exists again, e.g. re-imported) is created as usual.
    result = await applier.apply([Observation(user_id, kc_user(user_id), at(6))], ApplyPolicy.reconcile())
    assert result[Action.CREATED] == 1


async def test_event_path_records_observed_at_of_unchanged_users_reconcile_writes_nothing(
    applier: Applier, store: UserStore
) -> None:
    user_id = new_id()
    await applier.apply([Observation(user_id, kc_user(user_id), at(1))], ApplyPolicy.reconcile())
    before = await store.get_user(user_id)
    result = await applier.apply([Observation(user_id, kc_user(user_id), at(2))], ApplyPolicy.reconcile())
    assert result[Action.UNCHANGED] == 1
    assert await store.get_user(user_id) == before
    result = await applier.apply([Observation(user_id, kc_user(user_id), at(3))], ApplyPolicy.event())
    assert result[Action.UNCHANGED] == 1
    after = await store.get_user(user_id)
    assert after is not None and before is not None
    assert after[F.OBSERVED_AT] == at(3)
    assert after[F.UPDATED_AT] == before[F.UPDATED_AT] and after[F.SYNCED_BY] == "reconcile"
    # ...so an older observation still in flight cannot undo the confirmed state.
    stale = await applier.apply(
        [Observation(user_id, kc_user(user_id, enabled=False), at(2.5))], ApplyPolicy.reconcile()
    )
    assert stale[Action.STALE] == 1


async def test_grouped_reads_answer_each_user_with_few_store_reads(store: UserStore) -> None:
    """300 users asking at once (a burst's users woken by the end of its listing) cost a handful of `$in`
    reads, and each gets its own answer: its document's observed_at, its tombstone's, or None."""
    documents = [new_id() for _ in range(200)]
    dead, unknown = new_id(), new_id()
    await store.write_users(
        [UserWrite(uid, at(i), {F.USERNAME: uid}, insert_fields={}) for i, uid in enumerate(documents)]
    )
    await store.record_tombstones([(dead, at(500))])
    group = GroupRead(store, max_batch=100)
    asking = [*documents, dead, unknown, *documents[:98]]  # some users twice
    answers = await asyncio.gather(*(group.last_observed(uid) for uid in asking))
    expected = {uid: at(i) for i, uid in enumerate(documents)} | {dead: at(500), unknown: None}
    assert answers == [expected[uid] for uid in asking]
    assert group.reads <= 4  # the first user alone, then 202 distinct users in batches of 100


async def test_users_are_scanned_with_the_asked_fields_only_and_active_ones_counted(store: UserStore) -> None:
    base = await store.count_active()
    ids = [new_id() for _ in range(5)]
    await store.write_users(
        [
            UserWrite(i, at(1), {F.IS_ACTIVE: n % 2 == 0, F.USERNAME: f"u{n}"}, insert_fields={})
            for n, i in enumerate(ids)
        ]
    )
    assert await store.count_active() == base + 3
    scanned = {
        doc[F.EXTERNAL_ID]: doc async for doc in store.scan_users((F.EXTERNAL_ID, F.IS_ACTIVE), batch_size=2)
    }
    assert {i: scanned[i] for i in ids} == {
        i: {F.EXTERNAL_ID: i, F.IS_ACTIVE: n % 2 == 0} for n, i in enumerate(ids)
    }


async def test_a_scan_batch_may_take_the_scan_timeout_where_a_plain_read_times_out(
    store_settings: Settings, store: UserStore
) -> None:
    """SecantusDB answers a scan's first batch only after reading most of the collection (24 s at a million
    users): the scans of the full reconcile wait `MONGODB_SCAN_TIMEOUT_S` for a batch, not the socket timeout."""
    collection = f"scan-{uuid.uuid4().hex[:6]}"
    ids = [str(uuid.uuid4()) for _ in range(20_000)]
    await store.users.database[collection].insert_many([{F.EXTERNAL_ID: i, F.IS_ACTIVE: True} for i in ids])
    uri, database = store_settings.mongodb_uri.get_secret_value(), store_settings.mongodb_database
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True, socketTimeoutMS=20)
    try:
        await client.admin.command("ping")
        with pytest.raises(NetworkTimeout):
            await client[database][collection].find({}, batch_size=1000).to_list()
        patient = UserStore(client, database, collection, scan_timeout_s=60)
        scanned = [doc[F.EXTERNAL_ID] async for doc in patient.scan_users((F.EXTERNAL_ID,))]
        assert sorted(scanned) == sorted(ids)
        hasty = UserStore(client, database, collection, scan_timeout_s=0.02)
        with pytest.raises(StoreUnavailable):
            [doc async for doc in hasty.scan_users((F.EXTERNAL_ID,))]
    finally:
        await client.close()
        # Dropped here: the module's drop_database takes most of a minute with it.
        await store.users.database.drop_collection(collection)


# --- lease ----------------------------------------------------------------------------------------------------


async def test_two_concurrent_acquirers_one_wins(store: UserStore) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    results = await asyncio.gather(*(store.acquire_lease(name, f"holder-{i}", 30) for i in range(8)))
    assert results.count(True) == 1
    winner = f"holder-{results.index(True)}"
    assert (await store.lease_holder(name) or ("",))[0] == winner
    assert await store.acquire_lease(name, winner, 30)  # renewal by the holder
    assert not await store.acquire_lease(name, "someone-else", 30)


async def test_expired_lease_is_taken_over_and_release_only_by_the_holder(store: UserStore) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    assert await store.acquire_lease(name, "crashed", 0.3)
    assert not await store.acquire_lease(name, "other", 30)
    await asyncio.sleep(0.4)
    assert await store.lease_holder(name) is None
    assert await store.acquire_lease(name, "other", 30)
    assert not await store.release_lease(name, "crashed")
    assert (await store.lease_holder(name) or ("",))[0] == "other"
    assert await store.release_lease(name, "other")
    assert await store.acquire_lease(name, "third", 30)


async def test_taking_an_expired_lease_names_the_holder_that_let_it_expire(store: UserStore) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    assert await store.take_lease(name, "first", 30) == LeaseTaken()  # free: nobody replaced
    assert await store.take_lease(name, "first", 0.2) == LeaseTaken()  # a renewal replaces nobody
    assert await store.take_lease(name, "second", 30) is None
    await eventually(lambda: store.lease_holder(name), until=lambda holder: holder is None, interval_s=0.05)
    assert await store.take_lease(name, "second", 30) == LeaseTaken(expired_holder="first")
    assert await store.release_lease(name, "second")
    assert await store.take_lease(name, "third", 30) == LeaseTaken()  # released: nobody to clean up after


# --- run records ----------------------------------------------------------------------------------------------


async def test_run_records_and_last_successful_run(store: UserStore) -> None:
    now = utc_now()
    await store.start_run("r-old", now - timedelta(minutes=30), "h1")
    await store.finish_run("r-old", now - timedelta(minutes=29), "success", {"created": 2})
    await store.start_run("r-new", now - timedelta(minutes=10), "h2")
    await store.finish_run("r-new", now - timedelta(minutes=9), "success", {"created": 0})
    await store.start_run("r-failed", now - timedelta(minutes=5), "h1")
    await store.finish_run("r-failed", now - timedelta(minutes=4), "failed", {}, "KeycloakUnavailable: down")
    await store.start_run("r-running", now, "h3")
    last = await store.last_successful_run()
    assert last is not None and last.run_id == "r-new" and last.counts == {"created": 0}
    failed = await store.get_run("r-failed")
    assert failed is not None and failed.outcome == "failed" and failed.error == "KeycloakUnavailable: down"
    running = await store.get_run("r-running")
    assert running is not None and running.outcome == "running" and running.ended_at is None


async def test_abandoning_closes_only_the_running_records_of_that_holder(store: UserStore) -> None:
    now = utc_now()
    dead, alive = f"dead-{uuid.uuid4().hex[:6]}", f"alive-{uuid.uuid4().hex[:6]}"
    await store.start_run(f"{dead}-done", now - timedelta(minutes=20), dead)
    await store.finish_run(f"{dead}-done", now - timedelta(minutes=19), Outcome.SUCCESS, {"created": 1})
    await store.start_run(f"{dead}-left", now - timedelta(minutes=5), dead)
    await store.start_run(f"{alive}-running", now - timedelta(minutes=1), alive)

    assert await store.abandon_runs(dead, now, "holder lost its lease") == [f"{dead}-left"]
    left = await store.get_run(f"{dead}-left")
    assert left is not None and left.outcome is Outcome.ABANDONED
    assert left.ended_at is not None and abs((left.ended_at - now).total_seconds()) < 0.01
    assert left.error == "holder lost its lease"
    done = await store.get_run(f"{dead}-done")
    assert done is not None and done.outcome is Outcome.SUCCESS and done.error is None
    running = await store.get_run(f"{alive}-running")
    assert running is not None and running.outcome is Outcome.RUNNING
    assert await store.abandon_runs(dead, now, "again") == []
    # A holder that was only stalled ends its run later: the real outcome replaces `abandoned`.
    await store.finish_run(f"{dead}-left", utc_now(), Outcome.SUCCESS, {"created": 0})
    finished = await store.get_run(f"{dead}-left")
    assert finished is not None and finished.outcome is Outcome.SUCCESS
