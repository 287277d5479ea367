"""StackControl for the stack the tests run against (its `.stack/env`), for tests that stop and start one of
its services (PostgreSQL, Kafka Connect) and leave it running again.

stack.py finds a service's port in STACK_*_PORT variables only; the env file names URLs, so the ports are
read back from them (PostgreSQL's from its postmaster.pid). The shape (CDC on, database, node counts) is the
env file's too, so `stack.py start connect` starts the service the stack already has.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.postgres import postmaster_port
from tests.support.stack_control import StackControl

# .stack/env key -> the STACK_*_PORT variable of the service behind that URL.
_URL_PORTS = {
    "KEYCLOAK_URL": "STACK_KEYCLOAK_PORT",
    "KEYCLOAK_MANAGEMENT_URL": "STACK_KEYCLOAK_MANAGEMENT_PORT",
    "MONGODB_URI": "STACK_MONGO_PORT",
    "KAFKA_CONNECT_URL": "STACK_CONNECT_PORT",
}
_SHAPE = ("STACK_KEYCLOAK_DB", "STACK_KEYCLOAK_NODES", "STACK_KAFKA_BROKERS", "STACK_SECURE")


def _port(url: str) -> int | None:
    return urlsplit(url if "://" in url else f"//{url}").port


def stack_ports(env: dict[str, str]) -> dict[str, int]:
    """STACK_*_PORT of the stack described by `env`: this shell's, then what the env file's URLs say."""
    ports = {k: int(v) for k, v in os.environ.items() if k.startswith("STACK_") and k.endswith("_PORT")}
    for key, variable in _URL_PORTS.items():
        port = _port(env[key]) if env.get(key) else None
        if port is not None:
            ports[variable] = port
    kafka = _port(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0])
    if kafka is not None:
        ports["STACK_KAFKA_PORT"] = kafka
    ports["STACK_POSTGRES_PORT"] = postmaster_port(Path(env["STACK_STATE_DIR"]))
    return ports


def control_of(env: dict[str, str]) -> StackControl:
    """Start/stop single services of the stack described by `env` (CDC on: `connect` is part of it)."""
    shape = {name: env[name] for name in _SHAPE if env.get(name)}
    return StackControl(
        state_dir=Path(env["STACK_STATE_DIR"]),
        ports=stack_ports(env),
        extra_env={**shape, "STACK_CDC": "1" if env.get("KAFKA_CONNECT_URL") else "0"},
    )
