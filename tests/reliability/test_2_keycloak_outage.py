"""Scenario 2: Keycloak stopped for 30 s in the middle of the event stream and of a full reconcile.

`reconciler run` (consumer + periodic reconcile, 1,000 users listed 10 per page so the run is long) is
running; real updates flow; Keycloak is stopped while the run pages and while events are queued, and during
the outage copies of real Keycloak events are published straight to the admin topic (hints the consumer cannot
look up). Checked: at the end of the outage (reconciler frozen with SIGSTOP) every committed event is applied;
no write ever deactivates a user (a change stream watches every write); the interrupted run is recorded as
failed and a later run succeeds; the lag returns to 0; the store converges and `verify` exits 0.
"""

from __future__ import annotations

import pytest

from tests.reliability.harness import (
    run_records,
    value,
)
from tests.reliability.scenario import ScenarioEnv
from tests.support.kafka import publish
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 1000
UPDATED_USERS = 300
UPDATES = 900
OUTAGE_S = 30.0
LISTING_DELAY_S = 1.0


async def test_keycloak_outage_mid_stream_and_mid_reconcile(env: ScenarioEnv) -> None:
    users = await env.import_seed_users(USERS, "kcout")
    async with env.consumer(
        "2-keycloak-outage",
        watch_writes=True,
        reconcile_enabled=True,
        reconcile_interval_s=10,  # a failed run is retried after min(interval, 30 s)
        reconcile_jitter_s=0,
        keycloak_page_size=10,
    ) as scenario:
        reconciler, audit = scenario.process, scenario.audit
        # Listing answers held back while the first run pages, so that it is still paging when Keycloak
        # goes away (a quick Keycloak lists the realm within seconds).
        async with env.listings_held(LISTING_DELAY_S):
            # Mid-reconcile: the first run is recorded as running and has written part of the listing.
            await eventually(
                lambda: env.users.count_documents({"synced_by": "reconcile"}),
                until=lambda n: n >= 150,
                timeout_s=120,
                what="the full reconcile pages",
            )
            stream = await scenario.stream_updates(users[:UPDATED_USERS], UPDATES, rate_per_s=30)
            await eventually(lambda: value(stream.done >= 150), timeout_s=120, what="events flowing")
            running = await eventually(
                lambda: run_records(env.users),
                until=lambda rs: any(r["outcome"] == "running" for r in rs),
                timeout_s=120,
                what="a full reconcile running",
            )
            interrupted = next(r for r in running if r["outcome"] == "running")
            async with env.outage("keycloak") as outage:
                # Hints that arrive while Keycloak is away: copies of real events of users changed before.
                replayed = [r.value for r in (await audit.update_records())[-100:]]
                await publish(
                    scenario.config.kafka_bootstrap_servers,
                    scenario.config.kafka_admin_events_topic,
                    replayed,
                )
                await outage.hold(OUTAGE_S)
                # End of the outage, Keycloak still down: freeze the reconciler and audit what it committed.
                with reconciler.frozen():
                    at_outage = await audit.check()
                assert not at_outage.violations, at_outage.violations[:10]
                assert at_outage.pending_records > 0, (
                    "nothing was waiting for Keycloak: the outage proved nothing"
                )
        assert reconciler.alive, reconciler.tail()
        await scenario.finish_load()
        # The run that was paging when Keycloak went away is recorded as failed; a later one succeeds.
        runs = await eventually(
            lambda: run_records(env.users),
            until=lambda rs: (
                any(r["_id"] == interrupted["_id"] and r["outcome"] == "failed" for r in rs)
                and any(r["outcome"] == "success" and r["started_at"] > interrupted["started_at"] for r in rs)
            ),
            timeout_s=300,
            interval_s=1,
            what="the interrupted run failed and a later run succeeded",
        )
        failed = next(r for r in runs if r["_id"] == interrupted["_id"])
        assert "Keycloak" in (failed.get("error") or ""), failed
        recovered = await scenario.converge(stream, what="store converged after the outage")
        final = await scenario.stop_audited()
    deactivated = scenario.writes.deactivations()
    assert not deactivated, f"users deactivated during a Keycloak outage: {list(deactivated)[:10]}"
    dropped = sum(1 for r in env.proxy.since(scenario.mark) if r.status is None)
    assert dropped > 0, "no request met the outage"
    checks = await scenario.closing_checks(run_errors=True)
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        update_events=final.user_updates,
        replayed_hints_during_outage=len(replayed),
        keycloak_down_s=round(outage.down_s, 1),
        uncommitted_at_end_of_outage=at_outage.pending_records,
        committed_checked_at_end_of_outage=at_outage.user_updates,
        requests_failed_during_outage=dropped,
        runs=[(r["outcome"], r.get("counts", {}).get("listed")) for r in runs],
        deactivations=0,
        writes_watched=len(scenario.writes.writes),
        catch_up_after_recovery_s=round(recovered.caught_up_at - recovered.expected_at, 1),
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
