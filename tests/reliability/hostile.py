"""Generated hostile Kafka messages, each with what the consumer must do with it.

Every message is built so that its fate is known without asking the reconciler's parser: valid events of
real users must be applied; malformed ones must be dead-lettered (with one of the reasons listed for their
kind); well-formed events that concern nobody here (other realms, logins, clients, tombstones) are ignored.
The formats follow Keycloak's own Event / AdminEvent JSON as the listener publishes them.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

APPLY, DEAD_LETTER, IGNORE = "apply", "dead_letter", "ignore"
ADMIN, USER = "admin", "user"
NOT_JSON, NOT_AN_EVENT, INVALID_EVENT = "not_json", "not_an_event", "invalid_event"
BAD_PATH, BAD_ID, NO_ID, TOO_LARGE = (
    "invalid_resource_path",
    "invalid_user_id",
    "missing_user_id",
    "too_large",
)
HUGE_BYTES = 1_600_000  # above the consumer's 1 MiB limit; the hostile topics accept up to 3 MB


@dataclass(frozen=True, slots=True)
class Message:
    topic: str  # ADMIN or USER
    value: bytes | None
    expect: str  # APPLY, DEAD_LETTER or IGNORE
    kind: str  # what was generated (for figures and failure messages)
    reasons: frozenset[str] = frozenset()  # acceptable dead-letter reasons
    user_id: str | None = None  # the user a valid message names


def _now_ms() -> int:
    return int(time.time() * 1000)


def admin_event(realm: str, path: Any, operation: Any = "UPDATE", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "time": _now_ms(),
        "realmId": realm,
        "realmName": realm,
        "authDetails": {"realmId": "master", "realmName": "master", "ipAddress": "127.0.0.1"},
        "resourceType": "USER",
        "operationType": operation,
        "resourcePath": path,
        "representation": None,
        "resourceTypeAsString": "USER",
    }
    event.update(fields)
    return event


def user_event(realm: str, user_id: Any, event_type: Any = "UPDATE_PROFILE", **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "time": _now_ms(),
        "type": event_type,
        "realmId": realm,
        "realmName": realm,
        "clientId": "account-console",
        "userId": user_id,
        "ipAddress": "127.0.0.1",
        "details": {"context": "ACCOUNT"},
    }
    event.update(fields)
    return event


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


class HostileGenerator:
    """`valid(user_id)` and `hostile()` messages for one realm, from a seeded random source."""

    def __init__(self, realm: str, rng: random.Random) -> None:
        self.realm = realm
        self.rng = rng
        self._makers: list[tuple[int, Callable[[], Message]]] = [
            (14, self._random_bytes),
            (6, self._broken_json_text),
            (4, self._huge),
            (6, self._deep_json),
            (6, self._not_an_object),
            (16, self._wrong_types),
            (22, self._path_attacks),
            (12, self._user_id_attacks),
            (6, self._other_realm),
            (4, self._not_for_us),
            (4, self._no_realm),
        ]
        self._weights = [w for w, _ in self._makers]
        self.huge_budget = 12  # messages above 1 MiB are slow to move: a handful proves the point

    def valid(self, user_id: str) -> Message:
        if self.rng.random() < 0.5:
            value = admin_event(
                self.realm, f"users/{user_id}", self.rng.choice(["UPDATE", "CREATE", "ACTION"])
            )
            return Message(ADMIN, _json(value), APPLY, "valid admin event", user_id=user_id)
        event_type = self.rng.choice(["UPDATE_PROFILE", "UPDATE_EMAIL", "VERIFY_EMAIL", "REGISTER"])
        return Message(
            USER,
            _json(user_event(self.realm, user_id, event_type)),
            APPLY,
            "valid user event",
            user_id=user_id,
        )

    def hostile(self) -> Message:
        (maker,) = self.rng.choices([m for _, m in self._makers], weights=self._weights)
        return maker()

    # --- unparseable --------------------------------------------------------------------------------------------
    def _random_bytes(self) -> Message:
        # A leading 0xFF byte is never valid UTF-8: whatever follows, this is not JSON.
        body = bytes([0xFF]) + self.rng.randbytes(self.rng.randint(0, 4000))
        return Message(self._topic(), body, DEAD_LETTER, "random bytes", frozenset({NOT_JSON}))

    def _broken_json_text(self) -> Message:
        while True:
            text = "{" + "".join(self.rng.choice("abcxyz:,[]{} ") for _ in range(self.rng.randint(1, 300)))
            if not _parses(text):  # "{}" and "{ }" can come out too (about one run in seven): those are JSON
                break
        return Message(self._topic(), text.encode(), DEAD_LETTER, "broken JSON", frozenset({NOT_JSON}))

    def _huge(self) -> Message:
        if self.huge_budget <= 0:
            return self._wrong_types()
        self.huge_budget -= 1
        choice = self.rng.randrange(3)
        if choice == 0:  # above the size limit, valid-looking event with a giant field
            event = admin_event(self.realm, f"users/{uuid.uuid4()}", representation="x" * HUGE_BYTES)
            return Message(ADMIN, _json(event), DEAD_LETTER, "huge event (1.6 MB)", frozenset({TOO_LARGE}))
        if choice == 1:  # below the size limit, but the path is 500 kB long
            event = admin_event(self.realm, "users/" + "a" * 500_000)
            return Message(
                ADMIN, _json(event), DEAD_LETTER, "huge resourcePath (500 kB)", frozenset({INVALID_EVENT})
            )
        return Message(
            self._topic(), b"A" * HUGE_BYTES, DEAD_LETTER, "huge garbage (1.6 MB)", frozenset({TOO_LARGE})
        )

    def _deep_json(self) -> Message:
        depth = self.rng.choice([2_000, 20_000, 100_000])  # at most 600 kB: below the size limit
        if self.rng.random() < 0.5:
            body = b"[" * depth + b"]" * depth
        else:
            body = b'{"a":' * depth + b"1" + b"}" * depth
        return Message(self._topic(), body, DEAD_LETTER, f"JSON nested {depth} deep", frozenset({NOT_JSON}))

    def _not_an_object(self) -> Message:
        value = self.rng.choice(
            [
                b"null",
                b"42",
                b'"users/x"',
                b"[1,2,3]",
                b"true",
                b"[]",
                _json([admin_event(self.realm, "users/x")]),
            ]
        )
        return Message(self._topic(), value, DEAD_LETTER, "JSON but not an object", frozenset({NOT_AN_EVENT}))

    # --- events with wrong types ---------------------------------------------------------------------------------
    def _wrong_types(self) -> Message:
        user_id = str(uuid.uuid4())
        cases: list[tuple[str, dict[str, Any]]] = [
            (ADMIN, admin_event(self.realm, f"users/{user_id}", time="1700000000000")),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", time=-5)),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", time=10**30)),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", time=1.5)),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", realmId=12345, realmName=None)),
            (ADMIN, admin_event(self.realm, ["users", user_id])),
            (ADMIN, admin_event(self.realm, {"users": user_id})),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", operation="EXPLODE")),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", operation=7)),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", resourceType=["USER"])),
            (ADMIN, admin_event(self.realm, f"users/{user_id}", realmId=[[[[self.realm]]]], realmName=None)),
            (USER, user_event(self.realm, int(user_id[:8], 16))),
            (USER, user_event(self.realm, [user_id])),
            (USER, user_event(self.realm, user_id, event_type=7)),
            (USER, user_event(self.realm, user_id, time="now")),
            (USER, user_event(self.realm, user_id, realmId={"id": self.realm}, realmName=None)),
        ]
        topic, event = self.rng.choice(cases)
        return Message(topic, _json(event), DEAD_LETTER, "wrong field type", frozenset({INVALID_EVENT}))

    def _no_realm(self) -> Message:
        user_id = str(uuid.uuid4())
        if self.rng.random() < 0.5:
            event = admin_event(self.realm, f"users/{user_id}")
            topic = ADMIN
        else:
            event = user_event(self.realm, user_id)
            topic = USER
        del event["realmId"], event["realmName"]
        return Message(topic, _json(event), DEAD_LETTER, "no realm", frozenset({INVALID_EVENT}))

    # --- ids that must never reach a URL ------------------------------------------------------------------------
    def _path_attacks(self) -> Message:
        real = str(uuid.uuid4())
        paths = [
            "users/../../x",
            "users/../../../admin/realms/master/users",
            f"users/{real}/../../../master",
            f"users/{real}/..",
            "users/..%2F..%2Fx",
            f"users/%2e%2e%2f{real}",
            f"users/{real}%2F..%2F..%2Fclients",
            f"users/{real}%00",
            f"users//{real}",
            f"/users/{real}",
            f"users/{real}/",
            f"users/{real}?x=1",
            f"users/{real}#frag",
            f"users/{real}\\..\\x",
            f"users/{real} ",
            f"users/./{real}",
            "users/",
            "users",
            f"clients/{real}",
            f"users/{real}/groups",
            f"users/{real}/groups/a/b",
        ]
        path = self.rng.choice(paths)
        resource_type = "GROUP_MEMBERSHIP" if "/groups" in path else "USER"
        event = admin_event(self.realm, path, resourceType=resource_type, resourceTypeAsString=resource_type)
        return Message(ADMIN, _json(event), DEAD_LETTER, f"resourcePath {path[:40]!r}", frozenset({BAD_PATH}))

    def _user_id_attacks(self) -> Message:
        real = str(uuid.uuid4())
        ids: list[Any] = [
            "../../admin",
            "a/b",
            f"{real}/../x",
            "%2e%2e%2f",
            f"{real}%2F",
            real[:-1],
            real + "0",
            real.replace("-", ""),
            f"{{{real}}}",
            real.replace("a", "g").replace("b", "g").replace("c", "g").replace("d", "g") + "x",
            "\uff10" * 8 + real[8:],  # full-width digits
            "admin",
            "null",
            " " + real,
        ]
        value = self.rng.choice(ids)
        if self.rng.random() < 0.5:
            event = admin_event(self.realm, f"users/{value}")
            topic = ADMIN
            reasons = frozenset({BAD_ID, BAD_PATH})
        else:
            event = user_event(self.realm, value)
            topic = USER
            reasons = frozenset({BAD_ID})
        if self.rng.random() < 0.1 and topic == USER:
            event["userId"] = "" if self.rng.random() < 0.5 else None
            reasons = frozenset({NO_ID})
        return Message(topic, _json(event), DEAD_LETTER, "invalid user id", reasons)

    # --- well formed, not ours ----------------------------------------------------------------------------------
    def _other_realm(self) -> Message:
        other = self.rng.choice(["master", "other-realm", "t-someone-else", str(uuid.uuid4())])
        user_id = str(uuid.uuid4())
        if self.rng.random() < 0.5:
            return Message(ADMIN, _json(admin_event(other, f"users/{user_id}")), IGNORE, "other realm")
        return Message(USER, _json(user_event(other, user_id)), IGNORE, "other realm")

    def _not_for_us(self) -> Message:
        user_id = str(uuid.uuid4())
        cases: list[tuple[str, bytes | None]] = [
            (USER, _json(user_event(self.realm, user_id, "LOGIN"))),
            (USER, _json(user_event(self.realm, user_id, "UPDATE_PROFILE_ERROR", error="invalid"))),
            (
                ADMIN,
                _json(
                    admin_event(
                        self.realm, f"clients/{user_id}", resourceType="CLIENT", resourceTypeAsString="CLIENT"
                    )
                ),
            ),
            (ADMIN, _json(admin_event(self.realm, f"users/{user_id}", error="denied"))),
            (self._topic(), None),  # tombstone
        ]
        topic, value = self.rng.choice(cases)
        return Message(topic, value, IGNORE, "not a user change")

    def _topic(self) -> str:
        return ADMIN if self.rng.random() < 0.5 else USER


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
