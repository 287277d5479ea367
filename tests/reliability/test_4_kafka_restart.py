"""Scenario 4: the Kafka broker restarted in the middle of the event stream.

`reconciler run` (consumer only) applies 1,200 real updates of 300 users; the only broker is stopped
(SIGTERM) and started again while updates keep flowing (Keycloak's listener buffers them meanwhile). The same
reconciler process must ride it out: reconnect, rejoin its group and continue committing, then converge to
Keycloak with lag 0, every committed event applied, and `verify` exit 0.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.harness import (
    run_cli,
    store_versions,
    wait_applied,
    wait_converged,
)
from tests.reliability.scenario import (
    ScenarioEnv,
    expected_versions,
)
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 1200


async def test_broker_restart_mid_stream_the_consumer_rejoins_and_continues(env: ScenarioEnv) -> None:
    users = await env.import_seed_users(USERS, "kafkart")
    async with env.consumer("4-kafka-restart") as scenario:
        reconciler, audit = scenario.process, scenario.audit
        stream = await scenario.stream_updates(users, UPDATES, rate_per_s=25, flowing_after=300)
        restart_started = time.monotonic()
        done_at_stop = stream.done
        await env.stack.stop("kafka")
        await env.stack.start("kafka")
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
        await scenario.finish_load()
        expected = await expected_versions(env.kc_admin, stream)
        # Every event that reached Kafka is applied. (Keycloak's listener itself may drop an event while
        # the broker is away: its producer gives up after 10 s without metadata. Those users are the
        # full reconcile's job, below.)
        in_kafka = await audit.topic_versions()
        await wait_applied(env.users, in_kafka, 180, "every event in Kafka applied")
        await audit.wait_caught_up(180)
        assert reconciler.alive and reconciler.starts == 1, "the reconciler had to be restarted"
        exit_code = await scenario.stop()
        final = await audit.check()
        events = await audit.count_updates()
    assert exit_code == 0, reconciler.tail()
    assert not final.violations, final.violations[:10]
    stored = await store_versions(env.users, expected)
    missed_by_listener = sorted(u for u, v in expected.items() if in_kafka.get(u, 0) < v)
    assert all(stored.get(u) == v for u, v in expected.items() if u not in missed_by_listener)
    if missed_by_listener:  # the safety net catches what never reached Kafka
        run = await run_cli(
            env.settings_for(),
            "reconcile",
            "--once",
            "--json",
            registry=env.secrets,
        )
        assert run.code == 0, run.stderr[-2000:]
    await wait_converged(env.users, expected, 30, "store equals Keycloak")
    checks = await scenario.closing_checks()
    env.figures.update(
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
        duration_s=scenario.elapsed_s(),
        **checks,
    )
