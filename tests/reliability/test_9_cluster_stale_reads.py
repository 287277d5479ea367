"""Scenario 9 (production shape only): stale reads across a two-node Keycloak cluster.

Every update is made on node A while the reconciler reads only from node B (its own recording proxy in front
of B), so each hint's read can meet B's caches before A's invalidation reached them (keycloak#51532). First
a probe measures how often a read on B right after a write on A is stale; then `reconciler run` follows a
stream of updates made on A. The store must converge to Keycloak every time, with the offset audit holding
and `verify` exit 0. Skipped unless the reliability stack is a cluster:
`RELIABILITY_KEYCLOAK_NODES=2 make reliability` (see RELIABILITY.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.reliability.scenario import ScenarioEnv
from tests.support.http_proxy import RecordingProxy
from tests.support.keycloak_admin import KeycloakTestAdmin

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 200
UPDATES = 600
PROBES = 100


@pytest.fixture
def node_urls(stack_env: dict[str, str]) -> list[str]:
    urls = [url for url in stack_env.get("KEYCLOAK_NODE_URLS", "").split(",") if url]
    if len(urls) < 2:
        pytest.skip(
            "the reliability stack has one Keycloak node (RELIABILITY_KEYCLOAK_NODES=2 makes a cluster)"
        )
    return urls


@pytest.fixture
async def pinned(
    env: ScenarioEnv, stack_env: dict[str, str], node_urls: list[str]
) -> AsyncIterator[ScenarioEnv]:
    """The scenario's env with writes on node A and the reconciler's reads on node B only."""
    node_a = KeycloakTestAdmin.from_env({**stack_env, "KEYCLOAK_URL": node_urls[0]}, env.realm)
    # Tokens seen through this proxy are registered with the secrets sweep like the shared proxy's.
    proxy_b = RecordingProxy(node_urls[1], tokens=env.proxy.tokens)
    await proxy_b.start()
    yield dataclasses.replace(env, kc_admin=node_a, proxy=proxy_b)
    await proxy_b.stop()
    await node_a.aclose()


async def probe_stale_reads(
    writer: KeycloakTestAdmin, reader: KeycloakTestAdmin, user: dict[str, Any]
) -> dict[str, Any]:
    """Write on A, read at once on B, PROBES times: how many first reads were stale, and the worst wait
    until B showed the write."""
    body = {k: user[k] for k in ("username", "email", "emailVerified", "firstName", "enabled")}
    stale, worst_s = 0, 0.0
    for version in range(1, PROBES + 1):
        await writer.request("PUT", f"/users/{user['id']}", json={**body, "lastName": f"p{version}"})
        written = time.monotonic()
        first = True
        while True:
            seen = await reader.get_user(user["id"])
            if seen is not None and seen.get("lastName") == f"p{version}":
                break
            stale += first
            first = False
            assert time.monotonic() - written < 30, f"node B never showed version {version}"
        worst_s = max(worst_s, time.monotonic() - written)
    # Leave the user as the stream expects it (version 0).
    await writer.request("PUT", f"/users/{user['id']}", json={**body, "lastName": "v0"})
    return {
        "probe_writes": PROBES,
        "probe_stale_first_reads": stale,
        "probe_worst_visible_s": round(worst_s, 3),
    }


async def test_updates_on_node_a_read_from_node_b_converge(
    pinned: ScenarioEnv, stack_env: dict[str, str], node_urls: list[str]
) -> None:
    env = pinned
    users = await env.import_seed_users(USERS, "stale")
    reader = KeycloakTestAdmin.from_env({**stack_env, "KEYCLOAK_URL": node_urls[1]}, env.realm)
    try:
        probe = await probe_stale_reads(env.kc_admin, reader, users[0])
    finally:
        await reader.aclose()
    async with env.consumer("9-cluster-stale-reads") as scenario:
        stream = await scenario.stream_updates(users, UPDATES, rate_per_s=20, flowing_after=50)
        converged = await scenario.converge(
            stream, what="store equals Keycloak (reads from node B only)", lag_timeout_s=120
        )
        await scenario.stop_audited()
    checks = await scenario.closing_checks()
    reads_on_b = sum(1 for r in env.proxy.requests if r.method == "GET" and "/users/" in r.raw_path)
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        **probe,
        reconciler_user_reads_on_node_b=reads_on_b,
        converged_after_last_update_s=round(converged.converged_at - converged.finished_at, 1),
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )
