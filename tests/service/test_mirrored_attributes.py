"""MIRRORED_ATTRIBUTES on the real stack: a custom attribute (`department`) beside the default `picture` is
mirrored by the full reconcile (full pages) and the event path, and erased with the other personal fields;
an empty mapping lists brief pages on both roads and still mirrors the realm."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from reconciler.apply.applier import Applier
from reconciler.apply.erasure import Eraser
from reconciler.apply.erasure import Outcome as Erased
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.attributes import AttributeMap
from reconciler.domain.document import F
from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import Action, ApplyPolicy
from reconciler.fullsync.reconcile import FullReconcile, RunSummary
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.mirror import assert_mirror, documents
from tests.support.service import running_service, until_stored

pytestmark = pytest.mark.stack

MAPPING = "picture=avatar_url,department=department"
PICTURE = "https://img.example.test/m.png"


@pytest.fixture(scope="module")
async def realm_keeps_attributes(kc_admin: KeycloakTestAdmin) -> None:
    """Keycloak >= 24 keeps only declared attributes; the module's realm keeps any (unmanaged: enabled)."""
    profile = (await kc_admin.request("GET", "/users/profile")).json()
    await kc_admin.request("PUT", "/users/profile", json={**profile, "unmanagedAttributePolicy": "ENABLED"})


@pytest.fixture(scope="module")
def mapped(settings: Settings) -> Settings:
    return override(settings, mirrored_attributes=MAPPING)


@contextlib.asynccontextmanager
async def listing_requests(client: KeycloakAdminClient) -> AsyncIterator[list[httpx.URL]]:
    """The URLs of the user listings the client sends meanwhile (as they go on the wire)."""
    seen: list[httpx.URL] = []

    async def note(request: httpx.Request) -> None:
        if request.url.path.endswith("/users"):
            seen.append(request.url)

    http = client._http
    hooks = http.event_hooks
    http.event_hooks = {**hooks, "request": [*hooks["request"], note]}
    try:
        yield seen
    finally:
        http.event_hooks = hooks


async def reconcile_recording(settings: Settings, store: UserStore) -> tuple[RunSummary, set[str]]:
    """One full reconcile; its summary and the `briefRepresentation` values its listing requests carried."""
    async with KeycloakAdminClient(settings) as keycloak, listing_requests(keycloak) as seen:
        summary = await FullReconcile(settings, store, keycloak).run()
    assert summary.outcome is Outcome.SUCCESS, summary
    assert seen, "the run listed nothing"
    return summary, {url.params.get("briefRepresentation", "") for url in seen}


async def test_the_full_reconcile_lists_full_pages_and_mirrors_the_mapped_fields(
    mapped: Settings, store: UserStore, kc_admin: KeycloakTestAdmin, realm_keeps_attributes: None
) -> None:
    both = await kc_admin.create_user(attributes={"picture": [PICTURE], "department": ["Finance"]})
    department = await kc_admin.create_user(attributes={"department": ["Sales", "Support"]})
    neither = await kc_admin.create_user()

    summary, brief = await reconcile_recording(mapped, store)
    assert brief == {"false"}  # an attribute is mirrored: every page is a full representation
    assert summary.applied[Action.CREATED] == 3
    docs = await documents(store)
    assert (docs[both]["avatar_url"], docs[both]["department"]) == (PICTURE, "Finance")
    assert (docs[department]["avatar_url"], docs[department]["department"]) == (None, "Sales")  # the first
    assert (docs[neither]["avatar_url"], docs[neither]["department"]) == (None, None)
    await assert_mirror(kc_admin, store, AttributeMap.parse(MAPPING))

    # A changed attribute is an update of its field alone; a removed one is stored as null.
    await kc_admin.update_user(department, attributes={"department": ["Legal"]})
    await kc_admin.update_user(both, attributes={"picture": [PICTURE]})
    summary, _ = await reconcile_recording(mapped, store)
    assert summary.applied[Action.UPDATED] == 2 and summary.applied[Action.CREATED] == 0
    docs = await documents(store)
    assert docs[department]["department"] == "Legal"
    assert docs[both]["department"] is None and docs[both]["avatar_url"] == PICTURE
    summary, _ = await reconcile_recording(mapped, store)
    assert summary.applied[Action.UPDATED] == 0  # the mapped fields compare equal once written


@pytest.mark.parametrize("road", ["offset", "windows"])
async def test_an_empty_mapping_lists_brief_pages_on_both_roads_and_mirrors_the_realm(
    road: str,
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    realm_keeps_attributes: None,
) -> None:
    await kc_admin.create_user(attributes={"picture": [PICTURE], "department": ["Finance"]})
    plain = override(
        settings,
        mirrored_attributes="",
        keycloak_listing=road,
        mongodb_database=f"t_brief_{road}_{uuid.uuid4().hex[:8]}",
    )
    try:
        async with UserStore.from_settings(plain) as store:
            await store.ensure_indexes()
            summary, brief = await reconcile_recording(plain, store)
            assert brief == {"true"}  # no attribute mirrored: every page is brief
            assert summary.applied[Action.CREATED] == summary.listed > 0
            await assert_mirror(kc_admin, store, AttributeMap.parse(""))
            docs = await documents(store)
            assert not any({"avatar_url", "department"} & set(doc) for doc in docs.values())
            summary, _ = await reconcile_recording(plain, store)
            assert summary.applied[Action.UPDATED] == summary.applied[Action.CREATED] == 0
    finally:
        await mongo_client.drop_database(plain.mongodb_database)


async def test_the_event_path_mirrors_the_mapped_fields(
    mapped: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any, realm_keeps_attributes: None
) -> None:
    events = override(
        mapped,
        kafka_group_id=f"test-mirrored-{uuid.uuid4().hex[:8]}",
        consumer_start_offset="latest",
        reconcile_enabled=False,
        http_enabled=False,
    )
    async with running_service(events):
        user_id = await kc_admin.create_user(attributes={"picture": [PICTURE], "department": ["Finance"]})
        doc = await until_stored(
            users_collection, user_id, "created with its attributes", avatar_url=PICTURE, department="Finance"
        )
        assert doc["synced_by"] == "event"
        await kc_admin.update_user(user_id, attributes={"picture": [PICTURE], "department": ["Research"]})
        await until_stored(users_collection, user_id, "department changed", department="Research")
        await kc_admin.update_user(user_id, attributes={"department": ["Research"]})
        await until_stored(
            users_collection, user_id, "picture removed", avatar_url=None, department="Research"
        )


async def test_erasure_removes_the_mapped_fields(
    mapped: Settings, store: UserStore, kc_admin: KeycloakTestAdmin, realm_keeps_attributes: None
) -> None:
    user_id = await kc_admin.create_user(attributes={"picture": [PICTURE], "department": ["Finance"]})
    async with KeycloakAdminClient(mapped) as keycloak:
        applier = Applier(store, keycloak, mapped)
        await applier.observe_and_apply([user_id], ApplyPolicy.event())
        doc = await store.get_user(user_id)
        assert doc is not None and doc["department"] == "Finance" and doc["avatar_url"] == PICTURE
        await kc_admin.delete_user(user_id)
        erasure = await Eraser(store, mapped).erase_request(applier, user_id)
    assert erasure.outcome is Erased.ERASED, erasure
    doc = await store.get_user(user_id)
    assert doc is not None and doc.get(F.ERASED_AT) is not None
    assert not {"department", "avatar_url", F.EMAIL, F.USERNAME} & set(doc), doc
