"""The benchmark realms: one per size (`bench-10k`, ...), created from the realm export and filled through
the realm partial-import endpoint in batches, then reused by later runs while they hold the right users.

User `i` of a realm is a pure function of (realm, i), ids included (partial import keeps a given id), so a
churned user is restored exactly by importing its baseline representation again (OVERWRITE).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.env import RESULTS_DIR
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.stack import REALM_FILE

IMPORT_BATCH = 1000
_NAMESPACE = uuid.UUID("6f1c2f1e-2d4a-4c55-9a59-0b3a8f5e7c01")


def user_id(realm: str, index: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{realm}/{index}"))


def user_representation(realm: str, index: int) -> dict[str, Any]:
    """Baseline user `index` of `realm`: a tenth have a picture, half a verified email."""
    name = f"bench-{index:06d}"
    rep: dict[str, Any] = {
        "id": user_id(realm, index),
        "username": name,
        "email": f"{name}@bench.test",
        "emailVerified": index % 2 == 0,
        "firstName": f"First{index}",
        "lastName": f"Last{index}",
        "enabled": True,
    }
    if index % 10 == 0:
        rep["attributes"] = {"picture": [f"https://avatars.bench.test/{index}.png"]}
    return rep


@dataclass(frozen=True, slots=True)
class Churn:
    """The users one churn round changes: 1% updated, 1% disabled, 1% deleted, spread over the listing."""

    updated: tuple[int, ...]
    disabled: tuple[int, ...]
    deleted: tuple[int, ...]

    @property
    def all(self) -> tuple[int, ...]:
        return self.updated + self.disabled + self.deleted


def churn_round(size: int, round_no: int) -> Churn:
    base = (3 * round_no) % 99
    picks = [tuple(i for i in range(size) if i % 100 == base + k) for k in range(3)]
    return Churn(*picks)


def admin(env: dict[str, str], realm: str) -> KeycloakTestAdmin:
    """The bootstrap admin on `realm`, with a long timeout: a large partial import can take a while."""
    return KeycloakTestAdmin.from_env(env, realm, timeout_s=600.0)


async def realm_exists(kc: KeycloakTestAdmin) -> bool:
    try:
        await kc.request("GET", f"/admin/realms/{kc.realm}")
    except httpx.HTTPStatusError as error:
        if error.response.status_code == 404:
            return False
        raise
    return True


async def create_realm(kc: KeycloakTestAdmin) -> None:
    """The realm export renamed: same service-account client, events and the Kafka listener on."""
    await kc.create_realm(json.loads(REALM_FILE.read_text()), kc.realm)


async def count_users(kc: KeycloakTestAdmin) -> int:
    return int((await kc.request("GET", "/users/count")).json())


async def import_users(kc: KeycloakTestAdmin, users: list[dict[str, Any]], policy: str) -> None:
    """Realm partial import in batches of IMPORT_BATCH (no events are emitted for imported users)."""
    for start in range(0, len(users), IMPORT_BATCH):
        batch = users[start : start + IMPORT_BATCH]
        await kc.request("POST", "/partialImport", json={"ifResourceExists": policy, "users": batch})


def _marker(realm: str) -> Path:
    return RESULTS_DIR / f".churned-{realm}.json"


def _dirty_rounds(realm: str) -> list[int]:
    path = _marker(realm)
    return list(json.loads(path.read_text())) if path.exists() else []


def _set_dirty_rounds(realm: str, rounds: list[int]) -> None:
    path = _marker(realm)
    if rounds:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sorted(set(rounds))))
    else:
        path.unlink(missing_ok=True)


@dataclass(slots=True)
class SeedReport:
    realm: str
    size: int
    created_realm: bool
    users_imported: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "realm": self.realm,
            "size": self.size,
            "created_realm": self.created_realm,
            "users_imported": self.users_imported,
            "seconds": round(self.seconds, 2),
        }


async def ensure_realm(env: dict[str, str], realm: str, size: int) -> SeedReport:
    """Create and fill `realm` unless it already holds exactly `size` users; undo the churn of a run that
    was interrupted before it restored its users."""
    started = time.monotonic()
    kc = admin(env, realm)
    try:
        created = False
        if not await realm_exists(kc):
            await create_realm(kc)
            created = True
        dirty = _dirty_rounds(realm)
        if dirty:
            await restore(kc, size, dirty)
        present = await count_users(kc)
        imported = 0
        if present > size:
            raise SystemExit(
                f"realm {realm} holds {present} users, more than {size}: delete it (admin console) and rerun"
            )
        if present < size:
            # SKIP keeps the users that are there; missing ones (an interrupted seeding) are created.
            await import_users(kc, [user_representation(realm, i) for i in range(size)], "SKIP")
            imported = size - present
        if await count_users(kc) != size:
            raise SystemExit(f"realm {realm} does not hold {size} users after seeding")
        return SeedReport(realm, size, created, imported, time.monotonic() - started)
    finally:
        await kc.aclose()


async def apply_churn(kc: KeycloakTestAdmin, size: int, round_no: int) -> Churn:
    """Round `round_no` of churn through the admin API: 1% of the users updated (PUT: first name and email),
    1% disabled (PUT), 1% deleted (DELETE)."""
    churn = churn_round(size, round_no)
    _set_dirty_rounds(kc.realm, [*_dirty_rounds(kc.realm), round_no])
    for i in churn.updated:
        rep = user_representation(kc.realm, i)
        rep |= {"firstName": f"First{i}r{round_no}", "email": f"bench-{i:06d}-r{round_no}@bench.test"}
        await kc.request("PUT", f"/users/{rep['id']}", json=rep)
    for i in churn.disabled:
        rep = user_representation(kc.realm, i)
        await kc.request("PUT", f"/users/{rep['id']}", json={**rep, "enabled": False})
    for i in churn.deleted:
        await kc.request("DELETE", f"/users/{user_id(kc.realm, i)}")
    return churn


async def restore(kc: KeycloakTestAdmin, size: int, rounds: list[int]) -> None:
    """Bring the churned users of these rounds back to their baseline: PUT the changed ones, re-import the
    deleted ones (partial import keeps their ids)."""
    for round_no in rounds:
        churn = churn_round(size, round_no)
        for i in churn.updated + churn.disabled:
            rep = user_representation(kc.realm, i)
            try:
                await kc.request("PUT", f"/users/{rep['id']}", json=rep)
            except httpx.HTTPStatusError as error:
                if error.response.status_code != 404:
                    raise
        await import_users(kc, [user_representation(kc.realm, i) for i in churn.all], "SKIP")
    _set_dirty_rounds(kc.realm, [r for r in _dirty_rounds(kc.realm) if r not in rounds])
