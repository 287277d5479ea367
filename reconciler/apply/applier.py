"""The apply core: what Keycloak says about users -> the store change, in three steps that each decide once.

1. `plan` (reconciler/domain/plan.py, pure): observations + stored documents + tombstones + an `ApplyPolicy` ->
   the user writes and tombstones to make.
2. `execute_plan`: performs the planned writes and reports what the store did with each (inserted, updated,
   refused by the `observed_at` guard).
3. `report`: what happened, in counts (`ApplyResult`), one INFO line per written user (action, `synced_by`,
   Keycloak id, the *names* of the changed fields, never their values) and metrics.

`Applier` runs the three steps for a batch (one store read, at most one bulk write) and is shared by the
full reconcile, the event path and replay; `observe_and_apply` first reads the users from Keycloak, in
batches of `apply_batch_size`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.document import WriteStatus, utc_now
from reconciler.domain.models import KeycloakUser, Observation
from reconciler.domain.plan import WRITING_ACTIONS, Action, ApplyPolicy, Change, Plan, plan
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class ApplyResult:
    """Counts per action of one or more applies, plus the changes that wrote (or would write) something."""

    counts: dict[Action, int] = field(default_factory=lambda: dict.fromkeys(Action, 0))
    changes: list[Change] = field(default_factory=list)

    def __getitem__(self, action: Action) -> int:
        return self.counts[action]

    @property
    def written(self) -> int:
        """Documents created or changed."""
        return sum(self.counts[a] for a in WRITING_ACTIONS)

    def add(self, other: ApplyResult) -> None:
        for action, count in other.counts.items():
            self.counts[action] += count
        self.changes.extend(other.changes)

    def as_dict(self) -> dict[str, int]:
        """Counts by action name, every action present (run records, `--json`)."""
        return {action.value: self.counts[action] for action in Action}


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items: the one batching rule of every apply path."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


# --- steps 2 and 3 ------------------------------------------------------------------------------------------


async def execute_plan(store: UserStore, planned: Plan) -> list[tuple[Change, WriteStatus | None]]:
    """Perform the plan's writes; each change with what the store did (None: nothing was to be written)."""
    await store.record_tombstones(planned.tombstones)
    writes = [c for c in planned.changes if c.write is not None]
    statuses = await store.write_users([c.write for c in writes if c.write is not None])
    done = dict(zip((id(c) for c in writes), statuses, strict=True))
    return [(change, done.get(id(change))) for change in planned.changes]


def realised(change: Change, status: WriteStatus | None) -> Action:
    """What a planned change became: refused by the guard is stale; an insert planned as a create that
    found a document created meanwhile (by an older observation) overwrote it, so it counts as an update."""
    if status is WriteStatus.STALE:
        return Action.STALE
    if change.action is Action.CREATED and status is WriteStatus.UPDATED:
        return Action.UPDATED
    return change.action


def report(outcomes: Iterable[tuple[Change, Action]], policy: ApplyPolicy) -> ApplyResult:
    """Counts, one INFO line per written user, and metrics (none in a dry run)."""
    result = ApplyResult()
    synced_by = policy.synced_by.value
    for change, action in outcomes:
        result.counts[action] += 1
        if action in WRITING_ACTIONS:
            result.changes.append(change)
            if not policy.dry_run:
                log.info(
                    f"user {action.value}",
                    action=action.value,
                    synced_by=synced_by,
                    external_id=change.external_id,
                    fields=sorted(change.diff),
                )
    if not policy.dry_run:
        for action, count in result.counts.items():
            if count:
                metrics.USER_CHANGES.labels(action=action.value, synced_by=synced_by).inc(count)
    return result


# --- the applier --------------------------------------------------------------------------------------------


class Applier:
    """Applies observations to the store: one store read and at most one bulk write per batch.

    With `sync_groups_and_roles` on, the groups and realm roles of every found user in a batch are read from
    Keycloak before deciding (two more requests per user, bounded by the client's concurrency); with
    `organizations_enabled` its organization memberships (one request, plus one per organization), unless
    the observation already carries them (the full reconcile reads every member list once per run).
    """

    def __init__(self, store: UserStore, keycloak: KeycloakAdminClient, settings: Settings) -> None:
        self._store = store
        self._keycloak = keycloak
        self.sync_access = settings.sync_groups_and_roles
        self.mirrored = keycloak.mirrored  # the attributes its reads carry, from MIRRORED_ATTRIBUTES
        self.sync_organizations = settings.organizations_enabled
        self.batch_size = settings.apply_batch_size
        self.clock = observation_time

    async def apply(self, observations: Sequence[Observation], policy: ApplyPolicy) -> ApplyResult:
        """Bring the store in line with these observations (a dry run writes nothing). Counts are of what
        the store actually did."""
        if not observations:
            return ApplyResult()
        if self.sync_access:
            observations = await self._with_access(observations)
        if self.sync_organizations:
            observations = await self._with_organizations(observations)
        current = await self._store.find_by_external_ids(
            (o.user_id for o in observations), self.mirrored.compared_projection
        )
        tombstones = await self._store.find_tombstones(
            o.user_id for o in observations if o.user is not None and o.user_id not in current
        )
        policy = dataclasses.replace(policy, sync_access=self.sync_access, mirrored=self.mirrored)
        planned = plan(observations, current, policy, now=utc_now(), tombstones=tombstones)
        if policy.dry_run:
            return report(((c, c.action) for c in planned.changes), policy)
        executed = await execute_plan(self._store, planned)
        return report(((c, realised(c, status)) for c, status in executed), policy)

    async def observe(self, user_ids: Sequence[str]) -> list[Observation]:
        """Read these users from Keycloak now, concurrently (bounded by the client), each stamped just
        before its read. Raises the client's errors (KeycloakUnavailable, KeycloakConfigError, InvalidUserId).
        """

        async def one(user_id: str) -> Observation:
            observed_at = self.clock()
            return Observation(user_id, await self._keycloak.get_user(user_id), observed_at)

        return await _gather_all(one(user_id) for user_id in dict.fromkeys(user_ids))

    async def observe_and_apply(self, user_ids: Sequence[str], policy: ApplyPolicy) -> ApplyResult:
        """Read the users from Keycloak and apply what it says, in batches of `apply_batch_size`."""
        result = ApplyResult()
        for ids in batched(list(dict.fromkeys(user_ids)), self.batch_size):
            result.add(await self.apply(await self.observe(ids), policy))
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

    async def _with_organizations(self, observations: Sequence[Observation]) -> list[Observation]:
        """Fill in the organization memberships of found users; a 404 on that read means the user is gone."""

        async def one(obs: Observation) -> Observation:
            user = obs.user
            if user is None or user.organizations is not None:
                return obs
            organizations = await self._keycloak.user_organizations(user.id)
            if organizations is None:
                return Observation(obs.user_id, None, obs.observed_at)
            return Observation(
                obs.user_id, dataclasses.replace(user, organizations=organizations), obs.observed_at
            )

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
