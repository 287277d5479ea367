"""Machine and version facts, target checks, and the generated results section of BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench.env import ROOT
from bench.stats import median, ratio
from tests.support.keycloak_admin import KeycloakTestAdmin

BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def _server_versions(env: dict[str, str]) -> dict[str, str]:
    versions: dict[str, str] = {}
    kc = KeycloakTestAdmin.from_env(env, "master")
    try:
        info = (await kc.request("GET", "/admin/serverinfo")).json()
        versions["keycloak"] = str(info.get("systemInfo", {}).get("version", "unknown"))
        versions["keycloak_java"] = str(info.get("systemInfo", {}).get("javaVersion", "unknown"))
    finally:
        await kc.aclose()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(env["MONGODB_URI"])
    try:
        build = await client.admin.command("buildInfo")
        versions["store_server"] = f"{build.get('version', 'unknown')} (wire version reported by the server)"
    finally:
        await client.close()
    versions["keycloak_database"] = _keycloak_database(env)
    jars = sorted((ROOT / ".cache" / "kafka").glob("libs-*/kafka_2.13-*.jar"))
    kafka = [j.name.removeprefix("kafka_2.13-").removesuffix(".jar") for j in jars if "-test" not in j.name]
    versions["kafka"] = kafka[0] if kafka else "unknown"
    return versions


def _keycloak_database(env: dict[str, str]) -> str:
    """Which database the stack's Keycloak runs on (`STACK_KEYCLOAK_DB`), with its server version."""
    database = env.get("STACK_KEYCLOAK_DB", "postgres")
    if database != "postgres":
        return "H2 (file, start-dev)" if database == "h2" else database
    for binary in sorted((ROOT / ".cache").glob("pgserver-*/pgserver/pginstall/bin/postgres")):
        try:
            out = subprocess.run(
                [str(binary), "--version"], capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        return f"PostgreSQL {out.split()[-1]}"
    return "PostgreSQL"


def environment(env: dict[str, str]) -> dict[str, Any]:
    packages = {}
    for name in ("pymongo", "aiokafka", "httpx", "secantusdb", "pydantic", "prometheus-client"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": env.get("STACK_KEYCLOAK_DB", "postgres"),
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "memory_gib": _memory_gib(),
            "os": f"{platform.system()} {platform.release()}",
            "load_average_at_start": os.getloadavg(),
        },
        "versions": {
            "python": platform.python_version(),
            **asyncio.run(_server_versions(env)),
            **packages,
            "reconciler_commit": _git("rev-parse", "--short", "HEAD"),
        },
    }


# --- targets --------------------------------------------------------------------------------------------------


def _case(results: dict[str, Any], size: int, case: str, impl: str) -> dict[str, Any] | None:
    suite = results.get("reconcile", {}).get(str(size))
    if not suite:
        return None
    summary: dict[str, Any] = suite["cases"][case][impl]["summary"]
    return summary


