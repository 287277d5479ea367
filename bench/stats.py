"""Medians and ratios over repeated runs."""

from __future__ import annotations

import statistics
from typing import Any

NUMERIC_KEYS = (
    "seconds",
    "keycloak_requests",
    "store_round_trips",
    "store_user_write_commands",
    "store_user_docs_written",
    "store_other_write_commands",
    "peak_rss_mb",
    "events_per_s",
    "lookups",
    "lookups_per_s",
    "store_update_floor_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "keycloak_get_user_requests",
    "distinct_users",
    "events_read",
    "users_per_s",
    "sequential_seconds",
    "best_seconds",
    "raw_per_s",
    "client_per_s",
    "docs_per_s",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of every numeric key over the runs, plus the runs themselves."""
    summary: dict[str, Any] = {"runs": len(runs)}
    for key in NUMERIC_KEYS:
        values = [float(r[key]) for r in runs if isinstance(r.get(key), int | float)]
        if values:
            summary[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    return summary


def median(summary: dict[str, Any], key: str) -> float | None:
    entry = summary.get(key)
    return float(entry["median"]) if isinstance(entry, dict) else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b
