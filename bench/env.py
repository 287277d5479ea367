"""Where the benchmarks find the stack, and the settings of each measured job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reconciler.config import Settings

ROOT = Path(__file__).resolve().parents[1]
STACK_ENV_FILE = ROOT / ".stack" / "env"
REALM_FILE = ROOT / "keycloak-spi-config" / "realm" / "app-realm.json"
RESULTS_DIR = ROOT / "bench" / "results"
LOGS_DIR = RESULTS_DIR / "logs"
PROFILES_DIR = RESULTS_DIR / "profiles"

_REQUIRED = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KEYCLOAK_URL",
    "KEYCLOAK_CLIENT_ID",
    "KEYCLOAK_CLIENT_SECRET",
    "KEYCLOAK_ADMIN_USER",
    "KEYCLOAK_ADMIN_PASSWORD",
    "MONGODB_URI",
)


def stack_env() -> dict[str, str]:
    """The stack's settings: this process's environment, else `.stack/env` (written by `make stack-up`)."""
    if all(os.environ.get(key) for key in _REQUIRED):
        return {key: value for key, value in os.environ.items() if key.isupper()}
    values: dict[str, str] = {}
    if STACK_ENV_FILE.exists():
        for line in STACK_ENV_FILE.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    missing = [key for key in _REQUIRED if not values.get(key)]
    if missing:
        raise SystemExit(
            f"the local stack is not configured ({', '.join(missing)} missing): run `make stack-up`"
        )
    return values


def realm_name(size: int) -> str:
    """The dedicated realm of one size: bench-10k, bench-50k, bench-1500 ..."""
    return f"bench-{size // 1000}k" if size % 1000 == 0 else f"bench-{size}"


def database_name(size: int, purpose: str) -> str:
    """A dedicated database per size and purpose (ours, ref, events, replay)."""
    return f"{realm_name(size).replace('-', '_')}_{purpose}"


def make_settings(env: dict[str, str], realm: str, database: str, **overrides: Any) -> Settings:
    """Reconciler settings for a benchmark job: defaults except the endpoints, the realm and the database."""
    values: dict[str, Any] = {
        "keycloak_url": env["KEYCLOAK_URL"],
        "keycloak_realm": realm,
        "keycloak_client_id": env["KEYCLOAK_CLIENT_ID"],
        "keycloak_client_secret": env["KEYCLOAK_CLIENT_SECRET"],
        "mongodb_uri": env["MONGODB_URI"],
        "mongodb_database": database,
        "kafka_bootstrap_servers": env["KAFKA_BOOTSTRAP_SERVERS"],
        "http_enabled": False,
        "http_host": "127.0.0.1",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]
