"""The event-store sweep on the real stack: with nothing reaching Kafka (the listener removed from the
realm's event listeners) every kind of change still reaches the store within the sweep interval; a
SIGKILLed process catches up from the stored watermark; a stopped sweeper frees its lease and a waiting one
takes it within a poll; partial imports are applied without waiting for the periodic run; an idle sweep
costs at most two Keycloak requests; without `view-events` it stays off."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.lease import LEASE_POLL_S
from reconciler.clients.store import UserStore
from reconciler.service import Service
from reconciler.sources.sweep import LEASE_NAME as SWEEP_LEASE
from reconciler.sources.sweep import Sweeper
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.process import start_reconciler, stop
from tests.support.service import until_stored

pytestmark = pytest.mark.stack

INTERVAL_S = 2.0
DEADLINE_S = INTERVAL_S + 10


@pytest.fixture(scope="module")
async def quiet_realm(kc_admin: KeycloakTestAdmin) -> AsyncIterator[None]:
    """Nothing of this realm reaches Kafka: only the event store can tell the reconciler."""
    config = (await kc_admin.request("GET", "/events/config")).json()
    listeners = config["eventsListeners"]
    await kc_admin.request(
        "PUT", "/events/config", json={**config, "eventsListeners": [x for x in listeners if x != "kafka"]}
    )
    yield
    await kc_admin.request("PUT", "/events/config", json=config)


def sweep_settings(settings: Settings, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "sweep_enabled": True,
        "sweep_interval_s": INTERVAL_S,
        "sweep_overlap_s": 2.0,
        "consumer_enabled": False,
        "reconcile_enabled": False,
        "http_enabled": False,
        "kafka_group_id": f"sweep-{uuid.uuid4().hex[:8]}",
        "event_recheck_delay_s": 0,
        "mongodb_database": f"{settings.mongodb_database}_{uuid.uuid4().hex[:6]}",
    }
    values.update(changes)
    return override(settings, **values)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Service]:
    service = Service(settings)
    task = asyncio.create_task(service.run())
    try:
        await eventually(lambda: _first_sweep_done(service), timeout_s=30, what="the first sweep")
        yield service
    finally:
        service.stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def _first_sweep_done(service: Service) -> bool:
    if service.sweeper is None:
        return False
    return (REGISTRY.get_sample_value("reconciler_sweeps_total", {"outcome": "ok"}) or 0) > 0


def users_of(settings: Settings, mongo_client: Any) -> Any:
    return mongo_client[settings.mongodb_database]["users"]


async def test_every_kind_of_change_arrives_through_the_event_store_alone(
    settings: Settings, kc_admin: KeycloakTestAdmin, quiet_realm: None, mongo_client: Any
) -> None:
    config = sweep_settings(settings)
    users = users_of(config, mongo_client)
    async with running(config):
        username, password = f"sw-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        user_id = await kc_admin.create_user(username, password=password, first_name="Swept")
        doc = await until_stored(users, user_id, "created", DEADLINE_S, first_name="Swept", is_active=True)
        assert doc["synced_by"] == "sweep"
        await kc_admin.update_user(user_id, lastName="Updated")
        await until_stored(users, user_id, "updated", DEADLINE_S, last_name="Updated")
        await kc_admin.set_enabled(user_id, False)
        await until_stored(users, user_id, "disabled", DEADLINE_S, is_active=False)
        await kc_admin.set_enabled(user_id, True)
        await until_stored(users, user_id, "re-enabled", DEADLINE_S, is_active=True)
        await kc_admin.update_own_profile(username, password, firstName="Self", lastName="Service")
        await until_stored(users, user_id, "self-service change", DEADLINE_S, first_name="Self")
        await kc_admin.delete_user(user_id)
        await until_stored(
            users, user_id, "deleted", DEADLINE_S, is_active=False, deactivation_reason="deleted_in_keycloak"
        )


async def test_a_killed_sweeper_catches_up_from_its_watermark(
    settings: Settings, kc_admin: KeycloakTestAdmin, quiet_realm: None, mongo_client: Any, tmp_path: Path
) -> None:
    # The killed holder's lease blocks its successor at most one TTL.
    config = sweep_settings(settings, sweep_lease_ttl_s=5)
    users = users_of(config, mongo_client)
    state = mongo_client[config.mongodb_database]["sweep_state"]
    log_file = tmp_path / "run.log"
    process = start_reconciler(config, "run", log_file=log_file)
    try:
        # A first start has no watermark and begins at now (a full reconcile covers the past).
        await eventually(lambda: state.find_one({"_id": "events"}), timeout_s=30, what="a watermark")
        user_ids = [await kc_admin.create_user(first_name="Kill", last_name="0") for _ in range(5)]
        for user_id in user_ids:
            await until_stored(users, user_id, "before the kill", 30, last_name="0")
        assert stop(process, signal.SIGKILL) == -signal.SIGKILL
        for user_id in user_ids:  # changed while nothing runs
            await kc_admin.update_user(user_id, lastName="while-down")
        process = start_reconciler(config, "run", log_file=log_file)
        for user_id in user_ids:
            await until_stored(users, user_id, "after the restart", 30, last_name="while-down")
    finally:
        code = stop(process, signal.SIGTERM)
    assert code == 0, log_file.read_text()[-3000:]


async def test_partial_imports_arrive_without_waiting_for_the_periodic_run(
    settings: Settings, kc_admin: KeycloakTestAdmin, quiet_realm: None, mongo_client: Any
) -> None:
    existing = [
        {"username": f"imp-old-{i}-{uuid.uuid4().hex[:6]}", "enabled": True, "firstName": "Old"}
        for i in range(100)
    ]
    await kc_admin.partial_import_users(existing)
    # Overwriting 100 of ~300 users deactivates a third of the realm: the guard would (rightly) refuse.
    config = sweep_settings(
        settings,
        reconcile_enabled=True,
        reconcile_interval_s=3600,
        reconcile_jitter_s=0,
        sweep_reconcile_spacing_s=0,
        mass_deactivation_max_ratio=0.5,
    )
    users = users_of(config, mongo_client)
    async with running(config) as service:
        assert service.scheduler is not None
        await eventually(
            lambda: users.count_documents({"first_name": "Old", "is_active": True}),
            until=lambda n: n == 100,
            timeout_s=60,
            what="the first full reconcile",
        )
        fresh = [
            {"username": f"imp-new-{i}-{uuid.uuid4().hex[:6]}", "enabled": True, "firstName": "New"}
            for i in range(100)
        ]
        await kc_admin.partial_import_users(fresh)
        # OVERWRITE replaces each existing user under a new id: the old ids vanish without any event.
        await kc_admin.partial_import_users([{**user, "firstName": "Overwritten"} for user in existing])
        await eventually(
            lambda: users.count_documents({"first_name": {"$in": ["New", "Overwritten"]}, "is_active": True}),
            until=lambda n: n == 200,
            timeout_s=DEADLINE_S + 60,
            what="imported users applied",
        )
        await eventually(
            lambda: users.count_documents({"first_name": "Old", "is_active": True}),
            until=lambda n: n == 0,
            timeout_s=DEADLINE_S + 60,
            what="overwritten users' old ids deactivated by the requested full reconcile",
        )


async def test_a_stopped_sweeper_frees_its_lease_and_a_waiting_one_takes_it_within_a_poll(
    settings: Settings, kc_admin: KeycloakTestAdmin, quiet_realm: None, mongo_client: Any
) -> None:
    # The waiting replica's own next try is a whole interval away, and the lease lasts a minute: only the
    # release and the waiting replica's watch of the lease make the takeover fast.
    config = sweep_settings(settings, sweep_interval_s=30, sweep_lease_ttl_s=60)
    assert LEASE_POLL_S + 3 < config.sweep_interval_s
    leases = mongo_client[config.mongodb_database]["leases"]
    replicas = [Service(config), Service(config)]
    swept_before = _sweeps()
    tasks = [asyncio.create_task(replica.run()) for replica in replicas]
    try:
        # The holder's first sweep reads the realm's whole event store into a new database: stopped before
        # it ends, the next holder would start that long read again instead of a sweep from the watermark.
        await eventually(
            lambda: _value(_sweeps()), until=lambda n: n > swept_before, timeout_s=60, what="the first sweep"
        )
        lease = await eventually(
            lambda: leases.find_one({"_id": SWEEP_LEASE}), timeout_s=30, what="a sweeper holds the lease"
        )
        await eventually(
            lambda: _value(float(all(r.sweeper is not None for r in replicas))), timeout_s=30, what="two"
        )
        held = [r.sweeper is not None and r.sweeper.holder == lease["holder"] for r in replicas]
        holder, waiting = (0, 1) if held[0] else (1, 0)
        waiting_sweeper = replicas[waiting].sweeper
        assert held[holder] and waiting_sweeper is not None
        replicas[holder].stop.set()
        stopped = time.monotonic()
        assert await asyncio.wait_for(tasks[holder], 60) == 0
        left = await leases.find_one({"_id": SWEEP_LEASE})
        assert left is None or left["holder"] == waiting_sweeper.holder, f"the stopped one kept it: {left}"
        sweeps = _sweeps()  # from here on only the waiting replica sweeps
        await eventually(
            lambda: leases.find_one({"_id": SWEEP_LEASE}),
            until=lambda doc: doc is not None and doc["holder"] == waiting_sweeper.holder,
            timeout_s=LEASE_POLL_S + 3,
            interval_s=0.05,
            what="the waiting sweeper takes the lease",
        )
        await eventually(lambda: _value(_sweeps()), until=lambda n: n > sweeps, timeout_s=5, what="it sweeps")
        assert time.monotonic() - stopped < 5
    finally:
        for replica in replicas:
            replica.stop.set()
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert codes == [0, 0]
    assert await leases.find_one({"_id": SWEEP_LEASE}) is None  # both stopped cleanly: nobody holds it


def _requests(operation: str | None = None) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name != "reconciler_keycloak_requests":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and (
                operation is None or sample.labels["operation"] == operation
            ):
                total += sample.value
    return total


def _sweeps() -> float:
    return REGISTRY.get_sample_value("reconciler_sweeps_total", {"outcome": "ok"}) or 0.0


async def test_an_idle_sweep_costs_at_most_two_requests_and_never_lists_users(
    settings: Settings, kc_admin: KeycloakTestAdmin, quiet_realm: None
) -> None:
    config = sweep_settings(settings, sweep_interval_s=0.5)
    async with running(config):
        await eventually(lambda: _value(_sweeps()), until=lambda n: n >= 2, timeout_s=30, what="two sweeps")
        sweeps, requests, tokens, listings = (
            _sweeps(),
            _requests(),
            _requests("token"),
            _requests("list_users"),
        )
        await eventually(
            lambda: _value(_sweeps()), until=lambda n: n >= sweeps + 6, timeout_s=30, what="idle"
        )
        done = _sweeps() - sweeps
        spent = (_requests() - requests) - (_requests("token") - tokens)  # token renewals aside
        assert _requests("list_users") == listings
    assert 0 < spent <= 2 * (done + 1), (spent, done)  # (+1: a sweep under way when counting stopped)


async def _value(value: float) -> float:
    return value


async def test_without_view_events_the_sweep_stays_off_and_says_why(
    settings: Settings, kc_admin: KeycloakTestAdmin, store: UserStore
) -> None:
    await kc_admin.revoke_service_account_role(settings.keycloak_client_id, "view-events")
    try:
        async with KeycloakAdminClient(sweep_settings(settings)) as keycloak:
            sweeper = Sweeper(sweep_settings(settings), keycloak, store, queue=None, holder="test")  # type: ignore[arg-type]
            assert await sweeper.check() is False
        assert REGISTRY.get_sample_value("reconciler_sweep_active") == 0
    finally:
        await kc_admin.grant_service_account_role(settings.keycloak_client_id, "view-events")
