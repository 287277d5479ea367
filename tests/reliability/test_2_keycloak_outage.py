"""Scenario 2: Keycloak stopped for 30 s in the middle of the event stream and of a full reconcile.

`reconciler run` (consumer + periodic reconcile, 1,000 users listed 10 per page so the run is long) is
running; real updates flow; Keycloak is stopped while the run pages and while events are queued, and during
the outage copies of real Keycloak events are published straight to the admin topic (hints the consumer cannot
look up). Checked: at the end of the outage (reconciler frozen with SIGSTOP) every committed event is applied;
no write ever deactivates a user (a change stream watches every write); the interrupted run is recorded as
failed and a later run succeeds; the lag returns to 0; the store converges and `verify` exits 0.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import pytest

from reconciler.config import Settings
from tests.reliability.conftest import ReliabilityStack
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
    run_records,
    scenario_settings,
    seed_users,
    value,
    verify_in_sync,
    wait_converged,
)
from tests.support.http_proxy import RecordingProxy
from tests.support.kafka import publish
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 1000
UPDATED_USERS = 300
UPDATES = 900
OUTAGE_S = 30.0


async def test_keycloak_outage_mid_stream_and_mid_reconcile(
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    keycloak_proxy: RecordingProxy,
    secrets_registry: SecretsRegistry,
    reliability_stack: ReliabilityStack,
    realm: str,
    figures: dict[str, Any],
) -> None:
    rng = random.Random(int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000)))
    users = seed_users(USERS, "kcout")
    await import_users(kc_admin, users, settings=settings)
    config = scenario_settings(
        settings,
        keycloak_proxy,
        kafka_group_instance_id="reliability-kc-outage-0",
        reconcile_enabled=True,
        reconcile_interval_s=10,  # a failed run is retried after min(interval, 30 s)
        reconcile_jitter_s=0,
        keycloak_page_size=10,
    )
    mark = keycloak_proxy.mark()
    log_file = secrets_registry.log_file("2-keycloak-outage")
    reconciler = ReconcilerProcess(config, "run", log_file=log_file)
    started = time.monotonic()
    async with (
        OffsetAudit(
            config.kafka_bootstrap_servers,
            config.kafka_group_id,
            config.event_topics,
            realm,
            users_collection,
        ) as audit,
        StoreWatcher(users_collection) as watcher,
    ):
        producing: asyncio.Task[None] | None = None
        try:
            await reconciler.start()
            await reconciler.wait_joined()
            # Mid-reconcile: the first run is recorded as running and has written part of the listing.
            await eventually(
                lambda: users_collection.count_documents({"synced_by": "reconcile"}),
                until=lambda n: n >= 150,
                timeout_s=120,
                what="the full reconcile pages",
            )
            stream = UpdateStream(kc_admin, users[:UPDATED_USERS], UPDATES, rate_per_s=30, rng=rng)
            producing = asyncio.create_task(stream.run())
            await eventually(lambda: value(stream.done >= 150), timeout_s=120, what="events flowing")
            running = await eventually(
                lambda: run_records(users_collection),
                until=lambda rs: any(r["outcome"] == "running" for r in rs),
                timeout_s=120,
                what="a full reconcile running",
            )
            interrupted = next(r for r in running if r["outcome"] == "running")
            await reliability_stack.stop("keycloak")
            outage_started = time.monotonic()  # down from here: the 30 s count from the stop's end
            # Hints that arrive while Keycloak is away: copies of real events of users changed before.
            replayed = [r.value for r in (await audit.update_records())[-100:]]
            await publish(config.kafka_bootstrap_servers, config.kafka_admin_events_topic, replayed)
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            # End of the outage, Keycloak still down: freeze the reconciler and audit what it committed.
            reconciler.pause()
            try:
                at_outage = await audit.check()
            finally:
                reconciler.resume()
            assert not at_outage.violations, at_outage.violations[:10]
            assert at_outage.pending_records > 0, (
                "nothing was waiting for Keycloak: the outage proved nothing"
            )
            await reliability_stack.start("keycloak")
            downtime_s = time.monotonic() - outage_started
            assert reconciler.alive, reconciler.tail()
            await producing
            # The run that was paging when Keycloak went away is recorded as failed; a later one succeeds.
            runs = await eventually(
                lambda: run_records(users_collection),
                until=lambda rs: (
                    any(r["_id"] == interrupted["_id"] and r["outcome"] == "failed" for r in rs)
                    and any(
                        r["outcome"] == "success" and r["started_at"] > interrupted["started_at"] for r in rs
                    )
                ),
                timeout_s=300,
                interval_s=1,
                what="the interrupted run failed and a later run succeeded",
            )
            failed = next(r for r in runs if r["_id"] == interrupted["_id"])
            assert "Keycloak" in (failed.get("error") or ""), failed
            truth = await keycloak_versions(kc_admin)
            expected = {u: v for u, v in truth.items() if v > 0}
            assert expected == stream.versions
            recovered = time.monotonic()
            await wait_converged(users_collection, expected, 180, "store converged after the outage")
            await audit.wait_caught_up(180)
            lag_recovered_s = time.monotonic() - recovered
            await watcher.drain()
        finally:
            if producing is not None and not producing.done():
                producing.cancel()  # a failed check stops the load too
            exit_code = await reconciler.terminate() if reconciler.alive else None
        final = await audit.check()
    assert exit_code == 0, reconciler.tail()
    assert not final.violations, final.violations[:10]
    deactivated = watcher.deactivations()
    assert not deactivated, f"users deactivated during a Keycloak outage: {list(deactivated)[:10]}"
    report = await verify_in_sync(scenario_settings(settings, keycloak_proxy), secrets_registry)
    requests, _, problems = audit_requests(keycloak_proxy.since(mark), realm)
    assert not problems, problems[:10]
    dropped = sum(1 for r in keycloak_proxy.since(mark) if r.status is None)
    assert dropped > 0, "no request met the outage"
    await collect_run_errors(users_collection, secrets_registry, "2-keycloak-outage")
    lines = secrets_registry.assert_clean([log_file])
    figures.update(
        users=USERS,
        updates=UPDATES,
        update_events=final.user_updates,
        replayed_hints_during_outage=len(replayed),
        keycloak_down_s=round(downtime_s, 1),
        uncommitted_at_end_of_outage=at_outage.pending_records,
        committed_checked_at_end_of_outage=at_outage.user_updates,
        requests_failed_during_outage=dropped,
        runs=[(r["outcome"], r.get("counts", {}).get("listed")) for r in runs],
        deactivations=0,
        writes_watched=len(watcher.writes),
        catch_up_after_recovery_s=round(lag_recovered_s, 1),
        lost=0,
        verify=report["in_sync"],
        keycloak_requests=requests,
        log_lines_scanned=lines,
        duration_s=round(time.monotonic() - started, 1),
    )
