"""A coalescing work queue keyed by user id (controller-runtime's workqueue, for asyncio).

- A user already waiting is not queued twice: the new hint joins the waiting one.
- At most one apply per user is in flight (invariant 4).
- A hint that arrives while its user is being applied marks the user dirty: exactly one more apply follows.
- Workers run concurrently across users, up to a bound.

The queue alone decides requeues (controller-runtime's reconcile handler): a worker returns `None` (done),
`Again(after_s, hint)` (done; look at this user once more after `after_s`, e.g. a re-check after a settle
delay), `Later(after_s)` (not done, nothing failed: the same hints again after `after_s`, e.g. while a
listing of the realm that will cover them runs), or raises. On `TemporaryError` / `PermanentError` the user's hints wait for a per-key backoff and
are tried again without limit, with the worker free meanwhile; on any other error they are tried
`max_attempts` times, then given up (its hints count as done: the next full reconcile covers the user).

Every `submit` carries an optional `done` callback, called once an apply that *started after* the submit has
finished (or was given up): that is the moment the hint's Kafka record may be committed (invariant 3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from reconciler.base.errors import PermanentError, TemporaryError
from reconciler.base.retry import Backoff
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger

log = get_logger(__name__)

H = TypeVar("H")
Done = Callable[[], None]


@dataclass(frozen=True, slots=True)
class Again(Generic[H]):
    """The apply is done; apply this key once more with `hint` after `after_s` seconds."""

    after_s: float
    hint: H


@dataclass(frozen=True, slots=True)
class Later:
    """Not done yet and nothing failed: try the same hints again after `after_s`, or as soon as `wake`
    completes (the worker is free meanwhile; their completions wait, so their records stay uncommitted)."""

    after_s: float
    wake: asyncio.Future[Any] | None = None


Worker = Callable[[str, list[H]], Awaitable[Again[H] | Later | None]]


class QueueObserver(Protocol):
    """What the queue tells the rest of the process (health, metrics, logs)."""

    def retrying(self, key: str, error: Exception, attempt: int, delay_s: float) -> None: ...

    def gave_up(self, key: str, error: Exception, attempts: int) -> None: ...

    def succeeded(self, key: str) -> None: ...


class LoggingObserver:
    """The default observer: a warning per retry, an error when a key is given up."""

    def retrying(self, key: str, error: Exception, attempt: int, delay_s: float) -> None:
        log.warning(
            "applying a user failed; retrying",
            user_id=key,
            attempt=attempt,
            retry_in_s=round(delay_s, 2),
            error_type=type(error).__name__,
            error=str(error),
        )

    def gave_up(self, key: str, error: Exception, attempts: int) -> None:
        log.error(
            "giving up on a user after repeated failures; the next full reconcile retries it",
            user_id=key,
            attempts=attempts,
            error_type=type(error).__name__,
            error=str(error),
        )

    def succeeded(self, key: str) -> None:
        return None


@dataclass
class _Entry(Generic[H]):
    hints: list[H] = field(default_factory=list)  # hints for the next apply
    waiters: list[Done] = field(default_factory=list)  # completions of the next apply
    running: bool = False
    queued: bool = False  # in the ready queue, or waiting for its backoff
    failures: int = 0  # consecutive failed applies (backoff)
    data_failures: int = 0  # of those, failures that were neither outages nor refusals (give-up)
    backoff: asyncio.TimerHandle | None = None


class CoalescingQueue(Generic[H]):
    """Runs `worker(key, hints)` per key, serialised per key and coalesced, with `concurrency` workers."""

    def __init__(
        self,
        worker: Worker[H],
        concurrency: int,
        *,
        backoff: Backoff | None = None,
        max_attempts: int = 5,
        observer: QueueObserver | None = None,
    ) -> None:
        self._worker = worker
        self._concurrency = concurrency
        self._backoff = backoff or Backoff(0.5, 15.0)
        self._max_attempts = max_attempts
        self._observer = observer or LoggingObserver()
        self._entries: dict[str, _Entry[H]] = {}
        self._ready: asyncio.Queue[str | None] = asyncio.Queue()
        self._rechecks: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.coalesced = 0
        self.submitted = 0

    def __len__(self) -> int:
        """Users queued, waiting for a retry, or in flight."""
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.running)

    @property
    def pending_rechecks(self) -> int:
        """Re-checks waiting for their delay."""
        return len(self._rechecks)

    @property
    def distinct_share(self) -> float:
        """Of the hints submitted so far, the share that was not coalesced into a waiting one (1.0 at start)."""
        return 1.0 - self.coalesced / self.submitted if self.submitted else 1.0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"apply-worker-{i}") for i in range(self._concurrency)
        ]

    async def submit(self, key: str, hint: H, done: Done | None = None) -> None:
        """Queue `hint` for `key`; `done` is called after an apply that saw it has finished."""
        self._add(key, hint, done)

    def _add(self, key: str, hint: H, done: Done | None) -> None:
        self.submitted += 1
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
            self._ready.put_nowait(key)
        metrics.QUEUE_DEPTH.set(len(self._entries))

    async def _run(self) -> None:
        while (key := await self._ready.get()) is not None:
            entry = self._entries[key]
            entry.queued, entry.running = False, True
            hints, waiters = entry.hints, entry.waiters
            entry.hints, entry.waiters = [], []
            try:
                again = await self._worker(key, hints)
            except asyncio.CancelledError:
                self._put_back(entry, hints, waiters)
                entry.running = False
                raise
            except Exception as error:
                entry.running = False
                self._failed(key, entry, hints, waiters, error)
            else:
                entry.running = False
                if isinstance(again, Later):
                    self._put_back(entry, hints, waiters)
                    self._wait(key, entry, again.after_s, again.wake)
                else:
                    self._succeeded(key, entry, waiters, again)
            self._settle(key, entry)

    def _succeeded(self, key: str, entry: _Entry[H], waiters: list[Done], again: Again[H] | None) -> None:
        entry.failures = entry.data_failures = 0
        for done in waiters:
            done()
        self._observer.succeeded(key)
        if again is not None:
            self._schedule_recheck(key, again)

    def _failed(
        self, key: str, entry: _Entry[H], hints: list[H], waiters: list[Done], error: Exception
    ) -> None:
        entry.failures += 1
        if not isinstance(error, TemporaryError | PermanentError):
            entry.data_failures += 1
            if entry.data_failures >= self._max_attempts:
                entry.failures = entry.data_failures = 0
                metrics.HINTS_ABANDONED.inc()
                self._observer.gave_up(key, error, self._max_attempts)
                for done in waiters:
                    done()
                return
        self._put_back(entry, hints, waiters)
        delay = self._backoff.delay(entry.failures)
        self._observer.retrying(key, error, entry.failures, delay)
        self._wait(key, entry, delay)

    def _wait(
        self, key: str, entry: _Entry[H], delay_s: float, wake: asyncio.Future[Any] | None = None
    ) -> None:
        """Requeue `key` after `delay_s`, or once `wake` is done (its hints are back in the entry)."""
        if self._closing:
            return
        entry.queued = True
        entry.backoff = asyncio.get_running_loop().call_later(delay_s, self._backoff_over, key)
        if wake is not None:
            wake.add_done_callback(lambda _: self._backoff_over(key))

    @staticmethod
    def _put_back(entry: _Entry[H], hints: list[H], waiters: list[Done]) -> None:
        entry.hints = hints + entry.hints
        entry.waiters = waiters + entry.waiters

    def _backoff_over(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.backoff is not None:
            entry.backoff.cancel()  # woken early: the timer must not requeue it a second time
            entry.backoff = None
            self._ready.put_nowait(key)

    def _settle(self, key: str, entry: _Entry[H]) -> None:
        """After an apply: requeue a user whose hints arrived meanwhile (exactly one more apply), or forget it."""
        if entry.hints and not entry.queued and not self._closing:
            entry.queued = True
            self._ready.put_nowait(key)
        elif not entry.hints and not entry.queued:
            del self._entries[key]
        metrics.QUEUE_DEPTH.set(len(self._entries))
        if not self._entries:
            self._idle.set()

    def _schedule_recheck(self, key: str, again: Again[H]) -> None:
        if self._closing or key in self._rechecks:
            return  # one pending re-check per user is enough

        def fire() -> None:
            self._rechecks.pop(key, None)
            if not self._closing:
                self._add(key, again.hint, None)

        self._rechecks[key] = asyncio.get_running_loop().call_later(again.after_s, fire)

    async def join(self) -> None:
        """Wait until nothing is queued, waiting for a retry, or in flight (pending re-checks aside)."""
        await self._idle.wait()

    async def close(self, drain: bool = True, timeout_s: float | None = None) -> None:
        """Stop the workers, after finishing what is queued when `drain`, bounded by `timeout_s`.

        After the timeout (or without `drain`) work still in flight is cancelled and users waiting for a
        retry are left: their hints were never reported done, so their records are redelivered. Pending
        re-checks are dropped (the periodic full reconcile is the safety net behind them)."""
        if drain and self._tasks:
            try:
                await asyncio.wait_for(self.join(), timeout_s)
            except TimeoutError:
                log.warning("queue did not drain in time; the rest is redelivered", pending_users=len(self))
        self._closing = True
        for handle in [*self._rechecks.values(), *(e.backoff for e in self._entries.values() if e.backoff)]:
            handle.cancel()
        self._rechecks.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