def listing_combos(listing_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per page size x pages in flight: the median listing time over the rounds."""
    by_combo: dict[tuple[int, int], list[float]] = {}
    for run in listing_runs:
        for row in run["combos"]:
            by_combo.setdefault((row["page_size"], row["in_flight"]), []).append(float(row["seconds"]))
    return [
        {"page_size": p, "in_flight": d, "seconds": statistics.median(v), "runs": len(v)}
        for (p, d), v in sorted(by_combo.items())
    ]


def floors(listing_runs: list[dict[str, Any]], page_size: int = 100) -> dict[str, Any] | None:
    """The sequential listing floor (pages of `page_size`, one at a time) and the best one (the fastest
    combination tried), each the median over the rounds."""
    combos = listing_combos(listing_runs)
    if not combos:
        return None
    sequential = next((c for c in combos if c["page_size"] == page_size and c["in_flight"] == 1), None)
    best = min(combos, key=lambda c: float(c["seconds"]))
    return {
        "sequential_s": sequential["seconds"] if sequential else None,
        "best_s": best["seconds"],
        "best": f"{best['page_size']} x {best['in_flight']}",
        "combos": combos,
    }


def main_size(results: dict[str, Any]) -> int | None:
    sizes = sorted(int(s) for s in results.get("reconcile", {}))
    return 10_000 if 10_000 in sizes else (sizes[0] if sizes else None)


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """The main size's medians and every result as a ratio to the floors of the same run."""
    size = main_size(results)
    if size is None:
        return {}
    suite = results["reconcile"][str(size)]
    fl = floors(suite["floors"]["listing"]["runs"]) or {}
    get_rate = median(suite["floors"]["get_rate"]["summary"], "raw_per_s")
    client_rate = median(suite["floors"]["get_rate"]["summary"], "client_per_s")
    write_floor = median(suite["floors"]["bulk_write"]["summary"], "seconds")
    out: dict[str, Any] = {
        "size": size,
        "listing_sequential_s": fl.get("sequential_s"),
        "listing_best_s": fl.get("best_s"),
        "listing_best": fl.get("best"),
        "get_raw_per_s": get_rate,
        "get_client_per_s": client_rate,
        "bulk_write_floor_s": write_floor,
        "cases": {},
    }
    for case in CASES:
        for impl in ("ours", "ref"):
            summary = _case(results, size, case, impl) or {}
            secs = median(summary, "seconds")
            out["cases"][f"{case}/{impl}"] = {
                "seconds": secs,
                "vs_sequential_floor": ratio(secs, fl.get("sequential_s")),
                "vs_best_floor": ratio(secs, fl.get("best_s")),
                "vs_bulk_write_floor": ratio(secs, write_floor) if case == "cold" else None,
            }
    return out


CASES = ("cold", "warm", "churn")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 15's targets with the measured value and whether each is met (None: not measured in this run)."""
    checks: list[dict[str, Any]] = []

    def add(name: str, measured: str, met: bool | None) -> None:
        checks.append({"target": name, "measured": measured, "met": met})

    r = ratios(results)
    size = r.get("size")
    if size:
        cases = r["cases"]
        best, write_floor = r["listing_best_s"], r["bulk_write_floor_s"]
        warm, ref_warm = cases["warm/ours"]["seconds"], cases["warm/ref"]["seconds"]
        to_best = cases["warm/ours"]["vs_best_floor"]
        tuned = median(results["reconcile"][str(size)].get("warm_tuned", {}).get("summary", {}), "seconds")
        add(
            f"warm full reconcile of {size:,} users <= 1.5x the best listing floor",
            f"{_s(warm)} vs {_s(best)} ({r['listing_best']}): {_x(to_best)} (defaults; at the best floor's"
            f" page size x in flight: {_x(ratio(tuned, best))})",
            None if to_best is None else to_best <= 1.5,
        )
        speedup = ratio(ref_warm, warm)
        add(
            f"warm {size:,}: >= 8x faster than the port of the seed's algorithm",
            f"{_s(ref_warm)} vs {_s(warm)}: {_x(speedup)}",
            None if speedup is None else speedup >= 8,
        )
        ours = _case(results, size, "warm", "ours") or {}
        writes, write_cmds = (
            median(ours, "store_user_docs_written"),
            ours.get("store_user_write_commands", {}).get("max"),
        )
        add(
            f"warm {size:,}: zero writes",
            "not measured"
            if writes is None or write_cmds is None
            else f"{writes:.0f} user documents written, {write_cmds:.0f} user write commands (max)",
            None if writes is None or write_cmds is None else writes == 0 and write_cmds == 0,
        )
        churn_to_best = cases["churn/ours"]["vs_best_floor"]
        add(
            f"churn {size:,} (1% updated, 1% disabled, 1% deleted) <= 2x the best listing floor",
            f"{_s(cases['churn/ours']['seconds'])}: {_x(churn_to_best)}",
            None if churn_to_best is None else churn_to_best <= 2,
        )
        cold = cases["cold/ours"]["seconds"]
        bound = None if best is None or write_floor is None else best + write_floor
        add(
            f"cold {size:,} bounded by the store's bulk-write floor (here: <= bulk-write floor + best listing"
            " floor)",
            f"{_s(cold)} vs bulk-write floor {_s(write_floor)} ({_x(ratio(cold, write_floor))}),"
            f" bound {_s(bound)} ({_x(ratio(cold, bound))})",
            None if cold is None or bound is None else cold <= bound,
        )
    large = {
        int(k): v
        for k, v in results.get("curve", {}).items()
        if int(k) > (size or 0) and v["warm"].get("ours")
    }
    ours_warm = _case(results, size, "warm", "ours") if size else None
    peak_small = median(ours_warm or {}, "peak_rss_mb")
    if large and peak_small is not None:
        big = max(large)
        peak_big = float(large[big]["warm"]["ours"]["peak_rss_mb"])
        growth = peak_big - peak_small
        add(
            f"reconcile peak RSS grows < 30 MB from {size:,} to {big:,} users (warm runs)",
            f"{peak_small:.1f} -> {peak_big:.1f} MB (+{growth:.1f} MB)",
            growth < 30,
        )
    else:
        add(
            "reconcile peak RSS grows < 30 MB from 10,000 to 50,000 users",
            "not run (BENCH_LARGE_SIZES=50000)",
            None,
        )
    events = results.get("events")
    if events:
        d = events["distinct"]
        distinct = median(d["summary"], "users_per_s")
        written = median(d["summary"], "store_user_docs_written")
        update_floor = median(d["summary"], "store_update_floor_per_s")
        floor_text = (
            f"; the store's own update floor in the same job: {update_floor:.0f} documents/s"
            f" ({_pct(ratio(distinct, update_floor))} of it)"
            if update_floor
            else ""
        )
        add(
            f"{d['events']:,} events for {d['distinct_users']:,} distinct users (drifted documents) >= 1,500 users/s",
            f"{distinct:.0f} users/s, {written:.0f} documents written{floor_text}" if distinct else "n/a",
            None if distinct is None else distinct >= 1500,
        )
        get_rate = event_get_rate(results)
        to_get = ratio(distinct, get_rate)
        add(
            "distinct-user hints applied >= 80% of the raw GET /users/{id} rate (same concurrency)",
            f"{_n(distinct)} users/s vs {_n(get_rate)} GET/s at {_concurrency(results)} in flight: {_pct(to_get)}",
            None if to_get is None else to_get >= 0.8,
        )
        dup = median(events["duplicates"]["summary"], "events_per_s")
        dup_ratio = ratio(dup, median(d["summary"], "events_per_s"))
        add(
            "95% duplicates: events/s >= 5x the distinct rate",
            f"{dup:.0f} events/s ({_x(dup_ratio)})" if dup else "n/a",
            None if dup_ratio is None else dup_ratio >= 5,
        )
        p99 = median(events["steady"]["summary"], "latency_p99_ms")
        add(
            "p99 event-to-store <= 250 ms at 20 events/s",
            f"{p99:.0f} ms" if p99 is not None else "n/a",
            None if p99 is None else p99 <= 250,
        )
    replay = results.get("replay")
    if replay:
        requests = median(replay["summary"], "keycloak_requests")
        pages = -(-int(replay.get("realm_size", 10_000)) // 100)
        allowed = min(replay["distinct_users"], pages) + HANDFUL
        add(
            f"replay Keycloak requests <= min(distinct users, pages of the realm) + {HANDFUL}",
            f"{_n(requests)} requests for {replay['distinct_users']:,} users, {replay['events']:,} events"
            f" (allowed {allowed}: {pages} pages)",
            None if requests is None else requests <= allowed,
        )
    return checks


HANDFUL = 5


def event_get_rate(results: dict[str, Any]) -> float | None:
    """The raw GET rate the event suite measured just before its bursts, else the reconcile suite's."""
    measured = results.get("events", {}).get("get_rate")
    if measured:
        return float(measured["raw_per_s"])
    value = ratios(results).get("get_raw_per_s")
    return None if value is None else float(value)


def _concurrency(results: dict[str, Any]) -> str:
    measured = results.get("events", {}).get("get_rate")
    if measured:
        return str(measured["concurrency"])
    size = main_size(results)
    runs = results["reconcile"][str(size)]["floors"]["get_rate"]["runs"] if size else []
    return str(runs[0]["concurrency"]) if runs else "?"


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _n(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


# --- markdown -----------------------------------------------------------------------------------------------------


def _m(summary: dict[str, Any], key: str, fmt: str = "{:.0f}") -> str:
    entry = summary.get(key)
    if not isinstance(entry, dict):
        return "-"
    mid, low, high = (fmt.format(entry[k]) for k in ("median", "min", "max"))
    return mid if low == high or summary.get("runs", 1) == 1 else f"{mid} ({low}-{high})"


def _versions_line(results: dict[str, Any]) -> str:
    meta = results["environment"]
    v = meta["versions"]
    database = v.get("keycloak_database", "dev H2 database")
    return (
        f"- **Versions**: Keycloak {v['keycloak']} on **{database}** (Java {v['keycloak_java']}), Kafka {v['kafka']},"
        f" SecantusDB {v['secantusdb']} (server reports {v['store_server']}), Python {v['python']}, pymongo"
        f" {v['pymongo']}, aiokafka {v['aiokafka']}, httpx {v['httpx']}; reconciler at `{v['reconciler_commit']}`"
    )


def _reconcile_section(results: dict[str, Any], size: str, suite: dict[str, Any]) -> list[str]:
    fl = floors(suite["floors"]["listing"]["runs"]) or {}
    get_rate = suite["floors"]["get_rate"]["summary"]
    write = suite["floors"]["bulk_write"]["summary"]
    lines = [
        f"### Full reconcile, {int(size):,} users ({suite['repeats']} rounds; median (min-max))",
        "",
        "Floors, measured in the same run (each a median over the rounds):",
        "",
        f"- **sequential listing floor** (pages of 100, one at a time, fetched and decoded, nothing applied):"
        f" **{_s(fl.get('sequential_s'))}**",
        f"- **best listing floor** (the fastest page size x pages in flight tried: {fl.get('best')}):"
        f" **{_s(fl.get('best_s'))}**; all combinations: "
        + ", ".join(
            f"{c['page_size']} x {c['in_flight']} {c['seconds']:.2f} s" for c in fl.get("combos", [])
        ),
        f"- **raw GET /users/{{id}} rate** (bare httpx, {_concurrency(results)} in flight):"
        f" **{_m(get_rate, 'raw_per_s')}/s**; through the reconciler's client: {_m(get_rate, 'client_per_s')}/s",
        f"- **store bulk-write floor** ({int(size):,} documents, unordered insert_many of"
        f" {suite['floors']['bulk_write']['runs'][0]['batch'] if suite['floors']['bulk_write']['runs'] else '?'},"
        f" same indexes): **{_m(write, 'seconds', '{:.2f}')} s** ({_m(write, 'docs_per_s')} documents/s)",
        "",
        "| case | impl | wall s | vs seed's algorithm | vs sequential floor | vs best floor | vs bulk-write floor"
        " | Keycloak req. | store round trips | user docs written | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    write_s = median(write, "seconds")
    for case in CASES:
        ref = suite["cases"][case]["ref"]["summary"]
        for impl in ("ours", "ref"):
            s = suite["cases"][case][impl]["summary"]
            secs = median(s, "seconds")
            if secs is None:
                knob = (
                    "BENCH_REF_COLD=1: its store is kept between runs"
                    if case == "cold"
                    else "BENCH_REF_CHURN=1"
                )
                note = f" ({knob})" if impl == "ref" else ""
                lines.append(
                    f"| {case} | {'reconciler' if impl == 'ours' else 'seed algorithm'} | not run{note} |"
                    + " |" * 8
                )
                continue
            speed = ratio(median(ref, "seconds"), secs) if impl == "ours" else None
            lines.append(
                f"| {case} | {'reconciler' if impl == 'ours' else 'seed algorithm'} | {_m(s, 'seconds', '{:.2f}')} |"
                f" {_x(speed) if speed else ''} | {_x(ratio(secs, fl.get('sequential_s')))} |"
                f" {_x(ratio(secs, fl.get('best_s')))} | {_x(ratio(secs, write_s)) if case == 'cold' else ''} |"
                f" {_m(s, 'keycloak_requests')} | {_m(s, 'store_round_trips')} | {_m(s, 'store_user_docs_written')} |"
                f" {_m(s, 'peak_rss_mb', '{:.1f}')} |"
            )
    tuned = suite.get("warm_tuned", {})
    if tuned.get("runs"):
        t = tuned["summary"]
        combos = ", ".join(sorted({f"{r['page_size']} x {r['in_flight']}" for r in tuned["runs"]}))
        secs = median(t, "seconds")
        lines += [
            "",
            f"The reconciler warm again at the best floor's page size x pages in flight ({combos}; `KEYCLOAK_PAGE_SIZE`,"
            f" `KEYCLOAK_LIST_CONCURRENCY`): **{_m(t, 'seconds', '{:.2f}')} s**, {_x(ratio(secs, fl.get('best_s')))}"
            f" the best floor, {_m(t, 'keycloak_requests')} Keycloak requests, {_m(t, 'store_user_docs_written')}"
            f" documents written, peak RSS {_m(t, 'peak_rss_mb', '{:.1f}')} MB.",
        ]
    return [*lines, "", *_reconcile_cpu_lines(suite)]


def _reconcile_cpu_lines(suite: dict[str, Any]) -> list[str]:
    """CPU seconds per process in each case's last round: which server the 2 cores went to."""
    rows = []
    for case in CASES:
        for impl in ("ours", "ref"):
            runs = suite["cases"][case][impl].get("runs") or []
            if runs:
                rows.append(((case, "reconciler" if impl == "ours" else "seed algorithm"), runs[-1]))
    return _cpu_table(
        "CPU seconds per process during each timed run (last round; `reconciler` is the measured process):",
        ("case", "impl"),
        "reconciler",
        rows,
    )


# The stack's servers as `bench.cpu` names them, with their column headings; the measured process comes last.
_CPU_COLUMNS = (
    ("secantusdb", "SecantusDB"),
    ("keycloak", "Keycloak"),
    ("postgres", "PostgreSQL"),
    ("kafka", "Kafka"),
)


def _cpu_table(
    intro: str, labels: tuple[str, ...], measured: str, rows: Sequence[tuple[tuple[str, ...], dict[str, Any]]]
) -> list[str]:
    """A table of the CPU seconds per process of some runs (`rows`: their label cells and the run); runs
    without CPU seconds are left out, and no table at all when none has them."""
    keys = (*(key for key, _ in _CPU_COLUMNS), "bench_process")
    lines = []
    for cells, run in rows:
        cpu = run.get("cpu_seconds")
        if cpu:
            values = [f"{cpu[key]:.1f}" if key in cpu else "n/a" for key in keys]
            lines.append("| " + " | ".join([*cells, f"{run['seconds']:.1f}", *values]) + " |")
    if not lines:
        return []
    header = [*labels, "wall s", *(heading for _, heading in _CPU_COLUMNS), measured]
    rule = "|" + "---|" * len(labels) + "---:|" * (len(header) - len(labels))
    return [intro, "", "| " + " | ".join(header) + " |", rule, *lines, ""]


def _curve_section(results: dict[str, Any]) -> list[str]:
    points = curve_points(results)
    if not points:
        return []
    lines = [
        "### Warm full reconcile against realm size (the plot's numbers; one round per extra size)",
        "",
        "| users | reconciler s | seed algorithm s | sequential floor s | best floor s | reconciler vs best floor"
        " | seed vs reconciler | reconciler peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p['size']:,} | {_f(p['ours'])} | {_f(p['ref'])} | {_f(p['sequential'])} | {_f(p['best'])} |"
            f" {_x(ratio(p['ours'], p['best']))} | {_x(ratio(p['ref'], p['ours']))} | {_f(p['ours_rss'], 1)} |"
        )
    return [*lines, ""]


def curve_points(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Warm times per realm size: ours, the seed's algorithm and both listing floors (medians)."""
    points = []
    for size, suite in results.get("reconcile", {}).items():
        fl = floors(suite["floors"]["listing"]["runs"]) or {}
        ours, ref = suite["cases"]["warm"]["ours"]["summary"], suite["cases"]["warm"]["ref"]["summary"]
        points.append(
            {
                "size": int(size),
                "ours": median(ours, "seconds"),
                "ref": median(ref, "seconds"),
                "sequential": fl.get("sequential_s"),
                "best": fl.get("best_s"),
                "ours_rss": median(ours, "peak_rss_mb"),
            }
        )
    for size, point in results.get("curve", {}).items():
        fl = (floors([point["listing"]]) or {}) if point.get("listing") else {}
        warm = point["warm"]
        points.append(
            {
                "size": int(size),
                "ours": warm["ours"]["seconds"] if "ours" in warm else None,
                "ref": warm["ref"]["seconds"] if "ref" in warm else None,
                "sequential": fl.get("sequential_s"),
                "best": fl.get("best_s"),
                "ours_rss": warm["ours"]["peak_rss_mb"] if "ours" in warm else None,
            }
        )
    return sorted(points, key=lambda p: int(p["size"]))


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


EVENT_ORDER = ("distinct", "distinct_get", "distinct_recheck", "half", "duplicates", "steady")


def _events_section(results: dict[str, Any]) -> list[str]:
    events = results.get("events")
    if not events:
        return []
    get_rate = event_get_rate(results)
    measured = events.get("get_rate") or {}
    lines = [
        "### Event path (consumer in its own process, lookups in the real Keycloak, every document drifted first;"
        " median (min-max))",
        "",
        "Records as the project's listener publishes them (key = user id, header `x-published: after-commit`: no re-check"
        " under the default EVENT_RECHECK=auto), except `distinct_recheck`: the same burst with neither key nor"
        " header, as a provider that publishes before commit sends it (every update hint gets a second GET)."
        f" Raw GET /users/{{id}} rate measured just before the bursts ({_concurrency(results)} in flight): {_n(get_rate)}/s"
        f" (through the reconciler's client: {_n(measured.get('client_per_s'))}/s).",
        "",
        "| scenario | header | burst listing | events | users | distinct share | events/s | users/s | users/s vs raw GET |"
        " Keycloak req. | docs written | p50 ms | p95 ms | p99 ms | store round trips | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in EVENT_ORDER:
        if name not in events:
            continue
        e = events[name]
        s = e["summary"]
        label = name if e["rate_per_s"] is None else f"{name} ({e['rate_per_s']:.0f}/s)"
        share = e.get("distinct_share", e["distinct_users"] / e["events"])
        lines.append(
            f"| {label} | {'yes' if e.get('after_commit_header') else 'no'} | {'on' if e.get('burst_listing', True) else 'off'} |"
            f" {e['events']} | {e['distinct_users']} |"
            f" {100 * share:.0f}% | {_m(s, 'events_per_s')} | {_m(s, 'users_per_s')} |"
            f" {_pct(ratio(median(s, 'users_per_s'), get_rate))} | {_m(s, 'keycloak_requests')} |"
            f" {_m(s, 'store_user_docs_written')} | {_m(s, 'latency_p50_ms')} | {_m(s, 'latency_p95_ms')} |"
            f" {_m(s, 'latency_p99_ms')} | {_m(s, 'store_round_trips')} | {_m(s, 'peak_rss_mb', '{:.1f}')} |"
        )
    return [*lines, "", *_cpu_lines(events)]


def _cpu_lines(events: dict[str, Any]) -> list[str]:
    """CPU seconds per process in each scenario's last run: which server the 2 cores went to."""
    rows = [((name,), events[name]["runs"][-1]) for name in EVENT_ORDER if events.get(name, {}).get("runs")]
    return _cpu_table(
        "CPU seconds per process while each scenario ran (last run; from the consumer's readiness to the last"
        " hint, so a little longer than the wall time in the table above; `bench_process` is the consumer's"
        " own process):",
        ("scenario",),
        "consumer",
        rows,
    )


def render(results: dict[str, Any], json_name: str) -> str:
    meta = results["environment"]
    machine = meta["machine"]
    plan = results["plan"]
    lines = [
        START,
        "",
        f"Generated by `{'python -m bench.assemble' if 'assembled_from' in results else 'make bench'}` on"
        f" {meta['date']} (raw numbers: `bench/results/{json_name}`)."
        f" **Keycloak database: {meta['versions'].get('keycloak_database', meta.get('database'))}.**",
        "",
        f"- **Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']};"
        f" load average at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}, at end"
        f" {', '.join(f'{x:.2f}' for x in machine.get('load_average_at_end', ()))}",
        _versions_line(results),
        *(
            [
                "- **Assembled** (`python -m bench.assemble`) from "
                + "; ".join(results["assembled_from"].get("commits", []) or ["the per-job logs"])
                + " (the reconciler commit each part ran on); the run time below is the sum of the parts"
            ]
            if "assembled_from" in results
            else []
        ),
        f"- **Plan**: sizes {plan['sizes']}, curve sizes {plan.get('curve_sizes', [])}, large sizes"
        f" {plan.get('large_sizes', [])}, reconcile rounds {plan['repeats']}, event/replay rounds"
        f" {plan['event_repeats']}; whole run {results['total_seconds'] / 60:.1f} min",
    ]
    profiled = [
        f"{size} {case}"
        for size, suite in results.get("reconcile", {}).items()
        for case, impls in suite["cases"].items()
        if any(r.get("profiled") for r in impls["ours"]["runs"])
    ]
    if profiled:
        lines.append(f"- **Profiled** (cProfile slows the measured process): {', '.join(profiled)}")
    if results.get("plots"):
        lines.append("- **Plots**: " + ", ".join(f"`{p}`" for p in results["plots"]))
    lines.append("")
    lines += ["### Targets", "", "| target | measured | met? |", "|---|---|---|"]
    for check in results["targets"]:
        met = {True: "**yes**", False: "**no**", None: "not measured"}[check["met"]]
        lines.append(f"| {check['target']} | {check['measured']} | {met} |")
    lines.append("")
    if results.get("seeding"):
        lines += [
            "### Seeding",
            "",
            "| realm | users | created now | imported now | seconds |",
            "|---|---:|---|---:|---:|",
        ]
        for s in results["seeding"]:
            lines.append(
                f"| {s['realm']} | {s['size']} | {s['created_realm']} | {s['users_imported']} | {s['seconds']} |"
            )
        lines.append("")
    for size, suite in sorted(results.get("reconcile", {}).items(), key=lambda kv: int(kv[0])):
        lines += _reconcile_section(results, size, suite)
    lines += _curve_section(results)
    lines += _events_section(results)
    replay = results.get("replay")
    if replay:
        s = replay["summary"]
        lines += [
            "### Replay (one topic, into an empty store, with its full reconcile as `reconciler replay` runs by default)",
            "",
            "| events | distinct users | wall s | Keycloak requests | GET /users/{id} | one lookup per event would be |"
            " store round trips | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {replay['events']} | {replay['distinct_users']} | {_m(s, 'seconds', '{:.2f}')} |"
            f" {_m(s, 'keycloak_requests')} | {_m(s, 'keycloak_get_user_requests')} | {replay['events']} lookups |"
            f" {_m(s, 'store_round_trips')} | {_m(s, 'peak_rss_mb', '{:.1f}')} |",
            "",
        ]
    lines += [END]
    return "\n".join(lines)


def update_benchmarks_md(section: str) -> None:
    """Replace the generated section of BENCHMARKS.md (or append it); the hand-written text stays."""
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n## Latest results\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)
