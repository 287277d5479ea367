"""The full reconcile's concurrent listing on the real stack: several pages in flight, applied as they come,
at a fixed or an adaptive page size (`listing.PageSizer`, whose choices are also checked on their own).

These are the offset road's tests (`KEYCLOAK_LISTING=offset`; the windowed road's are in
test_windowed.py and test_listing_roads.py). The module has its own realm and database. Keycloak is the real one; a wrapping transport only watches the
listing requests, holds some of them or sends one to a closed port, to make the interleavings happen that
a concurrent listing must survive.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from reconciler.apply.applier import Applier
from reconciler.base.config import Settings
from reconciler.base.errors import KeycloakUnavailable
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import Action
from reconciler.fullsync.listing import PageSizer
from reconciler.fullsync.reconcile import FullReconcile, Progress, ProgressCallback, RunSummary
from tests.conftest import make_settings, override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.mirror import assert_mirror, documents
from tests.support.ports import free_port

pytestmark = pytest.mark.stack

PAGE = 3
IN_FLIGHT = 4
BEFORE_REQUEST = Callable[[int], Awaitable[None]]


def listing_first(request: httpx.Request) -> int | None:
    """`first` of a user-listing request, None for any other request."""
    if not request.url.path.endswith("/users") or "first" not in request.url.params:
        return None
    return int(request.url.params["first"])


class ListingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, watching listing requests: how many are in flight (the most at once, and
    those cancelled), each page's `first`, and a hook run before a page's request is sent."""

    def __init__(self, before: BEFORE_REQUEST | None = None, dead_first: int | None = None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.before = before
        self.dead_first = dead_first  # the page sent to a closed port
        self.dead_port = free_port()
        self.firsts: list[int] = []
        self.pages: list[tuple[int, int]] = []  # (first, max) of every listing request
        self.in_flight = self.most_in_flight = self.cancelled = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        first = listing_first(request)
        if first is None:
            return await self.inner.handle_async_request(request)
        self.firsts.append(first)
        self.pages.append((first, int(request.url.params["max"])))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.before is not None:
                await self.before(first)
            if first == self.dead_first:
                request.url = request.url.copy_with(host="127.0.0.1", port=self.dead_port)
            return await self.inner.handle_async_request(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def concurrent_settings(stack_env: dict[str, str], settings: Settings, **changes: Any) -> Settings:
    return make_settings(
        stack_env,
        keycloak_realm=settings.keycloak_realm,
        mongodb_database=settings.mongodb_database,
        **(
            {"keycloak_page_size": PAGE, "keycloak_list_concurrency": IN_FLIGHT, "keycloak_listing": "offset"}
            | changes
        ),
    )


async def run_with(
    settings: Settings,
    store: UserStore,
    transport: ListingTransport,
    progress: ProgressCallback | None = None,
) -> RunSummary:
    async with KeycloakAdminClient(settings, transport) as client:
        run = FullReconcile(settings, store, client).run(progress=progress)
        return await asyncio.wait_for(run, timeout=60)


async def fill_realm(kc_admin: KeycloakTestAdmin, count: int) -> None:
    while len(await kc_admin.list_users()) < count:
        await kc_admin.create_user()


async def test_pages_are_listed_concurrently_and_the_store_mirrors_keycloak(
    stack_env: dict[str, str], settings: Settings, store: UserStore, kc_admin: KeycloakTestAdmin
) -> None:
    await fill_realm(kc_admin, 20)
    gone = await kc_admin.create_user()
    concurrent = concurrent_settings(stack_env, settings)
    await run_with(concurrent, store, ListingTransport())
    await kc_admin.delete_user(gone)
    transport = ListingTransport()

    summary = await run_with(concurrent, store, transport)

    assert summary.ok and summary.listed == 20 and summary.applied[Action.DEACTIVATED] == 1
    assert transport.most_in_flight == IN_FLIGHT  # bounded by the setting, and reached
    # Each page once, none past the end Keycloak's count announced (the short page at 18).
    assert sorted(transport.firsts) == list(range(0, 21, PAGE))
    assert transport.in_flight == 0
    await assert_mirror(kc_admin, store)


async def test_users_created_and_deleted_while_pages_are_in_flight_cause_no_false_deactivation(
    stack_env: dict[str, str], settings: Settings, store: UserStore, kc_admin: KeycloakTestAdmin
) -> None:
    await fill_realm(kc_admin, 30)
    concurrent = concurrent_settings(stack_env, settings)
    await run_with(concurrent, store, ListingTransport())  # the store mirrors the realm
    listing = await kc_admin.list_users()  # Keycloak's listing order (by username)
    before = await documents(store)
    deleted: list[str] = []
    created: list[str] = []

    async def churn(first: int) -> None:
        # While pages 0-3 are in flight or just applied, and before page 4 is read: delete the first two
        # users (every later user moves up two places, so a page read after this skips two users a page read
        # before did not list) and create two that sort last.
        if first == IN_FLIGHT * PAGE and not deleted:
            for user in listing[:2]:
                await kc_admin.delete_user(user["id"])
                deleted.append(user["id"])
            created.extend([await kc_admin.create_user(f"zz-{uuid.uuid4().hex[:8]}") for _ in range(2)])

    transport = ListingTransport(before=churn)
    summary = await run_with(concurrent, store, transport)

    assert summary.ok and len(deleted) == 2 and transport.most_in_flight > 1
    # Every user no page listed was confirmed with a GetUser: the skipped ones (or the two deleted ones, if
    # page 0 was read after the deletion) are candidates.
    assert summary.candidates >= 2
    docs = await documents(store)
    newly_inactive = {i for i, doc in docs.items() if not doc["is_active"] and before[i]["is_active"]}
    assert newly_inactive <= set(deleted)  # only users really deleted were deactivated
    for user in await kc_admin.list_users():
        if user["id"] in before:  # everyone who was there all along is mirrored as Keycloak has them
            assert docs[user["id"]]["is_active"] is user["enabled"], f"{user['username']} wrongly changed"
    # What the run could not see (deletions of users already listed) the next one catches.
    await run_with(concurrent, store, ListingTransport())
    await assert_mirror(kc_admin, store)


async def test_a_listing_that_fails_with_pages_in_flight_deactivates_nothing_and_leaves_no_request(
    stack_env: dict[str, str], settings: Settings, store: UserStore, kc_admin: KeycloakTestAdmin
) -> None:
    await fill_realm(kc_admin, 20)
    concurrent = override(
        concurrent_settings(stack_env, settings),
        keycloak_retry_attempts=2,
        retry_request_backoff_s=0.01,
        retry_request_backoff_max_s=0.02,
    )
    gone = await kc_admin.create_user()
    await run_with(concurrent, store, ListingTransport())
    await kc_admin.delete_user(gone)  # a real deactivation candidate
    first_applied = asyncio.Event()
    held = asyncio.Event()  # never set: the pages after the failing one stay in flight until cancelled

    async def hold(first: int) -> None:
        if first == PAGE:
            await first_applied.wait()  # page 1 fails only once page 0 is in the store
        elif first > PAGE:
            await held.wait()

    def applied(progress: Progress) -> None:
        if progress.listed >= PAGE:
            first_applied.set()

    transport = ListingTransport(before=hold, dead_first=PAGE)
    summary = await run_with(concurrent, store, transport, applied)

    assert summary.outcome is Outcome.FAILED and isinstance(summary.failure, KeycloakUnavailable)
    assert summary.listed == PAGE and summary.applied[Action.DEACTIVATED] == 0  # only page 0 was applied
    assert (await documents(store))[gone]["is_active"] is True
    # The held pages (2, 3, and 4 requested once page 0 was applied) were cancelled before run() returned.
    assert transport.cancelled == IN_FLIGHT - 1 and transport.in_flight == 0
    run = await store.get_run(summary.run_id)
    assert run is not None and run.outcome == "failed" and "KeycloakUnavailable" in (run.error or "")
    summary = await run_with(concurrent, store, ListingTransport())
    assert summary.ok and summary.applied[Action.DEACTIVATED] == 1
    await assert_mirror(kc_admin, store)


async def test_a_page_larger_than_the_apply_batch_is_applied_in_batches(
    stack_env: dict[str, str],
    settings: Settings,
    store: UserStore,
    kc_admin: KeycloakTestAdmin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await fill_realm(kc_admin, 20)
    # Every stored user drifted, so that none is unchanged in the store snapshot: all go through the core.
    await store.users.update_many({}, {"$set": {"first_name": "Drifted"}})
    big_pages = make_settings(
        stack_env,
        keycloak_realm=settings.keycloak_realm,
        mongodb_database=settings.mongodb_database,
        keycloak_page_size=10,
        apply_batch_size=4,
        keycloak_listing="offset",
    )
    batches: list[int] = []
    original = Applier.apply

    async def recording_apply(self: Applier, observations: Any, policy: Any) -> Any:
        batches.append(len(observations))
        return await original(self, observations, policy)

    monkeypatch.setattr(Applier, "apply", recording_apply)
    summary = await run_with(big_pages, store, ListingTransport())
    assert summary.ok and summary.applied[Action.UNCHANGED] == 0
    assert max(batches) == 4 and sum(batches) >= summary.listed  # pages of 10 applied 4 users at a time
    await assert_mirror(kc_admin, store)


def adaptive_settings(stack_env: dict[str, str], settings: Settings) -> Settings:
    return concurrent_settings(stack_env, settings, keycloak_page_size=2, keycloak_page_size_max=9)


def assert_tiled(pages: list[tuple[int, int]]) -> None:
    """The requested pages cover the listing without gap or overlap, whatever their sizes."""
    position = 0
    for first, size in sorted(pages):
        assert first == position, f"page at {first}, expected {position}: {sorted(pages)}"
        position += size


async def test_an_adaptive_page_size_changes_sizes_and_still_lists_every_user_once(
    stack_env: dict[str, str], settings: Settings, store: UserStore, kc_admin: KeycloakTestAdmin
) -> None:
    await fill_realm(kc_admin, 40)
    gone = await kc_admin.create_user()
    adaptive = adaptive_settings(stack_env, settings)
    await run_with(adaptive, store, ListingTransport())
    await kc_admin.delete_user(gone)
    transport = ListingTransport()

    summary = await run_with(adaptive, store, transport)

    assert summary.ok and summary.listed == 40 and summary.applied[Action.DEACTIVATED] == 1
    sizes = {size for _, size in transport.pages}
    assert len(sizes) > 1 and min(sizes) >= 2 and max(sizes) <= 9  # it adapted, within the bounds
    assert_tiled(transport.pages)
    assert transport.in_flight == 0 and transport.most_in_flight <= IN_FLIGHT
    await assert_mirror(kc_admin, store)


async def test_churn_during_an_adaptive_listing_causes_no_false_deactivation(
    stack_env: dict[str, str], settings: Settings, store: UserStore, kc_admin: KeycloakTestAdmin
) -> None:
    await fill_realm(kc_admin, 40)
    adaptive = adaptive_settings(stack_env, settings)
    await run_with(adaptive, store, ListingTransport())
    listing = await kc_admin.list_users()
    before = await documents(store)
    deleted: list[str] = []
    churned = asyncio.Event()  # set before the first await: requests in flight at once churn only once

    async def churn(first: int) -> None:
        # Once a few pages are listed: delete the first two users (everyone after them moves up two places,
        # so later pages skip two users earlier pages did not list) and create two that sort last.
        if first >= 10 and not churned.is_set():
            churned.set()
            for user in listing[:2]:
                await kc_admin.delete_user(user["id"])
                deleted.append(user["id"])
            for _ in range(2):
                await kc_admin.create_user(f"zz-{uuid.uuid4().hex[:8]}")

    transport = ListingTransport(before=churn)
    summary = await run_with(adaptive, store, transport)

    assert summary.ok and len(deleted) == 2
    assert_tiled(transport.pages)
    assert summary.candidates >= 2  # the skipped users were confirmed with a GetUser
    docs = await documents(store)
    newly_inactive = {i for i, doc in docs.items() if not doc["is_active"] and before[i]["is_active"]}
    assert newly_inactive <= set(deleted)
    for user in await kc_admin.list_users():
        if user["id"] in before:
            assert docs[user["id"]]["is_active"] is user["enabled"], f"{user['username']} wrongly changed"
    await run_with(adaptive, store, ListingTransport())
    await assert_mirror(kc_admin, store)


def test_the_page_sizer_climbs_toward_the_cheapest_size_per_user_and_stays_in_bounds() -> None:
    # Per-user cost of a page of n users: a fixed cost per page plus a cost per user that grows with n
    # (the shape measured on Keycloak 26.5 with PostgreSQL); cheapest near n = 300.
    def seconds(n: int) -> float:
        return 9.0 + 1e-4 * n * n

    sizer = PageSizer(100, 1000, depth=4)
    for _ in range(200):
        size = sizer.size
        sizer.observe(size, size, seconds(size))
    late = sizer.sizes[-20:]
    assert all(100 <= s <= 1000 for s in sizer.sizes)
    assert min(late) >= 225 and max(late) <= 507, late  # it oscillates around the cheapest size
    assert sizer.sizes[0] == 100 and max(sizer.sizes) < 1000  # it never ran to the costly bound


def test_a_page_sizer_with_equal_bounds_never_changes_and_ignores_short_or_stale_pages() -> None:
    fixed = PageSizer(100, 100, depth=4)
    for _ in range(20):
        fixed.observe(100, 100, 1.0)
    assert fixed.sizes == [100] and not fixed.adaptive
    sizer = PageSizer(10, 100, depth=2)
    sizer.observe(10, 3, 1.0)  # a short page (the end of the listing) measures nothing
    sizer.observe(15, 15, 1.0)  # nor does a page of another size than the current one
    assert sizer.sizes == [10]
    sizer.observe(10, 10, 1.0)
    sizer.observe(10, 10, 1.0)
    assert sizer.sizes == [10, 15]
    with pytest.raises(ValueError):
        PageSizer(10, 5, depth=1)
