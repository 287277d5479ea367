"""The database-change source through the faults it must survive, on the stack (STACK_CDC=1): Kafka Connect
SIGKILLed, PostgreSQL restarted, the replication slot dropped, WAL piling up behind the slot, and the
connector's stored config read by whoever reaches Connect's REST API.

The realm's Kafka listener is removed and the event-store sweep is off, so only the committed rows carry a
change (writes with `synced_by: cdc`). These tests stop and start the stack's own `connect` and `postgres`
services and leave them running and healthy (restored after every test, also on failure).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from reconciler.base.config import Settings
from reconciler.domain.document import utc_now
from reconciler.fullsync.scheduler import ReconcileScheduler
from tests.conftest import override
from tests.support.connect import ConnectorClient
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.postgres import Postgres, PsqlError
from tests.support.service import running_service
from tests.support.stack_control import StackControl
from tests.support.stack_under_test import control_of

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

USERS = 50
ROUNDS = 4  # 200 changes: every user's last name set ROUNDS times, the rounds one after another
FAULT_AFTER = 60  # changes acknowledged before the fault is injected
WRITERS = 5  # admin calls in flight
CONVERGE_S = 60.0  # after the stream is back, every user's last change is in the store within this
CDC_GAP_S = 15.0  # small, so a slot lost for ~20 s counts as a gap (heartbeats come every 10 s)
RETAINED_BOUND = 4 * 1024 * 1024  # bytes of WAL the slot may hold once the heartbeat moved it on
FILLER_ROWS = 100_000


# --- fixtures --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cdc_env(stack_env: dict[str, str]) -> dict[str, str]:
    if "KAFKA_CONNECT_URL" not in stack_env:
        pytest.fail("the stack runs without Kafka Connect (STACK_CDC=0): start it with STACK_CDC=1")
    return stack_env


@pytest.fixture(scope="module")
def control(cdc_env: dict[str, str]) -> StackControl:
    return control_of(cdc_env)


@pytest.fixture(scope="module")
def postgres(cdc_env: dict[str, str]) -> Postgres:
    return Postgres.of_stack(cdc_env)


@pytest.fixture(scope="module")
async def connector(cdc_env: dict[str, str]) -> AsyncIterator[ConnectorClient]:
    client = ConnectorClient.of_stack(cdc_env)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def cdc_settings(settings: Settings, realm: str, cdc_env: dict[str, str]) -> Settings:
    return override(
        settings,
        consumer_start_offset="latest",
        cdc_enabled=True,
        cdc_topic_prefix=cdc_env["CDC_TOPIC_PREFIX"],
        keycloak_realm_id=realm,  # test realms are created with id = name
        reconcile_enabled=False,
        sweep_enabled=False,
        http_enabled=False,
    )


@pytest.fixture(scope="module")
async def no_listener(kc_admin: KeycloakTestAdmin) -> None:
    await kc_admin.set_event_listeners(["jboss-logging"])


@pytest.fixture(autouse=True)
async def healthy_afterwards(
    control: StackControl, connector: ConnectorClient, kc_admin: KeycloakTestAdmin
) -> AsyncIterator[None]:
    """Whatever a test broke, the stack runs again afterwards: PostgreSQL, Connect, the connector's task
    (a lost position reset as the runbook says), and Keycloak answers."""
    yield
    running = await asyncio.to_thread(control.running)
    for service in ("postgres", "connect"):
        if service not in running:
            await control.start(service)
    try:
        await connector.until_running(timeout_s=45)
    except AssertionError:
        if (await connector.states())[1] != "FAILED":
            raise
        await connector.reset_position()
    await eventually(lambda: keycloak_answers(kc_admin), timeout_s=120, interval_s=1, what="Keycloak answers")


@pytest.fixture(scope="module")
async def user_ids(kc_admin: KeycloakTestAdmin) -> list[str]:
    """USERS users made by one partial import (their later changes are what the tests follow)."""
    names = [f"fault-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(USERS)]
    users: list[dict[str, Any]] = [
        {"id": str(uuid.uuid4()), "username": name, "email": f"{name}@example.test", "enabled": True,
         "firstName": "Fault", "lastName": "0"}
        for name in names
    ]  # fmt: skip
    await kc_admin.partial_import_users(users)
    return [user["id"] for user in users]


# --- helpers ---------------------------------------------------------------------------------------------
async def keycloak_answers(kc_admin: KeycloakTestAdmin) -> bool:
    try:
        await kc_admin.request("GET", "/users/count")
    except httpx.HTTPError:
        return False
    return True


async def attempt(call: Callable[[], Awaitable[Any]]) -> bool:
    """One try of an admin call; False when Keycloak (or its database) is away."""
    try:
        await call()
    except httpx.HTTPError:
        return False
    return True


@dataclass
class ChangeStream:
    """ROUNDS rounds of last-name changes to every user, WRITERS at a time; a change Keycloak refuses while a
    dependency is away is tried again until it is acknowledged (so the final state is known)."""

    kc_admin: KeycloakTestAdmin
    user_ids: list[str]
    tag: str
    acknowledged: int = 0
    refused: int = 0
    stamps: list[float] = field(default_factory=list)  # monotonic time of each acknowledgement

    def value(self, round_number: int) -> str:
        return f"{self.tag}{round_number}"

    async def run(self, timeout_s: float = 240) -> None:
        gate = asyncio.Semaphore(WRITERS)

        async def change(user_id: str, round_number: int) -> None:
            async with gate:
                await eventually(
                    lambda: self._try(user_id, round_number), timeout_s=timeout_s, interval_s=0.5,
                    what=f"change {round_number} of user {user_id} acknowledged",
                )  # fmt: skip

        for round_number in range(1, ROUNDS + 1):
            await asyncio.gather(*(change(uid, round_number) for uid in self.user_ids))

    async def _try(self, user_id: str, round_number: int) -> bool:
        done = await attempt(lambda: self.kc_admin.update_user(user_id, lastName=self.value(round_number)))
        if done:
            self.acknowledged += 1
            self.stamps.append(time.monotonic())
        else:
            self.refused += 1
        return done

    def between(self, start: float, end: float) -> int:
        return sum(start <= stamp <= end for stamp in self.stamps)


async def converged(users: Any, stream: ChangeStream) -> list[dict[str, Any]]:
    """Users whose document does not (yet) show their last change through the change source."""
    final = stream.value(ROUNDS)
    docs = await users.find({"external_id": {"$in": stream.user_ids}}).to_list(None)
    behind = [d for d in docs if d.get("last_name") != final or d.get("synced_by") != "cdc"]
    missing = len(stream.user_ids) - len(docs)
    return behind + [{"missing": missing}] * (missing > 0)


async def until_converged(users: Any, stream: ChangeStream) -> float:
    started = time.monotonic()
    await eventually(
        lambda: converged(users, stream), until=lambda behind: not behind, timeout_s=CONVERGE_S, interval_s=0.5,
        what=f"all {USERS} users at their last change ({stream.value(ROUNDS)}, synced_by cdc)",
    )  # fmt: skip
    return time.monotonic() - started


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def sigkill(control: StackControl, service: str) -> None:
    """SIGKILL the service's process group, as a crash would (stack.py gave each service its own session)."""
    pid = int((control.state_dir / f"{service}.pid").read_text().split()[0])
    os.killpg(pid, signal.SIGKILL)


