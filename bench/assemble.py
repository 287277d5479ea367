"""Rebuild the results of an interrupted `make bench` from the per-job outputs in bench/results/logs/.

`python -m bench.assemble [EXTRA_RESULTS.json ...]`: every reconcile and floor job whose spec and output are
in the logs folder is grouped by size, case and implementation (rounds in the order the jobs finished),
summarised as `make bench` does, merged with the event/replay sections of the given results files (e.g. a
`BENCH_PARTS=events,replay` run), and written as a new results file plus the generated section of
BENCHMARKS.md. Cases that were not run show as not measured. A results file that holds a reconcile suite
replaces the logs' one: `python -m bench.assemble RECONCILE.json EVENTS.json` merges a `BENCH_PARTS=reconcile`
run with a `BENCH_PARTS=events,replay` run (each part says which reconciler commit it ran on).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.env import LOGS_DIR, RESULTS_DIR, realm_name, stack_env
from bench.plots import draw as draw_plots
from bench.stats import summarize
from bench.suites import CASES, IMPLS

FLOOR_KINDS = {"listing_floors": "listing", "get_rate": "get_rate", "bulk_write_floor": "bulk_write"}


def _size(realm: str) -> int:
    label = realm.removeprefix("bench-")
    return int(label[:-1]) * 1000 if label.endswith("k") else int(label)


def reconcile_from_logs(logs: Path = LOGS_DIR) -> dict[str, Any]:
    runs: dict[int, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    floors: dict[int, dict[str, list[dict[str, Any]]]] = {}
    outs = sorted(logs.glob("*.out.json"), key=lambda p: p.stat().st_mtime)
    for out in outs:
        spec_path = out.with_name(out.name.removesuffix(".out.json") + ".spec.json")
        if not spec_path.exists():
            continue
        spec = json.loads(spec_path.read_text())
        result = json.loads(out.read_text())
        result["finished_at"] = datetime.fromtimestamp(out.stat().st_mtime, UTC).isoformat(timespec="seconds")
        size = _size(spec["realm"])
        if spec["kind"] in FLOOR_KINDS:
            by_kind = floors.setdefault(size, {name: [] for name in FLOOR_KINDS.values()})
            by_kind[FLOOR_KINDS[spec["kind"]]].append(result)
        elif spec["kind"] == "reconcile":
            if result.get("skipped") or "-settle-" in out.name:
                continue
            case = "cold" if spec.get("drop") else ("churn" if "-churn-" in out.name else "warm")
            result["profiled"] = "profile" in spec
            runs.setdefault(size, {c: {i: [] for i in IMPLS} for c in CASES})[case][spec["impl"]].append(
                result
            )
    suites: dict[str, Any] = {}
    for size in sorted(runs):
        cases = runs[size]
        suites[str(size)] = {
            "size": size,
            "realm": realm_name(size),
            "repeats": max(len(v) for c in cases.values() for v in c.values()),
            "floors": {
                name: {"summary": summarize(rs), "runs": rs}
                for name, rs in floors.get(size, {n: [] for n in FLOOR_KINDS.values()}).items()
            },
            "cases": {
                case: {
                    impl: {"summary": summarize(cases[case][impl]), "runs": cases[case][impl]}
                    for impl in IMPLS
                }
                for case in CASES
            },
        }
    return suites


def main() -> int:
    started = time.monotonic()
    results: dict[str, Any] = {
        "environment": report.environment(stack_env()),
        "assembled_from": {
            "logs": str(LOGS_DIR.relative_to(RESULTS_DIR.parent.parent)),
            "files": sys.argv[1:],
        },
        "reconcile": reconcile_from_logs(),
        "seeding": [],
    }
    sizes = [int(s) for s in results["reconcile"]]
    plan: dict[str, Any] = {"sizes": sizes, "repeats": 0, "large_repeats": 0, "event_repeats": 0}
    results["curve"] = {}
    total = 0.0
    commits = []
    for name in sys.argv[1:]:
        extra = json.loads(Path(name).read_text())
        commits.append(f"{Path(name).name}: `{extra['environment']['versions']['reconciler_commit']}`")
        # A complete run's reconcile suite replaces what the logs hold (e.g. a reconcile-only run merged with
        # an events-and-replay run).
        for key in ("reconcile", "curve", "events", "replay"):
            if key in extra:
                results[key] = extra[key]
        if "reconcile" in extra:
            for key in ("sizes", "repeats", "large_repeats", "curve_sizes", "large_sizes"):
                plan[key] = extra["plan"].get(key, plan.get(key))
            results["seeding"] = extra.get("seeding", [])
        if "events" in extra or "replay" in extra:
            plan["event_repeats"] = extra.get("plan", {}).get("event_repeats", 0)
        total += float(extra.get("total_seconds", 0))
    results["assembled_from"]["commits"] = commits
    from_files = any("total_seconds" in json.loads(Path(n).read_text()) for n in sys.argv[1:])
    for suite in results["reconcile"].values():
        key = "repeats" if suite["size"] <= 10_000 else "large_repeats"
        plan[key] = max(plan[key], suite["repeats"])
    results["plan"] = plan
    if not from_files:
        for suite in results["reconcile"].values():
            for case in suite["cases"].values():
                for impl in case.values():
                    total += sum(float(r["seconds"]) for r in impl["runs"])
            total += sum(float(r["seconds"]) for f in suite["floors"].values() for r in f["runs"])
    machine = results["environment"]["machine"]
    machine["load_average_at_end"] = os.getloadavg()
    parts = [json.loads(Path(n).read_text())["environment"]["machine"] for n in sys.argv[1:]]
    if parts:  # the load the parts ran under, not the load at assembly time
        machine["load_average_at_start"] = parts[0]["load_average_at_start"]
        machine["load_average_at_end"] = parts[-1].get("load_average_at_end", machine["load_average_at_end"])
    results["total_seconds"] = total  # measured job time only (process starts and seeding not included)
    results["targets"] = report.targets(results)
    results["plots"] = draw_plots(results)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"bench-{stamp}-assembled.json"
    text = json.dumps(results, indent=1, default=str)
    (RESULTS_DIR / name).write_text(text)
    (RESULTS_DIR / "latest.json").write_text(text)
    report.update_benchmarks_md(report.render(results, name))
    print(f"results: bench/results/{name} ({time.monotonic() - started:.1f} s)")
    for check in results["targets"]:
        print(f"  {check['met']!s:5s} {check['target']}: {check['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
