"""The plots of one run (PNG under bench/results/, matplotlib without a display):

- warm full reconcile time against realm size: ours, the port of the seed's algorithm, the sequential and
  the best listing floor (log-log: the seed's algorithm grows with the users, the floors with the pages);
- event-path throughput (users applied per second, and events per second) against the share of distinct
  users in a burst, with the raw GET /users/{id} rate of the same run as a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the benchmark machine

import matplotlib.pyplot as plt

from bench.env import RESULTS_DIR
from bench.report import EVENT_ORDER, curve_points, event_get_rate
from bench.stats import median


def _database(results: dict[str, Any]) -> str:
    versions = results["environment"]["versions"]
    return f"Keycloak {versions['keycloak']} on {versions.get('keycloak_database', '?')}"


def reconcile_plot(results: dict[str, Any], path: Path) -> bool:
    points = curve_points(results)
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5))
    series = (
        ("ours", "ours (FullReconcile, defaults)", "o-"),
        ("ref", "port of the seed's algorithm", "s-"),
        ("sequential", "sequential listing floor (100 x 1)", "v--"),
        ("best", "best listing floor", "^--"),
    )
    for key, label, style in series:
        xs = [p["size"] for p in points if p[key] is not None]
        ys = [p[key] for p in points if p[key] is not None]
        if xs:
            ax.plot(xs, ys, style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("users in the realm")
    ax.set_ylabel("warm full reconcile, seconds (median)")
    ax.set_title(f"Warm full reconcile against realm size\n{_database(results)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _value(summary: dict[str, Any], key: str) -> float:
    value = median(summary, key)
    return float("nan") if value is None else value


def events_plot(results: dict[str, Any], path: Path) -> bool:
    events = results.get("events")
    if not events:
        return False
    bursts = [
        events[name]
        for name in EVENT_ORDER
        if name in events
        and events[name]["rate_per_s"] is None
        and events[name].get("after_commit_header")
        and events[name].get("burst_listing", True)
    ]
    bursts.sort(key=lambda e: float(e["distinct_share"]))
    shares = [100 * float(e["distinct_share"]) for e in bursts]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot(shares, [_value(e["summary"], "users_per_s") for e in bursts], "o-", label="users applied/s")
    ax.plot(shares, [_value(e["summary"], "events_per_s") for e in bursts], "s-", label="events/s")
    recheck = events.get("distinct_recheck")
    if recheck:
        ax.plot(
            [100 * float(recheck["distinct_share"])],
            [_value(recheck["summary"], "users_per_s")],
            "x",
            markersize=10,
            label="users/s without the after-commit header (re-check GET)",
        )
    get_only = events.get("distinct_get")
    if get_only:
        ax.plot(
            [100 * float(get_only["distinct_share"])],
            [_value(get_only["summary"], "users_per_s")],
            "D",
            markersize=8,
            label="users/s one GET each (EVENT_BURST_LISTING=false)",
        )
    get_rate = event_get_rate(results)
    if get_rate:
        ax.axhline(
            get_rate, linestyle="--", color="grey", label=f"raw GET /users/{{id}} rate ({get_rate:.0f}/s)"
        )
        ax.axhline(0.8 * get_rate, linestyle=":", color="grey", label="80% of the raw GET rate")
    ax.set_yscale("log")
    ax.set_xlabel("distinct users, % of the events in the burst")
    ax.set_ylabel("throughput per second (median)")
    ax.set_title(f"Event path throughput against distinct-user share\n{_database(results)}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def draw(results: dict[str, Any]) -> list[str]:
    """Draw this run's plots (fixed names: each run replaces them; BENCHMARKS.md shows them); returns their
    paths relative to the repository."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw_one in (("reconcile-vs-size", reconcile_plot), ("events-vs-distinct-share", events_plot)):
        path = RESULTS_DIR / f"{name}.png"
        if draw_one(results, path):
            written.append(f"bench/results/{path.name}")
    return written
