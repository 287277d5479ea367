"""`reconciler verify`: compare Keycloak and the store without writing (a dry run of the full reconcile)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Final

from rich.console import Console

from reconciler.base.config import Settings
from reconciler.base.errors import ExitStatus
from reconciler.cli.common import Subcommand, exit_for, load_settings, open_clients
from reconciler.cli.output import print_summary
from reconciler.domain.plan import Action
from reconciler.fullsync.reconcile import FullReconcile, RunSummary

# What each planned action means when nothing is written: the words of `verify`.
DRIFT_NAMES: Final = {
    Action.CREATED: "missing",
    Action.UPDATED: "different",
    Action.DEACTIVATED: "should_be_inactive",
    Action.REACTIVATED: "should_be_active",
}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the drift as one JSON object on stdout")


def verify_command(args: argparse.Namespace) -> int:
    summary = asyncio.run(_verify(load_settings()))
    report = verify_report(summary)
    if args.json:
        print(json.dumps(report, separators=(",", ":")), flush=True)
    else:
        print_summary(summary, Console())
    if not summary.ok:
        return exit_for(summary)
    return ExitStatus.OK if report["in_sync"] else ExitStatus.DRIFT


async def _verify(settings: Settings) -> RunSummary:
    async with open_clients(settings, writes=False) as (keycloak, store):
        # A dry run of the full reconcile is exactly "what would change": one core, no second diff to keep.
        return await FullReconcile(settings, store, keycloak).run(dry_run=True, allow_mass_deactivation=True)


def verify_report(summary: RunSummary) -> dict[str, object]:
    """The drift in the words of `verify`: missing, different, should_be_inactive, should_be_active."""
    drift = summary.to_dict().get("drift", {})
    assert isinstance(drift, dict)
    counts = {name: summary.applied[action] for action, name in DRIFT_NAMES.items()}
    return {
        # A user Keycloak sends unreadably cannot be compared: the store is not known to be in sync.
        "in_sync": summary.ok and not any(counts.values()) and summary.unreadable == 0,
        "outcome": summary.outcome.value,
        "listed": summary.listed,
        "unreadable": summary.unreadable,
        **counts,
        "users": {name: drift.get(action.value, []) for action, name in DRIFT_NAMES.items()},
        "error": summary.error,
    }


COMMAND = Subcommand(
    "verify",
    help="compare Keycloak and the store without writing; exit 0 when they agree",
    description="Reads all Keycloak users and the store and prints the drift: users missing from the store, "
    "users whose fields differ, users that should be inactive (confirmed with Keycloak) or active, users "
    f"Keycloak lists but sends unreadably. Writes nothing. Exit status 0 when there is no drift, "
    f"{ExitStatus.DRIFT.value} when there is.",
    handler=verify_command,
    arguments=_arguments,
)
