"""The benchmark suites: full reconcile (ours, the reference, the fetch floor), the event path and replay."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from rich.console import Console

from bench import eventpath, seed
from bench.env import LOGS_DIR, PROFILES_DIR, database_name, realm_name
from bench.runner import Job, run_job
from bench.stats import summarize
from tests.support.keycloak_admin import KeycloakTestAdmin

console = Console(stderr=True)
T = TypeVar("T")
CASES = ("cold", "warm", "churn")
GET_RATE_USERS = 500  # distinct users read by the raw GET rate job (raw, then again through our client)
IMPLS = ("ours", "ref")


@dataclass(frozen=True, slots=True)
class Plan:
    sizes: tuple[int, ...]
    repeats: int  # reconcile repetitions at sizes up to 10,000
    large_repeats: int  # ... above 10,000
    event_repeats: int
    parts: frozenset[str]
    profile: bool
    curve_sizes: tuple[int, ...] = ()  # warm-only points of the plot (ours, the reference, listing floors)
    large_sizes: tuple[int, ...] = ()  # ours warm only (peak RSS at scale), one round
    ref_cold: bool = False  # measure the reference's cold run even when its store is already filled
    ref_churn: bool = (
        False  # also time the reference's churn runs (one round trip per user, then a settle run)
    )

    def repeats_for(self, size: int) -> int:
        return self.repeats if size <= 10_000 else self.large_repeats


def _show(label: str, result: dict[str, Any]) -> None:
    keys = (
        "seconds",
        "sequential_seconds",
        "best_seconds",
        "raw_per_s",
        "client_per_s",
        "docs_per_s",
        "keycloak_requests",
        "store_round_trips",
        "store_user_docs_written",
        "peak_rss_mb",
    )
    shown = ", ".join(
        f"{k}={result[k]:.2f}" if isinstance(result.get(k), float) else f"{k}={result.get(k)}"
        for k in keys
        if k in result
    )
    console.print(f"  {label}: {shown}")


def _with_admin(env: dict[str, str], realm: str, action: Callable[[KeycloakTestAdmin], Awaitable[T]]) -> T:
    async def go() -> T:
        kc = seed.admin(env, realm)
        try:
            return await action(kc)
        finally:
            await kc.aclose()

    return asyncio.run(go())


def _reconcile_spec(size: int, impl: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "reconcile",
        "impl": impl,
        "realm": realm_name(size),
        "database": database_name(size, impl),
        "size": size,
        **extra,
    }


def _floors(size: int, round_no: int, timeout: float, *, gets: bool) -> dict[str, dict[str, Any]]:
    """The listing floors, and with `gets` the raw GET rate and the store's bulk-write floor."""
    realm = realm_name(size)
    out = {
        "listing": run_job(
            f"listing-floors-{size}",
            {"kind": "listing_floors", "realm": realm, "size": size, "round": round_no},
            timeout,
        )
    }
    _show("listing floors", out["listing"])
    if gets:
        count = min(size, GET_RATE_USERS)
        out["get_rate"] = run_job(
            f"get-rate-{size}",
            {"kind": "get_rate", "realm": realm, "count": count, "offset": (round_no * count) % size},
            timeout,
        )
        _show("GET /users/{id} rate", out["get_rate"])
        out["bulk_write"] = run_job(
            f"bulk-write-floor-{size}",
            {
                "kind": "bulk_write_floor",
                "realm": realm,
                "database": database_name(size, "writefloor"),
                "size": size,
            },
            timeout,
        )
        _show("store bulk-write floor", out["bulk_write"])
    return out


def _ensure_filled(size: int, impl: str, timeout: float, force: bool = False) -> dict[str, Any] | None:
    """Fill one implementation's store (a cold run) unless it already holds the whole realm, all active;
    returns the cold run when one was made."""
    result = run_job(
        f"reconcile-{size}-fill-{impl}",
        _reconcile_spec(size, impl, drop=True, only_if_unfilled=not force),
        timeout,
    )
    if result.get("skipped"):
        console.print(f"  {impl} store of {size} already filled: no cold run")
        return None
    _show(f"cold  {impl:4s} (fill)", result)
    return result


