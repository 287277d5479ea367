"""The event path's handling of Keycloak's pre-commit reads, which our after-commit listener never produces:
a user that 404s right after a CREATE/UPDATE hint is re-read before it counts as deleted; a DELETE hint's 404
is believed at once; an update hint is re-checked once after the settle delay (unless EVENT_RECHECK says its
record was published after commit); and the queue's retries of a
user (outages without limit, unreadable answers up to the attempts). Everything runs through the event
path's own work queue (`hint_queue`). Keycloak is scripted with httpx.MockTransport (the edge case); the
store is the real one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import REGISTRY

from reconciler.apply.applier import Applier
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.events import HintReason, UserHint
from reconciler.sources.hint_apply import hint_queue
from reconciler.sources.workqueue import CoalescingQueue
from tests.conftest import override
from tests.support.polling import eventually
from tests.support.scripted_keycloak import FakeKeycloak, scripted, user_json

pytestmark = pytest.mark.stack


def hint(user_id: str, reason: HintReason, operation: str) -> UserHint:
    return UserHint(user_id, reason, datetime.now(UTC), "app", operation)


def fast(settings: Settings) -> Settings:
    """Retries in milliseconds instead of seconds."""
    return override(
        settings,
        retry_request_backoff_s=0.001,
        retry_user_backoff_s=0.01,
        retry_user_backoff_max_s=0.05,
    )


async def apply_with(
    settings: Settings, store: UserStore, fake: FakeKeycloak, hints: list[UserHint]
) -> CoalescingQueue[UserHint]:
    """Submit the hints to the event path's queue and wait until their apply is done (or given up)."""
    config = fast(settings)
    async with KeycloakAdminClient(config, transport=httpx.MockTransport(fake)) as keycloak:
        queue = hint_queue(Applier(store, keycloak, config), config)
        queue.start()
        finished = asyncio.Event()
        for one in hints:
            await queue.submit(one.user_id, one, finished.set)
        await asyncio.wait_for(finished.wait(), 30)
        await queue.close(drain=False)
        return queue


async def test_a_404_right_after_a_create_hint_is_read_again_until_the_user_appears(
    settings: Settings, store: UserStore
) -> None:
    user_id = str(uuid.uuid4())
    fake = FakeKeycloak(
        scripted(httpx.Response(404), httpx.Response(404), httpx.Response(200, json=user_json(user_id)))
    )
    config = override(
        settings, event_not_found_retries=3, event_not_found_backoff_s=0.01, event_recheck_delay_s=0
    )
    await apply_with(config, store, fake, [hint(user_id, HintReason.USER_CREATED, "CREATE")])
    assert len(fake.admin_requests) == 3
    doc = await store.get_user(user_id)
    assert doc is not None and doc["is_active"] is True


async def test_a_404_after_a_delete_hint_is_believed_at_once(settings: Settings, store: UserStore) -> None:
    user_id = str(uuid.uuid4())
    fake = FakeKeycloak(scripted(httpx.Response(404)))
    config = override(settings, event_not_found_retries=3, event_not_found_backoff_s=0.01)
    await apply_with(config, store, fake, [hint(user_id, HintReason.USER_DELETED, "DELETE")])
    assert len(fake.admin_requests) == 1
    assert await store.find_tombstones([user_id]) != {}


async def test_an_update_hint_is_rechecked_once_after_the_settle_delay(
    settings: Settings, store: UserStore
) -> None:
    user_id = str(uuid.uuid4())
    fake = FakeKeycloak(scripted(httpx.Response(200, json=user_json(user_id))))
    config = fast(override(settings, event_recheck_delay_s=0.05))
    async with KeycloakAdminClient(config, transport=httpx.MockTransport(fake)) as keycloak:
        queue = hint_queue(Applier(store, keycloak, config), config)
        queue.start()
        await queue.submit(user_id, hint(user_id, HintReason.USER_UPDATED, "UPDATE"))

        async def settled() -> tuple[int, int, int]:
            return len(fake.admin_requests), queue.pending_rechecks, len(queue)

        # The hint's read, then the re-check's read; the re-check itself schedules no further one.
        await eventually(settled, until=lambda state: state == (2, 0, 0), what="one re-check applied")
        await queue.close()
    assert len(fake.admin_requests) == 2


