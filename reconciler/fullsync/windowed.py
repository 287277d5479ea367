"""The full reconcile's listing by creation-time windows (Keycloak 26.6+), and which road a Keycloak takes.

`WindowedPages` lists the windows that `windows.plan_windows` yields (sized by `/users/count` with the same
filters) while the planner is still counting later ones: several page requests in flight across windows,
each page handed out as it arrives, so the caller applies it while the next ones are listed. A window is
done when `windows.WindowPages` says so (a short page, and every page before it back); the listing is
complete when the planner has finished and every window is done. Why that lists every user present for the
whole run is set out in `windows.WindowPages`.

`probe_road` finds out whether Keycloak filters by creation time: a count of the users created at the last
representable millisecond is 0 on a Keycloak that filters, and the realm's count on one that ignores the
unknown parameters (26.5).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from reconciler.base.errors import KeycloakProtocolError
from reconciler.clients.keycloak import KeycloakAdminClient, UserPage
from reconciler.fullsync.windows import MAX_CREATED_MS, PageRequest, Window, WindowPages

# Keycloak nodes' clocks may differ from the one that answered at the start of the run: users a node
# stamped up to this much later still fall in the last window (an empty span costs one count at most).
CLOCK_MARGIN_MS: Final = 3_600_000
# A window that keeps growing past this many users beyond its count: Keycloak ignores the filters.
_GROWTH_PAGES: Final = 10
# Except a window that reaches past the run's start: the users created while the run lists land there, so it
# grows with the churn (an import of thousands in one millisecond); it is bounded all the same.
_OPEN_GROWTH_USERS: Final = 1_000_000

WindowFetch = Callable[[Window, PageRequest], Coroutine[Any, Any, tuple[datetime, UserPage]]]
"""fetch(window, request) -> (observed_at stamped just before the request, the page)."""


class Road(StrEnum):
    WINDOWS = "windows"
    OFFSET = "offset"


async def probe_road(keycloak: KeycloakAdminClient, total: int) -> Road | None:
    """WINDOWS when Keycloak filters by creation time, OFFSET when it does not, None when it cannot tell
    (an empty realm: both answers are 0). A 400 (a Keycloak that rejects the parameters) is OFFSET too."""
    if total == 0:
        return None
    try:
        probe = await keycloak.count_created(MAX_CREATED_MS, MAX_CREATED_MS)
    except KeycloakProtocolError:
        return Road.OFFSET
    return Road.WINDOWS if probe == 0 else Road.OFFSET


@dataclass(slots=True)
class _Request:
    pages: WindowPages
    request: PageRequest


_Fetched = tuple[datetime, UserPage, float]


class WindowedPages:
    """The pages of every window, several in flight, handed out in the order they arrive.

    At most `depth` page requests are outstanding; windows are started in time order as the planner yields
    them (a window counted empty costs nothing). `next_page` returns (users returned before this page, stamp, page).
    Windows ending at or after `open_from_ms` (Keycloak's clock at the start of the run) may grow by the
    users created during the run, so they are allowed to outgrow their count by far more.
    """

    def __init__(
        self,
        fetch: WindowFetch,
        windows: AsyncIterator[Window],
        page_size: int,
        depth: int,
        open_from_ms: int | None = None,
    ) -> None:
        self._fetch = fetch
        self._open_from_ms = open_from_ms
        self._page_size = page_size
        self._depth = depth
        self._windows: asyncio.Queue[Window | None] = asyncio.Queue()
        self._planner = asyncio.ensure_future(self._plan(windows))
        self._planned_all = False
        self._waiting: deque[_Request] = deque()  # requests not yet sent, in window order
        self._tasks: dict[asyncio.Task[_Fetched], _Request] = {}
        self._open: set[WindowPages] = set()  # windows not complete yet
        self.windows = 0  # windows started
        self.applied = 0  # pages handed out
        self.returned = 0  # users (and unreadable items) returned, service accounts never among them

    async def _plan(self, windows: AsyncIterator[Window]) -> None:
        async for window in windows:
            self._windows.put_nowait(window)
        self._windows.put_nowait(None)

    @property
    def complete(self) -> bool:
        """The planner is done and every window's listing is complete."""
        return self._planned_all and not self._open and not self._tasks and not self._waiting

    async def next_page(self) -> tuple[int, datetime, UserPage] | None:
        """The next fetched page, or None once the listing is complete. Raises the first failed request's
        (or count's) error."""
        while True:
            self._fill()
            if self.complete:
                return None
            if self._tasks:
                break
            if self._planned_all:  # cannot happen: an open window always has a request waiting or sent
                raise KeycloakProtocolError("the windowed listing stalled")
            await self._next_window()  # nothing to request: the planner is still counting
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        task = done.pop()
        item = self._tasks.pop(task)
        observed_at, page, _ = task.result()
        self._record(item, page.size)
        self._fill()  # keep requests going while the caller applies this page
        self.applied += 1
        position, self.returned = self.returned, self.returned + page.size
        return position, observed_at, page

    def _record(self, item: _Request, size: int) -> None:
        pages = item.pages
        pages.record(item.request, size)
        if pages.complete:
            self._open.discard(pages)
            return
        more = pages.more()
        if more is None:
            return
        if more.first > self._growth_limit(pages.window):
            raise KeycloakProtocolError(
                f"window {pages.window.created_after}..{pages.window.created_before} does not end:"
                f" {more.first} users listed, Keycloak counted {pages.window.expected_count}"
                " (does it ignore createdAfter / createdBefore?)"
            )
        self._waiting.append(_Request(pages, more))

    def _growth_limit(self, window: Window) -> int:
        limit = 2 * window.expected_count + _GROWTH_PAGES * self._page_size
        if self._open_from_ms is not None and window.created_before >= self._open_from_ms:
            limit += _OPEN_GROWTH_USERS
        return limit

    async def _next_window(self) -> None:
        getter = asyncio.ensure_future(self._windows.get())
        await asyncio.wait({getter, self._planner}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            self._planner.result()  # raises the count's error
            return
        self._start(getter.result())

    def _fill(self) -> None:
        while len(self._tasks) < self._depth:
            if not self._waiting and not self._take_window():
                return
            if self._waiting:
                item = self._waiting.popleft()
                if item.pages.complete:
                    continue  # ended by a short page before this one was sent
                self._tasks[asyncio.create_task(self._timed(item))] = item

    def _take_window(self) -> bool:
        """Starts the next planned window if one is ready; False when none is (yet, or any more)."""
        while not self._planned_all and not self._windows.empty():
            self._start(self._windows.get_nowait())
            if self._waiting:
                return True
        if self._planner.done() and not self._planner.cancelled() and self._planner.exception():
            self._planner.result()
        return False

    def _start(self, window: Window | None) -> None:
        if window is None:
            self._planned_all = True
            return
        self.windows += 1
        pages = WindowPages(window, self._page_size)
        if pages.complete:
            return  # counted empty: nothing of the whole run is in it
        self._open.add(pages)
        self._waiting.extend(_Request(pages, request) for request in pages.planned)

    async def _timed(self, item: _Request) -> _Fetched:
        started = time.perf_counter()
        observed_at, page = await self._fetch(item.pages.window, item.request)
        return observed_at, page, time.perf_counter() - started

    async def close(self) -> None:
        """Cancel the planner and whatever is still requested, and wait for them."""
        tasks: list[asyncio.Future[Any]] = [*self._tasks, self._planner]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
