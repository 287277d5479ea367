"""The full reconcile: the level-triggered safety net behind the event path.

One run:

1. counts Keycloak's users (for progress and to know where the listing should end), then lists them by
   creation-time windows (`windowed.WindowedPages`, Keycloak 26.6+, `keycloak_listing`; `auto` probes once)
   or by offset paging (`listing.OffsetPages`: pages of `keycloak_page_size` users, or a size adapted
   between it and `keycloak_page_size_max`), `keycloak_list_concurrency` pages requested at once,
   each page stamped with `observed_at` just before its own request and applied through the `Applier` (one
   store read and at most one bulk write per `apply_batch_size` users) in the order the pages arrive, while
   the next ones are being listed; a first page that is empty while Keycloak counts users is a permission problem
   (`KeycloakConfigError`), never "Keycloak has no users" (by windows: a whole listing that returned
   nobody). The listing is complete once every page up to the first short one (of every window) has been
   fetched and applied;
2. remembers only which ids it listed, never the users (invariant 7, docs/ARCHITECTURE.md): a flag per
   stored user in the snapshot's arrays, a set of 16-byte ids for the others; with
   `reconcile_store_snapshot` (not with `sync_groups_and_roles`) it first reads
   one print of every stored user in one scan, concurrently with the first pages (`snapshot.StoreSnapshot`),
   and a listed user whose print matches costs no store read (the apply core would leave it unchanged);
3. only after a complete, error-free listing, in one closing scan of the store: deactivation candidates =
   active local users not seen, and users the snapshot skipped whose document changed or vanished since
   (read again by GetUser and applied, so the run ends as if every page had been read by id);
4. the mass-deactivation guard: more candidates than `max(mass_deactivation_min_count,
   mass_deactivation_max_ratio * active users)` -> nothing is deactivated, the run says so loudly
   (`guard_tripped`), unless the caller allows it explicitly;
5. confirms every candidate with a GetUser through the `Applier`: 404 -> deactivated (deleted), disabled ->
   deactivated (disabled), found and enabled -> applied as an update (offset paging, inside a window too,
   skipped it because users were created or deleted meanwhile; or it has no creation time in any window).

Pages are listed with the *full* representation when an attribute is mirrored (MIRRORED_ATTRIBUTES, by
default `picture`): the brief one carries no attributes, and a mirrored field would read as removed. The
cost is a larger response and Keycloak loading every listed user's attributes. With no attribute mirrored
the pages are brief (1.3-3x cheaper for Keycloak, BENCHMARKS.md); the run's first log line says which. With
`sync_groups_and_roles` each listed user also costs two more requests.

A failure anywhere (Keycloak, store) that outlasts its retries (each Keycloak request
`keycloak_retry_attempts` times, each batch of store reads and writes `mongodb_retry_attempts` times) fails
the run: what was written stays written (it is correct: every
write is a guarded apply of a real observation), nothing is deactivated, the run record says `failed`, and
the summary keeps the error (`failure`) so that the command line maps it to its exit status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Protocol, TypeVar

import structlog
from tenacity import RetryCallState, retry_if_exception_type

from reconciler.apply.applier import Applier, ApplyResult, batched, report
from reconciler.base import errors
from reconciler.base.config import Settings
from reconciler.base.errors import KeycloakProtocolError, StoreUnavailable
from reconciler.base.retry import RetryPolicy
from reconciler.clients.keycloak import KeycloakAdminClient, UnreadableUser, UserPage
from reconciler.clients.store import UserStore
from reconciler.domain.document import F, utc_now
from reconciler.domain.models import KeycloakUser, Observation, OrganizationMembership
from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import Action, ApplyPolicy, Change
from reconciler.fullsync.listing import OffsetPages, PageSizer
from reconciler.fullsync.snapshot import StoreSnapshot, user_key
from reconciler.fullsync.windowed import CLOCK_MARGIN_MS, Road, WindowedPages, probe_road
from reconciler.fullsync.windows import MAX_CREATED_MS, MIN_CREATED_MS, PageRequest, Window, plan_windows
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger, redact

log = get_logger(__name__)
T = TypeVar("T")

DRIFT_FIELDS_SHOWN: Final = 5
DRIFT_USERS_KEPT: Final = 1000  # per action, in a dry run
_PROGRESS_LOG_INTERVAL_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class DriftItem:
    """One user a dry run would change, with a few of the fields that differ (field -> [stored, desired])."""

    external_id: str
    diff: Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class Memberships:
    """The organization memberships of every user, as the run read them (users in none are absent)."""

    observed_at: datetime
    by_user: Mapping[str, Sequence[OrganizationMembership]]

    def of(self, user: KeycloakUser) -> KeycloakUser:
        """The listed user with its memberships (`()` for a user in no organization)."""
        memberships = tuple(sorted(self.by_user.get(user.id.lower(), ())))
        return dataclasses.replace(user, organizations=memberships)


@dataclass(slots=True)
class ClosingScan:
    """What the store scan after a complete listing found."""

    active: int = 0  # active documents (the guard's base)
    skipped: int = 0  # active documents whose external_id is not a Keycloak id
    candidates: list[bytes] = field(default_factory=list)  # active and not listed: confirmed by GetUser
    changed: list[bytes] = field(default_factory=list)  # skipped by the snapshot, changed or gone since


@dataclass(slots=True)
class RunSummary:
    """What one full reconcile did (or, in a dry run, would do)."""

    run_id: str
    started_at: datetime
    dry_run: bool = False
    outcome: Outcome = Outcome.SUCCESS
    applied: ApplyResult = field(default_factory=ApplyResult)  # per action, of every user written or not
    listed: int = 0  # users Keycloak listed
    unreadable: int = 0  # listed users whose representation could not be read (kept as they are)
    candidates: int = 0  # active local users the listing did not contain
    changed_during_listing: int = 0  # users skipped by the snapshot whose document changed before the end
    guard_tripped: bool = False
    guard_limit: int | None = None
    duration_s: float = 0.0
    error: str | None = None
    failure: BaseException | None = None  # the error that failed the run (exit status, readiness)
    drift: dict[Action, list[DriftItem]] = field(default_factory=dict)  # dry run: action -> users (capped)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def counts(self) -> dict[str, int]:
        return {
            **self.applied.as_dict(),
            "listed": self.listed,
            "unreadable": self.unreadable,
            "candidates": self.candidates,
            "changed_during_listing": self.changed_during_listing,
        }

    def add(self, result: ApplyResult) -> None:
        self.applied.add(ApplyResult(result.counts))  # counts only: the changes are the caller's to keep

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the CLI's `--json` output)."""
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "outcome": self.outcome.value,
            "dry_run": self.dry_run,
            **self.counts(),
            "guard_tripped": self.guard_tripped,
            "guard_limit": self.guard_limit,
            "duration_s": round(self.duration_s, 3),
            "started_at": self.started_at.isoformat(),
            "error": self.error,
            "error_kind": errors.kind(self.failure) if self.failure else None,
        }
        if self.dry_run:
            data["drift"] = {
                action.value: [{"external_id": i.external_id, "diff": _jsonable(i.diff)} for i in items]
                for action, items in self.drift.items()
            }
        return data


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is, for progress bars and heartbeats. `total` is Keycloak's count (None if unknown)."""

    run_id: str
    phase: str  # listing, confirming, done
    listed: int
    total: int | None
    confirmed: int = 0
    candidates: int = 0


