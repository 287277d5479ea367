"""A coalescing work queue keyed by user id (controller-runtime's workqueue, for asyncio).

- A user already waiting is not queued twice: the new hint joins the waiting one.
- At most one apply per user is in flight.
- A hint that arrives while its user is being applied marks the user dirty: exactly one more apply follows.
- Workers run concurrently across users, up to a bound.

Every `submit` carries an optional `done` callback, called once an apply that *started after* the submit
has finished successfully: that is the moment the hint's Kafka record may be committed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from reconciler import metrics
from reconciler.logs import get_logger

log = get_logger(__name__)

H = TypeVar("H")
Done = Callable[[], None]


@dataclass
class _Entry(Generic[H]):
    hints: list[H] = field(default_factory=list)  # hints for the next apply
    waiters: list[Done] = field(default_factory=list)  # completions of the next apply
    running: bool = False
    queued: bool = False


class CoalescingQueue(Generic[H]):
    """Runs `worker(key, hints)` per key, serialised per key and coalesced, with `concurrency` workers.

    `worker` must handle its own transient failures (retry until it succeeds or the queue is closing);
    if it raises, the error is logged and the hints are re-queued so that nothing is lost.
    """

    def __init__(self, worker: Callable[[str, list[H]], Awaitable[None]], concurrency: int) -> None:
        self._worker = worker
        self._concurrency = concurrency
        self._entries: dict[str, _Entry[H]] = {}
        self._ready: deque[str] = deque()
        self._wakeup = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.coalesced = 0

    def __len__(self) -> int:
        """Users queued or in flight."""
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.running)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"apply-worker-{i}") for i in range(self._concurrency)
        ]

    async def submit(self, key: str, hint: H, done: Done | None = None) -> None:
        """Queue `hint` for `key`; `done` is called after an apply that saw it has succeeded."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        elif entry.queued or entry.running:
            self.coalesced += 1
            metrics.HINTS_COALESCED.inc()
        entry.hints.append(hint)
        if done is not None:
            entry.waiters.append(done)
        self._idle.clear()
        if not entry.queued and not entry.running:
            entry.queued = True
            self._ready.append(key)
            async with self._wakeup:
                self._wakeup.notify()
        metrics.QUEUE_DEPTH.set(len(self._entries))

    async def _run(self) -> None:
        while True:
            async with self._wakeup:
                await self._wakeup.wait_for(lambda: bool(self._ready) or self._closing)
                if not self._ready:
                    return
                key = self._ready.popleft()
            entry = self._entries[key]
            entry.queued, entry.running = False, True
            hints, waiters = entry.hints, entry.waiters
            entry.hints, entry.waiters = [], []
            try:
                await self._worker(key, hints)
            except asyncio.CancelledError:
                self._requeue_failed(key, entry, hints, waiters)
                raise
            except Exception:
                log.exception("apply failed; the user is queued again", user_id=key)
                self._requeue_failed(key, entry, hints, waiters)
                await asyncio.sleep(1.0)
            else:
                for done in waiters:
                    done()
            finally:
                entry.running = False
            await self._after_apply(key, entry)

    def _requeue_failed(self, key: str, entry: _Entry[H], hints: list[H], waiters: list[Done]) -> None:
        entry.hints = hints + entry.hints
        entry.waiters = waiters + entry.waiters

    async def _after_apply(self, key: str, entry: _Entry[H]) -> None:
        if entry.hints and not self._closing:
            # Hints arrived during the apply (or it failed): exactly one more apply for all of them.
            entry.queued = True
            self._ready.append(key)
            async with self._wakeup:
                self._wakeup.notify()
        elif not entry.hints:
            del self._entries[key]
        metrics.QUEUE_DEPTH.set(len(self._entries))
        if not self._entries or (self._closing and not any(e.running for e in self._entries.values())):
            self._idle.set()

    async def join(self) -> None:
        """Wait until nothing is queued or in flight."""
        await self._idle.wait()

    async def close(self, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop the workers, after finishing what is queued when `drain` (bounded by `timeout_s`)."""
        if drain:
            try:
                await asyncio.wait_for(self.join(), timeout_s)
            except TimeoutError:
                log.warning("queue did not drain in time", pending_users=len(self._entries))
        self._closing = True
        async with self._wakeup:
            self._wakeup.notify_all()
        for task in self._tasks:
            if not drain:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
