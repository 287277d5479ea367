"""One measured job in a fresh process (so that its peak RSS is its own): `python -m bench.job SPEC OUT`.

SPEC is a JSON file `{"kind": ..., ...}`; the result is written as JSON to OUT. Kinds: `reconcile` (ours or
the reference), `floor` (paging only), `events`, `replay`. With `"profile": PATH` the timed part runs
under cProfile and the stats are written to PATH.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from bench import cpu, floors
from bench.env import make_settings, stack_env
from bench.measure import Stopwatch, install_store_counter, keycloak_requests, peak_rss_mb
from bench.reference import SeedUserRepository, bulk_fill, reference_sync
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.fullsync.reconcile import FullReconcile
from reconciler.observability.logs import configure_logging

T = TypeVar("T")
# Counting a million documents on SecantusDB takes longer than the store's socket timeout.
COUNT_TIMEOUT_S = 600
Spec = dict[str, Any]


async def _timed(spec: Spec, work: Callable[[], Awaitable[T]]) -> tuple[T, float, dict[str, float]]:
    """`work`'s result, its wall seconds, and the CPU seconds each stack server (and this process) spent
    meanwhile: which process the 2 cores went to."""
    profile_path = spec.get("profile")
    profiler = cProfile.Profile() if profile_path else None
    cpu_before = cpu.snapshot()
    watch = Stopwatch()
    if profiler:
        profiler.enable()
    try:
        result = await work()
    finally:
        if profiler:
            profiler.disable()
    seconds = watch.seconds()
    cpu_seconds = cpu.spent(cpu_before, cpu.snapshot())
    if profiler and profile_path:
        Path(profile_path).parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(profile_path)
    return result, seconds, cpu_seconds


async def _store_summary(users: AsyncCollection[dict[str, Any]]) -> dict[str, int]:
    with pymongo.timeout(COUNT_TIMEOUT_S):
        return {
            "store_users": await users.count_documents({}),
            "store_active_users": await users.count_documents({"is_active": True}),
        }


async def _filled(settings: Settings, impl: str, size: int, all_active: bool = True) -> bool:
    """Whether an implementation's store already holds `size` user documents, all active unless
    `all_active` is false (a realm with disabled users: the scale bench's)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri.get_secret_value())
    try:
        users = client[settings.mongodb_database][
            settings.mongodb_users_collection if impl == "ours" else "users"
        ]
        summary = await _store_summary(users)
    finally:
        await client.close()
    return summary["store_users"] == size and (not all_active or summary["store_active_users"] == size)


async def reconcile_job(spec: Spec) -> dict[str, Any]:
    env = stack_env()
    overrides: dict[str, Any] = {"keycloak_page_size": spec["page_size"]} if "page_size" in spec else {}
    if "in_flight" in spec:
        overrides["keycloak_list_concurrency"] = spec["in_flight"]
    settings = make_settings(env, spec["realm"], spec["database"], **overrides)
    counter = install_store_counter(settings.mongodb_users_collection)
    result: dict[str, Any] = {}
    all_active = spec.get("all_active", True)
    if spec.get("only_if_unfilled") and await _filled(settings, spec["impl"], int(spec["size"]), all_active):
        return {"skipped": True}
    async with KeycloakAdminClient(settings) as keycloak:
        if spec["impl"] == "ours":
            async with UserStore.from_settings(settings) as store:
                if spec.get("drop"):
                    await store.users.drop()
                    await store.runs.drop()
                await store.ensure_indexes()
                counter.reset()
                counter.enabled = True
                before = keycloak_requests()
                summary, seconds, cpu_seconds = await _timed(
                    spec, lambda: FullReconcile(settings, store, keycloak).run()
                )
                counter.enabled = False
                if not summary.ok:
                    raise RuntimeError(f"reconcile failed: {summary.error}")
                result["counts"] = summary.counts()
                result.update(await _store_summary(store.users))
        else:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                settings.mongodb_uri.get_secret_value(), tz_aware=True
            )
            try:
                repo = SeedUserRepository(client[settings.mongodb_database]["users"])
                if spec.get("drop") or spec.get("bulk_fill"):
                    await repo.users.drop()
                await repo.ensure_indexes()
                if spec.get("bulk_fill"):  # untimed preparation, reported as such
                    watch = Stopwatch()
                    filled = await bulk_fill(keycloak, repo, settings.keycloak_page_size)
                    return {"bulk_filled": filled, "seconds": watch.seconds()}
                counter.reset()
                counter.enabled = True
                before = keycloak_requests()
                ref, seconds, cpu_seconds = await _timed(
                    spec, lambda: reference_sync(keycloak, repo, settings.keycloak_page_size)
                )
                counter.enabled = False
                result["counts"] = ref.to_dict()
                result.update(await _store_summary(repo.users))
            finally:
                await client.close()
    after = keycloak_requests()
    requests = {op: n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}
    result.update(
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        keycloak_requests=sum(requests.values()),
        keycloak_requests_by_operation=requests,
        **counter.to_dict(),
    )
    return result


async def floor_job(spec: Spec) -> dict[str, Any]:
    """Page through the users with the same page size and representation, and nothing else."""
    env = stack_env()
    overrides = {"keycloak_page_size": spec["page_size"]} if "page_size" in spec else {}
    settings = make_settings(env, spec["realm"], "unused", **overrides)
    base = settings.keycloak_base_url
    page_size = settings.keycloak_page_size
    requests = 0

    async def page_all() -> int:
        nonlocal requests
        async with httpx.AsyncClient(base_url=base, timeout=settings.keycloak_timeout_s) as http:
            token, refresh_at = "", 0.0

            async def headers() -> dict[str, str]:
                # A new token shortly before the old one expires, as the reconciler's client does.
                nonlocal token, refresh_at, requests
                if time.monotonic() >= refresh_at:
                    body = (
                        await http.post(
                            f"/realms/{spec['realm']}/protocol/openid-connect/token",
                            data={
                                "grant_type": "client_credentials",
                                "client_id": settings.keycloak_client_id,
                                "client_secret": settings.keycloak_client_secret.get_secret_value(),
                            },
                        )
                    ).json()
                    requests += 1
                    token = body["access_token"]
                    refresh_at = time.monotonic() + float(body["expires_in"]) - 30
                return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

            listed = first = 0
            while True:
                params: dict[str, str | int] = {
                    "first": first,
                    "max": page_size,
                    "briefRepresentation": "false",
                }
                url = f"/admin/realms/{spec['realm']}/users"
                response = await http.get(url, params=params, headers=await headers())
                requests += 1
                response.raise_for_status()
                users = response.json()
                listed += len(users)
                first += len(users)
                if len(users) < page_size:
                    return listed

    listed, seconds, _cpu = await _timed(spec, page_all)
    return {"seconds": seconds, "keycloak_requests": requests, "listed": listed}


JOBS: dict[str, Callable[[Spec], Awaitable[dict[str, Any]]]] = {
    "reconcile": reconcile_job,
    "floor": floor_job,
}


def main() -> int:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    spec: Spec = json.loads(Path(spec_path).read_text())
    configure_logging("WARNING", "json")
    kind = spec["kind"]
    if kind in ("events", "replay"):
        from bench import eventpath

        job = eventpath.JOBS[kind]
    elif kind in floors.JOBS:
        job = floors.JOBS[kind]
    else:
        job = JOBS[kind]
    result = asyncio.run(job(spec))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    Path(out_path).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
