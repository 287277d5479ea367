"""`python -m bench.listing`: the full reconcile's listing at a few (page size x pages in flight), one run.

Seeds the benchmark realm (`bench-10k` by default, partial import, reused when it holds the right users),
fills a store once with a cold run, then in rounds (the combinations in a different order each round, so
that a slow minute of the shared machine does not land on one combination) measures for each combination:

- **listing**: the reconciler's own client and page window (`listing.OffsetPages`), every page fetched and
  decoded, nothing applied: what Keycloak costs at that combination;
- **warm** (with BENCH_LISTING_WARM=1): `FullReconcile.run()` over the unchanged store (listing + one store
  read per page, no writes), after one cold run that fills the store.

Every time is reported with its ratio to the sequential listing of pages of 100 (the old default) measured
in the same run; the best time of the rounds counts. Knobs: BENCH_LISTING_SIZE (10000),
BENCH_LISTING_PAGES (100,500,1000; `LOW-HIGH`, e.g. 100-1000, is the adaptive page size between the two,
KEYCLOAK_PAGE_SIZE=LOW with KEYCLOAK_PAGE_SIZE_MAX=HIGH), BENCH_LISTING_DEPTHS (1,2,4,8),
BENCH_LISTING_ROUNDS (2), BENCH_LISTING_WARM (off), BENCH_LISTING_TIMEOUT_S (KEYCLOAK_TIMEOUT_S of the
measured client, default 10; a page of 1,000 users of a large realm can take longer on a busy machine).
The store is filled only when it does not already hold the realm's users as active.
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
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.fullsync.listing import OffsetPages, PageSizer
from reconciler.fullsync.reconcile import FullReconcile
from reconciler.observability.logs import configure_logging


def _ints(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",") if v.strip()]


async def listing_only(settings: Settings) -> tuple[float, int, list[int]]:
    """Seconds to fetch every page through the client and the page window, the users listed, and the page
    sizes used."""
    async with KeycloakAdminClient(settings) as client:
        total = await client.count_users()
        started = time.perf_counter()

        async def fetch(first: int, size: int) -> tuple[datetime, Any]:
            # The representation the full reconcile lists: brief unless an attribute is mirrored.
            brief = not client.mirrored.needs_attributes
            return datetime.now(UTC), await client.list_user_page(first, size, brief=brief)

        depth = settings.keycloak_list_concurrency
        sizer = PageSizer(*settings.keycloak_page_size_bounds, depth)
        window = OffsetPages(fetch, sizer, depth, total)
        listed = 0
        try:
            while (item := await window.next_page()) is not None:
                listed += len(item[2].users)
        finally:
            await window.close()
        return time.perf_counter() - started, listed, sizer.sizes


async def warm_run(settings: Settings) -> float:
    async with KeycloakAdminClient(settings) as client, UserStore.from_settings(settings) as store:
        started = time.perf_counter()
        summary = await FullReconcile(settings, store, client).run()
        elapsed = time.perf_counter() - started
    assert summary.ok and summary.applied.written == 0, summary.to_dict()
    return elapsed


async def fill_store(settings: Settings, size: int) -> None:
    async with KeycloakAdminClient(settings) as client, UserStore.from_settings(settings) as store:
        await store.ensure_indexes()
        if await store.count_active() != size:
            await FullReconcile(settings, store, client).run()  # cold: fills the store once


async def measure(settings: Settings, size: int, warm: bool) -> dict[str, Any]:
    listing_s, listed, sizes = await listing_only(settings)
    assert listed == size, (listed, size)
    timings: dict[str, Any] = {"listing_s": listing_s}
    if warm:
        timings["warm_s"] = await warm_run(settings)
    if len(sizes) > 1:
        timings["page_sizes"] = sizes
    return timings


def page_overrides(spec: str) -> dict[str, int]:
    """`500` -> a fixed page size; `100-1000` -> adaptive between the two."""
    low, _, high = spec.partition("-")
    return {"keycloak_page_size": int(low), "keycloak_page_size_max": int(high or 0)}


def table(
    best: dict[tuple[str, int], dict[str, Any]], reference_key: tuple[str, int]
) -> list[dict[str, Any]]:
    """One row per combination: the best times and their ratios to the reference combination's listing."""
    reference = best[reference_key]["listing_s"] if reference_key in best else None
    rows = []
    for (page, depth), entry in best.items():
        row: dict[str, Any] = {"page_size": page, "in_flight": depth}
        times = {k: v for k, v in entry.items() if k.endswith("_s")}
        row |= {k: round(v, 3) for k, v in times.items()}
        if reference:
            row |= {k.replace("_s", "_ratio"): round(v / reference, 2) for k, v in times.items()}
        if "page_sizes" in entry:
            row["page_sizes"] = entry["page_sizes"]
        rows.append(row)
    return rows


def keep_best(entry: dict[str, Any], timings: dict[str, Any]) -> None:
    for key, value in timings.items():
        entry[key] = min(entry[key], value) if key.endswith("_s") else value


async def main() -> int:
    configure_logging("WARNING", "json")  # a line per created user would cost more than it measures
    env = stack_env()
    size = int(os.environ.get("BENCH_LISTING_SIZE", "10000"))
    realm = realm_name(size)
    seeded = await seed.ensure_realm(env, realm, size)
    print(f"realm {realm}: {size} users ({seeded.seconds:.1f} s to make sure)", flush=True)
    database = database_name(size, "listing")
    warm = os.environ.get("BENCH_LISTING_WARM", "") not in ("", "0")
    timeout = {"keycloak_timeout_s": float(os.environ.get("BENCH_LISTING_TIMEOUT_S", "10"))}
    if warm:
        await fill_store(make_settings(env, realm, database, **timeout), size)
    pages = [p.strip() for p in os.environ.get("BENCH_LISTING_PAGES", "100,500,1000").split(",") if p.strip()]
    depths = _ints("BENCH_LISTING_DEPTHS", "1,2,4,8")
    combos = [(p, d) for p in pages for d in depths]
    reference_key = combos[0]  # ratios are to the first combination (default: pages of 100, sequentially)
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for round_no in range(int(os.environ.get("BENCH_LISTING_ROUNDS", "2"))):
        random.Random(round_no).shuffle(combos)
        for page, depth in combos:
            settings = make_settings(
                env, realm, database, keycloak_list_concurrency=depth, **page_overrides(page), **timeout
            )
            timings = await measure(settings, size, warm)
            keep_best(best.setdefault((page, depth), dict(timings)), timings)
            print(f"round {round_no + 1}: page {page} x {depth} in flight: {timings}", flush=True)
    rows = table(best, reference_key)
    for row in rows:
        print(json.dumps(row))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"listing-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    db = env.get("STACK_KEYCLOAK_DB", "postgres")
    result = {
        "realm": realm,
        "size": size,
        "keycloak_db": db,
        "reference": list(reference_key),
        "results": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
