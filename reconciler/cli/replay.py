"""`reconciler replay`: rebuild the store from the event topics, then a full reconcile."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from rich.console import Console

from reconciler.base.config import Settings
from reconciler.base.errors import ConfigurationError, ExitStatus
from reconciler.cli.common import Subcommand, exit_for, load_settings, open_clients
from reconciler.cli.output import print_replay, progress_ui, replay_progress
from reconciler.fullsync.replay import ReplaySummary, replay


def _arguments(parser: argparse.ArgumentParser) -> None:
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


def replay_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    interactive = not args.json and sys.stderr.isatty()
    summary = asyncio.run(_replay(settings, args, interactive))
    if args.json:
        print(json.dumps(summary.to_dict(), separators=(",", ":")), flush=True)
    else:
        print_replay(summary, Console())
    return exit_for(summary.reconcile) if summary.reconcile is not None else ExitStatus.OK


async def _replay(settings: Settings, args: argparse.Namespace, interactive: bool) -> ReplaySummary:
    async with open_clients(settings) as (keycloak, store):
        with replay_progress(interactive) as bar, progress_ui(interactive) as reconcile_bar:
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
            except ValueError as error:  # a topic that does not exist
                raise ConfigurationError(str(error)) from None


COMMAND = Subcommand(
    "replay",
    help="rebuild the store from the event topics (then a full reconcile)",
    description="Reads the event topics from the beginning (or --since) up to their current end, without "
    "touching the live group's offsets; looks up each distinct user once and applies it; then runs a full "
    "reconcile so users without events are covered. Safe to run twice.",
    handler=replay_command,
    arguments=_arguments,
)
