"""A scripted Keycloak behind httpx.MockTransport, for the edge cases a real Keycloak cannot be made to
produce (shared by the Keycloak client and hint-apply tests): its token endpoint answers, its admin API plays
a script, and it records every request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

USER_ID = "0b6c7a58-6c1e-4a43-9d2b-5b1a5f0b2f11"


def user_json(user_id: str = USER_ID) -> dict[str, Any]:
    """The smallest user representation Keycloak answers with."""
    return {"id": user_id, "username": "alice", "enabled": True, "createdTimestamp": 1}


AdminHandler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class FakeKeycloak:
    """Token endpoint plus a scripted admin API; records every request."""

    def __init__(self, admin: AdminHandler, token_delay_s: float = 0.0) -> None:
        self.admin = admin
        self.token_delay_s = token_delay_s
        self.token_requests = 0
        self.admin_requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/protocol/openid-connect/token"):
            self.token_requests += 1
            await asyncio.sleep(self.token_delay_s)
            token = f"token-{self.token_requests}"
            return httpx.Response(
                200, json={"access_token": token, "expires_in": 300, "token_type": "Bearer"}
            )
        self.admin_requests.append(request)
        return await self.admin(request)

    @property
    def requests_seen(self) -> int:
        return self.token_requests + len(self.admin_requests)


def scripted(*responses: httpx.Response) -> AdminHandler:
    """Answer admin requests with `responses` in order, repeating the last one."""
    queue = list(responses)

    async def handler(_: httpx.Request) -> httpx.Response:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler
