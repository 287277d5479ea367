"""The event path's use of the apply core: one user's coalesced hints -> one Keycloak read -> one apply.

Keycloak publishes some events before its transaction commits, so a read right after an event may not see
it yet: a 404 after a create/update hint is re-read a few times with short backoff before it counts as a
deletion (EVENT_NOT_FOUND_RETRIES), and an update hint asks the queue for one follow-up re-check after a
settle delay (EVENT_RECHECK_DELAY_S), unless the record says it was published after commit (EVENT_RECHECK
`auto`, the default, with our own listener): there that second GET cannot change the outcome. Before it
reads, it asks the listing road (reconciler/sources/listing_road.py) whether a full reconcile already covered the user, is
about to, or should, for a burst. Failures are raised as they are: the work queue decides retries
(reconciler/sources/workqueue.py), and the hint's Kafka record is committed only after the apply succeeded.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from tenacity import RetryCallState, retry_if_result

from reconciler.apply.applier import Applier
from reconciler.apply.batching import GroupCommit
from reconciler.base.config import Settings
from reconciler.base.retry import Backoff, RetryPolicy
from reconciler.domain.events import HintReason, UserHint
from reconciler.domain.models import Observation, SyncedBy
from reconciler.domain.plan import ApplyPolicy
from reconciler.observability import metrics
from reconciler.sources.listing_road import ListingRoad
from reconciler.sources.workqueue import Again, CoalescingQueue, Later, QueueObserver


class HintApplier:
    """`await hint_applier(user_id, hints)` applies Keycloak's current state of that user (a queue worker)."""

    def __init__(
        self,
        applier: Applier,
        settings: Settings,
        synced_by: SyncedBy = SyncedBy.EVENT,
        road: ListingRoad | None = None,
    ) -> None:
        self._applier = applier
        self._settings = settings
        self.road = road
        self._policy = ApplyPolicy.event(synced_by=synced_by)
        # What only the event store or a database row told us is marked so: how lossy the Kafka hop is, and
        # what no event announced, in numbers.
        self._source_policies = {
            source: ApplyPolicy.event(synced_by=source) for source in (SyncedBy.SWEEP, SyncedBy.CDC)
        }
        # Users are read from Keycloak one by one, but written together: one bulk write per batch.
        self._group = GroupCommit(applier, max_batch=settings.apply_batch_size)

    async def __call__(self, user_id: str, hints: list[UserHint]) -> Again[UserHint] | Later | None:
        # A re-check must read Keycloak again: a listing could not tell it more than the read it follows, and
        # waiting for one would only make the road list the realm again for it.
        recheck = any(h.recheck for h in hints)
        if self.road is not None and not recheck:
            if await self.road.covered(user_id, hints):
                metrics.HINTS_COVERED.inc()
                return self._recheck(hints)
            listing = await self.road.wait_for_listing(hints)
            if listing is not None:
                return Later(self._settings.reconcile_lease_ttl_s, wake=listing)
        observation = await self._observe(user_id, expects_user=any(h.expects_user for h in hints))
        metrics.LOOKUPS.labels(outcome="found" if observation.user else "not_found").inc()
        await self._group.apply(observation, self._policy_for(hints))
        now = datetime.now(UTC)
        for hint in hints:
            if hint.event_time is not None and not hint.recheck:
                metrics.APPLY_LATENCY.observe(max(0.0, (now - hint.event_time).total_seconds()))
        return self._recheck(hints)

    def _policy_for(self, hints: list[UserHint]) -> ApplyPolicy:
        """The sweep's or CDC's policy when every hint came from that one source, else this path's own."""
        sources = {hint.source for hint in hints}
        if len(sources) == 1:
            return self._source_policies.get(sources.pop(), self._policy)
        return self._policy

    def _recheck(self, hints: list[UserHint]) -> Again[UserHint] | None:
        """One follow-up read after the settle delay, for hints whose read may have come too early."""
        delay = self._settings.event_recheck_delay_s
        wanted = [h for h in hints if self._needs_recheck(h)]
        if delay <= 0 or not wanted:
            return None
        return Again(delay, dataclasses.replace(wanted[-1], recheck=True, event_time=None))

    def _needs_recheck(self, hint: UserHint) -> bool:
        """Not after a deletion (the 404 is expected) nor a re-check; in `auto` mode not after a record
        published after commit either: the read that followed it already saw the change."""
        mode = self._settings.event_recheck
        if mode == "never" or hint.reason is HintReason.USER_DELETED or hint.recheck:
            return False
        return mode == "always" or not hint.after_commit

    async def _observe(self, user_id: str, *, expects_user: bool) -> Observation:
        """Read the user; when a hint says it should exist, re-read a 404 a few times before believing it."""
        if not expects_user:
            return await self._read(user_id)
        retrying = RetryPolicy.not_found_reread(self._settings).retrying(
            retry_if_result(lambda obs: obs.user is None)
        )
        retrying = retrying.copy(retry_error_callback=_last_result)  # still 404 after the retries: it is gone
        observation: Observation = await retrying(self._read, user_id)
        return observation

    async def _read(self, user_id: str) -> Observation:
        (observation,) = await self._applier.observe([user_id])
        return observation


def hint_queue(
    applier: Applier,
    settings: Settings,
    *,
    observer: QueueObserver | None = None,
    synced_by: SyncedBy = SyncedBy.EVENT,
    road: ListingRoad | None = None,
) -> CoalescingQueue[UserHint]:
    """The event path's work queue: `HintApplier` as the worker, retries by the settings' policy."""
    return CoalescingQueue(
        HintApplier(applier, settings, synced_by, road),
        settings.consumer_max_in_flight_users,
        backoff=Backoff.users(settings),
        max_attempts=settings.event_max_apply_attempts,
        observer=observer,
    )


def _last_result(state: RetryCallState) -> Observation:
    assert state.outcome is not None
    result: Observation = state.outcome.result()
    return result
