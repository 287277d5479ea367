"""`reconciler reconcile`: one full reconcile (`--once`, `--dry-run`), or the periodic loop alone."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from rich.console import Console

from reconciler.base.config import Settings
from reconciler.base.errors import ExitStatus
from reconciler.cli.common import CliExit, Subcommand, exit_for, load_settings, open_clients
from reconciler.cli.output import print_summary, progress_ui
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.fullsync.reconcile import FullReconcile, RunSummary
from reconciler.fullsync.scheduler import ReconcileScheduler, make_holder_id
from reconciler.service import stop_on_signals


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--once",
        action="store_true",
        help="run one full reconcile and exit (without it: the periodic loop, in the foreground, until SIGTERM)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read Keycloak and the store, print the drift, write nothing (implies --once)",
    )
    parser.add_argument(
        "--allow-mass-deactivation",
        action="store_true",
        help="let this run deactivate more users than the mass-deactivation guard allows (needs --once)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the run summary as one JSON object on stdout (needs --once)",
    )


def reconcile_command(args: argparse.Namespace) -> int:
    once = args.once or args.dry_run
    if not once and (args.allow_mass_deactivation or args.json):
        raise CliExit(ExitStatus.CONFIG, "--allow-mass-deactivation and --json apply to one run: add --once")
    settings = load_settings()
    if not once:
        if not settings.reconcile_enabled:
            raise CliExit(
                ExitStatus.CONFIG, "RECONCILE_ENABLED is false: the periodic reconcile is switched off"
            )
        return asyncio.run(_loop(settings))
    interactive = not args.json and sys.stderr.isatty()
    summary = asyncio.run(_once(settings, args.dry_run, args.allow_mass_deactivation, interactive))
    if args.json:
        print(json.dumps(summary.to_dict(), separators=(",", ":")), flush=True)
    else:
        print_summary(summary, Console())
    return exit_for(summary)


async def _once(
    settings: Settings, dry_run: bool, allow_mass_deactivation: bool, interactive: bool
) -> RunSummary:
    async with open_clients(settings, writes=not dry_run) as (keycloak, store):
        full = FullReconcile(settings, store, keycloak, holder=f"cli:{make_holder_id()}")
        with progress_ui(interactive) as progress:
            return await full.run(
                dry_run=dry_run, allow_mass_deactivation=allow_mass_deactivation, progress=progress
            )


async def _loop(settings: Settings) -> int:
    stop = asyncio.Event()
    stop_on_signals(stop)
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        await keycloak.check_access()
        await store.ensure_indexes()
        await ReconcileScheduler(settings, store, keycloak).run(stop)
    return ExitStatus.OK


COMMAND = Subcommand(
    "reconcile",
    help="full reconcile: Keycloak users -> the store (once, or periodically)",
    description="Page through all Keycloak users, create and update what differs, and deactivate local users "
    "Keycloak no longer has (each one confirmed, behind the mass-deactivation guard).",
    handler=reconcile_command,
    arguments=_arguments,
)
