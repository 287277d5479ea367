"""The full reconcile on the real stack: each case asserts the store against what Keycloak holds.

The module has its own realm (only its users are listed) and its own database. Tests build on each other's
users but each one asserts what it needs; `assert_mirror` checks the whole store after a normal run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from unittest import mock

import httpx
import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from reconciler.apply.applier import Applier
from reconciler.base.config import Settings
from reconciler.base.errors import KeycloakProtocolError, KeycloakUnavailable
from reconciler.cli.verify import verify_report
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import Action, ApplyPolicy
from reconciler.fullsync.reconcile import FullReconcile, Progress, RunSummary
from tests.conftest import make_settings, override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.mirror import assert_mirror, documents
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.stack import REALM_FILE
from tests.support.tcp_proxy import TcpProxy, port_of, through

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
async def keycloak(settings: Settings) -> AsyncIterator[KeycloakAdminClient]:
    async with KeycloakAdminClient(settings) as client:
        yield client


async def reconcile(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, **kwargs: Any
) -> RunSummary:
    summary = await FullReconcile(settings, store, keycloak).run(**kwargs)
    assert summary.outcome in (Outcome.SUCCESS, Outcome.GUARD_TRIPPED) or kwargs.get("expect_failure"), (
        summary
    )
    return summary


def guard_trips_total() -> float:
    return REGISTRY.get_sample_value("reconciler_mass_deactivation_guard_trips_total") or 0.0


@contextlib.asynccontextmanager
async def scripted_keycloak(
    stack_env: dict[str, str],
    mongo_client: AsyncMongoClient[dict[str, Any]],
    handler: Callable[[httpx.Request], httpx.Response],
) -> AsyncIterator[tuple[Settings, UserStore, KeycloakAdminClient]]:
    """For Keycloak answers a real Keycloak does not give: `handler` plays Keycloak (pages of 2 users), the
    store is real, in a database of its own that is dropped afterwards."""
    settings = make_settings(
        stack_env,
        mongodb_database=f"t_scripted_{uuid.uuid4().hex[:8]}",
        keycloak_page_size=2,
        keycloak_listing="offset",  # the handlers play offset pages
    )
    try:
        async with (
            UserStore.from_settings(settings) as store,
            KeycloakAdminClient(settings, httpx.MockTransport(handler)) as client,
        ):
            await store.ensure_indexes()
            yield settings, store, client
    finally:
        await mongo_client.drop_database(settings.mongodb_database)


# --- cases ------------------------------------------------------------------------------------------------


async def test_new_users_are_created(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, kc_admin: KeycloakTestAdmin
) -> None:
    plain = await kc_admin.create_user()
    pictured = await kc_admin.create_user(attributes={"picture": ["https://img.example.test/p.png"]})
    nameless = await kc_admin.create_user(first_name=None, last_name=None)
    disabled = await kc_admin.create_user(enabled=False)
    for _ in range(4):
        await kc_admin.create_user()

    summary = await reconcile(settings, store, keycloak)

    assert summary.outcome is Outcome.SUCCESS
    assert summary.applied[Action.CREATED] == 8 and summary.listed == 8
    assert (
        summary.applied[Action.UPDATED]
        == summary.applied[Action.DEACTIVATED]
        == summary.applied[Action.REACTIVATED]
        == summary.applied[Action.STALE]
        == 0
    )
    docs = await documents(store)
    assert docs[pictured]["avatar_url"] == "https://img.example.test/p.png"
    assert docs[nameless]["display_name"] == docs[nameless]["username"]
    assert docs[disabled]["is_active"] is False  # created inactive: the mirror is complete
    assert docs[plain]["synced_by"] == "reconcile"
    await assert_mirror(kc_admin, store)
    run = await store.get_run(summary.run_id)
    assert run is not None and run.outcome == "success" and run.counts["created"] == 8 and run.ended_at


async def test_an_unchanged_second_run_writes_nothing(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, kc_admin: KeycloakTestAdmin
) -> None:
    await reconcile(settings, store, keycloak)
    before = await documents(store)
    summary = await reconcile(settings, store, keycloak)
    assert summary.outcome is Outcome.SUCCESS
    assert (
        summary.applied[Action.CREATED]
        == summary.applied[Action.UPDATED]
        == summary.applied[Action.DEACTIVATED]
        == summary.applied[Action.REACTIVATED]
        == 0
    )
    assert summary.applied[Action.UNCHANGED] == summary.listed == len(before)
    assert await documents(store) == before  # not even observed_at moved


async def test_an_unchanged_run_reads_no_document_by_id_unless_the_snapshot_is_off(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, kc_admin: KeycloakTestAdmin
) -> None:
    """The store snapshot (one scan) answers an unchanged realm: no per-page read by id. Off, every page is
    read by id again; both runs decide the same."""
    while len(await kc_admin.list_users()) < 5:
        await kc_admin.create_user()
    await reconcile(settings, store, keycloak)
    summaries: dict[bool, RunSummary] = {}
    reads: dict[bool, int] = {}
    for snapshot in (True, False):
        with mock.patch.object(store, "find_by_external_ids", wraps=store.find_by_external_ids) as spy:
            summaries[snapshot] = await reconcile(
                override(settings, reconcile_store_snapshot=snapshot), store, keycloak
            )
        reads[snapshot] = spy.call_count
    assert reads == {True: 0, False: -(-summaries[False].listed // settings.apply_batch_size)}
    assert summaries[True].counts() == summaries[False].counts()
    assert summaries[True].applied[Action.UNCHANGED] == summaries[True].listed


@pytest.mark.parametrize("snapshot", [True, False], ids=["snapshot", "reads-by-id"])
async def test_documents_changed_or_removed_during_the_listing_end_the_run_mirrored(
    snapshot: bool,
    settings: Settings,
    store: UserStore,
    keycloak: KeycloakAdminClient,
    kc_admin: KeycloakTestAdmin,
) -> None:
    """After the snapshot is read, someone else changes one stored user and removes another, both listed on
    a later page. Reading each page by id catches that at the page; the snapshot catches it in its closing
    scan and reads both users again. Either way the run ends with the store mirroring Keycloak."""
    while len(await kc_admin.list_users()) < 6:
        await kc_admin.create_user()
    await reconcile(settings, store, keycloak)
    last_two = (await kc_admin.list_users())[-2:]  # Keycloak's listing order: the last page
    small_pages = override(
        settings,
        keycloak_page_size=2,
        keycloak_list_concurrency=1,
        reconcile_store_snapshot=snapshot,
        keycloak_listing="offset",  # the last page is the last two users by username
    )
    meddled: list[str] = []

    async def meddle(progress: Progress) -> None:
        if progress.phase == "listing" and not meddled:  # the first page is applied, the snapshot read
            changed, removed = (user["id"] for user in last_two)
            await store.users.update_one(
                {"external_id": changed}, {"$set": {"first_name": "Meddled", "display_name": "Meddled"}}
            )
            await store.users.delete_one({"external_id": removed})
            meddled.extend([changed, removed])

    async with KeycloakAdminClient(small_pages) as small_client:
        summary = await FullReconcile(small_pages, store, small_client).run(progress=meddle)

    assert summary.outcome is Outcome.SUCCESS and len(meddled) == 2
    assert summary.changed_during_listing == (2 if snapshot else 0)
    assert summary.applied[Action.UPDATED] + summary.applied[Action.CREATED] == 2
    await assert_mirror(kc_admin, store)


async def test_profile_changes_are_updated(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, kc_admin: KeycloakTestAdmin
) -> None:
    ids = [await kc_admin.create_user() for _ in range(3)]
    await reconcile(settings, store, keycloak)
    new_username = f"renamed-{uuid.uuid4().hex[:6]}"
    await kc_admin.update_user(ids[0], firstName="Ada", lastName="Lovelace")
    await kc_admin.update_user(ids[1], email=f"{uuid.uuid4().hex[:6]}@changed.test")
    await kc_admin.update_user(ids[2], username=new_username)

    summary = await reconcile(settings, store, keycloak)

    assert (
        summary.applied[Action.UPDATED] == 3
        and summary.applied[Action.CREATED] == summary.applied[Action.DEACTIVATED] == 0
    )
    docs = await documents(store)
    assert docs[ids[0]]["display_name"] == "Ada Lovelace"
    assert docs[ids[1]]["email"].endswith("@changed.test")
    assert docs[ids[2]]["username"] == new_username
    await assert_mirror(kc_admin, store)


async def test_disabled_and_deleted_users_are_deactivated_and_re_enabled_ones_reactivated(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, kc_admin: KeycloakTestAdmin
) -> None:
    to_disable, to_delete, to_cycle = [await kc_admin.create_user() for _ in range(3)]
    await reconcile(settings, store, keycloak)
    await kc_admin.set_enabled(to_disable, False)
    await kc_admin.delete_user(to_delete)
    await kc_admin.set_enabled(to_cycle, False)

    summary = await reconcile(settings, store, keycloak)

    assert summary.applied[Action.DEACTIVATED] == 3 and summary.candidates == 1
    docs = await documents(store)
    assert docs[to_disable]["deactivation_reason"] == "disabled_in_keycloak"
    assert docs[to_delete]["deactivation_reason"] == "deleted_in_keycloak"
    assert docs[to_delete]["username"]  # soft: the document and its profile stay
    await assert_mirror(kc_admin, store)

    await kc_admin.set_enabled(to_cycle, True)
    summary = await reconcile(settings, store, keycloak)
    assert summary.applied[Action.REACTIVATED] == 1 and summary.applied[Action.DEACTIVATED] == 0
    doc = (await documents(store))[to_cycle]
    assert doc["is_active"] is True and "deactivated_at" not in doc and "deactivation_reason" not in doc
    await assert_mirror(kc_admin, store)


async def test_users_created_and_deleted_while_paging_cause_no_false_deactivation(
    settings: Settings,
    store: UserStore,
    keycloak: KeycloakAdminClient,
    kc_admin: KeycloakTestAdmin,
) -> None:
    while len(await kc_admin.list_users()) < 12:
        await kc_admin.create_user()
    listing = await kc_admin.list_users()  # Keycloak's listing order (by username)
    # Pages are prefetched, so the two users paging skips are at offset 3 or 6 depending on timing: every
    # user that may be deleted or skipped is enabled, so the skipped ones are active candidates.
    to_delete, to_skip = listing[:2], listing[3:8]
    for user in listing[:8]:
        if not user["enabled"]:
            await kc_admin.set_enabled(user["id"], True)
    await reconcile(settings, store, keycloak)
    # One page at a time (tests/fullsync/test_listing.py has the concurrent listing).
    # Offset pages: what a shift of them does (windows under churn: test_listing_roads.py).
    small_pages = override(
        settings, keycloak_page_size=3, keycloak_list_concurrency=1, keycloak_listing="offset"
    )
    deleted: list[str] = []
    created: list[str] = []

    async def meddle(progress: Progress) -> None:
        # After the first page: delete two users that page already listed (every later user moves up two
        # places, so offset paging skips two users it has not seen) and create two new ones.
        if progress.phase == "listing" and progress.listed == 3 and not deleted:
            for user in to_delete:
                await kc_admin.delete_user(user["id"])
                deleted.append(user["id"])
            # Keycloak lists by username: these sort last, so they do not refill the gap, and get listed.
            created.extend([await kc_admin.create_user(f"zz-{uuid.uuid4().hex[:8]}") for _ in range(2)])

    async with KeycloakAdminClient(small_pages) as small_client:
        summary = await FullReconcile(small_pages, store, small_client).run(progress=meddle)

    assert summary.outcome is Outcome.SUCCESS and len(deleted) == 2
    assert summary.candidates == 2  # the two skipped users looked missing...
    assert (
        summary.applied[Action.DEACTIVATED] == 0
    )  # ...but GetUser found them: nobody was wrongly deactivated
    docs = await documents(store)
    assert all(docs[user_id]["is_active"] for user_id in created)
    assert all(docs[user["id"]]["is_active"] for user in to_skip)
    for user in await kc_admin.list_users():
        if user["enabled"] and user["id"] in docs:
            assert docs[user["id"]]["is_active"] is True, f"{user['username']} falsely deactivated"
    # The deletions happened after their users were listed: the next run (or the event path) catches them.
    summary = await reconcile(settings, store, keycloak)
    assert summary.applied[Action.DEACTIVATED] == 2
    await assert_mirror(kc_admin, store)


async def test_keycloak_unreachable_mid_run_fails_the_run_and_deactivates_nothing(
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    keycloak: KeycloakAdminClient,
) -> None:
    await reconcile(settings, store, keycloak)
    gone = await kc_admin.create_user()
    await reconcile(settings, store, keycloak)
    await kc_admin.delete_user(gone)  # a real deactivation candidate
    # One page at a time (tests/fullsync/test_listing.py has pages in flight).
    small_pages = override(
        settings,
        keycloak_page_size=3,
        keycloak_list_concurrency=1,
        keycloak_retry_attempts=2,
        keycloak_listing="offset",  # the requests counted below are offset pages
    )
    dead_port = free_port()

    class SwitchingTransport(httpx.AsyncBaseTransport):
        """A real HTTP transport that, once switched, sends every request to a closed local port."""

        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()
            self.switched = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if self.switched:
                request.url = request.url.copy_with(host="127.0.0.1", port=dead_port)
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    transport = SwitchingTransport()

    def switch_after_first_page(progress: Progress) -> None:
        if progress.phase == "listing" and progress.listed >= 3:
            transport.switched = True

    fast_retries = override(small_pages, retry_request_backoff_s=0.01, retry_request_backoff_max_s=0.02)
    async with KeycloakAdminClient(fast_retries, transport) as client:
        summary = await FullReconcile(small_pages, store, client).run(progress=switch_after_first_page)

    assert summary.outcome is Outcome.FAILED
    assert isinstance(summary.failure, KeycloakUnavailable)
    # Page 1 was applied; page 2 had been requested before the switch (pages are prefetched), page 3 failed.
    assert summary.listed in (3, 6) and summary.applied[Action.DEACTIVATED] == 0
    assert (await documents(store))[gone]["is_active"] is True  # not deactivated by a broken run
    run = await store.get_run(summary.run_id)
    assert run is not None and run.outcome == "failed" and "KeycloakUnavailable" in (run.error or "")
    # Once Keycloak answers again, the candidate is confirmed and deactivated.
    summary = await reconcile(settings, store, keycloak)
    assert summary.applied[Action.DEACTIVATED] == 1
    await assert_mirror(kc_admin, store)


async def test_a_store_outage_shorter_than_the_retries_does_not_fail_the_run(
    stack_env: dict[str, str],
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    keycloak: KeycloakAdminClient,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    """The store goes away after the first page (open connections cut, new ones refused) for longer than one
    command's timeout: the batch is tried again (MONGODB_RETRY_ATTEMPTS) and the run completes."""
    while len(await kc_admin.list_users()) < 7:  # at least three pages of 3
        await kc_admin.create_user()
    proxy = TcpProxy(port_of(stack_env["MONGODB_URI"]))
    await proxy.up()
    flaky = make_settings(
        stack_env,
        keycloak_realm=settings.keycloak_realm,
        mongodb_uri=through(stack_env["MONGODB_URI"], proxy),
        mongodb_database=f"t_store_retry_{uuid.uuid4().hex[:8]}",
        mongodb_timeout_s=1.0,
        mongodb_retry_attempts=20,
        keycloak_page_size=3,
        keycloak_list_concurrency=1,
        retry_request_backoff_s=0.2,
        retry_request_backoff_max_s=0.5,
    )
    retries_before = REGISTRY.get_sample_value("reconciler_store_retries_total") or 0.0
    restored: list[asyncio.Task[None]] = []

    async def back_after_a_retry() -> None:
        async def retries() -> float:
            return REGISTRY.get_sample_value("reconciler_store_retries_total") or 0.0

        await eventually(retries, until=lambda n: n > retries_before, timeout_s=60, what="a store retry")
        await proxy.up()

    async def outage_after_first_page(progress: Progress) -> None:
        if progress.phase == "listing" and progress.listed >= 3 and not restored:
            await proxy.down()
            restored.append(asyncio.create_task(back_after_a_retry()))

    try:
        async with UserStore.from_settings(flaky) as store:
            await store.ensure_indexes()
            summary = await FullReconcile(flaky, store, keycloak).run(progress=outage_after_first_page)
            assert restored, "the outage was never made"
            await restored[0]
            assert summary.outcome is Outcome.SUCCESS, summary.error
            assert (REGISTRY.get_sample_value("reconciler_store_retries_total") or 0.0) > retries_before
            await assert_mirror(kc_admin, store)
    finally:
        for task in restored:
            task.cancel()
        await proxy.down()
        await mongo_client.drop_database(flaky.mongodb_database)


