"""`reconciler run`: the consumer, the periodic full reconcile and the health server in one process.

Each part is switched by a setting (CONSUMER_ENABLED, RECONCILE_ENABLED, SWEEP_ENABLED, HTTP_ENABLED, and
ERASE_DELETED_AFTER_S for the due erasures). At start Keycloak's answer to the client is checked first: a
refusal (bad secret, missing view-users, unknown realm) stops the process with `KeycloakConfigError` (exit
3) before anything runs, and so does a store that refuses the credentials (exit 5). An *outage* of either
is no reason to crash-loop: the process starts, is not ready, and converges once they are back.

SIGTERM and SIGINT set one stop event: the consumer drains (bounded by CONSUMER_DRAIN_TIMEOUT_S) and commits
what was applied, a running reconcile is cancelled and recorded, then the process exits 0. Whatever is
still running `STOP_GRACE_S` after the drain timeout is cancelled, so the process always ends in time. If
any part fails, the others are stopped too and the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable
from typing import TypeVar

from reconciler.apply.applier import Applier
from reconciler.apply.erasure import Eraser, ErasureSchedule
from reconciler.base.config import Settings
from reconciler.base.errors import Component, KafkaFailure, PermanentError, StoreRefused, TemporaryError
from reconciler.base.retry import Backoff
from reconciler.clients import kafka
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.events import UserHint, accepted_realms
from reconciler.fullsync.scheduler import ReconcileScheduler, make_holder_id
from reconciler.observability import metrics
from reconciler.observability.health import HealthRegistry, start_server
from reconciler.observability.logs import filtering, get_logger
from reconciler.observability.monitor import FailureMonitor
from reconciler.sources.cdc import ChangeSource
from reconciler.sources.consumer import EventConsumer
from reconciler.sources.hint_apply import hint_queue
from reconciler.sources.listing_road import ListingRoad
from reconciler.sources.organizations import OrganizationHints
from reconciler.sources.sweep import Sweeper
from reconciler.sources.workqueue import CoalescingQueue, LoggingObserver

log = get_logger(__name__)
T = TypeVar("T")

# A loop that has not shown progress for this long is reported dead by /healthz.
CONSUMER_MAX_SILENCE_S = 120.0
SCHEDULER_MAX_SILENCE_S = 300.0
STORE_PING_CACHE_S = 5.0
SWEEP_MAX_SILENCE_S = 120.0  # beyond a few intervals: one sweep may wait this long for its applies
STOP_GRACE_S = 5.0  # after the drain timeout: committing, leaving the group, closing clients


class QueueFailures(LoggingObserver):
    """The event queue's observer: outages and refusals go to the monitor (calm logs, readiness)."""

    def __init__(self, monitor: FailureMonitor) -> None:
        self._monitor = monitor

    def retrying(self, key: str, error: Exception, attempt: int, delay_s: float) -> None:
        self._monitor.failed(error)
        if isinstance(error, TemporaryError | PermanentError):
            # The monitor logs these once a minute at most; per user they are detail.
            log.debug("applying a user failed; retrying", user_id=key, attempt=attempt, error=str(error))
        else:
            super().retrying(key, error, attempt, delay_s)

    def succeeded(self, key: str) -> None:
        self._monitor.succeeded(Component.KEYCLOAK, Component.STORE)


