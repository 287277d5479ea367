"""Erasure: removing the personal fields of users Keycloak no longer has, keeping their ids.

A user deleted in Keycloak is deactivated softly, so the application's references to its `_id` hold. After
`ERASE_DELETED_AFTER_S` its personal fields (`document.PERSONAL_FIELDS` and the fields of the mirrored
attributes, `AttributeMap.personal_fields`) are removed and the document is
marked `erased_at` (a *due* erasure, run by `reconciler run` on one replica at a time and by
`reconciler erase --due`); `reconciler erase USER_ID` erases one user at once (a *request*).

A request first reads the user from Keycloak and applies that read like any other (so a deletion the mirror
has not seen yet deactivates the document, and the read's `observed_at` makes every older observation
stale). A user Keycloak still has is refused: enabled, the next read would mirror it again; disabled, only
with `force`, and the apply core then keeps the document erased for as long as Keycloak has the user
disabled (`domain.plan`). Every erasure logs one audit line and counts `reconciler_erasures_total{trigger}`;
neither carries personal data, only the ids.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from reconciler.apply.applier import Applier
from reconciler.base.config import Settings
from reconciler.base.errors import PermanentError, TemporaryError
from reconciler.clients.store import UserStore
from reconciler.domain.attributes import AttributeMap
from reconciler.domain.document import F, is_erased, utc_now
from reconciler.domain.models import SyncedBy
from reconciler.domain.plan import ApplyPolicy
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger
from reconciler.observability.monitor import FailureMonitor

log = get_logger(__name__)

LEASE_NAME: Final = "erasure"
DUE_BATCH: Final = 500  # due users looked up per store query


class Trigger(StrEnum):
    """Why a user was erased: the `trigger` label of `reconciler_erasures_total` and of the audit line."""

    DUE = "due"  # ERASE_DELETED_AFTER_S passed since the deletion was mirrored
    REQUEST = "request"  # `reconciler erase USER_ID`


class Outcome(StrEnum):
    """What an erasure request ended in."""

    ERASED = "erased"
    ALREADY_ERASED = "already_erased"
    NO_DOCUMENT = "no_document"  # nothing stored for this id (nothing to erase)
    REFUSED = "refused"  # Keycloak still has the user (or it became active again meanwhile)


@dataclass(frozen=True, slots=True)
class Erasure:
    """The answer to an erasure request: the outcome, the document's `_id` when there is one, the time of
    the erasure (now or earlier), and for a refusal why."""

    outcome: Outcome
    external_id: str
    id: str | None = None
    erased_at: datetime | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "outcome": self.outcome.value,
            "external_id": self.external_id,
            "id": self.id,
            "erased_at": self.erased_at.isoformat() if self.erased_at else None,
            "reason": self.reason,
        }


def audit(external_id: str, doc_id: str, trigger: Trigger, *, forced: bool = False) -> None:
    """The one audit line and the metric of one erasure: ids only, never a personal value."""
    metrics.ERASURES.labels(trigger=trigger.value).inc()
    log.info(
        "user erased",
        audit="erasure",
        external_id=external_id,
        id=doc_id,
        trigger=trigger.value,
        forced=forced,
    )


class Eraser:
    """Erases the users that are due, or one user on request."""

    def __init__(self, store: UserStore, settings: Settings) -> None:
        self._store = store
        self._after_s = settings.erase_deleted_after_s
        # Mirrored attributes are personal data: their fields go with the others.
        self._personal = AttributeMap.parse(settings.mirrored_attributes).personal_fields

    @property
    def enabled(self) -> bool:
        return self._after_s > 0

    async def erase_due(self, now: datetime | None = None) -> int:
        """Erase every user deactivated as deleted in Keycloak more than ERASE_DELETED_AFTER_S ago; the
        number erased (0 when the setting is off)."""
        if not self.enabled:
            return 0
        cutoff = (now or utc_now()) - timedelta(seconds=self._after_s)
        erased = 0
        while True:
            due = await self._store.due_erasures(cutoff, DUE_BATCH)
            done = 0
            for external_id in due:
                doc_id = await self._store.erase_user(
                    external_id, utc_now(), self._personal, deleted_before=cutoff
                )
                if doc_id is not None:  # None: reactivated or erased by someone else meanwhile
                    audit(external_id, doc_id, Trigger.DUE)
                    done += 1
            erased += done
            if len(due) < DUE_BATCH or done == 0:
                return erased

    async def erase_request(self, applier: Applier, user_id: str, *, force: bool = False) -> Erasure:
        """Erase one user now, unless Keycloak still has it (enabled; or disabled without `force`).

        `user_id` must be a Keycloak id (`models.is_keycloak_id`): the caller checks it before.
        """
        (observation,) = await applier.observe([user_id])
        user = observation.user
        if user is not None and user.enabled:
            return Erasure(Outcome.REFUSED, user_id, reason="Keycloak still has the user, enabled")
        if user is not None and not force:
            return Erasure(Outcome.REFUSED, user_id, reason="Keycloak still has the user, disabled")
        # The read is applied first: a deletion not mirrored yet deactivates the document, and its
        # observed_at makes any older observation of the user stale.
        await applier.apply([observation], ApplyPolicy.event(synced_by=SyncedBy.ERASE))
        erased_at = utc_now()
        doc_id = await self._store.erase_user(user_id, erased_at, self._personal)
        if doc_id is not None:
            audit(user_id, doc_id, Trigger.REQUEST, forced=user is not None)
            return Erasure(Outcome.ERASED, user_id, doc_id, erased_at)
        return await self._not_erased(user_id)

    async def _not_erased(self, user_id: str) -> Erasure:
        doc = await self._store.get_user(user_id)
        if doc is None:
            return Erasure(Outcome.NO_DOCUMENT, user_id)
        if is_erased(doc):
            return Erasure(Outcome.ALREADY_ERASED, user_id, str(doc[F.ID]), doc[F.ERASED_AT])
        return Erasure(
            Outcome.REFUSED, user_id, str(doc[F.ID]), reason="the document became active again meanwhile"
        )


class ErasureSchedule:
    """`reconciler run`'s due erasures: every ERASE_INTERVAL_S, by the replica that holds the erasure lease.

    The lease is taken for one interval and not released, so one replica erases per interval; a crashed
    holder is replaced after it. Two replicas erasing at once would do no harm (the store's guard erases a
    document once).
    """

    def __init__(
        self, eraser: Eraser, store: UserStore, settings: Settings, holder: str, monitor: FailureMonitor
    ) -> None:
        self._eraser = eraser
        self._store = store
        self._interval_s = settings.erase_interval_s
        self._holder = holder
        self._monitor = monitor

    async def run(self, stop: asyncio.Event) -> None:
        log.info("due erasures scheduled", interval_s=self._interval_s)
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)

    async def tick(self) -> int:
        """One round: the users erased (0 when another replica holds the lease or the store failed)."""
        try:
            if not await self._store.acquire_lease(LEASE_NAME, self._holder, self._interval_s):
                return 0
            erased = await self._eraser.erase_due()
        except (TemporaryError, PermanentError) as error:
            self._monitor.failed(error)  # readiness and one calm line; the next interval tries again
            return 0
        if erased:
            log.info("due erasures done", erased=erased)
        return erased
