"""Machine and version facts, target checks, and the generated results section of BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
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
    jars = sorted((ROOT / ".cache" / "kafka").glob("libs-*/kafka_2.13-*.jar"))
    kafka = [j.name.removeprefix("kafka_2.13-").removesuffix(".jar") for j in jars if "-test" not in j.name]
    versions["kafka"] = kafka[0] if kafka else "unknown"
    return versions


def environment(env: dict[str, str]) -> dict[str, Any]:
    packages = {}
    for name in ("pymongo", "aiokafka", "httpx", "secantusdb", "pydantic", "prometheus-client"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
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


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (None: not measured in this run)."""
    checks: list[dict[str, Any]] = []

    def add(name: str, measured: str, met: bool | None) -> None:
        checks.append({"target": name, "measured": measured, "met": met})

    sizes = sorted(int(s) for s in results.get("reconcile", {}))
    for size in sizes:
        floor = results["reconcile"][str(size)]["floor"]["summary"]
        ours, ref = _case(results, size, "warm", "ours"), _case(results, size, "warm", "ref")
        assert ours is not None and ref is not None
        speedup = ratio(median(ref, "seconds"), median(ours, "seconds"))
        to_floor = ratio(median(ours, "seconds"), median(floor, "seconds"))
        writes = median(ours, "store_user_docs_written")
        write_cmds = ours.get("store_user_write_commands", {}).get("max")
        add(
            f"warm {size}: >= 3x faster than the reference",
            _x(speedup),
            None if speedup is None else speedup >= 3,
        )
        add(
            f"warm {size}: <= 1.3x the fetch floor",
            _x(to_floor),
            None if to_floor is None else to_floor <= 1.3,
        )
        if writes is None or write_cmds is None:
            add(f"warm {size}: zero store writes", "not measured", None)
        else:
            add(
                f"warm {size}: zero store writes",
                f"{writes:.0f} user documents written, {write_cmds:.0f} user write commands (max)",
                writes == 0 and write_cmds == 0,
            )
        for case in ("cold", "churn"):
            o, r = _case(results, size, case, "ours"), _case(results, size, case, "ref")
            assert o is not None and r is not None
            s = ratio(median(r, "seconds"), median(o, "seconds"))
            add(f"{case} {size}: >= 3x faster than the reference", _x(s), None if s is None else s >= 3)
    if 10_000 in sizes and 50_000 in sizes and _peak_rss(results, 10_000) and _peak_rss(results, 50_000):
        peaks = {size: _peak_rss(results, size) or 0.0 for size in (10_000, 50_000)}
        growth = peaks[50_000] - peaks[10_000]
        add(
            "reconcile peak RSS grows < 30 MB from 10,000 to 50,000 users",
            f"{peaks[10_000]:.1f} -> {peaks[50_000]:.1f} MB (+{growth:.1f} MB)",
            growth < 30,
        )
    else:
        add(
            "reconcile peak RSS grows < 30 MB from 10,000 to 50,000 users", "not run (needs both sizes)", None
        )
    events = results.get("events")
    if events:
        distinct = median(events["distinct"]["summary"], "events_per_s")
        dup = median(events["duplicates"]["summary"], "events_per_s")
        add(
            "distinct-user events >= 500/s",
            f"{distinct:.0f}/s" if distinct else "n/a",
            None if distinct is None else distinct >= 500,
        )
        dup_ratio = ratio(dup, distinct)
        add(
            "95%-duplicate events/s >= 5x the distinct-user rate",
            f"{dup:.0f}/s ({_x(dup_ratio)})" if dup else "n/a",
            None if dup_ratio is None else dup_ratio >= 5,
        )
        p99 = median(events["steady"]["summary"], "latency_p99_ms")
        add(
            "p99 event-to-store latency <= 250 ms at 20 events/s",
            f"{p99:.0f} ms" if p99 else "n/a",
            None if p99 is None else p99 <= 250,
        )
    replay = results.get("replay")
    if replay:
        lookups = median(replay["summary"], "keycloak_get_user_requests")
        add(
            "replay lookups == distinct users",
            f"{lookups:.0f} lookups for {replay['distinct_users']} users ({replay['events']} events)",
            None if lookups is None else lookups == replay["distinct_users"],
        )
    return checks


def _peak_rss(results: dict[str, Any], size: int) -> float | None:
    """The highest median peak RSS of our reconcile over the three cases at one size."""
    values = []
    for case in ("cold", "warm", "churn"):
        value = median(_case(results, size, case, "ours") or {}, "peak_rss_mb")
        if value is not None:
            values.append(value)
    return max(values) if values else None


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


# --- markdown -----------------------------------------------------------------------------------------------------


def _m(summary: dict[str, Any], key: str, fmt: str = "{:.0f}") -> str:
    entry = summary.get(key)
    if not isinstance(entry, dict):
        return "-"
    mid, low, high = (fmt.format(entry[k]) for k in ("median", "min", "max"))
    return mid if low == high or summary.get("runs", 1) == 1 else f"{mid} ({low}-{high})"


