"""Scenario 15: the replica holding the full-reconcile lease SIGKILLed mid-run, a second replica running.

Two `reconciler run` replicas (consumer + periodic full reconcile, a short lease TTL) share one store and one
consumer group. 1,600 users (partial import) are listed 20 at a time, two pages in flight, each listing
answer held back a second, so a run pages for about 40 s. Replica A takes the lease and pages;
replica B starts, joins the group and is refused the lease (it logs the skip); then A is SIGKILLed while it
pages, with real updates flowing through the event path. A change stream records every write to the lease
document and one to the users.

Checked: A's lease expired within one TTL of the kill (it renewed every third of it) and B took the lease
and started the next run within the jitter (+2 s for its loop) of that expiry; no holder ever took the lease
while another holder's was still valid; B's run succeeded, and it is the only other run (A's, which a killed
process cannot end, B closed as `abandoned` before starting its own); no write deactivated anyone; every
update ended in the store, the group caught up, the offset audit holds; `verify` exits 0. Runs on any shape.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from reconciler.fullsync.scheduler import LEASE_NAME
from tests.reliability.harness import (
    LeaseWatcher,
    ReconcilerProcess,
    run_records,
    value,
)
from tests.reliability.scenario import ScenarioEnv
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 1600
UPDATED_USERS = 100
UPDATES = 400
PAGE_SIZE = 20
LISTING_DELAY_S = 1.0
LEASE_TTL_S = 15.0
JITTER_S = 1.0
LOOP_SLACK_S = 2.0  # B's tick after its sleep: a lease read, the due check, the acquire (a loaded machine)


async def test_the_lease_holder_killed_mid_run_the_other_replica_takes_over_within_one_ttl(
    env: ScenarioEnv,
) -> None:
    started = time.monotonic()
    users = await env.import_seed_users(USERS, "leasekill")
    replica: dict[str, Any] = {
        "reconcile_enabled": True,
        "reconcile_interval_s": 3600.0,  # one run per interval: after B's success nobody is due again
        "reconcile_jitter_s": JITTER_S,
        "reconcile_lease_ttl_s": LEASE_TTL_S,
        "keycloak_page_size": PAGE_SIZE,
        "keycloak_list_concurrency": 2,
        # A's partitions go to B once A's static membership times out (the smallest session allowed).
        "consumer_session_timeout_s": 6.0,
    }
    leases = env.users.database["leases"]
    async with (
        LeaseWatcher(leases, LEASE_NAME) as lease,
        env.listings_held(LISTING_DELAY_S),
        env.consumer("15-lease-a", watch_writes=True, **replica) as scenario,
    ):
        a = scenario.process
        b_config = env.settings_for(
            kafka_group_id=scenario.config.kafka_group_id,
            kafka_group_instance_id="reliability-15-lease-b-0",
            **replica,
        )
        b = ReconcilerProcess(b_config, "run", log_file=env.secrets.log_file("15-lease-b"))
        try:
            await eventually(
                lambda: value(lease.first_write_of(a.pid)),
                until=lambda w: w is not None,
                timeout_s=60,
                what="replica A holds the lease",
            )
            await b.start()
            # The updates flow through both replicas' consumers from here to after the kill.
            stream = await scenario.stream_updates(users[:UPDATED_USERS], UPDATES, rate_per_s=10)
            await eventually(
                lambda: value(b.log_events("full reconcile skipped: another replica holds the lease")),
                timeout_s=60,
                interval_s=0.2,
                what="replica B refused the lease while A runs",
            )
            await b.wait_joined()
            a_runs = await run_records(env.users)
            assert [r["outcome"] for r in a_runs] == ["running"], f"A's run is not paging: {a_runs}"
            pages_at_kill = env.listings(scenario.mark)
            killed_at = datetime.now(UTC)
            done_at_kill = stream.done
            await a.kill()
            killed_done = datetime.now(UTC)  # A is reaped: it renewed nothing after this
            await eventually(
                lambda: value(lease.first_write_of(b.pid)),
                until=lambda w: w is not None,
                timeout_s=LEASE_TTL_S * 3,
                interval_s=0.2,
                what="replica B takes the lease",
            )
            runs = await eventually(
                lambda: run_records(env.users),
                until=lambda rs: len(rs) >= 2 and rs[-1]["outcome"] != "running",
                timeout_s=300,
                interval_s=0.5,
                what="B's run ended",
            )
            await scenario.converge(stream, what="every update in the store")
            await scenario.writes.drain()
            assert b.alive and b.starts == 1, f"replica B exited:\n{b.tail()}"
            b_exit = await b.terminate()
        finally:
            if b.alive:
                await b.terminate()
        final = await scenario.audit.check()
        events = await scenario.audit.count_updates()
        # B released the lease at its end (it stopped cleanly): the stream shows it before we read it.
        await eventually(
            lambda: value(lease.writes[-1].holder if lease.writes else "none"),
            until=lambda holder: holder is None,
            timeout_s=30,
            what="the lease released",
        )
        lease.check()
    assert b_exit == 0, b.tail()
    assert not final.violations, final.violations[:10]

    a_last, b_first = lease.last_write_of(a.pid), lease.first_write_of(b.pid)
    assert a_last is not None and b_first is not None
    assert a_last.expires_at is not None and a_last.renewed_at is not None
    assert b_first.renewed_at is not None
    # A renewed every third of the TTL until it died, so its lease ran out at most one TTL after the kill.
    assert a_last.renewed_at <= killed_done, (a_last.renewed_at, killed_done)
    expired_after_kill_s = (a_last.expires_at - killed_at).total_seconds()
    assert 0 < (a_last.expires_at - killed_done).total_seconds() <= LEASE_TTL_S, expired_after_kill_s
    # B took it over as soon as it was free: within its jitter (and its loop) of the expiry.
    taken_after_expiry_s = (b_first.renewed_at - a_last.expires_at).total_seconds()
    assert 0 <= taken_after_expiry_s <= JITTER_S + LOOP_SLACK_S, (
        f"replica B took the lease {taken_after_expiry_s:.1f} s after it expired "
        f"({(b_first.renewed_at - killed_at).total_seconds():.1f} s after the kill, TTL {LEASE_TTL_S} s)"
    )
    # Nobody ever took the lease while another holder's was still valid.
    early = [
        (before.holder, before.expires_at, after.holder, after.renewed_at)
        for before, after in lease.takeovers()
        if before.expires_at is None or after.renewed_at is None or after.renewed_at < before.expires_at
    ]
    assert not early, f"a lease taken before the previous holder's expired: {early}"
    assert len(lease.takeovers()) == 1, lease.takeovers()

    # Two runs: A's (killed; closed by B as `abandoned`) and B's, which started only after A's lease expired.
    assert len(runs) == 2, runs
    a_run, b_run = runs
    assert [a_run["holder"].split(":")[-2], b_run["holder"].split(":")[-2]] == [str(a.pid), str(b.pid)]
    assert a_run["outcome"] == "abandoned" and a_run["error"] == "holder lost its lease", a_run
    assert a_last.expires_at <= a_run["ended_at"] <= b_run["started_at"], (a_run, b_run)
    assert b_run["outcome"] == "success", b_run
    assert b_run["started_at"] >= a_last.expires_at, (b_run["started_at"], a_last.expires_at)
    run_started_after_kill_s = (b_run["started_at"] - killed_at).total_seconds()
    assert run_started_after_kill_s <= LEASE_TTL_S + JITTER_S + LOOP_SLACK_S, run_started_after_kill_s

    # The overlap of the runs' writes with the event path was harmless.
    deactivated = scenario.writes.deactivations()
    assert not deactivated, f"users deactivated though Keycloak has them all: {sorted(deactivated)[:10]}"
    assert await env.users.count_documents({"is_active": True}) == USERS
    checked, regressions = scenario.writes.observed_at_regressions()
    assert not regressions, f"older observations written over newer ones: {regressions[:10]}"
    checks = await scenario.closing_checks(run_errors=True)
    b_log_lines = env.secrets.assert_clean([b.log_file])
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        update_events_in_topic=events,
        kills=1,
        lease_ttl_s=LEASE_TTL_S,
        jitter_s=JITTER_S,
        pages_listed_before_kill=pages_at_kill,
        updates_after_kill=UPDATES - done_at_kill,
        lease_expired_after_kill_s=round(expired_after_kill_s, 1),
        lease_taken_after_expiry_s=round(taken_after_expiry_s, 1),
        next_run_started_after_kill_s=round(run_started_after_kill_s, 1),
        lease_writes=len(lease.writes),
        takeovers_before_expiry=0,
        b_skipped_lease=len(b.log_events("full reconcile skipped: another replica holds the lease")),
        b_run=b_run.get("counts"),
        stale_refused_by_b_run=(b_run.get("counts") or {}).get("stale"),
        a_run_left=a_run["outcome"],
        writes_checked=checked,
        false_deactivations=0,
        lost=0,
        duration_s=round(time.monotonic() - started, 1),
        b_log_lines_scanned=b_log_lines,
        **checks,
    )