def reconcile_suite(env: dict[str, str], size: int, plan: Plan) -> dict[str, Any]:
    """cold / warm / churn for ours and the reference, plus the floors, `repeats_for(size)` times.

    Each round starts ours from an empty store (cold); the reference's store is filled once (its cold run:
    one round trip per user, minutes) and kept between rounds and runs, brought back after each churn by an
    untimed run. Then both sync again without changes (warm); the floors are measured; 3% of the realm
    changes (churn round r: its own users) and both sync; the churned users are restored afterwards. The
    order of ours and the reference alternates between rounds.
    """
    realm = realm_name(size)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {i: [] for i in IMPLS} for c in CASES}
    floors: dict[str, list[dict[str, Any]]] = {"listing": [], "get_rate": [], "bulk_write": []}
    settles: list[dict[str, Any]] = []
    tuned: list[dict[str, Any]] = []
    repeats = plan.repeats_for(size)
    timeout = 300 + size * 0.05

    def measure(case: str, impl: str, round_no: int) -> None:
        spec = _reconcile_spec(size, impl, drop=case == "cold")
        if plan.profile and impl == "ours" and round_no == repeats - 1:
            spec["profile"] = str(PROFILES_DIR / f"reconcile-{size}-{case}-{impl}.prof")
        result = run_job(f"reconcile-{size}-{case}-{impl}", spec, timeout)
        result["profiled"] = "profile" in spec
        runs[case][impl].append(result)
        _show(f"{case:5s} {impl:4s} round {round_no + 1}", result)

    ref_cold = _ensure_filled(size, "ref", 3 * timeout + size * 0.05, force=plan.ref_cold)
    if ref_cold is not None:
        runs["cold"]["ref"].append(ref_cold)
    for round_no in range(repeats):
        console.print(f"[bold]full reconcile, {size} users, round {round_no + 1} of {repeats}[/bold]")
        order = IMPLS if round_no % 2 == 0 else IMPLS[::-1]
        measure("cold", "ours", round_no)
        for impl in order:
            measure("warm", impl, round_no)
        for name, result in _floors(size, round_no, timeout, gets=True).items():
            floors[name].append(result)
        # What would move the warm run: ours again, at the page size x pages in flight of this round's best
        # listing floor (the store is unchanged: still a warm run).
        best = floors["listing"][-1]["best"]
        tuned_spec = _reconcile_spec(size, "ours", page_size=best["page_size"], in_flight=best["in_flight"])
        tuned_result = run_job(f"reconcile-{size}-warm-tuned-ours", tuned_spec, timeout)
        tuned_result |= {"page_size": best["page_size"], "in_flight": best["in_flight"]}
        tuned.append(tuned_result)
        _show(f"warm  ours at {best['page_size']} x {best['in_flight']}", tuned_result)
        _with_admin(env, realm, partial(seed.apply_churn, size=size, round_no=round_no))
        try:
            for impl in order if plan.ref_churn else ("ours",):
                measure("churn", impl, round_no)
        finally:
            _with_admin(env, realm, partial(seed.restore, size=size, rounds=[round_no]))
        if plan.ref_churn:
            settle = run_job(f"reconcile-{size}-settle-ref", _reconcile_spec(size, "ref"), timeout)
            settles.append(settle)
            _show("reference settles after the restore", settle)
    return {
        "size": size,
        "realm": realm,
        "repeats": repeats,
        "floors": {name: {"summary": summarize(rs), "runs": rs} for name, rs in floors.items()},
        "cases": {
            case: {impl: {"summary": summarize(runs[case][impl]), "runs": runs[case][impl]} for impl in IMPLS}
            for case in CASES
        },
        "ref_settle_runs": settles,
        "warm_tuned": {"summary": summarize(tuned), "runs": tuned},
    }


