"""Creation-time windows: the full listing cut into ranges of `createdTimestamp` sized by `/users/count`.

Keycloak 26.6 and later filter `GET /users` and `GET /users/count` by `createdAfter` / `createdBefore`
(epoch milliseconds, both ends inclusive, served by an index on realm and creation time). A window of a
few hundred users costs the same wherever it lies, where an offset page costs more the deeper it starts.

`plan_windows` splits `[lo, hi]` into disjoint inclusive windows, `b + 1` of one being `a` of the next,
each holding at most `limit` users by the counts it made. A range over the limit is cut into equal spans
of time (as many as its users would fill if spread evenly, at most `fanout`; two when its users sit in a
small part of it, as after a bulk import) and each span is counted, until every span fits or is a single millisecond.
Such a millisecond (an import stamps thousands of users with one) is a window of its own, `offset_paged`:
only offset pages inside it can tile it. Adjacent spans that fit together are merged back into one window.

`WindowPages` turns a window into its page requests (`first`, `max`, same filters) and says when its
listing is complete. Why a listing by windows misses nobody present for the whole run, and where the
deactivation rule still needs its confirmation by GetUser, is set out in `WindowPages`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

# Keycloak reads a value with a '-' as a date (yyyy-MM-dd): a negative epoch millisecond is a 400.
MIN_CREATED_MS: Final = 0
MAX_CREATED_MS: Final = 2**63 - 1  # Java's Long.MAX_VALUE
DEFAULT_FANOUT: Final = 16
# A span holding more than this share of its parent's users is "concentrated": bisected, not cut wide.
_CONCENTRATED: Final = 0.75

CountFn = Callable[[int, int], Awaitable[int]]
"""count(created_after_ms, created_before_ms) -> users created in that range, both ends inclusive."""


@dataclass(frozen=True, slots=True)
class Window:
    """Users created in `[created_after, created_before]` (epoch ms, both inclusive)."""

    created_after: int
    created_before: int
    expected_count: int  # what /users/count said while planning
    offset_paged: bool = False  # one millisecond holding more than the limit

    @property
    def span_ms(self) -> int:
        return self.created_before - self.created_after + 1

    def params(self) -> dict[str, str]:
        """The query parameters that select this window (for /users and /users/count alike)."""
        return {"createdAfter": str(self.created_after), "createdBefore": str(self.created_before)}


@dataclass(slots=True)
class PlanStats:
    """What planning cost: count requests, and the deepest split."""

    count_calls: int = 0
    depth: int = 0


def _spans(a: int, b: int, pieces: int) -> list[tuple[int, int]]:
    """`[a, b]` cut into `pieces` contiguous inclusive spans of (nearly) equal length."""
    length = b - a + 1
    bounds = [a + length * i // pieces for i in range(pieces + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(pieces) if bounds[i + 1] > bounds[i]]


class _Merger:
    """Joins adjacent windows while their counts fit the limit; a single-millisecond window never joins."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._pending: Window | None = None

    def push(self, window: Window) -> Window | None:
        """Takes the next window in time order; returns a finished one, if any."""
        pending = self._pending
        if pending is None:
            self._pending = window
            return None
        joined = pending.expected_count + window.expected_count
        if not pending.offset_paged and not window.offset_paged and joined <= self._limit:
            self._pending = Window(pending.created_after, window.created_before, joined)
            return None
        self._pending = window
        return pending

    def flush(self) -> Window | None:
        pending, self._pending = self._pending, None
        return pending


@dataclass(slots=True)
class _Planner:
    count: CountFn
    limit: int
    fanout: int
    semaphore: asyncio.Semaphore
    stats: PlanStats = field(default_factory=PlanStats)

    async def counted(self, a: int, b: int) -> int:
        async with self.semaphore:
            self.stats.count_calls += 1
            return await self.count(a, b)

    def pieces(self, a: int, b: int, users: int, concentrated: bool) -> int:
        # As many spans as the users need if spread evenly. Cutting finer (twice as many) made more counts
        # and no fewer windows on realms of 100,000 users spread evenly, at random, or in bursts.
        wanted = 2 if concentrated else min(self.fanout, max(2, math.ceil(users / self.limit)))
        return min(wanted, b - a + 1)

    async def leaves(
        self, a: int, b: int, users: int, concentrated: bool, depth: int = 0
    ) -> AsyncIterator[Window]:
        """The fitting spans of `[a, b]` (which holds `users`), in time order."""
        if users <= self.limit:
            yield Window(a, b, users)
            return
        if a == b:
            yield Window(a, b, users, offset_paged=True)
            return
        self.stats.depth = max(self.stats.depth, depth + 1)
        spans = _spans(a, b, self.pieces(a, b, users, concentrated))
        counts = await asyncio.gather(*(self.counted(x, y) for x, y in spans))
        for (x, y), inner in zip(spans, counts, strict=True):
            async for window in self.leaves(x, y, inner, inner > _CONCENTRATED * users, depth + 1):
                yield window


