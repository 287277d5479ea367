"""Kafka record -> user hints: parsing and validation of Keycloak events, nothing else (no I/O, no logging).

An event is only a *hint* that a user may have changed (invariant 1, docs/ARCHITECTURE.md): the apply core reads the user from
Keycloak and applies what Keycloak says now. So this module keeps nothing from the event body but the user id,
what kind of change it was, and when. The `representation` of admin events is never read (it can carry
passwords).

Wire formats (all are Jackson serialisations of Keycloak's own `Event` / `AdminEvent`):

- the project's own listener (`keycloak-spi-config/kafka-listener/`, the local stack): Keycloak's JSON.
- `ru.playa.keycloak:keycloak-kafka-provider`: adds `"@class"`; `id`, `realmName` and `details` are null or
  missing.
- SnuK87 `keycloak-kafka`: every getter, nulls included, so admin events carry both `resourceType` and
  `resourceTypeAsString` (the latter holds the real name when `resourceType` is `CUSTOM`).

Our own listener also sets the record header `x-published: after-commit` (it publishes only after Keycloak's
transaction committed); its hints carry `after_commit`, so the event path can skip the follow-up re-check
(EVENT_RECHECK). The other providers set no such header.

Unknown fields are ignored; the fields used are type-checked strictly (`time` must be an integer, never a
string). Every outcome is one of: hints (at least one), ignored (a reason from `IgnoreReason`), or invalid
(a reason from `InvalidReason` plus a human `detail`; the consumer dead-letters it, invariant 8). Reason codes
are a small fixed set because they become metric labels.

A user id leaves this module only after `models.is_keycloak_id` accepted it, lower-cased. A `resourcePath`
with `..`, percent-escapes, backslashes, empty segments, a query or a fragment is rejected as a whole.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.domain.models import SyncedBy, is_keycloak_id

__all__ = [
    "ACCEPTED_USER_EVENT_TYPES",
    "MAX_RECORD_BYTES",
    "ORGANIZATION_RESOURCE_TYPES",
    "HintReason",
    "IgnoreReason",
    "InvalidReason",
    "OrganizationHint",
    "ParseResult",
    "UserHint",
    "accepted_realms",
    "decode_json",
    "describe_validation_error",
    "event_time",
    "parse_record",
    "published_after_commit",
    "show_value",
]

MAX_RECORD_BYTES: Final = 1024 * 1024
"""Records larger than this are rejected before decoding (Keycloak events are a few KiB at most)."""

PUBLISHED_HEADER: Final = "x-published"
AFTER_COMMIT: Final = b"after-commit"

_MAX_DETAIL_CHARS: Final = 300
_MAX_TIME_MS: Final = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a datetime holds
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class HintReason(StrEnum):
    """Why a user should be looked up. `USER_DELETED` is the only reason after which a 404 is expected."""

    USER_CREATED = "user_created"
    USER_UPDATED = "user_updated"
    USER_DELETED = "user_deleted"
    GROUP_MEMBERSHIP = "group_membership"
    ROLE_MAPPING = "role_mapping"
    USER_EVENT = "user_event"
    ORGANIZATION_MEMBERSHIP = "organization_membership"  # the user joined or left an organization
    ORGANIZATION = "organization"  # an organization the user is (or was) in: renamed, deleted, members


class IgnoreReason(StrEnum):
    """Why a well-formed record needs no work (a metric label)."""

    TOMBSTONE = "tombstone"  # null record value
    HEARTBEAT = "heartbeat"  # a change source's heartbeat: no row, only the time (the source's lag)
    OTHER_TABLE = "other_table"  # a change record of a table whose rows name no user
    # A user-federation sync (LDAP, Active Directory) ended: Keycloak wrote its `lastSync_*` mark. The users
    # it removed from the directory are not named by any row (`sources.cdc` asks for a full reconcile).
    FEDERATION_SYNC = "federation_sync"
    NOT_A_ROW = "not_a_row"  # a change record that is no row: a truncate or a logical message
    OTHER_REALM = "other_realm"
    NOT_USER_RESOURCE = "not_user_resource"  # admin event on a client, realm, group, ...
    EVENT_TYPE = "event_type"  # user event type that cannot change mirrored fields (login, logout, ...)
    ERROR_EVENT = "error_event"  # `*_ERROR` user event or an event with `error` set: nothing changed
    IMPORT = (
        "import"  # a realm partial import's per-user event (resource REALM, path users/{id}): see `imported`
    )
    ORGANIZATION = "organization"  # an organization's change that names no user: see `organization`


class InvalidReason(StrEnum):
    """Why a record cannot be used (a metric label and the dead-letter reason)."""

    TOO_LARGE = "too_large"
    NOT_JSON = "not_json"  # not UTF-8, not JSON, or nested too deeply to decode
    NOT_AN_EVENT = "not_an_event"  # JSON, but not an object shaped like a Keycloak event
    INVALID_EVENT = "invalid_event"  # a used field has the wrong type or value, or no realm
    INVALID_RESOURCE_PATH = "invalid_resource_path"
    MISSING_USER_ID = "missing_user_id"
    INVALID_CHANGE = "invalid_change"  # a change record (CDC) whose envelope has the wrong shape or types
    INVALID_USER_ID = "invalid_user_id"


@dataclass(frozen=True, slots=True)
class UserHint:
    """One user that may have changed. `user_id` is a validated, lower-case Keycloak id."""

    user_id: str
    reason: HintReason
    event_time: datetime | None  # UTC, from the event's `time` (ms); None when the event had none
    realm: str  # the realm id or name that matched the accepted realms
    operation: str  # admin: CREATE, UPDATE, DELETE or ACTION; user event: its type, e.g. UPDATE_PROFILE
    source: SyncedBy = SyncedBy.EVENT  # where the hint came from: a Kafka event, the event store, a row
    after_commit: bool = False  # the record says it was published after Keycloak's transaction committed
    received_at: datetime | None = None  # when this process got the record (its own clock), for `covered`
    recheck: bool = False  # the event path's own follow-up read of an earlier hint, not an event

    @property
    def expects_user(self) -> bool:
        """True when the user should exist after the event, so a 404 right after it may be Keycloak's
        uncommitted transaction and is worth a re-read (a delete hint expects the 404; a committed row's
        404 is the truth: a user's delete removes all its rows)."""
        return self.reason is not HintReason.USER_DELETED and self.source is not SyncedBy.CDC


@dataclass(frozen=True, slots=True)
class OrganizationHint:
    """An organization whose members may have changed, for a source to turn into user hints (the event names
    no user): `renamed` (UPDATE) or `deleted` (DELETE ORGANIZATION): every member the store holds;
    `members` (a member added: Keycloak 26.7 emits CREATE on `organizations/{id}/members`, the user only in
    the details): whoever Keycloak's member list and the store disagree about. `organization_id` is a
    validated, lower-case Keycloak id."""

    organization_id: str
    change: Literal["renamed", "deleted", "members"]
    event_time: datetime | None
    realm: str
    operation: str


@dataclass(frozen=True, slots=True)
class ParseResult:
    """Exactly one of: `hints` non-empty, `ignored` set, or `invalid` set (with a human `detail`)."""

    hints: tuple[UserHint, ...] = ()
    ignored: IgnoreReason | None = None
    invalid: InvalidReason | None = None
    detail: str | None = None  # human detail of `invalid`; never holds the event body or representation
    # With `ignored` IMPORT: the user a partial import created or overwrote. The Kafka path leaves imports to
    # the full reconcile; the event-store sweep applies them (and requests a full reconcile after an
    # overwrite, which replaces the user under a new id and deletes the old one without any event).
    imported: UserHint | None = None
    # A change record's commit time (CDC), also when it is ignored: heartbeats keep the source's lag true.
    commit_time: datetime | None = None
    # With `ignored` ORGANIZATION: the organization whose members to hint (ORGANIZATIONS_ENABLED).
    organization: OrganizationHint | None = None

    @classmethod
    def ignore(cls, reason: IgnoreReason) -> ParseResult:
        return cls(ignored=reason)

    @classmethod
    def reject(cls, reason: InvalidReason, detail: str) -> ParseResult:
        return cls(invalid=reason, detail=_clip(detail))


def accepted_realms(realm_name: str, *realm_ids: str | None) -> frozenset[str]:
    """The realm keys events are accepted for: the configured realm name and any known realm ids
    (Keycloak realm ids equal the name or are UUIDs). Empty values are left out."""
    return frozenset(r for r in (realm_name, *realm_ids) if r)


# --- User events ------------------------------------------------------------------------------------------

_USER_EVENT_REASONS: Final[dict[str, HintReason]] = {
    "REGISTER": HintReason.USER_CREATED,
    "IDENTITY_PROVIDER_FIRST_LOGIN": HintReason.USER_CREATED,  # first broker login creates the account
    "DELETE_ACCOUNT": HintReason.USER_DELETED,
    "UPDATE_PROFILE": HintReason.USER_EVENT,
    "UPDATE_EMAIL": HintReason.USER_EVENT,
    "VERIFY_EMAIL": HintReason.USER_EVENT,
    "VERIFY_PROFILE": HintReason.USER_EVENT,
    "FEDERATED_IDENTITY_LINK": HintReason.USER_EVENT,
    "FEDERATED_IDENTITY_OVERRIDE_LINK": HintReason.USER_EVENT,
    "REMOVE_FEDERATED_IDENTITY": HintReason.USER_EVENT,
    "IDENTITY_PROVIDER_LINK_ACCOUNT": HintReason.USER_EVENT,
    "CUSTOM_REQUIRED_ACTION": HintReason.USER_EVENT,  # required actions can change email and profile
    "EXECUTE_ACTIONS": HintReason.USER_EVENT,
    "USER_DISABLED_BY_PERMANENT_LOCKOUT": HintReason.USER_EVENT,  # sets enabled=false
}
ACCEPTED_USER_EVENT_TYPES: Final = frozenset(_USER_EVENT_REASONS)
"""User event types that can change what is mirrored. Everything else is ignored, notably: LOGIN, LOGOUT,
CODE_TO_TOKEN, REFRESH_TOKEN and other session/token events; UPDATE_PASSWORD, UPDATE_CREDENTIAL,
REMOVE_CREDENTIAL, UPDATE_TOTP, REMOVE_TOTP, RESET_PASSWORD (credentials are not mirrored); SEND_VERIFY_EMAIL,
SEND_RESET_PASSWORD (nothing changed yet: the change emits its own event); temporary lockouts (the user stays
enabled). A missed change is still caught by the full reconcile."""


class _Event(BaseModel):
    """Fields shared by user and admin events; only the fields this module uses are declared."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    time: int | None = Field(default=None, ge=0, le=_MAX_TIME_MS)
    realm_id: str | None = Field(default=None, alias="realmId", max_length=255)
    realm_name: str | None = Field(default=None, alias="realmName", max_length=255)
    error: str | None = None


class _UserEvent(_Event):
    type: str = Field(max_length=128)
    user_id: str | None = Field(default=None, alias="userId", max_length=255)


class _AdminEvent(_Event):
    resource_type: str | None = Field(default=None, alias="resourceType", max_length=128)
    resource_type_as_string: str | None = Field(default=None, alias="resourceTypeAsString", max_length=128)
    operation_type: Literal["CREATE", "UPDATE", "DELETE", "ACTION"] | None = Field(
        default=None, alias="operationType"
    )
    resource_path: str | None = Field(default=None, alias="resourcePath", max_length=4096)


_ADMIN_KEYS: Final = ("resourceType", "resourceTypeAsString", "operationType", "resourcePath", "authDetails")
_ROLE_MAPPING_TYPES: Final = frozenset({"REALM_ROLE_MAPPING", "CLIENT_ROLE_MAPPING"})
_USER_RESOURCE_TYPES: Final = frozenset({"USER", "GROUP_MEMBERSHIP"}) | _ROLE_MAPPING_TYPES
ORGANIZATION_RESOURCE_TYPES: Final = ("ORGANIZATION", "ORGANIZATION_MEMBERSHIP")
# Sub-resources of `organizations/{id}/members` that send invitations: nobody's membership changed yet.
_INVITATIONS: Final = frozenset({"invite-user", "invite-existing-user"})

# Percent-escapes (%2e, %2f, %5c, %00, ...), backslashes, query, fragment, whitespace and control characters.
_BAD_PATH_CHARS: Final = re.compile(r"%[0-9A-Fa-f]{2}|[\\?#\s\x00-\x1f\x7f]")


def parse_event(
    data: dict[str, Any], *, realms: frozenset[str] | None, organizations: bool = False
) -> ParseResult:
    """Parse one event already decoded from JSON (Kafka's record, or a representation Keycloak's event
    store served). `realms=None` accepts the event's own realm: events read from a realm's own store.
    `organizations` (ORGANIZATIONS_ENABLED): organization events become hints; otherwise they are ignored
    as events on other resources."""
    is_admin = any(key in data for key in _ADMIN_KEYS)
    is_user = "type" in data
    if is_admin and is_user:
        return ParseResult.reject(InvalidReason.NOT_AN_EVENT, "has fields of both user and admin events")
    if is_admin:
        return _parse_admin_event(data, realms, organizations)
    if is_user:
        return _parse_user_event(data, realms)
    return ParseResult.reject(InvalidReason.NOT_AN_EVENT, "neither `type` nor admin event fields")


def published_after_commit(headers: Iterable[tuple[str, bytes | None]] | None) -> bool:
    """True when the record carries `x-published: after-commit`, which our own listener
    (`keycloak-spi-config/kafka-listener/`) sets on every record: it publishes only after Keycloak's
    transaction committed, so a read right after the event sees the change."""
    return any(name == PUBLISHED_HEADER and value == AFTER_COMMIT for name, value in headers or ())


def parse_record(
    value: bytes | None,
    *,
    realms: frozenset[str],
    max_bytes: int = MAX_RECORD_BYTES,
    headers: Iterable[tuple[str, bytes | None]] | None = None,
    organizations: bool = False,
) -> ParseResult:
    """Parse one Kafka record value (and its headers). Never raises; see `ParseResult`.

    `realms` holds the accepted realm ids and names (see `accepted_realms`): an event is ours when its
    `realmId` or `realmName` is in it. An admin event's `authDetails.realmId` is the admin's realm and is not
    used for filtering. The hints of a record published after commit (`published_after_commit`) say so.
    """
    result = _parse_value(value, realms, max_bytes, organizations)
    if result.hints and published_after_commit(headers):
        return ParseResult(hints=tuple(dataclasses.replace(h, after_commit=True) for h in result.hints))
    return result


def _parse_value(
    value: bytes | None, realms: frozenset[str], max_bytes: int, organizations: bool
) -> ParseResult:
    data = _decode(value, max_bytes)
    if isinstance(data, ParseResult):
        return data
    return parse_event(data, realms=realms, organizations=organizations)


def _decode(value: bytes | None, max_bytes: int) -> dict[str, Any] | ParseResult:
    """The record's JSON object, or the result to return (ignored tombstone, invalid bytes or JSON)."""
    if value is None:
        return ParseResult.ignore(IgnoreReason.TOMBSTONE)
    if not isinstance(value, bytes | bytearray | memoryview):
        return ParseResult.reject(
            InvalidReason.NOT_JSON, f"record value is {type(value).__name__}, not bytes"
        )
    data = decode_json(bytes(value), max_bytes)
    if isinstance(data, ParseResult):
        return data
    if not isinstance(data, dict):
        return ParseResult.reject(InvalidReason.NOT_AN_EVENT, f"JSON {_json_kind(data)}, not an object")
    return data


def decode_json(value: bytes, max_bytes: int) -> Any:
    """A record's bytes as JSON (any JSON value), or the invalid `ParseResult` that says why they are not."""
    if len(value) > max_bytes:
        return ParseResult.reject(InvalidReason.TOO_LARGE, f"{len(value)} bytes, more than {max_bytes}")
    try:
        return json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return ParseResult.reject(InvalidReason.NOT_JSON, f"not UTF-8 at byte {exc.start}")
    except json.JSONDecodeError as exc:
        return ParseResult.reject(InvalidReason.NOT_JSON, f"not JSON: {exc.msg} at line {exc.lineno}")
    except RecursionError:
        return ParseResult.reject(InvalidReason.NOT_JSON, "JSON nested too deeply")
    except ValueError as exc:  # e.g. an integer literal longer than Python's int digit limit
        return ParseResult.reject(InvalidReason.NOT_JSON, f"not decodable JSON: {type(exc).__name__}")


def _parse_user_event(data: dict[str, Any], realms: frozenset[str] | None) -> ParseResult:
    try:
        event = _UserEvent.model_validate(data)
    except ValidationError as exc:
        return ParseResult.reject(
            InvalidReason.INVALID_EVENT, "user event: " + describe_validation_error(exc)
        )
    realm = _our_realm(event, realms)
    if isinstance(realm, ParseResult):
        return realm
    if event.error or event.type.endswith("_ERROR"):
        return ParseResult.ignore(IgnoreReason.ERROR_EVENT)
    reason = _USER_EVENT_REASONS.get(event.type)
    if reason is None:
        return ParseResult.ignore(IgnoreReason.EVENT_TYPE)
    if event.user_id is None or event.user_id == "":
        return ParseResult.reject(InvalidReason.MISSING_USER_ID, f"{event.type} event without userId")
    if not is_keycloak_id(event.user_id):
        return ParseResult.reject(
            InvalidReason.INVALID_USER_ID,
            f"{event.type} event: userId {show_value(event.user_id)} is not a UUID",
        )
    hint = UserHint(event.user_id.lower(), reason, event_time(event.time), realm, event.type)
    return ParseResult(hints=(hint,))


def _parse_admin_event(
    data: dict[str, Any], realms: frozenset[str] | None, organizations: bool
) -> ParseResult:
    try:
        event = _AdminEvent.model_validate(data)
    except ValidationError as exc:
        return ParseResult.reject(
            InvalidReason.INVALID_EVENT, "admin event: " + describe_validation_error(exc)
        )
    realm = _our_realm(event, realms)
    if isinstance(realm, ParseResult):
        return realm
    if event.error:
        return ParseResult.ignore(IgnoreReason.ERROR_EVENT)
    resource_type = _resource_type(event)
    if resource_type == "REALM":
        return _partial_import(event, realm)
    if resource_type in ORGANIZATION_RESOURCE_TYPES and organizations:
        return _organization_event(event, resource_type, realm)
    if resource_type not in _USER_RESOURCE_TYPES:
        return ParseResult.ignore(IgnoreReason.NOT_USER_RESOURCE)
    if event.operation_type is None:
        return ParseResult.reject(
            InvalidReason.INVALID_EVENT, f"{resource_type} admin event without operationType"
        )
    parts = _user_path(resource_type, event.resource_path)
    if isinstance(parts, ParseResult):
        return parts
    reason = _admin_reason(resource_type, event.operation_type, parts)
    if reason is None:
        return ParseResult.reject(
            InvalidReason.INVALID_RESOURCE_PATH,
            f"{resource_type} event with resourcePath {show_value(event.resource_path or '')}",
        )
    hint = UserHint(parts[1].lower(), reason, event_time(event.time), realm, event.operation_type)
    return ParseResult(hints=(hint,))


def _resource_type(event: _AdminEvent) -> str | None:
    """`resourceType` is `CUSTOM` for types Keycloak's enum lacks; the string form has the real name."""
    if event.resource_type in (None, "CUSTOM"):
        return event.resource_type_as_string
    return event.resource_type


def _partial_import(event: _AdminEvent, realm: str) -> ParseResult:
    """A REALM event on `users/{id}` is a partial import's record of one user (CREATE, or UPDATE when it
    overwrote one); any other REALM event is about the realm itself."""
    parts = _split_path(event.resource_path or "")
    if parts is None or len(parts) != 2 or parts[0] != "users" or not is_keycloak_id(parts[1]):
        return ParseResult.ignore(IgnoreReason.NOT_USER_RESOURCE)
    operation = event.operation_type or "UPDATE"
    reason = HintReason.USER_CREATED if operation == "CREATE" else HintReason.USER_UPDATED
    hint = UserHint(parts[1].lower(), reason, event_time(event.time), realm, f"IMPORT_{operation}")
    return ParseResult(ignored=IgnoreReason.IMPORT, imported=hint)


def _organization_event(event: _AdminEvent, resource_type: str, realm: str) -> ParseResult:
    """ORGANIZATION_MEMBERSHIP on `organizations/{org}/members/{user}` (DELETE: a member removed) names the
    user; CREATE on `organizations/{org}/members` (a member added) and UPDATE / DELETE ORGANIZATION on
    `organizations/{org}` name only the organization. Invitations and other organization changes (create,
    domains, identity providers) change no membership and are ignored."""
    operation = event.operation_type
    if operation is None:
        return ParseResult.reject(
            InvalidReason.INVALID_EVENT, f"{resource_type} admin event without operationType"
        )
    path = event.resource_path or ""
    parts = _split_path(path)
    if parts is None or len(parts) < 2 or parts[0] != "organizations":
        return ParseResult.reject(
            InvalidReason.INVALID_RESOURCE_PATH, f"{resource_type} event with resourcePath {show_value(path)}"
        )
    if not is_keycloak_id(parts[1]):
        return ParseResult.reject(
            InvalidReason.INVALID_RESOURCE_PATH, f"organization id {show_value(parts[1])} is not a UUID"
        )
    change = _organization_change(resource_type, operation, parts)
    if change is None:
        return ParseResult.ignore(IgnoreReason.NOT_USER_RESOURCE)
    time = event_time(event.time)
    if change == "member":
        if not is_keycloak_id(parts[3]):
            return ParseResult.reject(
                InvalidReason.INVALID_USER_ID,
                f"member id {show_value(parts[3])} in resourcePath is not a UUID",
            )
        hint = UserHint(parts[3].lower(), HintReason.ORGANIZATION_MEMBERSHIP, time, realm, operation)
        return ParseResult(hints=(hint,))
    organization = OrganizationHint(parts[1].lower(), change, time, realm, operation)
    return ParseResult(ignored=IgnoreReason.ORGANIZATION, organization=organization)


def _organization_change(
    resource_type: str, operation: str, parts: list[str]
) -> Literal["member", "renamed", "deleted", "members"] | None:
    """What an organization admin event changed; None when no membership and no name changed."""
    if resource_type == "ORGANIZATION":
        if len(parts) != 2:
            return None
        if operation == "UPDATE":
            return "renamed"
        return "deleted" if operation == "DELETE" else None
    if len(parts) < 3 or parts[2] != "members" or len(parts) > 4:
        return None
    if len(parts) == 3:
        return "members" if operation == "CREATE" else None
    return None if parts[3] in _INVITATIONS else "member"


def _user_path(resource_type: str, path: str | None) -> list[str] | ParseResult:
    """The segments of a safe `users/{id}/...` path, or the result to return."""
    if path is None:
        return ParseResult.reject(
            InvalidReason.INVALID_RESOURCE_PATH, f"{resource_type} event without resourcePath"
        )
    parts = _split_path(path)
    if parts is None:
        return ParseResult.reject(
            InvalidReason.INVALID_RESOURCE_PATH, f"unsafe resourcePath {show_value(path)}"
        )
    if resource_type in _ROLE_MAPPING_TYPES and parts[0] != "users":
        return ParseResult.ignore(IgnoreReason.NOT_USER_RESOURCE)  # a group's or client scope's role mapping
    if parts[0] != "users" or len(parts) < 2:
        return ParseResult.reject(
            InvalidReason.INVALID_RESOURCE_PATH, f"{resource_type} event with resourcePath {show_value(path)}"
        )
    if not is_keycloak_id(parts[1]):
        return ParseResult.reject(
            InvalidReason.INVALID_USER_ID, f"user id {show_value(parts[1])} in resourcePath is not a UUID"
        )
    return parts


def _admin_reason(resource_type: str, operation: str, parts: list[str]) -> HintReason | None:
    """What a user-related admin event says happened; None when its path does not fit its type."""
    if resource_type == "USER":
        # Sub-resources (credentials, consents, federated identities, actions) change the user, never
        # create or delete it: DELETE users/{id}/credentials/{cid} is an update.
        if len(parts) == 2 and operation == "CREATE":
            return HintReason.USER_CREATED
        if len(parts) == 2 and operation == "DELETE":
            return HintReason.USER_DELETED
        return HintReason.USER_UPDATED
    if resource_type == "GROUP_MEMBERSHIP":
        return HintReason.GROUP_MEMBERSHIP if len(parts) == 4 and parts[2] == "groups" else None
    return HintReason.ROLE_MAPPING if len(parts) >= 4 and parts[2] == "role-mappings" else None


def _our_realm(event: _Event, realms: frozenset[str] | None) -> str | ParseResult:
    """The matching realm key, or the result to return: ignored for another realm, invalid without one."""
    own = event.realm_name or event.realm_id
    if not own:
        return ParseResult.reject(InvalidReason.INVALID_EVENT, "event without realmId and realmName")
    if realms is None:
        return own  # read from that realm's own event store
    if event.realm_name is not None and event.realm_name in realms:
        return event.realm_name
    if event.realm_id is not None and event.realm_id in realms:
        return event.realm_id
    return ParseResult.ignore(IgnoreReason.OTHER_REALM)


def _split_path(path: str) -> list[str] | None:
    """The segments of a safe relative resource path, or None when any part of it is suspicious."""
    if not path or ".." in path or _BAD_PATH_CHARS.search(path):
        return None
    parts = path.split("/")
    if any(part in ("", ".") for part in parts):
        return None  # leading, trailing or doubled slash, or a `.` segment
    return parts


def event_time(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + timedelta(milliseconds=ms)


def describe_validation_error(exc: ValidationError) -> str:
    """Field locations and messages, without the offending input values."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        location = ".".join(str(part) for part in error["loc"]) or "<event>"
        problems.append(f"{location}: {error['msg']}")
    return "; ".join(problems)


def show_value(value: object, limit: int = 80) -> str:
    """A bounded, quoted rendering of an untrusted value for a detail message."""
    text = value if isinstance(value, str) else type(value).__name__
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _clip(detail: str) -> str:
    return detail if len(detail) <= _MAX_DETAIL_CHARS else detail[: _MAX_DETAIL_CHARS - 3] + "..."


def _json_kind(data: object) -> str:
    if data is None:
        return "null"
    if isinstance(data, bool):
        return "boolean"
    if isinstance(data, int | float):
        return "number"
    if isinstance(data, str):
        return "string"
    return "array"
