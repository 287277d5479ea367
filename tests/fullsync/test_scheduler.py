"""The periodic full reconcile on the real stack: due checks via run records, the lease, clean stop."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.lease import LEASE_POLL_S
from reconciler.clients.store import UserStore
from reconciler.domain.document import utc_now
from reconciler.domain.outcomes import Outcome
from reconciler.fullsync.scheduler import ABANDONED_ERROR, LEASE_NAME, ReconcileScheduler
from tests.conftest import make_settings
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

pytestmark = pytest.mark.stack


@pytest.fixture
async def fresh(
    stack_env: dict[str, str], realm: str, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> AsyncIterator[Any]:
    """A factory of (settings, store) on a database of its own, dropped afterwards."""
    database = f"t_sched_{uuid.uuid4().hex[:8]}"
    stores: list[UserStore] = []

    async def make(**overrides: Any) -> tuple[Settings, UserStore]:
        values: dict[str, Any] = {
            "keycloak_realm": realm,
            "mongodb_database": database,
            "reconcile_interval_s": 600,
            "reconcile_jitter_s": 0,
            "reconcile_lease_ttl_s": 60,
        }
        values.update(overrides)
        settings = make_settings(stack_env, **values)
        store = UserStore.from_settings(settings)
        await store.ensure_indexes()
        stores.append(store)
        return settings, store

    yield make
    for store in stores:
        await store.close()
    if not os.environ.get("KEEP_TEST_DATABASES"):
        await mongo_client.drop_database(database)


class SlowTransport(httpx.AsyncBaseTransport):
    """The real Keycloak, answering slowly."""

    def __init__(self, delay_s: float = 0.5) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.delay_s = delay_s

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.delay_s)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_disabled_scheduler_returns_at_once(fresh: Any) -> None:
    settings, store = await fresh(reconcile_enabled=False)
    async with KeycloakAdminClient(settings) as keycloak:
        await asyncio.wait_for(ReconcileScheduler(settings, store, keycloak).run(asyncio.Event()), 2)
    assert await store.runs.count_documents({}) == 0


async def test_runs_at_start_and_not_again_within_the_interval(
    fresh: Any, kc_admin: KeycloakTestAdmin
) -> None:
    await kc_admin.create_user()
    settings, store = await fresh()
    async with KeycloakAdminClient(settings) as keycloak:
        first = ReconcileScheduler(settings, store, keycloak)
        delay = await first.tick()
        assert first.last_summary is not None and first.last_summary.ok
        assert 590 <= delay <= 600
        assert await store.lease_holder(LEASE_NAME) is None  # released after the run

        # A restarted replica (new holder) sees the recent success and waits for the rest of the interval.
        restarted = ReconcileScheduler(settings, store, keycloak)
        delay = await restarted.tick()
        assert restarted.last_summary is None and 500 < delay <= 600
    assert await store.runs.count_documents({}) == 1


async def test_two_replicas_ticking_together_run_once(fresh: Any) -> None:
    settings, store = await fresh()
    async with KeycloakAdminClient(settings) as keycloak:
        replicas = [ReconcileScheduler(settings, store, keycloak) for _ in range(3)]
        await asyncio.gather(*(r.tick() for r in replicas))
        assert sum(r.last_summary is not None for r in replicas) == 1
    assert await store.runs.count_documents({}) == 1


async def test_a_lease_left_by_a_crashed_holder_expires_and_is_taken_over(fresh: Any) -> None:
    settings, store = await fresh(reconcile_lease_ttl_s=1)
    assert await store.acquire_lease(LEASE_NAME, "crashed-pod:1:dead", 1)
    async with KeycloakAdminClient(settings) as keycloak:
        scheduler = ReconcileScheduler(settings, store, keycloak)
        delay = await scheduler.tick()
        assert scheduler.last_summary is None and delay <= 1  # held: retry after the lease's ttl
        await asyncio.sleep(1.1)
        await scheduler.tick()
        assert scheduler.last_summary is not None and scheduler.last_summary.ok
    assert await store.runs.count_documents({"outcome": "success"}) == 1


async def test_the_next_holder_closes_the_run_a_dead_holder_left_running(fresh: Any) -> None:
    """A killed holder records nothing: its run stays `running` until the replica that takes over its
    expired lease closes it (`abandoned`), before its own run. A run without the lease (`reconcile --once`)
    is left alone."""
    settings, store = await fresh(reconcile_lease_ttl_s=1)
    dead, cli = "crashed-pod:1:dead", "cli:laptop:2:beef"
    assert await store.acquire_lease(LEASE_NAME, dead, 0.5)
    await store.start_run("killed-run", utc_now(), dead)
    await store.start_run("cli-run", utc_now(), cli)
    await eventually(lambda: store.lease_holder(LEASE_NAME), until=lambda h: h is None, interval_s=0.05)
    abandoned_before = REGISTRY.get_sample_value("reconciler_reconcile_runs_total", {"outcome": "abandoned"})
    async with KeycloakAdminClient(settings) as keycloak:
        scheduler = ReconcileScheduler(settings, store, keycloak)
        await scheduler.tick()
        assert scheduler.last_summary is not None and scheduler.last_summary.ok
    killed = await store.get_run("killed-run")
    assert killed is not None and killed.outcome is Outcome.ABANDONED, killed
    assert killed.error == ABANDONED_ERROR and killed.ended_at is not None
    assert killed.ended_at <= scheduler.last_summary.started_at
    still = await store.get_run("cli-run")
    assert still is not None and still.outcome is Outcome.RUNNING
    own = await store.get_run(scheduler.last_summary.run_id)
    assert own is not None and own.outcome is Outcome.SUCCESS and own.holder == scheduler.holder
    abandoned = REGISTRY.get_sample_value("reconciler_reconcile_runs_total", {"outcome": "abandoned"})
    assert (abandoned or 0) - (abandoned_before or 0) == 1


async def test_loop_stops_cleanly_and_keeps_a_heartbeat(fresh: Any) -> None:
    settings, store = await fresh()
    stop = asyncio.Event()
    async with KeycloakAdminClient(settings) as keycloak:
        scheduler = ReconcileScheduler(settings, store, keycloak)
        started = time.monotonic()
        loop = asyncio.create_task(scheduler.run(stop))
        await eventually(lambda: store.runs.count_documents({"outcome": "success"}), until=lambda n: n == 1)
        assert scheduler.heartbeat() >= started
        stop.set()
        await asyncio.wait_for(loop, 5)


async def test_stop_during_a_run_cancels_it_records_it_and_frees_the_lease(fresh: Any) -> None:
    settings, store = await fresh()

    stop = asyncio.Event()
    async with KeycloakAdminClient(settings, SlowTransport()) as keycloak:
        scheduler = ReconcileScheduler(settings, store, keycloak)
        loop = asyncio.create_task(scheduler.run(stop))
        await eventually(lambda: store.runs.count_documents({"outcome": "running"}), until=lambda n: n == 1)
        stop.set()
        await asyncio.wait_for(loop, 5)
    (run,) = [r async for r in store.runs.find({})]
    assert run["outcome"] == "cancelled" and run["ended_at"] is not None
    assert await store.lease_holder(LEASE_NAME) is None


async def test_a_holder_stopped_mid_run_hands_the_run_to_the_waiting_replica_at_once(fresh: Any) -> None:
    # Refused, the waiting replica's next try would be when the holder's lease runs out (a minute); the
    # release on the stop and its watch of the lease make it a second.
    settings, store = await fresh(reconcile_lease_ttl_s=60)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    async with (
        KeycloakAdminClient(settings, SlowTransport(delay_s=3)) as slow,
        KeycloakAdminClient(settings) as keycloak,
    ):
        a, b = ReconcileScheduler(settings, store, slow), ReconcileScheduler(settings, store, keycloak)
        loop_a = asyncio.create_task(a.run(stop_a))
        await eventually(lambda: store.runs.count_documents({"outcome": "running"}), until=lambda n: n == 1)
        skipped = _skipped()
        loop_b = asyncio.create_task(b.run(stop_b))
        await eventually(lambda: _value(_skipped()), until=lambda n: n > skipped, what="B refused the lease")
        stop_a.set()
        stopped = time.monotonic()
        await asyncio.wait_for(loop_a, 10)
        await eventually(
            lambda: store.runs.count_documents({"outcome": "success", "holder": b.holder}),
            until=lambda n: n == 1,
            timeout_s=LEASE_POLL_S + 5,
            what="B's run",
        )
        assert time.monotonic() - stopped < LEASE_POLL_S + 5
        stop_b.set()
        await asyncio.wait_for(loop_b, 10)
    outcomes = {r["holder"]: r["outcome"] async for r in store.runs.find({})}
    assert outcomes == {a.holder: "cancelled", b.holder: "success"}
    assert await store.lease_holder(LEASE_NAME) is None


def _skipped() -> float:
    return REGISTRY.get_sample_value("reconciler_reconcile_runs_total", {"outcome": "skipped_lease"}) or 0.0


async def _value(value: float) -> float:
    return value
