"""The store's erasure on the real store: guarded like every write, once per document, ids kept; a write
that must yield to an erasure (`unless_erased`) does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.clients.store import UserStore
from reconciler.domain.attributes import AttributeMap
from reconciler.domain.document import F, UserWrite, WriteStatus

pytestmark = pytest.mark.stack

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
# A custom mirrored field beside the default one: erasure removes both (they are personal data).
PERSONAL = AttributeMap.parse("picture=avatar_url,department=department").personal_fields


async def put(store: UserStore, *, active: bool, reason: str | None, deactivated_at: datetime | None) -> str:
    external_id = str(uuid.uuid4())
    fields: dict[str, Any] = {
        F.USERNAME: "someone",
        F.EMAIL: "someone@example.test",
        F.EMAIL_VERIFIED: True,
        F.FIRST_NAME: "Some",
        F.LAST_NAME: "One",
        F.DISPLAY_NAME: "Some One",
        "avatar_url": None,
        "department": "Finance",
        F.GROUPS: ["g"],
        F.IS_ACTIVE: active,
    }
    if not active:
        fields |= {F.DEACTIVATION_REASON: reason, F.DEACTIVATED_AT: deactivated_at}
    write = UserWrite(external_id, T0, fields, insert_fields={F.EXTERNAL_ID: external_id}, expect_absent=True)
    assert await store.write_users([write]) == (WriteStatus.INSERTED,)
    return external_id


async def test_due_erasures_erase_each_deleted_user_once_and_keep_its_ids(store: UserStore) -> None:
    old = await put(store, active=False, reason="deleted_in_keycloak", deactivated_at=T0)
    recent = await put(
        store, active=False, reason="deleted_in_keycloak", deactivated_at=T0 + timedelta(days=2)
    )
    disabled = await put(store, active=False, reason="disabled_in_keycloak", deactivated_at=T0)
    active = await put(store, active=True, reason=None, deactivated_at=None)
    cutoff = T0 + timedelta(days=1)
    assert await store.due_erasures(cutoff, 100) == [old]

    doc_id = await store.erase_user(old, T0 + timedelta(days=3), PERSONAL, deleted_before=cutoff)
    doc = await store.get_user(old)
    assert doc is not None and doc[F.ID] == doc_id
    assert not set(doc) & set(PERSONAL)
    assert "department" not in doc
    assert doc[F.ERASED_AT] == T0 + timedelta(days=3) and doc[F.EXTERNAL_ID] == old
    assert await store.erase_user(old, T0 + timedelta(days=4), PERSONAL) is None  # once
    assert await store.due_erasures(cutoff, 100) == []
    for not_due in (recent, disabled, active):
        assert await store.erase_user(not_due, T0, PERSONAL, deleted_before=cutoff) is None
    assert await store.erase_user(active, T0, PERSONAL) is None  # an active document is never erased
    assert await store.erase_user(disabled, T0, PERSONAL) is not None  # on request (forced): any inactive one


async def test_a_write_that_yields_to_an_erasure_is_stale_against_an_erased_document(
    store: UserStore,
) -> None:
    user_id = await put(store, active=False, reason="disabled_in_keycloak", deactivated_at=T0)
    profile = {F.EMAIL: "back@example.test", F.FIRST_NAME: "Back"}
    plain = UserWrite(user_id, T0 + timedelta(seconds=1), profile, unless_erased=True)
    assert await store.write_users([plain]) == (WriteStatus.UPDATED,)  # not erased: written
    assert await store.erase_user(user_id, T0 + timedelta(seconds=2), PERSONAL) is not None
    later = T0 + timedelta(seconds=3)
    upsert = UserWrite(user_id, later, profile, insert_fields={F.EXTERNAL_ID: user_id}, unless_erased=True)
    assert await store.write_users([upsert]) == (WriteStatus.STALE,)
    plain = UserWrite(user_id, later, profile, unless_erased=True)
    assert await store.write_users([plain]) == (WriteStatus.STALE,)
    doc = await store.get_user(user_id)
    assert doc is not None and F.EMAIL not in doc and doc[F.ERASED_AT] is not None
