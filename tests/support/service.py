"""`reconciler run` inside the test process, and waiting for what it stores (shared by the event-path,
service, failure, replay, sweep, listing-road and secure-connection tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from prometheus_client import REGISTRY

from reconciler.base.config import Settings
from reconciler.service import Service
from tests.support.polling import eventually, value

APPLY_DEADLINE_S = 10.0


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Service]:
    """`reconciler run` in this process (consumer only), stopped and awaited at the end."""

    def joined(service: Service) -> bool:
        return service.consumer is not None and service.consumer.joined

    async with _running(settings, joined, "consumer joined its group") as service:
        yield service


@contextlib.asynccontextmanager
async def running_sweep_service(settings: Settings) -> AsyncIterator[Service]:
    """`reconciler run` in this process with the sweep (no consumer needed), once its first sweep ended."""
    sweeps = REGISTRY.get_sample_value("reconciler_sweeps_total", {"outcome": "ok"}) or 0

    def swept(service: Service) -> bool:
        done = REGISTRY.get_sample_value("reconciler_sweeps_total", {"outcome": "ok"}) or 0
        return service.sweeper is not None and done > sweeps

    async with _running(settings, swept, "the first sweep") as service:
        yield service


@contextlib.asynccontextmanager
async def _running(settings: Settings, ready: Callable[[Service], bool], what: str) -> AsyncIterator[Service]:
    """The service running in a task until `ready(service)`; stopped and awaited (exit 0) at the end."""
    service = Service(settings)
    task = asyncio.create_task(service.run())
    try:
        await eventually(lambda: value(ready(service)), timeout_s=30, what=what)
        yield service
    finally:
        service.stop.set()
        assert await asyncio.wait_for(task, 60) == 0


async def stored(users: Any, external_id: str) -> dict[str, Any]:
    """The stored document of a Keycloak user ({} when there is none)."""
    return await users.find_one({"external_id": external_id}) or {}


async def until_stored(
    users: Any, external_id: str, what: str, timeout_s: float = APPLY_DEADLINE_S, **expected: Any
) -> dict[str, Any]:
    """Until the user's document has every field of `expected`: the document."""
    return await eventually(
        lambda: stored(users, external_id),
        until=lambda doc: all(doc.get(k) == v for k, v in expected.items()),
        timeout_s=timeout_s,
        what=what,
    )
