"""The reference: a faithful port of the seed's per-user full sync, to measure the reconciler against.

The seed's algorithm, kept as it was:

1. page through Keycloak's users (here with the very same client calls, page size and representation as
   the reconciler: `list_users(first, page_size, brief=False)`);
2. for every listed user: `FindByExternalID` (one `find_one`), then, when the user is new or differs, a
   `Save` (one `insert_one` or `replace_one`): one store round trip per operation, one user after the other;
3. then for every active local id the listing did not contain: `FindByExternalID` and `Deactivate` (one
   round trip each). No confirmation read, no guard: that is how the seed did it.

The documents have the reconciler's field names so that both sides store the same thing, and the reference
gets the same unique `external_id` index (without it every `find_one` would scan the collection: the
comparison would be unfair to the seed).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.domain.models import KeycloakUser

Document = dict[str, Any]


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def mapped_fields(user: KeycloakUser) -> Document:
    """The seed's mapping of a Keycloak user to the local document's mirrored fields."""
    name = " ".join(p for p in (_clean(user.first_name), _clean(user.last_name)) if p) or user.username
    return {
        "username": user.username,
        "email": _clean(user.email),
        "email_verified": user.email_verified,
        "first_name": _clean(user.first_name),
        "last_name": _clean(user.last_name),
        "display_name": name,
        "avatar_url": _clean(user.attribute("picture")),
        "is_active": user.enabled,
    }


class SeedUserRepository:
    """The seed's repository: every method is exactly one store round trip."""

    def __init__(self, users: AsyncCollection[Document]) -> None:
        self.users = users

    async def ensure_indexes(self) -> None:
        await self.users.create_index([("external_id", ASCENDING)], unique=True, name="external_id_unique")
        await self.users.create_index([("is_active", ASCENDING)], name="is_active")

    async def find_by_external_id(self, external_id: str) -> Document | None:
        return await self.users.find_one({"external_id": external_id})

    async def save(self, doc: Document) -> None:
        if "_id" in doc:
            await self.users.replace_one({"_id": doc["_id"]}, doc)
        else:
            await self.users.insert_one({**doc, "_id": str(uuid.uuid4())})

    async def deactivate(self, doc_id: str, reason: str) -> None:
        now = _now()
        await self.users.update_one(
            {"_id": doc_id},
            {
                "$set": {
                    "is_active": False,
                    "deactivated_at": now,
                    "deactivation_reason": reason,
                    "updated_at": now,
                }
            },
        )

    async def active_external_ids(self) -> list[str]:
        return [d["external_id"] async for d in self.users.find({"is_active": True}, {"external_id": 1})]


@dataclass(slots=True)
class ReferenceSummary:
    listed: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deactivated: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deactivated": self.deactivated,
        }


def _created_document(user: KeycloakUser, now: datetime) -> Document:
    """The document the seed's create branch writes for a user it has not stored."""
    doc: Document = {"external_id": user.id, **mapped_fields(user), "created_at": now, "updated_at": now}
    if not user.enabled:
        doc |= {"deactivated_at": now, "deactivation_reason": "disabled_in_keycloak"}
    return doc


async def reference_sync(
    keycloak: KeycloakAdminClient, repo: SeedUserRepository, page_size: int
) -> ReferenceSummary:
    """One full sync the seed's way (see the module docstring)."""
    summary = ReferenceSummary()
    seen: set[str] = set()
    first = 0
    while True:
        users = await keycloak.list_users(first, page_size, brief=False)
        for user in users:
            seen.add(user.id)
            summary.listed += 1
            doc = await repo.find_by_external_id(user.id)
            fields = mapped_fields(user)
            now = _now()
            if doc is None:
                await repo.save(_created_document(user, now))
                summary.created += 1
            elif any(doc.get(k) != v for k, v in fields.items()):
                doc.update(fields, updated_at=now)
                if user.enabled:
                    doc.pop("deactivated_at", None)
                    doc.pop("deactivation_reason", None)
                elif "deactivated_at" not in doc:
                    doc |= {"deactivated_at": now, "deactivation_reason": "disabled_in_keycloak"}
                await repo.save(doc)
                summary.updated += 1
            else:
                summary.unchanged += 1
        if len(users) < page_size:
            break
        first += len(users)
    for external_id in await repo.active_external_ids():
        if external_id in seen:
            continue
        doc = await repo.find_by_external_id(external_id)
        if doc is not None and doc.get("is_active"):
            await repo.deactivate(doc["_id"], "deleted_in_keycloak")
            summary.deactivated += 1
    return summary


async def bulk_fill(keycloak: KeycloakAdminClient, repo: SeedUserRepository, page_size: int) -> int:
    """The store as the seed's cold run leaves it (its create branch, page by page), written with one
    insert_many per page: the bench's untimed preparation of a large realm, where the cold run itself (one
    round trip per user) would take most of an hour."""
    filled = 0
    first = 0
    while True:
        users = await keycloak.list_users(first, page_size, brief=False)
        docs = [{**_created_document(user, _now()), "_id": str(uuid.uuid4())} for user in users]
        if docs:
            await repo.users.insert_many(docs, ordered=False)
        filled += len(docs)
        if len(users) < page_size:
            return filled
        first += len(users)
