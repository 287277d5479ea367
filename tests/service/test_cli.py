"""`reconciler reconcile` as an operator runs it: a subprocess, configured by environment variables only."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from reconciler.base.config import Settings
from reconciler.cli import build_parser, describe_settings_error
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.ports import free_port
from tests.support.process import run_reconciler_async

SECRET_MARKER = "do-not-print-this-secret-4711"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.startswith("reconciler: error:")]
        assert len(lines) == 1, self.stderr
        return lines[0]


async def run_cli(env: dict[str, str], *args: str) -> Result:
    done = await run_reconciler_async(env, *args, timeout_s=120)
    return Result(done.returncode, done.stdout, done.stderr)


def base_env() -> dict[str, str]:
    """Only what a process needs, not the test runner's stack settings."""
    return {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}


@pytest.fixture(scope="module")
def cli_env(stack_env: dict[str, str], settings: Settings) -> dict[str, str]:
    return {
        **base_env(),
        "KEYCLOAK_URL": stack_env["KEYCLOAK_URL"],
        "KEYCLOAK_REALM": settings.keycloak_realm,
        "KEYCLOAK_CLIENT_ID": stack_env["KEYCLOAK_CLIENT_ID"],
        "KEYCLOAK_CLIENT_SECRET": stack_env["KEYCLOAK_CLIENT_SECRET"],
        "MONGODB_URI": stack_env["MONGODB_URI"],
        "MONGODB_DATABASE": settings.mongodb_database,
        "KAFKA_BOOTSTRAP_SERVERS": stack_env["KAFKA_BOOTSTRAP_SERVERS"],
    }


# --- without the stack --------------------------------------------------------------------------------------


def test_help_documents_the_exit_codes() -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["reconcile"]  # type: ignore[union-attr]
    text = sub.format_help()
    for flag in ("--once", "--dry-run", "--allow-mass-deactivation", "--json"):
        assert flag in text
    for code in (
        "0  success",
        "2  bad or missing configuration",
        "3  Keycloak or Kafka refused",
        "8  no Kafka broker answered",
        "9  erase: Keycloak still has the user",
        "6  the mass-deactivation",
    ):
        assert code in text


async def test_configuration_errors_name_the_variables_without_their_values() -> None:
    env = {
        **base_env(),
        "KEYCLOAK_REALM": "app",
        "KEYCLOAK_CLIENT_SECRET": SECRET_MARKER,
        "KEYCLOAK_URL": f"not a url {SECRET_MARKER}",
        "KEYCLOAK_PAGE_SIZE": "0",
    }
    result = await run_cli(env, "reconcile", "--once")
    assert result.code == 2
    line = result.last_error_line
    assert "missing MONGODB_URI" in line
    assert "KEYCLOAK_URL" in line and "KEYCLOAK_PAGE_SIZE" in line
    assert SECRET_MARKER not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("mapping", "reason"),
    [
        ("picture=avatar_url,mail=email", "email is one of the document's own fields"),
        ("picture=avatar_url,photo=avatar_url", "field 'avatar_url' is the target of two attributes"),
        ('{"picture":"avatar_url"}', "is not attribute=field"),
    ],
)
async def test_a_malformed_mirrored_attributes_mapping_stops_every_command_at_start(
    mapping: str, reason: str
) -> None:
    env = {
        **base_env(),
        "KEYCLOAK_URL": "http://127.0.0.1:9",  # nothing listens: the mapping is refused before any connection
        "KEYCLOAK_REALM": "app",
        "KEYCLOAK_CLIENT_SECRET": SECRET_MARKER,
        "MONGODB_URI": "mongodb://127.0.0.1:9",
        "MIRRORED_ATTRIBUTES": mapping,
    }
    for command in (["run"], ["reconcile", "--once"], ["verify"]):
        result = await run_cli(env, *command)
        assert result.code == 2, (command, result.stderr)
        assert result.stderr.strip().splitlines() == [result.last_error_line]
        assert "configuration error: invalid MIRRORED_ATTRIBUTES" in result.last_error_line
        assert reason in result.last_error_line
        assert SECRET_MARKER not in result.stderr + result.stdout


def test_describe_settings_error_never_includes_input() -> None:
    from pydantic import ValidationError

    try:
        Settings(
            _env_file=None,
            keycloak_url="x",
            keycloak_realm="r",
            keycloak_client_secret="s",
            mongodb_uri=SECRET_MARKER,
            log_level=SECRET_MARKER,
        )  # type: ignore[call-arg]
    except ValidationError as error:
        text = describe_settings_error(error)
    assert "KEYCLOAK_URL" in text and "LOG_LEVEL" in text and SECRET_MARKER not in text


