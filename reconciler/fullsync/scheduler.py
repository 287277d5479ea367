"""The periodic full reconcile: at start, then every `reconcile_interval_s` (plus jitter), one replica at a time.

Coordination across replicas (invariant 6, docs/ARCHITECTURE.md) uses two things in the store:

- the run records: a successful run that *ended* less than an interval ago (by any replica) means the next
  run is not due yet, so replicas started together, or a restarted pod, do not repeat it;
- a lease with expiry (`reconcile_lease_ttl_s`, `clients.lease`) held while running, renewed every third of
  its ttl and released at the end of a run or on a stop: a crashed holder blocks the others at most one
  ttl, never forever; a replica refused the lease watches it, so a holder's clean stop hands the run on
  at once. Two overlapping runs (a paused holder whose lease expired) do no harm: every write is
  a guarded, idempotent apply. The replica that takes over an expired lease closes the run records its
  holder left `running` (outcome `abandoned`) before it starts its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import time
from typing import Any, Final

from reconciler.base.config import Settings
from reconciler.base.errors import Component
from reconciler.base.retry import Backoff
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.lease import Lease
from reconciler.clients.store import UserStore
from reconciler.domain.document import utc_now
from reconciler.domain.outcomes import Outcome
from reconciler.fullsync.reconcile import FullReconcile, Progress, RunSummary
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger
from reconciler.observability.monitor import FailureMonitor

log = get_logger(__name__)

LEASE_NAME: Final = "full-reconcile"
ABANDONED_ERROR: Final = "holder lost its lease"
HEARTBEAT_INTERVAL_S: Final = 5.0  # the idle loop wakes this often to show it is alive


def make_holder_id() -> str:
    """hostname:pid:random — unique per process, readable in the lease document."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class ReconcileScheduler:
    """Runs the full reconcile periodically until a stop event is set.

    `last_progress` (monotonic seconds) moves while the loop idles and after every page of a run: a
    liveness check can read it through `heartbeat()`.
    """

    def __init__(
        self,
        settings: Settings,
        store: UserStore,
        keycloak: KeycloakAdminClient,
        *,
        holder: str | None = None,
        monitor: FailureMonitor | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self.holder = holder or make_holder_id()
        self._lease = Lease(store, LEASE_NAME, self.holder, settings.reconcile_lease_ttl_s)
        self._reconcile = FullReconcile(settings, store, keycloak, holder=self.holder)
        self._monitor = monitor or FailureMonitor()
        self._backoff = Backoff.reconciles(settings)
        self._rng = random.Random()
        self._requested: str | None = None  # why a run was asked for before it is due (see `request`)
        self._requesters: list[asyncio.Future[RunSummary | None]] = []  # `run_soon` callers waiting
        self._wake = asyncio.Event()
        self._refused = False  # the last tick found the lease held by another replica
        self._failures = 0
        self.last_progress = time.monotonic()
        self.last_summary: RunSummary | None = None
        self.running = False

    def request(self, reason: str) -> None:
        """Run as soon as possible, due or not (the event-store sweep saw changes it cannot name per user).
        The lease still makes it one run across replicas."""
        log.info("full reconcile requested", reason=reason)
        self._requested = reason
        self._wake.set()

    async def run_soon(self, reason: str) -> RunSummary | None:
        """Request a run (see `request`) and wait for it: its summary, or None when no run happened here
        (another replica holds the lease, or the process is stopping)."""
        waiter: asyncio.Future[RunSummary | None] = asyncio.get_running_loop().create_future()
        self._requesters.append(waiter)
        self.request(reason)
        return await waiter

    def heartbeat(self) -> float:
        """Monotonic time of the loop's last sign of progress (for the health server)."""
        return self.last_progress

    def _beat(self) -> None:
        self.last_progress = time.monotonic()

    def _jitter(self) -> float:
        return self._rng.uniform(0.0, self._settings.reconcile_jitter_s)

    async def run(self, stop: asyncio.Event) -> None:
        """The loop: returns when `stop` is set (a run in progress is cancelled and recorded as such)."""
        if not self._settings.reconcile_enabled:
            log.info("periodic full reconcile disabled (RECONCILE_ENABLED=false)")
            return
        log.info(
            "periodic full reconcile started",
            holder=self.holder,
            interval_s=self._settings.reconcile_interval_s,
            jitter_s=self._settings.reconcile_jitter_s,
        )
        while not stop.is_set():
            self._beat()
            delay = await self.tick(stop)
            if stop.is_set():
                break
            log.debug("next full reconcile check", in_s=round(delay, 1))
            if self._refused:  # watch the lease: a holder that stops releases it, and the run is due here
                await self._lease.wait_free(stop, delay, self._beat, wake=self._wake)
            else:
                await self._sleep(delay, stop)
        self._answer(self._requesters, None)
        self._requesters = []
        log.info("periodic full reconcile stopped")

    async def tick(self, stop: asyncio.Event | None = None) -> float:
        """Run the reconcile if it is due and the lease is ours; return the seconds until the next check."""
        requesters, self._requesters = self._requesters, []
        before = self.last_summary
        try:
            return await self._tick(stop)
        finally:
            self._answer(requesters, self.last_summary if self.last_summary is not before else None)

    @staticmethod
    def _answer(requesters: list[asyncio.Future[RunSummary | None]], summary: RunSummary | None) -> None:
        for waiter in requesters:
            if not waiter.done():
                waiter.set_result(summary)

    async def _tick(self, stop: asyncio.Event | None) -> float:
        interval = self._settings.reconcile_interval_s
        requested, self._requested = self._requested, None
        self._wake.clear()
        self._refused = False
        try:
            wait_s = 0.0 if requested else await self._not_due_for()
            if wait_s > 0:
                log.info("full reconcile not due: a recent run succeeded", next_in_s=round(wait_s, 1))
                return wait_s + self._jitter()
            if not await self._lease.acquire():
                self._refused = True
                holder = await self._lease.current_holder()
                metrics.RECONCILE_RUNS.labels(outcome=Outcome.SKIPPED_LEASE.value).inc()
                log.info(
                    "full reconcile skipped: another replica holds the lease",
                    lease_holder=holder and holder[0],
                )
                return (  # retry when the holder's lease runs out, not up to a whole TTL after
                    min(interval, max(0.0, (holder[1] - utc_now()).total_seconds()) if holder else 0.0)
                    + self._jitter()
                )
        except Exception as error:
            self._monitor.failed(error)
            return self._after_failure(f"store: {type(error).__name__}")
        try:
            await self._close_abandoned_runs()
            # Another replica may have finished a run between our check and our lease.
            wait_s = 0.0 if requested else await self._not_due_for()
            if wait_s > 0:
                return wait_s + self._jitter()
            summary = await self._run_with_lease(stop)
        except Exception as error:
            self._monitor.failed(error)
            return self._after_failure(f"{type(error).__name__}")
        finally:
            await self._lease.release()
        if summary is None:  # stopped
            return 0.0
        self.last_summary = summary
        if summary.outcome is Outcome.FAILED:
            if summary.failure is not None:
                self._monitor.failed(summary.failure)
            return self._after_failure(summary.error or "failed")
        self._monitor.succeeded(Component.KEYCLOAK, Component.STORE)
        self._failures = 0
        return interval + self._jitter()

    def _after_failure(self, reason: str) -> float:
        """A failed run is retried sooner than an interval, backing off up to it."""
        self._failures += 1
        delay = self._backoff.delay(self._failures, self._rng)
        log.warning(
            "full reconcile will be retried", reason=reason, failures=self._failures, retry_in_s=delay
        )
        return delay + self._jitter()

    async def _close_abandoned_runs(self) -> None:
        """The lease we took had expired: its holder died (or stalled) and left its run `running`."""
        holder = self._lease.expired_holder
        if holder is None:
            return
        run_ids = await self._store.abandon_runs(holder, utc_now(), ABANDONED_ERROR)
        if run_ids:
            metrics.RECONCILE_RUNS.labels(outcome=Outcome.ABANDONED.value).inc(len(run_ids))
            log.warning(
                "closed the run records of a holder that lost its lease",
                outcome=Outcome.ABANDONED.value,
                runs=run_ids,
            )

    async def _not_due_for(self) -> float:
        """Seconds until the next run is due, judging by the last successful run of any replica (0: due)."""
        last = await self._store.last_successful_run()
        if last is None:
            return 0.0
        finished = last.ended_at or last.started_at
        elapsed = (utc_now() - finished).total_seconds()
        return max(0.0, self._settings.reconcile_interval_s - elapsed)

    async def _run_with_lease(self, stop: asyncio.Event | None) -> RunSummary | None:
        """Run once while renewing the lease; None when `stop` was set first (the run is cancelled)."""
        self.running = True
        run = asyncio.create_task(self._reconcile.run(progress=self._on_progress), name="full-reconcile")
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        try:
            waiting: set[asyncio.Future[Any]] = {run}
            if stopper is not None:
                waiting.add(stopper)
            async with self._lease.kept():
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                log.info("stopping: cancelling the running full reconcile")
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                return None
            return run.result()
        finally:
            self.running = False
            if stopper is not None:
                stopper.cancel()
                await asyncio.gather(stopper, return_exceptions=True)

    def _on_progress(self, progress: Progress) -> None:
        self._beat()

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and not self._wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # A request (`request`, `run_soon`) wakes the loop at once, not at its next heartbeat.
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(
                    waits, timeout=min(remaining, HEARTBEAT_INTERVAL_S), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            self._beat()
