"""Scenario 1: the consumer is killed with SIGKILL at random moments while real Keycloak updates flow.

2,000 admin API updates of 300 users (each sets lastName "v<n>", n counting up per user) flow through
Keycloak's Kafka listener while `reconciler run` (consumer only, static membership) is SIGKILLed 5 times at
random points of the stream and restarted. At each kill, with the process dead, the group's committed offsets
are read with the admin client and every Keycloak event below them must be reflected in the store (its
version or a newer one): an offset committed before its write would show up here. At the end the store
converges to Keycloak, the group's lag is 0 and `reconciler verify` exits 0.
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
    UpdateStream,
    audit_requests,
    import_users,
    keycloak_versions,
    scenario_settings,
    seed_users,
    verify_in_sync,
    wait_converged,
)
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 2000
KILLS = 5


async def test_sigkill_at_random_moments_loses_no_update(
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    keycloak_proxy: RecordingProxy,
    secrets_registry: SecretsRegistry,
    realm: str,
    figures: dict[str, Any],
) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    figures["seed"] = seed
    users = seed_users(USERS, "crash")
    # The import emits only REALM-type admin events (ignored by the reconciler): the stream below is the event
    # path's only source, so a user is in the store only after one of its updates.
    await import_users(kc_admin, users, settings=settings)
    config = scenario_settings(
        settings, keycloak_proxy, kafka_group_instance_id="reliability-crash-0", event_recheck_delay_s=2.0
    )
    mark = keycloak_proxy.mark()
    log_file = secrets_registry.log_file("1-crash")
    reconciler = ReconcilerProcess(config, "run", log_file=log_file)
    kills: list[dict[str, Any]] = []
    started = time.monotonic()
    async with OffsetAudit(
        config.kafka_bootstrap_servers, config.kafka_group_id, config.event_topics, realm, users_collection
    ) as audit:
        producing: asyncio.Task[None] | None = None
        try:
            await reconciler.start()
            await reconciler.wait_joined()
            # Paced so that the stream outlasts the five kill cycles.
            stream = UpdateStream(kc_admin, users, UPDATES, concurrency=6, rate_per_s=40, rng=rng)
            producing = asyncio.create_task(stream.run())
            for _ in range(KILLS):
                # Each incarnation first shows progress (its commits move), then dies at a random moment.
                baseline = await audit.committed_user_updates()
                await eventually(
                    audit.committed_user_updates,
                    until=lambda total, b=baseline: total > b,
                    timeout_s=180,
                    interval_s=0.3,
                    what="the consumer commits progress",
                )
                await asyncio.sleep(rng.uniform(0.0, 3.0))
                producing_at_kill = not producing.done()
                await reconciler.kill()
                check = await audit.check()  # the process is dead: the store holds exactly what was applied
                kills.append(
                    {
                        "after_updates": stream.done,
                        "stream_running": producing_at_kill,
                        "committed_records": check.committed_records,
                        "committed_user_updates": check.user_updates,
                        "uncommitted_at_kill": check.pending_records,
                        "violations": len(check.violations),
                    }
                )
                assert not check.violations, (
                    f"committed, not applied (user, version, stored): {check.violations[:10]}"
                )
                await reconciler.start()
                await reconciler.wait_joined()
            await producing
            assert stream.done == UPDATES
            truth = await keycloak_versions(kc_admin)
            assert {u: v for u, v in truth.items() if v > 0} == stream.versions
            await wait_converged(users_collection, stream.versions, 180, "store converged after the kills")
            await audit.wait_caught_up(120)
            final = await audit.check()
            assert not final.violations
            events = await audit.count_updates()
            assert events >= UPDATES, f"Keycloak emitted {events} update events for {UPDATES} updates"
        finally:
            if producing is not None and not producing.done():
                producing.cancel()  # a failed check stops the load too
            exit_code = await reconciler.terminate() if reconciler.alive else None
    assert exit_code == 0, reconciler.tail()
    report = await verify_in_sync(scenario_settings(settings, keycloak_proxy), secrets_registry)
    requests, _, problems = audit_requests(keycloak_proxy.since(mark), realm)
    assert not problems, problems[:10]
    lines = secrets_registry.assert_clean([log_file])
    # The scenario proves something only if some kills left committed work behind them and some found
    # work not yet committed.
    assert all(k["uncommitted_at_kill"] > 0 for k in kills), kills
    assert all(k["committed_user_updates"] > 0 for k in kills), kills
    assert sum(k["stream_running"] for k in kills) >= 3, kills
    figures.update(
        users=USERS,
        updates=UPDATES,
        update_events=events,
        kills=len(kills),
        restarts=reconciler.starts - 1,
        kill_checks=kills,
        lost=0,
        verify=report["in_sync"],
        keycloak_requests=requests,
        log_lines_scanned=lines,
        duration_s=round(time.monotonic() - started, 1),
    )


async def _value(value: bool) -> bool:
    return value
