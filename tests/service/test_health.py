"""The health server reports progress, not mere presence: a silent loop fails liveness, a failing check fails readiness."""

from __future__ import annotations

import time

import httpx
from aiohttp import web

from reconciler.observability.health import HealthRegistry, start_server


async def _serve(registry: HealthRegistry) -> tuple[str, web.AppRunner]:
    runner = await start_server(registry, "127.0.0.1", 0)
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    return f"http://127.0.0.1:{port}", runner


async def test_a_loop_without_recent_progress_fails_liveness() -> None:
    registry = HealthRegistry()
    fresh = time.monotonic()
    registry.add_heartbeat("consumer", lambda: fresh, max_silence_s=60)
    registry.add_heartbeat("reconcile", lambda: time.monotonic() - 600, max_silence_s=300)
    base, runner = await _serve(registry)
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{base}/healthz")
    finally:
        await runner.cleanup()
    assert response.status_code == 503
    assert response.json()["checks"]["consumer"] == "ok"
    assert response.json()["checks"]["reconcile"].startswith("no progress for")


async def test_readiness_is_503_while_a_check_fails_or_raises_and_200_when_all_pass() -> None:
    registry = HealthRegistry()
    state = {"joined": False}

    async def consumer() -> tuple[bool, str]:
        return state["joined"], "ok" if state["joined"] else "not joined"

    async def store() -> tuple[bool, str]:
        if not state["joined"]:
            raise ConnectionError("store down")
        return True, "ok"

    registry.add_readiness("consumer", consumer)
    registry.add_readiness("store", store)
    base, runner = await _serve(registry)
    try:
        async with httpx.AsyncClient() as http:
            not_ready = await http.get(f"{base}/readyz")
            state["joined"] = True
            ready = await http.get(f"{base}/readyz")
            metrics = await http.get(f"{base}/metrics")
    finally:
        await runner.cleanup()
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"] == {"consumer": "not joined", "store": "ConnectionError"}
    assert ready.status_code == 200
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