async def test_dry_run_reports_the_drift_and_writes_nothing(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, kc_admin: KeycloakTestAdmin
) -> None:
    await reconcile(settings, store, keycloak)
    fresh = await kc_admin.create_user()
    victim = next(
        u["id"] for u in await kc_admin.list_users() if u["id"] != fresh
    )  # (a random name may sort first)
    await kc_admin.update_user(victim, firstName="Drifted")
    before = await documents(store)
    runs_before = await store.runs.count_documents({})

    summary = await reconcile(settings, store, keycloak, dry_run=True)

    assert summary.dry_run and summary.outcome is Outcome.SUCCESS
    assert summary.applied[Action.CREATED] == 1 and summary.applied[Action.UPDATED] == 1
    assert [item.external_id for item in summary.drift["created"]] == [fresh]
    (updated,) = summary.drift["updated"]
    assert updated.external_id == victim and updated.diff["first_name"][1] == "Drifted"
    assert await documents(store) == before
    assert await store.runs.count_documents({}) == runs_before
    json.dumps(summary.to_dict())  # JSON-ready
    await reconcile(settings, store, keycloak)
    await assert_mirror(kc_admin, store)


async def test_guard_stops_a_run_whose_listing_is_empty(
    stack_env: dict[str, str],
    settings: Settings,
    store: UserStore,
    keycloak: KeycloakAdminClient,
    kc_admin: KeycloakTestAdmin,
    mongo_client: AsyncMongoClient[dict[str, Any]],
) -> None:
    """Point the reconcile at an empty realm: every local user looks deleted, the guard refuses."""
    empty_realm = f"empty-{uuid.uuid4().hex[:8]}"
    database = f"t_guard_{uuid.uuid4().hex[:8]}"
    await kc_admin.create_realm(json.loads(REALM_FILE.read_text()), empty_realm)
    full = make_settings(stack_env, keycloak_realm=settings.keycloak_realm, mongodb_database=database)
    empty = make_settings(stack_env, keycloak_realm=empty_realm, mongodb_database=database)
    try:
        async with (
            UserStore.from_settings(full) as guard_store,
            KeycloakAdminClient(empty) as empty_client,
        ):
            await guard_store.ensure_indexes()
            await reconcile(full, guard_store, keycloak)
            active = await guard_store.count_active()
            assert active > 5
            before = await documents(guard_store)
            trips = guard_trips_total()

            summary = await FullReconcile(empty, guard_store, empty_client).run()

            assert summary.outcome is Outcome.GUARD_TRIPPED and summary.guard_tripped
            assert (
                summary.listed == 0
                and summary.candidates == active
                and summary.applied[Action.DEACTIVATED] == 0
            )
            assert guard_trips_total() == trips + 1
            assert await documents(guard_store) == before  # nothing deactivated, nothing confirmed
            run = await guard_store.get_run(summary.run_id)
            assert run is not None and run.outcome == "guard_tripped"

            # An operator who really means it can override; every candidate is still confirmed first.
            summary = await FullReconcile(empty, guard_store, empty_client).run(allow_mass_deactivation=True)
            assert summary.outcome is Outcome.SUCCESS and summary.applied[Action.DEACTIVATED] == active
            assert await guard_store.count_active() == 0
    finally:
        await kc_admin.delete_realm(empty_realm)
        if not os.environ.get("KEEP_TEST_DATABASES"):
            await mongo_client.drop_database(database)


