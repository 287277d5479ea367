"""The failure policy: every retry, backoff and give-up of the process is decided here, from the settings.

docs/ARCHITECTURE.md ("Who retries what") has the table: what each named policy retries, how long it
waits, when it gives up and what happens then. Callers pick a policy and say only *what* is worth another
attempt (an error kind, or a result); how long to wait and when to give up live here.

Delays grow exponentially from `initial_s` to `max_s`, with jitter so that replicas do not retry in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, stop_after_delay, stop_never
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from reconciler.base.config import Settings

# A 404 after a create/update hint is Keycloak's transaction not yet committed: it is seconds at most, so a
# longer wait between re-reads would only delay the deletion it then is.
NOT_FOUND_BACKOFF_MAX_S: Final = 10.0
# A dead letter must be stored before its offset advances. Past this the consumer gives up, restarts its
# clients (nothing was committed, so the record comes back) and the failure shows on /readyz.
DEAD_LETTER_PUBLISH_DEADLINE_S: Final = 300.0

BeforeSleep = Callable[[RetryCallState], Any]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits about `initial_s * 2**(n-1)`, at most `max_s`."""

    initial_s: float
    max_s: float

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before attempt `attempt + 1` (attempt counts from 1), jittered down by up to a half."""
        base = min(self.max_s, self.initial_s * 2.0 ** min(max(attempt - 1, 0), 30))
        return base * (rng or random).uniform(0.5, 1.0)

    def tenacity_wait(self) -> wait_base:
        """The same policy for tenacity-driven retries."""
        return wait_exponential_jitter(multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s)

    @classmethod
    def requests(cls, settings: Settings) -> Backoff:
        return cls(settings.retry_request_backoff_s, settings.retry_request_backoff_max_s)

    @classmethod
    def users(cls, settings: Settings) -> Backoff:
        return cls(settings.retry_user_backoff_s, settings.retry_user_backoff_max_s)

    @classmethod
    def parts(cls, settings: Settings) -> Backoff:
        """A part of `run` waiting for its dependency: as quick to resume as a user's retry."""
        return cls.users(settings)

    @classmethod
    def reconciles(cls, settings: Settings) -> Backoff:
        return cls(settings.reconcile_retry_backoff_s, settings.reconcile_interval_s)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one kind of operation is tried again: the wait between attempts and when to give up."""

    name: str
    wait: wait_base
    stop: stop_base

    def retrying(self, retry: retry_base, *, before_sleep: BeforeSleep | None = None) -> AsyncRetrying:
        """A tenacity loop that retries what `retry` says and raises the last error when it gives up."""
        options: dict[str, Any] = {"before_sleep": before_sleep} if before_sleep is not None else {}
        return AsyncRetrying(stop=self.stop, wait=self.wait, retry=retry, reraise=True, **options)

    def waiting(self, wait: wait_base) -> RetryPolicy:
        """The same policy with another wait (e.g. one that honours a server's Retry-After first)."""
        return replace(self, wait=wait)

    @classmethod
    def keycloak_request(cls, settings: Settings) -> RetryPolicy:
        return cls(
            "keycloak_request",
            Backoff.requests(settings).tenacity_wait(),
            stop_after_attempt(settings.keycloak_retry_attempts),
        )

    @classmethod
    def store_batch(cls, settings: Settings) -> RetryPolicy:
        return cls(
            "store_batch",
            Backoff.requests(settings).tenacity_wait(),
            stop_after_attempt(settings.mongodb_retry_attempts),
        )

    @classmethod
    def not_found_reread(cls, settings: Settings) -> RetryPolicy:
        backoff = Backoff(settings.event_not_found_backoff_s, NOT_FOUND_BACKOFF_MAX_S)
        return cls(
            "not_found_reread",
            backoff.tenacity_wait(),
            stop_after_attempt(settings.event_not_found_retries + 1),
        )

    @classmethod
    def kafka_connect(cls, settings: Settings) -> RetryPolicy:
        return cls(
            "kafka_connect",
            Backoff.requests(settings).tenacity_wait(),
            stop_after_attempt(settings.kafka_retry_attempts),
        )

    @classmethod
    def dead_letter_publish(cls, settings: Settings) -> RetryPolicy:
        return cls(
            "dead_letter_publish",
            Backoff.requests(settings).tenacity_wait(),
            stop_after_delay(DEAD_LETTER_PUBLISH_DEADLINE_S),
        )

    @classmethod
    def organization_members(cls, settings: Settings) -> RetryPolicy:
        """Finding the members of a renamed or deleted organization (store, Keycloak) for an event: like a
        user's apply, tried until it succeeds (its record is not committed meanwhile)."""
        return cls("organization_members", Backoff.users(settings).tenacity_wait(), stop_never)