async def plan_windows(
    count: CountFn,
    lo: int,
    hi: int,
    limit: int,
    *,
    fanout: int = DEFAULT_FANOUT,
    concurrency: int = 4,
    stats: PlanStats | None = None,
) -> AsyncIterator[Window]:
    """Windows covering `[lo, hi]` exactly, in time order, each of at most `limit` users by the counts made
    (a single millisecond over the limit is one `offset_paged` window), yielded as soon as each is final.

    Counts of sibling spans run concurrently, at most `concurrency` at once. With N the users that existed
    at some time while planning and R = hi - lo + 1, the count requests are at most
    1 + fanout * ceil(log2 R) * floor(N / limit): the spans split at one depth are disjoint and each held
    more than `limit` users when counted (so there are at most N / limit of them), each split makes at most
    `fanout` counts, and every split at least halves a span (so there are at most log2 R depths).
    """
    if not MIN_CREATED_MS <= lo <= hi <= MAX_CREATED_MS:
        raise ValueError(f"creation-time range {lo}..{hi}")
    if limit < 1 or fanout < 2 or concurrency < 1:
        raise ValueError(f"limit {limit}, fanout {fanout}, concurrency {concurrency}")
    planner = _Planner(count, limit, fanout, asyncio.Semaphore(concurrency), stats or PlanStats())
    merger = _Merger(limit)
    total = await planner.counted(lo, hi)
    async for leaf in planner.leaves(lo, hi, total, concentrated=False):
        if (done := merger.push(leaf)) is not None:
            yield done
    if (last := merger.flush()) is not None:
        yield last


@dataclass(frozen=True, slots=True, order=True)
class PageRequest:
    """`first` and `max` of one `GET /users` inside a window (with the window's filters)."""

    first: int
    max: int

    @property
    def end(self) -> int:
        return self.first + self.max


def page_requests(window: Window, page_size: int) -> list[PageRequest]:
    """The pages that list `window` when it still holds what it was counted with: they tile
    `[0, expected_count + 1)`, so that the last one comes back short and ends the listing without one more
    request. A window counted empty needs none (see `WindowPages`)."""
    if page_size < 1:
        raise ValueError(f"page size {page_size}")
    if window.expected_count == 0:
        return []
    slots = window.expected_count + 1
    return [PageRequest(first, min(page_size, slots - first)) for first in range(0, slots, page_size)]


def listing_complete(window: Window, results: dict[PageRequest, int]) -> bool:
    """Whether pages that came back (request -> users returned) list the whole window: some page came back
    short (fewer users than its `max`) and every page before it came back too. Pages must tile from 0."""
    if window.expected_count == 0:
        return True
    short = [request for request, size in results.items() if size < request.max]
    if not short:
        return False
    end = min(short).first
    covered = sorted(request for request in results if request.first < end)
    position = 0
    for request in covered:
        if request.first != position:
            return False  # a gap: a page before the short one has not come back
        position = request.end
    return position == end


class WindowPages:
    """The page requests of one window and when its listing is complete.

    Start with `planned` (`page_requests`), `record` what each page returned, and ask `more` for the next
    request whenever every page came back full (the window grew since it was counted); `complete` says
    when a short page ends it. A page after the short one is not needed: its users (if any) entered the
    window after it was counted, and they are the event path's or the next run's.

    Why the windows list every user present for the whole run, and list it once:

    - Windows cover `[lo, hi]` without overlap; a user has one creation time, so it lies in one window.
      `lo` is 0 (the least value Keycloak accepts), `hi` is Keycloak's clock at the start of the run plus a
      margin for the skew between Keycloak nodes: a user present at the start was created before it.
    - A count is one SQL statement: a user present for the whole run is in the count of its window, so a
      window counted empty holds no such user and needs no request.
    - One page is one SQL statement (ordered by username): a window listed by one page returns every user
      it holds at that moment, each once. Keep `limit` below the page size and nearly every window is one
      page (`expected_count + 1` slots).
    - A window of several pages (an `offset_paged` millisecond, or a window that grew) is offset-paged
      inside: a user deleted from it between two of its pages shifts the rest left and can hide one user
      from the listing; one created into it shifts right and lists one twice (harmless: every apply is
      idempotent). The full reconcile's rule covers the first case: every active stored user the listing
      did not return is confirmed by GetUser before it is deactivated, and applied as found instead.
    - Creation into an already listed window: Keycloak stamps `createdTimestamp` with its clock when it
      creates a user, but POST /users, partial import and realm import keep a `createdTimestamp` given in
      the representation (UserResource.updateUserFromRep, DefaultExportImportManager.createUser), and a
      node whose clock is behind stamps the past. Such a user was not present for the whole run: the event
      path (or the next run) brings it, and nothing is deactivated for it (it is not in the store yet, or
      it is and the GetUser confirmation finds it).
    - Not in any window: users with a negative or NULL `createdTimestamp` (rows written straight into the
      database, very old rows, explicit imports) and users stamped after `hi`. Keycloak's plain
      `/users/count` counts them (service accounts aside); the confirmation by GetUser keeps them from
      being deactivated, but they are then read one by one on every run.
    """

    def __init__(self, window: Window, page_size: int) -> None:
        self.window = window
        self._page_size = page_size
        self.planned: list[PageRequest] = page_requests(window, page_size)
        self._results: dict[PageRequest, int] = {}

    def record(self, request: PageRequest, size: int) -> None:
        """Page `request` returned `size` users (service accounts included, before any are skipped)."""
        if request not in self.planned or not 0 <= size <= request.max:
            raise ValueError(f"page {request} of {self.window} returned {size} users")
        self._results[request] = size

    @property
    def complete(self) -> bool:
        return listing_complete(self.window, self._results)

    def more(self) -> PageRequest | None:
        """One more page when every planned page came back full; else None (complete, or pages pending)."""
        if self.complete or len(self._results) < len(self.planned):
            return None
        request = PageRequest(self.planned[-1].end, self._page_size)
        self.planned.append(request)
        return request
