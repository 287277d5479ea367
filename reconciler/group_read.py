"""Grouped store reads for the listing road's covered check (reconciler/burst.py).

When a burst listing ends, the thousands of users that waited for it come back at once, and each asks the
store whether it holds an observation after its hints. One read per user costs SecantusDB about five times
what the same users cost in `$in` reads of 100 (BENCHMARKS.md), and the store is the busiest server in a
burst. So, like `GroupCommit` for writes: while one read is in flight the users that arrive wait, then go
together in the next one (at most `max_batch`); at low load a read is a single user with no added delay.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from reconciler.store import UserStore


class GroupRead:
    """`await group.last_observed(user_id)`: the latest observation the store holds of that user, or None."""

    def __init__(self, store: UserStore, max_batch: int) -> None:
        self._store = store
        self._max_batch = max_batch
        self._pending: dict[str, list[asyncio.Future[datetime | None]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.reads = 0  # store reads made (for tests)

    async def last_observed(self, user_id: str) -> datetime | None:
        """Raises the store's error of the read that carried this user (the caller's queue retries)."""
        done: asyncio.Future[datetime | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(user_id, []).append(done)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all(), name="group-read")
        return await done

    async def _read_all(self) -> None:
        try:
            while self._pending:
                ids = list(self._pending)[: self._max_batch]
                waiters = {user_id: self._pending.pop(user_id) for user_id in ids}
                try:
                    found = await self._store.last_observed(ids)
                except Exception as error:  # every waiter gets the error and retries on its own
                    _settle(waiters, error=error)
                else:
                    _settle(waiters, found)
                finally:
                    self.reads += 1
        finally:
            self._reader = None
            _settle(self._pending, cancel=True)  # only if this task itself was cancelled
            self._pending.clear()


def _settle(
    waiters: dict[str, list[asyncio.Future[datetime | None]]],
    found: dict[str, datetime] | None = None,
    *,
    error: Exception | None = None,
    cancel: bool = False,
) -> None:
    for user_id, futures in waiters.items():
        for done in futures:
            if done.done():
                continue
            if cancel:
                done.cancel()
            elif error is not None:
                done.set_exception(error)
            else:
                done.set_result((found or {}).get(user_id))