# --- (d) the password --------------------------------------------------------------------------------------
async def test_the_connector_password_never_appears_in_its_stored_config(
    cdc_env: dict[str, str], connector: ConnectorClient
) -> None:
    config = await connector.config()
    assert config["database.password"].startswith("${file:"), "the password must come from a config provider"
    secrets_file = Path(cdc_env["STACK_STATE_DIR"]) / "connect" / "cdc-database.properties"
    password = secrets_file.read_text().split("password=", 1)[1].splitlines()[0].strip()
    assert len(password) >= 16
    for path in ("", "/config", "/status", "/tasks"):
        assert password not in await connector.raw(path), f"the password shows in /connectors/{{name}}{path}"


# --- (c) WAL held by the slot ----------------------------------------------------------------------------
def retained(postgres: Postgres, slot: str) -> tuple[int, int]:
    """(WAL bytes the slot keeps: current position - restart_lsn, current - confirmed_flush_lsn)."""
    row = postgres.query(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
        f"FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )
    assert row, f"no replication slot {slot}"
    restart, confirmed = row.split("|")
    return int(restart), int(confirmed)


async def test_wal_held_by_the_slot_is_released_while_only_other_tables_change(
    cdc_env: dict[str, str], postgres: Postgres
) -> None:
    """100,000 rows in a table outside the publication: the slot holds their WAL until the heartbeat's
    UPDATE (in the publication, every 10 s) moves its confirmed position on; then only a little is held."""
    slot = cdc_env["CDC_SLOT_NAME"]
    await postgres.aquery(
        "CREATE SCHEMA IF NOT EXISTS cdc_test_filler; "
        "CREATE TABLE IF NOT EXISTS cdc_test_filler.rows (id bigint, pad text)"
    )
    try:
        before = await asyncio.to_thread(retained, postgres, slot)
        started = time.monotonic()
        await postgres.aquery(
            "INSERT INTO cdc_test_filler.rows "
            f"SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {FILLER_ROWS}) g"
        )
        written = time.monotonic() - started
        after_insert = await asyncio.to_thread(retained, postgres, slot)
        assert after_insert[0] > RETAINED_BOUND * 2, (before, after_insert)  # the rows' WAL is held at first
        held = await eventually(
            lambda: asyncio.to_thread(retained, postgres, slot),
            until=lambda r: r[0] < RETAINED_BOUND, timeout_s=240, interval_s=2,
            what=f"the slot's retained WAL under {RETAINED_BOUND} bytes",
        )  # fmt: skip
        print(
            f"retained WAL (restart, confirmed) bytes: before {before}, after {FILLER_ROWS} rows {after_insert}"
            f" (insert {written:.1f}s), {held} after {time.monotonic() - started:.0f}s"
        )
    finally:
        await postgres.aquery("DROP SCHEMA IF EXISTS cdc_test_filler CASCADE")


# --- (a) Connect SIGKILLed, PostgreSQL restarted, during 200 changes --------------------------------------
async def until_acknowledged(stream: ChangeStream, count: int) -> None:
    await eventually(
        lambda: asyncio.sleep(0, stream.acknowledged), until=lambda n: n >= count, timeout_s=120,
        what=f"{count} changes acknowledged",
    )  # fmt: skip


async def test_changes_made_while_kafka_connect_was_killed_all_reach_the_store(
    cdc_settings: Settings,
    no_listener: None,
    user_ids: list[str],
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    control: StackControl,
    connector: ConnectorClient,
) -> None:
    stream = ChangeStream(kc_admin, user_ids, tag="k")
    async with running_service(
        override(cdc_settings, kafka_group_id=f"test-cdc-kill-{uuid.uuid4().hex[:6]}")
    ):
        writing = asyncio.create_task(stream.run())
        try:
            await until_acknowledged(stream, FAULT_AFTER)
            killed = time.monotonic()
            sigkill(control, "connect")
            await control.start("connect")  # returns once the connector and its task have run for a while
            restarted = time.monotonic()
            await writing
        finally:
            writing.cancel()
        took = await until_converged(users_collection, stream)
    print(
        f"connect killed after {FAULT_AFTER} changes, running again after {restarted - killed:.1f}s; "
        f"{stream.between(killed, restarted)} changes acknowledged while it was away; "
        f"converged {took:.1f}s after the last change"
    )
    assert stream.acknowledged == USERS * ROUNDS
    assert stream.between(killed, restarted) > 0, "no change was made while Connect was down"


async def test_changes_made_around_a_postgres_restart_all_reach_the_store(
    cdc_settings: Settings,
    no_listener: None,
    user_ids: list[str],
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    control: StackControl,
    connector: ConnectorClient,
) -> None:
    stream = ChangeStream(kc_admin, user_ids, tag="p")
    async with running_service(override(cdc_settings, kafka_group_id=f"test-cdc-pg-{uuid.uuid4().hex[:6]}")):
        writing = asyncio.create_task(stream.run())
        try:
            await until_acknowledged(stream, FAULT_AFTER)
            stopped = time.monotonic()
            await control.stop("postgres")
            await control.start("postgres")
            back = time.monotonic()
            await eventually(lambda: keycloak_answers(kc_admin), timeout_s=120, what="Keycloak answers again")
            answering = time.monotonic()
            await writing
        finally:
            writing.cancel()
        took = await until_converged(users_collection, stream)
        await connector.until_running(timeout_s=30)
    print(
        f"postgres stopped after {FAULT_AFTER} changes, back after {back - stopped:.1f}s, Keycloak answering "
        f"after {answering - stopped:.1f}s; {stream.refused} changes refused meanwhile (retried); "
        f"converged {took:.1f}s after the last change"
    )
    assert stream.acknowledged == USERS * ROUNDS
    assert stream.refused > 0, "no change was attempted while PostgreSQL was down"


# --- (b) the slot dropped while the reconciler runs -----------------------------------------------------
async def drop_slot(postgres: Postgres, slot: str) -> None:
    """End the walsender that streams the slot and drop it before the connector's retry takes it again."""

    async def try_drop() -> bool:
        await postgres.aquery(
            "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots "
            f"WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
        )
        try:
            await postgres.aquery(f"SELECT pg_drop_replication_slot('{slot}')")
        except PsqlError as error:
            if "is active" not in str(error):
                raise
            return False
        return True

    await eventually(try_drop, timeout_s=30, interval_s=0.1, what=f"slot {slot} dropped")


@pytest.fixture
def requested(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reasons of every full reconcile requested from the scheduler while the test runs."""
    reasons: list[str] = []
    original = ReconcileScheduler.request

    def recording_request(self: ReconcileScheduler, reason: str) -> None:
        reasons.append(reason)
        original(self, reason)

    monkeypatch.setattr(ReconcileScheduler, "request", recording_request)
    return reasons


async def test_a_dropped_slot_requests_a_full_reconcile_and_the_lag_shows_the_outage(
    cdc_settings: Settings,
    no_listener: None,
    user_ids: list[str],
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    postgres: Postgres,
    connector: ConnectorClient,
    cdc_env: dict[str, str],
    requested: list[str],
) -> None:
    settings = override(
        cdc_settings,
        kafka_group_id=f"test-cdc-slot-{uuid.uuid4().hex[:6]}",
        reconcile_enabled=True,
        reconcile_interval_s=3600,  # the run at start, then none due: a later run was requested
        cdc_gap_s=CDC_GAP_S,
    )
    watched, lost = user_ids[0], user_ids[1]
    async with running_service(settings) as service:
        scheduler = service.scheduler
        assert scheduler is not None
        await kc_admin.update_user(watched, lastName="streaming")
        await until_synced(users_collection, watched, "streaming", "cdc")
        gaps_before = sample("reconciler_cdc_gaps_total")
        # The gap is judged from heartbeats read in a row: this consumer must have read one before the drop
        # (a replica that runs all along has; this one joined a moment ago).
        beats = {"topic": cdc_env["CDC_HEARTBEAT_TOPIC"], "outcome": "ignored_heartbeat"}
        read_before = REGISTRY.get_sample_value("reconciler_events_total", beats) or 0.0
        await eventually(
            lambda: asyncio.sleep(0, REGISTRY.get_sample_value("reconciler_events_total", beats) or 0.0),
            until=lambda n: n > read_before, timeout_s=30, what="a heartbeat read before the drop",
        )  # fmt: skip

        await drop_slot(postgres, cdc_env["CDC_SLOT_NAME"])
        dropped = time.monotonic()
        await kc_admin.update_user(lost, lastName="while-no-slot")  # lost to this source
        lag_early = await lag_over(5.0)
        lag = await lag_over(CDC_GAP_S + 5)  # nothing arrives: the lag keeps growing
        task_state = (await connector.states())[1]

        reset_at = utc_now()  # the gap's request and its run may both come within one poll of the test
        await connector.reset_position()
        recovered = time.monotonic()
        await kc_admin.update_user(watched, lastName="after-recovery")  # a record right away
        await eventually(
            lambda: asyncio.sleep(0, requested), until=lambda r: "cdc_gap" in r, timeout_s=60,
            what="a full reconcile requested for the gap",
        )  # fmt: skip
        detected = time.monotonic()
        await eventually(
            lambda: asyncio.sleep(0, scheduler.last_summary),
            until=lambda run: run is not None and run.started_at >= reset_at and run.ok,
            timeout_s=120, what="the requested full reconcile ran",
        )  # fmt: skip
        ran = time.monotonic()
        await until_synced(users_collection, lost, "while-no-slot", "reconcile")
        await until_synced(users_collection, watched, "after-recovery", None)
        lag_after = await eventually(
            lambda: asyncio.sleep(0, sample("reconciler_cdc_lag_seconds")), until=lambda v: v < CDC_GAP_S,
            timeout_s=30, what="the lag back under CDC_GAP_S",
        )  # fmt: skip
    print(
        f"slot dropped; task {task_state} {recovered - dropped:.0f}s later (lag {lag_early:.1f}s, then "
        f"{lag:.1f}s); after the reset: gap seen in {detected - recovered:.1f}s, full reconcile done in "
        f"{ran - recovered:.1f}s, lag {lag_after:.1f}s; requests {requested}"
    )
    assert sample("reconciler_cdc_gaps_total") > gaps_before
    assert lag > lag_early


async def lag_over(seconds: float) -> float:
    return await eventually(
        lambda: asyncio.sleep(0, sample("reconciler_cdc_lag_seconds")), until=lambda v: v > seconds,
        timeout_s=seconds + 30, interval_s=0.5, what=f"reconciler_cdc_lag_seconds over {seconds}s",
    )  # fmt: skip


async def until_synced(users: Any, user_id: str, last_name: str, synced_by: str | None) -> None:
    await eventually(
        lambda: users.find_one({"external_id": user_id}),
        until=lambda d: bool(d) and d.get("last_name") == last_name
        and (synced_by is None or d.get("synced_by") == synced_by),
        timeout_s=30, what=f"{user_id} stored with {last_name} by {synced_by}",
    )  # fmt: skip


LOST_UNSEEN = (
    "a lost slot is seen only as a jump in the commit times read: a recovery faster than CDC_GAP_S "
    "(default 60 s; here the reset follows the task's failure at once, ~12 s after the drop) keeps the jump "
    "under it, and the changes committed while no slot existed are lost unseen"
)


async def test_a_slot_lost_and_recovered_at_once_requests_a_full_reconcile(
    cdc_settings: Settings,
    no_listener: None,
    user_ids: list[str],
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    postgres: Postgres,
    connector: ConnectorClient,
    cdc_env: dict[str, str],
    requested: list[str],
) -> None:
    settings = override(
        cdc_settings,
        kafka_group_id=f"test-cdc-slot-busy-{uuid.uuid4().hex[:6]}",
        reconcile_enabled=True,
        reconcile_interval_s=3600,
    )  # CDC_GAP_S as shipped
    watched, lost, later = user_ids[2], user_ids[3], user_ids[4]
    slot = cdc_env["CDC_SLOT_NAME"]
    async with running_service(settings) as service:
        scheduler = service.scheduler
        assert scheduler is not None
        await kc_admin.update_user(watched, lastName="busy-streaming")
        await until_synced(users_collection, watched, "busy-streaming", "cdc")

        await drop_slot(postgres, slot)
        dropped = time.monotonic()
        await kc_admin.update_user(lost, lastName="busy-lost")
        await eventually(
            connector.states, until=lambda s: s[1] == "FAILED", timeout_s=60, what="the task FAILED"
        )
        await connector.reset_position()  # at once, as an automated recovery would
        remade = time.monotonic()
        await kc_admin.update_user(later, lastName="busy-later")
        await until_synced(users_collection, later, "busy-later", "cdc")  # kept by the new slot
        print(
            f"slot remade by the reset {remade - dropped:.1f}s after the drop; "
            f"lost-window change missing: {(await users_collection.find_one({'external_id': lost}))['last_name']}"
        )
        try:
            await eventually(
                lambda: asyncio.sleep(0, requested), until=lambda r: "cdc_gap" in r, timeout_s=20,
                what="a full reconcile requested for the lost changes",
            )  # fmt: skip
        except AssertionError:
            pytest.xfail(LOST_UNSEEN)
