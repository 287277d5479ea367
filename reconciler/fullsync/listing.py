"""The full reconcile's listing: offset pages of Keycloak's users, several in flight, in arrival order, with
a page size that is either fixed or adapted to the measured cost per listed user.

Why offset paging and not partitions of the realm (BENCHMARKS.md, "Large realms"): on Keycloak 26.5 the
admin API's `search` is a prefix LIKE on username OR email OR lower(firstName) OR lower(lastName), which
PostgreSQL cannot serve from an index; it walks the realm's username index from the start, so a partition's
page costs what an offset page at the partition's position costs (an empty partition walks the whole realm),
each `/users/count?search=` is a full scan, and partitions overlap through the other three fields.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from reconciler.clients.keycloak import UserPage

# A larger or smaller page is tried after this many pages at one size (at least the pages in flight).
_PAGES_PER_STEP: Final = 2
_STEP: Final = 1.5  # factor between two tried sizes


PageFetch = Callable[[int, int], Coroutine[Any, Any, tuple[datetime, UserPage]]]
"""fetch(first, size) -> (observed_at stamped just before the request, the page)."""


@dataclass(slots=True)
class _Window:
    size: int
    pages: int = 0
    users: int = 0
    seconds: float = 0.0

    @property
    def cost(self) -> float:
        return self.seconds / self.users if self.users else float("inf")


class PageSizer:
    """Chooses each page's size: fixed when `low == high`, else a hill climb between them on the measured
    seconds per listed user (a page's request time divided by its users).

    Keycloak's cost per user depends on the page size both ways (per page: the offset walk of its
    database; per user in a page: work that grows with the page), and on the machine, so the best size is
    measured, not configured. After `max(depth, 2)` pages at one size the next size is 1.5x larger or
    smaller: the same direction while the cost per user falls, the other one when it rose or at a bound.
    The choice never affects what is listed, only how many requests it takes.
    """

    def __init__(self, low: int, high: int, depth: int) -> None:
        if not 1 <= low <= high:
            raise ValueError(f"page size bounds {low}..{high}")
        self.low, self.high = low, high
        self._per_step = max(depth, _PAGES_PER_STEP)
        self._current = _Window(low)
        self._previous: _Window | None = None
        self._growing = True
        self.sizes: list[int] = [low]  # every size used, in order (for logs and tests)

    @property
    def adaptive(self) -> bool:
        return self.low < self.high

    @property
    def size(self) -> int:
        """The size of the next page to request."""
        return self._current.size

    def observe(self, size: int, users: int, seconds: float) -> None:
        """A full page of `size` came back in `seconds` (short pages end the listing and are not counted)."""
        if not self.adaptive or size != self._current.size or users < size:
            return  # a page requested before the last change measures the old size
        window = self._current
        window.pages += 1
        window.users += users
        window.seconds += seconds
        if window.pages >= self._per_step:
            self._step()

    def _step(self) -> None:
        window, previous = self._current, self._previous
        if previous is not None and window.cost > previous.cost:
            self._growing = not self._growing  # worse than the size before: turn round
        size = self._next_size(window.size)
        if size == window.size:  # at a bound: turn round
            self._growing = not self._growing
            size = self._next_size(window.size)
        self._previous = window
        self._current = _Window(size)
        self.sizes.append(size)

    def _next_size(self, size: int) -> int:
        target = round(size * _STEP) if self._growing else round(size / _STEP)
        return max(self.low, min(self.high, target))


class OffsetPages:
    """The listing's offset pages, several in flight, handed out in the order they arrive.

    Pages tile the listing: each starts where the one requested before it ends, whatever sizes the
    `PageSizer` chose. At most `depth` pages are outstanding (requested, or fetched and not yet handed out),
    so a run holds at most `depth + 1` pages. The listing is complete once the first short page (fewer
    users than requested) is known and every page before it has been handed out; pages after it are
    cancelled or dropped (they hold nothing the confirmation of candidates would not find). Past the
    position Keycloak's count says is the end, pages are requested one at a time: only a realm that grew
    during the run needs them.
    """

    def __init__(self, fetch: PageFetch, sizer: PageSizer, depth: int, total: int) -> None:
        self._fetch = fetch
        self._sizer = sizer
        self._depth = depth
        self._total = total
        self._tasks: dict[asyncio.Task[tuple[datetime, UserPage, float]], tuple[int, int]] = {}
        self._next = 0  # `first` of the next page to request
        self._last: int | None = None  # `first` of the first short page, once one arrived
        self._dropped: list[asyncio.Task[tuple[datetime, UserPage, float]]] = []  # awaited in close
        self.applied = 0  # pages handed out

    @property
    def sizer(self) -> PageSizer:
        return self._sizer

    @property
    def complete(self) -> bool:
        """Every page up to the first short one has been handed out."""
        return self._last is not None and not self._tasks

    async def next_page(self) -> tuple[int, datetime, UserPage] | None:
        """The next fetched page (its `first`, stamp, page), or None once the listing is complete. Raises
        the first failed request's error."""
        if self.complete:
            return None
        self._fill()
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        task = min(done, key=self._tasks.__getitem__)
        first, size = self._tasks.pop(task)
        observed_at, page, seconds = task.result()
        if page.size < size:
            self._end_at(first)  # pages after it are not needed
        else:
            self._sizer.observe(size, page.size, seconds)
        self._fill()  # keep requests going while the caller applies this page
        self.applied += 1
        return first, observed_at, page

    async def _timed(self, first: int, size: int) -> tuple[datetime, UserPage, float]:
        started = time.perf_counter()
        observed_at, page = await self._fetch(first, size)
        return observed_at, page, time.perf_counter() - started

    def _fill(self) -> None:
        while self._last is None and len(self._tasks) < self._room():
            size = self._sizer.size
            task = asyncio.create_task(self._timed(self._next, size))
            self._tasks[task] = (self._next, size)
            self._next += size

    def _room(self) -> int:
        return self._depth if self._next <= self._total else 1

    def _end_at(self, first: int) -> None:
        self._last = first if self._last is None else min(self._last, first)
        for task, (other, _) in list(self._tasks.items()):
            if other > self._last:
                del self._tasks[task]
                if task.done():
                    _ = task.cancelled() or task.exception()  # dropped, its error retrieved
                else:
                    task.cancel()
                    self._dropped.append(task)

    async def close(self) -> None:
        """Cancel whatever is still requested and wait for it (its error is not ours to raise)."""
        tasks = [*self._tasks, *self._dropped]
        self._tasks.clear()
        self._dropped.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
