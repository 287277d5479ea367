"""Group commit: many users' observations share store writes, and a failed write fails each of its waiters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from reconciler.apply.applier import Applier
from reconciler.apply.batching import GroupCommit
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.document import utc_now
from reconciler.domain.models import KeycloakUser, Observation
from reconciler.domain.plan import ApplyPolicy


@pytest.fixture(scope="module")
async def applier(settings: Settings) -> AsyncIterator[Applier]:
    async with UserStore.from_settings(settings) as store, KeycloakAdminClient(settings) as keycloak:
        await store.ensure_indexes()
        yield Applier(store, keycloak, settings)


def observation() -> Observation:
    user_id = str(uuid.uuid4())
    return Observation(
        user_id, KeycloakUser(id=user_id, username=f"g-{user_id[:8]}", enabled=True), utc_now()
    )


@pytest.mark.stack
async def test_concurrent_observations_are_written_in_few_batches(
    applier: Applier, users_collection: Any
) -> None:
    group = GroupCommit(applier, max_batch=100)
    observations = [observation() for _ in range(60)]
    await asyncio.gather(*(group.apply(obs, ApplyPolicy.event()) for obs in observations))
    stored = await users_collection.count_documents(
        {"external_id": {"$in": [o.user_id for o in observations]}}
    )
    assert stored == 60
    assert group.batches <= 3  # not 60 writes


class FailingOnce:
    """An applier whose first batch fails (what a store outage looks like to the group)."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def apply(self, observations: Sequence[Observation], policy: ApplyPolicy) -> None:
        self.calls.append(len(observations))
        await asyncio.sleep(0.01)
        if len(self.calls) == 1:
            raise ConnectionError("store down")


async def test_a_failed_batch_fails_each_of_its_waiters_and_later_batches_go_on() -> None:
    failing = FailingOnce()
    group = GroupCommit(failing, max_batch=3)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(group.apply(observation(), ApplyPolicy.event()) for _ in range(7)), return_exceptions=True
    )
    # All seven were waiting before the first write started: batches of 3, 3 and 1; only the first failed.
    assert failing.calls == [3, 3, 1]
    assert [type(r).__name__ for r in results] == ["ConnectionError"] * 3 + ["NoneType"] * 4
