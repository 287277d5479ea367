"""`python -m bench.scale` (`make bench-scale`): the full reconcile's listing as one realm grows to 1,000,000
users, by each road (creation-time windows, offset pages) and form (brief, full), in one run.

Seeding. Importing a million users through the admin API would take hours here, so each step writes the
missing users straight into Keycloak's PostgreSQL, one INSERT ... SELECT over generate_series per table,
and ANALYZEs them. Keycloak keeps running: a listing reads the database, and a user is cached only once read
(the cache is cleared before every listing anyway). User i of the realm: id md5('<realm>/i') as a UUID,
username `scale-0000001`, an email, names, enabled but every 50th, email verified for two in three, a
`picture` attribute for one in three (the mirrored field the full form carries), the realm's default roles;
created one every 94 s on average over about three years, with up to a minute of jitter, except that the
first 2,000 of every 100,000 share one millisecond (an import stamps them so).

Measured at each size, Keycloak's user cache cleared just before each listing:
- **windows** (where Keycloak filters by creation time), brief and full: the whole listing through
  `FullReconcile.pages`, every page fetched and decoded, nothing applied: the road's floor;
- **offset**, brief and full: the whole listing up to BENCH_SCALE_OFFSET_FULL_MAX users; beyond it pages are
  sampled one at a time at BENCH_SCALE_SAMPLES offsets spread evenly over the realm, and the sequential
  listing is estimated as the mean page time times the number of pages (marked `sampled`); at the largest
  size listed whole both figures are reported, which shows what the pages in flight buy;
- the cost per listed user, the Keycloak requests of each listing, and the process's peak RSS;
- up to BENCH_SCALE_WARM_MAX users (100,000), the reconciler itself with its default settings, each run in a
  fresh process (`bench.job`, so its peak RSS is its own): a cold run that fills the store (reported, once:
  the store is kept), then a warm run (nothing changed): seconds, Keycloak requests, CPU seconds per
  process, peak RSS; with BENCH_SCALE_REF=1 the port of the seed's algorithm likewise (its cold run costs one
  store round trip per user: minutes at 100,000).
The linearity figure is the cost per user at the largest size over the smallest, per road and form.

Knobs: BENCH_SCALE_SIZES (10000,100000,1000000), BENCH_SCALE_FORMS (brief,full), BENCH_SCALE_ROADS
(windows,offset), BENCH_SCALE_SAMPLES (20), BENCH_SCALE_OFFSET_FULL_MAX (100000), BENCH_SCALE_WARM_MAX
(100000; 0: no reconciler runs), BENCH_SCALE_REF (off), BENCH_SCALE_REALM (bench-scale: the realms are
bench-scale-10k, -100k, -1000k, kept for the next run). Results go to stdout and bench/results/scale-<Keycloak version>-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY

from bench import seed
from bench.env import RESULTS_DIR, make_settings, stack_env
from bench.runner import run_job
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.fullsync.reconcile import FullReconcile
from reconciler.fullsync.windowed import Road, probe_road
from reconciler.observability.logs import configure_logging
from tests.support.postgres import Postgres

FORMS = {"brief": "", "full": Settings.model_fields["mirrored_attributes"].default}
# About three years of sign-ups for a million users; the jitter keeps most creation times distinct.
SPACING_MS = 94_000
JITTER_MS = 60_000
FIRST_CREATED_MS = 1_700_000_000_000  # 2023-11-14
IMPORT_EVERY = 100_000  # the first IMPORT_SIZE users of each block share one millisecond
IMPORT_SIZE = 2_000


def _list(name: str, default: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, default).split(",") if v.strip()]


def seed_sql(realm: str, realm_id: str, start: int, stop: int) -> str:
    """Users start .. stop-1 of `realm`, their `picture` attributes and default roles, in one transaction."""
    user_id = f"md5('{realm}/' || i)::uuid::text"
    created = (
        f"CASE WHEN i % {IMPORT_EVERY} < {IMPORT_SIZE}"
        f" THEN {FIRST_CREATED_MS} + (i / {IMPORT_EVERY}) * {IMPORT_EVERY}::bigint * {SPACING_MS}"
        f" ELSE {FIRST_CREATED_MS} + i::bigint * {SPACING_MS}"
        f" + ('x' || substr(md5('j' || i), 1, 8))::bit(32)::bigint % {JITTER_MS} END"
    )
    series = f"generate_series({start}, {stop - 1}) AS i"
    return f"""
BEGIN;
INSERT INTO user_entity (id, email, email_constraint, email_verified, enabled, first_name, last_name,
                         realm_id, username, created_timestamp, not_before)
SELECT {user_id}, 'scale-' || i || '@example.test', 'scale-' || i || '@example.test', i % 3 <> 0,
       i % 50 <> 0, 'First' || i, 'Last' || i, '{realm_id}', 'scale-' || lpad(i::text, 7, '0'),
       {created}, 0
