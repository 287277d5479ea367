"""Debezium change record -> user hints: committed rows of Keycloak's user tables, parsed and validated.

Keycloak emits no event for LDAP / Active Directory syncs, identity-provider syncs, realm imports, Workflows
or SCIM writes, but each ends as a committed row in its database. Debezium's PostgreSQL connector streams
those rows (after commit, in commit order per table) to one topic per table. A row is only a *hint* that
names a user (invariant 1): the apply core reads the user from Keycloak and applies what Keycloak says, so
the only coupling to Keycloak's internal schema is "which column names the user" (`USER_ID_COLUMNS`).

Wire format: Kafka Connect's JSON converter, with or without schemas (`{"schema": ..., "payload": ...}`).
The value is Debezium's envelope: `op` (c create, u update, d delete, r snapshot read, t truncate, m
message), `before` and `after` (the row; `before` is null on updates, and on deletes holds only the key
columns unless the table has `REPLICA IDENTITY FULL`), and `source` (`table`, `ts_ms` = the commit time).
The connector publishes only id columns (`column.include.list`), so no topic keeps personal data.

One more table names no user but says when a user-federation sync ended: Keycloak rewrites the federation
component's configuration rows (`component_config`) after every sync, one of them the sync's `lastSync_CHANGED`
or `lastSync_FULL` mark. A sync adds and updates users with rows of their own, but a user removed from the
directory stays in Keycloak's database until something reads it: the mark is the only sign of it
(`IgnoreReason.FEDERATION_SYNC`; `sources.cdc` asks for a full reconcile, whose listing makes Keycloak drop
such copies). Only the row's `name` is read: its `value` (which holds the directory's bind credential in other
rows) is never published.

Outcomes, as for events (`events.ParseResult`): hints, ignored (tombstones after deletes, heartbeats, rows of
another realm, other tables, truncates, federation sync marks), or invalid (dead-lettered with a reason). A user id leaves this
module only after `models.is_keycloak_id` accepted it. Every result carries the record's commit time when it
has one, so the consumer can measure the source's lag (heartbeats included). Never raises; no I/O.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.domain.events import (
    MAX_RECORD_BYTES,
    HintReason,
    IgnoreReason,
    InvalidReason,
    ParseResult,
    UserHint,
    decode_json,
    describe_validation_error,
    event_time,
    show_value,
)
from reconciler.domain.models import SyncedBy, is_keycloak_id

__all__ = ["FEDERATION_SYNC_TABLE", "HEARTBEAT_TOPIC_PREFIX", "USER_ID_COLUMNS", "parse_change"]

# Keycloak's tables whose rows name a user, and the column that does. A user's delete removes its rows of
# every one of them in one transaction.
USER_ID_COLUMNS: Final[dict[str, str]] = {
    "user_entity": "id",
    "user_attribute": "user_id",  # its key is the attribute row's own id: deletes need REPLICA IDENTITY FULL
    "user_group_membership": "user_id",  # also organization memberships (the organization's group)
    "user_role_mapping": "user_id",
    "federated_identity": "user_id",  # identity-provider links
}
# The federation components' configuration rows; a sync's end rewrites them, its mark among them.
FEDERATION_SYNC_TABLE: Final = "component_config"
SYNC_MARK_PREFIX: Final = "lastSync"  # lastSync_CHANGED, lastSync_FULL (Keycloak 26)
REALM_COLUMN: Final = "realm_id"  # only user_entity rows carry it (the realm's internal id)
# Debezium's heartbeat topic: `<topic.heartbeat.prefix>.<topic.prefix>`, value `{"ts_ms": ...}`.
HEARTBEAT_TOPIC_PREFIX: Final = "__debezium-heartbeat."

_REASONS: Final[dict[str, HintReason]] = {
    "user_group_membership": HintReason.GROUP_MEMBERSHIP,
    "user_role_mapping": HintReason.ROLE_MAPPING,
}


class _Source(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    table: str = Field(min_length=1, max_length=128)
    ts_ms: int = Field(ge=0, le=253_402_300_799_999)


class _Change(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    op: Literal["c", "u", "d", "r", "t", "m"]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source: _Source


class _Heartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    ts_ms: int = Field(ge=0, le=253_402_300_799_999)


def parse_change(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    *,
    realm: str,
    realm_ids: frozenset[str] | None,
    max_bytes: int = MAX_RECORD_BYTES,
) -> ParseResult:
    """Parse one change record of `topic`. `realm` names the mirrored realm on the hints; `realm_ids` are
    the internal ids a `user_entity` row must carry to be ours (None: every row is read, and a read in
    the mirrored realm decides)."""
    if value is None:
        return ParseResult.ignore(IgnoreReason.TOMBSTONE)  # Kafka compaction's marker after a delete
    data = _decode(value, max_bytes)
    if isinstance(data, ParseResult):
        return data
    if topic.startswith(HEARTBEAT_TOPIC_PREFIX):
        return _heartbeat(data)
    try:
        change = _Change.model_validate(data)
    except ValidationError as exc:
        return ParseResult.reject(
            InvalidReason.INVALID_CHANGE, "change record: " + describe_validation_error(exc)
        )
    committed = event_time(change.source.ts_ms)
    if change.source.table == FEDERATION_SYNC_TABLE:
        return ParseResult(ignored=_config_row(change), commit_time=committed)
    column = USER_ID_COLUMNS.get(change.source.table)
    if column is None:
        return ParseResult(ignored=IgnoreReason.OTHER_TABLE, commit_time=committed)
    if change.op in ("t", "m"):
        # A truncate names no user (a full reconcile catches what it did); a logical message is not a row.
        return ParseResult(ignored=IgnoreReason.NOT_A_ROW, commit_time=committed)
    row = change.before if change.op == "d" else change.after
    result = _hint(change, row or {}, column, _key_row(key), realm=realm, realm_ids=realm_ids)
    return ParseResult(
        hints=result.hints,
        ignored=result.ignored,
        invalid=result.invalid,
        detail=result.detail,
        commit_time=committed,
    )


def _hint(
    change: _Change,
    row: dict[str, Any],
    column: str,
    key: dict[str, Any],
    *,
    realm: str,
    realm_ids: frozenset[str] | None,
) -> ParseResult:
    table = change.source.table
    user_id = row.get(column)
    if user_id in (None, ""):
        user_id = key.get(column)  # a delete without the old row still has the key's columns
    if user_id in (None, ""):
        fix = " (the table needs REPLICA IDENTITY FULL)" if change.op == "d" else ""
        return ParseResult.reject(InvalidReason.MISSING_USER_ID, f"{table} {change.op}: no {column}{fix}")
    if not isinstance(user_id, str) or not is_keycloak_id(user_id):
        return ParseResult.reject(
            InvalidReason.INVALID_USER_ID,
            f"{table} {change.op}: {column} {show_value(user_id)} is not a UUID",
        )
    row_realm = row.get(REALM_COLUMN) if table == "user_entity" else None
    if row_realm is not None and not isinstance(row_realm, str):
        return ParseResult.reject(InvalidReason.INVALID_CHANGE, f"{table}: {REALM_COLUMN} is not a string")
    if row_realm and realm_ids is not None and row_realm not in realm_ids:
        return ParseResult.ignore(IgnoreReason.OTHER_REALM)
    hint = UserHint(
        user_id.lower(),
        _reason(table, change.op),
        event_time(change.source.ts_ms),
        realm,
        f"{table}:{change.op}",
        after_commit=True,  # a committed row: the read that follows sees it (no re-check)
        source=SyncedBy.CDC,
    )
    return ParseResult(hints=(hint,))


def _config_row(change: _Change) -> IgnoreReason:
    """A sync's mark written (a new row; the old marks are deleted with the rest), or another config row."""
    name = (change.after or {}).get("name")
    if change.op in ("c", "r") and isinstance(name, str) and name.startswith(SYNC_MARK_PREFIX):
        return IgnoreReason.FEDERATION_SYNC
    return IgnoreReason.OTHER_TABLE