def curve_suite(size: int, plan: Plan, *, with_ref: bool = True) -> dict[str, Any]:
    """One point of the plot: warm runs of ours (and the reference) over filled stores, and the listing
    floors; the stores are filled once and kept (these realms are never churned)."""
    timeout = 300 + size * 0.05
    console.print(f"[bold]full reconcile, {size} users: warm point of the curve[/bold]")
    impls = IMPLS if with_ref else ("ours",)
    cold: dict[str, Any] = {}
    warm: dict[str, Any] = {}
    for impl in impls:
        filled = _ensure_filled(size, impl, 3 * timeout + size * 0.1)
        if filled is not None:
            cold[impl] = filled
        result = run_job(f"reconcile-{size}-warm-{impl}", _reconcile_spec(size, impl), timeout)
        _show(f"warm  {impl:4s}", result)
        warm[impl] = result
    listing = _floors(size, 0, timeout, gets=False)["listing"] if with_ref else None
    return {"size": size, "realm": realm_name(size), "warm": warm, "cold_fill": cold, "listing": listing}


# --- event path ---------------------------------------------------------------------------------------------


async def _events_run(
    env: dict[str, str],
    size: int,
    label: str,
    user_ids: list[str],
    rate: float | None,
    after_commit: bool,
    profile: str | None = None,
    burst_listing: bool | None = None,
) -> dict[str, Any]:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    realm = realm_name(size)
    topics = eventpath.Topics.fresh(label.replace("_", "-"))
    await eventpath.create_topics(bootstrap, topics)
    ready = LOGS_DIR / f"{label}-{uuid.uuid4().hex[:6]}.ready"
    try:
        job = Job(
            f"events-{label}",
            {
                "kind": "events",
                "realm": realm,
                "database": database_name(size, "events"),
                "drifted_size": size,
                "topic": topics.admin_events,
                "dlq": topics.dead_letters,
                "expected": len(user_ids),
                "distinct_users": len(set(user_ids)),
                "timeout_s": 600,
                "ready_file": str(ready),
                **({"profile": profile} if profile else {}),
                **({"burst_listing": burst_listing} if burst_listing is not None else {}),
            },
        )
        # The first run fills the event store (an untimed full reconcile) before it says it is ready.
        await job.wait_for_file(ready, 300 + size * 0.05)
        if rate is None:
            publish_s = await eventpath.publish_burst(
                bootstrap, topics.admin_events, realm, user_ids, after_commit=after_commit
            )
        else:
            publish_s = await eventpath.publish_steady(
                bootstrap, topics.admin_events, realm, user_ids, rate, after_commit=after_commit
            )
        result = await asyncio.to_thread(job.result, 900)
        result["publish_seconds"] = publish_s
        result["after_commit_header"] = after_commit
        return result
    finally:
        ready.unlink(missing_ok=True)
        await eventpath.delete_topics(bootstrap, topics)


@dataclass(frozen=True, slots=True)
class EventScenario:
    user_ids: list[str]
    rate: float | None  # events/s on a fixed schedule; None: as fast as the producer goes
    repeats: int
    after_commit: bool  # records as our listener publishes them (key = user id, `x-published: after-commit`)
    burst_listing: bool | None = None  # EVENT_BURST_LISTING (None: the default, on)


def event_scenarios(size: int, plan: Plan) -> dict[str, EventScenario]:
    realm = realm_name(size)
    distinct = min(5000, size)

    def users(count: int, per_user: int) -> list[str]:
        # `per_user` events per user, interleaved: a user's later events find it queued or being applied.
        return [seed.user_id(realm, i % count) for i in range(count * per_user)]

    return {
        "distinct": EventScenario(users(distinct, 1), None, plan.event_repeats, True),
        # The same burst as a provider that publishes before commit sends it (no header, no key): every
        # update hint also gets the follow-up re-check (a second GET) under EVENT_RECHECK=auto.
        # 2,000 users: each costs two GETs here, and the rate per user is what it shows.
        "distinct_recheck": EventScenario(users(min(2000, distinct), 1), None, 1, False),
        # The same 2,000 users one GET each: the listing road for bursts off (EVENT_BURST_LISTING=false).
        "distinct_get": EventScenario(users(min(2000, distinct), 1), None, 1, True, burst_listing=False),
        "half": EventScenario(users(1000, 2), None, 1, True),
        # 20 events per user: 95% of the events are duplicates of a queued or running user.
        "duplicates": EventScenario(users(1000, 20), None, plan.event_repeats, True),
        "steady": EventScenario(users(1200, 1), 20.0, 1, True),
    }