async def test_options_of_one_run_need_once() -> None:
    result = await run_cli(base_env(), "reconcile", "--allow-mass-deactivation")
    assert result.code == 2 and "--once" in result.last_error_line


# --- on the stack ---------------------------------------------------------------------------------------------


@pytest.mark.stack
async def test_once_json_prints_one_summary_object(
    cli_env: dict[str, str], kc_admin: KeycloakTestAdmin
) -> None:
    await kc_admin.create_user()
    result = await run_cli(cli_env, "reconcile", "--once", "--json")
    assert result.code == 0, result.stderr
    (line,) = result.stdout.strip().splitlines()
    summary = json.loads(line)
    for key in ("created", "updated", "deactivated", "reactivated", "unchanged", "duration_s", "outcome"):
        assert key in summary
    assert summary["outcome"] == "success" and summary["created"] >= 1
    # The logs are JSON lines on stderr, with the run id bound.
    logs = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    assert any(entry.get("event") == "full reconcile finished" and entry.get("run_id") for entry in logs)
    assert cli_env["KEYCLOAK_CLIENT_SECRET"] not in result.stderr


@pytest.mark.stack
async def test_dry_run_prints_the_drift_and_writes_nothing(
    cli_env: dict[str, str], kc_admin: KeycloakTestAdmin, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    user_id = await kc_admin.create_user()
    users = mongo_client[cli_env["MONGODB_DATABASE"]]["users"]
    before = await users.count_documents({})
    result = await run_cli(cli_env, "reconcile", "--dry-run", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True
    assert user_id in [item["external_id"] for item in summary["drift"]["created"]]
    assert await users.count_documents({}) == before

    table = await run_cli(cli_env, "reconcile", "--dry-run")
    assert table.code == 0 and "dry run" in table.stdout and user_id in table.stdout


@pytest.mark.stack
async def test_bad_credentials_exit_3(cli_env: dict[str, str]) -> None:
    result = await run_cli({**cli_env, "KEYCLOAK_CLIENT_SECRET": SECRET_MARKER}, "reconcile", "--once")
    assert result.code == 3
    assert "Keycloak refused" in result.last_error_line
    assert SECRET_MARKER not in result.stderr + result.stdout


@pytest.mark.stack
async def test_keycloak_unreachable_exit_4(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "KEYCLOAK_URL": f"http://127.0.0.1:{free_port()}", "KEYCLOAK_RETRY_ATTEMPTS": "1"}
    result = await run_cli(env, "reconcile", "--once", "--json")
    assert result.code == 4
    assert "Keycloak unreachable" in result.last_error_line
    assert json.loads(result.stdout)["outcome"] == "failed"


@pytest.mark.stack
async def test_store_unreachable_exit_5(cli_env: dict[str, str]) -> None:
    env = {
        **cli_env,
        "MONGODB_URI": f"mongodb://reconciler:{SECRET_MARKER}@127.0.0.1:{free_port()}/",
        "MONGODB_TIMEOUT_S": "0.5",
    }
    result = await run_cli(env, "reconcile", "--once")
    assert result.code == 5
    assert "store unreachable" in result.last_error_line
    assert SECRET_MARKER not in result.stderr + result.stdout


@pytest.mark.stack
async def test_guard_tripped_exit_6(
    cli_env: dict[str, str], mongo_client: AsyncMongoClient[dict[str, Any]]
) -> None:
    """A store holding active users Keycloak does not have: the guard refuses, and says so."""
    database = f"t_cli_guard_{uuid.uuid4().hex[:8]}"
    users = mongo_client[database]["users"]
    ghosts = [str(uuid.uuid4()) for _ in range(6)]
    await users.insert_many(
        [{"_id": str(uuid.uuid4()), "external_id": ghost, "is_active": True} for ghost in ghosts]
    )
    try:
        result = await run_cli({**cli_env, "MONGODB_DATABASE": database}, "reconcile", "--once")
        assert result.code == 6
        assert "mass-deactivation guard tripped" in result.last_error_line
        assert await users.count_documents({"external_id": {"$in": ghosts}, "is_active": True}) == 6
        assert "guard_tripped" in result.stdout  # the summary table says so too
    finally:
        await mongo_client.drop_database(database)
