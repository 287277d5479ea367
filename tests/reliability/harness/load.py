"""Real Keycloak changes as load: seeded users, partial imports, a paced stream of versioned updates."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import time
import uuid
from collections import defaultdict
from typing import Any

import httpx

from reconciler.base.config import Settings
from tests.support.kafka_offsets import (
    PartitionReader,
    end_offsets,
)
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def seed_users(count: int, prefix: str) -> list[dict[str, Any]]:
    """User representations with fixed ids (lastName "v0"), for the realm partial import."""
    return [
        {
            "id": str(uuid.uuid4()),
            "username": f"{prefix}-{i:05d}",
            "email": f"{prefix}-{i:05d}@example.test",
            "emailVerified": True,
            "firstName": "Rel",
            "lastName": "v0",
            "enabled": True,
        }
        for i in range(count)
    ]


def personal_users(count: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Users whose personal values (username, email, names, picture) are random, so that any of them found
    in a log line was copied there: (the representations, label -> value for the secrets scan)."""
    users: list[dict[str, Any]] = []
    values: dict[str, str] = {}
    for i in range(count):
        user = {
            "id": str(uuid.uuid4()),
            "username": f"pd-{secrets.token_hex(8)}",
            "email": f"pd-{secrets.token_hex(8)}@example.test",
            "emailVerified": True,
            "firstName": f"First{secrets.token_hex(6)}",
            "lastName": f"Last{secrets.token_hex(6)}",
            "enabled": True,
            "attributes": {"picture": [f"https://img.example.test/{secrets.token_hex(10)}.png"]},
        }
        users.append(user)
        for field in ("username", "email", "firstName", "lastName"):
            values[f"personal data: {field} of seeded user #{i + 1}"] = user[field]
        values[f"personal data: picture of seeded user #{i + 1}"] = user["attributes"]["picture"][0]
    return users, values


async def import_users(
    kc: KeycloakTestAdmin,
    users: list[dict[str, Any]],
    batch: int = 200,  # a 500-user import outlasted the admin client's 30 s on a loaded 2-node cluster
    *,
    settings: Settings | None = None,
) -> None:
    """Create users with the realm partial import. Keycloak reports it as admin events of resource type
    REALM (`users/<id>`), which the reconciler ignores; they are published asynchronously, so with
    `settings` this waits until all of them are in the admin topic (a scenario then starts after them)."""
    before = (
        await end_offsets(settings.kafka_bootstrap_servers, [settings.kafka_admin_events_topic])
        if settings is not None
        else {}
    )
    for start in range(0, len(users), batch):
        await kc.partial_import_users(users[start : start + batch])
    if settings is None:
        return
    wanted = {f"users/{u['id']}" for u in users}
    async with PartitionReader(settings.kafka_bootstrap_servers) as reader:

        async def published() -> int:
            ends = await end_offsets(settings.kafka_bootstrap_servers, [settings.kafka_admin_events_topic])
            records = await reader.read({tp: (before.get(tp, 0), end) for tp, end in ends.items()})
            seen = set()
            for record in records:
                with contextlib.suppress(ValueError):
                    event = json.loads(record.value or b"null")
                    if isinstance(event, dict) and event.get("realmId") == settings.keycloak_realm:
                        seen.add(event.get("resourcePath"))
            return len(wanted & seen)

        await eventually(
            published, until=lambda n: n == len(wanted), timeout_s=120, interval_s=0.5, what="import events"
        )


def version_of(last_name: Any) -> int | None:
    if isinstance(last_name, str) and last_name.startswith("v") and last_name[1:].isdigit():
        return int(last_name[1:])
    return None


class UpdateStream:
    """Real admin API updates: each sets one user's lastName to "v<n>", n counting up per user.

    Updates of one user never overlap, so Keycloak's final state of a user is its highest confirmed version.
    A failed update (Keycloak down, a dropped connection) is retried with the same version until it succeeds.
    """

    def __init__(
        self,
        kc: KeycloakTestAdmin,
        users: list[dict[str, Any]],
        total: int,
        *,
        concurrency: int = 6,
        rate_per_s: float | None = None,
        rng: random.Random,
    ) -> None:
        self._kc = kc
        self._users = {u["id"]: u for u in users}
        # Every user at least once (a user without events stays unknown to the event path), the rest random.
        plan = [u["id"] for u in users][:total]
        plan += [rng.choice(users)["id"] for _ in range(total - len(plan))]
        rng.shuffle(plan)
        self._plan = plan
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._concurrency = concurrency
        self._interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next_slot = 0.0
        self.versions: dict[str, int] = {}  # confirmed by Keycloak
        self.done = 0
        self.failures = 0
        self.started_at = 0.0
        self.finished_at = 0.0

    @property
    def total(self) -> int:
        return len(self._plan)

    async def run(self) -> None:
        self.started_at = time.monotonic()
        queue = iter(self._plan)
        await asyncio.gather(*(self._worker(queue) for _ in range(self._concurrency)))
        self.finished_at = time.monotonic()

    async def _pace(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        await asyncio.sleep(slot - now)

    async def _worker(self, queue: Any) -> None:
        for user_id in queue:
            await self._pace()
            async with self._locks[user_id]:
                version = self.versions.get(user_id, 0) + 1
                await self._update(user_id, version)
                self.versions[user_id] = version
                self.done += 1

    async def _update(self, user_id: str, version: int) -> None:
        user = self._users[user_id]
        body = {k: user[k] for k in ("username", "email", "emailVerified", "firstName", "enabled")}
        body["lastName"] = f"v{version}"
        deadline = time.monotonic() + 300
        while True:
            try:
                await self._kc.request("PUT", f"/users/{user_id}", json=body)
                return
            except (httpx.HTTPError, OSError) as error:
                self.failures += 1
                if time.monotonic() > deadline:
                    raise AssertionError(f"update of {user_id} kept failing: {error!r}") from error
                await asyncio.sleep(0.5)