class Service:
    """Owns the clients and the running parts of one `reconciler run` process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.health = HealthRegistry()
        self.monitor = FailureMonitor(settings.permanent_failure_log_interval_s)
        self.consumer: EventConsumer | None = None
        self.scheduler: ReconcileScheduler | None = None
        self.sweeper: Sweeper | None = None
        self.changes: ChangeSource | None = None
        self.organizations: OrganizationHints | None = None  # ORGANIZATIONS_ENABLED
        self.queue: CoalescingQueue[UserHint] | None = None
        self.http_port: int | None = None
        self._store_ok_until = 0.0
        self._started_at = time.monotonic()

    async def run(self) -> int:
        # aiokafka's connection-error lines become the monitor's calm outage lines (and readiness).
        with filtering(kafka.KafkaOutageFold(self.monitor.failed)):
            return await self._run()

    async def _run(self) -> int:
        settings = self.settings
        async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
            self._watch(keycloak, store)
            runner = None
            if settings.http_enabled:  # first, so that probes get "not ready" rather than no answer
                runner = await start_server(self.health, settings.http_host, settings.http_port)
                self.http_port = _bound_port(runner.addresses)
            try:
                if not await self._until_stopped(self._check_keycloak(keycloak)):
                    return 0
                if settings.consumer_enabled and not await self._until_stopped(self._check_kafka()):
                    return 0
                return await self._supervise(await self._start_parts(keycloak, store))
            finally:
                if self.queue is not None:  # the consumer drained it already; without one, drain here
                    await self.queue.close(drain=True, timeout_s=settings.consumer_drain_timeout_s)
                if runner is not None:
                    await runner.cleanup()

    async def _start_parts(
        self, keycloak: KeycloakAdminClient, store: UserStore
    ) -> dict[str, asyncio.Task[None]]:
        settings = self.settings
        parts = {"store-setup": asyncio.create_task(self._prepare_store(store), name="store-setup")}
        if settings.reconcile_enabled:
            self.scheduler = ReconcileScheduler(settings, store, keycloak, monitor=self.monitor)
            self.health.add_heartbeat("reconcile", self.scheduler.heartbeat, SCHEDULER_MAX_SILENCE_S)
            parts["reconcile"] = asyncio.create_task(self.scheduler.run(self.stop), name="reconcile")
        if settings.organizations_enabled:
            self.organizations = OrganizationHints(settings, store, keycloak, self.monitor)
        if settings.consumer_enabled or settings.sweep_enabled:
            self.queue = hint_queue(
                Applier(store, keycloak, settings),
                settings,
                observer=QueueFailures(self.monitor),
                road=self._listing_road(keycloak, store),
            )
            self.queue.start()
        if settings.consumer_enabled and self.queue is not None:
            parts["consumer"] = self._start_consumer(self.queue)
        if settings.sweep_enabled and self.queue is not None:
            sweep = await self._start_sweep(keycloak, store, self.queue)
            if sweep is not None:
                parts["sweep"] = sweep
        eraser = Eraser(store, settings)
        if eraser.enabled:
            schedule = ErasureSchedule(eraser, store, settings, make_holder_id(), self.monitor)
            parts["erasure"] = asyncio.create_task(schedule.run(self.stop), name="erasure")
        if len(parts) == 1:
            log.warning("nothing to run: the consumer, the sweep and the periodic reconcile are all off")
        return parts

    def _listing_road(self, keycloak: KeycloakAdminClient, store: UserStore) -> ListingRoad | None:
        """Bursts are read by a full reconcile when the scheduler runs here and EVENT_BURST_LISTING is on."""
        if self.scheduler is None or not self.settings.event_burst_listing:
            return None
        return ListingRoad(self.settings, keycloak, store, self.scheduler, self._waiting_users)

    def _waiting_users(self) -> float:
        if self.consumer is not None:
            return self.consumer.waiting_users()
        return float(len(self.queue)) if self.queue is not None else 0.0

    async def _start_sweep(
        self, keycloak: KeycloakAdminClient, store: UserStore, queue: CoalescingQueue[UserHint]
    ) -> asyncio.Task[None] | None:
        scheduler = self.scheduler
        self.sweeper = sweeper = Sweeper(
            self.settings,
            keycloak,
            store,
            queue,
            holder=make_holder_id(),
            request_reconcile=scheduler.request if scheduler is not None else None,
            organizations=self.organizations,
        )
        try:
            active = await sweeper.check()
        except TemporaryError as error:  # Keycloak away at start: the sweep starts anyway and catches up
            self.monitor.failed(error)
            active = True
        if not active:
            return None
        self.health.add_heartbeat(
            "sweep", lambda: sweeper.last_progress, self.settings.sweep_interval_s * 4 + SWEEP_MAX_SILENCE_S
        )
        return asyncio.create_task(sweeper.run(self.stop), name="sweep")

    async def _check_kafka(self) -> None:
        """Like Keycloak's: a refusal (SASL, certificate, ACLs) stops the start; an outage is reported."""
        try:
            await kafka.check_access(self.settings, self.settings.consumed_topics)
        except TemporaryError as error:
            self.monitor.failed(error)
        else:
            log.info("kafka access checked", topics=self.settings.event_topics)

    async def _check_keycloak(self, keycloak: KeycloakAdminClient) -> None:
        """A refusal stops the start (raised); an outage is reported and the start goes on."""
        try:
            total = await keycloak.check_access()
        except TemporaryError as error:
            self.monitor.failed(error)
            return
        log.info("keycloak access checked", realm=self.settings.keycloak_realm, users=total)

    def _watch(self, keycloak: KeycloakAdminClient, store: UserStore) -> None:
        self.monitor.add_probe(Component.KEYCLOAK, keycloak.check_access)
        self.monitor.add_probe(Component.STORE, store.ping)
        self.health.add_readiness("keycloak", lambda: self.monitor.readiness(Component.KEYCLOAK))
        self.health.add_readiness("store", lambda: self._store_ready(store))
        if self.settings.consumer_enabled:
            self.monitor.add_probe(Component.KAFKA, lambda: kafka.check_access(self.settings))
            self.health.add_readiness("kafka", lambda: self.monitor.readiness(Component.KAFKA))
            # Registered before the server starts: not ready until the consumer has joined (and exists).
            self.health.add_readiness("consumer", self._consumer_ready)

    async def _prepare_store(self, store: UserStore) -> None:
        """Create the indexes, retrying through an outage; a refusal (credentials) ends the process."""
        backoff = Backoff.users(self.settings)
        attempt = 0
        while not self.stop.is_set():
            try:
                await store.ensure_indexes()
            except StoreRefused:
                raise
            except TemporaryError as error:
                attempt += 1
                self.monitor.failed(error)
                await self._sleep(backoff.delay(attempt))
            else:
                self.monitor.succeeded(Component.STORE)
                return

    def _start_consumer(self, queue: CoalescingQueue[UserHint]) -> asyncio.Task[None]:
        if self.settings.cdc_enabled:
            scheduler = self.scheduler
            self.changes = ChangeSource(self.settings, scheduler.request if scheduler is not None else None)
            if self.settings.keycloak_realm_id is None:
                log.warning(
                    "database changes on without KEYCLOAK_REALM_ID: rows of every realm are read, and a read "
                    "in this realm decides (set it to skip other realms' rows without a read)"
                )
        self.health.add_heartbeat("consumer", self._consumer_progress, CONSUMER_MAX_SILENCE_S)
        return asyncio.create_task(self._run_consumer(queue), name="consumer")

    async def _run_consumer(self, queue: CoalescingQueue[UserHint]) -> None:
        """The event path, started again with new clients whenever Kafka fails it: while Kafka is away the
        process is not ready and the sweep and the full reconcile go on (`Backoff.parts`, no limit)."""
        backoff = Backoff.parts(self.settings)
        attempt = 0
        try:
            while not self.stop.is_set():
                self.consumer = consumer = EventConsumer(
                    self.settings,
                    queue,
                    accepted_realms(self.settings.keycloak_realm, self.settings.keycloak_realm_id),
                    monitor=self.monitor,
                    changes=self.changes,
                    organizations=self.organizations,
                )
                try:
                    await consumer.run(self.stop)
                    return
                except KafkaFailure as error:
                    self.monitor.failed(error)
                    metrics.CONSUMER_RESTARTS.inc()
                    attempt = 1 if consumer.joined else attempt + 1
                    await self._sleep(backoff.delay(attempt))
        finally:
            if self.changes is not None:
                self.changes.close()

    def _consumer_progress(self) -> float:
        return self.consumer.last_progress if self.consumer is not None else self._started_at

    async def _supervise(self, parts: dict[str, asyncio.Task[None]]) -> int:
        """Wait for the stop signal or the first part to end (store setup may end early); then stop all."""
        stopper = asyncio.create_task(self.stop.wait(), name="stop-signal")
        watched = dict(parts)
        failed: list[str] = []
        while not self.stop.is_set() and watched:
            done, _ = await asyncio.wait([stopper, *watched.values()], return_when=asyncio.FIRST_COMPLETED)
            for name, task in list(watched.items()):
                if task in done:
                    del watched[name]
                    if name != "store-setup" or task.exception() is not None:
                        failed.append(name)
            if failed:
                break
        self.stop.set()
        stopper.cancel()
        results = await self._finish(parts)
        exit_code = 0
        for name, result in results.items():
            if isinstance(result, StoreRefused):
                raise result  # the store refused the credentials: the command line says so (exit 5)
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("part failed", part=name, error_type=type(result).__name__, error=str(result))
                exit_code = 1
        if failed and exit_code == 0:
            log.error("a part ended unexpectedly", parts=failed)
            exit_code = 1
        log.info("reconciler stopped", exit_code=exit_code)
        return exit_code

    async def _finish(self, parts: dict[str, asyncio.Task[None]]) -> dict[str, BaseException | None]:
        """Await every part, cancelling what is still running after the drain timeout plus a grace."""
        deadline = self.settings.consumer_drain_timeout_s + STOP_GRACE_S
        _, late = await asyncio.wait(parts.values(), timeout=deadline)
        for task in late:
            log.warning("a part did not stop in time; cancelling it", part=task.get_name())
            task.cancel()
        await asyncio.gather(*parts.values(), return_exceptions=True)
        return {name: (None if task.cancelled() else task.exception()) for name, task in parts.items()}

    async def _until_stopped(self, work: Awaitable[T]) -> bool:
        """Run `work` unless the stop signal comes first; True when it finished (its errors are raised)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.create_task(self.stop.wait())
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        task.result()
        return True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _store_ready(self, store: UserStore) -> tuple[bool, str]:
        if time.monotonic() < self._store_ok_until:
            return True, "ok"
        try:
            await asyncio.wait_for(store.ping(), timeout=3)
        except (TemporaryError, PermanentError, TimeoutError) as error:
            return False, f"{type(error).__name__}: {error}"[:300]
        self._store_ok_until = time.monotonic() + STORE_PING_CACHE_S
        return True, "ok"

    async def _consumer_ready(self) -> tuple[bool, str]:
        if self.consumer is None or not self.consumer.joined:
            return False, "not joined to the consumer group yet"
        return True, "ok"

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (the one signal setup of every long-running command)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def _bound_port(addresses: list[object]) -> int | None:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


async def run_service(settings: Settings) -> int:
    service = Service(settings)
    service.install_signal_handlers()
    return await service.run()
