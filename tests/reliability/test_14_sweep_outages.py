"""Scenario 14: the event-store sweep alone (nothing of the realm reaches Kafka: the listener is removed from
its event listeners) through a Keycloak outage and a store outage while 300 updates of 100 users flow.

Each outage lasts 20 s; the sweep fails meanwhile and its watermark stays where the applied events end, so
nothing is skipped: after the outages the store converges to Keycloak, every write carried `synced_by: sweep`,
the process was never restarted, and `verify` exits 0.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability.harness import wait_converged
from tests.reliability.scenario import ScenarioEnv, expected_versions

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 100
UPDATES = 300
SWEEP_INTERVAL_S = 5.0
OUTAGE_S = 20.0


async def test_the_sweep_alone_rides_out_keycloak_and_store_outages(env: ScenarioEnv) -> None:
    users = await env.import_seed_users(USERS, "sweepout")
    config = (await env.kc_admin.request("GET", "/events/config")).json()
    quiet = [listener for listener in config["eventsListeners"] if listener != "kafka"]
    await env.kc_admin.request("PUT", "/events/config", json={**config, "eventsListeners": quiet})
    settings: dict[str, Any] = {
        "sweep_enabled": True,
        "sweep_interval_s": SWEEP_INTERVAL_S,
        "sweep_lease_ttl_s": 20.0,
    }
    try:
        # (No change-stream watcher: the store outage would cut it; the documents say who wrote them.)
        async with env.consumer("14-sweep-outages", **settings) as scenario:
            reconciler = scenario.process
            stream = await scenario.stream_updates(users, UPDATES, rate_per_s=5)
            downtime: dict[str, float] = {}
            for service in ("keycloak", "secantusdb"):
                async with env.outage(service) as outage:
                    await outage.hold(OUTAGE_S)
                downtime[service] = round(outage.cycle_s, 1)
            await scenario.finish_load()
            expected = await expected_versions(env.kc_admin, stream)
            await wait_converged(env.users, expected, 120, "converged from the event store after the outages")
            reconciler.assert_never_restarted()
            await scenario.stop_cleanly()
        writers = {doc["synced_by"] async for doc in env.users.find({}, {"synced_by": 1})}
        assert writers == {"sweep"}, writers
        checks = await scenario.closing_checks()
    finally:
        await env.kc_admin.request("PUT", "/events/config", json=config)
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        keycloak_down_s=downtime["keycloak"],
        store_down_s=downtime["secantusdb"],
        documents_written_by_the_sweep=await env.users.count_documents({"synced_by": "sweep"}),
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
