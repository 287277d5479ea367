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

Measured at each size, Keycloak's user cache cleared just before each listing and each run (the smallest
realm is first listed once by each road and form, unmeasured: Keycloak's first requests after a start run
before its JIT has compiled them):
- **windows** (where Keycloak filters by creation time), brief and full: the whole listing through
  `FullReconcile.pages`, every page fetched and decoded, nothing applied: the road's floor;
- **offset**, brief and full: the whole listing up to BENCH_SCALE_OFFSET_FULL_MAX users; beyond it pages are
  sampled one at a time at BENCH_SCALE_SAMPLES offsets spread evenly over the realm, and the sequential
  listing is estimated as the mean page time times the number of pages (marked `sampled`); at the largest
  size listed whole both figures are reported, which shows what the pages in flight buy;
- the cost per listed user, the Keycloak requests of each listing, and the process's peak RSS;
- then (BENCH_SCALE_PARTS: `listings`, then `reconciler`), up to BENCH_SCALE_WARM_MAX users (all sizes), the
  reconciler itself with its default settings, each run in a fresh process (`bench.job`, so its peak RSS is
  its own): a cold run that fills the store (reported once: the store is kept), a warm run (nothing
  changed), a churn run (1% of the users updated, 1% disabled, 1% deleted, written into the database just
  before, like the seeding), then the churn undone and a settle run (reported, no target): seconds,
  Keycloak requests, CPU seconds per process, peak RSS, counts; at BENCH_SCALE_REF_SIZES (100,000) the port
  of the seed's algorithm's warm run, its store filled in bulk beforehand (its own cold run costs one store
  round trip per user).
The linearity figure is the cost per user at the largest size over the smallest, per road and form; the
targets compare our warm and churn runs with the best whole listing of the default form at the same size.

Knobs: BENCH_SCALE_SIZES (10000,100000,1000000), BENCH_SCALE_PARTS (listings,reconciler), BENCH_SCALE_FORMS
(brief,full), BENCH_SCALE_ROADS (windows,offset), BENCH_SCALE_SAMPLES (20), BENCH_SCALE_OFFSET_FULL_MAX
(100000), BENCH_SCALE_WARM_MAX (1000000; 0: no reconciler runs), BENCH_SCALE_REF_SIZES (100000; empty: none),
BENCH_SCALE_RESULTS (a results file to add to: the parts of one run done one after the other),
BENCH_SCALE_REALM (bench-scale: the realms are bench-scale-10k, -100k, -1000k, kept for the next run).
Results go to stdout and bench/results/scale-<Keycloak version>-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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


def seed_sql(realm: str, realm_id: str, start: int, stop: int, step: int = 1) -> str:
    """Users start, start+step .. below stop of `realm`, their `picture` attributes and default roles, in one
    transaction; users already there are left alone (a churned realm's deleted users are written back so)."""
    user_id = f"md5('{realm}/' || i)::uuid::text"
    created = (
        f"CASE WHEN i % {IMPORT_EVERY} < {IMPORT_SIZE}"
        f" THEN {FIRST_CREATED_MS} + (i / {IMPORT_EVERY}) * {IMPORT_EVERY}::bigint * {SPACING_MS}"
        f" ELSE {FIRST_CREATED_MS} + i::bigint * {SPACING_MS}"
        f" + ('x' || substr(md5('j' || i), 1, 8))::bit(32)::bigint % {JITTER_MS} END"
    )
    series = f"generate_series({start}, {stop - 1}, {step}) AS i"
    return f"""
BEGIN;
INSERT INTO user_entity (id, email, email_constraint, email_verified, enabled, first_name, last_name,
                         realm_id, username, created_timestamp, not_before)
SELECT {user_id}, 'scale-' || i || '@example.test', 'scale-' || i || '@example.test', i % 3 <> 0,
       i % 50 <> 0, 'First' || i, 'Last' || i, '{realm_id}', 'scale-' || lpad(i::text, 7, '0'),
       {created}, 0
FROM {series}
ON CONFLICT DO NOTHING;
INSERT INTO user_attribute (id, name, value, user_id)
SELECT md5('{realm}/picture/' || i)::uuid::text, 'picture', 'https://img.example.test/' || i || '.png',
       {user_id}
FROM {series} WHERE i % 3 = 0
ON CONFLICT DO NOTHING;
INSERT INTO user_role_mapping (role_id, user_id)
SELECT r.id, {user_id} FROM {series}
CROSS JOIN (SELECT id FROM keycloak_role WHERE realm_id = '{realm_id}' AND name = 'default-roles-{realm}') r
ON CONFLICT DO NOTHING;
COMMIT;
ANALYZE user_entity; ANALYZE user_attribute; ANALYZE user_role_mapping;
"""


