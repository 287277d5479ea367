"""The full reconcile's two listing roads on the real stack: creation-time windows (Keycloak 26.6+) and offset
pages give the same store, `auto` takes the road the Keycloak supports, and a windowed run under churn
(creates, deletes, updates, and an import of users sharing one creation millisecond into a window being
listed) deactivates nobody wrongly and misses nobody present for the whole run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.outcomes import Outcome
from reconciler.fullsync.reconcile import FullReconcile, RunSummary
from reconciler.fullsync.windowed import Road, probe_road
from tests.conftest import make_settings
from tests.fullsync.test_reconcile import assert_mirror, documents
from tests.support.keycloak_admin import KeycloakTestAdmin

pytestmark = pytest.mark.stack

PAGE = 10  # windows of at most 9 users: the realm below is tens of windows
BLOCK = 40  # users imported with one createdTimestamp: an offset-paged window of 5 pages
COMPARED = (
    "external_id",
    "username",
    "email",
    "email_verified",
    "first_name",
    "last_name",
    "display_name",
    "avatar_url",
    "is_active",
    "deactivation_reason",
)


async def keycloak_version(kc_admin: KeycloakTestAdmin) -> tuple[int, ...]:
    info = (await kc_admin.request("GET", "/admin/serverinfo")).json()
    return tuple(int(part) for part in info["systemInfo"]["version"].split(".")[:2])


def imported(prefix: str, count: int, created_ms: int | None, **extra: Any) -> list[dict[str, Any]]:
    users = []
    for i in range(count):
        name = f"{prefix}-{i:03d}-{uuid.uuid4().hex[:6]}"
        user: dict[str, Any] = {
            "username": name,
            "email": f"{name}@example.test",
            "firstName": "Road",
            "lastName": f"User{i}",
            "enabled": i % 7 != 3,
            "emailVerified": i % 2 == 0,
            "attributes": {"picture": [f"https://pics.example.test/{name}.png"]} if i % 5 == 0 else {},
            **extra,
        }
        if created_ms is not None:
            user["createdTimestamp"] = created_ms
        users.append(user)
    return users


@pytest.fixture(scope="module")
async def seeded(kc_admin: KeycloakTestAdmin) -> tuple[int, ...]:
    """About 120 users: spread over a year, a block sharing one millisecond, and some created just now."""
    version = await keycloak_version(kc_admin)
    base = 1_700_000_000_000
    spread = [
        user | {"createdTimestamp": base + i * 790_000_000}
        for i, user in enumerate(imported("spread", 40, 0))
    ]
    await kc_admin.partial_import_users(spread)
    await kc_admin.partial_import_users(imported("block", BLOCK, base + 123_456))
    for i in range(40):
        await kc_admin.create_user(f"now-{i:03d}-{uuid.uuid4().hex[:6]}", enabled=i % 9 != 0)
    return version


@pytest.fixture
async def fresh_store(
    stack_env: dict[str, str], mongo_client: AsyncMongoClient[dict[str, Any]], realm: str
) -> AsyncIterator[tuple[Settings, UserStore]]:
    settings = make_settings(
        stack_env,
        mongodb_database=f"t_roads_{uuid.uuid4().hex[:8]}",
        keycloak_realm=realm,
        keycloak_page_size=PAGE,
    )
    try:
        async with UserStore.from_settings(settings) as store:
            await store.ensure_indexes()
            yield settings, store
    finally:
        await mongo_client.drop_database(settings.mongodb_database)


async def reconcile(settings: Settings, store: UserStore, road: str, **changes: Any) -> RunSummary:
    settings = Settings(_env_file=None, **{**dict(settings), "keycloak_listing": road, **changes})  # type: ignore[call-arg]
    async with KeycloakAdminClient(settings) as keycloak:
        summary = await FullReconcile(settings, store, keycloak).run()
    assert summary.outcome is Outcome.SUCCESS, summary
    return summary


def projection(docs: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {key: tuple(doc.get(name) for name in COMPARED) for key, doc in docs.items()}


async def test_auto_takes_windows_on_26_6_and_later_and_offset_pages_before(
    seeded: tuple[int, ...], fresh_store: tuple[Settings, UserStore]
) -> None:
    settings, _ = fresh_store
    async with KeycloakAdminClient(settings) as keycloak:
        total = await keycloak.count_users()
        road = await probe_road(keycloak, total)
    assert total > BLOCK
    assert road is (Road.WINDOWS if seeded >= (26, 6) else Road.OFFSET)


async def test_windows_and_offset_pages_give_the_same_store(
    seeded: tuple[int, ...],
    fresh_store: tuple[Settings, UserStore],
    stack_env: dict[str, str],
    mongo_client: AsyncMongoClient[dict[str, Any]],
    kc_admin: KeycloakTestAdmin,
) -> None:
    if seeded < (26, 6):
        pytest.skip("Keycloak before 26.6 does not filter by creation time: offset pages only")
    settings, by_windows = fresh_store
    windowed = await reconcile(settings, by_windows, "windows")
    offset_settings = make_settings(
        stack_env,
        mongodb_database=f"t_roads_{uuid.uuid4().hex[:8]}",
        keycloak_realm=settings.keycloak_realm,
        keycloak_page_size=PAGE,
    )
    try:
        async with UserStore.from_settings(offset_settings) as by_offset:
            await by_offset.ensure_indexes()
            offset = await reconcile(offset_settings, by_offset, "offset")
            offset_docs = await documents(by_offset)
    finally:
        await mongo_client.drop_database(offset_settings.mongodb_database)

    windowed_docs = await documents(by_windows)
    assert projection(windowed_docs) == projection(offset_docs)
    assert windowed.listed == offset.listed == len(windowed_docs)
    assert not any(doc["username"].startswith("service-account-") for doc in windowed_docs.values())
    await assert_mirror(kc_admin, by_windows)


async def test_churn_during_a_windowed_run_deactivates_nobody_wrongly_and_misses_nobody(
    seeded: tuple[int, ...], fresh_store: tuple[Settings, UserStore], kc_admin: KeycloakTestAdmin
) -> None:
    """Half the store is dropped before the run: a user the listing missed would stay missing (nothing
    confirms a user the store does not have), one it listed wrongly absent would be a candidate."""
    if seeded < (26, 6):
        pytest.skip("Keycloak before 26.6 does not filter by creation time: offset pages only")
    settings, store = fresh_store
    await reconcile(settings, store, "windows")
    before = {user["id"]: user for user in await kc_admin.list_users()}
    block_ms = next(u["createdTimestamp"] for u in before.values() if u["username"].startswith("block-"))
    # Deletions outside the block: inside its offset-paged window a deletion between two of its pages may
    # hide a user until the next run (the GetUser confirmation keeps it active; test_windowed.py models it).
    outside = sorted(
        user_id
        for user_id, user in before.items()
        if user["createdTimestamp"] != block_ms and user["enabled"]  # a disabled one stays "disabled"
    )
    victims = outside[::7]
    updated = outside[3::7]
    dropped = sorted(before)[::2]
    await store.users.delete_many({"external_id": {"$in": dropped}})
    deleted: set[str] = set()
    imported_names: set[str] = set()

    async def churn() -> None:
        for i, victim in enumerate(victims):
            await kc_admin.delete_user(victim)
            deleted.add(victim)
            if i < len(updated):
                await kc_admin.update_user(updated[i], lastName=f"Changed{i}")
            await kc_admin.create_user(f"during-{i:03d}-{uuid.uuid4().hex[:6]}")
            if i == 2:
                # An import into the block's millisecond while its offset-paged window may be listed:
                # it shifts the block's later pages right (a user listed twice), never hides one.
                users = imported("late-block", 30, block_ms)
                imported_names.update(user["username"] for user in users)
                await kc_admin.partial_import_users(users)

    # Slow requests: the run lasts several seconds, so the churn lands while the windows are being listed.
    run = asyncio.create_task(reconcile(settings, store, "windows", keycloak_max_requests_per_s=8))
    await churn()
    churn_ended_first = not run.done()
    summary = await run

    docs = await documents(store)
    now = {user["id"]: user for user in await kc_admin.list_users()}
    for user_id in set(before) - deleted:  # present for the whole run: listed, right, not deactivated
        doc = docs.get(user_id)
        assert doc is not None, f"{before[user_id]['username']} was missed"
        assert doc["is_active"] is now[user_id]["enabled"], (doc["username"], doc.get("deactivation_reason"))
    assert summary.candidates <= len(deleted)  # only users deleted during the run may go unlisted
    assert not summary.guard_tripped
    assert churn_ended_first, "the run ended before the churn: nothing was tested"
    assert imported_names <= {user["username"] for user in now.values()}

    # The next run, without churn, leaves the store an exact mirror.
    await reconcile(settings, store, "windows")
    await assert_mirror(kc_admin, store)