def events_suite(env: dict[str, str], size: int, plan: Plan) -> dict[str, Any]:
    """Bursts at several shares of distinct users (with and without our listener's header) and a steady
    20 events/s for 60 s, each into a store whose documents all drifted from Keycloak."""
    out: dict[str, Any] = {"realm": realm_name(size), "store": "drifted"}
    # The raw GET rate next to the bursts it bounds (the reconcile suite's is minutes away, if it ran at all).
    count = min(size, GET_RATE_USERS)
    out["get_rate"] = run_job(
        f"get-rate-{size}", {"kind": "get_rate", "realm": realm_name(size), "count": count}, 600
    )
    _show("GET /users/{id} rate", out["get_rate"])
    for name, sc in event_scenarios(size, plan).items():
        runs = []
        for round_no in range(sc.repeats):
            profile = (
                str(PROFILES_DIR / f"events-{name}.prof")
                if plan.profile and name == "distinct" and round_no == sc.repeats - 1
                else None
            )
            result = asyncio.run(
                _events_run(env, size, name, sc.user_ids, sc.rate, sc.after_commit, profile, sc.burst_listing)
            )
            result["profiled"] = profile is not None
            runs.append(result)
            console.print(
                f"  events {name} round {round_no + 1}: {result['events']} events in {result['seconds']:.2f} s"
                f" = {result['events_per_s']:.0f}/s ({result['users_per_s']:.0f} users/s),"
                f" {result['lookups']} lookups, {result['keycloak_requests']} Keycloak requests,"
                f" {result['store_user_docs_written']} docs written, p50/p95/p99 {result['latency_p50_ms']:.0f}/"
                f"{result['latency_p95_ms']:.0f}/{result['latency_p99_ms']:.0f} ms, peak RSS {result['peak_rss_mb']} MB"
            )
        out[name] = {
            "events": len(sc.user_ids),
            "distinct_users": len(set(sc.user_ids)),
            "distinct_share": len(set(sc.user_ids)) / len(sc.user_ids),
            "rate_per_s": sc.rate,
            "after_commit_header": sc.after_commit,
            "burst_listing": sc.burst_listing is not False,
            "summary": summarize(runs),
            "runs": runs,
        }
    return out


# --- replay -------------------------------------------------------------------------------------------------


async def _replay_run(env: dict[str, str], realm: str, database: str, user_ids: list[str]) -> dict[str, Any]:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    topics = eventpath.Topics.fresh("replay")
    await eventpath.create_topics(bootstrap, topics)
    try:
        publish_s = await eventpath.publish_burst(
            bootstrap, topics.admin_events, realm, user_ids, after_commit=True
        )
        spec = {
            "kind": "replay",
            "realm": realm,
            "database": database,
            "topic": topics.admin_events,
            "dlq": topics.dead_letters,
            "reconcile_after": True,  # as `reconciler replay` runs by default
        }
        result = await asyncio.to_thread(run_job, "replay", spec, 1800)
        result["publish_seconds"] = publish_s
        return result
    finally:
        await eventpath.delete_topics(bootstrap, topics)


def replay_suite(env: dict[str, str], size: int, plan: Plan) -> dict[str, Any]:
    """50,000 events over 5,000 users (10 each, interleaved) replayed into an empty store."""
    realm = realm_name(size)
    users = min(5000, size)
    user_ids = [seed.user_id(realm, i % users) for i in range(10 * users)]
    runs = []
    for round_no in range(plan.event_repeats):
        result = asyncio.run(_replay_run(env, realm, database_name(size, "replay"), user_ids))
        runs.append(result)
        console.print(
            f"  replay round {round_no + 1}: {result['events_read']} events, {result['distinct_users']} users,"
            f" {result['keycloak_get_user_requests']} lookups in {result['seconds']:.2f} s"
        )
    return {
        "events": len(user_ids),
        "distinct_users": users,
        "realm_size": size,
        "summary": summarize(runs),
        "runs": runs,
    }
