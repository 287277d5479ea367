"""The listing road for bursts: many waiting users are read by one full reconcile instead of one GET each.

A `GET /users/{id}` costs Keycloak far more per user than a listed user does (BENCHMARKS.md: ~400 GETs/s
against thousands of listed users/s), so a burst (a new consumer group's backlog, a mass change, a topic
full of events for most of the realm) is cheaper read by listing the realm. The event path asks this road
before every read, except a follow-up re-check's (always a GET of its own, `hint_apply`):

1. **Covered?** When a local full reconcile began after a hint's change reached us (`received_at`, this
   process's clock) or well after its event time (`EVENT_COVERED_MARGIN_S`, Keycloak's clock), the store
   may already hold a later observation of the user: one store read decides (grouped with the other users
   asking at the same time, `GroupRead`), and then no Keycloak read is needed. The hint's record is committed only now, after that apply (invariant 3).
2. **Wait?** While a listing this road started is running, hints wait for it (`Later`: the worker is free,
   the records stay uncommitted) and come back to step 1 once it ends. A hint waits for one listing that
   began after it arrived at most, and is read by GET if that one did not cover it.
3. **List?** The cost model compares the waiting users (queued, plus the records not yet read times the
   distinct users a record read so far named: a backlog of another realm's events is not ours) at the
   measured GET cost and concurrency with the realm's count at the measured cost per user of a full
   reconcile that mostly read (this process's last run, else the store's record of the last run by any
   replica, else the measured cost of a listed user in a page, else a prior on the slow side; writes cost
   the same on either road). When the listing is cheaper it asks the scheduler for a full reconcile now
   (`run_soon`: one lease, one run across replicas, the same apply core, deactivation only after a
   complete listing) and the hints wait for it.

A listing that did not run here (another replica holds the lease) or failed closes the road for one lease
TTL: the users are read one by one meanwhile, as without it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

from reconciler.apply.batching import GroupRead
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.events import UserHint
from reconciler.domain.plan import WRITING_ACTIONS
from reconciler.fullsync.reconcile import RunSummary
from reconciler.fullsync.scheduler import ReconcileScheduler
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger

log = get_logger(__name__)

# Until this process has measured a request of the kind: the orders of magnitude BENCHMARKS.md measured.
PRIOR_GET_S: Final = 0.01
PRIOR_LISTED_USER_S: Final = 0.001  # 1,000 users/s: slower than any listing measured here

RECORD_REFRESH_S: Final = 60.0  # the store's run record is read again after this long
# A run that wrote more than this share of what it listed measured the store's writes, not the listing.
WARM_RUN_MAX_WRITE_SHARE: Final = 0.1

Waiting = Callable[[], float]  # distinct users waiting on the event path, an estimate


class ListingRoad:
    """Decides, per user read of the event path, whether a listing covers it, is coming, or should start."""

    def __init__(
        self,
        settings: Settings,
        keycloak: KeycloakAdminClient,
        store: UserStore,
        scheduler: ReconcileScheduler,
        waiting: Waiting,
    ) -> None:
        self._settings = settings
        self._keycloak = keycloak
        self._store = store
        self._reads = GroupRead(store, settings.apply_batch_size)
        self._scheduler = scheduler
        self._waiting = waiting
        self._listing: asyncio.Task[RunSummary | None] | None = None
        self._closed_until = 0.0  # monotonic: after a listing that did not run or failed
        self._last_started: datetime | None = None  # the latest listing this road ran began then
        self._recorded_user_s: float | None = None  # from the store's last run record
        self._recorded_at = -RECORD_REFRESH_S  # monotonic time it was read

    @property
    def listing(self) -> bool:
        """A listing started by this road is running."""
        return self._listing is not None and not self._listing.done()

    async def covered(self, user_id: str, hints: list[UserHint]) -> bool:
        """The store holds an observation of the user taken after every one of these hints' changes."""
        summary = self._scheduler.last_summary
        if summary is None or not all(self._before(hint, summary.started_at) for hint in hints):
            return False  # no local listing began after them: not worth a store read
        observed = await self._reads.last_observed(user_id)
        return observed is not None and all(self._before(hint, observed) for hint in hints)

    def _before(self, hint: UserHint, moment: datetime) -> bool:
        """`hint`'s change had reached Keycloak's committed state before `moment` (this process's clock)."""
        if hint.received_at is not None and hint.after_commit and hint.received_at < moment:
            return True
        margin = timedelta(seconds=self._settings.event_covered_margin_s)
        return hint.event_time is not None and hint.event_time + margin < moment

    async def wait_for_listing(self, hints: list[UserHint]) -> asyncio.Future[RunSummary | None] | None:
        """The listing these hints should wait for (running, or started now), or None: read them one by one.

        A hint waits for one listing that began after it arrived at most: if that one did not cover it (an
        event published before commit, still within `EVENT_COVERED_MARGIN_S`), it is read by GET, so hints
        can never keep a chain of listings going.
        """
        if self.listing:
            return self._listing
        if self._had_their_listing(hints):
            return None
        if time.monotonic() < self._closed_until or not await self._cheaper_to_list():
            return None
        self._listing = asyncio.create_task(self._list(), name="burst-listing")
        return self._listing

    def _had_their_listing(self, hints: list[UserHint]) -> bool:
        started = self._last_started
        return started is not None and all(h.received_at is None or h.received_at < started for h in hints)

    async def _cheaper_to_list(self) -> bool:
        count = self._keycloak.last_count
        if not count:
            return False  # nothing counted the realm yet (the start-up check does)
        waiting = min(float(count), self._waiting())
        parallel = min(self._settings.consumer_max_in_flight_users, self._settings.keycloak_max_concurrency)
        singles_s = waiting * (self._keycloak.costs.mean_s("get_user") or PRIOR_GET_S) / parallel
        return count * await self._listed_user_s() < singles_s

    async def _listed_user_s(self) -> float:
        """Seconds per user of a full reconcile that reads rather than writes (the writes cost the same on
        either road): this process's last run, else the last recorded run of any replica, else the measured
        page cost per listed user, else a prior on the slow side."""
        summary = self._scheduler.last_summary
        if summary is not None and summary.ok:
            local = _read_cost(summary.duration_s, summary.counts())
            if local is not None:
                return local
        if time.monotonic() >= self._recorded_at + RECORD_REFRESH_S:
            self._recorded_user_s = await self._recorded_run_cost()
            self._recorded_at = time.monotonic()
        if self._recorded_user_s is not None:
            return self._recorded_user_s
        page_user_s = self._keycloak.costs.mean_s("listed_user")
        if page_user_s is not None:
            return page_user_s / self._settings.keycloak_list_concurrency
        return PRIOR_LISTED_USER_S

    async def _recorded_run_cost(self) -> float | None:
        run = await self._store.last_successful_run()
        if run is None or run.ended_at is None:
            return None
        return _read_cost((run.ended_at - run.started_at).total_seconds(), run.counts)

    async def _list(self) -> RunSummary | None:
        waiting = math.ceil(self._waiting())
        log.info("event burst: reading the waiting users by a full reconcile", waiting_users=waiting)
        summary = await self._scheduler.run_soon("event_burst")
        if summary is not None:
            self._last_started = summary.started_at
        outcome = "not_run" if summary is None else summary.outcome.value
        metrics.BURST_LISTINGS.labels(outcome=outcome).inc()
        if summary is None or not summary.ok:
            # Another replica's run, or a failure: one by one for a while (that replica's run, or the
            # scheduler's retry, still covers what it reads).
            self._closed_until = time.monotonic() + self._settings.reconcile_lease_ttl_s
            log.info("event burst: no listing here; reading users one by one", outcome=outcome)
        return summary


def _read_cost(duration_s: float, counts: Mapping[str, int]) -> float | None:
    """Seconds per listed user of a run that mostly read (None for a run that mostly wrote, or listed no one)."""
    listed = counts.get("listed", 0)
    written = sum(counts.get(action.value, 0) for action in WRITING_ACTIONS)
    if listed <= 0 or written > WARM_RUN_MAX_WRITE_SHARE * listed:
        return None
    return max(0.0, duration_s) / listed