FROM {series};
INSERT INTO user_attribute (id, name, value, user_id)
SELECT md5('{realm}/picture/' || i)::uuid::text, 'picture', 'https://img.example.test/' || i || '.png',
       {user_id}
FROM {series} WHERE i % 3 = 0;
INSERT INTO user_role_mapping (role_id, user_id)
SELECT r.id, {user_id} FROM {series}
CROSS JOIN (SELECT id FROM keycloak_role WHERE realm_id = '{realm_id}' AND name = 'default-roles-{realm}') r;
COMMIT;
ANALYZE user_entity; ANALYZE user_attribute; ANALYZE user_role_mapping;
"""


async def grow(env: dict[str, str], postgres: Postgres, realm: str, size: int) -> dict[str, Any]:
    """The realm (created from the export when missing) holding users 0 .. size-1 of the scheme above (a
    realm per size, so that each size can be measured again alone)."""
    kc = seed.admin(env, realm)
    try:
        created_realm = not await seed.realm_exists(kc)
        if created_realm:
            await seed.create_realm(kc)
        realm_id = await postgres.aquery(f"SELECT id FROM realm WHERE name = '{realm}'")
        have = int(
            await postgres.aquery(
                f"SELECT count(*) FROM user_entity WHERE realm_id = '{realm_id}' AND username LIKE 'scale-%'"
            )
        )
        if have > size:
            raise SystemExit(f"realm {realm} holds {have} seeded users, more than {size}: delete it first")
        started = time.perf_counter()
        if have < size:
            await postgres.aquery(seed_sql(realm, realm_id, have, size), timeout_s=3600)
        seconds = time.perf_counter() - started
        counted = await seed.count_users(kc)
    finally:
        await kc.aclose()
    return {
        "size": size,
        "inserted": size - have,
        "seconds": round(seconds, 1),
        "counted": counted,
        "created_realm": created_realm,
    }


async def clear_user_cache(env: dict[str, str], realm: str) -> None:
    kc = seed.admin(env, realm)
    try:
        await kc.request("POST", "/clear-user-cache")
    finally:
        await kc.aclose()


def keycloak_requests() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "reconciler_keycloak_requests"
        for sample in metric.samples
        if sample.name == "reconciler_keycloak_requests_total"
    )


@dataclass(slots=True)
class Listing:
    road: str
    form: str
    size: int
    seconds: float
    listed: int
    requests: int
    sampled: bool = False

    def to_dict(self) -> dict[str, Any]:
        per_user_ms = self.seconds / self.size * 1000 if self.size else 0.0
        return {
            "road": self.road,
            "form": self.form,
            "size": self.size,
            "seconds": round(self.seconds, 2),
            "per_user_ms": round(per_user_ms, 4),
            "listed": self.listed,
            "keycloak_requests": self.requests,
            "sampled": self.sampled,
        }


async def whole_listing(settings: Settings, store: UserStore, road: Road, form: str, size: int) -> Listing:
    """Every page of the road, fetched and decoded, nothing applied."""
    async with KeycloakAdminClient(settings) as keycloak:
        total = await keycloak.count_users()
        requests_before = keycloak_requests()
        started = time.perf_counter()
        pages = FullReconcile(settings, store, keycloak).pages(road, total)
        listed = 0
        try:
            while (item := await pages.next_page()) is not None:
                listed += len(item[2].users)
        finally:
            await pages.close()
        seconds = time.perf_counter() - started
        requests = int(keycloak_requests() - requests_before)
    return Listing(road.value, form, size, seconds, listed, requests)


async def sampled_offset_listing(settings: Settings, form: str, size: int, samples: int) -> Listing:
    """Pages at `samples` offsets spread over the realm, one at a time: the sequential listing's estimate."""
    page = settings.keycloak_page_size
    pages = -(-size // page)
    offsets = [round(k * (pages - 1) / max(1, samples - 1)) * page for k in range(samples)]
    async with KeycloakAdminClient(settings) as keycloak:
        requests_before = keycloak_requests()
        spent = 0.0
        listed = 0
        for first in offsets:
            started = time.perf_counter()
            listed += len((await keycloak.list_user_page(first, page, brief=form == "brief")).users)
            spent += time.perf_counter() - started
        requests = int(keycloak_requests() - requests_before)
    return Listing("offset", form, size, spent / len(offsets) * pages, listed, requests, sampled=True)


def reconciler_runs(realm: str, size: int, impl: str) -> dict[str, Any]:
    """A cold run that fills the implementation's store (skipped when it is full already), then a warm one."""
    database = f"{realm.replace('-', '_')}_{impl}"
    spec = {"kind": "reconcile", "impl": impl, "realm": realm, "database": database, "size": size}
    cold = run_job(f"scale-{impl}-cold-{size}", {**spec, "only_if_unfilled": True}, timeout_s=4 * 3600)
    warm = run_job(f"scale-{impl}-warm-{size}", spec, timeout_s=4 * 3600)
    keep = ("seconds", "keycloak_requests", "cpu_seconds", "peak_rss_mb", "counts")
    return {
        "impl": impl,
        "size": size,
        "cold": None if cold.get("skipped") else {k: cold.get(k) for k in keep},
        "warm": {k: warm.get(k) for k in keep},
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def linearity(listings: list[Listing]) -> dict[str, float]:
    """Cost per user at the largest size over the smallest, per road and form (whole or sampled alike)."""
    ratios: dict[str, float] = {}
    for key in sorted({(item.road, item.form, item.sampled) for item in listings}):
        same = sorted(
            (item for item in listings if (item.road, item.form, item.sampled) == key),
            key=lambda item: item.size,
        )
        if len(same) > 1 and same[0].seconds > 0:
            small, large = same[0], same[-1]
            name = f"{key[0]} {key[1]}{' sampled' if key[2] else ''} {large.size}/{small.size}"
            ratios[name] = round((large.seconds / large.size) / (small.seconds / small.size), 2)
    return ratios


async def main() -> int:
    configure_logging("WARNING", "json")
    env = stack_env()
    postgres = Postgres.of_stack(env)
    prefix = os.environ.get("BENCH_SCALE_REALM", "bench-scale")
    sizes = sorted(int(v) for v in _list("BENCH_SCALE_SIZES", "10000,100000,1000000"))
    forms = _list("BENCH_SCALE_FORMS", "brief,full")
    roads = [Road(v) for v in _list("BENCH_SCALE_ROADS", "windows,offset")]
    samples = int(os.environ.get("BENCH_SCALE_SAMPLES", "20"))
    offset_full_max = int(os.environ.get("BENCH_SCALE_OFFSET_FULL_MAX", "100000"))
    warm_max = int(os.environ.get("BENCH_SCALE_WARM_MAX", "100000"))
    with_ref = os.environ.get("BENCH_SCALE_REF", "") not in ("", "0")
    version = os.environ.get("STACK_KEYCLOAK_VERSION", "26.7.3")
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "keycloak_version": version,
        "seeding": [],
        "listings": [],
        "reconciler": [],
    }
    listings: list[Listing] = []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"scale-{version}-{stamp}.json"
    for size in sizes:
        realm = f"{prefix}-{size // 1000}k" if size % 1000 == 0 else f"{prefix}-{size}"
        database = realm.replace("-", "_") + "_unused"  # the listings write nothing
        grown = await grow(env, postgres, realm, size)
        results["seeding"].append(grown)
        print(f"{size:>9,} users: {grown['inserted']:,} inserted in {grown['seconds']} s", flush=True)
        for form in forms:
            settings = make_settings(env, realm, database, mirrored_attributes=FORMS[form])
            async with KeycloakAdminClient(settings) as keycloak:
                windows_there = await probe_road(keycloak, await keycloak.count_users()) is Road.WINDOWS
            async with UserStore.from_settings(settings) as store:
                for road in roads:
                    measured: list[Listing] = []
                    if road is Road.WINDOWS and not windows_there:
                        continue
                    if road is Road.WINDOWS or size <= offset_full_max:
                        await clear_user_cache(env, realm)
                        measured.append(await whole_listing(settings, store, road, form, size))
                    if road is Road.OFFSET and size >= offset_full_max:
                        await clear_user_cache(env, realm)
                        measured.append(await sampled_offset_listing(settings, form, size, samples))
                    for item in measured:
                        listings.append(item)
                        shown = item.to_dict()
                        kind = "sampled" if item.sampled else "whole"
                        print(
                            f"  {item.road:>7} {form:>5} {kind:>7}: {shown['seconds']:>8} s,"
                            f" {shown['per_user_ms']} ms/user, {item.requests} requests",
                            flush=True,
                        )
        if size <= warm_max:
            for impl in ("ours", "ref") if with_ref else ("ours",):
                runs = reconciler_runs(realm, size, impl)
                results["reconciler"].append(runs)
                cold = f"cold {runs['cold']['seconds']:.1f} s, " if runs["cold"] else ""
                warm = runs["warm"]
                print(
                    f"  {impl:>4} full reconcile: {cold}warm {warm['seconds']:.1f} s,"
                    f" {warm['keycloak_requests']} requests, peak RSS {warm['peak_rss_mb']} MB",
                    flush=True,
                )
        # Written after every size: a run cut short keeps what it measured.
        results["listings"] = [item.to_dict() for item in listings]
        results["linearity"] = linearity(listings)
        results["listing_process_peak_rss_mb"] = round(peak_rss_mb(), 1)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"linearity": results["linearity"], "results": str(out)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
