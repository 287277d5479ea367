"""The small HTTP server of `reconciler run`: /healthz (liveness), /readyz (readiness), /metrics (Prometheus).

Liveness asks whether each loop is *making progress* (its heartbeat is recent), not merely whether the
process answers; readiness asks whether the process can do useful work now (store reachable, group joined).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.base.errors import ConfigurationError
from reconciler.observability.logs import get_logger

log = get_logger(__name__)

Heartbeat = Callable[[], float]  # monotonic time of the loop's last sign of progress
ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass
class HealthRegistry:
    """What the running parts report: a heartbeat per loop and a readiness check per dependency."""

    heartbeats: dict[str, tuple[Heartbeat, float]] = field(default_factory=dict)
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)

    def add_heartbeat(self, name: str, heartbeat: Heartbeat, max_silence_s: float) -> None:
        self.heartbeats[name] = (heartbeat, max_silence_s)

    def add_readiness(self, name: str, check: ReadinessCheck) -> None:
        self.readiness[name] = check

    def liveness(self) -> tuple[bool, dict[str, str]]:
        now = time.monotonic()
        report: dict[str, str] = {}
        ok = True
        for name, (heartbeat, max_silence_s) in list(self.heartbeats.items()):
            silence = now - heartbeat()
            alive = silence <= max_silence_s
            ok &= alive
            report[name] = "ok" if alive else f"no progress for {silence:.0f}s"
        return ok, report

    async def ready(self) -> tuple[bool, dict[str, str]]:
        report: dict[str, str] = {}
        ok = True
        for name, check in list(self.readiness.items()):  # parts register while the server runs
            try:
                passed, detail = await check()
            except Exception as error:  # a failing check is a "not ready", never a crash of the server
                passed, detail = False, type(error).__name__
            ok &= passed
            report[name] = detail
        return ok, report


def build_app(registry: HealthRegistry) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        ok, report = registry.liveness()
        return web.json_response(
            {"status": "ok" if ok else "failing", "checks": report}, status=200 if ok else 503
        )

    async def readyz(_: web.Request) -> web.Response:
        ok, report = await registry.ready()
        return web.json_response(
            {"status": "ready" if ok else "not_ready", "checks": report}, status=200 if ok else 503
        )

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_server(registry: HealthRegistry, host: str, port: int) -> web.AppRunner:
    """Start serving; returns the runner (call `cleanup()` to stop). Port 0 picks a free port."""
    runner = web.AppRunner(build_app(registry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:  # the port is taken or the address is not ours: a setting to change
        await runner.cleanup()
        raise ConfigurationError(
            f"the health server cannot listen on HTTP_HOST={host} HTTP_PORT={port}: {error.strerror or error}"
        ) from None
    log.info("health and metrics server listening", addresses=[str(a) for a in runner.addresses])
    return runner
