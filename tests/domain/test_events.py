"""Unit tests of `reconciler.domain.events`: Kafka record -> user hints, and everything that must not become one."""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.domain.events import (
    ACCEPTED_USER_EVENT_TYPES,
    MAX_RECORD_BYTES,
    HintReason,
    IgnoreReason,
    InvalidReason,
    ParseResult,
    UserHint,
    accepted_realms,
    parse_record,
)
from reconciler.domain.models import is_keycloak_id
from tests.support.provider_events import (
    MASTER_UUID,
    REALM_NAME,
    REALM_UUID,
    TIME_MS,
    USER_ID,
    playa_admin_event,
    playa_user_event,
    snuk87_admin_event,
    snuk87_user_event,
)

REALMS = accepted_realms(REALM_NAME, REALM_UUID)

GROUP_ID = "c7d8e9f0-1a2b-4c3d-9e4f-5a6b7c8d9e0f"
CLIENT_UUID = "0f9e8d7c-6b5a-4948-8372-615049382716"
TIME = datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def assert_well_formed(result: ParseResult) -> None:
    """Exactly one outcome; hints carry only validated lower-case ids; detail only with invalid."""
    outcomes = [bool(result.hints), result.ignored is not None, result.invalid is not None]
    assert outcomes.count(True) == 1, result
    assert (result.detail is not None) == (result.invalid is not None)
    for hint in result.hints:
        assert is_keycloak_id(hint.user_id)
        assert hint.user_id == hint.user_id.lower()
        assert hint.realm in REALMS


def one_hint(result: ParseResult) -> UserHint:
    assert_well_formed(result)
    assert len(result.hints) == 1, result
    return result.hints[0]


ADMIN_FORMATS = pytest.mark.parametrize(
    "make_admin", [playa_admin_event, snuk87_admin_event], ids=["playa", "snuk87"]
)
USER_FORMATS = pytest.mark.parametrize(
    "make_user", [playa_user_event, snuk87_user_event], ids=["playa", "snuk87"]
)


# --- Admin events -----------------------------------------------------------------------------------------


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("operation", "reason"),
    [
        ("CREATE", HintReason.USER_CREATED),
        ("UPDATE", HintReason.USER_UPDATED),
        ("DELETE", HintReason.USER_DELETED),
        ("ACTION", HintReason.USER_UPDATED),
    ],
)
def test_admin_user_event_hints_the_user(make_admin: Any, operation: str, reason: HintReason) -> None:
    hint = one_hint(parse_record(encode(make_admin("USER", operation)), realms=REALMS))
    assert hint.user_id == USER_ID
    assert hint.reason is reason
    assert hint.operation == operation
    assert hint.event_time == TIME
    assert hint.expects_user is (reason is not HintReason.USER_DELETED)


@pytest.mark.parametrize(
    ("headers", "after_commit"),
    [
        ([("x-published", b"after-commit")], True),  # what our listener sets on every record
        ([("x-published", b"before-commit")], False),
        ([("other", b"after-commit")], False),
        ([], False),
        (None, False),
    ],
)
def test_only_the_after_commit_header_marks_hints_published_after_commit(
    headers: list[tuple[str, bytes]] | None, after_commit: bool
) -> None:
    result = parse_record(encode(snuk87_admin_event()), realms=REALMS, headers=headers)
    assert one_hint(result).after_commit is after_commit
    ignored = parse_record(
        encode(snuk87_admin_event("CLIENT", path="clients/x")), realms=REALMS, headers=headers
    )
    assert ignored.ignored is IgnoreReason.NOT_USER_RESOURCE  # the header changes only hints


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("operation", "suffix"),
    [
        ("ACTION", "reset-password"),
        ("ACTION", "execute-actions-email"),
        ("ACTION", "logout"),
        ("DELETE", f"credentials/{GROUP_ID}"),
        ("CREATE", "federated-identity/github"),
        ("DELETE", "consents/account-console"),
    ],
)
def test_admin_event_on_a_user_sub_resource_is_an_update(
    make_admin: Any, operation: str, suffix: str
) -> None:
    """Deleting a credential is not deleting the user."""
    hint = one_hint(
        parse_record(encode(make_admin("USER", operation, f"users/{USER_ID}/{suffix}")), realms=REALMS)
    )
    assert (hint.user_id, hint.reason, hint.operation) == (USER_ID, HintReason.USER_UPDATED, operation)


