"""Scenario 11 (production shape only): one of two Keycloak nodes SIGKILLed while updates flow through the
front and a full reconcile pages through the users.

`reconciler run` follows real updates made through the front while `reconcile --once` lists 600 users 20 at a
time (each listing answer held back a little, so the run is still paging when the node dies). A node chosen
by the seed is killed without warning: the front's connections to it drop (the reconciler retries, the next
attempt lands on the live node), the surviving node carries on alone, and the killed node is started again
and rejoins the cluster. The full reconcile completes, nobody is deactivated, nothing is lost, and `verify`
exits 0. Skipped unless the reliability stack is a cluster: `RELIABILITY_KEYCLOAK_NODES=2 make reliability`.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.scenario import ScenarioEnv

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 600
UPDATED_USERS = 200
UPDATES = 600
PAGE_SIZE = 20
LISTING_DELAY_S = 0.3


@pytest.fixture
def nodes(stack_env: dict[str, str]) -> int:
    count = len([url for url in stack_env.get("KEYCLOAK_NODE_URLS", "").split(",") if url])
    if count < 2:
        pytest.skip(
            "the reliability stack has one Keycloak node (RELIABILITY_KEYCLOAK_NODES=2 makes a cluster)"
        )
    return count


async def test_a_killed_keycloak_node_loses_nothing_and_deactivates_no_one(
    env: ScenarioEnv, nodes: int
) -> None:
    users = await env.import_seed_users(USERS, "nodekill")
    victim = f"keycloak-{env.rng.randint(1, nodes)}"
    replica = env.settings_for(keycloak_page_size=PAGE_SIZE)
    async with env.consumer("11-keycloak-node-kill", watch_writes=True) as scenario:
        stream = await scenario.stream_updates(
            users[:UPDATED_USERS], UPDATES, rate_per_s=20, flowing_after=100
        )
        async with env.listings_held(LISTING_DELAY_S):
            run_task, mark, pages_at_kill = await env.start_paging_reconcile(replica, pages=5)
            async with env.outage(victim, crash=True) as node:
                run = await run_task
                run_done_s = time.monotonic() - node.began
        node_back_s = node.cycle_s
        await scenario.converge(stream)
        await scenario.stop_audited()
    assert run.code == 0, run.stderr[-3000:]
    summary = run.json()
    deactivated = scenario.writes.deactivations()
    assert not deactivated, f"users deactivated though Keycloak has them all: {sorted(deactivated)[:10]}"
    assert await env.users.count_documents({"is_active": False}) == 0
    dropped = sum(1 for r in env.proxy.since(mark) if r.status is None)
    checks = await scenario.closing_checks()
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        killed=victim,
        pages_listed_before_kill=pages_at_kill,
        reconcile={k: summary[k] for k in ("created", "updated", "unchanged", "deactivated", "duration_s")},
        reconcile_done_after_kill_s=round(run_done_s, 1),
        node_back_after_s=round(node_back_s, 1),
        update_failures_retried=stream.failures,
        keycloak_requests_dropped=dropped,
        false_deactivations=0,
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
