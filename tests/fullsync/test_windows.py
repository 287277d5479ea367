"""The creation-time window planner and a window's page plan, against an in-memory realm of creation times.

A pure unit test: the planner only sees a count function, so a multiset of timestamps stands for the realm
(the real-server tests of the windowed listing live with the full reconcile's stack tests).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.fullsync.windows import (
    MIN_CREATED_MS,
    PageRequest,
    PlanStats,
    Window,
    WindowPages,
    listing_complete,
    page_requests,
    plan_windows,
)


class StaticRealm:
    """Creation timestamps that do not change; counts both ends inclusive, like Keycloak's."""

    def __init__(self, stamps: list[int]) -> None:
        self.stamps = sorted(stamps)
        self.calls = 0

    async def count(self, after: int, before: int) -> int:
        self.calls += 1
        return bisect.bisect_right(self.stamps, before) - bisect.bisect_left(self.stamps, after)


def plan(
    realm: StaticRealm, lo: int, hi: int, limit: int, fanout: int = 16
) -> tuple[list[Window], PlanStats]:
    stats = PlanStats()

    async def collect() -> list[Window]:
        return [w async for w in plan_windows(realm.count, lo, hi, limit, fanout=fanout, stats=stats)]

    return asyncio.run(collect()), stats


def count_bound(users: int, lo: int, hi: int, limit: int, fanout: int) -> int:
    """The planner's documented bound on count requests."""
    return 1 + fanout * math.ceil(math.log2(hi - lo + 1)) * (users // limit)


def assert_tiles(windows: list[Window], lo: int, hi: int) -> None:
    assert windows, "no window"
    assert windows[0].created_after == lo
    assert windows[-1].created_before == hi
    for window in windows:
        assert window.created_after <= window.created_before
    for before, after in itertools.pairwise(windows):
        assert before.created_before + 1 == after.created_after


# Realms with the shapes that matter: spread over years, bursts of users in one millisecond (imports),
# dense runs, and nothing at all in most of the range.
bursts = st.lists(st.tuples(st.integers(0, 2**41), st.integers(1, 120)), max_size=6)
spread = st.lists(st.integers(0, 2**41), max_size=300)


@st.composite
def realms(draw: st.DrawFn) -> tuple[list[int], int, int]:
    lo = draw(st.sampled_from([0, 1, 10**12, 1_700_000_000_000]))
    hi = lo + draw(st.sampled_from([0, 1, 7, 1000, 2**20, 2**41]))
    span = hi - lo + 1

    def inside(value: int) -> int:
        return lo + value % span

    stamps = [inside(value) for value in draw(spread)]
    for at, times in draw(bursts):
        stamps += [inside(at)] * times
    outside = draw(st.lists(st.integers(0, 2**42), max_size=20))  # before lo or after hi: in no window
    stamps += [value for value in outside if not lo <= value <= hi]
    return stamps, lo, hi


@settings(max_examples=300, deadline=None)
@given(realm=realms(), limit=st.integers(1, 60), fanout=st.integers(2, 16))
def test_windows_tile_the_range_and_hold_every_user_once_within_the_limit(
    realm: tuple[list[int], int, int], limit: int, fanout: int
) -> None:
    stamps, lo, hi = realm
    keycloak = StaticRealm(stamps)
    windows, stats = plan(keycloak, lo, hi, limit, fanout)

    assert_tiles(windows, lo, hi)
    inside = [stamp for stamp in stamps if lo <= stamp <= hi]
    for window in windows:
        held = sum(1 for stamp in inside if window.created_after <= stamp <= window.created_before)
        assert window.expected_count == held  # no churn: the counts are exact
        if window.offset_paged:
            assert window.span_ms == 1 and held > limit
        else:
            assert held <= limit
    # every timestamp in exactly one window
    starts = [window.created_after for window in windows]
    for stamp in inside:
        index = bisect.bisect_right(starts, stamp) - 1
        assert windows[index].created_after <= stamp <= windows[index].created_before
    # adjacent windows that would fit together were merged
    for before, after in itertools.pairwise(windows):
        if not before.offset_paged and not after.offset_paged:
            assert before.expected_count + after.expected_count > limit
    assert stats.count_calls == keycloak.calls
    assert keycloak.calls <= count_bound(len(inside), lo, hi, limit, fanout)


def test_an_empty_realm_is_one_window_from_one_count() -> None:
    keycloak = StaticRealm([])
    windows, stats = plan(keycloak, 0, 2**41, 100)
    assert windows == [Window(0, 2**41, 0)]
    assert stats.count_calls == 1


def test_a_millisecond_over_the_limit_is_an_offset_paged_window_of_its_own() -> None:
    burst_at = 1_700_000_000_123
    stamps = [burst_at] * 5000 + [burst_at - 5, burst_at + 9, 10**12]
    keycloak = StaticRealm(stamps)
    windows, _ = plan(keycloak, 0, 2**41, 500)
    assert_tiles(windows, 0, 2**41)
    paged = [window for window in windows if window.offset_paged]
    assert paged == [Window(burst_at, burst_at, 5000, offset_paged=True)]
    assert sum(window.expected_count for window in windows) == len(stamps)
    # a burst is found by bisection (two counts a depth), not by wide cuts of mostly empty spans
    assert keycloak.calls <= 1 + 2 * 42 + 16


def test_a_realm_spread_over_years_takes_about_a_count_per_window() -> None:
    start = 1_600_000_000_000
    step = 1_000  # 100,000 users, one a second
    stamps = [start + i * step for i in range(100_000)]
    keycloak = StaticRealm(stamps)
    windows, stats = plan(keycloak, 0, start + 10**11, 499)
    assert_tiles(windows, 0, start + 10**11)
    assert sum(window.expected_count for window in windows) == 100_000
    assert all(window.expected_count <= 499 for window in windows)
    assert len(windows) <= 2 * 100_000 // 499 + 1  # merged: two neighbours always exceed the limit
    # one root count, a bisection of the empty decades, then wide cuts: under two counts a window, and
    # few windows more than the 201 that 100,000 / 499 needs at least
    assert keycloak.calls < 2 * len(windows), (keycloak.calls, len(windows), stats.depth)
    assert len(windows) < 1.25 * 201


@pytest.mark.parametrize(
    ("lo", "hi", "limit", "fanout"),
    [(MIN_CREATED_MS - 1, 10, 5, 2), (5, 4, 5, 2), (0, 2**63, 5, 2), (0, 10, 0, 2), (0, 10, 5, 1)],
)
def test_bad_arguments_are_refused(lo: int, hi: int, limit: int, fanout: int) -> None:
    with pytest.raises(ValueError):
        plan(StaticRealm([]), lo, hi, limit, fanout)


# --- a window's pages ----------------------------------------------------------------------------------


def test_a_window_that_fits_a_page_is_one_request_sized_to_come_back_short() -> None:
    assert page_requests(Window(0, 9, 99), 100) == [PageRequest(0, 100)]
    assert page_requests(Window(0, 9, 250), 100) == [
        PageRequest(0, 100),
        PageRequest(100, 100),
        PageRequest(200, 51),
    ]
    assert page_requests(Window(0, 9, 100), 100) == [PageRequest(0, 100), PageRequest(100, 1)]
    assert page_requests(Window(0, 9, 0), 100) == []


def test_completeness_needs_a_short_page_and_every_page_before_it() -> None:
    window = Window(0, 9, 250)
    a, b, c = page_requests(window, 100)
    assert not listing_complete(window, {})
    assert not listing_complete(window, {a: 100, b: 100})  # all full: the window may hold more
    assert not listing_complete(window, {b: 40})  # short, but the page before it is missing
    assert listing_complete(window, {a: 100, b: 40})  # users deleted: b ends it, c is not needed
    assert listing_complete(window, {a: 100, b: 100, c: 50})
    assert listing_complete(Window(0, 9, 0), {})


def test_a_window_that_grew_asks_for_more_pages_until_one_comes_back_short() -> None:
    pages = WindowPages(Window(0, 9, 99), 100)
    (only,) = pages.planned
    assert pages.more() is None  # the planned page has not come back
    pages.record(only, 100)  # full: someone was created into the window since it was counted
    assert not pages.complete
    extra = pages.more()
    assert extra == PageRequest(100, 100)
    assert pages.more() is None
    pages.record(extra, 3)
    assert pages.complete
    assert pages.more() is None
    with pytest.raises(ValueError):
        pages.record(PageRequest(7, 3), 1)  # never requested
    with pytest.raises(ValueError):
        pages.record(only, 101)  # more users than asked for


# --- churn: users created and deleted while the run counts and lists -------------------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["create_now", "create_past", "delete", "nothing"]), st.integers(0, 10**6)),
    max_size=200,
)