ProgressCallback = Callable[[Progress], Awaitable[None] | None]


class RoadPages(Protocol):
    """A road's pages: `listing.OffsetPages` or `windowed.WindowedPages`."""

    applied: int

    @property
    def complete(self) -> bool: ...

    async def next_page(self) -> tuple[int, datetime, UserPage] | None: ...

    async def close(self) -> None: ...


def mass_deactivation_limit(active: int, max_ratio: float, min_count: int) -> int:
    """The most deactivations one run may make: `max(min_count, floor(max_ratio * active))`."""
    return max(min_count, int(max_ratio * active))


def _jsonable(diff: Mapping[str, tuple[Any, Any]]) -> dict[str, list[Any]]:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, StrEnum):
            return value.value
        return value

    return {name: [plain(old), plain(new)] for name, (old, new) in diff.items()}


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return redact(f"{type(error).__name__}: {text}" if text else type(error).__name__)[:500]


class FullReconcile:
    """Runs full reconciles of one realm into one store (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: UserStore,
        keycloak: KeycloakAdminClient,
        *,
        holder: str | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keycloak = keycloak
        self._applier = Applier(store, keycloak, settings)
        self._holder = holder
        self._last_log = 0.0
        self._probed: Road | None = None  # KEYCLOAK_LISTING=auto: what the probe found, once it could tell
        self._window_total: int | None = None  # the windowed road's count of [0, hi], for the log
        # Brief representations carry no attributes and cost Keycloak 1.3-3x less (BENCHMARKS.md): the
        # listing reads full ones only when an attribute is mirrored. Both roads use this choice.
        self._brief = not keycloak.mirrored.needs_attributes
        self._memberships: Memberships | None = None  # ORGANIZATIONS_ENABLED: this run's member lists

    async def run(
        self,
        *,
        dry_run: bool = False,
        allow_mass_deactivation: bool = False,
        progress: ProgressCallback | None = None,
        run_id: str | None = None,
    ) -> RunSummary:
        """One full reconcile. Never raises for Keycloak or store failures: the summary says `failed`.

        `dry_run` reads everything and decides, but writes nothing (no users, no run record, no metrics) and
        returns the drift. `allow_mass_deactivation` disables the guard for this run.
        """
        summary = RunSummary(run_id=run_id or uuid.uuid4().hex, started_at=utc_now(), dry_run=dry_run)
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(run_id=summary.run_id, dry_run=dry_run):
            log.info(
                "full reconcile started",
                realm=self._settings.keycloak_realm,
                representation="brief" if self._brief else "full",
                mirrored_fields=list(self._keycloak.mirrored.fields),
            )
            recorded = False
            try:
                if not dry_run:
                    await self._store.start_run(summary.run_id, summary.started_at, self._holder)
                    recorded = True
                await self._run(summary, allow_mass_deactivation, progress)
            except Exception as error:
                summary.outcome = Outcome.FAILED
                summary.failure = error
                summary.error = _describe(error)
                if isinstance(error, errors.ReconcilerError):
                    log.error("full reconcile failed", error=summary.error, error_kind=errors.kind(error))
                else:
                    log.exception("full reconcile failed", error=summary.error)
            except BaseException:  # cancelled (shutdown): record it, then let the cancellation through
                summary.outcome = Outcome.CANCELLED
                summary.error = "cancelled"
                raise
            finally:
                summary.duration_s = time.monotonic() - started
                if recorded:
                    await self._record_end(summary)
                if not dry_run:
                    metrics.RECONCILE_RUNS.labels(outcome=summary.outcome.value).inc()
                    metrics.RECONCILE_DURATION.observe(summary.duration_s)
                    if summary.ok:
                        metrics.RECONCILE_LAST_SUCCESS.set(time.time())
                log.info(
                    "full reconcile finished",
                    outcome=summary.outcome.value,
                    duration_s=round(summary.duration_s, 3),
                    **summary.counts(),
                )
        return summary

    async def _record_end(self, summary: RunSummary) -> None:
        try:
            await self._store.finish_run(
                summary.run_id, utc_now(), summary.outcome, summary.counts(), summary.error
            )
        except Exception as error:  # the run's result stands; only its record is missing
            log.warning("could not record the end of the run", error=_describe(error))

    async def _run(
        self, summary: RunSummary, allow_mass_deactivation: bool, progress: ProgressCallback | None
    ) -> None:
        settings = self._settings
        total = await self._keycloak.count_users()
        road = await self._road(total)
        self._memberships = await self._read_memberships()
        snapshot = StoreSnapshot(self._keycloak.mirrored)
        await self._list_all(summary, total, progress, snapshot, road)
        self._memberships = None  # the confirmations below read each user's memberships with the user

        # Only a complete, error-free listing gets here.
        closing = await self._closing_scan(snapshot)
        del snapshot
        if closing.skipped:
            log.warning(
                "active local users with an external_id that is not a Keycloak id were skipped",
                count=closing.skipped,
            )
        if closing.changed:
            # Skipped by the snapshot, then written by someone else: what Keycloak says now decides.
            log.info(
                "documents changed during the listing; reading those users again", count=len(closing.changed)
            )
            summary.changed_during_listing = len(closing.changed)
            await self._read_again(summary, closing.changed)
        candidates = closing.candidates
        summary.candidates = len(candidates)
        active = closing.active
        limit = mass_deactivation_limit(
            active, settings.mass_deactivation_max_ratio, settings.mass_deactivation_min_count
        )
        summary.guard_limit = limit
        if len(candidates) > limit and not allow_mass_deactivation:
            summary.guard_tripped = True
            summary.outcome = Outcome.GUARD_TRIPPED
            summary.error = (
                f"mass-deactivation guard tripped: {len(candidates)} of {active} active users would be"
                f" deactivated, more than the limit of {limit}; nothing was deactivated"
            )
            if not summary.dry_run:
                metrics.MASS_DEACTIVATION_GUARD_TRIPS.inc()
            log.error(
                "MASS-DEACTIVATION GUARD TRIPPED: no user was deactivated",
                candidates=len(candidates),
                active_users=active,
                limit=limit,
                listed=summary.listed,
                keycloak_count=total,
                hint=(
                    "Keycloak listed far fewer users than the store holds as active; check the realm, the"
                    " client's permissions and Keycloak's health, then rerun with --allow-mass-deactivation"
                    " if the deactivations are really wanted"
                ),
            )
            await self._report(progress, summary, "done", total, 0, len(candidates))
            return
        if candidates and len(candidates) > limit:
            log.warning("mass-deactivation guard overridden", candidates=len(candidates), limit=limit)

        confirmed = 0
        for keys in batched(candidates, self._applier.batch_size):
            await self._read_again(summary, keys)
            confirmed += len(keys)
            await self._report(progress, summary, "confirming", total, confirmed, len(candidates))
        await self._report(progress, summary, "done", total, confirmed, len(candidates))

    async def _road(self, total: int) -> Road:
        """KEYCLOAK_LISTING, or with `auto` what Keycloak supports: probed once, at the first run that can
        tell (an empty realm cannot; it is listed by offset, which costs nothing there)."""
        setting = self._settings.keycloak_listing
        if setting != "auto":
            return Road(setting)
        if self._probed is None:
            self._probed = await probe_road(self._keycloak, total)
            if self._probed is not None:
                log.info(
                    "full reconcile listing road chosen",
                    road=self._probed.value,
                    reason="Keycloak filters users by creation time"
                    if self._probed is Road.WINDOWS
                    else "Keycloak ignores createdAfter/createdBefore (before 26.6)",
                )
        return self._probed or Road.OFFSET

    async def _read_again(self, summary: RunSummary, keys: Sequence[bytes]) -> None:
        """GetUser and apply: deactivation candidates, and users whose document changed during the listing."""
        for batch in batched(keys, self._applier.batch_size):
            ids = [str(uuid.UUID(bytes=key)) for key in batch]
            result = await self._store_retried(self._applier.observe_and_apply, ids, self._policy(summary))
            summary.add(result)
            self._collect_drift(summary, result.changes)

    async def _closing_scan(self, snapshot: StoreSnapshot) -> ClosingScan:
        """One scan of the store after a complete listing: the active users it did not list, the active count
        for the guard, and the users the snapshot skipped whose document changed or vanished since."""
        closing = ClosingScan()
        async for doc in self._store.scan_users(snapshot.fields):
            active = doc.get(F.IS_ACTIVE) is True
            closing.active += active
            key = user_key(doc.get(F.EXTERNAL_ID))
            if key is None:
                closing.skipped += active
            elif snapshot.listed(key):
                if snapshot.changed(key, doc):
                    closing.changed.append(key)
            elif active:
                closing.candidates.append(key)
        closing.changed.extend(key for key in snapshot.unvisited() if snapshot.listed(key))
        return closing

    async def _list_all(
        self,
        summary: RunSummary,
        total: int,
        progress: ProgressCallback | None,
        snapshot: StoreSnapshot,
        road: Road,
    ) -> None:
        """List every user and apply the pages; fills `snapshot` (when it is used) before the first apply, and
        marks in it every user listed."""
        self._last_log = 0.0
        scan = asyncio.ensure_future(snapshot.read(self._store)) if self._uses_snapshot() else None
        pages = self.pages(road, total)
        # Pages are requested while earlier ones are compared and written: a run costs about the larger of
        # Keycloak's and the store's time instead of their sum.
        try:
            while (item := await pages.next_page()) is not None:
                if scan is not None:  # read while the first pages were requested
                    await scan
                    scan = None
                    log.info("store snapshot read", users=len(snapshot))
                position, observed_at, page = item
                self._check_listing(position + page.size, total, road)
                await self._apply_page(summary, observed_at, page, snapshot)
                self._log_listing(summary, pages.applied, total, pages.complete)
                await self._report(progress, summary, "listing", total, 0, 0)
        finally:
            await pages.close()  # a failure mid-run: no orphaned request
            if scan is not None:
                scan.cancel()
                await asyncio.gather(scan, return_exceptions=True)
        self._log_road(pages, total)

    def pages(self, road: Road, total: int) -> RoadPages:
        """The road's pages of a realm of `total` users, as a run requests them (`next_page` until None,
        then `close`); the bench's listing floor reads them without applying."""
        return self._offset_pages(total) if road is Road.OFFSET else self._windowed_pages()

    def _offset_pages(self, total: int) -> OffsetPages:
        async def fetch(first: int, size: int) -> tuple[datetime, UserPage]:
            observed_at = self._applier.clock()  # stamped just before this page's own request
            return observed_at, await self._keycloak.list_user_page(first, size, brief=self._brief)

        depth = self._settings.keycloak_list_concurrency
        sizer = PageSizer(*self._settings.keycloak_page_size_bounds, depth)
        return OffsetPages(fetch, sizer, depth, total)

    def _windowed_pages(self) -> WindowedPages:
        """Windows of at most KEYCLOAK_PAGE_SIZE - 1 users over [0, Keycloak's clock + a margin], each
        listed in pages of KEYCLOAK_PAGE_SIZE: nearly every window is one request."""
        keycloak = self._keycloak

        async def fetch(window: Window, request: PageRequest) -> tuple[datetime, UserPage]:
            observed_at = self._applier.clock()  # stamped just before this page's own request
            created = (window.created_after, window.created_before)
            page = await keycloak.list_user_page(
                request.first, request.max, brief=self._brief, created=created
            )
            return observed_at, page

        self._window_total = None

        async def count(created_after: int, created_before: int) -> int:
            counted = await keycloak.count_created(created_after, created_before)
            if self._window_total is None:  # the planner's first count is of the whole range
                self._window_total = counted
            return counted

        now = keycloak.server_time_ms or int(time.time() * 1000)
        hi = min(max(now, MIN_CREATED_MS) + CLOCK_MARGIN_MS, MAX_CREATED_MS)
        depth = self._settings.keycloak_list_concurrency
        page_size = self._settings.keycloak_page_size
        limit = max(1, page_size - 1)
        windows = plan_windows(count, MIN_CREATED_MS, hi, limit, concurrency=depth)
        return WindowedPages(fetch, windows, page_size, depth, open_from_ms=now)

    def _log_road(self, pages: RoadPages, total: int) -> None:
        if isinstance(pages, WindowedPages):
            log.info(
                "full reconcile listed by creation-time windows",
                windows=pages.windows,
                pages=pages.applied,
                in_windows=self._window_total,
                keycloak_count=total,
            )
            if pages.returned == 0 and total > 0:
                raise self._keycloak.empty_listing_error(total)
            if self._window_total is not None and self._window_total < total:
                # Users without a creation time (rows written straight into the database) are in no
                # window: never deactivated for it (GetUser confirms), but read one by one every run.
                log.warning("users outside every creation-time window", count=total - self._window_total)
        elif isinstance(pages, OffsetPages) and pages.sizer.adaptive:
            log.info("full reconcile page sizes", last=pages.sizer.size, recent=pages.sizer.sizes[-20:])

    def _check_listing(self, position: int, total: int, road: Road) -> None:
        if road is Road.OFFSET and position == 0 and total > 0:
            # Keycloak counts users it does not list to us: a permission problem, not an empty realm.
            # (Only the first page can end at 0: every other one starts past it. A window's first page
            # can be empty under churn, so the windowed road checks the whole listing instead.)
            raise self._keycloak.empty_listing_error(total)
        if position > 2 * total + 10 * self._settings.keycloak_page_size_bounds[1]:
            # Far more users than Keycloak counted: it ignores `first`, or the realm churns wildly.
            # (Counted readable or not: a page of unreadable users repeated forever must stop too.)
            raise KeycloakProtocolError(
                f"user listing does not end: {position} users listed, Keycloak counted {total}"
            )

    async def _apply_page(
        self,
        summary: RunSummary,
        observed_at: datetime,
        page: UserPage,
        snapshot: StoreSnapshot,
    ) -> None:
        self._set_aside(summary, snapshot, page.unreadable)
        keys = [uuid.UUID(user.id).bytes for user in page.users]
        observations: list[Observation] = []
        unchanged: list[Change] = []
        users = page.users
        if self._memberships is not None:
            users = [self._memberships.of(user) for user in users]
            # Stamped no later than the member lists were read: an event-path write of a membership that
            # changed since then is newer, and this run's older view of it loses the guard (invariant 2).
            observed_at = min(observed_at, self._memberships.observed_at)
        for key, user in zip(keys, users, strict=True):
            observation = Observation(user.id, user, observed_at)
            if snapshot.unchanged(key, observation):
                unchanged.append(Change(Action.UNCHANGED, user.id))
            else:
                snapshot.forget(key)
                observations.append(observation)
            snapshot.mark_listed(key)
        summary.add(report(((change, change.action) for change in unchanged), self._policy(summary)))
        # In batches of APPLY_BATCH_SIZE: a store read of N ids costs more than N/100 reads of 100 (measured on
        # SecantusDB, BENCHMARKS.md), so a larger page only makes the listing cheaper.
        for batch in batched(observations, self._applier.batch_size):
            result = await self._store_retried(self._applier.apply, batch, self._policy(summary))
            summary.add(result)
            self._collect_drift(summary, result.changes)
        summary.listed += len(page.users)

    async def _store_retried(
        self,
        apply: Callable[[Sequence[T], ApplyPolicy], Awaitable[ApplyResult]],
        batch: Sequence[T],
        policy: ApplyPolicy,
    ) -> ApplyResult:
        """One batch, tried again (`mongodb_retry_attempts`) when the store timed out or was unreachable: a
        single slow command would otherwise fail a whole run. Safe because every write is a guarded apply;
        what a failed attempt did write is then counted as stale."""

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            metrics.STORE_RETRIES.inc()
            log.warning(
                "store failed during the full reconcile, trying the batch again",
                attempt=state.attempt_number,
                error=redact(str(error))[:300],
            )

        retrying = RetryPolicy.store_batch(self._settings).retrying(
            retry_if_exception_type(StoreUnavailable), before_sleep=log_retry
        )
        return await retrying(apply, batch, policy)

    def _log_listing(self, summary: RunSummary, pages: int, total: int, done: bool) -> None:
        now = time.monotonic()
        if not done and now - self._last_log < _PROGRESS_LOG_INTERVAL_S:
            log.debug("full reconcile listing", page=pages, listed=summary.listed, total=total)
            return
        self._last_log = now
        log.info(
            "full reconcile listing",
            page=pages,
            listed=summary.listed,
            total=total,
            **summary.applied.as_dict(),
        )

    def _policy(self, summary: RunSummary) -> ApplyPolicy:
        return ApplyPolicy.reconcile(dry_run=summary.dry_run)

    def _uses_snapshot(self) -> bool:
        # Group, role and organization names are not in the prints: with them mirrored every page is read
        # by id.
        settings = self._settings
        return (
            settings.reconcile_store_snapshot
            and not settings.sync_groups_and_roles
            and not settings.organizations_enabled
        )

    async def _read_memberships(self) -> Memberships | None:
        """ORGANIZATIONS_ENABLED: every organization and each one's member list, read once for the run (cost
        grows with organizations and memberships, not with users); None when off."""
        if not self._settings.organizations_enabled:
            return None
        observed_at = self._applier.clock()  # stamped before the first of these reads
        by_user = await self._keycloak.organization_memberships()
        log.info(
            "organization memberships read",
            users=len(by_user),
            memberships=sum(len(m) for m in by_user.values()),
        )
        return Memberships(observed_at, by_user)

    def _set_aside(
        self,
        summary: RunSummary,
        snapshot: StoreSnapshot,
        unreadable: list[UnreadableUser],
    ) -> None:
        """Users Keycloak listed but we cannot read are left as the store has them: counted, logged, and
        marked seen so that they are never deactivated for it."""
        for user in unreadable:
            summary.unreadable += 1
            if user.user_id is not None:
                key = uuid.UUID(user.user_id).bytes
                snapshot.mark_listed(key)
                snapshot.forget(key)  # not read again either
            if not summary.dry_run:
                metrics.UNREADABLE_USERS.inc()
            log.error(
                "a listed user's representation cannot be read; the user is left as stored",
                user_id=user.user_id,
                reason=user.reason,
            )

    def _collect_drift(self, summary: RunSummary, changes: list[Change]) -> None:
        if not summary.dry_run:
            return
        for change in changes:
            items = summary.drift.setdefault(change.action, [])
            if len(items) < DRIFT_USERS_KEPT:
                shown = dict(list(change.diff.items())[:DRIFT_FIELDS_SHOWN])
                items.append(DriftItem(change.external_id, shown))

    @staticmethod
    async def _report(
        progress: ProgressCallback | None,
        summary: RunSummary,
        phase: str,
        total: int | None,
        confirmed: int,
        candidates: int,
    ) -> None:
        if progress is None:
            return
        outcome = progress(Progress(summary.run_id, phase, summary.listed, total, confirmed, candidates))
        if inspect.isawaitable(outcome):
            await outcome