def render(results: dict[str, Any], json_name: str) -> str:
    meta = results["environment"]
    machine, versions = meta["machine"], meta["versions"]
    lines = [
        START,
        "",
        f"Generated by `{'python -m bench.assemble' if 'assembled_from' in results else 'make bench'}` on"
        f" {meta['date']} (raw numbers: `bench/results/{json_name}`).",
        "",
        f"- **Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {machine['os']};"
        f" load average at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}",
        f"- **Versions**: Keycloak {versions['keycloak']} (Java {versions['keycloak_java']}, dev H2 database),"
        f" Kafka {versions['kafka']}, SecantusDB {versions['secantusdb']} (server reports {versions['store_server']}),"
        f" Python {versions['python']}, pymongo {versions['pymongo']}, aiokafka {versions['aiokafka']},"
        f" httpx {versions['httpx']}; reconciler at `{versions['reconciler_commit']}`"
        + (
            " (HEAD when assembled; the jobs ran on the commits of their time)"
            if "assembled_from" in results
            else ""
        ),
        f"- **Plan**: sizes {results['plan']['sizes']}, reconcile rounds {results['plan']['repeats']}"
        f" (above 10,000 users: {results['plan']['large_repeats']}), event/replay rounds"
        f" {results['plan']['event_repeats']}; whole run {results['total_seconds'] / 60:.1f} min",
    ]
    if "assembled_from" in results:
        lines.append(
            "- **Assembled** (`python -m bench.assemble`) from the per-job outputs of a run stopped during the"
            " 50,000-user suite, plus "
            + (", ".join(f"`{Path(f).name}`" for f in results["assembled_from"]["files"]) or "nothing else")
            + "; the time above is the measured jobs' time only"
        )
    profiled = [
        f"{size} {case}"
        for size, suite in results.get("reconcile", {}).items()
        for case, impls in suite["cases"].items()
        if any(r.get("profiled") for r in impls["ours"]["runs"])
    ]
    if profiled:
        lines.append(
            "- **Profiled**: one of our rounds ran under cProfile (`BENCH_PROFILE=1`), which slows our process"
            f" (not the servers): {', '.join(profiled)}"
        )
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
        floor = suite["floor"]["summary"]
        lines += [
            f"### Full reconcile, {int(size):,} users ({suite['repeats']} rounds; median (min-max))",
            "",
            f"Fetch floor (paging only, page size 100, full representation): **{_m(floor, 'seconds', '{:.2f}')} s**,"
            f" {_m(floor, 'keycloak_requests')} Keycloak requests.",
            "",
            "| case | impl | wall s | vs ref | vs floor | Keycloak req. | store round trips | user docs written | peak RSS MB |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for case in ("cold", "warm", "churn"):
            ref = suite["cases"][case]["ref"]["summary"]
            for impl in ("ours", "ref"):
                s = suite["cases"][case][impl]["summary"]
                speed = ratio(median(ref, "seconds"), median(s, "seconds")) if impl == "ours" else None
                to_floor = ratio(median(s, "seconds"), median(floor, "seconds"))
                lines.append(
                    f"| {case} | {'ours' if impl == 'ours' else 'reference'} | {_m(s, 'seconds', '{:.2f}')} |"
                    f" {_x(speed) if speed else ''} | {_x(to_floor)} | {_m(s, 'keycloak_requests')} |"
                    f" {_m(s, 'store_round_trips')} | {_m(s, 'store_user_docs_written')} | {_m(s, 'peak_rss_mb', '{:.1f}')} |"
                )
        lines.append("")
    events = results.get("events")
    if events:
        lines += [
            "### Event path (consumer in its own process, lookups in the real Keycloak; median (min-max))",
            "",
            "| scenario | events | users | events/s | lookups | lookups/s | p50 ms | p95 ms | p99 ms | store round trips | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in ("distinct", "duplicates", "steady"):
            e = events[name]
            s = e["summary"]
            label = name if e["rate_per_s"] is None else f"{name} ({e['rate_per_s']:.0f}/s)"
            lines.append(
                f"| {label} | {e['events']} | {e['distinct_users']} | {_m(s, 'events_per_s')} | {_m(s, 'lookups')} |"
                f" {_m(s, 'lookups_per_s')} | {_m(s, 'latency_p50_ms')} | {_m(s, 'latency_p95_ms')} |"
                f" {_m(s, 'latency_p99_ms')} | {_m(s, 'store_round_trips')} | {_m(s, 'peak_rss_mb', '{:.1f}')} |"
            )
        lines.append("")
    replay = results.get("replay")
    if replay:
        s = replay["summary"]
        lines += [
            "### Replay (one topic, into an empty store, without the final full reconcile)",
            "",
            "| events | distinct users | wall s | Keycloak lookups | one lookup per event would be | store round trips | peak RSS MB |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {replay['events']} | {replay['distinct_users']} | {_m(s, 'seconds', '{:.2f}')} |"
            f" {_m(s, 'keycloak_get_user_requests')} | {replay['events']} lookups |"
            f" {_m(s, 'store_round_trips')} | {_m(s, 'peak_rss_mb', '{:.1f}')} |",
            "",
        ]
    lines += ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for check in results["targets"]:
        met = {True: "**yes**", False: "**no**", None: "not measured"}[check["met"]]
        lines.append(f"| {check['target']} | {check['measured']} | {met} |")
    lines += ["", END]
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
