"""The event-store sweep: Keycloak's own stored admin and user events as a second, durable source of hints.

Keycloak writes an event to its database while it handles the request (admin events and the enabled user
event types, kept `eventsExpiration` seconds), and serves them for pull-based sync. Every
`SWEEP_INTERVAL_S` the sweeper (one replica at a time, by a lease) reads them from its watermark, oldest
first and paged, turns them into the same user hints as Kafka records (`events.parse_event`, one parsing
core) and submits them to the same coalescing queue, so a user hinted by both sources is looked up once.

- **Watermark** (in the store): it advances only past events whose hints were applied, like a Kafka
  offset. Reads start `SWEEP_OVERLAP_S` before it (events of one millisecond, clock skew between Keycloak
  nodes, events committed after a later one) and skip the ids already handled.
- **Already delivered**: an event whose user the store observed *after* the event's time is counted
  `covered` and costs no Keycloak read: the Kafka path applied it (with a provider that publishes before
  commit, the event path's follow-up re-check covers that read, as it does for Kafka alone).
- **Changes without a per-user event**: a partial import records one REALM event per user (`users/{id}`),
  which becomes a hint; an import that *overwrote* users replaced them under new ids and deleted the old
  ones without any event, so it also requests a full reconcile, as does a watermark that is missing (first
  start) or older than the realm keeps events. Requests are spaced by `SWEEP_RECONCILE_SPACING_S`.
- **One replica**: the lease `event-sweep` (`SWEEP_LEASE_TTL_S`, `clients.lease`) is renewed by every sweep
  and released on a clean stop; the other replicas watch it every `LEASE_POLL_S` between their tries, so
  after a rolling restart's stop the next sweeper starts within about a second, and after a kill within one
  ttl.
- **Optional source**: without `view-events`, or when the realm stores no events, the sweeper says in one
  warning what to change and stays off (`reconciler_sweep_active` 0); the Kafka path runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from reconciler.base.config import Settings
from reconciler.base.errors import KeycloakConfigError, ReconcilerError, UserDataError
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.lease import Lease
from reconciler.clients.store import SweepState, UserStore
from reconciler.domain.document import utc_now
from reconciler.domain.events import (
    ACCEPTED_USER_EVENT_TYPES,
    ORGANIZATION_RESOURCE_TYPES,
    ParseResult,
    UserHint,
    parse_event,
)
from reconciler.domain.models import SyncedBy
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger
from reconciler.sources.organizations import OrganizationHints, member_hints
from reconciler.sources.workqueue import CoalescingQueue

log = get_logger(__name__)

LEASE_NAME: Final = "event-sweep"
STATE_NAME: Final = "events"
ADMIN_RESOURCE_TYPES: Final = (
    "USER",
    "GROUP_MEMBERSHIP",
    "REALM_ROLE_MAPPING",
    "CLIENT_ROLE_MAPPING",
    "REALM",
)
USER_EVENT_TYPES: Final = tuple(sorted(ACCEPTED_USER_EVENT_TYPES))

RequestReconcile = Callable[[str], None]


@dataclass(slots=True)
class _Read:
    """One stored event read by a sweep."""

    source: str  # admin, user
    event_id: str
    time_ms: int
    data: dict[str, Any]


@dataclass(slots=True)
class _Pending:
    """Events of this sweep whose hints are not applied yet, by id; set when all are."""

    times: dict[str, int] = field(default_factory=dict)
    parts: dict[str, int] = field(
        default_factory=dict
    )  # hints not applied yet per event (organizations: many)
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event_id: str, time_ms: int) -> Callable[[], None]:
        self.times[event_id] = time_ms
        self.parts[event_id] = self.parts.get(event_id, 0) + 1

        def done() -> None:
            left = self.parts.get(event_id, 1) - 1
            if left > 0:
                self.parts[event_id] = left
                return
            self.parts.pop(event_id, None)
            self.times.pop(event_id, None)
            if not self.times:
                self.all_done.set()

        return done


class Sweeper:
    """Reads the event store of one realm into the event path's queue (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        keycloak: KeycloakAdminClient,
        store: UserStore,
        queue: CoalescingQueue[UserHint],
        holder: str,
        request_reconcile: RequestReconcile | None = None,
        organizations: OrganizationHints | None = None,
    ) -> None:
        self._settings = settings
        # ORGANIZATIONS_ENABLED: organization events are read too and hint the organization's members.
        self._organizations = organizations
        self._admin_types = ADMIN_RESOURCE_TYPES + (ORGANIZATION_RESOURCE_TYPES if organizations else ())
        self._keycloak = keycloak
        self._store = store
        self._queue = queue
        self._lease = Lease(store, LEASE_NAME, holder, settings.sweep_lease_ttl_s)
        self._request_reconcile = request_reconcile
        self._expiration_s: float | None = None
        self._last_request = float("-inf")
        self._deferred: str | None = None
        self.last_progress = time.monotonic()

    @property
    def holder(self) -> str:
        """This sweeper's name in the lease document."""
        return self._lease.holder

    async def check(self) -> bool:
        """May we read the event store, and does the realm fill it? One warning saying what to change if not."""
        try:
            config = await self._keycloak.events_config()
        except KeycloakConfigError as error:
            return self._off(f"{error}: grant realm-management/view-events to the service account")
        problems = _config_problems(config)
        if problems:
            return self._off("; ".join(problems))
        missing = _missing_types(config)
        if missing:
            log.warning(
                "the realm does not save some user event types the sweep reads; their changes wait for Kafka"
                " or the full reconcile",
                missing=missing,
                how="add them to enabledEventTypes (keycloak-spi-config/README.md)",
            )
        expiration = config.get("eventsExpiration")
        self._expiration_s = (
            float(expiration) if isinstance(expiration, int | float) and expiration > 0 else None
        )
        metrics.SWEEP_ACTIVE.set(1)
        log.info("event-store sweep on", interval_s=self._settings.sweep_interval_s, expiration_s=expiration)
        return True

    def _off(self, why: str) -> bool:
        metrics.SWEEP_ACTIVE.set(0)
        log.warning(
            "event-store sweep off; the Kafka path and the periodic reconcile run on",
            reason=why,
            realm=self._settings.keycloak_realm,
            how="keycloak-spi-config/README.md, 'Event store'",
        )
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every interval until `stop` is set, then release the lease; failures are logged and the
        next sweep tries again. A replica refused the lease tries again as soon as it is free."""
        try:
            while not stop.is_set():
                self._beat()
                if await self._sweep_once_logged(stop) == "skipped_lease":
                    await self._lease.wait_free(stop, self._settings.sweep_interval_s, self._beat)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self._settings.sweep_interval_s)
        finally:
            await self._lease.release()

    def _beat(self) -> None:
        self.last_progress = time.monotonic()

    async def _sweep_once_logged(self, stop: asyncio.Event) -> str:
        started = time.monotonic()
        try:
            outcome = await self.sweep_once(stop)
        except ReconcilerError as error:
            outcome = "failed"
            log.warning("event-store sweep failed; the next one retries", error=str(error))
        metrics.SWEEPS.labels(outcome=outcome).inc()
        metrics.SWEEP_DURATION.observe(time.monotonic() - started)
        return outcome

    async def sweep_once(self, stop: asyncio.Event | None = None) -> str:
        """One sweep under the lease ("skipped_lease" without it): read from the watermark, submit, wait for
        the applies (or `stop`), move the watermark past what was applied."""
        if not await self._lease.acquire():
            return "skipped_lease"
        async with self._lease.kept():
            await self._sweep(stop)
        return "ok"

    async def _sweep(self, stop: asyncio.Event | None) -> None:
        self._fire_deferred()
        now_ms = _now_ms()
        state = await self._trusted_state(now_ms)
        reads = [
            r
            for r in await self._read_since(state.watermark_ms - self._overlap_ms)
            if r.event_id not in state.handled
        ]
        pending = await self._submit(reads)
        if pending.times:
            await self._applied(pending, stop)
        await self._store.save_sweep_state(STATE_NAME, self._advanced(state, reads, pending, now_ms))

    async def _applied(self, pending: _Pending, stop: asyncio.Event | None) -> None:
        """Wait for the hints' applies, at most two intervals, and not past a stop: what is still pending
        keeps the watermark before it, for the next sweep (here or on the next holder)."""
        waits = [asyncio.ensure_future(pending.all_done.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(
                waits, timeout=self._settings.sweep_interval_s * 2, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    @property
    def _overlap_ms(self) -> int:
        return int(self._settings.sweep_overlap_s * 1000)

    async def _trusted_state(self, now_ms: int) -> SweepState:
        """The stored watermark, unless there is none or it is older than the realm keeps events: then the
        store cannot be caught up from events, so start from now and ask for a full reconcile."""
        state = await self._store.sweep_state(STATE_NAME)
        too_old = (
            state is not None
            and self._expiration_s is not None
            and now_ms - state.watermark_ms > self._expiration_s * 1000
        )
        if state is None or too_old:
            self.request_reconcile("watermark_too_old" if too_old else "no_watermark")
            state = SweepState(now_ms)
            await self._store.save_sweep_state(STATE_NAME, state)
        metrics.SWEEP_LAG_SECONDS.set(max(0.0, (now_ms - state.watermark_ms) / 1000))
        return state

    async def _read_since(self, date_from_ms: int) -> list[_Read]:
        page = self._settings.sweep_page_size
        reads: list[_Read] = []
        for source in ("admin", "user"):
            first = 0
            while True:
                if source == "admin":
                    items = await self._keycloak.admin_events(date_from_ms, first, page, self._admin_types)
                else:
                    items = await self._keycloak.user_events(date_from_ms, first, page, USER_EVENT_TYPES)
                reads.extend(_read(source, item) for item in items)
                if len(items) < page:
                    break
                first += page
        return reads

    async def _submit(self, reads: list[_Read]) -> _Pending:
        pending = _Pending()
        hinted: list[tuple[_Read, UserHint]] = []
        overwrites = False
        for read in reads:
            result = parse_event(read.data, realms=None, organizations=self._organizations is not None)
            # An overwrite replaced a user under a new id; the old one vanished without an event.
            overwrites |= result.imported is not None and result.imported.operation == "IMPORT_UPDATE"
            hinted.extend((read, hint) for hint in await self._hints_of(read, result))
        if overwrites:
            self.request_reconcile("partial_import_overwrite")
        covered = await self._covered(hinted)
        for read, hint in hinted:
            if hint.user_id in covered and covered[hint.user_id] > read.time_ms:
                metrics.SWEEP_EVENTS.labels(source=read.source, outcome="covered").inc()
                continue
            metrics.SWEEP_EVENTS.labels(source=read.source, outcome="hinted").inc()
            await self._queue.submit(hint.user_id, hint, pending.add(read.event_id, read.time_ms))
        return pending

    async def _hints_of(self, read: _Read, result: ParseResult) -> list[UserHint]:
        """The event's user hint, or one per member of an organization the event changed."""
        if result.organization is None or self._organizations is None:
            hint = self._hint_of(read, result)
            return [] if hint is None else [hint]
        try:
            users = await self._organizations.users(result.organization)
        except UserDataError:  # unreadable member list: left to the next full reconcile, the sweep goes on
            log.error("organization members unreadable", organization_id=result.organization.organization_id)
            users = []
        if not users:
            metrics.SWEEP_EVENTS.labels(source=read.source, outcome="ignored_organization").inc()
        return member_hints(result.organization, users, source=SyncedBy.SWEEP, after_commit=True)

    def _hint_of(self, read: _Read, result: ParseResult) -> UserHint | None:
        # A stored event is visible only once Keycloak committed: a read after it sees the change, so its
        # hint is an after-commit one (no follow-up re-check, see EVENT_RECHECK).
        if result.imported is not None:
            return replace(result.imported, source=SyncedBy.SWEEP, after_commit=True)
        if result.hints:
            return replace(result.hints[0], source=SyncedBy.SWEEP, after_commit=True)
        outcome = f"ignored_{result.ignored}" if result.ignored else f"invalid_{result.invalid}"
        metrics.SWEEP_EVENTS.labels(source=read.source, outcome=outcome).inc()
        return None

    async def _covered(self, hinted: list[tuple[_Read, UserHint]]) -> dict[str, int]:
        """external_id -> epoch ms of the store's latest observation of it (documents and tombstones)."""
        seen = await self._store.last_observed(hint.user_id for _, hint in hinted)
        return {user_id: int(at.timestamp() * 1000) for user_id, at in seen.items()}

    def _advanced(self, state: SweepState, reads: list[_Read], pending: _Pending, now_ms: int) -> SweepState:
        """Past every event applied, never past one still pending; remember the handled ids near it."""
        if pending.times:
            watermark = min(pending.times.values())
        else:
            latest = max((r.time_ms for r in reads), default=state.watermark_ms)
            # Nothing older can still appear beyond the overlap: idle sweeps move on with the clock.
            watermark = max(state.watermark_ms, latest, now_ms - self._overlap_ms)
        keep_from = watermark - self._overlap_ms
        handled = {i: t for i, t in state.handled.items() if t >= keep_from}
        handled.update(
            {
                r.event_id: r.time_ms
                for r in reads
                if r.event_id not in pending.times and r.time_ms >= keep_from
            }
        )
        metrics.SWEEP_LAG_SECONDS.set(max(0.0, (_now_ms() - watermark) / 1000))
        return SweepState(watermark, handled)

    def request_reconcile(self, reason: str) -> None:
        """Ask for a full reconcile now, or as soon as the spacing since the last request allows."""
        if self._request_reconcile is None:
            log.info("a full reconcile would be needed, but the periodic reconcile is off", reason=reason)
            return
        if time.monotonic() - self._last_request < self._settings.sweep_reconcile_spacing_s:
            self._deferred = reason
            return
        self._last_request = time.monotonic()
        self._deferred = None
        metrics.SWEEP_RECONCILE_REQUESTS.labels(reason=reason).inc()
        self._request_reconcile(reason)

    def _fire_deferred(self) -> None:
        if self._deferred is not None:
            self.request_reconcile(self._deferred)


def _config_problems(config: dict[str, Any]) -> list[str]:
    problems = []
    if config.get("adminEventsEnabled") is not True:
        problems.append("the realm does not save admin events (adminEventsEnabled)")
    if config.get("eventsEnabled") is not True:
        problems.append("the realm does not save user events (eventsEnabled)")
    return problems


def _missing_types(config: dict[str, Any]) -> list[str]:
    """User event types the sweep reads that the realm does not save (an empty list saves all)."""
    stored = set(config.get("enabledEventTypes") or [])
    return sorted(set(USER_EVENT_TYPES) - stored) if stored else []


def _read(source: str, item: dict[str, Any]) -> _Read:
    raw_time = item.get("time")
    time_ms = raw_time if isinstance(raw_time, int) and not isinstance(raw_time, bool) else 0
    raw_id = item.get("id")
    event_id = (
        raw_id
        if isinstance(raw_id, str) and raw_id
        else f"{source}:{time_ms}:{hash(str(sorted(item.items())))}"
    )
    return _Read(source, event_id[:100], time_ms, item)


def _now_ms() -> int:
    return int(utc_now().timestamp() * 1000)
