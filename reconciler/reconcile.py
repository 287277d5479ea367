"""The full reconcile: the level-triggered safety net behind the event path.

One run:

1. counts Keycloak's users (for progress), then pages through them (`keycloak_page_size`, offset paging),
   each page stamped with `observed_at` just before its request and applied through the `Applier` (one store
   read and at most one bulk write per page);
2. remembers only a compact set of seen ids (16-byte UUIDs), never the users (invariant 7);
3. only after a complete, error-free listing: deactivation candidates = active local users not seen;
4. the mass-deactivation guard: more candidates than `max(mass_deactivation_min_count,
   mass_deactivation_max_ratio * active users)` -> nothing is deactivated, the run says so loudly
   (`guard_tripped`), unless the caller allows it explicitly;
5. confirms every candidate with a GetUser through the `Applier`: 404 -> deactivated (deleted), disabled ->
   deactivated (disabled), found and enabled -> applied as an update (offset paging skipped it because users
   were created or deleted meanwhile).

Pages are listed with the *full* representation: the brief one (Keycloak 26.5) carries no attributes and
so no `picture`, and the avatar would read as removed. The cost is a larger response and Keycloak loading
every listed user's attributes; with `sync_groups_and_roles` each listed user also costs two more requests.

A failure anywhere (Keycloak, store) fails the run: what was written stays written (it is correct: every
write is a guarded apply of a real observation), nothing is deactivated, and the run record says `failed`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import structlog
from pymongo.errors import PyMongoError

from reconciler import metrics
from reconciler.apply import Action, Applier, ApplyResult, Change
from reconciler.config import Settings
from reconciler.keycloak import (
    KeycloakAdminClient,
    KeycloakConfigError,
    KeycloakError,
    KeycloakProtocolError,
    KeycloakUnavailable,
    UnreadableUser,
    UserPage,
)
from reconciler.logs import get_logger, redact
from reconciler.models import Observation, SyncedBy
from reconciler.store import StoreError, UserStore, utc_now

log = get_logger(__name__)

DRIFT_FIELDS_SHOWN: Final = 5
_PROGRESS_LOG_INTERVAL_S: Final = 5.0


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    GUARD_TRIPPED = "guard_tripped"
    CANCELLED = "cancelled"


class ErrorKind(StrEnum):
    """Why a run failed, for exit codes and alerts."""

    KEYCLOAK_CONFIG = "keycloak_config"  # credentials, permissions, realm, URL
    KEYCLOAK_UNAVAILABLE = "keycloak_unavailable"  # unreachable / 5xx / timeouts after retries
    KEYCLOAK_PROTOCOL = "keycloak_protocol"  # an answer the client does not understand
    STORE = "store"  # MongoDB unreachable or refusing
    INTERNAL = "internal"  # a bug


@dataclass(frozen=True, slots=True)
class DriftItem:
    """One user a dry run would change, with a few of the fields that differ (field -> [stored, desired])."""

    external_id: str
    diff: Mapping[str, tuple[Any, Any]]


@dataclass(slots=True)
class RunSummary:
    """What one full reconcile did (or, in a dry run, would do)."""

    run_id: str
    started_at: datetime
    dry_run: bool = False
    outcome: Outcome = Outcome.SUCCESS
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    reactivated: int = 0
    unchanged: int = 0
    stale: int = 0
    listed: int = 0  # users Keycloak listed
    unreadable: int = 0  # listed users whose representation could not be read (kept as they are)
    candidates: int = 0  # active local users the listing did not contain
    guard_tripped: bool = False
    guard_limit: int | None = None
    duration_s: float = 0.0
    error: str | None = None
    error_kind: ErrorKind | None = None
    drift: dict[str, list[DriftItem]] = field(default_factory=dict)  # dry run: action -> users (capped)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS

    def counts(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "deactivated": self.deactivated,
            "reactivated": self.reactivated,
            "unchanged": self.unchanged,
            "stale": self.stale,
            "listed": self.listed,
            "unreadable": self.unreadable,
            "candidates": self.candidates,
        }

    def add(self, result: ApplyResult) -> None:
        self.created += result[Action.CREATED]
        self.updated += result[Action.UPDATED]
        self.deactivated += result[Action.DEACTIVATED]
        self.reactivated += result[Action.REACTIVATED]
        self.unchanged += result[Action.UNCHANGED]
        self.stale += result[Action.STALE]

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
            "error_kind": self.error_kind.value if self.error_kind else None,
        }
        if self.dry_run:
            data["drift"] = {
                action: [{"external_id": item.external_id, "diff": _jsonable(item.diff)} for item in items]
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


def mass_deactivation_limit(active: int, max_ratio: float, min_count: int) -> int:
    """The most deactivations one run may make: `max(min_count, floor(max_ratio * active))`."""
    return max(min_count, int(max_ratio * active))


def guard_trips(candidates: int, active: int, max_ratio: float, min_count: int) -> bool:
    """True when `candidates` is more than the share of active users one run may deactivate (and more than
    `min_count`)."""
    return candidates > mass_deactivation_limit(active, max_ratio, min_count)


def _jsonable(diff: Mapping[str, tuple[Any, Any]]) -> dict[str, list[Any]]:
    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, StrEnum):
            return value.value
        return value

    return {name: [plain(old), plain(new)] for name, (old, new) in diff.items()}


def _error_kind(error: BaseException) -> ErrorKind:
    if isinstance(error, KeycloakConfigError):
        return ErrorKind.KEYCLOAK_CONFIG
    if isinstance(error, KeycloakUnavailable):
        return ErrorKind.KEYCLOAK_UNAVAILABLE
    if isinstance(error, KeycloakError):
        return ErrorKind.KEYCLOAK_PROTOCOL
    if isinstance(error, PyMongoError | StoreError):
        return ErrorKind.STORE
    return ErrorKind.INTERNAL


def _describe(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return redact(f"{type(error).__name__}: {text}" if text else type(error).__name__)[:500]


def _canonical_uuid_bytes(value: str) -> bytes | None:
    """16 bytes of a canonical (lower-case, hyphenated) UUID string; None for anything else."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
    return parsed.bytes if str(parsed) == value else None


