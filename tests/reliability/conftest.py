"""The reliability suite's own stack, started beside the main one, and the fixtures every scenario shares.

The scenarios stop and restart Keycloak, the store and Kafka, so they never run against the main stack
(`.stack/`, ports 9092/8080/27017, used by other test runs): a session fixture starts a second stack with
scripts/stack/stack.py (state in `.stack-reliability/`, ports 19092/19093, 18080/19000, 27018, 15432; override
with RELIABILITY_STATE_DIR and RELIABILITY_KAFKA_PORT, RELIABILITY_KAFKA_CONTROLLER_PORT,
RELIABILITY_KEYCLOAK_PORT, RELIABILITY_KEYCLOAK_MANAGEMENT_PORT, RELIABILITY_MONGO_PORT,
RELIABILITY_POSTGRES_PORT), its store with
SCRAM authentication (a random password, so the secrets scenario has a store password to look for), and
stops at the end only the services it started (RELIABILITY_KEEP_STACK=1 leaves them running).

`stack_env` and `mongo_client` are overridden here, so the shared fixtures of tests/conftest.py (`realm`,
`settings`, `kc_admin`, `users_collection`) point at this stack: each scenario module gets its own realm and
database on it.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import OperationFailure

from reconciler.base.config import Settings
from tests.conftest import override
from tests.reliability.harness import SecretsRegistry
from tests.reliability.scenario import ScenarioEnv
from tests.support import kafka_clients
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.stack import ROOT
from tests.support.stack_control import SERVICES, StackControl

STORE_USER = "reconciler"
_PORTS = {
    "STACK_KAFKA_PORT": ("RELIABILITY_KAFKA_PORT", 19092),
    "STACK_KAFKA_CONTROLLER_PORT": ("RELIABILITY_KAFKA_CONTROLLER_PORT", 19093),
    "STACK_KEYCLOAK_PORT": ("RELIABILITY_KEYCLOAK_PORT", 18080),
    "STACK_KEYCLOAK_MANAGEMENT_PORT": ("RELIABILITY_KEYCLOAK_MANAGEMENT_PORT", 19000),
    "STACK_MONGO_PORT": ("RELIABILITY_MONGO_PORT", 27018),
    "STACK_POSTGRES_PORT": ("RELIABILITY_POSTGRES_PORT", 15432),
}
FIGURES: dict[str, dict[str, Any]] = {}
# The stack's shape: RELIABILITY_KEYCLOAK_NODES=2 and RELIABILITY_KAFKA_BROKERS=3 make it production-shaped
# (scenarios 9 and up need that; the others run on either shape).
_SHAPE = {
    "STACK_KEYCLOAK_NODES": "RELIABILITY_KEYCLOAK_NODES",
    "STACK_KAFKA_BROKERS": "RELIABILITY_KAFKA_BROKERS",
    "STACK_KEYCLOAK_DB": "RELIABILITY_KEYCLOAK_DB",
}


def _shape() -> dict[str, str]:
    shape = {name: os.environ[var] for name, var in _SHAPE.items() if os.environ.get(var)}
    # Connections as production has them (Kafka SASL_SSL with SCRAM, Keycloak over HTTPS with a test CA), unless
    # RELIABILITY_SECURE=0; the two-node Keycloak shape has a plain-HTTP front, so it stays plaintext.
    secure = (
        os.environ.get("RELIABILITY_SECURE", "1") != "0" and shape.get("STACK_KEYCLOAK_NODES", "1") == "1"
    )
    shape["STACK_SECURE"] = "1" if secure else "0"
    return shape


class ReliabilityStack:
    """The second stack: its settings (`env`), and `stop(service)` / `start(service)` for fault injection."""

    def __init__(self, control: StackControl, env: dict[str, str], started: set[str]) -> None:
        self.control = control
        self.env = env
        self.started = started

    async def stop(self, service: str) -> None:
        await self.control.stop(service)

    async def start(self, service: str) -> None:
        await self.control.start(service)


def _store_uri(base_uri: str, password: str) -> str:
    scheme, rest = base_uri.split("://", 1)
    separator = "&" if "?" in rest else "?"
    return f"{scheme}://{STORE_USER}:{quote(password, safe='')}@{rest}{separator}authSource=admin"


def _store_state(uri: str, password: str) -> str:
    """'ready' when SCRAM is enforced and our user works; else what needs doing."""
    try:
        with MongoClient[dict[str, Any]](_store_uri(uri, password), serverSelectionTimeoutMS=5000) as client:
            client["probe"].command("count", "probe")
    except OperationFailure:
        return "provision"
    with MongoClient[dict[str, Any]](uri, serverSelectionTimeoutMS=5000) as anonymous:
        try:
            anonymous["probe"].command("count", "probe")
        except OperationFailure:
            return "ready"
    return "restart_with_auth"


def _provision_store(control: StackControl, uri: str, password: str) -> None:
    """Create (or re-password) the store user on a server without --auth, then restart it with --auth."""
    control.run("stop", "secantusdb")
    control.run("start", "secantusdb", STACK_MONGO_AUTH="false")
    with MongoClient[dict[str, Any]](uri, serverSelectionTimeoutMS=10_000) as client:
        roles = [{"role": "root", "db": "admin"}]
        try:
            client.admin.command("createUser", STORE_USER, pwd=password, roles=roles)
        except OperationFailure:
            client.admin.command("updateUser", STORE_USER, pwd=password, roles=roles)
    control.run("stop", "secantusdb")
    control.run("start", "secantusdb")


@pytest.fixture(scope="session")
def reliability_stack() -> Iterator[ReliabilityStack]:
    state_dir = Path(os.environ.get("RELIABILITY_STATE_DIR", ROOT / ".stack-reliability")).resolve()
    ports = {name: int(os.environ.get(var, default)) for name, (var, default) in _PORTS.items()}
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ".gitignore").write_text("*\n")  # runtime state only, never committed
    control = StackControl(state_dir, ports, extra_env={"STACK_MONGO_AUTH": "true", **_shape()})
    running_before = control.running()
    started_at = time.monotonic()
    control.run("up")
    started = set(SERVICES) - running_before
    password_file = state_dir / "store-password"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(24))
        password_file.chmod(0o600)
    password = password_file.read_text().strip()
    env = control.read_env()
    base_uri = env["MONGODB_URI"]
    state = _store_state(base_uri, password)
    if state != "ready":
        _provision_store(control, base_uri, password)
        started.add("secantusdb")
        assert _store_state(base_uri, password) == "ready", "the store does not enforce SCRAM authentication"
    env["MONGODB_URI"] = _store_uri(base_uri, password)
    env["MONGODB_PASSWORD"] = password
    kafka_clients.register(env)
    FIGURES["stack"] = {"start_s": round(time.monotonic() - started_at, 1), "started": sorted(started)}
    stack = ReliabilityStack(control, env, started)
    try:
        yield stack
    finally:
        if not os.environ.get("RELIABILITY_KEEP_STACK"):
            if started == set(SERVICES):
                control.run("down")
            else:
                for service in reversed(SERVICES):
                    if service in started:
                        control.run("stop", service)


@pytest.fixture(scope="session")
def stack_env(reliability_stack: ReliabilityStack) -> dict[str, str]:
    """Overrides tests/conftest.py: the shared fixtures use the reliability stack."""
    return reliability_stack.env


@pytest.fixture(scope="session")
async def mongo_client(stack_env: dict[str, str]) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    """Overrides tests/conftest.py (session-scoped there, so it must be overridden, not shared)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack_env["MONGODB_URI"], tz_aware=True)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def keycloak_proxy(stack_env: dict[str, str]) -> AsyncIterator[RecordingProxy]:
    """The recording proxy every reconciler of the suite talks to instead of Keycloak."""
    tls_dir = stack_env.get("STACK_TLS_DIR")
    proxy = RecordingProxy(
        stack_env["KEYCLOAK_URL"],
        ca_file=stack_env.get("KEYCLOAK_CA_FILE") or None,
        # On a secure stack the reconcilers reach the proxy over HTTPS too (the stack's certificate, its CA).
        server_tls=(f"{tls_dir}/server.pem", f"{tls_dir}/server.key") if tls_dir else None,
    )
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture(scope="session")
def secrets_registry(
    stack_env: dict[str, str], keycloak_proxy: RecordingProxy, tmp_path_factory: pytest.TempPathFactory
) -> SecretsRegistry:
    """Every log file and output of the suite, and the secrets that must never appear in them."""
    return SecretsRegistry(
        log_dir=tmp_path_factory.mktemp("reliability-logs"),
        fixed={
            "keycloak client secret": stack_env["KEYCLOAK_CLIENT_SECRET"],
            "store password": stack_env["MONGODB_PASSWORD"],
            **_kafka_secrets(stack_env),
        },
        tokens=keycloak_proxy.tokens,
    )


