"""Typed shapes shared by the Keycloak client, the apply core and the store."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# Keycloak ids are UUIDs in every supported version; anything else never goes into an admin API URL.
KEYCLOAK_ID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def is_keycloak_id(value: object) -> bool:
    """True when `value` is a string safe to put into an admin API path as a user id."""
    return isinstance(value, str) and KEYCLOAK_ID_PATTERN.fullmatch(value) is not None


class SyncedBy(StrEnum):
    """Which path wrote a user document."""

    EVENT = "event"
    RECONCILE = "reconcile"
    REPLAY = "replay"
    SWEEP = "sweep"  # a hint from Keycloak's event store: a change the Kafka hop had not delivered
    CDC = "cdc"  # a hint from a committed row of Keycloak's database (Debezium): a change seen by no event
    ERASE = "erase"  # the read of `reconciler erase USER_ID` before it erases the user


class DeactivationReason(StrEnum):
    """Why a local user was deactivated."""

    DELETED = "deleted_in_keycloak"
    DISABLED = "disabled_in_keycloak"


class MembershipType(StrEnum):
    """How a user belongs to a Keycloak organization (Keycloak's MemberRepresentation.membershipType)."""

    MANAGED = "MANAGED"  # the organization's identity provider owns the account (removal deletes the user)
    UNMANAGED = "UNMANAGED"  # an existing realm user added or invited to the organization


@dataclass(frozen=True, slots=True, order=True)
class OrganizationMembership:
    """One organization a user is a member of: the organization's id, alias and name, and how it belongs."""

    id: str
    alias: str | None
    name: str
    membership_type: MembershipType


@dataclass(frozen=True, slots=True)
class KeycloakUser:
    """The part of a Keycloak UserRepresentation the application mirrors. `attributes` holds the first value
    of each mirrored attribute the user has (attribute name, value); a brief representation has none."""

    id: str
    username: str
    enabled: bool
    email: str | None = None
    email_verified: bool = False
    first_name: str | None = None
    last_name: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    created_timestamp_ms: int | None = None
    groups: tuple[str, ...] | None = None  # None: not fetched (group/role sync off)
    realm_roles: tuple[str, ...] | None = None
    organizations: tuple[OrganizationMembership, ...] | None = None  # None: not fetched (setting off)

    def attribute(self, name: str) -> str | None:
        """The first value of attribute `name`, when it is mirrored and the user has one."""
        return next((value for attribute, value in self.attributes if attribute == name), None)


@dataclass(frozen=True, slots=True)
class Observation:
    """What Keycloak said about one user id at one instant: the user, or None when it does not exist."""

    user_id: str
    user: KeycloakUser | None
    observed_at: datetime