def _reason(table: str, op: str) -> HintReason:
    if table == "user_entity":
        return {"c": HintReason.USER_CREATED, "d": HintReason.USER_DELETED}.get(op, HintReason.USER_UPDATED)
    return _REASONS.get(table, HintReason.USER_UPDATED)


def _heartbeat(data: dict[str, Any]) -> ParseResult:
    try:
        beat = _Heartbeat.model_validate(data)
    except ValidationError as exc:
        return ParseResult.reject(
            InvalidReason.INVALID_CHANGE, "heartbeat: " + describe_validation_error(exc)
        )
    return ParseResult(ignored=IgnoreReason.HEARTBEAT, commit_time=event_time(beat.ts_ms))


def _key_row(key: bytes | None) -> dict[str, Any]:
    """The record key's columns (the table's primary key); {} when there is none or it is unreadable."""
    if not key or len(key) > 4096:
        return {}
    data = _decode(key, 4096)
    return data if isinstance(data, dict) else {}


def _decode(value: bytes, max_bytes: int) -> dict[str, Any] | ParseResult:
    """The JSON object (a schema envelope's payload), or the result to return."""
    data = decode_json(bytes(value), max_bytes)
    if isinstance(data, ParseResult):
        return data
    if isinstance(data, dict) and "payload" in data and "schema" in data:
        data = data["payload"]
    if not isinstance(data, dict):
        return ParseResult.reject(InvalidReason.INVALID_CHANGE, f"JSON {type(data).__name__}, not an object")
    return data
