"""`python -m bench.brief_full`: the full reconcile's listing of one realm with brief and with full pages.

The listing's representation follows MIRRORED_ATTRIBUTES: brief pages when it is empty, full ones when it
names an attribute (the default, `picture=avatar_url`). For the benchmark realm of BENCH_BRIEF_SIZE users
(seeded like the other suites, `bench-2k` by default) and each number of pages in flight, in rounds that
alternate the order, it times the listing through the reconciler's own client and page window
(`bench.listing.listing_only`: every page fetched and decoded, nothing applied) both ways, once with
Keycloak's user cache cleared just before (`POST /clear-user-cache`: what a run over a realm larger than the
cache meets) and once right after, with the cache warm; it reports the best of the rounds and the ratio full
/ brief.

Knobs: BENCH_BRIEF_SIZE (2000), BENCH_BRIEF_PAGE (100), BENCH_BRIEF_DEPTHS (1,4), BENCH_BRIEF_ROUNDS (3).
Results go to stdout and bench/results/brief-full-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from typing import Any

from bench import seed
from bench.env import RESULTS_DIR, database_name, make_settings, realm_name, stack_env
from bench.listing import listing_only
from reconciler.base.config import Settings
from reconciler.observability.logs import configure_logging

MAPPINGS = {"brief": "", "full": Settings.model_fields["mirrored_attributes"].default}


async def main() -> int:
    configure_logging("WARNING", "json")
    env = stack_env()
    size = int(os.environ.get("BENCH_BRIEF_SIZE", "2000"))
    page = int(os.environ.get("BENCH_BRIEF_PAGE", "100"))
    depths = [int(d) for d in os.environ.get("BENCH_BRIEF_DEPTHS", "1,4").split(",") if d.strip()]
    rounds = int(os.environ.get("BENCH_BRIEF_ROUNDS", "3"))
    realm = realm_name(size)
    seeded = await seed.ensure_realm(env, realm, size)
    print(f"realm {realm}: {size} users ({seeded.seconds:.1f} s to make sure)", flush=True)
    best: dict[tuple[int, str, str], float] = {}
    kc = seed.admin(env, realm)
    try:
        for round_no in range(rounds):
            kinds = list(MAPPINGS) if round_no % 2 == 0 else list(reversed(MAPPINGS))
            for depth, kind in ((depth, kind) for depth in depths for kind in kinds):
                settings = make_settings(
                    env,
                    realm,
                    database_name(size, "brief"),  # never written: the listing applies nothing
                    keycloak_page_size=page,
                    keycloak_list_concurrency=depth,
                    mirrored_attributes=MAPPINGS[kind],
                )
                for cache in ("cleared", "warm"):
                    if cache == "cleared":
                        await kc.request("POST", "/clear-user-cache")
                    seconds, listed, _ = await listing_only(settings)
                    assert listed == size, (listed, size)
                    key = (depth, kind, cache)
                    best[key] = min(best.get(key, seconds), seconds)
                    print(
                        f"round {round_no + 1} in flight {depth} {kind} {cache}: {seconds:.3f} s", flush=True
                    )
    finally:
        await kc.aclose()
    rows: list[dict[str, Any]] = []
    for depth, cache in ((depth, cache) for depth in depths for cache in ("cleared", "warm")):
        brief, full = best[depth, "brief", cache], best[depth, "full", cache]
        rows.append(
            {
                "users": size,
                "page_size": page,
                "in_flight": depth,
                "user_cache": cache,
                "brief_s": round(brief, 3),
                "full_s": round(full, 3),
                "brief_ms_per_user": round(brief * 1000 / size, 3),
                "full_ms_per_user": round(full * 1000 / size, 3),
                "full_over_brief": round(full / brief, 2),
            }
        )
    for row in rows:
        print(json.dumps(row), flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"brief-full-{stamp}.json").write_text(
        json.dumps({"rounds": rounds, "rows": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
