"""The local user document: its field names, the guarded write the apply core decides, and the clock.

Pure data shared by the apply core (`domain.plan`), the full reconcile's snapshot and the store adapter
(`clients.store`), which executes `UserWrite`s; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final


class F:
    """Field names of the local user document (docs/ARCHITECTURE.md, "The local user document"): the
    document's own fields. Mirrored attributes (`domain.attributes`, e.g. `avatar_url`) add fields of their
    own, never one of these."""

    ID: Final = "_id"  # the application's own stable UUID string, generated at creation
    EXTERNAL_ID: Final = "external_id"  # Keycloak id (unique index)
    USERNAME: Final = "username"
    EMAIL: Final = "email"
    EMAIL_VERIFIED: Final = "email_verified"
    FIRST_NAME: Final = "first_name"
    LAST_NAME: Final = "last_name"
    DISPLAY_NAME: Final = "display_name"
    IS_ACTIVE: Final = "is_active"
    DEACTIVATED_AT: Final = "deactivated_at"
    DEACTIVATION_REASON: Final = "deactivation_reason"
    CREATED_AT: Final = "created_at"
    UPDATED_AT: Final = "updated_at"
    OBSERVED_AT: Final = "observed_at"
    SYNCED_BY: Final = "synced_by"
    GROUPS: Final = "groups"  # only with group/role sync on
    REALM_ROLES: Final = "realm_roles"
    ORGANIZATIONS: Final = "organizations"  # only with ORGANIZATIONS_ENABLED (plan.organization_entries)
    ERASED_AT: Final = "erased_at"  # set when the personal fields were erased; absent otherwise


# The fields `plan.desired_document` yields for a found user when groups and roles are not mirrored, besides
# the mirrored attributes' (`attributes.AttributeMap.profile_fields` adds them).
PROFILE_FIELDS: Final[tuple[str, ...]] = (
    F.USERNAME,
    F.EMAIL,
    F.EMAIL_VERIFIED,
    F.FIRST_NAME,
    F.LAST_NAME,
    F.DISPLAY_NAME,
    F.IS_ACTIVE,
    F.DEACTIVATION_REASON,
)

# What the apply core reads back to compare (never the whole document), besides the mirrored attributes'
# fields (`attributes.AttributeMap.compared_projection`).
COMPARED_PROJECTION: Final[tuple[str, ...]] = (
    F.EXTERNAL_ID,
    *PROFILE_FIELDS,
    F.DEACTIVATED_AT,
    F.OBSERVED_AT,
    F.GROUPS,
    F.REALM_ROLES,
    F.ORGANIZATIONS,
    F.ERASED_AT,
)

# Erasure removes these from a document: the profile (everything `plan.desired_document` yields but the
# user's state), the group and role names, the organization memberships (their names), and the mirrored
# attributes' fields (`attributes.AttributeMap.personal_fields` adds them). Every other field the reconciler
# writes is in KEPT_ON_ERASURE, and a test holds the two lists to every name of `F`.
PERSONAL_FIELDS: Final[tuple[str, ...]] = (
    *(name for name in PROFILE_FIELDS if name not in (F.IS_ACTIVE, F.DEACTIVATION_REASON)),
    F.GROUPS,
    F.REALM_ROLES,
    F.ORGANIZATIONS,
)
# What an erased document keeps: its ids (the application's references hold), its state and the times.
KEPT_ON_ERASURE: Final[tuple[str, ...]] = (
    F.ID,
    F.EXTERNAL_ID,
    F.IS_ACTIVE,
    F.DEACTIVATED_AT,
    F.DEACTIVATION_REASON,
    F.CREATED_AT,
    F.UPDATED_AT,
    F.OBSERVED_AT,
    F.SYNCED_BY,
    F.ERASED_AT,
)


def is_erased(doc: Mapping[str, Any]) -> bool:
    """True when the document's personal fields were erased (and no newer read of Keycloak brought them back)."""
    return doc.get(F.ERASED_AT) is not None


@dataclass(frozen=True, slots=True)
class UserWrite:
    """One guarded write of one user document, as decided by the apply core.

    `set_fields` and `unset_fields` are applied only if the stored document was observed before
    `observed_at` (or has no `observed_at`); `observed_at` itself is always set. With `insert_fields` the write
    is an upsert and a missing document is created with those fields plus a fresh `_id`; without it the
    write never creates a document. `expect_absent` (with `insert_fields`): no document existed when the
    apply core read the store, so the write is tried as a plain insert first (see the module docstring).
    `unless_erased`: the write sets personal fields that an erasure since the read must not bring back, so
    it matches only a document that is not erased (the guard refuses it otherwise: stale).
    """

    external_id: str
    observed_at: datetime
    set_fields: Mapping[str, Any]
    unset_fields: tuple[str, ...] = ()
    insert_fields: Mapping[str, Any] | None = None
    expect_absent: bool = False
    unless_erased: bool = False

    def __post_init__(self) -> None:
        if self.expect_absent and self.insert_fields is None:
            raise ValueError("a write expecting no document must say what to insert")

    @property
    def upsert(self) -> bool:
        return self.insert_fields is not None


class WriteStatus(StrEnum):
    """What became of one `UserWrite`."""

    INSERTED = "inserted"  # a new document was created
    UPDATED = "updated"  # an existing document was overwritten
    STALE = "stale"  # a document observed at or after this write's observation exists (or, for a
    # non-upsert write, no document exists any more): nothing was written


def utc_now() -> datetime:
    """Current UTC time at BSON (millisecond) precision, so what is written compares equal when read back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
