"""scripts/stack/front.py, the Keycloak cluster's round-robin front, in front of two small real HTTP servers."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web

from tests.support.polling import eventually
from tests.support.stack import ROOT

FRONT = ROOT / "scripts" / "stack" / "front.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Backend:
    name: str
    runner: web.AppRunner
    url: str


async def start_backend(name: str) -> Backend:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"node": name, "path": request.path_qs, "body": body.decode()})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return Backend(name, runner, f"http://127.0.0.1:{port}")


@pytest.fixture
async def backends() -> AsyncIterator[list[Backend]]:
    started = [await start_backend("a"), await start_backend("b")]
    yield started
    for backend in started:
        await backend.runner.cleanup()


@pytest.fixture
async def front(backends: list[Backend]) -> AsyncIterator[str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(FRONT), str(port), *(b.url for b in backends)
    )
    url = f"http://127.0.0.1:{port}"

    async def answers() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/ping")).status_code == 200
        except httpx.TransportError:
            return False

    await eventually(answers, timeout_s=20, what="the front answering")
    yield url
    process.terminate()
    await process.wait()


async def test_requests_of_one_kept_alive_client_alternate_between_the_nodes(front: str) -> None:
    async with httpx.AsyncClient(base_url=front) as client:
        answers = [await client.get(f"/users/{i}?q=1") for i in range(4)]
    nodes = [answer.json()["node"] for answer in answers]
    assert sorted(nodes) == ["a", "a", "b", "b"] and nodes[0] != nodes[1] and nodes[1] != nodes[2]
    assert [answer.json()["path"] for answer in answers] == [f"/users/{i}?q=1" for i in range(4)]
    assert {answer.headers["x-stack-node"] for answer in answers} == {"1", "2"}


async def test_bodies_reach_the_node_whole(front: str) -> None:
    async def parts() -> AsyncIterator[bytes]:  # no length known: httpx sends it chunked
        yield b"one "
        yield b"two"

    async with httpx.AsyncClient(base_url=front) as client:
        form = await client.post("/token", data={"grant_type": "client_credentials", "x": "y" * 5000})
        chunked = await client.put("/users/1", content=parts())
    assert form.json()["body"] == "grant_type=client_credentials&x=" + "y" * 5000
    assert chunked.json()["body"] == "one two"


async def test_a_node_that_is_down_is_skipped(front: str, backends: list[Backend]) -> None:
    await backends[1].runner.cleanup()
    async with httpx.AsyncClient(base_url=front) as client:
        nodes = [(await client.get("/x")).json()["node"] for _ in range(4)]
    assert nodes == ["a"] * 4


async def test_with_every_node_down_the_connection_is_dropped(front: str, backends: list[Backend]) -> None:
    for backend in backends:
        await backend.runner.cleanup()
    async with httpx.AsyncClient(base_url=front) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/x")
