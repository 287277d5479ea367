"""A tiny recording HTTP reverse proxy on 127.0.0.1 (tests put it between the reconciler and Keycloak).

It records every request's method and raw path (exactly as the client sent it, before any normalisation) and
the tokens the token endpoint hands out, so that tests can prove which paths reached Keycloak and that no
token ever shows up in a log. When Keycloak cannot be reached the client's connection is dropped without an
answer, as if Keycloak itself were down (no invented 502). `response_delay` can hold chosen answers back (a
slow network or a loaded Keycloak): the client then gets data older than the moment it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from yarl import URL

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp recomputes for the forwarded body.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True, slots=True)
class ProxiedRequest:
    method: str
    raw_path: str  # path and query as received
    status: int | None  # None: Keycloak could not be reached, the connection was dropped
    at: float  # time.monotonic() when it arrived


@dataclass
class RecordingProxy:
    """`await proxy.start()` returns its base URL; `requests` and `tokens` fill while it runs."""

    upstream: str
    requests: list[ProxiedRequest] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)  # access and refresh tokens seen in token responses
    # (method, raw path) -> seconds to hold Keycloak's answer before passing it on; None: no delay.
    response_delay: Callable[[str, str], float] | None = None
    # A secure stack: Keycloak's CA (the upstream is checked against it), and the certificate and key the
    # proxy serves HTTPS with, so that the reconciler behind it verifies TLS as it would with Keycloak.
    ca_file: str | None = None
    server_tls: tuple[str, str] | None = None
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    url: str = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        upstream_tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_tls) if upstream_tls else None,
            timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        serving_tls = None
        if self.server_tls is not None:
            serving_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            serving_tls.load_cert_chain(*self.server_tls)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=serving_tls)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if serving_tls else 'http'}://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def mark(self) -> int:
        """An index into `requests`: pass it to `since` to see only what came afterwards."""
        return len(self.requests)

    def since(self, mark: int) -> list[ProxiedRequest]:
        return self.requests[mark:]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        raw_path = request.raw_path
        arrived = time.monotonic()
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        target = URL(self.upstream.rstrip("/") + raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method, target, headers=headers, data=body, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                reply_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.requests.append(ProxiedRequest(request.method, raw_path, None, arrived))
            if request.transport is not None:
                request.transport.abort()  # the client sees a dropped connection, as with Keycloak down
            raise asyncio.CancelledError from None
        self.requests.append(ProxiedRequest(request.method, raw_path, status, arrived))
        delay = self.response_delay(request.method, raw_path) if self.response_delay is not None else 0.0
        if delay > 0:
            await asyncio.sleep(delay)  # Keycloak has answered: the data ages on the way
        if status == 200 and raw_path.split("?", 1)[0].endswith("/protocol/openid-connect/token"):
            self._capture_tokens(payload)
        return web.Response(status=status, body=payload, headers=reply_headers)

    def _capture_tokens(self, payload: bytes) -> None:
        with contextlib.suppress(ValueError):
            data = json.loads(payload)
            if isinstance(data, dict):
                for key in ("access_token", "refresh_token", "id_token"):
                    value = data.get(key)
                    if isinstance(value, str) and value:
                        self.tokens.add(value)
