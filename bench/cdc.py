"""Commit-to-store latency through the database-change source (CDC) beside the Kafka listener's, in one run.

A realm of 50 users is changed through the admin API at a steady 20 changes a second and then in a burst.
Once the event path carries the changes alone (the realm's Kafka listener on, CDC off) and once the
committed rows do (the listener removed, `CDC_ENABLED=true`); the sweep and the periodic reconcile are off
both times. Each hint's latency is measured when the reconciler is done with it (the user read and
written): now minus the hint's time, which is Keycloak's event time for an event and the commit time
(`source.ts_ms`) for a row. Kafka Connect's CPU seconds and memory over the CDC runs come from its process.

`python -m bench.cdc` runs it alone on the local stack (which must run with STACK_CDC=1); `make bench`
runs it as the part `cdc`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.cpu import snapshot, spent
from bench.env import RESULTS_DIR, stack_env
from reconciler.domain.events import UserHint
from reconciler.domain.models import SyncedBy
from reconciler.service import Service
from reconciler.sources import hint_apply
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.settings import make_settings
from tests.support.stack import REALM_FILE, STACK_ENV_FILE

USERS = 50
STEADY_RATE = 20.0  # changes a second
STEADY_S = 20.0
BURST = 200
BURST_CONCURRENCY = 8
TARGET_P99_S = 0.3  # at 20 changes/s through CDC


class Recorder:
    """Latency of every hint of one source the event path is done with."""

    def __init__(self) -> None:
        self.source: SyncedBy | None = None
        self.values: list[float] = []

    def install(self) -> None:
        original = hint_apply.HintApplier.__call__

        async def traced(applier: hint_apply.HintApplier, user_id: str, hints: list[UserHint]) -> Any:
            result = await original(applier, user_id, hints)
            now = datetime.now(UTC)
            for hint in hints:
                if hint.source is self.source and hint.event_time is not None and not hint.recheck:
                    self.values.append(max(0.0, (now - hint.event_time).total_seconds()))
            return result

        hint_apply.HintApplier.__call__ = traced  # type: ignore[method-assign]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "changes": len(values),
        "p50_s": round(percentile(values, 0.5), 4),
        "p99_s": round(percentile(values, 0.99), 4),
        "max_s": round(max(values), 4) if values else None,
    }


async def steady(admin: KeycloakTestAdmin, user_ids: list[str]) -> None:
    started = time.monotonic()
    tasks = []
    for n in range(int(STEADY_RATE * STEADY_S)):
        await asyncio.sleep(max(0.0, started + n / STEADY_RATE - time.monotonic()))
        tasks.append(asyncio.create_task(admin.update_user(user_ids[n % USERS], lastName=f"s{n}")))
    await asyncio.gather(*tasks)


async def burst(admin: KeycloakTestAdmin, user_ids: list[str]) -> None:
    gate = asyncio.Semaphore(BURST_CONCURRENCY)

    async def one(n: int) -> None:
        async with gate:
            await admin.update_user(user_ids[n % USERS], lastName=f"b{n}")

    await asyncio.gather(*(one(n) for n in range(BURST)))


async def settled(recorder: Recorder, expected: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(recorder.values) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def connect_rss_mb(state_dir: Path) -> float | None:
    try:
        pid = int((state_dir / "connect.pid").read_text().split()[0])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


async def one_source(
    env: dict[str, str],
    realm: str,
    admin: KeycloakTestAdmin,
    source: SyncedBy,
    recorder: Recorder,
    user_ids: list[str],
) -> dict[str, Any]:
    cdc = source is SyncedBy.CDC
    await admin.set_event_listeners(["jboss-logging"] if cdc else ["jboss-logging", "kafka"])
    settings = make_settings(
        env,
        keycloak_realm=realm,
        keycloak_realm_id=realm,
        mongodb_database=f"bench_cdc_{uuid.uuid4().hex[:6]}",
        kafka_group_id=f"bench-cdc-{uuid.uuid4().hex[:6]}",
        consumer_start_offset="latest",
        cdc_enabled=cdc,
        cdc_topic_prefix=env.get("CDC_TOPIC_PREFIX", "keycloak.cdc"),
        reconcile_enabled=False,
        sweep_enabled=False,
        http_enabled=False,
        log_level="WARNING",
    )
    recorder.source = source
    service = Service(settings)
    task = asyncio.create_task(service.run())
    try:
        while service.consumer is None or not service.consumer.joined:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        results: dict[str, Any] = {}
        for load, run, count in (
            ("steady_20_per_s", steady, int(STEADY_RATE * STEADY_S)),
            ("burst", burst, BURST),
        ):
            recorder.values = []
            cpu_before = snapshot(STACK_ENV_FILE.parent)
            started = time.monotonic()
            await run(admin, user_ids)
            await settled(recorder, count)
            results[load] = {
                **summary(recorder.values),
                "seconds": round(time.monotonic() - started, 1),
                "cpu_s": spent(cpu_before, snapshot(STACK_ENV_FILE.parent)),
            }
        if cdc:
            results["connect_rss_mb"] = connect_rss_mb(STACK_ENV_FILE.parent)
        return results
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 60)


async def cdc_suite(env: dict[str, str]) -> dict[str, Any]:
    if "CDC_TOPIC_PREFIX" not in env:
        return {"skipped": "the stack runs without Kafka Connect (STACK_CDC=1)"}
    realm = f"bench-cdc-{uuid.uuid4().hex[:6]}"
    admin = KeycloakTestAdmin.from_env(env, realm, timeout_s=120)
    recorder = Recorder()
    recorder.install()
    try:
        await admin.create_realm(json.loads(REALM_FILE.read_text()), realm)
        users = [
            {"id": str(uuid.uuid4()), "username": f"cdc-{n}", "enabled": True, "firstName": "Cdc"}
            for n in range(USERS)
        ]
        await admin.partial_import_users(users)
        user_ids = [u["id"] for u in users]
        out = {
            "listener": await one_source(env, realm, admin, SyncedBy.EVENT, recorder, user_ids),
            "cdc": await one_source(env, realm, admin, SyncedBy.CDC, recorder, user_ids),
        }
        p99 = out["cdc"]["steady_20_per_s"]["p99_s"]
        out["target"] = {
            "measure": "CDC p99 at 20 changes/s",
            "target_s": TARGET_P99_S,
            "value_s": p99,
            "met": p99 <= TARGET_P99_S,
        }
        return out
    finally:
        await admin.delete_realm(realm)
        await admin.aclose()


def main() -> None:
    results = asyncio.run(cdc_suite(stack_env()))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"cdc-{stamp}.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
