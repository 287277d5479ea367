"""One named lease in the store, as a holder uses it: take, keep renewed while working, release on a stop.

The full reconcile and the event-store sweep each run on one replica at a time under a lease with expiry
(`UserStore.take_lease`): a killed holder blocks the others at most one ttl, and a holder that stops
cleanly releases it, so the next one starts at once instead of waiting that ttl out. A replica refused the
lease can `wait_free` for it: one read by id per `LEASE_POLL_S`, so a release is seen within about that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Final

from reconciler.clients.store import UserStore
from reconciler.observability.logs import get_logger

log = get_logger(__name__)

LEASE_POLL_S: Final = 1.0  # a waiting replica sees a released lease within this (one find by _id each)


class Lease:
    """The lease `name` as `holder` takes it for `ttl_s` seconds at a time."""

    def __init__(self, store: UserStore, name: str, holder: str, ttl_s: float) -> None:
        self._store = store
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        # Who held the lease before the last `acquire`, when that holder let it expire without releasing it
        # (killed, or stalled): its run records may still say `running`.
        self.expired_holder: str | None = None

    async def acquire(self) -> bool:
        """Take the lease or renew ours; False while another holder's is valid (see `expired_holder`)."""
        taken = await self._store.take_lease(self.name, self.holder, self.ttl_s)
        self.expired_holder = taken.expired_holder if taken is not None else None
        if self.expired_holder is not None:
            log.info("lease taken over from a holder that let it expire", lease=self.name)
        return taken is not None

    async def release(self) -> None:
        """Give the lease up if it is ours (a clean stop): the next holder need not wait for its expiry.
        Never raises: an unreleased lease only expires later."""
        try:
            await self._store.release_lease(self.name, self.holder)
        except Exception as error:
            log.warning(
                "lease not released; it expires by itself", lease=self.name, error=type(error).__name__
            )

    async def current_holder(self) -> tuple[str, datetime] | None:
        """Who holds the lease and until when (None when it is free)."""
        return await self._store.lease_holder(self.name)

    async def wait_free(
        self,
        stop: asyncio.Event,
        timeout_s: float,
        beat: Callable[[], None] | None = None,
        wake: asyncio.Event | None = None,
    ) -> bool:
        """Poll until the lease is free (released or expired), `stop` or `wake` is set (`wake` is seen at the
        next poll) or `timeout_s` passed; True when it is free. `beat` is called at every poll (a heartbeat
        for the waiting loop)."""
        deadline = time.monotonic() + timeout_s
        while not stop.is_set() and not (wake is not None and wake.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(remaining, LEASE_POLL_S))
            if beat is not None:
                beat()
            if not stop.is_set() and await self._free():
                return True
        return False

    async def _free(self) -> bool:
        try:
            return await self.current_holder() is None
        except Exception as error:  # the store away: the next poll or sweep says more
            log.debug("lease read failed", lease=self.name, error=type(error).__name__)
            return False

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Renew the lease every third of its ttl while the block runs (a run that outlasts the ttl)."""
        done = asyncio.Event()
        renewer = asyncio.create_task(self._renew(done), name=f"lease-renewal:{self.name}")
        try:
            yield
        finally:
            # The event as well as the cancel: a cancel that lands while the driver waits for a server can
            # come back as the driver's own error (seen with PyMongo in a store outage), and the renewal
            # loop would then go on for ever, holding this block's exit with it.
            done.set()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def _renew(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=self.ttl_s / 3)
            if done.is_set():
                return
            try:
                if not await self.acquire():
                    log.warning("lease lost to another replica; finishing this work anyway", lease=self.name)
            except Exception as error:
                log.warning("lease renewal failed", lease=self.name, error=type(error).__name__)
