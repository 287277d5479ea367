"""The event path's use of the apply core: one user's coalesced hints -> one Keycloak read -> one apply.

Keycloak publishes some events before its transaction commits, so a read right after an event may not see
it yet: a 404 after a create/update hint is re-read a few times with short backoff before it counts as a
deletion, and an update hint gets one follow-up re-check after a settle delay (through the same queue, so
it is serialised and coalesced like any hint). Store or Keycloak outages are retried here until they pass:
the hint's Kafka record is committed only after this returns. Any other failure (Keycloak answered something
unreadable for this user) is tried EVENT_MAX_APPLY_ATTEMPTS times and then given up, logged and counted, so
that one poisoned user cannot hold its partition's commits forever; the next full reconcile retries it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pymongo.errors import PyMongoError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_exponential_jitter,
)

from reconciler import metrics
from reconciler.apply import Applier
from reconciler.config import Settings
from reconciler.events import HintReason, UserHint
from reconciler.group_commit import GroupCommit
from reconciler.keycloak import KeycloakConfigError, KeycloakUnavailable
from reconciler.logs import get_logger
from reconciler.models import Observation, SyncedBy
from reconciler.store import StoreError

log = get_logger(__name__)

RECHECK_OPERATION = "RECHECK"
# Failures that pass by themselves (or by an operator's fix): the record stays uncommitted meanwhile.
RETRYABLE = (KeycloakUnavailable, KeycloakConfigError, StoreError, PyMongoError)

Resubmit = Callable[[str, UserHint], Awaitable[None]]


class HintApplier:
    """`await hint_applier(user_id, hints)` applies Keycloak's current state of that user."""

    def __init__(self, applier: Applier, settings: Settings, synced_by: SyncedBy = SyncedBy.EVENT) -> None:
        self._applier = applier
        self._settings = settings
        # Users are read from Keycloak one by one, but written together: one bulk write per batch.
        self._group = GroupCommit(applier, synced_by, max_batch=settings.keycloak_page_size)
        self._resubmit: Resubmit | None = None
        self._rechecks: dict[str, asyncio.Task[None]] = {}
        self.healthy = True  # False while the last attempt failed (readiness reads it)

    @property
    def pending_rechecks(self) -> list[asyncio.Task[None]]:
        """Re-checks waiting for their settle delay."""
        return list(self._rechecks.values())

    def enable_rechecks(self, resubmit: Resubmit) -> None:
        """Follow-up re-checks go back through `resubmit` (the work queue) after the settle delay."""
        self._resubmit = resubmit

    async def __call__(self, user_id: str, hints: list[UserHint]) -> None:
        failures = 0  # attempts that failed with something other than an outage

        def give_up(state: RetryCallState) -> bool:
            nonlocal failures
            error = state.outcome.exception() if state.outcome else None
            if error is None or isinstance(error, RETRYABLE):
                return False
            failures += 1
            return failures >= self._settings.event_max_apply_attempts

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Exception),
                wait=wait_exponential_jitter(multiplier=0.5, max=30),
                stop=give_up,
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with attempt:
                    await self._apply_once(user_id, hints)
        except Exception as error:  # not an outage, and it kept failing: give up on this user for now
            metrics.HINTS_ABANDONED.inc()
            log.error(
                "giving up on a user after repeated failures; the next full reconcile retries it",
                user_id=user_id,
                attempts=failures,
                error_type=type(error).__name__,
                error=str(error),
            )
            return
        self.healthy = True
        now = datetime.now(UTC)
        for hint in hints:
            if hint.event_time is not None and hint.operation != RECHECK_OPERATION:
                metrics.APPLY_LATENCY.observe(max(0.0, (now - hint.event_time).total_seconds()))
        if any(h.reason is not HintReason.USER_DELETED and h.operation != RECHECK_OPERATION for h in hints):
            self._schedule_recheck(user_id, hints[-1])

    async def _apply_once(self, user_id: str, hints: list[UserHint]) -> None:
        observation = await self._observe(user_id, expects_user=any(h.expects_user for h in hints))
        metrics.LOOKUPS.labels(outcome="found" if observation.user else "not_found").inc()
        await self._group.apply(observation)

    async def _observe(self, user_id: str, *, expects_user: bool) -> Observation:
        """Read the user; when a hint says it should exist, re-read a 404 a few times before believing it."""
        retries = self._settings.event_not_found_retries if expects_user else 0
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda obs: obs.user is None),
            stop=stop_after_attempt(retries + 1),
            wait=wait_exponential(multiplier=self._settings.event_not_found_backoff_s, max=10),
            retry_error_callback=_last_result,  # still 404 after the retries: it is gone
        )
        observation: Observation = await retrying(self._read, user_id)
        return observation

    async def _read(self, user_id: str) -> Observation:
        (observation,) = await self._applier.observe([user_id])
        return observation

    def _schedule_recheck(self, user_id: str, hint: UserHint) -> None:
        delay = self._settings.event_recheck_delay_s
        if self._resubmit is None or delay <= 0 or user_id in self._rechecks:
            return  # one pending re-check per user is enough
        resubmit = self._resubmit
        recheck = dataclasses.replace(hint, operation=RECHECK_OPERATION, event_time=None)

        async def later() -> None:
            try:
                await asyncio.sleep(delay)
                await resubmit(user_id, recheck)
            finally:
                self._rechecks.pop(user_id, None)

        self._rechecks[user_id] = asyncio.create_task(later(), name=f"recheck-{user_id}")

    async def close(self) -> None:
        """Drop pending re-checks (the periodic full reconcile is the safety net behind them)."""
        tasks = list(self._rechecks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _log_retry(self, state: RetryCallState) -> None:
        self.healthy = False
        error = state.outcome.exception() if state.outcome else None
        metrics.LOOKUPS.labels(outcome="error").inc()
        log.warning(
            "applying a user failed; retrying",
            attempt=state.attempt_number,
            error_type=type(error).__name__,
            error=str(error),
        )


def _last_result(state: RetryCallState) -> Observation:
    assert state.outcome is not None
    result: Observation = state.outcome.result()
    return result
