"""Scenario 4: the Kafka broker restarted in the middle of the event stream.

`reconciler run` (consumer only) applies 1,200 real updates of 300 users; the only broker is stopped
(SIGTERM) and started again while updates keep flowing (Keycloak's listener buffers them meanwhile). The same
reconciler process must ride it out: reconnect, rejoin its group and continue committing, then converge to
Keycloak with lag 0, every committed event applied, and `verify` exit 0.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.scenario import ScenarioEnv
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 1200


async def test_broker_restart_mid_stream_the_consumer_rejoins_and_continues(env: ScenarioEnv) -> None:
    users = await env.import_seed_users(USERS, "kafkart")
    async with env.consumer("4-kafka-restart") as scenario:
        audit = scenario.audit
        stream = await scenario.stream_updates(users, UPDATES, rate_per_s=25, flowing_after=300)
        done_at_stop = stream.done
        restart = await env.restart("kafka")
        committed_after_restart = await audit.committed_total()

        async def commits_and_lag() -> tuple[int, int]:
            return await audit.committed_total(), await audit.lag()

        # The same process continues: its commits move again. (On the secure shape `start kafka` returns
        # later, after the topic tool's logins: the process may have committed the whole rest of the stream
        # by then. Every record produced after the stop was committed after the broker came back, so a
        # finished stream with lag 0 shows the same.)
        await eventually(
            commits_and_lag,
            until=lambda now: now[0] > committed_after_restart or (stream.done >= UPDATES and now[1] == 0),
            timeout_s=180,
            interval_s=0.5,
            what="commits after the broker restart",
        )
        resumed_s = time.monotonic() - restart.up_at
        updates_during_restart = stream.done - done_at_stop
        end = await scenario.finish_through_kafka_fault(stream)
    checks = await scenario.closing_checks()
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        events_dropped_by_keycloak_listener=UPDATES - end.update_events_in_topic,
        broker_down_s=round(restart.cycle_s, 1),
        updates_during_restart=updates_during_restart,
        first_commit_after_broker_back_s=round(resumed_s, 1),
        duration_s=scenario.elapsed_s(),
        **end.figures(),
        **checks,
    )