async def test_event_style_observe_and_apply(
    settings: Settings, store: UserStore, keycloak: KeycloakAdminClient, kc_admin: KeycloakTestAdmin
) -> None:
    applier = Applier(store, keycloak, settings)
    user_id = await kc_admin.create_user()
    result = await applier.observe_and_apply([user_id], ApplyPolicy.event())
    assert result.counts["created"] == 1
    assert (await store.get_user(user_id) or {})["synced_by"] == "event"
    await kc_admin.delete_user(user_id)
    result = await applier.observe_and_apply([user_id], ApplyPolicy.event())
    assert result.counts["deactivated"] == 1
    ghost = str(uuid.uuid4())
    result = await applier.observe_and_apply([ghost], ApplyPolicy.event())
    assert result.written == 0 and await store.get_user(ghost) is None


async def test_groups_and_realm_roles_are_mirrored_when_enabled(
    stack_env: dict[str, str],
    settings: Settings,
    store: UserStore,
    keycloak: KeycloakAdminClient,
    kc_admin: KeycloakTestAdmin,
) -> None:
    with_access = make_settings(
        stack_env,
        keycloak_realm=settings.keycloak_realm,
        mongodb_database=settings.mongodb_database,
        sync_groups_and_roles=True,
    )
    user_id = await kc_admin.create_user()
    group = f"team-{uuid.uuid4().hex[:6]}"
    role = f"role-{uuid.uuid4().hex[:6]}"
    await kc_admin.add_to_group(user_id, await kc_admin.create_group(group))
    await kc_admin.grant_realm_role(user_id, await kc_admin.create_realm_role(role))

    summary = await reconcile(with_access, store, keycloak)
    assert summary.outcome is Outcome.SUCCESS
    doc = await store.get_user(user_id)
    assert doc is not None and doc["groups"] == [group]
    assert role in doc["realm_roles"] and doc["realm_roles"] == sorted(doc["realm_roles"])
    summary = await reconcile(with_access, store, keycloak)
    assert (
        summary.applied[Action.UPDATED] == summary.applied[Action.CREATED] == 0
    )  # stable: sorted names compare equal


