"""The "every committed offset is applied" check, and waiting for the store to converge."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord

from tests.reliability.harness.load import version_of
from tests.support.kafka_offsets import (
    Offsets,
    PartitionReader,
    committed_offsets,
    end_offsets,
    seed_group_offsets,
)
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class CommitCheck:
    committed_records: int  # records below the committed offsets (since the scenario started)
    user_updates: int  # of those, Keycloak UPDATE events of the scenario's users
    pending_records: int  # records at or above the committed offsets (not committed yet)
    violations: list[tuple[str, int, int | None]]  # (user, version the committed events require, stored)


def update_version(record_value: bytes | None, realm: str) -> tuple[str, int] | None:
    """(user id, lastName version) of a Keycloak admin UPDATE event of `realm` carrying a representation."""
    try:
        event = json.loads(record_value or b"null")
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("realmId") != realm or event.get("operationType") != "UPDATE":
        return None
    path, representation = event.get("resourcePath"), event.get("representation")
    if not isinstance(path, str) or not path.startswith("users/") or not isinstance(representation, str):
        return None
    try:
        body = json.loads(representation)
    except ValueError:
        return None
    version = version_of(body.get("lastName")) if isinstance(body, dict) else None
    parts = path.split("/")
    return (parts[1], version) if version is not None and len(parts) == 2 else None


class OffsetAudit:
    """Compares a consumer group's committed offsets with the store, from the offsets a scenario started at."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], realm: str, users: Any) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self.realm = realm
        self.users = users
        self.start: Offsets = {}
        self._reader = PartitionReader(bootstrap)

    async def __aenter__(self) -> OffsetAudit:
        await self._reader.__aenter__()
        # The group starts at the current end, not at offset 0 (other scenarios' events are not its business).
        self.start = await end_offsets(self.bootstrap, self.topics)
        await seed_group_offsets(self.bootstrap, self.group, self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._reader.__aexit__(*exc)

    async def lag(self) -> int:
        """Records not yet committed by the group (0: it has caught up)."""
        ends = await end_offsets(self.bootstrap, self.topics)
        committed = await committed_offsets(self.bootstrap, self.group)
        return sum(end - committed.get(tp, self.start.get(tp, 0)) for tp, end in ends.items())

    async def committed_user_updates(self) -> int:
        """Keycloak UPDATE events of the realm below the group's committed offsets."""
        committed = await committed_offsets(self.bootstrap, self.group)
        ranges = {tp: (start, committed.get(tp, start)) for tp, start in self.start.items()}
        return sum(
            1 for r in await self._reader.read(ranges) if update_version(r.value, self.realm) is not None
        )

    async def committed_total(self) -> int:
        """Records committed by the group since the scenario started."""
        committed = await committed_offsets(self.bootstrap, self.group)
        return sum(committed.get(tp, start) - start for tp, start in self.start.items())

    async def wait_caught_up(self, timeout_s: float) -> None:
        await eventually(
            self.lag, until=lambda lag: lag == 0, timeout_s=timeout_s, interval_s=1, what="lag 0"
        )

    async def check(self) -> CommitCheck:
        """Every committed Keycloak UPDATE event's version must be in the store (at or above it).

        Call it only while no reconciler can write (killed or paused): then the store is exactly what was
        applied when the offsets were committed.
        """
        committed = await committed_offsets(self.bootstrap, self.group)
        ends = await end_offsets(self.bootstrap, self.topics)
        ranges = {tp: (start, committed.get(tp, start)) for tp, start in self.start.items()}
        records = await self._reader.read(ranges)
        required: dict[str, int] = {}
        for record in records:
            change = update_version(record.value, self.realm)
            if change is not None:
                required[change[0]] = max(required.get(change[0], 0), change[1])
        stored = await store_versions(self.users, required)
        violations = [
            (user, need, stored.get(user))
            for user, need in sorted(required.items())
            if (stored.get(user) or 0) < need
        ]
        pending = sum(end - committed.get(tp, self.start.get(tp, 0)) for tp, end in ends.items())
        user_updates = sum(1 for r in records if update_version(r.value, self.realm) is not None)
        return CommitCheck(len(records), user_updates, pending, violations)

    async def update_records(self) -> list[ConsumerRecord[bytes, bytes]]:
        """Keycloak UPDATE events of the realm written to the topics since the start."""
        ends = await end_offsets(self.bootstrap, self.topics)
        records = await self._reader.read({tp: (start, ends[tp]) for tp, start in self.start.items()})
        return [r for r in records if update_version(r.value, self.realm) is not None]

    async def count_updates(self) -> int:
        return len(await self.update_records())

    async def topic_versions(self) -> dict[str, int]:
        """Per user, the highest lastName version an UPDATE event in the topics carries."""
        versions: dict[str, int] = {}
        for record in await self.update_records():
            change = update_version(record.value, self.realm)
            assert change is not None
            versions[change[0]] = max(versions.get(change[0], 0), change[1])
        return versions


async def store_versions(users: Any, ids: Iterable[str]) -> dict[str, int | None]:
    wanted = list(ids)
    found: dict[str, int | None] = {}
    async for doc in users.find({"external_id": {"$in": wanted}}, {"external_id": 1, "last_name": 1}):
        found[doc["external_id"]] = version_of(doc.get("last_name"))
    return found


async def wait_converged(users: Any, expected: Mapping[str, int], timeout_s: float, what: str) -> None:
    """Until every user's stored lastName version equals Keycloak's (`expected`)."""

    async def behind() -> list[tuple[str, int, int | None]]:
        stored = await store_versions(users, expected)
        return [(u, v, stored.get(u)) for u, v in expected.items() if stored.get(u) != v]

    await eventually(
        behind, until=lambda lagging: not lagging, timeout_s=timeout_s, interval_s=0.5, what=what
    )


async def wait_applied(users: Any, reached_kafka: Mapping[str, int], timeout_s: float, what: str) -> None:
    """Until every user's stored version is at least the newest one an event in Kafka carries."""

    async def behind() -> list[tuple[str, int, int | None]]:
        stored = await store_versions(users, reached_kafka)
        return [(u, v, stored.get(u)) for u, v in reached_kafka.items() if (stored.get(u) or 0) < v]

    await eventually(
        behind, until=lambda lagging: not lagging, timeout_s=timeout_s, interval_s=0.5, what=what
    )


async def keycloak_versions(kc: KeycloakTestAdmin) -> dict[str, int]:
    """Every user's lastName version as Keycloak has it now (the truth)."""
    users = await kc.list_users()
    return {u["id"]: v for u in users if (v := version_of(u.get("lastName"))) is not None}