@ADMIN_FORMATS
@pytest.mark.parametrize("operation", ["CREATE", "DELETE"])
def test_group_membership_hints_the_member(make_admin: Any, operation: str) -> None:
    event = make_admin("GROUP_MEMBERSHIP", operation, f"users/{USER_ID}/groups/{GROUP_ID}")
    hint = one_hint(parse_record(encode(event), realms=REALMS))
    assert (hint.user_id, hint.reason, hint.operation) == (USER_ID, HintReason.GROUP_MEMBERSHIP, operation)


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("resource_type", "path"),
    [
        ("REALM_ROLE_MAPPING", f"users/{USER_ID}/role-mappings/realm"),
        ("CLIENT_ROLE_MAPPING", f"users/{USER_ID}/role-mappings/clients/{CLIENT_UUID}"),
    ],
)
@pytest.mark.parametrize("operation", ["CREATE", "DELETE"])
def test_role_mapping_hints_the_user(make_admin: Any, resource_type: str, path: str, operation: str) -> None:
    hint = one_hint(parse_record(encode(make_admin(resource_type, operation, path)), realms=REALMS))
    assert (hint.user_id, hint.reason) == (USER_ID, HintReason.ROLE_MAPPING)


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("resource_type", "path"),
    [
        ("REALM_ROLE_MAPPING", f"groups/{GROUP_ID}/role-mappings/realm"),
        ("CLIENT_ROLE_MAPPING", f"groups/{GROUP_ID}/role-mappings/clients/{CLIENT_UUID}"),
        ("CLIENT", f"clients/{CLIENT_UUID}"),
        ("REALM", ""),
        ("GROUP", f"groups/{GROUP_ID}"),
        ("REALM_ROLE", "roles/admin"),
        ("CLIENT_SCOPE", f"client-scopes/{CLIENT_UUID}"),
        ("USER_PROFILE", "users/profile"),
        ("USER_LOGIN_FAILURE", f"attack-detection/brute-force/users/{USER_ID}"),
        ("ORGANIZATION_MEMBERSHIP", f"organizations/{GROUP_ID}/members/{USER_ID}"),
    ],
)
def test_admin_event_on_other_resources_is_ignored(make_admin: Any, resource_type: str, path: str) -> None:
    result = parse_record(encode(make_admin(resource_type, "UPDATE", path)), realms=REALMS)
    assert_well_formed(result)
    assert result.ignored is IgnoreReason.NOT_USER_RESOURCE


def test_custom_resource_type_uses_the_string_form() -> None:
    """Keycloak serialises unknown enum values as CUSTOM; resourceTypeAsString holds the real type."""
    event = snuk87_admin_event() | {"resourceType": "CUSTOM", "resourceTypeAsString": "USER"}
    assert one_hint(parse_record(encode(event), realms=REALMS)).user_id == USER_ID
    event = snuk87_admin_event() | {"resourceType": "CUSTOM", "resourceTypeAsString": "MY_PLUGIN_THING"}
    assert parse_record(encode(event), realms=REALMS).ignored is IgnoreReason.NOT_USER_RESOURCE
    event = snuk87_admin_event()
    del event["resourceType"]
    assert one_hint(parse_record(encode(event), realms=REALMS)).user_id == USER_ID


@ADMIN_FORMATS
def test_admin_event_with_error_is_ignored(make_admin: Any) -> None:
    result = parse_record(encode(make_admin(error="unknown_error")), realms=REALMS)
    assert_well_formed(result)
    assert result.ignored is IgnoreReason.ERROR_EVENT


def test_admin_realm_filter_uses_the_resource_realm_not_the_admins() -> None:
    # An admin of master edits a user of our realm: ours.
    hint = one_hint(parse_record(encode(playa_admin_event()), realms=REALMS))
    assert hint.realm == REALM_NAME
    # An event of master whose admin happens to be in our realm: not ours.
    event = playa_admin_event(realm_id=MASTER_UUID)
    event["authDetails"]["realmId"] = REALM_NAME
    result = parse_record(encode(event), realms=REALMS)
    assert_well_formed(result)
    assert result.ignored is IgnoreReason.OTHER_REALM


def test_realm_matches_by_id_or_name() -> None:
    # SnuK87 with a UUID realm id: matched by name when only the name is configured ...
    hint = one_hint(parse_record(encode(snuk87_admin_event()), realms=accepted_realms(REALM_NAME)))
    assert hint.realm == REALM_NAME
    # ... playa sends no realmName: a UUID realm id must be configured to match.
    event = playa_admin_event(realm_id=REALM_UUID)
    assert parse_record(encode(event), realms=accepted_realms(REALM_NAME)).ignored is IgnoreReason.OTHER_REALM
    hint = one_hint(parse_record(encode(event), realms=accepted_realms(REALM_NAME, REALM_UUID)))
    assert hint.realm == REALM_UUID
    # Nothing configured matches nothing.
    assert parse_record(encode(snuk87_admin_event()), realms=frozenset()).ignored is IgnoreReason.OTHER_REALM


@ADMIN_FORMATS
@USER_FORMATS
def test_events_of_other_realms_are_ignored(make_admin: Any, make_user: Any) -> None:
    for event in (
        make_admin(realm_id="other"),
        make_user(realm_id="other"),
    ):
        if "realmName" in event:
            event["realmName"] = "other"
        result = parse_record(encode(event), realms=REALMS)
        assert_well_formed(result)
        assert result.ignored is IgnoreReason.OTHER_REALM


