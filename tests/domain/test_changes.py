"""Debezium change records -> user hints (`domain.changes`): the shapes the connector writes, and hostile ones.

The shapes are those of keycloak-spi-config/cdc/ (JSON converter, id columns only) as read on the stack;
the stack tests (tests/sources/test_cdc.py) show them end to end.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.base.config import CdcTable
from reconciler.domain.changes import FEDERATION_SYNC_TABLE, USER_ID_COLUMNS, parse_change
from reconciler.domain.events import HintReason, IgnoreReason, InvalidReason
from reconciler.domain.models import SyncedBy, is_keycloak_id

USER = str(uuid.uuid4())
REALM_ID = "8d4b9a57-2b8e-4d7b-9c6a-1d2e3f405162"
TOPIC = "keycloak.cdc.public.{}"


def record(
    table: str,
    op: str,
    *,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    ts_ms: int = 1_800_000_000_000,
    schema: bool = False,
) -> bytes:
    payload = {
        "before": before,
        "after": after,
        "source": {"connector": "postgresql", "table": table, "ts_ms": ts_ms, "lsn": 123, "db": "keycloak"},
        "op": op,
        "ts_ms": ts_ms + 5,
        "transaction": None,
    }
    body = {"schema": {"type": "struct"}, "payload": payload} if schema else payload
    return json.dumps(body).encode()


def parse(table: str, value: bytes | None, key: dict[str, Any] | None = None, realm_ids: Any = None) -> Any:
    raw_key = json.dumps(key).encode() if key is not None else None
    return parse_change(TOPIC.format(table), raw_key, value, realm="app", realm_ids=realm_ids)


def test_the_tables_setting_and_the_parser_name_the_same_tables() -> None:
    assert set(get_args(CdcTable)) == {*USER_ID_COLUMNS, FEDERATION_SYNC_TABLE}


def test_a_federation_sync_mark_is_the_end_of_a_sync_and_names_no_user() -> None:
    """A sync rewrites its component's configuration rows: deletes of all, inserts of all, the mark among
    them (as read on the stack after a changed-users sync of the LDAP federation)."""
    component = str(uuid.uuid4())
    row = {"id": str(uuid.uuid4()), "component_id": component}
    mark = parse(
        "component_config", record("component_config", "c", after={**row, "name": "lastSync_CHANGED"})
    )
    full = parse("component_config", record("component_config", "c", after={**row, "name": "lastSync_FULL"}))
    other = parse("component_config", record("component_config", "c", after={**row, "name": "bindDn"}))
    removed = parse("component_config", record("component_config", "d", before={"id": row["id"]}))
    assert mark.ignored is IgnoreReason.FEDERATION_SYNC and not mark.hints and mark.commit_time is not None
    assert full.ignored is IgnoreReason.FEDERATION_SYNC
    assert other.ignored is IgnoreReason.OTHER_TABLE and removed.ignored is IgnoreReason.OTHER_TABLE
    hostile = parse("component_config", record("component_config", "c", after={**row, "name": ["lastSync"]}))
    assert hostile.ignored is IgnoreReason.OTHER_TABLE


def test_a_created_user_is_a_create_hint_from_cdc_after_commit() -> None:
    result = parse("user_entity", record("user_entity", "c", after={"id": USER, "realm_id": REALM_ID}))
    (hint,) = result.hints
    assert (hint.user_id, hint.reason, hint.source) == (USER, HintReason.USER_CREATED, SyncedBy.CDC)
    assert hint.after_commit and not hint.expects_user  # a committed row: its 404 is the truth
    assert hint.event_time == result.commit_time and result.commit_time is not None
    assert result.commit_time.timestamp() == 1_800_000_000


def test_schema_envelopes_are_read_too() -> None:
    value = record("user_entity", "u", after={"id": USER.upper(), "realm_id": REALM_ID}, schema=True)
    (hint,) = parse("user_entity", value).hints
    assert hint.user_id == USER and hint.reason is HintReason.USER_UPDATED


def test_a_deleted_user_row_without_its_old_row_is_read_from_the_key() -> None:
    """Default replica identity: `before` is null or holds the key only; user_entity's key is the user id."""
    (hint,) = parse("user_entity", record("user_entity", "d"), key={"id": USER}).hints
    assert hint.reason is HintReason.USER_DELETED


def test_an_attribute_delete_needs_the_old_row() -> None:
    """user_attribute's key is the attribute row's own id: without REPLICA IDENTITY FULL the user is unknown."""
    no_identity = record("user_attribute", "d", before={"id": str(uuid.uuid4()), "user_id": ""})
    result = parse("user_attribute", no_identity, key={"id": str(uuid.uuid4())})
    assert result.invalid is InvalidReason.MISSING_USER_ID and "REPLICA IDENTITY FULL" in (
        result.detail or ""
    )
    full = record("user_attribute", "d", before={"id": str(uuid.uuid4()), "user_id": USER})
    (hint,) = parse("user_attribute", full, key={"id": str(uuid.uuid4())}).hints
    assert hint.user_id == USER and hint.reason is HintReason.USER_UPDATED


def test_group_and_role_rows_name_their_user() -> None:
    group = parse(
        "user_group_membership",
        record("user_group_membership", "c", after={"group_id": "g", "user_id": USER}),
    )
    role = parse(
        "user_role_mapping", record("user_role_mapping", "d", before={"role_id": "r", "user_id": USER})
    )
    assert group.hints[0].reason is HintReason.GROUP_MEMBERSHIP
    assert role.hints[0].reason is HintReason.ROLE_MAPPING


def test_other_realms_are_ignored_when_the_realm_id_is_known() -> None:
    value = record("user_entity", "u", after={"id": USER, "realm_id": "another-realm"})
    assert parse("user_entity", value, realm_ids=frozenset({REALM_ID})).ignored is IgnoreReason.OTHER_REALM
    assert parse("user_entity", value, realm_ids=None).hints  # unknown id: a read in our realm decides
    ours = record("user_entity", "u", after={"id": USER, "realm_id": REALM_ID})
    assert parse("user_entity", ours, realm_ids=frozenset({REALM_ID})).hints


def test_tombstones_heartbeats_truncates_and_other_tables_are_ignored() -> None:
    assert parse("user_entity", None, key={"id": USER}).ignored is IgnoreReason.TOMBSTONE
    beat = parse_change(
        "__debezium-heartbeat.keycloak.cdc", None, b'{"ts_ms": 1800000000000}', realm="app", realm_ids=None
    )
    assert beat.ignored is IgnoreReason.HEARTBEAT and beat.commit_time is not None
    assert parse("user_entity", record("user_entity", "t")).ignored is IgnoreReason.NOT_A_ROW
    assert (
        parse("credential", record("credential", "c", after={"user_id": USER})).ignored
        is IgnoreReason.OTHER_TABLE
    )


def test_hostile_records_are_rejected_with_a_reason() -> None:
    cases = {
        b"\xff\xfe": InvalidReason.NOT_JSON,
        b"[1, 2]": InvalidReason.INVALID_CHANGE,
        b'{"op": "c"}': InvalidReason.INVALID_CHANGE,
        record("user_entity", "x", after={"id": USER}): InvalidReason.INVALID_CHANGE,
        record("user_entity", "c", after={"id": "../../admin"}): InvalidReason.INVALID_USER_ID,
        record("user_entity", "c", after={"id": 42}): InvalidReason.INVALID_USER_ID,
        record("user_entity", "c", after={"realm_id": REALM_ID}): InvalidReason.MISSING_USER_ID,
        record("user_entity", "c", after={"id": USER, "realm_id": 7}): InvalidReason.INVALID_CHANGE,
        json.dumps(
            {"op": "c", "after": {"id": USER}, "source": {"table": "user_entity", "ts_ms": "1"}}
        ).encode(): InvalidReason.INVALID_CHANGE,
        b"{" + b" " * (2 * 1024 * 1024) + b"}": InvalidReason.TOO_LARGE,
    }
    for value, reason in cases.items():
        result = parse("user_entity", value)
        assert result.invalid is reason, (value[:80], result)
        assert not result.hints


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    table=st.sampled_from([*USER_ID_COLUMNS, "credential", ""]),
    op=st.sampled_from(["c", "u", "d", "r", "t", "m", "z", 1]),
    row=st.dictionaries(st.sampled_from(["id", "user_id", "realm_id", "x"]), _json, max_size=4),
    key=st.one_of(st.none(), st.dictionaries(st.sampled_from(["id", "user_id"]), _json, max_size=2)),
    ts=st.one_of(st.integers(min_value=-(10**15), max_value=10**16), st.text(max_size=5)),
)
def test_any_record_gives_exactly_one_outcome_and_only_valid_ids(
    table: str, op: Any, row: dict[str, Any], key: dict[str, Any] | None, ts: Any
) -> None:
    value = json.dumps(
        {"op": op, "after": row, "before": row, "source": {"table": table, "ts_ms": ts}}
    ).encode()
    result = parse(table or "user_entity", value, key=key)
    outcomes = [bool(result.hints), result.ignored is not None, result.invalid is not None]
    assert outcomes.count(True) == 1, result
    for hint in result.hints:
        assert is_keycloak_id(hint.user_id) and hint.user_id == hint.user_id.lower()
        assert hint.source is SyncedBy.CDC