def _kafka_secrets(stack_env: dict[str, str]) -> dict[str, str]:
    """A secure stack's SASL passwords: ours, and the listener's and the broker's (stack.py's tls/)."""
    found = {}
    if stack_env.get("KAFKA_SASL_PASSWORD"):
        found["kafka sasl password"] = stack_env["KAFKA_SASL_PASSWORD"]
    users = Path(stack_env.get("STACK_TLS_DIR", "/nonexistent")) / "kafka-users.json"
    if users.exists():
        for user, password in json.loads(users.read_text()).items():
            if password not in found.values():  # the reconciler's own is listed once
                found[f"kafka sasl password of {user}"] = password
    return found


@pytest.fixture
def env(
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    keycloak_proxy: RecordingProxy,
    secrets_registry: SecretsRegistry,
    reliability_stack: ReliabilityStack,
    realm: str,
    figures: dict[str, Any],
) -> ScenarioEnv:
    return ScenarioEnv(
        # The scenarios' faults are placed against the offset listing (a run held mid-paging, offset paging
        # skipping users under churn): they pin that road. The creation-time windows under churn and faults:
        # tests/fullsync/test_listing_roads.py and tests/fullsync/test_windowed.py.
        override(settings, keycloak_listing=os.environ.get("RELIABILITY_LISTING", "offset")),
        kc_admin,
        users_collection,
        keycloak_proxy,
        secrets_registry,
        reliability_stack,
        realm,
        figures,
    )


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The scenario's figures, printed at the end of the session and kept in the state folder."""
    name = request.node.module.__name__.rsplit(".", 1)[-1]
    return FIGURES.setdefault(name, {})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    scenarios = {k: v for k, v in FIGURES.items() if v}
    if not scenarios:
        return
    terminalreporter.section("reliability figures")
    for name, values in scenarios.items():
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True, default=str)}")
    state_dir = Path(os.environ.get("RELIABILITY_STATE_DIR", ROOT / ".stack-reliability"))
    try:
        (state_dir / "figures.json").write_text(json.dumps(scenarios, indent=2, sort_keys=True, default=str))
    except OSError:
        pass