@pytest.mark.parametrize("enabled", [True, "unreadable"], ids=["readable", "unreadable"])
async def test_a_listing_that_never_ends_fails_the_run(
    stack_env: dict[str, str], mongo_client: AsyncMongoClient[dict[str, Any]], enabled: object
) -> None:
    """Edge case a real Keycloak does not produce: `first` ignored, the same full page forever (also when
    that page holds only users that cannot be read, which the run sets aside)."""
    page = [{"id": str(uuid.uuid4()), "username": f"user-{n}", "enabled": enabled} for n in range(2)]

    def keycloak_ignoring_first(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "token", "expires_in": 300})
        if request.url.path.endswith("/users/count"):
            return httpx.Response(200, json=2)
        return httpx.Response(200, json=page)

    async with scripted_keycloak(stack_env, mongo_client, keycloak_ignoring_first) as (
        settings,
        store,
        client,
    ):
        summary = await FullReconcile(settings, store, client).run()
    assert summary.outcome is Outcome.FAILED and isinstance(summary.failure, KeycloakProtocolError)
    assert "does not end" in (summary.error or "") and summary.applied[Action.DEACTIVATED] == 0


def unreadable_users_total() -> float:
    return REGISTRY.get_sample_value("reconciler_reconcile_unreadable_users_total") or 0.0


