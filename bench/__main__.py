"""`make bench` (`python -m bench`): seed the benchmark realms, run the suites, write the results and plots.

Environment (all optional):
  BENCH_SIZES=10000         realm sizes of the full reconcile suite (cold, warm, churn, floors), e.g. 10000;
                            the smallest (>= 5,000) also serves the event and replay suites
  BENCH_CURVE_SIZES=2000,5000  more points of the plot: warm runs of ours and the reference, listing floors
  BENCH_LARGE_SIZES=        ours only (warm, over a store filled once), for the peak RSS at scale, e.g. 50000
  BENCH_REPEATS=2           reconcile rounds per size up to 10,000 users
  BENCH_LARGE_REPEATS=1     reconcile rounds per size above 10,000 users
  BENCH_EVENT_REPEATS=2     rounds of the distinct and duplicate bursts and of replay (others run once)
  BENCH_PARTS=reconcile,events,replay,cdc   (cdc: commit-to-store latency through database changes beside the
                            listener's, bench/cdc.py; needs the stack's Kafka Connect)
  BENCH_REF_COLD=1          time the reference's cold run even when its kept store is already filled
  BENCH_REF_CHURN=1         also time the reference's churn runs (no target needs them; minutes each here)
  BENCH_PROFILE=1           cProfile the last round of our reconciles and of the distinct burst
                            (bench/results/profiles/)
  BENCH_QUICK=1             a quick look: 1 round of everything, no curve points (not for the numbers)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from bench import cdc, report, seed, suites
from bench.env import RESULTS_DIR, realm_name, stack_env
from bench.plots import draw as draw_plots
from bench.suites import Plan, console


def _sizes(name: str, default: str) -> tuple[int, ...]:
    return tuple(sorted(int(s) for s in os.environ.get(name, default).split(",") if s.strip()))


def _plan() -> Plan:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    sizes = _sizes("BENCH_SIZES", "10000")
    parts = frozenset(
        p.strip() for p in os.environ.get("BENCH_PARTS", "reconcile,events,replay,cdc").split(",")
    )
    unknown = parts - {"reconcile", "events", "replay", "cdc"}
    if unknown or not sizes:
        raise SystemExit(f"bad BENCH_PARTS {sorted(unknown)} or empty BENCH_SIZES")
    rounds = "1" if quick else "2"
    return Plan(
        sizes=sizes,
        repeats=int(os.environ.get("BENCH_REPEATS", rounds)),
        large_repeats=int(os.environ.get("BENCH_LARGE_REPEATS", "1")),
        event_repeats=int(os.environ.get("BENCH_EVENT_REPEATS", rounds)),
        parts=parts,
        profile=os.environ.get("BENCH_PROFILE", "") not in ("", "0"),
        curve_sizes=_sizes("BENCH_CURVE_SIZES", "" if quick else "2000,5000"),
        large_sizes=_sizes("BENCH_LARGE_SIZES", ""),
        ref_cold=os.environ.get("BENCH_REF_COLD", "") not in ("", "0"),
        ref_churn=os.environ.get("BENCH_REF_CHURN", "") not in ("", "0"),
    )


def main() -> int:
    started = time.monotonic()
    plan = _plan()
    env = stack_env()
    results: dict[str, Any] = {
        "environment": report.environment(env),
        "plan": {
            "sizes": list(plan.sizes),
            "repeats": plan.repeats,
            "large_repeats": plan.large_repeats,
            "event_repeats": plan.event_repeats,
            "parts": sorted(plan.parts),
            "curve_sizes": list(plan.curve_sizes),
            "large_sizes": list(plan.large_sizes),
        },
        "seeding": [],
    }
    needed = {plan.sizes[0]}
    if "reconcile" in plan.parts:
        needed |= {*plan.sizes, *plan.curve_sizes, *plan.large_sizes}
    for size in sorted(needed):
        console.print(f"[bold]realm {realm_name(size)}: {size} users[/bold]")
        seeded = asyncio.run(seed.ensure_realm(env, realm_name(size), size))
        results["seeding"].append(seeded.to_dict())
        console.print(f"  ready in {seeded.seconds:.1f} s ({seeded.users_imported} users imported now)")
    if "reconcile" in plan.parts:
        results["reconcile"] = {str(size): suites.reconcile_suite(env, size, plan) for size in plan.sizes}
        results["curve"] = {
            **{str(size): suites.curve_suite(size, plan) for size in plan.curve_sizes},
            **{str(size): suites.curve_suite(size, plan, with_ref=False) for size in plan.large_sizes},
        }
    if "events" in plan.parts:
        console.print("[bold]event path[/bold]")
        results["events"] = suites.events_suite(env, plan.sizes[0], plan)
    if "replay" in plan.parts:
        console.print("[bold]replay[/bold]")
        results["replay"] = suites.replay_suite(env, plan.sizes[0], plan)
    if "cdc" in plan.parts:
        console.print("[bold]database changes (CDC) beside the listener[/bold]")
        results["cdc"] = asyncio.run(cdc.cdc_suite(env))
    results["environment"]["machine"]["load_average_at_end"] = os.getloadavg()
    results["total_seconds"] = time.monotonic() - started
    results["targets"] = report.targets(results)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"bench-{stamp}.json"
    (RESULTS_DIR / name).write_text(json.dumps(results, indent=1, default=str))
    (RESULTS_DIR / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    results["plots"] = draw_plots(results)
    (RESULTS_DIR / name).write_text(json.dumps(results, indent=1, default=str))
    (RESULTS_DIR / "latest.json").write_text(json.dumps(results, indent=1, default=str))
    report.update_benchmarks_md(report.render(results, name))
    console.print(f"results: bench/results/{name}, BENCHMARKS.md ({results['total_seconds'] / 60:.1f} min)")
    for check in results["targets"]:
        mark = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "not measured"}[check["met"]]
        console.print(f"  {mark}  {check['target']}: {check['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
