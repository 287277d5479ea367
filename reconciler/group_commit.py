"""Group commit for the event path: observations of many users applied in one store read and bulk write.

A store write costs a commit (tens of milliseconds on some servers) whatever its size, so one write per user
caps the event path at a few dozen users per second. Here, while one batch is being written, the
observations that arrive wait and then go together in the next one: at low load a batch is a single user
with no added delay; under load batches grow up to `max_batch` and throughput grows with them.
"""

from __future__ import annotations

import asyncio

from reconciler.apply import Applier
from reconciler.models import Observation
from reconciler.plan import ApplyPolicy


class GroupCommit:
    """`await group.apply(observation)` returns once the store write that carried it has succeeded."""

    def __init__(self, applier: Applier, max_batch: int) -> None:
        self._applier = applier
        self._max_batch = max_batch
        self._pending: list[tuple[Observation, ApplyPolicy, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0  # store writes made (for tests and benchmarks)

    async def apply(self, observation: Observation, policy: ApplyPolicy) -> None:
        """Apply one observation with whatever else is waiting under the same policy; raises the batch's
        error if it failed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((observation, policy, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all(), name="group-commit")
        await done

    async def _write_all(self) -> None:
        try:
            while self._pending:
                policy = self._pending[0][1]
                batch = [item for item in self._pending if item[1] == policy][: self._max_batch]
                taken = {id(item) for item in batch}
                self._pending = [item for item in self._pending if id(item) not in taken]
                try:
                    await self._applier.apply([obs for obs, _, _ in batch], policy)
                except Exception as error:  # every waiter gets the error and retries on its own
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                else:
                    for _, _, done in batch:
                        if not done.done():
                            done.set_result(None)
                finally:
                    self.batches += 1
        finally:
            self._writer = None
            for (
                _,
                _,
                done,
            ) in self._pending:  # only if this task itself was cancelled: nothing is left hanging
                if not done.done():
                    done.cancel()
            self._pending.clear()
