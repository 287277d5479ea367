"""The `run`, `replay` and `verify` subcommands (registered into `reconciler.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pymongo.errors import PyMongoError
from rich import progress as rich_progress
from rich.console import Console
from rich.table import Table

from reconciler.cli import (
    EXIT_CONFIG,
    EXIT_OK,
    CliExit,
    exit_for,
    load_settings,
    print_summary,
    progress_ui,
    setup_logging,
    store_failure,
    subcommand,
)
from reconciler.config import Settings
from reconciler.keycloak import KeycloakAdminClient
from reconciler.reconcile import FullReconcile, RunSummary
from reconciler.replay import ReplayProgress, ReplaySummary, replay
from reconciler.service import run_service
from reconciler.store import UserStore

EXIT_DRIFT = 7  # verify: the store differs from Keycloak


# --- run ------------------------------------------------------------------------------------------------------
@subcommand(
    "run",
    help="the service: Kafka consumer + periodic full reconcile + health/metrics server, until SIGTERM",
    description="Runs the event path (CONSUMER_ENABLED), the periodic full reconcile (RECONCILE_ENABLED) and "
    "the /healthz, /readyz, /metrics server (HTTP_ENABLED) in one process. SIGTERM drains and commits.",
)
def run_command(_: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings)
    try:
        return asyncio.run(run_service(settings))
    except PyMongoError as error:
        raise store_failure(error) from None


# --- replay ---------------------------------------------------------------------------------------------------
def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        type=_timestamp,
        help="start at this time (ISO 8601, e.g. 2026-11-01T00:00:00Z) instead of the beginning of the topics",
    )
    parser.add_argument(
        "--topic",
        action="append",
        dest="topics",
        help="topic to read (repeatable; default: both event topics)",
    )
    parser.add_argument(
        "--no-reconcile", action="store_true", help="skip the full reconcile that normally follows the replay"
    )
    parser.add_argument(
        "--allow-mass-deactivation", action="store_true", help="let the final reconcile pass the guard"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")


def _timestamp(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@subcommand(
    "replay",
    help="rebuild the store from the event topics (then a full reconcile)",
    arguments=_replay_arguments,
    description="Reads the event topics from the beginning (or --since) up to their current end, without "
    "touching the live group's offsets; looks up each distinct user once and applies it; then runs a full "
    "reconcile so users without events are covered. Safe to run twice.",
)
def replay_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings)
    interactive = not args.json and sys.stderr.isatty()
    summary = asyncio.run(_replay(settings, args, interactive))
    if args.json:
        print(json.dumps(summary.to_dict(), separators=(",", ":")), flush=True)
    else:
        _print_replay(summary, Console())
    if summary.reconcile is not None:
        return exit_for(summary.reconcile)
    return EXIT_OK


async def _replay(settings: Settings, args: argparse.Namespace, interactive: bool) -> ReplaySummary:
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        try:
            await store.ping()
        except PyMongoError as error:
            raise store_failure(error) from None
        with _replay_bar(interactive) as bar, progress_ui(interactive) as reconcile_bar:
            try:
                return await replay(
                    settings,
                    store,
                    keycloak,
                    topics=args.topics,
                    since=args.since,
                    reconcile_after=not args.no_reconcile,
                    allow_mass_deactivation=args.allow_mass_deactivation,
                    progress=bar,
                    reconcile_progress=reconcile_bar,
                )
            except ValueError as error:
                raise CliExit(EXIT_CONFIG, str(error)) from None


@contextmanager
def _replay_bar(enabled: bool) -> Iterator[ReplayProgress | None]:
    if not enabled:
        yield None
        return
    bar = rich_progress.Progress(
        rich_progress.TextColumn("{task.description}"),
        rich_progress.BarColumn(),
        rich_progress.MofNCompleteColumn(),
        rich_progress.TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, rich_progress.TaskID] = {}

    def update(phase: str, done: int, total: int | None) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(f"{phase} ", total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
        yield update


def _print_replay(summary: ReplaySummary, console: Console) -> None:
    table = Table(title="replay", show_header=False)
    for label, value in (
        ("events read", summary.events_read),
        ("user hints", summary.hints),
        ("distinct users", summary.distinct_users),
        ("Keycloak lookups", summary.lookups),
        *sorted(summary.applied.items()),
        *sorted(summary.outcomes.items()),
        ("duration", f"{summary.duration_s:.1f} s"),
    ):
        table.add_row(str(label), str(value))
    console.print(table)
    if summary.reconcile is not None:
        print_summary(summary.reconcile, console)


# --- verify ---------------------------------------------------------------------------------------------------
def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the drift as one JSON object on stdout")


@subcommand(
    "verify",
    help="compare Keycloak and the store without writing; exit 0 when they agree",
    arguments=_verify_arguments,
    description="Reads all Keycloak users and the store and prints the drift: users missing from the store, "
    "users whose fields differ, users that should be inactive (confirmed with Keycloak) or active, users "
    f"Keycloak lists but sends unreadably. Writes nothing. Exit status 0 when there is no drift, {EXIT_DRIFT} "
    "when there is.",
)
def verify_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings)
    summary = asyncio.run(_verify(settings))
    report = verify_report(summary)
    if args.json:
        print(json.dumps(report, separators=(",", ":")), flush=True)
    else:
        print_summary(summary, Console())
    if not summary.ok:
        return exit_for(summary)
    return EXIT_OK if report["in_sync"] else EXIT_DRIFT


async def _verify(settings: Settings) -> RunSummary:
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        try:
            await store.ping()
        except PyMongoError as error:
            raise store_failure(error) from None
        # A dry run of the full reconcile is exactly "what would change": one core, no second diff to keep.
        return await FullReconcile(settings, store, keycloak).run(dry_run=True, allow_mass_deactivation=True)


def verify_report(summary: RunSummary) -> dict[str, object]:
    """The drift in the words of `verify`: missing, different, should_be_inactive, should_be_active."""
    drift = summary.to_dict().get("drift", {})
    assert isinstance(drift, dict)
    names: dict[str, Callable[[RunSummary], int]] = {
        "missing": lambda s: s.created,
        "different": lambda s: s.updated,
        "should_be_inactive": lambda s: s.deactivated,
        "should_be_active": lambda s: s.reactivated,
    }
    actions = {"missing": "created", "different": "updated", "should_be_inactive": "deactivated",
               "should_be_active": "reactivated"}  # fmt: skip
    counts = {name: count(summary) for name, count in names.items()}
    return {
        # A user Keycloak sends unreadably cannot be compared: the store is not known to be in sync.
        "in_sync": summary.ok and not any(counts.values()) and summary.unreadable == 0,
        "outcome": summary.outcome.value,
        "listed": summary.listed,
        "unreadable": summary.unreadable,
        **counts,
        "users": {name: drift.get(actions[name], []) for name in names},
        "error": summary.error,
    }
