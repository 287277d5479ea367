"""Retry and backoff policy: one home, read from the settings, used by every path that waits and tries again.

- `Backoff.requests(settings)`: between attempts of one Keycloak request or one dead-letter publish.
- `Backoff.users(settings)`: before a user whose apply failed is tried again (the work queue, per key).
- `Backoff.reconciles(settings)`: before a failed full reconcile is tried again (the scheduler).

Delays grow exponentially from `initial_s` to `max_s`, with jitter so that replicas do not retry in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity.wait import wait_base, wait_exponential_jitter

from reconciler.base.config import Settings


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
    def reconciles(cls, settings: Settings) -> Backoff:
        return cls(settings.reconcile_retry_backoff_s, settings.reconcile_interval_s)