async def test_a_user_that_cannot_be_read_is_left_as_stored_and_the_run_goes_on(
    stack_env: dict[str, str], mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    """Edge case a real Keycloak does not produce: one listed representation is unreadable (`enabled` is not
    a boolean). The run must not fail for everyone because of it, nor deactivate that user."""
    users = [
        {"id": str(uuid.uuid4()), "username": f"user-{n}", "enabled": True, "lastName": "v1"}
        for n in range(5)
    ]
    listing_firsts: list[int] = []

    def keycloak(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "token", "expires_in": 300})
        if path.endswith("/users/count"):
            return httpx.Response(200, json=len(users) + 1)
        if path.endswith("/users"):
            first, size = int(request.url.params["first"]), int(request.url.params["max"])
            listing_firsts.append(first)
            return httpx.Response(200, json=users[first : first + size])
        return httpx.Response(404)

    async with scripted_keycloak(stack_env, mongo_client, keycloak) as (settings, own_store, client):
        first_run = await FullReconcile(settings, own_store, client).run()
        assert first_run.ok and first_run.applied[Action.CREATED] == 5
        poisoned = users[2]["id"]
        users[2] = {**users[2], "enabled": "maybe", "lastName": "v2"}
        users[3] = {**users[3], "lastName": "v2"}
        users.append({"username": "no-id", "enabled": True})  # not even a valid id
        before = unreadable_users_total()
        listing_firsts.clear()
        summary = await FullReconcile(settings, own_store, client).run()
        docs = await documents(own_store)
        firsts = list(listing_firsts)
        checked = verify_report(await FullReconcile(settings, own_store, client).run(dry_run=True))
    assert summary.ok, summary
    assert summary.unreadable == 2 and summary.listed == 4
    assert (
        summary.applied[Action.UPDATED] == 1
        and summary.applied[Action.DEACTIVATED] == 0
        and summary.candidates == 0
    )
    assert unreadable_users_total() == before + 2
    assert sorted(firsts) == [0, 2, 4, 6]  # pages count the unreadable items too (requested concurrently)
    assert docs[poisoned]["is_active"] is True and docs[poisoned]["last_name"] == "v1"  # left as stored
    assert docs[users[3]["id"]]["last_name"] == "v2"
    # `verify` cannot call a store in sync with users it could not compare.
    assert checked["unreadable"] == 2 and checked["in_sync"] is False
