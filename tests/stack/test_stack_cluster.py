"""The stack's two-node Keycloak shape (STACK_KEYCLOAK_NODES=2): one cluster behind the round-robin front.

Skipped on a single-node stack. Run with `STACK_KEYCLOAK_NODES=2 make test`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually

pytestmark = pytest.mark.stack
VIEW = re.compile(r"ISPN000094: Received new cluster view for channel \S+: \[[^\]]*\] \((\d+)\)")


@pytest.fixture(scope="module")
def node_urls(stack_env: dict[str, str]) -> list[str]:
    urls = [url for url in stack_env.get("KEYCLOAK_NODE_URLS", "").split(",") if url]
    if len(urls) < 2:
        pytest.skip("the stack in use has one Keycloak node (STACK_KEYCLOAK_NODES=2 starts a cluster)")
    return urls


@pytest.fixture
async def node_admins(
    stack_env: dict[str, str], node_urls: list[str], realm: str
) -> AsyncIterator[list[KeycloakTestAdmin]]:
    """One admin client per node, each talking to its node only (no front)."""
    admins = [KeycloakTestAdmin.from_env({**stack_env, "KEYCLOAK_URL": url}, realm) for url in node_urls]
    yield admins
    for admin in admins:
        await admin.aclose()


def test_every_node_logged_a_cluster_view_of_all_nodes(
    stack_env: dict[str, str], node_urls: list[str]
) -> None:
    logs = sorted((Path(stack_env["STACK_STATE_DIR"]) / "logs").glob("keycloak-[0-9]*.log"))
    assert len(logs) == len(node_urls)
    for log in logs:
        views = VIEW.findall(log.read_text(errors="replace"))
        assert views and int(views[-1]) == len(node_urls), f"{log.name}: cluster views {views}"


async def test_the_front_alternates_nodes_and_its_tokens_are_valid_on_each_node(
    stack_env: dict[str, str], node_urls: list[str], realm: str
) -> None:
    async with httpx.AsyncClient(base_url=stack_env["KEYCLOAK_URL"]) as front:
        token = await front.post(
            f"/realms/{realm}/protocol/openid-connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": stack_env["KEYCLOAK_CLIENT_ID"],
                "client_secret": stack_env["KEYCLOAK_CLIENT_SECRET"],
            },
        )
        token.raise_for_status()
        served_by = {(await front.get(f"/realms/{realm}")).headers["x-stack-node"] for _ in node_urls}
    assert served_by == {str(i + 1) for i in range(len(node_urls))}
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    for url in node_urls:
        async with httpx.AsyncClient(base_url=url, headers=headers) as node:
            answer = await node.get(f"/admin/realms/{realm}/users", params={"max": 1})
        assert answer.status_code == 200, f"{url}: {answer.status_code}"


async def test_a_change_made_on_one_node_is_read_on_the_other(node_admins: list[KeycloakTestAdmin]) -> None:
    """Caches are invalidated across nodes (the cluster works); how stale a first read can be is measured by
    the reliability suite, so this waits a little rather than asserting the very first read."""
    writer, reader = node_admins[0], node_admins[1]
    user_id = await writer.create_user()

    async def read() -> dict[str, Any] | None:
        return await reader.get_user(user_id)

    await eventually(read, until=lambda user: user is not None, timeout_s=5, what="the new user on node 2")
    await writer.update_user(user_id, firstName="Changed on node 1")
    await eventually(
        read,
        until=lambda user: user is not None and user.get("firstName") == "Changed on node 1",
        timeout_s=5,
        what="the update on node 2",
    )
    await writer.delete_user(user_id)
    await eventually(read, until=lambda user: user is None, timeout_s=5, what="the deletion on node 2")
