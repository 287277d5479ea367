"""The floors every result is compared with, measured in the same run (each in a fresh process, `bench.job`):

- **listing floors**: the reconciler's own client and page window (`bench.listing.listing_only`), every page
  fetched and decoded, nothing applied, at a few page size x pages in flight; the *sequential* floor is
  pages of `KEYCLOAK_PAGE_SIZE` one at a time, the *best* floor the fastest combination tried;
- **raw GET rate**: bare `httpx` `GET /users/{id}` of distinct users with as many requests in flight as the
  consumer's Keycloak reads get (`KEYCLOAK_MAX_CONCURRENCY`), nothing else; and the same through the
  reconciler's client (token, retries, metrics), to tell the client's own cost from Keycloak's;
- **bulk-write floor**: the store's own fastest way to write N user documents (the reconciler's fields)
  into an empty collection with the same indexes: unordered `insert_many` batches, nothing read first.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench import seed
from bench.env import make_settings, stack_env
from bench.listing import listing_only
from bench.measure import Stopwatch, install_store_counter
from reconciler.clients.keycloak import KeycloakAdminClient, user_from_representation
from reconciler.clients.store import UserStore
from reconciler.domain.attributes import DEFAULT_ATTRIBUTE_MAP
from reconciler.domain.document import F
from reconciler.domain.models import Observation, SyncedBy
from reconciler.domain.plan import desired_document

Spec = dict[str, Any]
# (page size, pages in flight) tried for the best listing floor; the sequential floor is one of them.
LISTING_COMBOS: tuple[tuple[int, int], ...] = ((100, 1), (100, 4), (500, 4), (1000, 4))
SEQUENTIAL: tuple[int, int] = (100, 1)  # issue 15's sequential floor: pages of 100, one after another


async def listing_floors_job(spec: Spec) -> dict[str, Any]:
    """Each combination once, in an order of its own per round (`spec["round"]`), best of nothing: one run."""
    env = stack_env()
    combos = [tuple(c) for c in spec.get("combos", LISTING_COMBOS)]
    random.Random(int(spec.get("round", 0))).shuffle(combos)
    rows = []
    for page, depth in combos:
        settings = make_settings(
            env, spec["realm"], "unused", keycloak_page_size=page, keycloak_list_concurrency=depth
        )
        seconds, listed, _sizes = await listing_only(settings)
        if listed != int(spec["size"]):
            raise RuntimeError(f"listed {listed} users at page {page} x {depth}, expected {spec['size']}")
        rows.append({"page_size": page, "in_flight": depth, "seconds": seconds})
    sequential = next(r for r in rows if (r["page_size"], r["in_flight"]) == SEQUENTIAL)
    best = min(rows, key=lambda r: float(r["seconds"]))
    return {
        "combos": sorted(rows, key=lambda r: (r["page_size"], r["in_flight"])),
        "sequential_seconds": sequential["seconds"],
        "sequential": {"page_size": SEQUENTIAL[0], "in_flight": SEQUENTIAL[1]},
        "best_seconds": best["seconds"],
        "best": {"page_size": best["page_size"], "in_flight": best["in_flight"]},
        "seconds": best["seconds"],
    }


async def _raw_gets(settings: Any, realm: str, ids: list[str], concurrency: int) -> float:
    async with httpx.AsyncClient(
        base_url=settings.keycloak_base_url, timeout=settings.keycloak_timeout_s
    ) as http:
        token_response = await http.post(
            f"/realms/{realm}/protocol/openid-connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": settings.keycloak_client_id,
                "client_secret": settings.keycloak_client_secret.get_secret_value(),
            },
        )
        token_response.raise_for_status()
        headers = {"Authorization": f"Bearer {token_response.json()['access_token']}"}
        queue = iter(ids)

        async def worker() -> None:
            for user_id in queue:
                response = await http.get(f"/admin/realms/{realm}/users/{user_id}", headers=headers)
                response.raise_for_status()
                response.json()

        watch = Stopwatch()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return watch.seconds()


async def _client_gets(settings: Any, ids: list[str]) -> float:
    async with KeycloakAdminClient(settings) as client:
        await client.count_users()  # the token, outside the timed part
        watch = Stopwatch()
        users = await asyncio.gather(*(client.get_user(user_id) for user_id in ids))
        seconds = watch.seconds()
    if any(user is None for user in users):
        raise RuntimeError("a benchmark user was not found")
    return seconds


async def get_rate_job(spec: Spec) -> dict[str, Any]:
    """`GET /users/{id}` of `count` distinct users at the consumer's Keycloak concurrency: raw, then ours."""
    env = stack_env()
    settings = make_settings(env, spec["realm"], "unused")
    concurrency = settings.keycloak_max_concurrency
    count = int(spec["count"])
    offset = int(spec.get("offset", 0))
    ids = [seed.user_id(spec["realm"], offset + i) for i in range(count)]
    raw_s = await _raw_gets(settings, spec["realm"], ids, concurrency)
    client_s = await _client_gets(settings, ids)
    return {
        "requests": count,
        "concurrency": concurrency,
        "raw_seconds": raw_s,
        "raw_per_s": count / raw_s,
        "client_seconds": client_s,
        "client_per_s": count / client_s,
        "seconds": raw_s,
    }


def user_documents(realm: str, size: int) -> list[dict[str, Any]]:
    """The documents the reconciler would create for users 0..size-1 of a benchmark realm."""
    now = datetime.now(UTC)
    docs = []
    for i in range(size):
        user = user_from_representation(seed.user_representation(realm, i), DEFAULT_ATTRIBUTE_MAP)
        doc = desired_document(Observation(user.id, user, now), DEFAULT_ATTRIBUTE_MAP)
        doc |= {
            F.ID: str(uuid.uuid4()),
            F.EXTERNAL_ID: user.id,
            F.DEACTIVATED_AT: None,
            F.CREATED_AT: now,
            F.UPDATED_AT: now,
            F.OBSERVED_AT: now,
            F.SYNCED_BY: SyncedBy.RECONCILE.value,
        }
        docs.append(doc)
    return docs


async def bulk_write_floor_job(spec: Spec) -> dict[str, Any]:
    """Insert `size` user documents into an emptied collection with the reconciler's indexes, `batch` per
    unordered `insert_many`: the store's own bulk-write floor (no reads, no guards, no upserts)."""
    env = stack_env()
    settings = make_settings(env, spec["realm"], spec["database"])
    batch = int(spec.get("batch") or settings.apply_batch_size)
    docs = user_documents(spec["realm"], int(spec["size"]))
    counter = install_store_counter(settings.mongodb_users_collection)
    async with UserStore.from_settings(settings) as store:
        await store.users.drop()
        await store.ensure_indexes()
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongodb_uri.get_secret_value(), tz_aware=True
        )
        try:
            users = client[settings.mongodb_database][settings.mongodb_users_collection]
            counter.enabled = True
            started = time.perf_counter()
            for start in range(0, len(docs), batch):
                await users.insert_many(docs[start : start + batch], ordered=False)
            seconds = time.perf_counter() - started
            counter.enabled = False
        finally:
            await client.close()
        await store.users.drop()
    return {
        "seconds": seconds,
        "batch": batch,
        "documents": len(docs),
        "docs_per_s": len(docs) / seconds,
        **counter.to_dict(),
    }


JOBS = {
    "listing_floors": listing_floors_job,
    "get_rate": get_rate_job,
    "bulk_write_floor": bulk_write_floor_job,
}