# Churn: 1% of the users updated (names and email), 1% disabled, 1% deleted, chosen by i % 100.
CHURN_UPDATED, CHURN_DISABLED, CHURN_DELETED = 11, 12, 13


def _churned_ids(realm: str, first: int, size: int) -> str:
    return f"SELECT md5('{realm}/' || i)::uuid::text FROM generate_series({first}, {size - 1}, 100) AS i"


def churn_sql(realm: str, size: int) -> str:
    """One round of churn in one transaction, written into the database like the seeding (a million users'
    1% through the admin API would take longer than the runs it prepares)."""
    return f"""
BEGIN;
UPDATE user_entity u SET first_name = 'Churned' || s.i, email = 'scale-' || s.i || '-churned@example.test',
       email_constraint = 'scale-' || s.i || '-churned@example.test'
FROM generate_series({CHURN_UPDATED}, {size - 1}, 100) AS s(i) WHERE u.id = md5('{realm}/' || s.i)::uuid::text;
UPDATE user_entity SET enabled = false WHERE id IN ({_churned_ids(realm, CHURN_DISABLED, size)});
DELETE FROM user_role_mapping WHERE user_id IN ({_churned_ids(realm, CHURN_DELETED, size)});
DELETE FROM user_attribute WHERE user_id IN ({_churned_ids(realm, CHURN_DELETED, size)});
DELETE FROM user_entity WHERE id IN ({_churned_ids(realm, CHURN_DELETED, size)});
COMMIT;
"""


def restore_sql(realm: str, realm_id: str, size: int) -> str:
    """The churned users back as seeded (idempotent: also run on a realm that was never churned)."""
    return f"""
BEGIN;
UPDATE user_entity u SET first_name = 'First' || s.i, email = 'scale-' || s.i || '@example.test',
       email_constraint = 'scale-' || s.i || '@example.test'
FROM generate_series({CHURN_UPDATED}, {size - 1}, 100) AS s(i)
WHERE u.id = md5('{realm}/' || s.i)::uuid::text AND u.first_name <> 'First' || s.i;
UPDATE user_entity SET enabled = true
WHERE id IN ({_churned_ids(realm, CHURN_DISABLED, size)}) AND NOT enabled;
COMMIT;
""" + seed_sql(realm, realm_id, CHURN_DELETED, size, step=100)


async def realm_id_of(postgres: Postgres, realm: str) -> str:
    return await postgres.aquery(f"SELECT id FROM realm WHERE name = '{realm}'")


async def seeded_users(postgres: Postgres, realm_id: str) -> int:
    return int(
        await postgres.aquery(
            f"SELECT count(*) FROM user_entity WHERE realm_id = '{realm_id}' AND username LIKE 'scale-%'"
        )
    )


def realm_name(prefix: str, size: int) -> str:
    return f"{prefix}-{size // 1000}k" if size % 1000 == 0 else f"{prefix}-{size}"


async def grow(env: dict[str, str], postgres: Postgres, realm: str, size: int) -> dict[str, Any]:
    """The realm (created from the export when missing) holding users 0 .. size-1 of the scheme above (a
    realm per size, so that each size can be measured again alone)."""
    kc = seed.admin(env, realm)
    try:
        created_realm = not await seed.realm_exists(kc)
        if created_realm:
            await seed.create_realm(kc)
        realm_id = await realm_id_of(postgres, realm)
        have = await seeded_users(postgres, realm_id)
        if have > size:
            raise SystemExit(f"realm {realm} holds {have} seeded users, more than {size}: delete it first")
        started = time.perf_counter()
        if 0 < have < size:  # a run cut short after its churn: first the churned users back
            await postgres.aquery(restore_sql(realm, realm_id, size), timeout_s=3600)
            have = await seeded_users(postgres, realm_id)
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


