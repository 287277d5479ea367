"""`reconciler run`: the consumer, the periodic full reconcile and the health server in one process.

Each part is switched by a setting (CONSUMER_ENABLED, RECONCILE_ENABLED, HTTP_ENABLED). SIGTERM and SIGINT
set one stop event: the consumer drains and commits, a running reconcile is cancelled and recorded, then
the process exits 0. If any part fails, the others are stopped too and the process exits non-zero, so that
the orchestrator restarts it (nothing is lost: offsets were committed only after writes).
"""

from __future__ import annotations

import asyncio
import signal
import time

from reconciler.apply import Applier
from reconciler.config import Settings
from reconciler.consumer import EventConsumer
from reconciler.events import UserHint, accepted_realms
from reconciler.health import HealthRegistry, start_server
from reconciler.hint_apply import HintApplier
from reconciler.keycloak import KeycloakAdminClient
from reconciler.logs import get_logger
from reconciler.scheduler import ReconcileScheduler
from reconciler.store import UserStore

log = get_logger(__name__)

# A loop that has not shown progress for this long is reported dead by /healthz.
CONSUMER_MAX_SILENCE_S = 120.0
SCHEDULER_MAX_SILENCE_S = 300.0
STORE_PING_CACHE_S = 5.0


class Service:
    """Owns the clients and the running parts of one `reconciler run` process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.health = HealthRegistry()
        self.consumer: EventConsumer | None = None
        self.scheduler: ReconcileScheduler | None = None
        self.http_port: int | None = None
        self._store_ok_until = 0.0

    async def run(self) -> int:
        settings = self.settings
        async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
            await store.ensure_indexes()
            applier = Applier(store, keycloak, settings)
            hint_applier = HintApplier(applier, settings)
            parts: dict[str, asyncio.Task[None]] = {}
            self.health.add_readiness("store", lambda: self._store_ready(store))
            if settings.consumer_enabled:
                self.consumer = EventConsumer(
                    settings, hint_applier, accepted_realms(settings.keycloak_realm)
                )
                queue = self.consumer.queue

                async def resubmit(user_id: str, hint: UserHint) -> None:
                    await queue.submit(user_id, hint)

                hint_applier.enable_rechecks(resubmit)
                consumer = self.consumer
                self.health.add_heartbeat("consumer", lambda: consumer.last_progress, CONSUMER_MAX_SILENCE_S)
                self.health.add_readiness("consumer", self._consumer_ready)
                parts["consumer"] = asyncio.create_task(consumer.run(self.stop), name="consumer")
            if settings.reconcile_enabled:
                self.scheduler = ReconcileScheduler(settings, store, keycloak)
                self.health.add_heartbeat("reconcile", self.scheduler.heartbeat, SCHEDULER_MAX_SILENCE_S)
                parts["reconcile"] = asyncio.create_task(self.scheduler.run(self.stop), name="reconcile")
            runner = None
            if settings.http_enabled:
                runner = await start_server(self.health, settings.http_host, settings.http_port)
                self.http_port = _bound_port(runner.addresses)
            if not parts:
                log.warning("nothing to run: CONSUMER_ENABLED and RECONCILE_ENABLED are both false")
            try:
                return await self._supervise(parts)
            finally:
                await hint_applier.close()
                if runner is not None:
                    await runner.cleanup()

    async def _supervise(self, parts: dict[str, asyncio.Task[None]]) -> int:
        """Wait for the stop signal or the first part to end; then stop and await all parts."""
        stopper = asyncio.create_task(self.stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait([stopper, *parts.values()], return_when=asyncio.FIRST_COMPLETED)
        failed = [name for name, task in parts.items() if task in done and not self.stop.is_set()]
        self.stop.set()
        results = await asyncio.gather(*parts.values(), return_exceptions=True)
        stopper.cancel()
        exit_code = 0
        for name, result in zip(parts, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("part failed", part=name, error_type=type(result).__name__, error=str(result))
                exit_code = 1
        if failed and exit_code == 0:
            log.error("a part ended unexpectedly", parts=failed)
            exit_code = 1
        log.info("reconciler stopped", exit_code=exit_code)
        return exit_code

    async def _store_ready(self, store: UserStore) -> tuple[bool, str]:
        if time.monotonic() < self._store_ok_until:
            return True, "ok"
        await asyncio.wait_for(store.ping(), timeout=3)
        self._store_ok_until = time.monotonic() + STORE_PING_CACHE_S
        return True, "ok"

    async def _consumer_ready(self) -> tuple[bool, str]:
        if self.consumer is None or not self.consumer.joined:
            return False, "not joined to the consumer group yet"
        return True, "ok"

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        self.stop.set()


def _bound_port(addresses: list[object]) -> int | None:
    for address in addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None


async def run_service(settings: Settings) -> int:
    service = Service(settings)
    service.install_signal_handlers()
    return await service.run()
