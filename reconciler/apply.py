"""The apply core: what Keycloak says about a user -> the store change. The only place that decides.

Shaped like controller-runtime's `Reconciler`: level-triggered. Callers (the full reconcile, the Kafka event
path, replay) only say *which* users to look at; the decision is made from Keycloak's current state and the
stored document, so applying the same users any number of times, in any order, converges (invariant 1).

- `desired_document(observation)` — the mirrored fields Keycloak's state implies (pure).
- `plan(observations, current_docs, ...)` — one `Change` per user: created, updated, deactivated, reactivated,
  unchanged or stale, with the guarded `UserWrite` to execute (pure, no I/O).
- `Applier` — reads the stored documents of a batch in one query, plans, and writes only what changed in one
  bulk write; `observe_and_apply(ids)` first reads the users from Keycloak.

Decisions (see also DESIGN.md):
- A user Keycloak does not have (404) deactivates an *active* local document with `deleted_in_keycloak`; no
  document is ever created for it. An already inactive document gets the reason `deleted_in_keycloak` if it
  still said `disabled_in_keycloak` (counted as an update), else nothing happens.
- A disabled user deactivates with `disabled_in_keycloak`; a disabled user without a document is *created
  inactive*, so that the mirror is complete (the application can tell "disabled" from "never seen").
- An enabled user whose document is inactive is reactivated: `is_active` true, `deactivated_at` and
  `deactivation_reason` removed. The profile is refreshed in the same write.
- The full reconcile does not write unchanged users at all (not even `observed_at`), so a second run over an
  unchanged realm writes nothing. The event and replay paths do record `observed_at` of an unchanged user
  (a guarded write of that one field): otherwise an older observation still in flight elsewhere (a reconcile
  page, another replica) could overwrite a state that was just confirmed.
- A user not found while no local document exists gets no user document, but a tombstone (its id and the
  time of the 404, kept a day): an older observation of that user applied afterwards (a reconcile page, a
  retried hint, another replica) is then stale instead of creating it active. The tombstone is read and
  written in separate steps from the user write, so two replicas racing within milliseconds can still
  create it; the next full reconcile confirms such a user as a candidate and deactivates it.
- A document observed at or after the observation is left alone ("stale"); the store's filter guard repeats
  that check atomically at write time.
- Empty strings from Keycloak (first name, last name, email, picture) are stored as null.
- Group and realm-role names (sorted) are mirrored only with `sync_groups_and_roles`; otherwise those fields
  are neither compared nor written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, TypeVar

from reconciler import metrics
from reconciler.config import Settings
from reconciler.keycloak import KeycloakAdminClient
from reconciler.logs import get_logger
from reconciler.models import DeactivationReason, KeycloakUser, Observation, SyncedBy
from reconciler.store import F, UserStore, UserWrite, WriteStatus, utc_now

log = get_logger(__name__)
T = TypeVar("T")

ACCESS_FIELDS: Final[tuple[str, ...]] = (F.GROUPS, F.REALM_ROLES)


class Action(StrEnum):
    """What the apply core did (or would do) with one user; also the `action` label of USER_CHANGES."""

    CREATED = "created"
    UPDATED = "updated"
    DEACTIVATED = "deactivated"
    REACTIVATED = "reactivated"
    UNCHANGED = "unchanged"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class Change:
    """The decision for one user: an action, the guarded write that carries it out (None: nothing to write),
    and the fields that differ (field -> (stored, desired)) for logs and dry runs."""

    action: Action
    external_id: str
    write: UserWrite | None = None
    diff: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class ApplyResult:
    """Counts per action of one or more applies, plus the planned changes when asked to keep them."""

    counts: dict[Action, int] = field(default_factory=lambda: dict.fromkeys(Action, 0))
    changes: list[Change] = field(default_factory=list)

    def __getitem__(self, action: Action) -> int:
        return self.counts[action]

    @property
    def written(self) -> int:
        """Documents created or changed."""
        return sum(
            self.counts[a] for a in (Action.CREATED, Action.UPDATED, Action.DEACTIVATED, Action.REACTIVATED)
        )

    def add(self, other: ApplyResult) -> None:
        for action, count in other.counts.items():
            self.counts[action] += count
        self.changes.extend(other.changes)


# --- observation clock --------------------------------------------------------------------------------------


class ObservationClock:
    """UTC timestamps at BSON (millisecond) precision, strictly increasing within the process.

    Take a stamp *before* each Keycloak read: the read then reflects Keycloak at some instant at or after the
    stamp, and a later read in this process always carries a later stamp, so it wins the `observed_at` guard.
    """

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now = utc_now()
            if now <= self._last:
                now = self._last + timedelta(milliseconds=1)
            self._last = now
            return now


observation_time = ObservationClock()


# --- pure decisions -----------------------------------------------------------------------------------------


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def display_name(first_name: str | None, last_name: str | None, username: str) -> str:
    """ "first last" trimmed; the username when both are empty."""
    name = " ".join(part for part in (_clean(first_name), _clean(last_name)) if part)
    return name or username


def desired_document(observation: Observation) -> dict[str, Any]:
    """The mirrored fields Keycloak's state implies for one observation (pure).

    A found user yields its profile, `is_active` and `deactivation_reason` (None when active), plus `groups`
    and `realm_roles` when they were fetched; a user not found yields only the deactivated state.
    """
    user = observation.user
    if user is None:
        return {F.IS_ACTIVE: False, F.DEACTIVATION_REASON: DeactivationReason.DELETED.value}
    doc: dict[str, Any] = {
        F.USERNAME: user.username,
        F.EMAIL: _clean(user.email),
        F.EMAIL_VERIFIED: user.email_verified,
        F.FIRST_NAME: _clean(user.first_name),
        F.LAST_NAME: _clean(user.last_name),
        F.DISPLAY_NAME: display_name(user.first_name, user.last_name, user.username),
        F.AVATAR_URL: _clean(user.avatar_url),
        F.IS_ACTIVE: user.enabled,
        F.DEACTIVATION_REASON: None if user.enabled else DeactivationReason.DISABLED.value,
    }
    if user.groups is not None:
        doc[F.GROUPS] = sorted(set(user.groups))
    if user.realm_roles is not None:
        doc[F.REALM_ROLES] = sorted(set(user.realm_roles))
    return doc


def _latest(observations: Iterable[Observation]) -> dict[str, Observation]:
    latest: dict[str, Observation] = {}
    for obs in observations:
        seen = latest.get(obs.user_id)
        if seen is None or obs.observed_at > seen.observed_at:
            latest[obs.user_id] = obs
    return latest


def plan(
    observations: Iterable[Observation],
    current_docs: Mapping[str, Mapping[str, Any]],
    *,
    synced_by: SyncedBy,
    now: datetime,
    sync_groups_and_roles: bool = False,
    touch_unchanged: bool = False,
    tombstones: Mapping[str, datetime] | None = None,
) -> list[Change]:
    """Decide, for each observed user, what the store needs (pure; one Change per distinct user id).

    `current_docs` maps external_id -> stored document (at least the compared fields and `observed_at`).
    Several observations of one user collapse into the latest one. With `touch_unchanged`, an unchanged
    existing document still gets a guarded write of `observed_at` alone, so that an older observation still
    in flight elsewhere cannot overwrite the state just confirmed. `tombstones` (external_id -> time of a
    404 that found no document) make an older observation of such a user stale instead of creating it.
    """
    changes: list[Change] = []
    for user_id, obs in _latest(observations).items():
        died_at = (tombstones or {}).get(user_id)
        if user_id not in current_docs and died_at is not None and died_at >= obs.observed_at:
            changes.append(Change(Action.STALE, user_id))
            continue
        change = _plan_one(
            obs, current_docs.get(user_id), synced_by=synced_by, now=now, sync_access=sync_groups_and_roles
        )
        if touch_unchanged and change.action is Action.UNCHANGED and user_id in current_docs:
            change = Change(Action.UNCHANGED, user_id, UserWrite(user_id, obs.observed_at, {}))
        changes.append(change)
    return changes


def _plan_one(
    obs: Observation, doc: Mapping[str, Any] | None, *, synced_by: SyncedBy, now: datetime, sync_access: bool
) -> Change:
    desired = desired_document(obs)
    if not sync_access:
        for name in ACCESS_FIELDS:
            desired.pop(name, None)
    stored_at = doc.get(F.OBSERVED_AT) if doc is not None else None
    if isinstance(stored_at, datetime) and stored_at >= obs.observed_at:
        return Change(Action.STALE, obs.user_id)

    if obs.user is None:
        # Deleted in Keycloak: only a document that says otherwise is touched; none is ever created.
        if doc is None:
            return Change(Action.UNCHANGED, obs.user_id)
        diff = _diff(doc, desired)
        if not diff:
            return Change(Action.UNCHANGED, obs.user_id)
        was_active = doc.get(F.IS_ACTIVE, True) is not False
        set_fields: dict[str, Any] = {**desired, F.UPDATED_AT: now, F.SYNCED_BY: synced_by.value}
        if was_active:
            set_fields[F.DEACTIVATED_AT] = now
        write = UserWrite(obs.user_id, obs.observed_at, set_fields)
        return Change(Action.DEACTIVATED if was_active else Action.UPDATED, obs.user_id, write, diff)

    will_be_active = desired[F.IS_ACTIVE] is True
    base: dict[str, Any] = {F.EXTERNAL_ID: obs.user_id, F.CREATED_AT: now}
    if doc is None:
        set_fields = {**desired, F.UPDATED_AT: now, F.SYNCED_BY: synced_by.value}
        if will_be_active:
            set_fields.pop(F.DEACTIVATION_REASON)
        else:
            set_fields[F.DEACTIVATED_AT] = now
        write = UserWrite(obs.user_id, obs.observed_at, set_fields, insert_fields=base)
        return Change(Action.CREATED, obs.user_id, write, _diff({}, desired))

    diff = _diff(doc, desired)
    if not diff:
        return Change(Action.UNCHANGED, obs.user_id)
    was_active = doc.get(F.IS_ACTIVE, True) is not False
    set_fields = {**desired, F.UPDATED_AT: now, F.SYNCED_BY: synced_by.value}
    unset: tuple[str, ...] = ()
    insert_fields = dict(base)
    if will_be_active:
        set_fields.pop(F.DEACTIVATION_REASON)
        unset = (F.DEACTIVATED_AT, F.DEACTIVATION_REASON)
        action = Action.UPDATED if was_active else Action.REACTIVATED
    elif was_active:
        set_fields[F.DEACTIVATED_AT] = now
        action = Action.DEACTIVATED
    else:
        # Stays inactive (profile or reason changed): keep the original deactivated_at, but a document that
        # vanished meanwhile is recreated complete.
        insert_fields[F.DEACTIVATED_AT] = now
        action = Action.UPDATED
    # All desired fields are set (not only the changed ones): if the document vanished since it was read,
    # the upsert recreates it whole.
    write = UserWrite(obs.user_id, obs.observed_at, set_fields, unset, insert_fields)
    return Change(action, obs.user_id, write, diff)


def _diff(doc: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    diff: dict[str, tuple[Any, Any]] = {}
    for name, want in desired.items():
        have = doc.get(name)
        if have != want:
            diff[name] = (have, want)
    return diff


# --- the applier --------------------------------------------------------------------------------------------


class Applier:
    """Applies observations to the store: one store read and at most one bulk write per batch.

    Shared by the full reconcile, the event path and replay. With `sync_groups_and_roles` on, the groups and
    realm roles of every found user in a batch are read from Keycloak before deciding (two more requests per
    user, bounded by the client's concurrency).
    """

    def __init__(
        self,
        store: UserStore,
        keycloak: KeycloakAdminClient,
        settings: Settings,
        *,
        clock: ObservationClock = observation_time,
    ) -> None:
        self._store = store
        self._keycloak = keycloak
        self._sync_access = settings.sync_groups_and_roles
        self._chunk = settings.keycloak_page_size
        self.clock = clock

    async def apply(
        self,
        observations: Sequence[Observation],
        synced_by: SyncedBy,
        *,
        dry_run: bool = False,
        keep_changes: bool = False,
        touch_unchanged: bool | None = None,
    ) -> ApplyResult:
        """Bring the store in line with these observations. Counts are of what was actually written.

        `dry_run` reads and decides but writes nothing (and counts no metrics); the planned changes are
        kept in the result when `dry_run` or `keep_changes` is set. `touch_unchanged` (default: on for the
        event and replay paths, off for the full reconcile, whose unchanged users must cost no write) records
        the newer `observed_at` of unchanged users, see `plan`.
        """
        result = ApplyResult()
        if not observations:
            return result
        if touch_unchanged is None:
            touch_unchanged = synced_by is not SyncedBy.RECONCILE
        if self._sync_access:
            observations = await self._with_access(observations)
        current = await self._store.find_by_external_ids(o.user_id for o in observations)
        undocumented = {o.user_id for o in observations if o.user_id not in current}
        tombstones = await self._store.find_tombstones(
            o.user_id for o in observations if o.user is not None and o.user_id in undocumented
        )
        changes = plan(
            observations,
            current,
            synced_by=synced_by,
            now=utc_now(),
            sync_groups_and_roles=self._sync_access,
            touch_unchanged=touch_unchanged and not dry_run,
            tombstones=tombstones,
        )
        if not dry_run:
            await self._store.record_tombstones(
                [
                    (o.user_id, o.observed_at)
                    for o in observations
                    if o.user is None and o.user_id in undocumented
                ]
            )
        if dry_run or keep_changes:
            result.changes = [c for c in changes if c.write is not None and c.action is not Action.UNCHANGED]
        writes = [c for c in changes if c.write is not None]
        for change in changes:
            if change.write is None:
                result.counts[change.action] += 1
        if dry_run:
            for change in writes:
                result.counts[change.action] += 1
            return result
        outcome = await self._store.write_users([c.write for c in writes if c.write is not None])
        for change, status in zip(writes, outcome.statuses, strict=True):
            action = change.action
            if status is WriteStatus.STALE:
                action = Action.STALE
            elif change.action is Action.UNCHANGED:
                pass  # a touch of observed_at only
            elif change.action is Action.CREATED and status is WriteStatus.UPDATED:
                action = Action.UPDATED  # someone created it meanwhile, with an older observation
            result.counts[action] += 1
            if action is Action.DEACTIVATED and change.write is not None:
                reason = change.write.set_fields.get(F.DEACTIVATION_REASON)
                log.info(
                    "user deactivated",
                    external_id=change.external_id,
                    reason=reason,
                    synced_by=synced_by.value,
                )
            elif action is Action.REACTIVATED:
                log.info("user reactivated", external_id=change.external_id, synced_by=synced_by.value)
            elif action not in (Action.STALE, Action.UNCHANGED):
                log.debug(f"user {action.value}", external_id=change.external_id, fields=sorted(change.diff))
        for action, count in result.counts.items():
            if count:
                metrics.USER_CHANGES.labels(action=action.value, synced_by=synced_by.value).inc(count)
        return result

    async def observe(self, user_ids: Sequence[str]) -> list[Observation]:
        """Read these users from Keycloak now, concurrently (bounded by the client), each stamped just
        before its read. Raises the client's errors (KeycloakUnavailable, KeycloakConfigError, InvalidUserId).
        """

        async def one(user_id: str) -> Observation:
            observed_at = self.clock()
            return Observation(user_id, await self._keycloak.get_user(user_id), observed_at)

        return await _gather_all(one(user_id) for user_id in dict.fromkeys(user_ids))

    async def observe_and_apply(
        self,
        user_ids: Sequence[str],
        synced_by: SyncedBy,
        *,
        dry_run: bool = False,
        keep_changes: bool = False,
    ) -> ApplyResult:
        """Read the users from Keycloak and apply what it says, in batches of `keycloak_page_size`.

        For one id (the event path) that is one GET, one store read and one small write: the change, or for
        an unchanged user on the event/replay paths a guarded touch of `observed_at` (see `plan`).
        """
        result = ApplyResult()
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), self._chunk):
            observations = await self.observe(ids[start : start + self._chunk])
            result.add(await self.apply(observations, synced_by, dry_run=dry_run, keep_changes=keep_changes))
        return result

    async def _with_access(self, observations: Sequence[Observation]) -> list[Observation]:
        """Fill in groups and realm roles of found users; a 404 on those reads means the user is gone."""

        async def one(obs: Observation) -> Observation:
            user = obs.user
            if user is None or (user.groups is not None and user.realm_roles is not None):
                return obs
            groups, roles = await asyncio.gather(
                self._keycloak.user_groups(user.id), self._keycloak.user_realm_roles(user.id)
            )
            if groups is None or roles is None:
                # Deleted after the user read, which was itself after the stamp: "not found" holds as of then.
                return Observation(obs.user_id, None, obs.observed_at)
            enriched: KeycloakUser = dataclasses.replace(user, groups=groups, realm_roles=roles)
            return Observation(obs.user_id, enriched, obs.observed_at)

        return await _gather_all(one(obs) for obs in observations)


async def _gather_all(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run all, and if one fails cancel the rest before raising (no orphaned requests)."""
    tasks: list[asyncio.Task[T]] = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
