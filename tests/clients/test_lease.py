"""A kept lease's renewal ends with the block, even when the driver turns the cancel into its own error."""

from __future__ import annotations

import asyncio
from typing import cast

from reconciler.base.errors import StoreUnavailable
from reconciler.clients.lease import Lease
from reconciler.clients.store import LeaseTaken, UserStore


class CancelSwallowingStore:
    """Stands in for the driver's behaviour that a real server cannot be made to show on demand: a renewal
    that is waiting for a server when the cancel lands ends with a driver error, not CancelledError (what
    PyMongo did in reliability scenario 14's store outage; the block's exit then waited for ever)."""

    def __init__(self, answered: int) -> None:
        self.answered = answered  # takes answered at once; the later ones wait for a server
        self.takes = 0
        self.renewed = asyncio.Event()
        self.waiting = asyncio.Event()

    async def take_lease(self, name: str, holder: str, ttl_s: float) -> LeaseTaken:
        self.takes += 1
        if self.takes <= self.answered:
            if self.takes > 1:
                self.renewed.set()
            return LeaseTaken()
        self.waiting.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
        raise StoreUnavailable("ServerSelectionTimeoutError: no server")


async def test_the_block_ends_when_a_renewal_turns_the_cancel_into_a_store_error() -> None:
    store = CancelSwallowingStore(answered=1)
    lease = Lease(cast(UserStore, store), "event-sweep", "me", ttl_s=0.03)
    assert await lease.acquire()

    async def block() -> None:
        async with lease.kept():
            await store.waiting.wait()  # a renewal is waiting for the server

    await asyncio.wait_for(block(), timeout=5)
    takes = store.takes
    await asyncio.sleep(0.1)  # three renewal periods: a renewal loop that went on would take again
    assert store.takes == takes


async def test_a_kept_lease_is_renewed_while_the_block_runs() -> None:
    store = CancelSwallowingStore(answered=3)
    lease = Lease(cast(UserStore, store), "event-sweep", "me", ttl_s=0.03)
    assert await lease.acquire()
    async with lease.kept():
        await asyncio.wait_for(store.renewed.wait(), timeout=5)
    assert store.takes >= 2
