"""Batching for the store: many users' writes (or reads) carried by one store operation.

A store operation costs a round trip and, for writes, a commit (tens of milliseconds on some servers)
whatever its size, so one operation per user caps the event path at a few dozen users per second. A
`Batcher` lets callers submit one item each: while one batch is in flight the items that arrive wait, then
go together in the next one (at most `max_batch`, all of one group); at low load a batch is a single item
with no added delay, under load batches grow and throughput grows with them.

- `GroupCommit`: observations applied by the apply core in one store read and one bulk write per batch
  (the event path's writes; a batch's group is its `ApplyPolicy`).
- `GroupRead`: the latest observation the store holds of each user, in `$in` reads (the listing road's
  covered check: when a burst listing ends, the thousands of users that waited for it come back at once,
  and one read per user costs SecantusDB about five times what `$in` reads of 100 cost).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import datetime
from typing import Generic, TypeVar

from reconciler.apply.applier import Applier
from reconciler.clients.store import UserStore
from reconciler.domain.models import Observation
from reconciler.domain.plan import ApplyPolicy

T = TypeVar("T")
R = TypeVar("R")


def _one_group(_: object) -> Hashable:
    return None


class Batcher(Generic[T, R]):
    """`await batcher.submit(item)` returns the item's result once the batch that carried it is done.

    `run` takes a batch of items (all of one `group`) and returns one result per item, in order; its error
    is raised to every waiter of that batch, each of which retries on its own (the work queue decides).
    """

    def __init__(
        self,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        max_batch: int,
        *,
        name: str,
        group: Callable[[T], Hashable] = _one_group,
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._name = name
        self._group = group
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # store operations made (for tests and benchmarks)

    async def submit(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._worker is None:
            self._worker = asyncio.create_task(self._run_all(), name=self._name)
        return await done

    def _take_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        group = self._group(self._pending[0][0])
        batch = [entry for entry in self._pending if self._group(entry[0]) == group][: self._max_batch]
        taken = {id(entry) for entry in batch}
        self._pending = [entry for entry in self._pending if id(entry) not in taken]
        return batch

    async def _run_all(self) -> None:
        try:
            while self._pending:
                batch = self._take_batch()
                try:
                    results = await self._run([item for item, _ in batch])
                except Exception as error:  # every waiter gets the error and retries on its own
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                else:
                    for (_, done), result in zip(batch, results, strict=True):
                        if not done.done():
                            done.set_result(result)
                finally:
                    self.batches += 1
        finally:
            self._worker = None
            for _, done in self._pending:  # only if this task itself was cancelled: nothing is left hanging
                if not done.done():
                    done.cancel()
            self._pending.clear()


class GroupCommit:
    """`await group.apply(observation, policy)` returns once the store write that carried it succeeded."""

    def __init__(self, applier: Applier, max_batch: int) -> None:
        self._applier = applier
        self._batcher: Batcher[tuple[Observation, ApplyPolicy], None] = Batcher(
            self._apply, max_batch, name="group-commit", group=_policy_of
        )

    @property
    def batches(self) -> int:
        """Store writes made (for tests and benchmarks)."""
        return self._batcher.batches

    async def apply(self, observation: Observation, policy: ApplyPolicy) -> None:
        """Apply one observation with whatever else is waiting under the same policy; raises the batch's
        error if it failed."""
        await self._batcher.submit((observation, policy))

    async def _apply(self, items: Sequence[tuple[Observation, ApplyPolicy]]) -> list[None]:
        await self._applier.apply([observation for observation, _ in items], items[0][1])
        return [None] * len(items)


def _policy_of(item: tuple[Observation, ApplyPolicy]) -> Hashable:
    return item[1]


class GroupRead:
    """`await group.last_observed(user_id)`: the latest observation the store holds of that user, or None."""

    def __init__(self, store: UserStore, max_batch: int) -> None:
        self._store = store
        self._batcher: Batcher[str, datetime | None] = Batcher(self._read, max_batch, name="group-read")

    @property
    def reads(self) -> int:
        """Store reads made (for tests)."""
        return self._batcher.batches

    async def last_observed(self, user_id: str) -> datetime | None:
        """Raises the store's error of the read that carried this user (the caller's queue retries)."""
        return await self._batcher.submit(user_id)

    async def _read(self, user_ids: Sequence[str]) -> list[datetime | None]:
        found = await self._store.last_observed(user_ids)  # duplicates are read once
        return [found.get(user_id) for user_id in user_ids]
