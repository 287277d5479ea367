"""Organization events -> user hints (ORGANIZATIONS_ENABLED).

An organization renamed (UPDATE ORGANIZATION) or deleted (DELETE ORGANIZATION) changes the `organizations`
field of every member, but its admin event names only the organization; a member added (Keycloak 26.7:
CREATE ORGANIZATION_MEMBERSHIP on `organizations/{id}/members`) names the user only in the event's details
(its username). `OrganizationHints` turns such an `events.OrganizationHint` into one user hint per user
concerned, for the same coalescing queue as every other hint (one apply core; each read fetches the user's
organizations):

- renamed or deleted: every document whose `organizations` hold the id (the store still knows the members
  after Keycloak deleted the organization);
- a member added: the users Keycloak's member list of the organization and the store disagree about (the
  new member, and anyone whose removal was missed), one paged listing of the organization.

Both the Kafka consumer and the event-store sweep use it. Finding the members is retried until it
succeeds (`RetryPolicy.organization_members`); the record or stored event counts as done only once every
member hint was applied (invariant 3).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from tenacity import RetryCallState, retry_if_exception_type

from reconciler.base.config import Settings
from reconciler.base.errors import PermanentError, TemporaryError, UserDataError
from reconciler.base.retry import RetryPolicy
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.events import HintReason, OrganizationHint, UserHint
from reconciler.domain.models import SyncedBy
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger
from reconciler.observability.monitor import FailureMonitor
from reconciler.sources.workqueue import CoalescingQueue

log = get_logger(__name__)

Done = Callable[[], None]


class OrganizationHints:
    """Finds the users an organization event concerns and submits a hint for each."""

    def __init__(
        self,
        settings: Settings,
        store: UserStore,
        keycloak: KeycloakAdminClient,
        monitor: FailureMonitor | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._keycloak = keycloak
        self._monitor = monitor

    async def users(self, hint: OrganizationHint) -> list[str]:
        """The Keycloak ids of the users whose memberships the event may have changed (sorted)."""
        stored = set(await self._store.organization_members(hint.organization_id))
        if hint.change != "members":
            return sorted(stored)
        listed = {
            user_id for user_id, _ in await self._keycloak.all_organization_members(hint.organization_id)
        }
        return sorted(stored ^ listed)

    async def users_retried(self, hint: OrganizationHint) -> list[str]:
        """`users`, tried again after outages and refusals until it succeeds (or the task is cancelled)."""

        def failed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if self._monitor is not None and isinstance(error, TemporaryError | PermanentError):
                self._monitor.failed(error)
            log.warning(
                "organization members could not be read, trying again",
                organization_id=hint.organization_id,
                attempt=state.attempt_number,
                error_kind=type(error).__name__,
            )

        retrying = RetryPolicy.organization_members(self._settings).retrying(
            retry_if_exception_type((TemporaryError, PermanentError)), before_sleep=failed
        )
        users: list[str] = await retrying(self.users, hint)
        return users

    async def submit(
        self,
        hint: OrganizationHint,
        queue: CoalescingQueue[UserHint],
        done: Done,
        *,
        source: SyncedBy = SyncedBy.EVENT,
        after_commit: bool = False,
        received_at: datetime | None = None,
        users: list[str] | None = None,
    ) -> int:
        """Submit one hint per user concerned (`users`, else found now); `done` is called once, after all of
        them were applied (at once when there are none). Returns the number of hints."""
        if users is None:
            try:
                users = await self.users_retried(hint)
            except UserDataError as error:
                # Keycloak answered something unreadable for this organization: given up like a user's
                # apply after its attempts (the next full reconcile writes its members), so that the
                # record does not hold its partition's commits forever.
                log.error(
                    "organization members unreadable, left to the next full reconcile",
                    organization_id=hint.organization_id,
                    error=str(error)[:300],
                )
                metrics.HINTS_ABANDONED.inc()
                done()
                return 0
        log.info(
            "organization event hints its members",
            organization_id=hint.organization_id,
            change=hint.change,
            users=len(users),
        )
        if not users:
            done()
            return 0
        remaining = len(users)

        def one_done() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                done()

        for user_hint in member_hints(
            hint, users, source=source, after_commit=after_commit, received_at=received_at
        ):
            await queue.submit(user_hint.user_id, user_hint, one_done)
        return len(users)


def member_hints(
    hint: OrganizationHint,
    users: list[str],
    *,
    source: SyncedBy,
    after_commit: bool,
    received_at: datetime | None = None,
) -> list[UserHint]:
    """One hint per user an organization event concerns, with the event's time, realm and operation."""
    return [
        UserHint(
            user_id,
            HintReason.ORGANIZATION,
            hint.event_time,
            hint.realm,
            hint.operation,
            source=source,
            after_commit=after_commit,
            received_at=received_at,
        )
        for user_id in users
    ]
