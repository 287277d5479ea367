"""The benchmark suites: full reconcile (ours, the reference, the fetch floor), the event path and replay."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from bench import eventpath, seed
from bench.env import LOGS_DIR, PROFILES_DIR, database_name, realm_name
from bench.runner import Job, run_job
from bench.stats import summarize
from tests.support.keycloak_admin import KeycloakTestAdmin

console = Console(stderr=True)
CASES = ("cold", "warm", "churn")
IMPLS = ("ours", "ref")


@dataclass(frozen=True, slots=True)
class Plan:
    sizes: tuple[int, ...]
    repeats: int  # reconcile repetitions at sizes up to 10,000
    large_repeats: int  # ... above 10,000
    event_repeats: int
    parts: frozenset[str]
    profile: bool

    def repeats_for(self, size: int) -> int:
        return self.repeats if size <= 10_000 else self.large_repeats


def _show(label: str, result: dict[str, Any]) -> None:
    keys = ("seconds", "keycloak_requests", "store_round_trips", "store_user_docs_written", "peak_rss_mb")
    shown = ", ".join(
        f"{k}={result[k]:.2f}" if isinstance(result.get(k), float) else f"{k}={result.get(k)}"
        for k in keys
        if k in result
    )
    console.print(f"  {label}: {shown}")


def _with_admin(env: dict[str, str], realm: str, action: Callable[[KeycloakTestAdmin], Any]) -> Any:
    async def go() -> Any:
        kc = seed.admin(env, realm)
        try:
            return await action(kc)
        finally:
            await kc.aclose()

    return asyncio.run(go())


def reconcile_suite(env: dict[str, str], size: int, plan: Plan) -> dict[str, Any]:
    """cold / warm / churn for ours and the reference, plus the fetch floor, `repeats_for(size)` times.

    Each round starts from empty stores (cold), syncs again without changes (warm), then changes 3% of the
    realm (churn round r: its own users) and syncs; the churned users are restored afterwards. The order of
    ours and the reference alternates between rounds.
    """
    realm = realm_name(size)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {i: [] for i in IMPLS} for c in CASES}
    floors: list[dict[str, Any]] = []
    repeats = plan.repeats_for(size)
    timeout = 120 + size * 0.05

    def measure(case: str, impl: str, round_no: int) -> None:
        spec: dict[str, Any] = {
            "kind": "reconcile",
            "impl": impl,
            "realm": realm,
            "database": database_name(size, impl),
            "drop": case == "cold",
        }
        if plan.profile and impl == "ours" and round_no == repeats - 1:
            spec["profile"] = str(PROFILES_DIR / f"reconcile-{size}-{case}-{impl}.prof")
        result = run_job(f"reconcile-{size}-{case}-{impl}", spec, timeout)
        runs[case][impl].append(result)
        _show(f"{case:5s} {impl:4s} round {round_no + 1}", result)

    for round_no in range(repeats):
        console.print(f"[bold]full reconcile, {size} users, round {round_no + 1} of {repeats}[/bold]")
        order = IMPLS if round_no % 2 == 0 else IMPLS[::-1]
        for case in ("cold", "warm"):
            for impl in order:
                measure(case, impl, round_no)
        floor = run_job(f"floor-{size}", {"kind": "floor", "realm": realm}, timeout)
        floors.append(floor)
        _show("fetch floor", floor)
        _with_admin(env, realm, lambda kc, r=round_no: seed.apply_churn(kc, size, r))
        try:
            for impl in order:
                measure("churn", impl, round_no)
        finally:
            _with_admin(env, realm, lambda kc, r=round_no: seed.restore(kc, size, [r]))
    return {
        "size": size,
        "realm": realm,
        "repeats": repeats,
        "floor": {"summary": summarize(floors), "runs": floors},
        "cases": {
            case: {impl: {"summary": summarize(runs[case][impl]), "runs": runs[case][impl]} for impl in IMPLS}
            for case in CASES
        },
    }


# --- event path ---------------------------------------------------------------------------------------------


async def _events_run(
    env: dict[str, str], realm: str, database: str, label: str, user_ids: list[str], rate: float | None
) -> dict[str, Any]:
    bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
    topics = eventpath.Topics.fresh(label)
    await eventpath.create_topics(bootstrap, topics)
    ready = LOGS_DIR / f"{label}-{uuid.uuid4().hex[:6]}.ready"
    try:
        job = Job(
            f"events-{label}",
            {
                "kind": "events",
                "realm": realm,
                "database": database,
                "topic": topics.admin_events,
                "dlq": topics.dead_letters,
                "expected": len(user_ids),
                "timeout_s": 600,
                "ready_file": str(ready),
            },
        )
        await job.wait_for_file(ready, 120)
        if rate is None:
            publish_s = await eventpath.publish_burst(bootstrap, topics.admin_events, realm, user_ids)
        else:
            publish_s = await eventpath.publish_steady(bootstrap, topics.admin_events, realm, user_ids, rate)
        result = await asyncio.to_thread(job.result, 900)
        result["publish_seconds"] = publish_s
        result["distinct_users"] = len(set(user_ids))
        return result
    finally:
        ready.unlink(missing_ok=True)
        await eventpath.delete_topics(bootstrap, topics)


def events_suite(env: dict[str, str], size: int, plan: Plan) -> dict[str, Any]:
    """Bursts of distinct-user and duplicate-heavy events, and a steady 20 events/s for 60 s."""
    realm = realm_name(size)
    database = database_name(size, "events")
    distinct = min(5000, size)
    scenarios: dict[str, tuple[list[str], float | None, int]] = {
        "distinct": ([seed.user_id(realm, i) for i in range(distinct)], None, plan.event_repeats),
        # 20 events per user, interleaved: 95% of the events are duplicates of a queued or running user.
        "duplicates": ([seed.user_id(realm, i % 1000) for i in range(20_000)], None, plan.event_repeats),
        "steady": ([seed.user_id(realm, i) for i in range(1200)], 20.0, 1),
    }
    out: dict[str, Any] = {"realm": realm}
    for name, (user_ids, rate, repeats) in scenarios.items():
        runs = []
        for round_no in range(repeats):
            result = asyncio.run(_events_run(env, realm, database, name, user_ids, rate))
            runs.append(result)
            console.print(
                f"  events {name} round {round_no + 1}: {result['events']} events in {result['seconds']:.2f} s"
                f" = {result['events_per_s']:.0f}/s, {result['lookups']} lookups,"
                f" p50/p95/p99 {result['latency_p50_ms']:.0f}/{result['latency_p95_ms']:.0f}/"
                f"{result['latency_p99_ms']:.0f} ms, peak RSS {result['peak_rss_mb']} MB"
            )
        out[name] = {
            "events": len(user_ids),
            "distinct_users": len(set(user_ids)),
            "rate_per_s": rate,
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
        publish_s = await eventpath.publish_burst(bootstrap, topics.admin_events, realm, user_ids)
        spec = {
            "kind": "replay",
            "realm": realm,
            "database": database,
            "topic": topics.admin_events,
            "dlq": topics.dead_letters,
        }
        result = await asyncio.to_thread(run_job, "replay", spec, 900)
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
    return {"events": len(user_ids), "distinct_users": users, "summary": summarize(runs), "runs": runs}
