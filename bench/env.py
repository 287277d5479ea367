"""Where the benchmarks find the stack, and the settings of each measured job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.base.config import Settings
from tests.support.settings import make_settings as stack_settings
from tests.support.stack import HOW_TO_START, discover_stack_env

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
LOGS_DIR = RESULTS_DIR / "logs"
PROFILES_DIR = RESULTS_DIR / "profiles"


def stack_env() -> dict[str, str]:
    """The stack's settings: this process's environment, else `.stack/env` (written by `make stack-up`)."""
    found = discover_stack_env()
    if found is None:
        raise SystemExit(f"the local stack is not configured: {HOW_TO_START}")
    return found


def realm_name(size: int) -> str:
    """The dedicated realm of one size: bench-10k, bench-50k, bench-1500 ..."""
    return f"bench-{size // 1000}k" if size % 1000 == 0 else f"bench-{size}"


def database_name(size: int, purpose: str) -> str:
    """A dedicated database per size and purpose (ours, ref, events, replay)."""
    return f"{realm_name(size).replace('-', '_')}_{purpose}"


def make_settings(env: dict[str, str], realm: str, database: str, **overrides: Any) -> Settings:
    """Reconciler settings for a benchmark job: defaults except the endpoints, the realm and the database."""
    values: dict[str, Any] = {
        "http_enabled": False,
        "log_level": "WARNING",
        "sweep_enabled": False,
        # The product's default, not the tests' (tests/support/settings.py switches the listing road off).
        "event_burst_listing": Settings.model_fields["event_burst_listing"].default,
        **overrides,
    }
    return stack_settings(env, keycloak_realm=realm, mongodb_database=database, **values)
