"""scripts/stack/stack.py as a newcomer meets it: idempotent `up`, clear port errors, honest status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import ROOT, STACK_ENV_FILE

STACK = [sys.executable, str(ROOT / "scripts" / "stack" / "stack.py")]
# The default shape, whatever shape the stack under test was started with (`make test` exports its .stack/env).
DEFAULT_SHAPE: dict[str, str | None] = dict.fromkeys(
    ("STACK_KEYCLOAK_DB", "STACK_KEYCLOAK_NODES", "STACK_KAFKA_BROKERS"), None
)


def stack(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """stack.py with the environment plus `env`; a variable set to None there is removed."""
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([*STACK, *args], capture_output=True, text=True, timeout=300, env=merged)


def test_a_port_taken_by_another_program_is_named_in_the_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = stack("up", env={"STACK_STATE_DIR": str(tmp_path / "state"), "STACK_MONGO_PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already taken" in result.stderr
    assert not (tmp_path / "state" / "secantusdb.pid").exists()


def service_lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}


def test_status_of_a_stack_that_never_started_says_stopped(tmp_path: Path) -> None:
    result = stack("status", env={**DEFAULT_SHAPE, "STACK_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 1
    assert service_lines(result) == dict.fromkeys(["secantusdb", "postgres", "kafka", "keycloak"], "stopped")


def test_keycloak_on_postgres_is_the_default_and_h2_has_no_postgres(tmp_path: Path) -> None:
    state = {**DEFAULT_SHAPE, "STACK_STATE_DIR": str(tmp_path / "state")}
    default = stack("status", env=state)
    h2 = stack("status", env={**state, "STACK_KEYCLOAK_DB": "h2"})
    assert "postgres" in service_lines(default)
    assert list(service_lines(h2)) == ["secantusdb", "kafka", "keycloak"]


def test_an_unknown_keycloak_database_is_refused_by_name(tmp_path: Path) -> None:
    result = stack("up", env={"STACK_STATE_DIR": str(tmp_path / "state"), "STACK_KEYCLOAK_DB": "mysql"})
    assert result.returncode == 1
    assert "STACK_KEYCLOAK_DB must be h2 or postgres, not 'mysql'" in result.stderr
    assert not (tmp_path / "state" / "secantusdb.pid").exists()


def test_the_secure_shape_refuses_a_keycloak_cluster_by_name(tmp_path: Path) -> None:
    env = {"STACK_STATE_DIR": str(tmp_path / "state"), "STACK_SECURE": "1", "STACK_KEYCLOAK_NODES": "2"}
    result = stack("up", env=env)
    assert result.returncode == 1
    assert "STACK_SECURE=1 supports one Keycloak node" in result.stderr
    assert not (tmp_path / "state" / "secantusdb.pid").exists()


def test_the_cluster_shape_has_two_nodes_behind_a_front_on_the_keycloak_port(tmp_path: Path) -> None:
    env = {
        **DEFAULT_SHAPE,
        "STACK_STATE_DIR": str(tmp_path / "state"),
        "STACK_KEYCLOAK_NODES": "2",
        "STACK_KEYCLOAK_PORT": "47080",
        "STACK_KEYCLOAK_MANAGEMENT_PORT": "47000",
    }
    ports = {line.split()[0]: line.split()[3:] for line in stack("status", env=env).stdout.splitlines()}
    assert list(ports)[-3:] == ["keycloak-1", "keycloak-2", "keycloak-front"]
    assert ports["keycloak-front"] == ["47080:closed"]
    assert [p.split(":")[0] for p in ports["keycloak-2"]] == ["47082", "47002", "47801", "47901"]


def test_three_brokers_take_consecutive_port_pairs(tmp_path: Path) -> None:
    env = {
        **DEFAULT_SHAPE,
        "STACK_STATE_DIR": str(tmp_path / "state"),
        "STACK_KAFKA_BROKERS": "3",
        "STACK_KAFKA_PORT": "49092",
        "STACK_KAFKA_CONTROLLER_PORT": "49093",
    }
    ports = {line.split()[0]: line.split()[3:] for line in stack("status", env=env).stdout.splitlines()}
    kafka = {
        name: [p.split(":")[0] for p in value] for name, value in ports.items() if name.startswith("kafka")
    }
    assert kafka == {
        "kafka-1": ["49092", "49093"],
        "kafka-2": ["49094", "49095"],
        "kafka-3": ["49096", "49097"],
    }


def test_two_brokers_are_refused(tmp_path: Path) -> None:
    result = stack(
        "up", env={**DEFAULT_SHAPE, "STACK_STATE_DIR": str(tmp_path / "state"), "STACK_KAFKA_BROKERS": "2"}
    )
    assert result.returncode == 1
    assert "STACK_KAFKA_BROKERS must be 1 or 3, not 2" in result.stderr


def test_on_a_cluster_shape_kafka_and_keycloak_name_all_members(tmp_path: Path) -> None:
    env = {**DEFAULT_SHAPE, "STACK_STATE_DIR": str(tmp_path / "state"), "STACK_KAFKA_BROKERS": "3"}
    env["STACK_KEYCLOAK_NODES"] = "2"
    assert stack("stop", "kafka", env=env).returncode == 0
    assert stack("stop", "keycloak-2", env=env).returncode == 0
    unknown = stack("stop", "kafka-4", env=env)
    assert unknown.returncode == 1
    assert "choose one of secantusdb, postgres, kafka-1, kafka-2, kafka-3, keycloak-1" in unknown.stderr


def test_a_cluster_on_h2_is_refused(tmp_path: Path) -> None:
    env = {**DEFAULT_SHAPE, "STACK_STATE_DIR": str(tmp_path / "state"), "STACK_KEYCLOAK_DB": "h2"}
    env["STACK_KEYCLOAK_NODES"] = "2"
    result = stack("up", env=env)
    assert result.returncode == 1
    assert "needs STACK_KEYCLOAK_DB=postgres" in result.stderr


@pytest.mark.stack
def test_a_second_up_while_the_stack_runs_changes_nothing(stack_env: dict[str, str]) -> None:
    if not STACK_ENV_FILE.exists():
        pytest.skip("the stack in use was not started by stack.py (containers)")
    before = {p.name: p.read_text() for p in STACK_ENV_FILE.parent.glob("*.pid")}
    # The same shape as the running stack (`make stack-up` adds Kafka Connect and OpenLDAP).
    shape = {
        "STACK_CDC": "1" if "connect.pid" in before else "0",
        "STACK_LDAP": "1" if "ldap.pid" in before else "0",
    }
    result = stack("up", env=dict(shape))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("already running") == len(before)
    assert {p.name: p.read_text() for p in STACK_ENV_FILE.parent.glob("*.pid")} == before
    assert stack("status").returncode == 0


@pytest.mark.stack
def test_postgres_listens_on_loopback_as_an_unprivileged_user(stack_env: dict[str, str]) -> None:
    pid_file = STACK_ENV_FILE.parent / "postgres.pid"
    if stack_env.get("STACK_KEYCLOAK_DB") != "postgres" or not pid_file.exists():
        pytest.skip("the stack in use runs Keycloak on H2 (or was not started by stack.py)")
    pid = pid_file.read_text().split()[0]
    uid = next(
        line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
    )
    assert uid.split()[1] != "0", "initdb and postgres must not run as root"
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"listen_addresses=127.0.0.1" in command
