"""Scenario 5: 500 users created and 500 deleted while a full reconcile of 5,000 users pages through them.

The realm is seeded with 5,000 users (partial import: no user events) and mirrored by a first full reconcile.
Then a second full reconcile pages 10 users at a time (rate-limited, so it lasts) while 500 users are created
and 500 deleted through the admin API, with the event path running. Offset paging skips users when others are
deleted meanwhile: the run must confirm every candidate before deactivating it. Checked with a change stream
on every write: zero deactivations of users that exist; every deleted user deactivated (by the event path or
by the next run) with reason deleted_in_keycloak; every created user active; `verify` exits 0.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.reliability.harness import (
    run_cli,
    value,
)
from tests.reliability.scenario import ScenarioEnv
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1200)]

USERS = 5000
CREATED = 500
DELETED = 500


async def test_churn_during_a_full_reconcile_deactivates_no_existing_user(env: ScenarioEnv) -> None:
    started = time.monotonic()
    users = await env.import_seed_users(USERS, "churn")
    seeded_s = time.monotonic() - started
    plain = env.settings_for()
    first = await run_cli(plain, "reconcile", "--once", "--json", registry=env.secrets)
    assert first.code == 0, first.stderr[-2000:]
    assert first.json()["created"] == USERS
    deleted = {u["id"] for u in env.rng.sample(users, DELETED)}
    # 6 requests/s: the listing of 500 pages (~85 s) outlasts the 1,000 churn operations on a loaded machine.
    slow_run = env.settings_for(keycloak_page_size=10, keycloak_max_requests_per_s=6)
    created: list[str] = []
    async with env.consumer("5-churn", watch_writes=True) as scenario:
        paging = asyncio.create_task(run_cli(slow_run, "reconcile", "--once", "--json", registry=env.secrets))
        await eventually(
            lambda: value(len(_pages(env.proxy, scenario.mark)) >= 30),
            timeout_s=120,
            what="the full reconcile pages",
        )
        churn_started = time.monotonic()
        operations = [("create", i) for i in range(CREATED)] + [("delete", u) for u in sorted(deleted)]
        env.rng.shuffle(operations)
        await _churn(env.kc_admin, operations, created)
        churn_ended = time.monotonic()
        churn_run = await paging
        assert churn_run.code == 0, churn_run.stderr[-2000:]
        pages = _pages(env.proxy, scenario.mark)
        assert pages[0] < churn_started and pages[-1] > churn_ended, (
            "the churn did not happen while the run was paging"
        )
        await scenario.audit.wait_caught_up(180)
        # The next run deactivates what the event path may have left.
        next_run = await run_cli(plain, "reconcile", "--once", "--json", registry=env.secrets)
        assert next_run.code == 0, next_run.stderr[-2000:]
        await scenario.stop_cleanly()
    churn_summary, next_summary = churn_run.json(), next_run.json()
    deactivations = scenario.writes.deactivations()
    false = sorted(set(deactivations) - deleted)
    assert not false, f"{len(false)} existing users were deactivated: {false[:10]}"
    assert churn_summary["reactivated"] == 0 and next_summary["reactivated"] == 0
    docs = {d["external_id"]: d async for d in env.users.find({})}
    for user_id in deleted:
        assert docs[user_id]["is_active"] is False, docs[user_id]
        assert docs[user_id]["deactivation_reason"] == "deleted_in_keycloak"
    for user_id in created:
        assert docs[user_id]["is_active"] is True
    assert sum(1 for d in docs.values() if d["is_active"]) == USERS - DELETED + CREATED
    checks = await scenario.closing_checks(run_errors=True)
    by_path = {"event": 0, "reconcile": 0}
    for user_id in deleted:
        by_path[deactivations[user_id].synced_by or "?"] = (
            by_path.get(deactivations[user_id].synced_by or "?", 0) + 1
        )
    env.figures.update(
        users=USERS,
        created_during_run=CREATED,
        deleted_during_run=DELETED,
        seed_s=round(seeded_s, 1),
        churn_s=round(churn_ended - churn_started, 1),
        run_pages=len(pages),
        run_s=churn_summary["duration_s"],
        run_listed=churn_summary["listed"],
        run_candidates=churn_summary["candidates"],
        run_deactivated=churn_summary["deactivated"],
        next_run_deactivated=next_summary["deactivated"],
        deleted_deactivated_by=by_path,
        false_deactivations=0,
        writes_watched=len(scenario.writes.writes),
        duration_s=round(time.monotonic() - started, 1),
        **checks,
    )


def _pages(proxy: RecordingProxy, mark: int) -> list[float]:
    """Arrival times of the user-listing requests with a page size of 10 (the slow run's pages)."""
    return [
        r.at
        for r in proxy.since(mark)
        if r.method == "GET" and r.raw_path.split("?")[0].endswith("/users") and "max=10&" in r.raw_path + "&"
    ]


async def _churn(kc: KeycloakTestAdmin, operations: list[tuple[str, Any]], created: list[str]) -> None:
    queue = iter(operations)

    async def worker() -> None:
        for kind, item in queue:
            if kind == "create":
                created.append(
                    await kc.create_user(f"churn-new-{item:04d}", first_name="New", last_name="v0")
                )
            else:
                await kc.delete_user(item)

    await asyncio.gather(*(worker() for _ in range(6)))