class FullReconcile:
    """Runs full reconciles of one realm into one store (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: UserStore,
        keycloak: KeycloakAdminClient,
        *,
        applier: Applier | None = None,
        holder: str | None = None,
        drift_limit: int = 1000,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keycloak = keycloak
        self._applier = applier or Applier(store, keycloak, settings)
        self._holder = holder
        self._drift_limit = drift_limit

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
            log.info("full reconcile started", realm=self._settings.keycloak_realm)
            recorded = False
            try:
                if not dry_run:
                    await self._store.start_run(summary.run_id, summary.started_at, self._holder)
                    recorded = True
                await self._run(summary, allow_mass_deactivation, progress)
            except Exception as error:
                summary.outcome = Outcome.FAILED
                summary.error_kind = _error_kind(error)
                summary.error = _describe(error)
                if summary.error_kind is ErrorKind.INTERNAL:
                    log.exception("full reconcile failed", error=summary.error)
                else:
                    log.error(
                        "full reconcile failed", error=summary.error, error_kind=summary.error_kind.value
                    )
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
                summary.run_id, utc_now(), summary.outcome.value, summary.counts(), summary.error
            )
        except Exception as error:  # the run's result stands; only its record is missing
            log.warning("could not record the end of the run", error=_describe(error))

    async def _run(
        self, summary: RunSummary, allow_mass_deactivation: bool, progress: ProgressCallback | None
    ) -> None:
        settings = self._settings
        total = await self._keycloak.count_users()
        seen = await self._list_all(summary, total, progress)

        # Only a complete, error-free listing gets here.
        candidates: list[bytes] = []
        skipped = 0
        async for external_id in self._store.list_active_external_ids():
            key = _canonical_uuid_bytes(external_id)
            if key is None:
                skipped += 1
            elif key not in seen:
                candidates.append(key)
        del seen
        if skipped:
            log.warning(
                "active local users with an external_id that is not a Keycloak id were skipped", count=skipped
            )
        summary.candidates = len(candidates)
        active = await self._store.count_active()
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
        chunk = settings.keycloak_page_size
        for start in range(0, len(candidates), chunk):
            ids = [str(uuid.UUID(bytes=key)) for key in candidates[start : start + chunk]]
            result = await self._applier.observe_and_apply(
                ids, SyncedBy.RECONCILE, dry_run=summary.dry_run, keep_changes=summary.dry_run
            )
            summary.add(result)
            self._collect_drift(summary, result.changes)
            confirmed += len(ids)
            await self._report(progress, summary, "confirming", total, confirmed, len(candidates))
        await self._report(progress, summary, "done", total, confirmed, len(candidates))

    async def _list_all(
        self, summary: RunSummary, total: int, progress: ProgressCallback | None
    ) -> set[bytes]:
        page_size = self._settings.keycloak_page_size
        seen: set[bytes] = set()
        pages = 0
        last_log = 0.0

        position = 0  # items listed so far, readable or not (the next page's `first`)

        async def fetch(first: int) -> tuple[datetime, UserPage]:
            observed_at = self._applier.clock()  # stamped just before this page's request
            return observed_at, await self._keycloak.list_user_page(first, page_size, brief=False)

        # The next page is fetched while this one is compared and written: a run costs about the larger of
        # Keycloak's and the store's time instead of their sum, and holds at most two pages.
        next_page: asyncio.Task[tuple[datetime, UserPage]] | None = asyncio.create_task(fetch(0))
        try:
            while next_page is not None:
                observed_at, page = await next_page
                next_page = None
                pages += 1
                position += page.size
                done = page.size < page_size
                if not done:
                    next_page = asyncio.create_task(fetch(position))
                users = page.users
                self._set_aside(summary, seen, page.unreadable)
                if users:
                    observations = [Observation(user.id, user, observed_at) for user in users]
                    result = await self._applier.apply(
                        observations,
                        SyncedBy.RECONCILE,
                        dry_run=summary.dry_run,
                        keep_changes=summary.dry_run,
                    )
                    summary.add(result)
                    self._collect_drift(summary, result.changes)
                    seen.update(uuid.UUID(user.id).bytes for user in users)
                    summary.listed += len(users)
                if position > 2 * total + 10 * page_size:
                    # Far more users than Keycloak counted: it ignores `first`, or the realm churns wildly.
                    # (Counted readable or not: a page of unreadable users repeated forever must stop too.)
                    raise KeycloakProtocolError(
                        f"user listing does not end: {position} users listed, Keycloak counted {total}"
                    )
                now = time.monotonic()
                if done or now - last_log >= _PROGRESS_LOG_INTERVAL_S:
                    last_log = now
                    log.info(
                        "full reconcile listing",
                        page=pages,
                        listed=summary.listed,
                        total=total,
                        **_short(summary),
                    )
                else:
                    log.debug("full reconcile listing", page=pages, listed=summary.listed, total=total)
                await self._report(progress, summary, "listing", total, 0, 0)
        finally:
            if next_page is not None:  # a failure mid-run: no orphaned request
                next_page.cancel()
                await asyncio.wait([next_page])  # (its own error or cancellation is not ours to raise)
        return seen

    def _set_aside(self, summary: RunSummary, seen: set[bytes], unreadable: list[UnreadableUser]) -> None:
        """Users Keycloak listed but we cannot read are left as the store has them: counted, logged, and
        marked seen so that they are never deactivated for it."""
        for user in unreadable:
            summary.unreadable += 1
            if user.user_id is not None:
                seen.add(uuid.UUID(user.user_id).bytes)
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
            items = summary.drift.setdefault(change.action.value, [])
            if len(items) < self._drift_limit:
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


def _short(summary: RunSummary) -> dict[str, int]:
    return {
        "created": summary.created,
        "updated": summary.updated,
        "deactivated": summary.deactivated,
        "reactivated": summary.reactivated,
        "stale": summary.stale,
    }


async def run_full_reconcile(
    settings: Settings,
    store: UserStore,
    keycloak: KeycloakAdminClient,
    *,
    dry_run: bool = False,
    allow_mass_deactivation: bool = False,
    progress: ProgressCallback | None = None,
    holder: str | None = None,
) -> RunSummary:
    """Convenience: one `FullReconcile(...).run(...)`."""
    return await FullReconcile(settings, store, keycloak, holder=holder).run(
        dry_run=dry_run, allow_mass_deactivation=allow_mass_deactivation, progress=progress
    )
