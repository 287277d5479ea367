"""`python -m bench.search_cost`: what a username-prefix partition costs against offset pages, same users.

For a few blocks of 1,000 users of a seeded benchmark realm (users `bench-NNNNNN`, so block `b` is exactly
the users whose username starts with `bench-{b:03d}`), in rounds that alternate the order, the seconds to
fetch the block as:

- **offset**: 4 offset pages of 250 (`first` = the block's position), full representation;
- **search**: 4 pages of 250 of `search=bench-{b:03d}` (`first` 0..750 inside the partition), full;
- **offset_brief**: the offset pages with `briefRepresentation=true`.

Knobs: BENCH_SEARCH_SIZE (100000; the realm `bench-100k` must exist, e.g. from `bench.listing`),
BENCH_SEARCH_BLOCKS (3,50,96), BENCH_SEARCH_ROUNDS (2). Results go to stdout and
bench/results/search-cost-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.env import RESULTS_DIR, realm_name, stack_env

PAGE = 250
PAGES = 4  # a block of 1,000 users


async def _token(http: httpx.AsyncClient, env: dict[str, str], realm: str) -> str:
    url = f"{env['KEYCLOAK_URL']}/realms/{realm}/protocol/openid-connect/token"
    data = {
        "grant_type": "client_credentials",
        "client_id": env["KEYCLOAK_CLIENT_ID"],
        "client_secret": env["KEYCLOAK_CLIENT_SECRET"],
    }
    response = await http.post(url, data=data)
    response.raise_for_status()
    return str(response.json()["access_token"])


async def _fetch(http: httpx.AsyncClient, env: dict[str, str], realm: str, params: dict[str, Any]) -> float:
    headers = {"Authorization": f"Bearer {await _token(http, env, realm)}"}  # fresh: pages can be slow
    started = time.perf_counter()
    response = await http.get(
        f"{env['KEYCLOAK_URL']}/admin/realms/{realm}/users", params=params, headers=headers
    )
    response.raise_for_status()
    elapsed = time.perf_counter() - started
    assert len(response.json()) == PAGE, params
    return elapsed


def _requests(kind: str, block: int) -> list[dict[str, Any]]:
    if kind == "search":
        prefix = f"bench-{block:03d}"
        return [
            {"search": prefix, "first": k * PAGE, "max": PAGE, "briefRepresentation": "false"}
            for k in range(PAGES)
        ]
    brief = "true" if kind == "offset_brief" else "false"
    return [
        {"first": block * 1000 + k * PAGE, "max": PAGE, "briefRepresentation": brief} for k in range(PAGES)
    ]


async def main() -> int:
    env = stack_env()
    realm = realm_name(int(os.environ.get("BENCH_SEARCH_SIZE", "100000")))
    blocks = [int(b) for b in os.environ.get("BENCH_SEARCH_BLOCKS", "3,50,96").split(",")]
    kinds = ["offset", "search", "offset_brief"]
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=900) as http:
        for round_no in range(int(os.environ.get("BENCH_SEARCH_ROUNDS", "2"))):
            order = kinds if round_no % 2 == 0 else [kinds[1], kinds[0], kinds[2]]
            for block in (b + round_no for b in blocks):  # other users each round: none is cached
                row: dict[str, Any] = {"round": round_no + 1, "users": f"{block * 1000}-{block * 1000 + 999}"}
                for kind in order:
                    row[f"{kind}_s"] = round(
                        sum([await _fetch(http, env, realm, p) for p in _requests(kind, block)]), 2
                    )
                print(json.dumps(row), flush=True)
                rows.append(row)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"search-cost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(
        json.dumps({"realm": realm, "keycloak_db": env.get("STACK_KEYCLOAK_DB"), "rows": rows}, indent=2)
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