def test_event_without_any_realm_is_invalid() -> None:
    event = snuk87_user_event()
    del event["realmId"], event["realmName"]
    result = parse_record(encode(event), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.INVALID_EVENT


def test_upper_case_ids_are_normalised() -> None:
    hint = one_hint(parse_record(encode(playa_admin_event(path=f"users/{USER_ID.upper()}")), realms=REALMS))
    assert hint.user_id == USER_ID
    hint = one_hint(parse_record(encode(playa_user_event(user_id=USER_ID.upper())), realms=REALMS))
    assert hint.user_id == USER_ID


# --- Unsafe resource paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "users/../../x",
        "users/%2e%2e",
        "users/%2E%2E/admin",
        f"users/{USER_ID}/../..",
        f"users/{USER_ID}/..",
        f"users/{USER_ID}%2Fx",
        f"users/{USER_ID}%2fx",
        f"users/{USER_ID}%00",
        f"users\\{USER_ID}",
        f"users/{USER_ID}\\..\\..",
        f"users//{USER_ID}",
        f"/users/{USER_ID}",
        f"users/{USER_ID}/",
        f"users/./{USER_ID}",
        f"users/{USER_ID}?briefRepresentation=true",
        f"users/{USER_ID}#x",
        f"users/{USER_ID}\n",
        f"users/{USER_ID} ",
        f"users/{USER_ID}/groups/{GROUP_ID}/..",
        "",
    ],
)
def test_unsafe_resource_paths_are_invalid(path: str) -> None:
    result = parse_record(encode(playa_admin_event(path=path)), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.INVALID_RESOURCE_PATH


@pytest.mark.parametrize(
    "path",
    [
        "users/abc/def",  # an id with a slash: `abc` is not a Keycloak id
        "users/not-a-uuid",
        "users/admin",
        f"users/{USER_ID}x",
        f"users/{USER_ID[:-1]}",
        "users/8e1f5b0a3c2d4e6f9a7b1c2d3e4f5a6b",  # UUID without dashes
        "users/{8e1f5b0a-3c2d-4e6f-9a7b-1c2d3e4f5a6b}",
        "users/８e1f5b0a-3c2d-4e6f-9a7b-1c2d3e4f5a6b",  # fullwidth digit  # noqa: RUF001
    ],
)
def test_resource_path_with_a_bad_user_id_is_invalid(path: str) -> None:
    result = parse_record(encode(playa_admin_event(path=path)), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.INVALID_USER_ID


@pytest.mark.parametrize(
    ("resource_type", "path"),
    [
        ("USER", "users"),
        ("USER", f"groups/{USER_ID}"),
        ("GROUP_MEMBERSHIP", f"users/{USER_ID}"),
        ("GROUP_MEMBERSHIP", f"users/{USER_ID}/groups"),
        ("GROUP_MEMBERSHIP", f"users/{USER_ID}/role-mappings/{GROUP_ID}"),
        ("GROUP_MEMBERSHIP", f"groups/{GROUP_ID}/members/{USER_ID}"),
        ("REALM_ROLE_MAPPING", f"users/{USER_ID}"),
        ("CLIENT_ROLE_MAPPING", f"users/{USER_ID}/groups/{GROUP_ID}"),
    ],
)
def test_resource_path_of_an_unexpected_shape_is_invalid(resource_type: str, path: str) -> None:
    result = parse_record(encode(playa_admin_event(resource_type, "CREATE", path)), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.INVALID_RESOURCE_PATH


def test_user_admin_event_without_path_or_operation_is_invalid() -> None:
    event = playa_admin_event()
    del event["resourcePath"]
    assert parse_record(encode(event), realms=REALMS).invalid is InvalidReason.INVALID_RESOURCE_PATH
    event = playa_admin_event() | {"resourcePath": None}
    assert parse_record(encode(event), realms=REALMS).invalid is InvalidReason.INVALID_RESOURCE_PATH
    event = playa_admin_event() | {"operationType": None}
    assert parse_record(encode(event), realms=REALMS).invalid is InvalidReason.INVALID_EVENT


# --- User events ------------------------------------------------------------------------------------------

EXPECTED_USER_EVENT_REASONS = {
    "REGISTER": HintReason.USER_CREATED,
    "IDENTITY_PROVIDER_FIRST_LOGIN": HintReason.USER_CREATED,
    "DELETE_ACCOUNT": HintReason.USER_DELETED,
    "UPDATE_PROFILE": HintReason.USER_EVENT,
    "UPDATE_EMAIL": HintReason.USER_EVENT,
    "VERIFY_EMAIL": HintReason.USER_EVENT,
    "VERIFY_PROFILE": HintReason.USER_EVENT,
    "FEDERATED_IDENTITY_LINK": HintReason.USER_EVENT,
    "FEDERATED_IDENTITY_OVERRIDE_LINK": HintReason.USER_EVENT,
    "REMOVE_FEDERATED_IDENTITY": HintReason.USER_EVENT,
    "IDENTITY_PROVIDER_LINK_ACCOUNT": HintReason.USER_EVENT,
    "CUSTOM_REQUIRED_ACTION": HintReason.USER_EVENT,
    "EXECUTE_ACTIONS": HintReason.USER_EVENT,
    "USER_DISABLED_BY_PERMANENT_LOCKOUT": HintReason.USER_EVENT,
}


def test_accepted_user_event_types_are_the_documented_ones() -> None:
    assert set(EXPECTED_USER_EVENT_REASONS) == ACCEPTED_USER_EVENT_TYPES


@USER_FORMATS
@pytest.mark.parametrize(("event_type", "reason"), sorted(EXPECTED_USER_EVENT_REASONS.items()))
def test_user_event_that_changes_a_user_hints_it(make_user: Any, event_type: str, reason: HintReason) -> None:
    hint = one_hint(parse_record(encode(make_user(event_type)), realms=REALMS))
    assert hint == UserHint(USER_ID, reason, TIME, hint.realm, event_type)


@USER_FORMATS
@pytest.mark.parametrize(
    "event_type",
    [
        "LOGIN",
        "LOGOUT",
        "CODE_TO_TOKEN",
        "REFRESH_TOKEN",
        "CLIENT_LOGIN",
        "INTROSPECT_TOKEN",
        "USER_INFO_REQUEST",
        "TOKEN_EXCHANGE",
        "UPDATE_PASSWORD",  # credentials are not mirrored
        "UPDATE_CREDENTIAL",
        "REMOVE_CREDENTIAL",
        "UPDATE_TOTP",
        "REMOVE_TOTP",
        "RESET_PASSWORD",
        "SEND_VERIFY_EMAIL",  # nothing changed yet; VERIFY_EMAIL follows
        "SEND_RESET_PASSWORD",
        "USER_DISABLED_BY_TEMPORARY_LOCKOUT",
        "GRANT_CONSENT",
        "SOME_FUTURE_EVENT",
        "",
    ],
)
def test_user_event_that_cannot_change_mirrored_fields_is_ignored(make_user: Any, event_type: str) -> None:
    result = parse_record(encode(make_user(event_type)), realms=REALMS)
    assert_well_formed(result)
    assert result.ignored is IgnoreReason.EVENT_TYPE


@USER_FORMATS
@pytest.mark.parametrize(
    ("event_type", "error"),
    [
        ("LOGIN_ERROR", "invalid_user_credentials"),
        ("REGISTER_ERROR", "email_in_use"),
        ("UPDATE_PROFILE_ERROR", "invalid_input"),
        ("UPDATE_EMAIL_ERROR", None),
        ("UPDATE_PROFILE", "invalid_input"),  # an accepted type with `error` set changed nothing
    ],
)
def test_error_user_events_are_ignored(make_user: Any, event_type: str, error: str | None) -> None:
    result = parse_record(encode(make_user(event_type, error=error)), realms=REALMS)
    assert_well_formed(result)
    assert result.ignored is IgnoreReason.ERROR_EVENT


@USER_FORMATS
def test_accepted_user_event_without_user_id_is_invalid(make_user: Any) -> None:
    for event in (make_user("UPDATE_PROFILE", None), make_user("REGISTER", "")):
        result = parse_record(encode(event), realms=REALMS)
        assert_well_formed(result)
        assert result.invalid is InvalidReason.MISSING_USER_ID
    event = make_user("VERIFY_EMAIL")
    del event["userId"]
    assert parse_record(encode(event), realms=REALMS).invalid is InvalidReason.MISSING_USER_ID


@USER_FORMATS
@pytest.mark.parametrize("user_id", ["../../admin", "alice", f"{USER_ID}/../x", f"{USER_ID} ", "%2e%2e"])
def test_accepted_user_event_with_bad_user_id_is_invalid(make_user: Any, user_id: str) -> None:
    result = parse_record(encode(make_user("UPDATE_EMAIL", user_id)), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.INVALID_USER_ID


def test_ignored_user_event_does_not_need_a_user_id() -> None:
    """A failed login for an unknown user has no userId; that is no reason to dead-letter it."""
    result = parse_record(
        encode(playa_user_event("LOGIN_ERROR", None, error="user_not_found")), realms=REALMS
    )
    assert result.ignored is IgnoreReason.ERROR_EVENT


# --- Wire-format details ----------------------------------------------------------------------------------


def test_playa_variant_with_omitted_fields_parses() -> None:
    """The playa provider may omit id, realmName and details entirely instead of sending null."""
    admin = playa_admin_event()
    del admin["resourceTypeAsString"], admin["error"], admin["representation"]
    assert one_hint(parse_record(encode(admin), realms=REALMS)).user_id == USER_ID
    user = playa_user_event("REGISTER")
    del user["details"], user["sessionId"], user["error"]
    assert one_hint(parse_record(encode(user), realms=REALMS)).reason is HintReason.USER_CREATED
    # ... or send them as explicit nulls.
    admin = playa_admin_event() | {"id": None, "realmName": None, "details": None}
    assert one_hint(parse_record(encode(admin), realms=REALMS)).user_id == USER_ID


def test_unknown_fields_are_ignored() -> None:
    event = snuk87_admin_event() | {
        "resourceId": USER_ID,
        "details": {"x": "y"},
        "someFutureField": [1, {"nested": True}],
        "authDetails": {"realmId": MASTER_UUID, "newThing": 5},
    }
    assert one_hint(parse_record(encode(event), realms=REALMS)).user_id == USER_ID
    user = snuk87_user_event() | {"details": {"anything": [1, 2]}, "sessionId": 12345}
    assert one_hint(parse_record(encode(user), realms=REALMS)).user_id == USER_ID


def test_event_time_is_utc_from_milliseconds_and_optional() -> None:
    hint = one_hint(parse_record(encode(snuk87_user_event() | {"time": 0}), realms=REALMS))
    assert hint.event_time == datetime(1970, 1, 1, tzinfo=UTC)
    event = snuk87_user_event()
    del event["time"]
    assert one_hint(parse_record(encode(event), realms=REALMS)).event_time is None
    hint = one_hint(parse_record(encode(snuk87_user_event()), realms=REALMS))
    assert hint.event_time == TIME and hint.event_time.tzinfo is UTC


@pytest.mark.parametrize(
    "change",
    [
        {"time": "1700000000123"},
        {"time": 1700000000123.0},
        {"time": True},
        {"time": -1},
        {"time": 10**20},
        {"resourcePath": 42},
        {"resourcePath": ["users", USER_ID]},
        {"realmId": 7},
        {"realmName": {"name": "app"}},
        {"resourceType": 1},
        {"operationType": "PATCH"},
        {"operationType": "update"},
        {"error": 500},
    ],
)
def test_admin_event_with_wrong_field_types_is_invalid(change: dict[str, Any]) -> None:
    result = parse_record(encode(snuk87_admin_event() | change), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.INVALID_EVENT
    assert result.detail is not None and result.detail.startswith("admin event: ")


@pytest.mark.parametrize(
    "change",
    [
        {"time": "1700000000123"},
        {"type": None},
        {"type": 3},
        {"userId": 12345},
        {"userId": [USER_ID]},
        {"realmId": None, "realmName": 1},
    ],
)
def test_user_event_with_wrong_field_types_is_invalid(change: dict[str, Any]) -> None:
    result = parse_record(encode(snuk87_user_event() | change), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.INVALID_EVENT


def test_invalid_detail_never_echoes_the_representation() -> None:
    secret = "s3cr3t-Passw0rd"
    representation = json.dumps({"username": "bob", "credentials": [{"type": "password", "value": secret}]})
    event = playa_admin_event("USER", "CREATE", "users/../../x", representation=representation)
    event["time"] = "not a number"
    for candidate in (event, event | {"time": TIME_MS}):
        result = parse_record(encode(candidate), realms=REALMS)
        assert result.invalid is not None
        assert (
            result.detail is not None and secret not in result.detail and "not a number" not in result.detail
        )


def test_detail_is_bounded() -> None:
    result = parse_record(encode(playa_admin_event(path="users/" + "a" * 3000)), realms=REALMS)
    assert result.invalid is InvalidReason.INVALID_USER_ID
    assert result.detail is not None and len(result.detail) <= 300


# --- Not an event at all ----------------------------------------------------------------------------------


def test_tombstone_is_ignored() -> None:
    result = parse_record(None, realms=REALMS)
    assert_well_formed(result)
    assert result.ignored is IgnoreReason.TOMBSTONE


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b"{",
        b'{"type": "LOGIN",}',
        b"\xff\xfe\x00\x00",
        b"\xc3\x28",  # invalid UTF-8
        '{"type":"LOGIN"}'.encode("utf-16"),  # JSON, but not UTF-8
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b"[" * 100_000 + b"]" * 100_000,
        b'{"type": "REGISTER", "details": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"time": ' + b"9" * 5000 + b"}",  # longer than Python's int digit limit
    ],
)
def test_undecodable_values_are_invalid(value: bytes) -> None:
    result = parse_record(value, realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.NOT_JSON


@pytest.mark.parametrize(
    "value",
    [b"[]", b"[{}]", b"42", b"-1.5", b"null", b"true", b'"users/x"', b"{}", b'{"userId": "x"}'],
)
def test_json_that_is_not_an_event_is_invalid(value: bytes) -> None:
    result = parse_record(value, realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.NOT_AN_EVENT


def test_mixed_user_and_admin_fields_are_invalid() -> None:
    result = parse_record(encode(snuk87_admin_event() | {"type": "REGISTER"}), realms=REALMS)
    assert result.invalid is InvalidReason.NOT_AN_EVENT


def test_oversized_value_is_rejected_before_decoding() -> None:
    padding = "x" * MAX_RECORD_BYTES
    result = parse_record(encode(snuk87_user_event() | {"details": {"pad": padding}}), realms=REALMS)
    assert_well_formed(result)
    assert result.invalid is InvalidReason.TOO_LARGE
    # Not even decoded: garbage that size is "too large", not "not JSON".
    assert parse_record(b"\xff" * (MAX_RECORD_BYTES + 1), realms=REALMS).invalid is InvalidReason.TOO_LARGE
    assert parse_record(b"\xff" * 10, realms=REALMS, max_bytes=9).invalid is InvalidReason.TOO_LARGE
    small = encode(snuk87_user_event())
    assert parse_record(small, realms=REALMS, max_bytes=len(small)).hints


def test_bytearray_and_memoryview_values_parse() -> None:
    raw = encode(playa_admin_event())
    assert one_hint(parse_record(bytearray(raw), realms=REALMS)).user_id == USER_ID  # type: ignore[arg-type]
    assert one_hint(parse_record(memoryview(raw), realms=REALMS)).user_id == USER_ID  # type: ignore[arg-type]
    result = parse_record("a str", realms=REALMS)  # type: ignore[arg-type]
    assert result.invalid is InvalidReason.NOT_JSON


def test_accepted_realms_drops_empty_values() -> None:
    assert accepted_realms("app") == frozenset({"app"})
    assert accepted_realms("app", None, "", REALM_UUID) == frozenset({"app", REALM_UUID})


def test_reason_codes_are_small_label_safe_strings() -> None:
    for enum in (HintReason, IgnoreReason, InvalidReason):
        for member in enum:
            assert set(member.value) <= set(string.ascii_lowercase + "_")
    assert f"ignored_{IgnoreReason.OTHER_REALM}" == "ignored_other_realm"


# --- Properties -------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)

uuid_strings = st.uuids().map(str)
mixed_case_uuids = st.tuples(uuid_strings, st.booleans()).map(lambda t: t[0].upper() if t[1] else t[0])
path_segments = (
    st.sampled_from(
        [
            "users",
            "groups",
            "role-mappings",
            "realm",
            "clients",
            "..",
            ".",
            "",
            "%2e",
            "%2F",
            "a\\b",
            "x?y",
            USER_ID,
        ]
    )
    | mixed_case_uuids
    | st.text(max_size=8)
)
user_paths = st.builds(
    lambda user_id, suffix: f"users/{user_id}{suffix}",
    mixed_case_uuids | st.sampled_from(["..", "%2e%2e", "abc", "", f"{USER_ID}/.."]) | st.text(max_size=40),
    st.sampled_from(
        [
            "",
            f"/groups/{GROUP_ID}",
            "/role-mappings/realm",
            f"/role-mappings/clients/{CLIENT_UUID}",
            "/logout",
            "/../..",
            "/",
            "//x",
            "?x=1",
            "%2Fx",
            "\\..",
            "/groups",
        ]
    ),
)
resource_paths = user_paths | st.lists(path_segments, max_size=5).map("/".join)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, sometimes any JSON value at all."""
    return st.integers(0, 15).flatmap(lambda n: json_values if n == 0 else good)


common_fields: dict[str, st.SearchStrategy[Any]] = {
    "time": mostly(st.integers(min_value=0, max_value=2**45)),
    "realmId": mostly(st.sampled_from([REALM_NAME, REALM_NAME, REALM_UUID, "master"])),
    "realmName": mostly(st.sampled_from([REALM_NAME, "master", None])),
    "error": mostly(st.sampled_from([None, None, "", "invalid_user_credentials"])),
    "id": mostly(uuid_strings),
    "details": json_values,
}
admin_required: dict[str, st.SearchStrategy[Any]] = {
    "realmId": common_fields["realmId"],
    "resourceType": mostly(
        st.sampled_from(
            [
                "USER",
                "USER",
                "GROUP_MEMBERSHIP",
                "REALM_ROLE_MAPPING",
                "CLIENT_ROLE_MAPPING",
                "CLIENT",
                "CUSTOM",
            ]
        )
    ),
    "operationType": mostly(st.sampled_from(["CREATE", "UPDATE", "DELETE", "ACTION"])),
    "resourcePath": mostly(resource_paths),
}
admin_optional: dict[str, st.SearchStrategy[Any]] = {
    **{k: v for k, v in common_fields.items() if k != "realmId"},
    "@class": st.just("ru.playa.keycloak.kafka.KeycloakAdminEvent"),
    "resourceTypeAsString": mostly(st.sampled_from(["USER", "GROUP_MEMBERSHIP", "REALM_ROLE_MAPPING", "X"])),
    "authDetails": mostly(st.fixed_dictionaries({"realmId": st.sampled_from([MASTER_UUID, REALM_NAME])})),
    "representation": mostly(st.text(max_size=30).map(json.dumps)),
}
user_required: dict[str, st.SearchStrategy[Any]] = {
    "realmId": common_fields["realmId"],
    "type": mostly(
        st.sampled_from([*sorted(ACCEPTED_USER_EVENT_TYPES), "LOGIN", "LOGIN_ERROR", "UPDATE_PASSWORD"])
    ),
    "userId": mostly(mixed_case_uuids | st.sampled_from(["../x", "", None, f"{USER_ID}/.."])),
}
user_optional: dict[str, st.SearchStrategy[Any]] = {
    **{k: v for k, v in common_fields.items() if k != "realmId"},
    "@class": st.just("ru.playa.keycloak.kafka.KeycloakEvent"),
    "clientId": mostly(st.just("account-console")),
    "sessionId": mostly(uuid_strings),
}
event_like = (
    st.fixed_dictionaries(admin_required, optional=admin_optional)
    | st.fixed_dictionaries(user_required, optional=user_optional)
    | st.fixed_dictionaries(
        {}, optional={**admin_required, **user_required, **admin_optional, **user_optional}
    )
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_never_raises_on_arbitrary_bytes(value: bytes) -> None:
    assert_well_formed(parse_record(value, realms=REALMS))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_never_raises_on_arbitrary_json(value: Any) -> None:
    result = parse_record(encode(value), realms=REALMS)
    assert_well_formed(result)
    if not isinstance(value, dict):
        assert result.invalid is InvalidReason.NOT_AN_EVENT


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(event_like)
def test_event_like_objects_never_raise_and_hint_only_valid_ids(event: dict[str, Any]) -> None:
    result = parse_record(encode(event), realms=REALMS)
    assert_well_formed(result)
    for hint in result.hints:
        # The id came from the event, unchanged apart from case, and the path around it was safe.
        if "resourcePath" in event:
            path = event["resourcePath"]
            assert path.lower().split("/")[1] == hint.user_id
            assert ".." not in path and "%" not in path and "\\" not in path and "//" not in path
        else:
            assert event["userId"].lower() == hint.user_id


@st.composite
def valid_admin_events(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    user_id = str(draw(st.uuids()))
    wire_id = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in user_id)
    resource_type, path = draw(
        st.sampled_from(
            [
                ("USER", f"users/{wire_id}"),
                ("USER", f"users/{wire_id}/reset-password"),
                ("GROUP_MEMBERSHIP", f"users/{wire_id}/groups/{GROUP_ID}"),
                ("REALM_ROLE_MAPPING", f"users/{wire_id}/role-mappings/realm"),
                ("CLIENT_ROLE_MAPPING", f"users/{wire_id}/role-mappings/clients/{CLIENT_UUID}"),
            ]
        )
    )
    operation = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "ACTION"]))
    makers: list[Callable[[str, str, str], dict[str, Any]]] = [playa_admin_event, snuk87_admin_event]
    event = draw(st.sampled_from(makers))(resource_type, operation, path)
    event["time"] = draw(st.integers(min_value=0, max_value=253_402_300_799_999))
    return user_id, event


@given(valid_admin_events())
def test_valid_admin_event_round_trips_the_user_id(case: tuple[str, dict[str, Any]]) -> None:
    user_id, event = case
    hint = one_hint(parse_record(encode(event), realms=REALMS))
    assert hint.user_id == user_id
    assert hint.operation == event["operationType"]
    assert hint.event_time is not None
    assert int(hint.event_time.timestamp() * 1000) // 1000 == event["time"] // 1000


@given(st.uuids().map(str), st.sampled_from(sorted(ACCEPTED_USER_EVENT_TYPES)))
def test_valid_user_event_round_trips_the_user_id(user_id: str, event_type: str) -> None:
    hint = one_hint(parse_record(encode(snuk87_user_event(event_type, user_id.upper())), realms=REALMS))
    assert (hint.user_id, hint.operation) == (user_id, event_type)


# --- Organization events (ORGANIZATIONS_ENABLED) ------------------------------------------------------------
# The shapes Keycloak 26.7.3 emits (seen on the stack): ORGANIZATION_MEMBERSHIP CREATE on
# `organizations/{org}/members` (the user only in the details), DELETE on `organizations/{org}/members/{user}`;
# ORGANIZATION UPDATE / DELETE on `organizations/{org}`.

ORG_ID = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"


def parse_org(event: dict[str, Any]) -> ParseResult:
    result = parse_record(encode(event), realms=REALMS, organizations=True)
    assert_well_formed(result)
    return result


@ADMIN_FORMATS
def test_a_member_removed_hints_that_user(make_admin: Any) -> None:
    path = f"organizations/{ORG_ID}/members/{USER_ID.upper()}"
    hint = one_hint(parse_org(make_admin("ORGANIZATION_MEMBERSHIP", "DELETE", path)))
    assert hint.user_id == USER_ID.lower()
    assert hint.reason is HintReason.ORGANIZATION_MEMBERSHIP
    assert hint.operation == "DELETE"
    assert hint.expects_user


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("resource_type", "operation", "path", "change"),
    [
        ("ORGANIZATION_MEMBERSHIP", "CREATE", f"organizations/{ORG_ID}/members", "members"),
        ("ORGANIZATION", "UPDATE", f"organizations/{ORG_ID}", "renamed"),
        ("ORGANIZATION", "DELETE", f"organizations/{ORG_ID}", "deleted"),
    ],
)
def test_an_organization_change_that_names_no_user_names_the_organization(
    make_admin: Any, resource_type: str, operation: str, path: str, change: str
) -> None:
    result = parse_org(make_admin(resource_type, operation, path.replace(ORG_ID, ORG_ID.upper())))
    assert result.ignored is IgnoreReason.ORGANIZATION
    assert result.organization is not None
    assert result.organization.organization_id == ORG_ID
    assert result.organization.change == change
    assert result.organization.operation == operation
    assert result.organization.event_time == TIME


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("resource_type", "operation", "path"),
    [
        ("ORGANIZATION", "CREATE", f"organizations/{ORG_ID}"),  # no members yet
        ("ORGANIZATION", "UPDATE", f"organizations/{ORG_ID}/identity-providers/idp"),
        ("ORGANIZATION", "CREATE", f"organizations/{ORG_ID}/members"),  # not a membership type
        ("ORGANIZATION_MEMBERSHIP", "CREATE", f"organizations/{ORG_ID}/members/invite-user"),
        ("ORGANIZATION_MEMBERSHIP", "CREATE", f"organizations/{ORG_ID}/members/invite-existing-user"),
        ("ORGANIZATION_MEMBERSHIP", "DELETE", f"organizations/{ORG_ID}/members"),
    ],
)
def test_organization_events_that_change_no_membership_are_ignored(
    make_admin: Any, resource_type: str, operation: str, path: str
) -> None:
    result = parse_org(make_admin(resource_type, operation, path))
    assert result.ignored is IgnoreReason.NOT_USER_RESOURCE
    assert result.organization is None


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("resource_type", "path", "reason"),
    [
        ("ORGANIZATION", "organizations/not-a-uuid", InvalidReason.INVALID_RESOURCE_PATH),
        ("ORGANIZATION", f"organizations/{ORG_ID}/../x", InvalidReason.INVALID_RESOURCE_PATH),
        ("ORGANIZATION", f"users/{USER_ID}", InvalidReason.INVALID_RESOURCE_PATH),
        (
            "ORGANIZATION_MEMBERSHIP",
            f"organizations/{ORG_ID}/members/x%2e",
            InvalidReason.INVALID_RESOURCE_PATH,
        ),
        (
            "ORGANIZATION_MEMBERSHIP",
            f"organizations/{ORG_ID}/members/not-a-uuid",
            InvalidReason.INVALID_USER_ID,
        ),
    ],
)
def test_unsafe_organization_paths_are_dead_lettered(
    make_admin: Any, resource_type: str, path: str, reason: InvalidReason
) -> None:
    assert parse_org(make_admin(resource_type, "DELETE", path)).invalid is reason


@ADMIN_FORMATS
@pytest.mark.parametrize(
    ("resource_type", "operation", "path"),
    [
        ("ORGANIZATION_MEMBERSHIP", "DELETE", f"organizations/{ORG_ID}/members/{USER_ID}"),
        ("ORGANIZATION_MEMBERSHIP", "CREATE", f"organizations/{ORG_ID}/members"),
        ("ORGANIZATION", "UPDATE", f"organizations/{ORG_ID}"),
    ],
)
def test_with_organizations_off_organization_events_are_ignored_as_today(
    make_admin: Any, resource_type: str, operation: str, path: str
) -> None:
    result = parse_record(encode(make_admin(resource_type, operation, path)), realms=REALMS)
    assert result.ignored is IgnoreReason.NOT_USER_RESOURCE
    assert result.organization is None and not result.hints


@given(path=st.text(alphabet=string.ascii_letters + string.digits + "/.-%\\?#", max_size=80))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_organization_path_is_parsed_without_raising_and_leaks_no_unsafe_id(path: str) -> None:
    for resource_type in ("ORGANIZATION", "ORGANIZATION_MEMBERSHIP"):
        result = parse_org(snuk87_admin_event(resource_type, "DELETE", f"organizations/{path}"))
        if result.organization is not None:
            assert is_keycloak_id(result.organization.organization_id)
            assert result.organization.organization_id == result.organization.organization_id.lower()
