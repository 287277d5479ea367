"""The windowed listing's engine (several windows and pages in flight, pages handed out as they arrive) on
modelled realms; the real Keycloak is in test_listing_roads.py."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.base.errors import KeycloakProtocolError
from reconciler.clients.keycloak import UserPage
from reconciler.domain.models import KeycloakUser
from reconciler.fullsync.windowed import WindowedPages
from reconciler.fullsync.windows import PageRequest, Window, plan_windows
from tests.fullsync.test_windows import ChurningRealm

START_MS = 1_700_000_000_000


def as_page(ids: list[int]) -> UserPage:
    users = [KeycloakUser(id=str(uuid.UUID(int=i)), username=f"u{i}", enabled=True) for i in ids]
    return UserPage(size=len(users), users=users)


async def list_all(
    realm: ChurningRealm, hi: int, page_size: int, depth: int, jitter: bool, open_from_ms: int | None = None
) -> Counter[int]:
    rng = random.Random(page_size * 31 + depth)

    async def fetch(window: Window, request: PageRequest) -> tuple[datetime, UserPage]:
        if jitter:  # answers arrive out of order
            await asyncio.sleep(rng.random() / 1000)
        return datetime.now(UTC), as_page(realm.page(window, request))

    windows = plan_windows(realm.count, 0, hi, page_size - 1, concurrency=depth)
    pages = WindowedPages(fetch, windows, page_size, depth, open_from_ms)
    listed: Counter[int] = Counter()
    try:
        while (item := await pages.next_page()) is not None:
            position, _, page = item
            assert position == pages.returned - page.size
            listed.update(uuid.UUID(user.id).int for user in page.users)
    finally:
        await pages.close()
    assert pages.complete
    return listed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stamps=st.lists(st.integers(0, 10**6), max_size=400),
    bursts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 90)), max_size=4),
    page_size=st.integers(2, 40),
    depth=st.integers(1, 6),
)
def test_every_user_of_a_still_realm_is_listed_exactly_once(
    stamps: list[int], bursts: list[tuple[int, int]], page_size: int, depth: int
) -> None:
    for at, times in bursts:
        stamps = stamps + [at] * times  # an import: many users in one millisecond (offset-paged windows)
    realm = ChurningRealm(dict(enumerate(stamps)), 10**6 + 1, [])
    listed = asyncio.run(list_all(realm, 10**6 + 10, page_size, depth, jitter=True))
    assert listed == Counter(range(len(stamps)))


def test_one_page_windows_in_flight_together_list_every_whole_run_user_once_under_churn() -> None:
    start = 1_700_000_000_000
    stamps = {i: start - 100_000 + i * 37 for i in range(2_000)}
    ops = [("delete", i * 7919) if i % 2 else ("create_now", 0) for i in range(160)]
    realm = ChurningRealm(dict(stamps), start, ops)

    listed = asyncio.run(list_all(realm, start, 50, 4, jitter=True))

    whole_run = set(stamps) - realm.deleted
    assert len(realm.deleted) == 80
    assert all(listed[user] == 1 for user in whole_run)
    assert set(listed) <= realm.ever


@pytest.mark.parametrize("open_from_ms", [START_MS, None], ids=["run_start_known", "no_start"])
def test_an_import_into_the_window_of_the_run_start_neither_ends_the_run_nor_hides_anyone(
    open_from_ms: int | None,
) -> None:
    """Hundreds of users stamped in one millisecond while the run lists: they land in the window reaching
    past the run's start (counted 4 users here), which then grows far beyond its count; that is churn, not a
    Keycloak ignoring the filters."""
    present = {i: START_MS - 4 + i for i in range(4)}
    realm = ChurningRealm(dict(present), START_MS, [("import_now", 400)])  # at the first page request

    async def windows() -> AsyncIterator[Window]:
        yield Window(START_MS - 1_000, START_MS + 3_600_000, expected_count=realm.count_now(START_MS - 1_000))

    async def fetch(window: Window, request: PageRequest) -> tuple[datetime, UserPage]:
        return datetime.now(UTC), as_page(realm.page(window, request))

    async def run() -> Counter[int]:
        pages = WindowedPages(fetch, windows(), 10, 2, open_from_ms)
        listed: Counter[int] = Counter()
        try:
            while (item := await pages.next_page()) is not None:
                listed.update(uuid.UUID(user.id).int for user in item[2].users)
        finally:
            await pages.close()
        return listed

    if open_from_ms is None:  # without the run's start every window keeps the tight bound
        with pytest.raises(KeycloakProtocolError, match="does not end"):
            asyncio.run(run())
        return
    listed = asyncio.run(run())
    assert len(realm.ever) == 404
    assert all(listed[user] == 1 for user in present)
    assert set(listed) <= realm.ever


def test_a_failed_count_fails_the_listing() -> None:
    async def count(after: int, before: int) -> int:
        raise KeycloakProtocolError("count failed")

    async def fetch(window: Window, request: PageRequest) -> tuple[datetime, UserPage]:
        raise AssertionError("nothing to list")

    async def run() -> None:
        pages = WindowedPages(fetch, plan_windows(count, 0, 1000, 9), 10, 4)
        try:
            await pages.next_page()
        finally:
            await pages.close()

    with pytest.raises(KeycloakProtocolError, match="count failed"):
        asyncio.run(run())


def test_a_window_that_never_ends_is_a_protocol_error() -> None:
    """A Keycloak that ignores the filters answers every window with the whole realm."""

    async def count(after: int, before: int) -> int:
        return 5 if after == before else 50

    async def fetch(window: Window, request: PageRequest) -> tuple[datetime, UserPage]:
        return datetime.now(UTC), as_page(list(range(request.first, request.end)))  # always full

    async def run() -> None:
        pages = WindowedPages(fetch, plan_windows(count, 0, 3, 9), 10, 2)
        try:
            while await pages.next_page() is not None:
                pass
        finally:
            await pages.close()

    with pytest.raises(KeycloakProtocolError, match="does not end"):
        asyncio.run(run())
