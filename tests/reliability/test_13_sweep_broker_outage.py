"""Scenario 13: the Kafka broker away for 60 s while 200 updates of 50 users are made, with the event-store
sweep on beside the consumer.

The store must converge *during* the outage, from Keycloak's stored events alone, within the sweep interval
plus 10 s of the last update; once the broker is back the late Kafka records change nothing (the
`observed_at` guard: no stored version goes back) and the same process catches up its group (lag 0, every
committed record applied); `verify` exits 0.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.reliability.harness import store_versions, wait_converged
from tests.reliability.scenario import ScenarioEnv, expected_versions

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 50
UPDATES = 200
SWEEP_INTERVAL_S = 5.0
OUTAGE_S = 60.0


async def test_the_sweep_keeps_the_store_true_while_the_broker_is_away(env: ScenarioEnv) -> None:
    users = await env.import_seed_users(USERS, "sweepkafka")
    settings: dict[str, Any] = {
        "sweep_enabled": True,
        "sweep_interval_s": SWEEP_INTERVAL_S,
        "sweep_overlap_s": 2.0,
        "sweep_lease_ttl_s": 20.0,
    }
    async with env.consumer("13-sweep-broker-outage", watch_writes=True, **settings) as scenario:
        reconciler, audit = scenario.process, scenario.audit
        async with env.outage("kafka") as broker:
            # 200 updates in about 40 s, all while the broker is away.
            stream = await scenario.stream_updates(users, UPDATES, rate_per_s=5)
            await scenario.finish_load()
            expected = await expected_versions(env.kc_admin, stream)
            await wait_converged(env.users, expected, SWEEP_INTERVAL_S + 10, "converged from the event store")
            converged_after_last_update_s = round(time.monotonic() - stream.finished_at, 1)
            # The injected fault lasts its full minute.
            await broker.hold(OUTAGE_S)
        await audit.wait_caught_up(240)
        caught_up_s = round(time.monotonic() - broker.up_at, 1)
        reconciler.assert_never_restarted()
        await scenario.stop_audited()
        swept = sum(1 for write in scenario.writes.writes if write.synced_by == "sweep")
    # Every late Kafka record was a hint read against Keycloak now: nothing moved off the last versions.
    assert await store_versions(env.users, expected) == expected
    assert swept > 0, "the sweep wrote nothing: the store cannot have converged from it"
    checks = await scenario.closing_checks()
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        broker_down_s=round(broker.down_s, 1),
        converged_during_outage_after_last_update_s=converged_after_last_update_s,
        writes_by_the_sweep=swept,
        group_caught_up_after_broker_back_s=caught_up_s,
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