@pytest.mark.parametrize(
    ("mode", "after_commit", "rechecked"),
    [
        ("auto", True, False),  # our listener: the read after the event already saw the change
        ("auto", False, True),  # a provider that may publish before commit
        ("always", True, True),  # a Keycloak cluster: another node may answer from a stale cache
        ("never", False, False),
    ],
)
async def test_event_recheck_decides_which_update_hints_are_read_again(
    settings: Settings, store: UserStore, mode: str, after_commit: bool, rechecked: bool
) -> None:
    user_id = str(uuid.uuid4())
    fake = FakeKeycloak(scripted(httpx.Response(200, json=user_json(user_id))))
    config = fast(override(settings, event_recheck_delay_s=0.05, event_recheck=mode))
    update = dataclasses.replace(hint(user_id, HintReason.USER_UPDATED, "UPDATE"), after_commit=after_commit)
    async with KeycloakAdminClient(config, transport=httpx.MockTransport(fake)) as keycloak:
        queue = hint_queue(Applier(store, keycloak, config), config)
        queue.start()
        await queue.submit(user_id, update)
        await queue.join()
        # The re-check is scheduled as the apply finishes, so whether there is one is known now.
        assert queue.pending_rechecks == (1 if rechecked else 0)

        async def settled() -> tuple[int, int, int]:
            return len(fake.admin_requests), queue.pending_rechecks, len(queue)

        expected = (2 if rechecked else 1, 0, 0)
        await eventually(settled, until=lambda state: state == expected, what="re-check done or none")
        await queue.close()
    assert len(fake.admin_requests) == expected[0]


def abandoned() -> float:
    return REGISTRY.get_sample_value("reconciler_hints_abandoned_total") or 0.0


async def test_a_user_keycloak_keeps_answering_unreadably_for_is_given_up_after_the_attempts(
    settings: Settings, store: UserStore
) -> None:
    user_id = str(uuid.uuid4())
    unreadable = {**user_json(user_id), "enabled": "maybe"}  # a KeycloakProtocolError, not an outage
    fake = FakeKeycloak(scripted(httpx.Response(200, json=unreadable)))
    config = override(settings, event_max_apply_attempts=2, event_recheck_delay_s=0)
    before = abandoned()
    # Returns (so the hint's record can be committed) instead of retrying forever.
    await asyncio.wait_for(
        apply_with(config, store, fake, [hint(user_id, HintReason.USER_UPDATED, "UPDATE")]), 30
    )
    assert len(fake.admin_requests) == 2
    assert abandoned() == before + 1
    assert await store.get_user(user_id) is None


async def test_an_unreadable_answer_that_clears_before_the_last_attempt_is_applied(
    settings: Settings, store: UserStore
) -> None:
    user_id = str(uuid.uuid4())
    unreadable = {**user_json(user_id), "enabled": "maybe"}
    fake = FakeKeycloak(
        scripted(httpx.Response(200, json=unreadable), httpx.Response(200, json=user_json(user_id)))
    )
    config = override(settings, event_max_apply_attempts=2, event_recheck_delay_s=0)
    before = abandoned()
    await apply_with(config, store, fake, [hint(user_id, HintReason.USER_UPDATED, "UPDATE")])
    assert abandoned() == before
    doc = await store.get_user(user_id)
    assert doc is not None and doc["is_active"] is True


async def test_outages_do_not_count_towards_the_attempts(settings: Settings, store: UserStore) -> None:
    user_id = str(uuid.uuid4())
    config = override(
        settings, event_max_apply_attempts=1, event_recheck_delay_s=0, keycloak_retry_attempts=1
    )
    # Three outages in a row (each a KeycloakUnavailable after the client's own single attempt), then the user.
    fake = FakeKeycloak(
        scripted(
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(503),
            httpx.Response(200, json=user_json(user_id)),
        )
    )
    before = abandoned()
    await asyncio.wait_for(
        apply_with(config, store, fake, [hint(user_id, HintReason.USER_UPDATED, "UPDATE")]), 60
    )
    assert len(fake.admin_requests) == 4
    assert abandoned() == before
    doc = await store.get_user(user_id)
    assert doc is not None and doc["is_active"] is True
