"""Connections as production has them: Kafka SASL_SSL (SCRAM-SHA-512) and Keycloak over HTTPS with a private CA.

The stack under test is used when it is a secure one (STACK_SECURE=1 in its settings); otherwise this module
starts its own secure stack (stack.py with STACK_SECURE=1, Keycloak on H2 for a quick start; state in
`.stack-secure/`, ports from SECURE_STACK_KAFKA_PORT, SECURE_STACK_KAFKA_CONTROLLER_PORT,
SECURE_STACK_KEYCLOAK_PORT, SECURE_STACK_KEYCLOAK_MANAGEMENT_PORT and SECURE_STACK_MONGO_PORT, state folder
SECURE_STACK_STATE_DIR) and stops, at the end, only the services it started. Its brokers have no PLAINTEXT
listener, so every record the reconciler reads was published by Keycloak's listener over SASL_SSL.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from reconciler.base.config import Settings
from tests.conftest import make_settings, override
from tests.support import kafka_clients
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.process import reconciler_command, run_reconciler, settings_env
from tests.support.service import running_service, until_stored
from tests.support.stack import REALM_FILE, ROOT, discover_stack_env
from tests.support.stack_control import StackControl

# The first test also waits for the module's own secure stack to start (minutes on a busy machine).
pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

_PORTS = {
    "STACK_KAFKA_PORT": ("SECURE_STACK_KAFKA_PORT", 19192),
    "STACK_KAFKA_CONTROLLER_PORT": ("SECURE_STACK_KAFKA_CONTROLLER_PORT", 19193),
    "STACK_KEYCLOAK_PORT": ("SECURE_STACK_KEYCLOAK_PORT", 18443),
    "STACK_KEYCLOAK_MANAGEMENT_PORT": ("SECURE_STACK_KEYCLOAK_MANAGEMENT_PORT", 19443),
    "STACK_MONGO_PORT": ("SECURE_STACK_MONGO_PORT", 27019),
}
_SERVICES = ("secantusdb", "kafka", "keycloak")  # the H2 shape: no PostgreSQL
EXIT_CONFIG, EXIT_KEYCLOAK_REFUSED = 2, 3


@pytest.fixture(scope="module")
def secure_env() -> Iterator[dict[str, str]]:
    """The settings of a secure stack: the one under test when it is secure, else one started here."""
    under_test = discover_stack_env()
    if under_test is not None and under_test.get("STACK_SECURE") == "1":
        kafka_clients.register(under_test)
        yield under_test
        return
    state_dir = Path(os.environ.get("SECURE_STACK_STATE_DIR", ROOT / ".stack-secure")).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ".gitignore").write_text("*\n")
    ports = {name: int(os.environ.get(var, default)) for name, (var, default) in _PORTS.items()}
    control = StackControl(state_dir, ports, extra_env={"STACK_SECURE": "1", "STACK_KEYCLOAK_DB": "h2"})
    running_before = control.running()
    started_at = time.monotonic()
    control.run("up")
    print(f"secure stack up in {time.monotonic() - started_at:.0f}s")
    env = control.read_env()
    kafka_clients.register(env)
    try:
        yield env
    finally:
        if not running_before:
            control.run("down")
        else:
            for service in reversed(_SERVICES):
                if service not in running_before:
                    control.run("stop", service)


@pytest.fixture(scope="module")
async def secure_realm(secure_env: dict[str, str]) -> AsyncIterator[str]:
    name = f"t-secure-{uuid.uuid4().hex[:8]}"
    admin = KeycloakTestAdmin.from_env(
        secure_env, name, timeout_s=180
    )  # a realm import is slow on a busy machine
    await admin.create_realm(json.loads(REALM_FILE.read_text()), name)
    yield name
    await admin.delete_realm(name)
    await admin.aclose()


@pytest.fixture(scope="module")
def secure_settings(secure_env: dict[str, str], secure_realm: str) -> Settings:
    settings = make_settings(
        secure_env,
        keycloak_realm=secure_realm,
        mongodb_database=f"t_secure_{uuid.uuid4().hex[:8]}",
        kafka_group_id=f"test-{secure_realm}",
        reconcile_enabled=False,
        http_enabled=False,
    )
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.keycloak_base_url.startswith("https://") and settings.keycloak_ca_file is not None
    return settings


@pytest.fixture(scope="module")
async def secure_users(secure_settings: Settings) -> AsyncIterator[Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        secure_settings.mongodb_uri.get_secret_value(), tz_aware=True
    )
    yield client[secure_settings.mongodb_database][secure_settings.mongodb_users_collection]
    await client.drop_database(secure_settings.mongodb_database)
    await client.close()


@pytest.fixture
def wrong_ca(tmp_path: Path) -> Path:
    """A CA that signed nothing the stack serves."""
    key, ca = tmp_path / "other-ca.key", tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(ca),
         "-days", "2", "-subj", "/CN=some other CA"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return ca


def _secrets(settings: Settings) -> list[str]:
    password = settings.kafka_sasl_password
    return [
        settings.keycloak_client_secret.get_secret_value(),
        *([password.get_secret_value()] if password else []),
    ]


async def test_an_admin_change_reaches_the_store_over_sasl_ssl_and_https(
    secure_settings: Settings, secure_env: dict[str, str], secure_realm: str, secure_users: Any
) -> None:
    """Keycloak's listener publishes over SASL_SSL, the consumer reads over SASL_SSL, the lookup is HTTPS
    (the event-store sweep and the full reconcile are off: only the Kafka path can write the user)."""
    kc_admin = KeycloakTestAdmin.from_env(secure_env, secure_realm, timeout_s=60)
    try:
        async with running_service(secure_settings):
            user_id = await kc_admin.create_user(first_name="Tls", last_name="Path")
            doc = await until_stored(
                secure_users, user_id, "created over SASL_SSL", timeout_s=60, is_active=True
            )
            assert doc["synced_by"] == "event" and doc["display_name"] == "Tls Path"
            await kc_admin.update_user(user_id, lastName="Changed")
            await until_stored(
                secure_users, user_id, "updated over SASL_SSL", timeout_s=60, last_name="Changed"
            )
    finally:
        await kc_admin.aclose()


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("reconciler: error:")]


def _assert_clean(result: subprocess.CompletedProcess[str], settings: Settings) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    for secret in _secrets(settings):
        assert secret not in output


async def test_verify_over_https_trusts_the_configured_ca_and_names_it_when_wrong(
    secure_settings: Settings, wrong_ca: Path
) -> None:
    right = run_reconciler(secure_settings, "verify", "--json", timeout_s=120)
    assert right.returncode == 0, right.stderr[-3000:]
    assert json.loads(right.stdout)["in_sync"] is True
    _assert_clean(right, secure_settings)

    wrong = run_reconciler(override(secure_settings, keycloak_ca_file=wrong_ca), "verify", timeout_s=120)
    assert wrong.returncode == EXIT_KEYCLOAK_REFUSED, wrong.stderr[-3000:]
    (line,) = _error_lines(wrong)
    assert f"not trusted by the CA in KEYCLOAK_CA_FILE={wrong_ca}" in line, line
    assert "unable to get local issuer certificate" in line, line
    _assert_clean(wrong, secure_settings)


@pytest.mark.parametrize("setting", ["KEYCLOAK_CA_FILE", "KAFKA_SSL_CA_FILE"])
@pytest.mark.parametrize("problem", ["missing", "not a certificate"])
def test_a_ca_file_that_is_missing_or_not_pem_is_a_configuration_error(
    secure_settings: Settings, tmp_path: Path, setting: str, problem: str
) -> None:
    """Refused when the settings are read, before anything connects (exit 2, the setting named)."""
    path = tmp_path / "ca.pem"
    if problem == "not a certificate":
        path.write_text("this is not a PEM certificate\n")
    env = {**settings_env(secure_settings), setting: str(path)}
    result = subprocess.run(
        reconciler_command("verify"), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == EXIT_CONFIG, result.stderr[-3000:]
    (line,) = _error_lines(result)
    reason = "is not a file" if problem == "missing" else "holds no PEM CA certificate"
    assert f"invalid {setting} (" in line and reason in line, line
    _assert_clean(result, secure_settings)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL"},
            "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM",
        ),
        (
            {"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "reconciler"},
            "needs KAFKA_SASL_USERNAME",
        ),
    ],
)
def test_incomplete_sasl_settings_are_refused(values: dict[str, str], message: str) -> None:
    """No stack needed: refused when the settings are read."""
    env = {"KEYCLOAK_URL": "https://sso.example.test", "KEYCLOAK_REALM": "app", "KEYCLOAK_CLIENT_ID": "c",
           "KEYCLOAK_CLIENT_SECRET": "s", "MONGODB_URI": "mongodb://127.0.0.1:1", "KAFKA_BOOTSTRAP_SERVERS": "x:1"}  # fmt: skip
    with pytest.raises(ValidationError, match=message):
        make_settings(env, **values)


# --- Kafka refusals: exit 3 at start, one line naming what to check, no secret ------------------------------


def _kafka_refused(result: subprocess.CompletedProcess[str], settings: Settings, *, names: str) -> None:
    assert result.returncode == EXIT_KEYCLOAK_REFUSED, result.stderr[-3000:]
    (line,) = _error_lines(result)
    assert line.startswith("reconciler: error: Kafka refused the reconciler: "), line
    assert names in line, line
    output = result.stdout + result.stderr
    assert "Unclosed" not in output and "unexpected error" not in output, output[-3000:]
    _assert_clean(result, settings)


@pytest.mark.parametrize("command", [("replay", "--no-reconcile"), ("run",)])
def test_a_wrong_sasl_password_is_a_refusal(secure_settings: Settings, command: tuple[str, ...]) -> None:
    wrong = override(secure_settings, kafka_sasl_password="wrong-" + uuid.uuid4().hex)
    result = run_reconciler(wrong, *command, timeout_s=180)
    _kafka_refused(result, wrong, names="check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")


@pytest.mark.parametrize("command", [("replay", "--no-reconcile"), ("run",)])
def test_an_untrusted_broker_certificate_is_a_refusal(
    secure_settings: Settings, wrong_ca: Path, command: tuple[str, ...]
) -> None:
    wrong = override(secure_settings, kafka_ssl_ca_file=wrong_ca)
    result = run_reconciler(wrong, *command, timeout_s=180)
    _kafka_refused(result, wrong, names=f"not trusted by the CA in KAFKA_SSL_CA_FILE={wrong_ca}")


@pytest.mark.parametrize("args", [("verify",), ("reconcile", "--once")])
def test_commands_without_kafka_ignore_a_wrong_sasl_password(
    secure_settings: Settings, args: tuple[str, ...]
) -> None:
    wrong = override(secure_settings, kafka_sasl_password="wrong-" + uuid.uuid4().hex)
    result = run_reconciler(wrong, *args, timeout_s=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not _error_lines(result)
    _assert_clean(result, wrong)
