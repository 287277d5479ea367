"""`python -m bench.listing`: the full reconcile's listing at a few (page size x pages in flight), one run.

Seeds the benchmark realm (`bench-10k` by default, partial import, reused when it holds the right users),
fills a store once with a cold run, then in rounds (the combinations in a different order each round, so
that a slow minute of the shared machine does not land on one combination) measures for each combination:

- **listing**: the reconciler's own client and page window (`reconcile._PageWindow`), every page fetched and
  decoded, nothing applied: what Keycloak costs at that combination;
- **warm** (with BENCH_LISTING_WARM=1): `FullReconcile.run()` over the unchanged store (listing + one store
  read per page, no writes), after one cold run that fills the store.

Every time is reported with its ratio to the sequential listing of pages of 100 (the old default) measured
in the same run; the best time of the rounds counts. Knobs: BENCH_LISTING_SIZE (10000),
BENCH_LISTING_PAGES (100,500,1000), BENCH_LISTING_DEPTHS (1,2,4,8), BENCH_LISTING_ROUNDS (2),
BENCH_LISTING_WARM (off).
Results go to bench/results/listing-<time>.json and stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from datetime import UTC, datetime
from typing import Any

from bench import seed
from bench.env import RESULTS_DIR, database_name, make_settings, realm_name, stack_env
from reconciler.config import Settings
from reconciler.keycloak import KeycloakAdminClient
from reconciler.logs import configure_logging
from reconciler.reconcile import FullReconcile, _PageWindow
from reconciler.store import UserStore


def _ints(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",") if v.strip()]


async def listing_only(settings: Settings) -> tuple[float, int]:
    """Seconds to fetch every page through the client and the page window, and the users listed."""
    async with KeycloakAdminClient(settings) as client:
        total = await client.count_users()
        started = time.perf_counter()

        async def fetch(first: int) -> tuple[datetime, Any]:
            return datetime.now(UTC), await client.list_user_page(
                first, settings.keycloak_page_size, brief=False
            )

        window = _PageWindow(fetch, settings.keycloak_page_size, settings.keycloak_list_concurrency, total)
        listed = 0
        try:
            while (item := await window.next_page()) is not None:
                listed += len(item[2].users)
        finally:
            await window.close()
        return time.perf_counter() - started, listed


async def warm_run(settings: Settings) -> float:
    async with KeycloakAdminClient(settings) as client, UserStore.from_settings(settings) as store:
        started = time.perf_counter()
        summary = await FullReconcile(settings, store, client).run()
        elapsed = time.perf_counter() - started
    assert summary.ok and summary.applied.written == 0, summary.to_dict()
    return elapsed


async def fill_store(settings: Settings) -> None:
    async with KeycloakAdminClient(settings) as client, UserStore.from_settings(settings) as store:
        await store.ensure_indexes()
        await FullReconcile(settings, store, client).run()  # cold: fills the store once


async def measure(settings: Settings, size: int, warm: bool) -> dict[str, float]:
    listing_s, listed = await listing_only(settings)
    assert listed == size, (listed, size)
    timings = {"listing_s": listing_s}
    if warm:
        timings["warm_s"] = await warm_run(settings)
    return timings


def table(best: dict[tuple[int, int], dict[str, float]]) -> list[dict[str, Any]]:
    """One row per combination: the best times and their ratios to the sequential listing of 100s."""
    reference = best[(100, 1)]["listing_s"] if (100, 1) in best else None
    rows = []
    for (page, depth), entry in sorted(best.items()):
        row: dict[str, Any] = {"page_size": page, "in_flight": depth}
        row |= {k: round(v, 3) for k, v in entry.items()}
        if reference:
            row |= {k.replace("_s", "_ratio"): round(v / reference, 2) for k, v in entry.items()}
        rows.append(row)
    return rows


async def main() -> int:
    configure_logging("WARNING", "json")  # a line per created user would cost more than it measures
    env = stack_env()
    size = int(os.environ.get("BENCH_LISTING_SIZE", "10000"))
    realm = realm_name(size)
    seeded = await seed.ensure_realm(env, realm, size)
    print(f"realm {realm}: {size} users ({seeded.seconds:.1f} s to make sure)", flush=True)
    database = database_name(size, "listing")
    warm = os.environ.get("BENCH_LISTING_WARM", "") not in ("", "0")
    if warm:
        await fill_store(make_settings(env, realm, database))
    pages, depths = _ints("BENCH_LISTING_PAGES", "100,500,1000"), _ints("BENCH_LISTING_DEPTHS", "1,2,4,8")
    combos = [(p, d) for p in pages for d in depths]
    best: dict[tuple[int, int], dict[str, float]] = {}
    for round_no in range(int(os.environ.get("BENCH_LISTING_ROUNDS", "2"))):
        random.Random(round_no).shuffle(combos)
        for page, depth in combos:
            settings = make_settings(
                env, realm, database, keycloak_page_size=page, keycloak_list_concurrency=depth
            )
            timings = await measure(settings, size, warm)
            entry = best.setdefault((page, depth), timings)
            for key, value in timings.items():
                entry[key] = min(entry[key], value)
            print(f"round {round_no + 1}: page {page} x {depth} in flight: {timings}", flush=True)
    rows = table(best)
    for row in rows:
        print(json.dumps(row))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"listing-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    result = {"realm": realm, "size": size, "keycloak_db": "H2 (start-dev)", "results": rows}
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