@dataclass
class ChurningRealm:
    """A realm whose users change on every request: each request first advances Keycloak's clock and applies
    the next churn operation. Users are ordered by username (here the id) inside a window, like Keycloak's."""

    users: dict[int, int]  # id -> creation time
    clock: int
    ops: list[tuple[str, int]]
    next_id: int = 10**9
    ever: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    churned_at: list[int] = field(default_factory=list)  # request numbers after which something changed
    requests: int = 0

    def __post_init__(self) -> None:
        self.ever = set(self.users)

    def _tick(self) -> None:
        self.requests += 1
        self.clock += 1
        if not self.ops:
            return
        op, value = self.ops.pop(0)
        if op == "delete" and self.users:
            victim = sorted(self.users)[value % len(self.users)]
            del self.users[victim]
            self.deleted.add(victim)
        elif op == "import_now":  # `value` users in one millisecond, Keycloak's clock (a bulk import)
            for _ in range(value):
                self.users[self.next_id] = self.clock
                self.ever.add(self.next_id)
                self.next_id += 1
        elif op.startswith("create"):
            # explicit createdTimestamp (imports, POST with createdTimestamp), or Keycloak's clock
            stamp = value % self.clock if op == "create_past" else self.clock
            self.users[self.next_id] = stamp
            self.ever.add(self.next_id)
            self.next_id += 1
        else:
            return
        self.churned_at.append(self.requests)

    async def count(self, after: int, before: int) -> int:
        self._tick()
        return sum(1 for stamp in self.users.values() if after <= stamp <= before)

    def count_now(self, after: int) -> int:
        """Users created at or after `after`, without a request (a test's window sized by hand)."""
        return sum(1 for stamp in self.users.values() if stamp >= after)

    def page(self, window: Window, request: PageRequest) -> list[int]:
        self._tick()
        held = sorted(
            i for i, stamp in self.users.items() if window.created_after <= stamp <= window.created_before
        )
        return held[request.first : request.end]


