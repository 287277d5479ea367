"""Scenario 3: the store (SecantusDB) stopped for 30 s while real Keycloak updates keep flowing.

`reconciler run` (consumer only) applies 1,200 updates of 300 users; the store is stopped in the middle and
started again 30 s later. At the end of the outage the reconciler is frozen (SIGSTOP), the store started, and
the group's committed offsets are audited against what the store holds: no offset may have been committed for
a record whose write did not happen. Then everything must be applied (the store converges to Keycloak, lag 0,
`verify` exits 0) and the process must never have exited.
"""

from __future__ import annotations

import pytest

from tests.reliability.scenario import ScenarioEnv

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 300
UPDATES = 1200
OUTAGE_S = 30.0


async def test_store_outage_commits_nothing_unapplied_and_applies_everything_after(env: ScenarioEnv) -> None:
    users = await env.import_seed_users(USERS, "storeout")
    async with env.consumer("3-store-outage") as scenario:
        reconciler, audit = scenario.process, scenario.audit
        stream = await scenario.stream_updates(users, UPDATES, rate_per_s=25, flowing_after=200)
        async with env.outage("secantusdb") as outage:
            committed_at_stop = await audit.committed_total()
            done_at_stop = stream.done
            await outage.hold(OUTAGE_S)
            assert reconciler.alive, reconciler.tail()
            # Freeze the reconciler, bring the store back and compare: the store holds exactly what was
            # applied before the outage, the offsets what was committed until now.
            with reconciler.frozen():
                committed_at_end = await audit.committed_total()
                done_at_end = stream.done
                await outage.end()
                at_outage = await audit.check()
        assert not at_outage.violations, f"committed, not applied: {at_outage.violations[:10]}"
        assert at_outage.pending_records > 0, "no record waited for the store: the outage proved nothing"
        assert stream.done > done_at_stop, "no events flowed during the outage"
        recovered = await scenario.converge(stream, what="store converged after its outage")
        assert reconciler.alive, "the reconciler exited during the store outage"
        final = await scenario.stop_audited()
    checks = await scenario.closing_checks()
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        store_down_s=round(outage.down_s, 1),
        updates_during_outage=done_at_end - done_at_stop,
        committed_records_during_outage=committed_at_end - committed_at_stop,
        committed_checked_at_end_of_outage=at_outage.user_updates,
        uncommitted_at_end_of_outage=at_outage.pending_records,
        catch_up_after_recovery_s=round(recovered.caught_up_at - recovered.expected_at, 1),
        committed_update_events=final.user_updates,
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
