"""What a complete mirror looks like: the store's documents against every Keycloak user (shared by the full
reconcile, listing and listing-road tests)."""

from __future__ import annotations

import uuid
from typing import Any

from reconciler.clients.store import UserStore
from reconciler.domain.attributes import DEFAULT_ATTRIBUTE_MAP, AttributeMap
from tests.support.keycloak_admin import KeycloakTestAdmin


async def documents(store: UserStore) -> dict[str, dict[str, Any]]:
    """Every stored document, by Keycloak id."""
    return {doc["external_id"]: doc async for doc in store.users.find({})}


async def assert_mirror(
    kc_admin: KeycloakTestAdmin, store: UserStore, mirrored: AttributeMap = DEFAULT_ATTRIBUTE_MAP
) -> None:
    """Every Keycloak user is mirrored exactly (with the attributes of `mirrored`); every other local user is
    deactivated as deleted."""
    kc_users = {u["id"]: u for u in await kc_admin.list_users()}
    docs = await documents(store)
    for user_id, user in kc_users.items():
        doc = docs.get(user_id)
        assert doc is not None, f"user {user['username']} not in the store"
        first, last = user.get("firstName") or None, user.get("lastName") or None
        assert doc["username"] == user["username"]
        assert doc["email"] == (user.get("email") or None)
        assert doc["email_verified"] is user.get("emailVerified", False)
        assert doc["first_name"] == first and doc["last_name"] == last
        assert doc["display_name"] == (" ".join(p for p in (first, last) if p) or user["username"])
        for attribute, field in mirrored.pairs:
            assert doc[field] == ((user.get("attributes") or {}).get(attribute) or [None])[0]
        assert doc["is_active"] is user["enabled"]
        if user["enabled"]:
            assert "deactivated_at" not in doc and "deactivation_reason" not in doc
        else:
            assert doc["deactivation_reason"] == "disabled_in_keycloak" and doc["deactivated_at"]
        assert uuid.UUID(doc["_id"]) and doc["_id"] != user_id
    for user_id, doc in docs.items():
        if user_id not in kc_users:
            assert doc["is_active"] is False, f"{doc.get('username')} is gone from Keycloak but active"
            assert doc["deactivation_reason"] == "deleted_in_keycloak"