async def list_by_windows(
    realm: ChurningRealm, lo: int, hi: int, page_size: int, stats: PlanStats
) -> tuple[Counter[int], dict[int, bool]]:
    """Plan and list as the full reconcile would, each window listed as soon as it is planned. Returns how
    often each user was listed and, per user listed or not, whether its window changed between two of its
    own page requests (the only way offset paging inside a window can hide a user)."""
    from reconciler.fullsync.windows import plan_windows

    listed: Counter[int] = Counter()
    shifted_windows: list[Window] = []
    async for window in plan_windows(realm.count, lo, hi, page_size - 1, stats=stats):
        pages = WindowPages(window, page_size)
        requested_at: list[int] = []
        queue = list(pages.planned)
        while queue:
            request = queue.pop(0)
            users = realm.page(window, request)
            requested_at.append(realm.requests)
            pages.record(request, len(users))
            listed.update(users)
            if (more := pages.more()) is not None:
                queue.append(more)
            if pages.complete:
                break
        assert pages.complete
        first, last = requested_at[0] if requested_at else 0, requested_at[-1] if requested_at else 0
        if any(first <= at < last for at in realm.churned_at):
            shifted_windows.append(window)
    shifted = {
        user: any(w.created_after <= stamp <= w.created_before for w in shifted_windows)
        for user, stamp in realm.users.items()
    }
    return listed, shifted


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    realm=realms(),
    ops=OPS,
    page_size=st.integers(2, 40),
    margin=st.integers(0, 5000),
)
def test_under_churn_every_user_present_for_the_whole_run_is_listed_exactly_once(
    realm: tuple[list[int], int, int], ops: list[tuple[str, int]], page_size: int, margin: int
) -> None:
    stamps, lo, _ = realm
    stamps = [stamp for stamp in stamps if stamp >= lo]
    start = max([lo, *stamps]) + 1  # Keycloak's clock when the run starts: every user was created before
    keycloak = ChurningRealm(dict(enumerate(stamps)), start, list(ops))
    initial = set(keycloak.users)
    stats = PlanStats()

    listed, shifted = asyncio.run(list_by_windows(keycloak, lo, start + margin, page_size, stats))

    whole_run = initial - keycloak.deleted
    for user in whole_run:
        # Else its window changed between two of its own pages (several pages: a burst millisecond, or a
        # window that grew): offset paging can hide it or list it again. The full reconcile confirms every
        # unlisted active user by GetUser before deactivating it, so it is read again, not deactivated.
        if not shifted[user]:
            assert listed[user] == 1, (user, keycloak.users[user])
    # nobody is listed who never existed, and a user in no shifted window is never listed twice
    assert set(listed) <= keycloak.ever
    assert all(n == 1 or shifted.get(user, True) for user, n in listed.items())
    ever_planned = len(keycloak.ever)
    assert stats.count_calls <= count_bound(ever_planned, lo, start + margin, page_size - 1, 16)


def test_one_page_windows_list_every_whole_run_user_once_whatever_the_churn() -> None:
    """Windows below the page size are single SQL statements: deletions anywhere and creations stamped by
    Keycloak's clock, between every two requests, never hide or repeat a user present for the whole run."""
    start = 1_700_000_000_000
    stamps = {i: start - 100_000 + i * 37 for i in range(2_000)}
    ops = [
        ("delete", i * 7919) if i % 2 else ("create_now", 0) for i in range(160)
    ]  # fewer than the requests
    keycloak = ChurningRealm(dict(stamps), start, ops)
    stats = PlanStats()

    listed, shifted = asyncio.run(list_by_windows(keycloak, 0, start, 50, stats))

    whole_run = set(stamps) - keycloak.deleted
    assert len(keycloak.deleted) == 80
    assert not any(shifted[user] for user in whole_run)
    assert all(listed[user] == 1 for user in whole_run)
