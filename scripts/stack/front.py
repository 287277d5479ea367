#!/usr/bin/env python3
"""A small round-robin HTTP front for the Keycloak nodes of the local stack (standard library only).

Usage: front.py PORT BACKEND_URL...   (listens on 127.0.0.1:PORT)

Each request goes to the next node in turn, so one client's consecutive reads land on different nodes as behind
a production load balancer (per request, not per connection: httpx keeps connections alive). A node that refuses
the connection is skipped for that request; a node that dies mid-answer drops the client's connection, as a real
balancer would. Every answer carries `Connection: close` (the front keeps no pool), and an `X-Stack-Node`
header naming the node that served it, for tests.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import sys
import time
from urllib.parse import urlsplit

HOST = "127.0.0.1"
MAX_HEAD = 64 * 1024
BIND_RETRY_S = 30
HOP_BY_HOP = (b"connection", b"keep-alive", b"proxy-connection")


class Front:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.turn = itertools.cycle(range(len(backends)))
        # asyncio holds a client's task only weakly (Python 3.11): a task waiting on a dead node's socket was
        # garbage-collected mid-request ("Task was destroyed but it is pending"), leaving its client hanging.
        self.clients: set[asyncio.Task[None]] = set()

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.clients.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            body = await read_body(reader, head)
            await self.forward(rewrite_head(head), body, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # the client went away or sent something that is not HTTP/1.1: drop it
        finally:
            writer.close()
            if task is not None:
                self.clients.discard(task)

    async def forward(self, head: bytes, body: bytes, client: asyncio.StreamWriter) -> None:
        first = next(self.turn)
        for offset in range(len(self.backends)):
            index = (first + offset) % len(self.backends)
            try:
                reader, writer = await asyncio.open_connection(*self.backends[index])
            except OSError:
                continue  # node down: the next one serves this request
            try:
                writer.write(head + body)
                await writer.drain()
                await relay_answer(reader, client, index + 1)
            finally:
                writer.close()
            return
        # No node accepted the connection: drop the client's, as if Keycloak itself were down.


def rewrite_head(head: bytes) -> bytes:
    """The request head with connection headers replaced by `Connection: close`."""
    lines = head[:-4].split(b"\r\n")
    kept = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
    return b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head[:-4].split(b"\r\n")[1:])
    }
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return await read_chunked(reader)
    length = int(headers.get(b"content-length", b"0"))
    return await reader.readexactly(length) if length else b""


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, kept chunked (it is forwarded as it came)."""
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        parts.append(size_line)
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                parts.append(trailer)
            parts.append(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size + 2))


async def relay_answer(backend: asyncio.StreamReader, client: asyncio.StreamWriter, node: int) -> None:
    """The node's answer to the client, its head rewritten, its body streamed until the node closes."""
    head = rewrite_head(await backend.readuntil(b"\r\n\r\n"))
    client.write(head[:-2] + b"X-Stack-Node: " + str(node).encode() + b"\r\n\r\n")
    while chunk := await backend.read(65536):
        client.write(chunk)
        await client.drain()
    await client.drain()


def parse_backend(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"front.py: a backend must be http://host:port, not {url!r}")
    return parts.hostname, parts.port


async def listen(front: Front, port: int) -> asyncio.Server:
    """Bind, retrying a while: a port in the ephemeral range may be some client's local port for a moment."""
    deadline = time.monotonic() + BIND_RETRY_S
    while True:
        try:
            return await asyncio.start_server(front.serve_client, HOST, port, limit=MAX_HEAD)
        except OSError as error:
            if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def serve(port: int, backends: list[tuple[str, int]]) -> None:
    server = await listen(Front(backends), port)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    asyncio.run(serve(int(argv[1]), [parse_backend(url) for url in argv[2:]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
