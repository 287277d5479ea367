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
from typing import Any

import pytest

from tests.reliability.scenario import ScenarioEnv
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 2000
KILLS = 5


async def test_sigkill_at_random_moments_loses_no_update(env: ScenarioEnv) -> None:
    # The import emits only REALM-type admin events (ignored by the reconciler): the stream below is the event
    # path's only source, so a user is in the store only after one of its updates.
    users = await env.import_seed_users(USERS, "crash")
    kills: list[dict[str, Any]] = []
    async with env.consumer("1-crash", event_recheck_delay_s=2.0) as scenario:
        reconciler, audit = scenario.process, scenario.audit
        # Paced (about 67 s) so that the stream outlasts the five kill cycles (about 25 s here) with room for a
        # slower machine: each cycle waits for commits to move, which needs events still flowing.
        stream = await scenario.stream_updates(users, UPDATES, rate_per_s=30)
        for _ in range(KILLS):
            # Each incarnation first shows progress (its commits move), then dies at a random moment.
            baseline = await audit.committed_user_updates()
            await eventually(
                audit.committed_user_updates,
                until=baseline.__lt__,
                timeout_s=180,
                interval_s=0.3,
                what="the consumer commits progress",
            )
            await asyncio.sleep(env.rng.uniform(0.0, 3.0))
            producing_at_kill = scenario.load_running
            # Killed: the store holds exactly what was applied; leaving restarts the consumer.
            async with scenario.crashed() as check:
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
        await scenario.converge(stream, what="store converged after the kills", lag_timeout_s=120)
        assert stream.done == UPDATES
        await scenario.stop_audited()
        events = await audit.count_updates()
        assert events >= UPDATES, f"Keycloak emitted {events} update events for {UPDATES} updates"
    checks = await scenario.closing_checks()
    # The scenario proves something only if some kills left committed work behind them and some found
    # work not yet committed.
    assert all(k["uncommitted_at_kill"] > 0 for k in kills), kills
    assert all(k["committed_user_updates"] > 0 for k in kills), kills
    assert sum(k["stream_running"] for k in kills) >= 3, kills
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        update_events=events,
        kills=len(kills),
        restarts=reconciler.starts - 1,
        kill_checks=kills,
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
