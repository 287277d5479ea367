"""The apply core's decisions, pure: Keycloak's state of users + their stored documents -> a plan.

Step one of three (docs/ARCHITECTURE.md, "The apply core"): `plan` decides everything, `apply.execute_plan`
performs the writes and reports what the store did, `apply.report` logs, counts and measures. Level-triggered
like controller-runtime's `Reconciler`: callers only say *which* users to look at; the decision is made from
Keycloak's current state and the stored document, so applying the same users any number of times, in any
order, converges (invariant 1).

Decisions:
- A user Keycloak does not have (404) deactivates an *active* local document with `deleted_in_keycloak`; no
  document is ever created for it. An already inactive document gets the reason `deleted_in_keycloak` if it
  still said `disabled_in_keycloak` (counted as an update), else nothing happens.
- A disabled user deactivates with `disabled_in_keycloak`; a disabled user without a document is *created
  inactive*, so that the mirror is complete (the application can tell "disabled" from "never seen").
- An enabled user whose document is inactive is reactivated: `is_active` true, `deactivated_at` and
  `deactivation_reason` removed. The profile is refreshed in the same write.
- The full reconcile does not write unchanged users at all (not even `observed_at`), so a second run over an
  unchanged realm writes nothing. The event and replay paths do record `observed_at` of an unchanged user
  (`ApplyPolicy.touch_unchanged`, a guarded write of that one field): otherwise an older observation still in
  flight elsewhere (a reconcile page, another replica) could overwrite a state that was just confirmed.
- A user not found while no local document exists gets no user document, but a tombstone (its id and the
  time of the 404, kept a day): an older observation of that user applied afterwards (a reconcile page, a
  retried hint, another replica) is then stale instead of creating it active. The tombstone is read and
  written in separate steps from the user write, so two replicas racing within milliseconds can still
  create it; the next full reconcile confirms such a user as a candidate and deactivates it.
- A document observed at or after the observation is left alone ("stale"); the store's filter guard repeats
  that check atomically at write time (invariant 2).
- Empty strings from Keycloak (first name, last name, email, mirrored attributes) are stored as null. The
  mirrored attributes and their fields are the policy's `AttributeMap` (MIRRORED_ATTRIBUTES; by default
  `picture` -> `avatar_url`).
- Group and realm-role names (sorted) are mirrored only with `sync_groups_and_roles`; otherwise those fields
  are neither compared nor written.
- Organization memberships (`organizations`, sorted by organization id) are mirrored only when the read
  fetched them (`organizations_enabled`); otherwise the field is neither compared nor written.
- Erased documents (`erased_at` set, personal fields removed: `apply.erasure`) get personal fields back only
  from a read that finds the user *enabled* in Keycloak: the user reappeared, so it is mirrored again and
  `erased_at` is removed. A 404 writes only the deactivated state (as for every document), and a user found
  disabled writes only `is_active` and `deactivation_reason`, so a replay, a late event, a sweep, a database
  change or a full reconcile never brings personal data back. A write that sets the personal fields of a
  disabled user is `unless_erased`: an erasure between the store read and the write wins. Every write that
  sets personal fields removes `erased_at`, so a document never has both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from reconciler.domain.attributes import DEFAULT_ATTRIBUTE_MAP, AttributeMap
from reconciler.domain.document import F, UserWrite, is_erased
from reconciler.domain.models import DeactivationReason, Observation, OrganizationMembership, SyncedBy

ACCESS_FIELDS: Final[tuple[str, ...]] = (F.GROUPS, F.REALM_ROLES)


class Action(StrEnum):
    """What the apply core did (or would do) with one user; also the `action` label of USER_CHANGES."""

    CREATED = "created"
    UPDATED = "updated"
    DEACTIVATED = "deactivated"
    REACTIVATED = "reactivated"
    UNCHANGED = "unchanged"
    STALE = "stale"


WRITING_ACTIONS: Final = (Action.CREATED, Action.UPDATED, Action.DEACTIVATED, Action.REACTIVATED)


@dataclass(frozen=True, slots=True)
class ApplyPolicy:
    """How a path applies: who writes (`synced_by`), whether an unchanged user still gets its newer
    `observed_at` recorded (`touch_unchanged`), whether anything is written at all (`dry_run`), whether
    groups and realm roles are mirrored (`sync_access`), and which attributes into which fields
    (`mirrored`; the applier sets both from the settings)."""

    synced_by: SyncedBy
    touch_unchanged: bool = False
    dry_run: bool = False
    sync_access: bool = False
    mirrored: AttributeMap = DEFAULT_ATTRIBUTE_MAP

    @classmethod
    def event(cls, *, sync_access: bool = False, synced_by: SyncedBy = SyncedBy.EVENT) -> ApplyPolicy:
        """The event path (and replay): unchanged users are touched, see the module docstring."""
        return cls(synced_by, touch_unchanged=True, sync_access=sync_access)

    @classmethod
    def reconcile(cls, *, dry_run: bool = False, sync_access: bool = False) -> ApplyPolicy:
        """The full reconcile: unchanged users cost no write."""
        return cls(SyncedBy.RECONCILE, touch_unchanged=False, dry_run=dry_run, sync_access=sync_access)


@dataclass(frozen=True, slots=True)
class Change:
    """The decision for one user: an action, the guarded write that carries it out (None: nothing to write),
    and the fields that differ (field -> (stored, desired)) for logs and dry runs."""

    action: Action
    external_id: str
    write: UserWrite | None = None
    diff: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a batch needs from the store: one change per user, and the tombstones to record (the
    external_id and time of each 404 that found no document)."""

    changes: list[Change]
    tombstones: list[tuple[str, datetime]] = field(default_factory=list)


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def display_name(first_name: str | None, last_name: str | None, username: str) -> str:
    """ "first last" trimmed; the username when both are empty."""
    name = " ".join(part for part in (_clean(first_name), _clean(last_name)) if part)
    return name or username


