"""What every subcommand shares: settings, logging, the clients, and the one mapping to exit statuses."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_settings import SettingsError

from reconciler.base.config import Settings
from reconciler.base.errors import ConfigurationError, ExitStatus
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.attributes import AttributeMap
from reconciler.domain.outcomes import Outcome
from reconciler.fullsync.reconcile import RunSummary
from reconciler.observability.logs import configure_logging

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class Subcommand:
    """One `reconciler <name>`: its help, its arguments and the handler that returns the exit status."""

    name: str
    help: str
    description: str
    handler: Handler
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


class CliExit(Exception):
    """Stop the command with `code`, printing `reason` as one line on stderr (when given)."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        super().__init__(reason or "")
        self.code = code
        self.reason = reason


def describe_settings_error(error: ValidationError) -> str:
    """One line naming the missing and invalid environment variables, never their values."""
    missing: list[str] = []
    invalid: list[str] = []
    for item in error.errors(include_input=False, include_url=False):
        name = str(item["loc"][0]).upper() if item["loc"] else None
        if item["type"] == "missing" and name:
            missing.append(name)
        elif name:
            invalid.append(f"{name} ({item['msg']})")
        else:
            invalid.append(str(item["msg"]))
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if invalid:
        parts.append("invalid " + "; ".join(invalid))
    return "; ".join(parts)


def load_settings() -> Settings:
    """Settings from the environment, with logging set up; a bad setting raises `ConfigurationError`."""
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as error:
        raise ConfigurationError(describe_settings_error(error)) from None
    except SettingsError as error:
        raise ConfigurationError(type(error).__name__) from None
    try:  # parsed by the domain (base cannot see the document's fields); every client parses it the same way
        AttributeMap.parse(settings.mirrored_attributes)
    except ValueError as error:
        raise ConfigurationError(f"invalid MIRRORED_ATTRIBUTES ({error})") from None
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=[
            settings.keycloak_client_secret.get_secret_value(),
            settings.mongodb_uri.get_secret_value(),
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
        ],
    )
    return settings


@contextlib.asynccontextmanager
async def open_clients(
    settings: Settings, *, writes: bool = True
) -> AsyncIterator[tuple[KeycloakAdminClient, UserStore]]:
    """The Keycloak client and the store of a one-shot command, both checked before anything runs:
    Keycloak's answer to the client first (a token, one authorised read of the users), then the store."""
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        await keycloak.check_access()
        await store.ping()
        if writes:
            await store.ensure_indexes()
        yield keycloak, store


def exit_for(summary: RunSummary) -> int:
    """The exit status of a finished full reconcile (raises to print the one-line reason)."""
    if summary.outcome is Outcome.SUCCESS:
        return ExitStatus.OK
    if summary.outcome is Outcome.GUARD_TRIPPED:
        raise CliExit(ExitStatus.GUARD, summary.error or "mass-deactivation guard tripped")
    if summary.outcome is Outcome.CANCELLED:
        raise CliExit(ExitStatus.INTERRUPTED, "interrupted")
    if summary.failure is not None:
        raise summary.failure
    raise CliExit(ExitStatus.FAILED, summary.error or "run failed")
