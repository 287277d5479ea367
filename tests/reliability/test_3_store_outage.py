"""Scenario 3: the store (SecantusDB) stopped for 30 s while real Keycloak updates keep flowing.

`reconciler run` (consumer only) applies 1,200 updates of 300 users; the store is stopped in the middle and
started again 30 s later. At the end of the outage the reconciler is frozen (SIGSTOP), the store started, and
the group's committed offsets are audited against what the store holds: no offset may have been committed for
a record whose write did not happen. Then everything must be applied (the store converges to Keycloak, lag 0,
`verify` exits 0) and the process must never have exited.
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
    UpdateStream,
    audit_requests,
    import_users,
    keycloak_versions,
    scenario_settings,
    seed_users,
    value,
    verify_in_sync,
    wait_converged,
)
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 1200
OUTAGE_S = 30.0


async def test_store_outage_commits_nothing_unapplied_and_applies_everything_after(
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
    users = seed_users(USERS, "storeout")
    await import_users(kc_admin, users, settings=settings)
    config = scenario_settings(settings, keycloak_proxy, kafka_group_instance_id="reliability-store-outage-0")
    mark = keycloak_proxy.mark()
    log_file = secrets_registry.log_file("3-store-outage")
    reconciler = ReconcilerProcess(config, "run", log_file=log_file)
    started = time.monotonic()
    async with OffsetAudit(
        config.kafka_bootstrap_servers, config.kafka_group_id, config.event_topics, realm, users_collection
    ) as audit:
        producing: asyncio.Task[None] | None = None
        try:
            await reconciler.start()
            await reconciler.wait_joined()
            stream = UpdateStream(kc_admin, users, UPDATES, rate_per_s=25, rng=rng)
            producing = asyncio.create_task(stream.run())
            await eventually(lambda: value(stream.done >= 200), timeout_s=120, what="events flowing")
            await eventually(
                audit.committed_total, until=lambda n: n > 0, timeout_s=120, what="first commits"
            )
            await reliability_stack.stop("secantusdb")
            outage_started = time.monotonic()  # down from here: the 30 s count from the stop's end
            committed_at_stop = await audit.committed_total()
            done_at_stop = stream.done
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            assert reconciler.alive, reconciler.tail()
            # Freeze the reconciler, bring the store back and compare: the store holds exactly what was
            # applied before the outage, the offsets what was committed until now.
            reconciler.pause()
            try:
                committed_at_end = await audit.committed_total()
                done_at_end = stream.done
                await reliability_stack.start("secantusdb")
                downtime_s = time.monotonic() - outage_started
                at_outage = await audit.check()
            finally:
                reconciler.resume()
            assert not at_outage.violations, f"committed, not applied: {at_outage.violations[:10]}"
            assert at_outage.pending_records > 0, "no record waited for the store: the outage proved nothing"
            assert stream.done > done_at_stop, "no events flowed during the outage"
            await producing
            truth = await keycloak_versions(kc_admin)
            expected = {u: v for u, v in truth.items() if v > 0}
            assert expected == stream.versions
            recovered = time.monotonic()
            await wait_converged(users_collection, expected, 180, "store converged after its outage")
            await audit.wait_caught_up(180)
            caught_up_s = time.monotonic() - recovered
            assert reconciler.alive, "the reconciler exited during the store outage"
        finally:
            if producing is not None and not producing.done():
                producing.cancel()  # a failed check stops the load too
            exit_code = await reconciler.terminate() if reconciler.alive else None
        final = await audit.check()
    assert exit_code == 0, reconciler.tail()
    assert not final.violations, final.violations[:10]
    report = await verify_in_sync(scenario_settings(settings, keycloak_proxy), secrets_registry)
    requests, _, problems = audit_requests(keycloak_proxy.since(mark), realm)
    assert not problems, problems[:10]
    lines = secrets_registry.assert_clean([log_file])
    figures.update(
        users=USERS,
        updates=UPDATES,
        store_down_s=round(downtime_s, 1),
        updates_during_outage=done_at_end - done_at_stop,
        committed_records_during_outage=committed_at_end - committed_at_stop,
        committed_checked_at_end_of_outage=at_outage.user_updates,
        uncommitted_at_end_of_outage=at_outage.pending_records,
        catch_up_after_recovery_s=round(caught_up_s, 1),
        committed_update_events=final.user_updates,
        lost=0,
        verify=report["in_sync"],
        keycloak_requests=requests,
        log_lines_scanned=lines,
        duration_s=round(time.monotonic() - started, 1),
    )
