"""Scenario 6: two replicas run a full reconcile at the same time (no lease: `reconcile --once` on both),
while real updates flow through the event path of a third process.

1,000 users (partial import, so the two runs race to create them), 900 updates of 200 of them during the runs.
The proxy holds every user-listing answer back for a second (a slow Keycloak), so the runs' pages carry
observations about a second old when they are written, while the event path writes newer ones of the same
users: the runs must refuse those older observations (counted as `stale`). A change stream records every
write: per user, `observed_at` must strictly increase from one write to the next (an older observation never
overwrites a newer one). At the end the store equals Keycloak and `verify` exits 0.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.reliability.harness import (
    run_cli,
    run_records,
)
from tests.reliability.scenario import ScenarioEnv

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 1000
UPDATED_USERS = 200
UPDATES = 900
PAGE_SIZE = 50
LISTING_DELAY_S = 1.0


async def test_overlapping_full_reconciles_and_events_never_write_an_older_observation(
    env: ScenarioEnv,
) -> None:
    started = time.monotonic()
    users = await env.import_seed_users(USERS, "overlap")
    replica = env.settings_for(keycloak_page_size=PAGE_SIZE)
    async with env.consumer("6-overlap", watch_writes=True) as scenario:
        stream = await scenario.stream_updates(users[:UPDATED_USERS], UPDATES, rate_per_s=30)
        # The runs' user listings (not the event path's single-user reads) come back a second late.
        async with env.listings_held(LISTING_DELAY_S):
            runs = await asyncio.gather(
                *(run_cli(replica, "reconcile", "--once", "--json", registry=env.secrets) for _ in range(2))
            )
        for run in runs:
            assert run.code == 0, run.stderr[-2000:]
        await scenario.converge(stream, what="store converged")
        await scenario.stop_cleanly()
    records = await run_records(env.users)
    assert len(records) == 2 and all(r["outcome"] == "success" for r in records), records
    a, b = records
    assert a["started_at"] < b["ended_at"] and b["started_at"] < a["ended_at"], "the two runs did not overlap"
    checked, regressions = scenario.writes.observed_at_regressions()
    assert not regressions, f"older observations written over newer ones: {regressions[:10]}"
    assert checked >= USERS
    summaries = [run.json() for run in runs]
    # The scenario proves the guard only if the runs did carry older observations than the store held.
    refused = sum(summary["stale"] for summary in summaries)
    assert refused > 0, f"no run met a newer observation: the overlap proved nothing ({summaries})"
    checks = await scenario.closing_checks(run_errors=True)
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        replicas=2,
        overlap_s=round(
            (min(a["ended_at"], b["ended_at"]) - max(a["started_at"], b["started_at"])).total_seconds(), 1
        ),
        runs=[
            {k: s[k] for k in ("created", "updated", "unchanged", "stale", "duration_s")} for s in summaries
        ],
        writes_checked=checked,
        observed_at_regressions=0,
        older_observations_refused=refused,
        listing_delay_s=LISTING_DELAY_S,
        duration_s=round(time.monotonic() - started, 1),
        **checks,
    )