_KEPT = ("seconds", "keycloak_requests", "cpu_seconds", "peak_rss_mb", "counts")


def _job(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return run_job(name, spec, timeout_s=4 * 3600)


def _kept(run: dict[str, Any]) -> dict[str, Any]:
    """What the results keep of one run's job output."""
    return {k: run.get(k) for k in _KEPT}


async def reconciler_runs(env: dict[str, str], postgres: Postgres, realm: str, size: int) -> dict[str, Any]:
    """Ours: a cold run that fills the store (skipped when it is full already), a warm run (nothing
    changed), a churn run (1% updated, 1% disabled, 1% deleted, written just before), then the churn undone
    and a settle run that mirrors it back (reported, not a target)."""
    database = f"{realm.replace('-', '_')}_ours"
    spec = {"kind": "reconcile", "impl": "ours", "realm": realm, "database": database, "size": size}
    cold = _job(f"scale-ours-cold-{size}", {**spec, "only_if_unfilled": True, "all_active": False})
    await clear_user_cache(env, realm)  # the cold run read every user: up to 10,000 of them are cached
    warm = _job(f"scale-ours-warm-{size}", spec)
    await postgres.aquery(churn_sql(realm, size), timeout_s=3600)
    await clear_user_cache(env, realm)
    churn = _job(f"scale-ours-churn-{size}", spec)
    await postgres.aquery(restore_sql(realm, await realm_id_of(postgres, realm), size), timeout_s=3600)
    await clear_user_cache(env, realm)
    settle = _job(f"scale-ours-settle-{size}", spec)
    return {
        "impl": "ours",
        "size": size,
        "cold": None if cold.get("skipped") else _kept(cold),
        "warm": _kept(warm),
        "churn": _kept(churn),
        "settle": _kept(settle),
    }


async def reference_runs(env: dict[str, str], realm: str, size: int) -> dict[str, Any]:
    """The port of the seed's algorithm: its store filled in bulk when it is not full (untimed: its own cold
    run costs one round trip per user), then its warm run."""
    database = f"{realm.replace('-', '_')}_ref"
    spec = {"kind": "reconcile", "impl": "ref", "realm": realm, "database": database, "size": size}
    fill = _job(
        f"scale-ref-fill-{size}", {**spec, "only_if_unfilled": True, "all_active": False, "bulk_fill": True}
    )
    await clear_user_cache(env, realm)
    warm = _job(f"scale-ref-warm-{size}", spec)
    return {
        "impl": "ref",
        "size": size,
        "bulk_fill_seconds": None if fill.get("skipped") else round(fill["seconds"], 1),
        "warm": _kept(warm),
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


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's scale targets from what this run measured: our warm and churn runs against the best
    whole listing floor of the form the defaults use, and the seed's algorithm against ours."""
    form = "full" if FORMS["full"] else "brief"
    floors: dict[int, float] = {}
    for item in results["listings"]:
        if item["form"] == form and not item["sampled"]:
            floors[item["size"]] = min(floors.get(item["size"], float("inf")), item["seconds"])
    out: dict[str, Any] = {}
    ours = {run["size"]: run for run in results["reconciler"] if run["impl"] == "ours"}
    for size, run in sorted(ours.items()):
        floor = floors.get(size)
        for case in ("warm", "churn"):
            if run.get(case) and floor:
                out[f"{case} {size} / best {form} floor"] = round(run[case]["seconds"] / floor, 2)
        out[f"warm {size} seconds"] = round(run["warm"]["seconds"], 1)
        out[f"warm {size} peak RSS MB"] = run["warm"]["peak_rss_mb"]
    for run in results["reconciler"]:
        if run["impl"] == "ref" and run["size"] in ours:
            ratio = run["warm"]["seconds"] / ours[run["size"]]["warm"]["seconds"]
            out[f"seed's algorithm / ours, warm {run['size']}"] = round(ratio, 2)
    return out


async def main() -> int:
    configure_logging("WARNING", "json")
    env = stack_env()
    postgres = Postgres.of_stack(env)
    prefix = os.environ.get("BENCH_SCALE_REALM", "bench-scale")
    sizes = sorted(int(v) for v in _list("BENCH_SCALE_SIZES", "10000,100000,1000000"))
    parts = _list("BENCH_SCALE_PARTS", "listings,reconciler")
    forms = _list("BENCH_SCALE_FORMS", "brief,full")
    roads = [Road(v) for v in _list("BENCH_SCALE_ROADS", "windows,offset")]
    samples = int(os.environ.get("BENCH_SCALE_SAMPLES", "20"))
    offset_full_max = int(os.environ.get("BENCH_SCALE_OFFSET_FULL_MAX", "100000"))
    warm_max = int(os.environ.get("BENCH_SCALE_WARM_MAX", "1000000"))
    ref_sizes = {int(v) for v in _list("BENCH_SCALE_REF_SIZES", "100000")}
    version = os.environ.get("STACK_KEYCLOAK_VERSION", "26.7.3")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    continued = os.environ.get("BENCH_SCALE_RESULTS", "")
    out = Path(continued) if continued else RESULTS_DIR / f"scale-{version}-{stamp}.json"
    results: dict[str, Any] = (
        json.loads(out.read_text())
        if continued
        else {
            "started_at": datetime.now(UTC).isoformat(),
            "keycloak_version": version,
            "seeding": [],
            "listings": [],
            "reconciler": [],
        }
    )
    results.setdefault("parts", []).append(
        {"parts": parts, "sizes": sizes, "started_at": datetime.now(UTC).isoformat(), "load": os.getloadavg()}
    )
    listings = [
        Listing(
            i["road"], i["form"], i["size"], i["seconds"], i["listed"], i["keycloak_requests"], i["sampled"]
        )
        for i in results["listings"]
    ]

    def save() -> None:
        """After every step: a run cut short keeps what it measured."""
        results["listings"] = [item.to_dict() for item in listings]
        results["linearity"] = linearity(listings)
        results["targets"] = targets(results)
        results["listing_process_peak_rss_mb"] = round(peak_rss_mb(), 1)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    for size in sizes:
        realm = realm_name(prefix, size)
        database = realm.replace("-", "_") + "_unused"  # the listings write nothing
        grown = await grow(env, postgres, realm, size)
        results["seeding"].append(grown)
        print(f"{size:>9,} users: {grown['inserted']:,} inserted in {grown['seconds']} s", flush=True)
        for form in forms if "listings" in parts else ():
            settings = make_settings(env, realm, database, mirrored_attributes=FORMS[form])
            async with KeycloakAdminClient(settings) as keycloak:
                windows_there = await probe_road(keycloak, await keycloak.count_users()) is Road.WINDOWS
            async with UserStore.from_settings(settings) as store:
                for road in roads:
                    measured: list[Listing] = []
                    if road is Road.WINDOWS and not windows_there:
                        continue
                    if size == sizes[0]:  # Keycloak's first requests after a start run before its JIT
                        await whole_listing(settings, store, road, form, size)  # compiled them: not kept
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
            save()
    # Largest first: its runs take most of the time, and a run cut short has measured them.
    for size in sorted(sizes, reverse=True) if "reconciler" in parts else ():
        realm = realm_name(prefix, size)
        if size <= warm_max:
            await clear_user_cache(env, realm)
            runs = await reconciler_runs(env, postgres, realm, size)
            results["reconciler"].append(runs)
            save()
            cold = f"cold {runs['cold']['seconds']:.1f} s, " if runs["cold"] else ""
            print(
                f"  ours full reconcile {size:,}: {cold}warm {runs['warm']['seconds']:.1f} s"
                f" ({runs['warm']['keycloak_requests']} requests, peak RSS {runs['warm']['peak_rss_mb']} MB),"
                f" churn {runs['churn']['seconds']:.1f} s, settle {runs['settle']['seconds']:.1f} s",
                flush=True,
            )
        if size in ref_sizes:
            await clear_user_cache(env, realm)
            ref = await reference_runs(env, realm, size)
            results["reconciler"].append(ref)
            save()
            print(f"  the seed's algorithm {size:,}: warm {ref['warm']['seconds']:.1f} s", flush=True)
    results["ended_at"] = datetime.now(UTC).isoformat()
    save()
    print(json.dumps({"linearity": results["linearity"], "targets": results["targets"], "results": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
