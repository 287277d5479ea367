"""The error model: every failure is classified once, where it happens, into one of three kinds.

In the spirit of kopf's `TemporaryError` / `PermanentError`: the Keycloak client, the store and the Kafka
clients translate their drivers' exceptions at their boundary (httpx, PyMongo, aiokafka never escape them),
and everything above decides by kind alone (docs/ARCHITECTURE.md, "The error model"):

- `TemporaryError`: an outage (connection refused, timeout, 5xx, 429). Retry with backoff; commit nothing.
- `PermanentError`: wrong until someone acts (credentials, permissions, realm, configuration). Exit at start;
  while running, not ready (503) with the reason, retried slowly so the process recovers when it is fixed.
- `UserDataError`: about one user's data (Keycloak sent a representation that cannot be read). Give up on
  that user after a few attempts, count it, leave it to the next full reconcile.

`exit_status` is the one mapping from an error to the command line's exit status.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import ClassVar


class Component(StrEnum):
    """What failed: the readiness check, gauge and exit status are per component."""

    KEYCLOAK = "keycloak"
    STORE = "store"
    KAFKA = "kafka"
    CONFIG = "config"
    INTERNAL = "internal"


class ReconcilerError(Exception):
    """Base of the project's errors; `component` says what failed."""

    component: ClassVar[Component] = Component.INTERNAL


class TemporaryError(ReconcilerError):
    """An outage: retrying with backoff is expected to succeed eventually."""


class PermanentError(ReconcilerError):
    """Wrong until someone acts (credentials, permissions, realm, configuration): retrying does not help."""


class UserDataError(ReconcilerError):
    """About one user's data only: the rest of the realm is unaffected."""


# --- Keycloak ---------------------------------------------------------------------------------------------


class KeycloakError(ReconcilerError):
    """Base of every error the Keycloak client raises (except `InvalidUserId`)."""

    component = Component.KEYCLOAK


class KeycloakUnavailable(KeycloakError, TemporaryError):
    """429, 5xx, timeout or connection failure, still failing after the client's own attempts."""


class KeycloakConfigError(KeycloakError, PermanentError):
    """Keycloak refused the client: credentials, permissions (view-users), realm or URL are wrong."""


class KeycloakProtocolError(KeycloakError, UserDataError):
    """Keycloak answered something the client does not understand (a user's representation, a listing)."""


class InvalidUserId(ValueError):
    """The id is not a Keycloak user id; it never reaches a URL."""


# --- store ------------------------------------------------------------------------------------------------


class StoreError(ReconcilerError):
    """Base of every error the store raises."""

    component = Component.STORE


class StoreUnavailable(StoreError, TemporaryError):
    """MongoDB unreachable, timing out, failing over, or a write that failed and may be retried."""


class StoreRefused(StoreError, PermanentError):
    """MongoDB refused the credentials or the operation (authentication, authorisation)."""


# --- Kafka -----------------------------------------------------------------------------------------------


class KafkaFailure(ReconcilerError):
    """Base of every error the Kafka clients (consumer, dead letters, replay) raise."""

    component = Component.KAFKA


class KafkaUnavailable(KafkaFailure, TemporaryError):
    """No broker answers (connection refused, timeouts, no leader), or a publish failed after its retries."""


class KafkaRefused(KafkaFailure, PermanentError):
    """A broker refused the client: SASL credentials, an untrusted certificate, or missing ACLs."""


# --- configuration ----------------------------------------------------------------------------------------


class ConfigurationError(PermanentError):
    """A setting or command-line argument is invalid; the message names it, never its value."""

    component = Component.CONFIG


# --- exit statuses ----------------------------------------------------------------------------------------


class ExitStatus(IntEnum):
    """The command line's exit statuses: the same meaning on every subcommand."""

    OK = 0
    FAILED = 1  # unexpected error, or an answer from Keycloak the client does not understand
    CONFIG = 2  # bad or missing configuration (environment variables) or command-line usage
    REFUSED = 3  # Keycloak or Kafka refused the client's credentials or permissions (or realm/URL wrong)
    KEYCLOAK_REFUSED = 3  # the same status, by its older name
    KEYCLOAK_UNAVAILABLE = 4  # Keycloak unreachable, timing out or failing (after retries)
    STORE = 5  # MongoDB unreachable or refusing
    GUARD = 6  # the mass-deactivation guard refused the run's deactivations
    DRIFT = 7  # verify: the store differs from Keycloak
    KAFKA_UNAVAILABLE = 8  # no Kafka broker answered (after retries)
    ERASE_REFUSED = 9  # erase: Keycloak still has the user (enabled, or disabled without --force)
    INTERRUPTED = 130


EXIT_STATUS_HELP = """exit status:
  0  success
  1  unexpected error (or an answer from Keycloak the client does not understand)
  2  bad or missing configuration (the environment variables named on stderr) or usage
  3  Keycloak or Kafka refused the reconciler: Keycloak's client id/secret, view-users role, realm or URL;
     Kafka's SASL user/password, the broker's certificate (KAFKA_SSL_CA_FILE) or the ACLs
  4  Keycloak unreachable or failing, after retries
  5  the store (MongoDB) is unreachable or refused the operation
  6  the mass-deactivation guard tripped: nothing was deactivated
  7  verify: the store differs from Keycloak
  8  no Kafka broker answered (KAFKA_BOOTSTRAP_SERVERS), after retries
  9  erase: Keycloak still has the user (enabled; or disabled, without --force), nothing was erased
130  interrupted"""


def exit_status(error: BaseException) -> ExitStatus:
    """The exit status a command ends with when `error` stops it."""
    if isinstance(error, ConfigurationError):
        return ExitStatus.CONFIG
    if isinstance(error, KeycloakConfigError | KafkaRefused):
        return ExitStatus.REFUSED
    if isinstance(error, KeycloakUnavailable):
        return ExitStatus.KEYCLOAK_UNAVAILABLE
    if isinstance(error, StoreError):
        return ExitStatus.STORE
    if isinstance(error, KafkaUnavailable):
        return ExitStatus.KAFKA_UNAVAILABLE
    return ExitStatus.FAILED


def headline(error: BaseException) -> str:
    """What the exit status says, as the start of the one-line error."""
    if isinstance(error, KafkaRefused):
        return "Kafka refused the reconciler"
    return {
        ExitStatus.CONFIG: "configuration error",
        ExitStatus.REFUSED: "Keycloak refused the reconciler",
        ExitStatus.KEYCLOAK_UNAVAILABLE: "Keycloak unreachable",
        ExitStatus.STORE: "store unreachable or failing",
        ExitStatus.KAFKA_UNAVAILABLE: "Kafka unreachable",
    }.get(exit_status(error), "unexpected error" if not isinstance(error, KeycloakError) else "Keycloak")


def kind(error: BaseException) -> str:
    """`temporary`, `permanent`, `user_data` or `internal`: the word logs and run records carry."""
    if isinstance(error, TemporaryError):
        return "temporary"
    if isinstance(error, PermanentError):
        return "permanent"
    if isinstance(error, UserDataError):
        return "user_data"
    return "internal"
