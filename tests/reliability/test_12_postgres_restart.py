"""Scenario 12: Keycloak's PostgreSQL restarted under it in the middle of a full reconcile.

600 users (partial import) are listed 20 at a time by `reconcile --once` (each listing answer held back a
little, so the run is still paging); PostgreSQL is stopped (fast shutdown: every Keycloak connection is cut)
and started again while the run pages. Keycloak answers errors or stale pooled connections meanwhile. The run
must either complete or fail cleanly (recorded `failed`, exit 4), and never deactivate anyone. Keycloak then
answers one error for each pooled connection that was open across the restart (dozens after the busy
scenarios before this one: more than one run's retries absorb); once it serves again, a second run succeeds
and `verify` exits 0. Runs on any PostgreSQL-backed stack (the default); skipped on H2.
"""

from __future__ import annotations

import pytest

from reconciler.base.errors import ExitStatus
from tests.reliability.harness import run_cli, run_records
from tests.reliability.scenario import ScenarioEnv

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 600
PAGE_SIZE = 20
LISTING_DELAY_S = 0.3


@pytest.fixture
def on_postgres(stack_env: dict[str, str]) -> None:
    if stack_env.get("STACK_KEYCLOAK_DB", "postgres") != "postgres":
        pytest.skip("the reliability stack's Keycloak runs on H2")


@pytest.mark.usefixtures("on_postgres")
async def test_postgres_restart_mid_reconcile_fails_cleanly_or_completes_and_deactivates_no_one(
    env: ScenarioEnv,
) -> None:
    await env.import_seed_users(USERS, "pgrestart")
    replica = env.settings_for(keycloak_page_size=PAGE_SIZE)
    async with env.consumer("12-postgres-restart", watch_writes=True) as scenario:
        async with env.listings_held(LISTING_DELAY_S):
            run_task, mark, pages_at_stop = await env.start_paging_reconcile(replica, pages=5)
            restart = await env.restart("postgres")
            first = await run_task
        errors_seen = sum(1 for r in env.proxy.since(mark) if r.status is None or r.status >= 500)
        # The reconciler's promise ends where Keycloak's own recovery begins: the second run starts once
        # Keycloak has found out its dead pooled connections (see keycloak_serving_again).
        pool_errors = await env.keycloak_serving_again()
        second = await run_cli(replica, "reconcile", "--once", "--json", registry=env.secrets)
        await scenario.stop_cleanly()
    assert first.code in (ExitStatus.OK, ExitStatus.KEYCLOAK_UNAVAILABLE), first.stderr[-3000:]
    assert second.code == 0, second.stderr[-3000:]
    records = await run_records(env.users)
    outcomes = [r["outcome"] for r in records]
    if first.code == 0:
        assert outcomes == ["success", "success"], records
    else:  # a clean failure: recorded, nothing half-decided
        assert outcomes == ["failed", "success"], records
    deactivated = scenario.writes.deactivations()
    assert not deactivated, f"users deactivated though Keycloak has them all: {sorted(deactivated)[:10]}"
    assert await env.users.count_documents({"is_active": True}) == USERS
    checks = await scenario.closing_checks(run_errors=True)
    env.figures.update(
        users=USERS,
        pages_listed_before_stop=pages_at_stop,
        postgres_restart_s=round(restart.cycle_s, 1),
        first_run_exit=first.code,
        run_outcomes=outcomes,
        keycloak_errors_or_drops=errors_seen,
        keycloak_pool_errors_after_restart=pool_errors,
        false_deactivations=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
