"""Failures an operator must see, on the real stack: one exit status per cause on every subcommand, a
`reconciler run` that stays up (not ready) through outages and converges after them, a permanent refusal
that turns /readyz 503 within 30 s and recovers by itself, and SIGTERM ending the process in time in every
one of those states, committing what was applied and leaving the rest for redelivery.

Outages are made with a TCP forwarder in front of the shared stack's Keycloak or store (tests/support/
tcp_proxy.py): the real server keeps running for the other tests.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.base.config import Settings
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.process import run_reconciler, start_reconciler
from tests.support.service import until_stored
from tests.support.tcp_proxy import TcpProxy, port_of, through

pytestmark = pytest.mark.stack

SECRET_MARKER = "wrong-secret-never-printed-5150"
DRAIN_S = 4.0
# SIGTERM: the drain timeout, the service's grace for committing and closing, and process start-up noise.
STOP_BOUND_S = DRAIN_S + 5.0 + 4.0


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("reconciler: error:")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


# --- one exit status per cause, on every one-shot subcommand ----------------------------------------------

CAUSES: dict[str, tuple[int, str, dict[str, Any]]] = {
    "keycloak_unreachable": (4, "Keycloak unreachable", {"keycloak_retry_attempts": 1}),
    "wrong_secret": (3, "Keycloak refused", {"keycloak_client_secret": SECRET_MARKER}),
    "store_unreachable": (5, "store unreachable", {"mongodb_timeout_s": 1.0}),
}
COMMANDS = {"reconcile": ("reconcile", "--once"), "replay": ("replay",), "verify": ("verify",)}


def broken(settings: Settings, cause: str) -> Settings:
    changes = dict(CAUSES[cause][2])
    if cause == "keycloak_unreachable":
        changes["keycloak_url"] = f"http://127.0.0.1:{free_port()}"
    if cause == "store_unreachable":
        changes["mongodb_uri"] = f"mongodb://reconciler:{SECRET_MARKER}@127.0.0.1:{free_port()}/"
    return override(settings, **changes)


@pytest.mark.parametrize("cause", sorted(CAUSES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_cause_gives_its_exit_status_and_one_line_on_every_command(
    settings: Settings, command: str, cause: str
) -> None:
    status, headline, _ = CAUSES[cause]
    result = run_reconciler(broken(settings, cause), *COMMANDS[command], timeout_s=120)
    assert result.returncode == status, result.stderr[-3000:]
    assert headline in one_error_line(result.stderr)
    assert SECRET_MARKER not in result.stdout + result.stderr


def test_run_with_a_wrong_secret_exits_3_at_start(settings: Settings) -> None:
    started = time.monotonic()
    result = run_reconciler(broken(settings, "wrong_secret"), "run", timeout_s=60)
    assert result.returncode == 3, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert (
        "Keycloak refused" in line and settings.keycloak_client_id in line and settings.keycloak_realm in line
    )
    assert SECRET_MARKER not in result.stdout + result.stderr
    assert time.monotonic() - started < 30


# --- `reconciler run` through outages and refusals -------------------------------------------------------


def run_settings(settings: Settings, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_group_id": f"failures-{uuid.uuid4().hex[:8]}",
        "consumer_start_offset": "latest",  # only what this test makes, not the shared topics' history
        "consumer_drain_timeout_s": DRAIN_S,
        "reconcile_enabled": False,
        "http_enabled": True,
        "http_host": "127.0.0.1",
        "http_port": free_port(),
        "event_recheck_delay_s": 0,
        "keycloak_retry_attempts": 2,
        "keycloak_timeout_s": 3,
        "mongodb_timeout_s": 2,
        "retry_user_backoff_max_s": 5,
    }
    values.update(changes)
    return override(settings, **values)


async def readiness(settings: Settings) -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            return await http.get(f"http://127.0.0.1:{settings.http_port}/readyz")
    except httpx.TransportError:
        return None


async def until_ready(settings: Settings, ready: bool, timeout_s: float = 30) -> httpx.Response:
    answer = await eventually(
        lambda: readiness(settings),
        until=lambda r: r is not None and (r.status_code == 200) is ready,
        timeout_s=timeout_s,
        interval_s=0.5,
        what="ready" if ready else "not ready",
    )
    assert answer is not None
    return answer


@contextmanager
def running(settings: Settings, log_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`reconciler run` as a child; killed at the end if a test left it running."""
    process = start_reconciler(settings, "run", log_file=log_file)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def sigterm_and_time(process: subprocess.Popen[bytes], log_file: Path) -> float:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_BOUND_S + 20)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after SIGTERM: {log_file.read_text()[-3000:]}") from None
    elapsed = time.monotonic() - started
    assert code == 0, log_file.read_text()[-3000:]
    assert elapsed < STOP_BOUND_S, f"SIGTERM took {elapsed:.1f}s: {log_file.read_text()[-3000:]}"
    return elapsed


@asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(port)
    try:
        yield proxy
    finally:
        await proxy.down()


def behind(settings: Settings, proxy: TcpProxy, outage_of: str) -> Settings:
    """`run` settings that reach Keycloak or the store through `proxy`."""
    if outage_of == "keycloak":
        return run_settings(settings, keycloak_url=f"http://127.0.0.1:{proxy.port}")
    return run_settings(settings, mongodb_uri=through(settings.mongodb_uri.get_secret_value(), proxy))


def upstream_port(settings: Settings, outage_of: str) -> int:
    url = settings.keycloak_base_url if outage_of == "keycloak" else settings.mongodb_uri.get_secret_value()
    return port_of(url)


@pytest.mark.parametrize("outage_of", ["keycloak", "store"])
async def test_run_rides_out_an_outage_and_sigterm_during_it_loses_nothing(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any, tmp_path: Path, outage_of: str
) -> None:
    log_file = tmp_path / "run.log"
    user_id = await kc_admin.create_user(first_name="Outage", last_name="0")
    async with proxy_to(upstream_port(settings, outage_of)) as proxy:
        config = behind(settings, proxy, outage_of)
        with running(config, log_file) as process:
            # Unreachable at start: up, not ready, saying which and why.
            answer = await eventually(
                lambda: readiness(config),
                until=lambda r: (
                    r is not None and r.status_code == 503 and r.json()["checks"].get(outage_of, "ok") != "ok"
                ),
                timeout_s=30,
                interval_s=0.5,
                what=f"not ready because of {outage_of}",
            )
            assert answer is not None
            await proxy.up()
            await until_ready(config, ready=True)
            await kc_admin.update_user(user_id, lastName="1")
            await until_stored(users_collection, user_id, "applied while it is up", last_name="1")

            await proxy.down()
            await kc_admin.update_user(user_id, lastName="2")  # the event arrives; its apply cannot happen
            await until_ready(config, ready=False)
            sigterm_and_time(process, log_file)
        assert (await users_collection.find_one({"external_id": user_id}))["last_name"] == "1"

        await proxy.up()
        with running(config, log_file) as process:  # same group: the uncommitted record comes again
            await until_stored(
                users_collection, user_id, "redelivered after restart", timeout_s=30, last_name="2"
            )
            sigterm_and_time(process, log_file)


async def test_losing_view_users_while_running_is_visible_at_once_and_recovers_by_itself(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any, tmp_path: Path
) -> None:
    log_file = tmp_path / "run.log"
    client_id = settings.keycloak_client_id
    user_id = await kc_admin.create_user(first_name="Role", last_name="0")
    await kc_admin.set_access_token_lifespan(client_id, 10)  # a token keeps its roles until it expires
    config = run_settings(settings)
    try:
        with running(config, log_file) as process:
            await until_ready(config, ready=True)
            await kc_admin.revoke_service_account_role(client_id, "view-users")
            # Changes keep coming; once the token is renewed (10 s at most) Keycloak refuses every read, and
            # readiness must say so within 30 s of that.
            await eventually(
                lambda: refused_after_update(kc_admin, config, user_id),
                timeout_s=10 + 30,
                interval_s=1,
                what="not ready after the refusal",
            )
            answer = await readiness(config)
            assert answer is not None and "view-users" in answer.json()["checks"]["keycloak"]
            await kc_admin.update_user(user_id, lastName="meanwhile")

            await kc_admin.grant_service_account_role(client_id, "view-users")
            back_at = time.monotonic()
            await until_stored(
                users_collection,
                user_id,
                "applied after the role came back",
                timeout_s=30,
                last_name="meanwhile",
            )
            assert time.monotonic() - back_at < 30
            await until_ready(config, ready=True)

            # Refused again, and SIGTERM while refused still ends the process in time.
            await kc_admin.revoke_service_account_role(client_id, "view-users")
            await eventually(
                lambda: refused_after_update(kc_admin, config, user_id),
                timeout_s=40,
                interval_s=1,
                what="refused again",
            )
            sigterm_and_time(process, log_file)
    finally:
        await kc_admin.grant_service_account_role(client_id, "view-users")
        await kc_admin.set_access_token_lifespan(client_id, 300)
    # No log flood: one line when the refusal starts (and at most one a minute after it), not one per retry.
    errors = [entry for entry in log_entries(log_file) if entry.get("level") == "error"]
    assert 1 <= len(errors) <= 6, errors
    assert SECRET_MARKER not in log_file.read_text()


def log_entries(log_file: Path) -> list[dict[str, Any]]:
    entries = []
    for line in log_file.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


async def refused_after_update(kc_admin: KeycloakTestAdmin, config: Settings, user_id: str) -> bool:
    await kc_admin.update_user(user_id, lastName=f"again-{uuid.uuid4().hex[:4]}")
    answer = await readiness(config)
    return answer is not None and answer.status_code == 503