def organization_entries(memberships: Iterable[OrganizationMembership]) -> list[dict[str, Any]]:
    """The stored form of a user's organization memberships: one entry per organization id, sorted by id."""
    by_id = {m.id: m for m in sorted(memberships)}
    return [
        {"id": m.id, "alias": m.alias, "name": m.name, "membership_type": m.membership_type.value}
        for _, m in sorted(by_id.items())
    ]


def desired_document(observation: Observation, mirrored: AttributeMap) -> dict[str, Any]:
    """The mirrored fields Keycloak's state implies for one observation (pure).

    A found user yields its profile (with a field per mirrored attribute), `is_active` and
    `deactivation_reason` (None when active), plus `groups` and `realm_roles` and `organizations` when they
    were fetched; a user not found yields only the deactivated state.
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
        F.IS_ACTIVE: user.enabled,
        F.DEACTIVATION_REASON: None if user.enabled else DeactivationReason.DISABLED.value,
    }
    for attribute, name in mirrored.pairs:
        doc[name] = _clean(user.attribute(attribute))
    if user.groups is not None:
        doc[F.GROUPS] = sorted(set(user.groups))
    if user.realm_roles is not None:
        doc[F.REALM_ROLES] = sorted(set(user.realm_roles))
    if user.organizations is not None:
        doc[F.ORGANIZATIONS] = organization_entries(user.organizations)
    return doc


def profile_print(fields: Mapping[str, Any], mirrored: AttributeMap) -> int | None:
    """A 64-bit print of the profile fields (`mirrored.profile_fields`) of a stored document or of
    `desired_document`'s result.

    Documents that `_diff` finds equal have equal prints: Python's hash agrees with `==`, which `_diff`
    compares with. None when a stored value cannot be hashed (a malformed document, compared the usual way).
    """
    try:
        return hash(tuple(fields.get(name) for name in mirrored.profile_fields))
    except TypeError:
        return None


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
    policy: ApplyPolicy,
    *,
    now: datetime,
    tombstones: Mapping[str, datetime] | None = None,
) -> Plan:
    """Decide, for each observed user, what the store needs (pure; one Change per distinct user id).

    `current_docs` maps external_id -> stored document (at least the compared fields and `observed_at`).
    Several observations of one user collapse into the latest one. `tombstones` (external_id -> time of a
    404 that found no document) make an older observation of such a user stale instead of creating it; a
    new 404 without a document becomes a tombstone to record (not in a dry run).
    """
    changes: list[Change] = []
    deaths: list[tuple[str, datetime]] = []
    touch = policy.touch_unchanged and not policy.dry_run
    for user_id, obs in _latest(observations).items():
        doc = current_docs.get(user_id)
        died_at = (tombstones or {}).get(user_id)
        if doc is None and died_at is not None and died_at >= obs.observed_at:
            changes.append(Change(Action.STALE, user_id))
            continue
        if doc is None and obs.user is None and not policy.dry_run:
            deaths.append((user_id, obs.observed_at))
        change = _plan_one(obs, doc, policy, now)
        if touch and change.action is Action.UNCHANGED and doc is not None:
            change = Change(Action.UNCHANGED, user_id, UserWrite(user_id, obs.observed_at, {}))
        changes.append(change)
    return Plan(changes, deaths)


def _plan_one(obs: Observation, doc: Mapping[str, Any] | None, policy: ApplyPolicy, now: datetime) -> Change:
    desired = desired_document(obs, policy.mirrored)
    if not policy.sync_access:
        for name in ACCESS_FIELDS:
            desired.pop(name, None)
    stored_at = doc.get(F.OBSERVED_AT) if doc is not None else None
    if isinstance(stored_at, datetime) and stored_at >= obs.observed_at:
        return Change(Action.STALE, obs.user_id)
    stamp = {F.UPDATED_AT: now, F.SYNCED_BY: policy.synced_by.value}
    if obs.user is None:
        return _plan_state_only(obs, doc, desired, stamp, now)
    if doc is None:
        return _plan_created(obs, desired, stamp, now)
    if is_erased(doc) and not obs.user.enabled:
        # Erased, and Keycloak still has the user but disabled: the state is mirrored, never the person.
        state = {F.IS_ACTIVE: False, F.DEACTIVATION_REASON: DeactivationReason.DISABLED.value}
        return _plan_state_only(obs, doc, state, stamp, now)
    return _plan_existing(obs, doc, desired, stamp, now)


def _plan_state_only(
    obs: Observation,
    doc: Mapping[str, Any] | None,
    desired: dict[str, Any],
    stamp: dict[str, Any],
    now: datetime,
) -> Change:
    """Deleted in Keycloak (or an erased document of a disabled user): only the deactivated state is
    written, only to a document that says otherwise; none is ever created."""
    diff = _diff(doc, desired) if doc is not None else {}
    if doc is None or not diff:
        return Change(Action.UNCHANGED, obs.user_id)
    was_active = doc.get(F.IS_ACTIVE, True) is not False
    set_fields: dict[str, Any] = {**desired, **stamp}
    if was_active:
        set_fields[F.DEACTIVATED_AT] = now
    write = UserWrite(obs.user_id, obs.observed_at, set_fields)
    return Change(Action.DEACTIVATED if was_active else Action.UPDATED, obs.user_id, write, diff)


def _plan_created(obs: Observation, desired: dict[str, Any], stamp: dict[str, Any], now: datetime) -> Change:
    set_fields = {**desired, **stamp}
    if desired[F.IS_ACTIVE] is True:
        set_fields.pop(F.DEACTIVATION_REASON)
    else:
        set_fields[F.DEACTIVATED_AT] = now
    base: dict[str, Any] = {F.EXTERNAL_ID: obs.user_id, F.CREATED_AT: now}
    write = UserWrite(obs.user_id, obs.observed_at, set_fields, insert_fields=base, expect_absent=True)
    return Change(Action.CREATED, obs.user_id, write, _diff({}, desired))


def _plan_existing(
    obs: Observation, doc: Mapping[str, Any], desired: dict[str, Any], stamp: dict[str, Any], now: datetime
) -> Change:
    diff = _diff(doc, desired)
    if not diff:
        return Change(Action.UNCHANGED, obs.user_id)
    will_be_active = desired[F.IS_ACTIVE] is True
    base: dict[str, Any] = {F.EXTERNAL_ID: obs.user_id, F.CREATED_AT: now}
    was_active = doc.get(F.IS_ACTIVE, True) is not False
    set_fields = {**desired, **stamp}
    if is_erased(doc):  # Keycloak has the user enabled again: mirrored again, no longer erased
        diff[F.ERASED_AT] = (doc.get(F.ERASED_AT), None)
    unset: tuple[str, ...] = (F.ERASED_AT,)
    insert_fields = dict(base)
    if will_be_active:
        set_fields.pop(F.DEACTIVATION_REASON)
        unset = (F.DEACTIVATED_AT, F.DEACTIVATION_REASON, F.ERASED_AT)
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
    write = UserWrite(
        obs.user_id, obs.observed_at, set_fields, unset, insert_fields, unless_erased=not will_be_active
    )
    return Change(action, obs.user_id, write, diff)


def _diff(doc: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    diff: dict[str, tuple[Any, Any]] = {}
    for name, want in desired.items():
        have = doc.get(name)
        if have != want:
            diff[name] = (have, want)
    return diff
