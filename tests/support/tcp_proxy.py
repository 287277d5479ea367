"""A TCP forwarder on a fixed loopback port that tests can take down and bring back: an outage of the server
behind it as the client sees it (connections refused while down, open ones cut), without stopping the shared
stack's real server."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from tests.support.ports import free_port


class TcpProxy:
    """`await proxy.up()` listens on `port` and forwards to `upstream_port`; `await proxy.down()` stops."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def up(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._connect, self.host, self.port)

    async def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                sink.close()


def port_of(url: str) -> int:
    """The port a URL (or a MongoDB URI of one host) names."""
    port = urlsplit(url).port
    assert port is not None, url
    return port


def through(url: str, proxy: TcpProxy) -> str:
    """The same URL, reaching its server through `proxy` (which forwards to the URL's port)."""
    return url.replace(f":{proxy.upstream_port}", f":{proxy.port}", 1)
