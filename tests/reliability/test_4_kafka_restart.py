"""Scenario 4: the Kafka broker restarted in the middle of the event stream.

`reconciler run` (consumer only) applies 1,200 real updates of 300 users; the only broker is stopped
(SIGTERM) and started again while updates keep flowing (Keycloak's listener buffers them meanwhile). The same
reconciler process must ride it out: reconnect, rejoin its group and continue committing, then converge to
Keycloak with lag 0, every committed event applied, and `verify` exit 0.
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
    run_cli,
    scenario_settings,
    seed_users,
    store_versions,
    value,
    verify_in_sync,
    wait_applied,
    wait_converged,
)
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 1200


async def test_broker_restart_mid_stream_the_consumer_rejoins_and_continues(
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
    users = seed_users(USERS, "kafkart")
    await import_users(kc_admin, users, settings=settings)
    config = scenario_settings(settings, keycloak_proxy, kafka_group_instance_id="reliability-kafka-0")
    mark = keycloak_proxy.mark()
    log_file = secrets_registry.log_file("4-kafka-restart")
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
            await eventually(lambda: value(stream.done >= 300), timeout_s=120, what="events flowing")
            await eventually(
                audit.committed_total, until=lambda n: n > 0, timeout_s=120, what="first commits"
            )
            restart_started = time.monotonic()
            done_at_stop = stream.done
            await reliability_stack.stop("kafka")
            await reliability_stack.start("kafka")
            broker_back = time.monotonic()
            downtime_s = broker_back - restart_started
            committed_after_restart = await audit.committed_total()
            # The same process continues: its commits move again.
            await eventually(
                audit.committed_total,
                until=lambda n: n > committed_after_restart,
                timeout_s=180,
                interval_s=0.5,
                what="commits after the broker restart",
            )
            resumed_s = time.monotonic() - broker_back
            updates_during_restart = stream.done - done_at_stop
            await producing
            truth = await keycloak_versions(kc_admin)
            expected = {u: v for u, v in truth.items() if v > 0}
            assert expected == stream.versions
            # Every event that reached Kafka is applied. (Keycloak's listener itself may drop an event while
            # the broker is away: its producer gives up after 10 s without metadata. Those users are the
            # full reconcile's job, below.)
            in_kafka = await audit.topic_versions()
            await wait_applied(users_collection, in_kafka, 180, "every event in Kafka applied")
            await audit.wait_caught_up(180)
            assert reconciler.alive and reconciler.starts == 1, "the reconciler had to be restarted"
        finally:
            if producing is not None and not producing.done():
                producing.cancel()  # a failed check stops the load too
            exit_code = await reconciler.terminate() if reconciler.alive else None
        final = await audit.check()
        events = await audit.count_updates()
    assert exit_code == 0, reconciler.tail()
    assert not final.violations, final.violations[:10]
    stored = await store_versions(users_collection, expected)
    missed_by_listener = sorted(u for u, v in expected.items() if in_kafka.get(u, 0) < v)
    assert all(stored.get(u) == v for u, v in expected.items() if u not in missed_by_listener)
    if missed_by_listener:  # the safety net catches what never reached Kafka
        run = await run_cli(
            scenario_settings(settings, keycloak_proxy),
            "reconcile",
            "--once",
            "--json",
            registry=secrets_registry,
        )
        assert run.code == 0, run.stderr[-2000:]
    await wait_converged(users_collection, expected, 30, "store equals Keycloak")
    report = await verify_in_sync(scenario_settings(settings, keycloak_proxy), secrets_registry)
    requests, _, problems = audit_requests(keycloak_proxy.since(mark), realm)
    assert not problems, problems[:10]
    lines = secrets_registry.assert_clean([log_file])
    figures.update(
        users=USERS,
        updates=UPDATES,
        update_events_in_topic=events,
        events_dropped_by_keycloak_listener=UPDATES - events,
        users_left_to_the_full_reconcile=len(missed_by_listener),
        broker_down_s=round(downtime_s, 1),
        updates_during_restart=updates_during_restart,
        first_commit_after_broker_back_s=round(resumed_s, 1),
        reconciler_restarts=reconciler.starts - 1,
        lost=0,
        verify=report["in_sync"],
        keycloak_requests=requests,
        log_lines_scanned=lines,
        duration_s=round(time.monotonic() - started, 1),
    )
