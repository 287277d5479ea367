"""Where the tests find the real servers: the environment, the local stack's `.stack/env`, or Docker."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK_ENV_FILE = ROOT / ".stack" / "env"
REALM_FILE = ROOT / "keycloak-spi-config" / "realm" / "app-realm.json"
REQUIRED = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KEYCLOAK_URL",
    "KEYCLOAK_REALM",
    "KEYCLOAK_CLIENT_ID",
    "KEYCLOAK_CLIENT_SECRET",
    "KEYCLOAK_ADMIN_USER",
    "KEYCLOAK_ADMIN_PASSWORD",
    "MONGODB_URI",
)
HOW_TO_START = (
    "The integration tests need the real stack (Kafka, Keycloak with the Kafka listener, a MongoDB-wire store). "
    "Start it with `make stack-up` and load its settings with `set -a; . .stack/env; set +a` "
    "(`make test` does both), or run on a machine with a Docker engine so that testcontainers can start it."
)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def docker_available() -> bool:
    """A Docker API answers (DOCKER_HOST, else the default socket): Docker's, or Podman's `system service`."""
    import docker  # testcontainers' client; imported here so that the local-stack path never needs it

    try:
        client = docker.from_env(timeout=10)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


def discover_stack_env() -> dict[str, str] | None:
    """The endpoints of a running stack, or None when there is none (the caller may then try Docker).

    TEST_STACK=containers ignores any local stack, so the fixtures start containers (`make test-containers`).
    """
    if os.environ.get("TEST_STACK") == "containers":
        return None
    if all(os.environ.get(key) for key in REQUIRED):
        return {key: value for key, value in os.environ.items() if key.isupper()}
    if STACK_ENV_FILE.exists():
        values = read_env_file(STACK_ENV_FILE)
        if all(values.get(key) for key in REQUIRED):
            return values
    return None
