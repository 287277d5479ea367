"""Scenario 6: two replicas run a full reconcile at the same time (no lease: `reconcile --once` on both),
while real updates flow through the event path of a third process.

1,000 users (partial import, so the two runs race to create them), 600 updates of 200 of them during the runs.
A change stream records every write: per user, `observed_at` must strictly increase from one write to the next
(an older observation never overwrites a newer one). At the end the store equals Keycloak and `verify` exits 0.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import pytest

from reconciler.config import Settings
from tests.reliability.harness import (
    OffsetAudit,
    ReconcilerProcess,
    SecretsRegistry,
    StoreWatcher,
    UpdateStream,
    audit_requests,
    collect_run_errors,
    import_users,
    keycloak_versions,
    run_cli,
    run_records,
    scenario_settings,
    seed_users,
    verify_in_sync,
    wait_converged,
)
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 1000
UPDATED_USERS = 200
UPDATES = 600


async def test_overlapping_full_reconciles_and_events_never_write_an_older_observation(
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    keycloak_proxy: RecordingProxy,
    secrets_registry: SecretsRegistry,
    realm: str,
    figures: dict[str, Any],
) -> None:
    rng = random.Random(int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000)))
    started = time.monotonic()
    users = seed_users(USERS, "overlap")
    await import_users(kc_admin, users, settings=settings)
    events_config = scenario_settings(
        settings, keycloak_proxy, kafka_group_instance_id="reliability-overlap-0"
    )
    # Small, rate-limited pages: the two runs last as long as the update stream and interleave with it.
    replica = scenario_settings(
        settings, keycloak_proxy, keycloak_page_size=10, keycloak_max_requests_per_s=8
    )
    log_file = secrets_registry.log_file("6-overlap")
    consumer = ReconcilerProcess(events_config, "run", log_file=log_file)
    mark = keycloak_proxy.mark()
    async with (
        OffsetAudit(
            events_config.kafka_bootstrap_servers,
            events_config.kafka_group_id,
            events_config.event_topics,
            realm,
            users_collection,
        ) as audit,
        StoreWatcher(users_collection) as watcher,
    ):
        producing: asyncio.Task[None] | None = None
        try:
            await consumer.start()
            await consumer.wait_joined()
            stream = UpdateStream(kc_admin, users[:UPDATED_USERS], UPDATES, rate_per_s=30, rng=rng)
            producing = asyncio.create_task(stream.run())
            runs = await asyncio.gather(
                *(
                    run_cli(replica, "reconcile", "--once", "--json", registry=secrets_registry)
                    for _ in range(2)
                )
            )
            await producing
            for run in runs:
                assert run.code == 0, run.stderr[-2000:]
            truth = await keycloak_versions(kc_admin)
            expected = {u: v for u, v in truth.items() if v > 0}
            assert expected == stream.versions
            await wait_converged(users_collection, expected, 180, "store converged")
            await audit.wait_caught_up(180)
            await watcher.drain()
        finally:
            if producing is not None and not producing.done():
                producing.cancel()  # a failed check stops the load too
            exit_code = await consumer.terminate() if consumer.alive else None
    assert exit_code == 0, consumer.tail()
    records = await run_records(users_collection)
    assert len(records) == 2 and all(r["outcome"] == "success" for r in records), records
    a, b = records
    assert a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"], "the two runs did not overlap"
    checked, regressions = watcher.observed_at_regressions()
    assert not regressions, f"older observations written over newer ones: {regressions[:10]}"
    assert checked >= USERS
    summaries = [run.json() for run in runs]
    report = await verify_in_sync(scenario_settings(settings, keycloak_proxy), secrets_registry)
    requests, _, problems = audit_requests(keycloak_proxy.since(mark), realm)
    assert not problems, problems[:10]
    await collect_run_errors(users_collection, secrets_registry, "6-overlap")
    lines = secrets_registry.assert_clean([log_file])
    figures.update(
        users=USERS,
        updates=UPDATES,
        replicas=2,
        overlap_s=round(
            (min(a["ended_at"], b["ended_at"]) - max(a["started_at"], b["started_at"])).total_seconds(), 1
        ),
        runs=[
            {k: s[k] for k in ("created", "updated", "unchanged", "stale", "duration_s")} for s in summaries
        ],
        writes_checked=checked,
        observed_at_regressions=0,
        verify=report["in_sync"],
        keycloak_requests=requests,
        log_lines_scanned=lines,
        duration_s=round(time.monotonic() - started, 1),
    )
