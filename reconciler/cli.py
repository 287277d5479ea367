"""The `reconciler` command line: one subcommand per job, each a registered function.

Add a subcommand with the `subcommand` decorator (in this module, or in a module imported by
`_load_subcommands`):

    @subcommand("verify", help="compare the store with Keycloak", arguments=_verify_arguments)
    def _verify(args: argparse.Namespace) -> int: ...

A handler returns the exit status, or raises `CliExit(code, one_line_reason)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, TextIO

from pydantic import ValidationError
from pydantic_settings import SettingsError
from pymongo.errors import PyMongoError
from rich import progress as rich_progress
from rich.console import Console
from rich.table import Table

from reconciler.config import Settings
from reconciler.keycloak import KeycloakAdminClient
from reconciler.logs import configure_logging, get_logger, redact
from reconciler.reconcile import ErrorKind, FullReconcile, Outcome, Progress, RunSummary
from reconciler.scheduler import ReconcileScheduler, make_holder_id
from reconciler.store import UserStore

log = get_logger(__name__)

# --- exit statuses ------------------------------------------------------------------------------------------
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # unexpected error, or Keycloak answered something the client does not understand
EXIT_CONFIG: Final = 2  # bad or missing configuration (environment variables) or command-line usage
EXIT_KEYCLOAK_AUTH: Final = 3  # Keycloak refused the client's credentials or permissions, or realm/URL wrong
EXIT_KEYCLOAK_UNAVAILABLE: Final = 4  # Keycloak unreachable, timing out or failing (after retries)
EXIT_STORE: Final = 5  # MongoDB unreachable or refusing
EXIT_GUARD: Final = 6  # the mass-deactivation guard refused the run's deactivations
EXIT_INTERRUPTED: Final = 130

EXIT_CODES_HELP: Final = """exit status:
  0  success
  1  unexpected error (or an answer from Keycloak the client does not understand)
  2  bad or missing configuration (the environment variables named on stderr) or usage
  3  Keycloak refused the credentials or permissions (client id/secret, view-users role, realm, URL)
  4  Keycloak unreachable or failing, after retries
  5  the store (MongoDB) is unreachable or refused the operation
  6  the mass-deactivation guard tripped: nothing was deactivated
130  interrupted"""

_EXIT_BY_ERROR: Final = {
    ErrorKind.KEYCLOAK_CONFIG: (EXIT_KEYCLOAK_AUTH, "Keycloak refused the reconciler"),
    ErrorKind.KEYCLOAK_UNAVAILABLE: (EXIT_KEYCLOAK_UNAVAILABLE, "Keycloak unreachable"),
    ErrorKind.KEYCLOAK_PROTOCOL: (EXIT_FAILED, "unexpected answer from Keycloak"),
    ErrorKind.STORE: (EXIT_STORE, "store unreachable or failing"),
    ErrorKind.INTERNAL: (EXIT_FAILED, "internal error"),
}


class CliExit(Exception):
    """Stop the command with `code`, printing `reason` as one line on stderr (when given)."""

    def __init__(self, code: int, reason: str | None = None) -> None:
        super().__init__(reason or "")
        self.code = code
        self.reason = reason


# --- subcommand registry ------------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]
ArgumentsHook = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True, slots=True)
class Subcommand:
    name: str
    help: str
    handler: Handler
    arguments: ArgumentsHook | None = None
    description: str | None = None


SUBCOMMANDS: dict[str, Subcommand] = {}

# Modules that register further subcommands when imported (e.g. "reconciler.replay"); missing ones are skipped.
_SUBCOMMAND_MODULES: Final[tuple[str, ...]] = ("reconciler.commands",)


def subcommand(
    name: str, *, help: str, arguments: ArgumentsHook | None = None, description: str | None = None
) -> Callable[[Handler], Handler]:
    """Register `handler` as `reconciler <name>`."""

    def register(handler: Handler) -> Handler:
        if name in SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} registered twice")
        SUBCOMMANDS[name] = Subcommand(name, help, handler, arguments, description)
        return handler

    return register


def _load_subcommands() -> None:
    for module in _SUBCOMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:  # a dependency of the module is missing: that is a real error
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_subcommands()
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Keeps the application's MongoDB copy of Keycloak users true. Configured by environment "
        "variables (KEYCLOAK_URL, KEYCLOAK_REALM, KEYCLOAK_CLIENT_SECRET, MONGODB_URI, ...).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS.values():
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script `reconciler`: returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliExit as stop:
        if stop.reason:
            _fail_line(stop.reason)
        return stop.code
    except KeyboardInterrupt:
        _fail_line("interrupted")
        return EXIT_INTERRUPTED


def _fail_line(reason: str) -> None:
    line = " ".join(redact(reason).split())
    print(f"reconciler: error: {line}", file=sys.stderr)


# --- shared helpers for handlers ----------------------------------------------------------------------------


def describe_settings_error(error: ValidationError) -> str:
    """One line naming the missing and invalid environment variables, never their values."""
    missing: list[str] = []
    invalid: list[str] = []
    for item in error.errors(include_input=False, include_url=False):
        name = str(item["loc"][0]).upper() if item["loc"] else None
        if item["type"] == "missing" and name:
            missing.append(name)
        elif name:
            invalid.append(f"{name} ({item['msg']})")
        else:
            invalid.append(str(item["msg"]))
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing))
    if invalid:
        parts.append("invalid " + "; ".join(invalid))
    return "configuration error: " + "; ".join(parts)


def load_settings() -> Settings:
    """Settings from the environment; a configuration error stops the command with exit status 2."""
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as error:
        raise CliExit(EXIT_CONFIG, describe_settings_error(error)) from None
    except SettingsError as error:
        raise CliExit(EXIT_CONFIG, f"configuration error: {type(error).__name__}") from None


def setup_logging(settings: Settings) -> None:
    """structlog to stderr, with every configured secret registered for masking."""
    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=[
            settings.keycloak_client_secret.get_secret_value(),
            settings.mongodb_uri.get_secret_value(),
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
        ],
    )


def store_failure(error: BaseException) -> CliExit:
    return CliExit(
        EXIT_STORE,
        f"store unreachable or failing: {type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}",
    )


# --- reconcile ----------------------------------------------------------------------------------------------


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
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


@subcommand(
    "reconcile",
    help="full reconcile: Keycloak users -> the store (once, or periodically)",
    arguments=_reconcile_arguments,
    description="Page through all Keycloak users, create and update what differs, and deactivate local users "
    "Keycloak no longer has (each one confirmed, behind the mass-deactivation guard).",
)
def reconcile_command(args: argparse.Namespace) -> int:
    once = args.once or args.dry_run
    if not once and (args.allow_mass_deactivation or args.json):
        raise CliExit(EXIT_CONFIG, "--allow-mass-deactivation and --json apply to one run: add --once")
    settings = load_settings()
    setup_logging(settings)
    if not once:
        return asyncio.run(_reconcile_loop(settings))
    interactive = not args.json and sys.stderr.isatty()
    summary = asyncio.run(
        _reconcile_once(settings, args.dry_run, args.allow_mass_deactivation, show_progress=interactive)
    )
    if args.json:
        print(json.dumps(summary.to_dict(), separators=(",", ":")), flush=True)
    else:
        print_summary(summary, Console())
    return exit_for(summary)


def exit_for(summary: RunSummary) -> int:
    if summary.outcome is Outcome.SUCCESS:
        return EXIT_OK
    if summary.outcome is Outcome.GUARD_TRIPPED:
        raise CliExit(EXIT_GUARD, summary.error or "mass-deactivation guard tripped")
    if summary.outcome is Outcome.CANCELLED:
        raise CliExit(EXIT_INTERRUPTED, "interrupted")
    code, what = _EXIT_BY_ERROR.get(summary.error_kind or ErrorKind.INTERNAL, (EXIT_FAILED, "failed"))
    raise CliExit(code, f"{what}: {summary.error or 'run failed'}")


async def _reconcile_once(
    settings: Settings, dry_run: bool, allow_mass_deactivation: bool, *, show_progress: bool
) -> RunSummary:
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        try:
            await store.ping()
            if not dry_run:
                await store.ensure_indexes()
        except PyMongoError as error:
            raise store_failure(error) from None
        full = FullReconcile(settings, store, keycloak, holder=f"cli:{make_holder_id()}")
        with progress_ui(show_progress) as progress:
            return await full.run(
                dry_run=dry_run, allow_mass_deactivation=allow_mass_deactivation, progress=progress
            )


async def _reconcile_loop(settings: Settings) -> int:
    if not settings.reconcile_enabled:
        raise CliExit(EXIT_CONFIG, "RECONCILE_ENABLED is false: the periodic reconcile is switched off")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        try:
            await store.ensure_indexes()
        except PyMongoError as error:
            raise store_failure(error) from None
        await ReconcileScheduler(settings, store, keycloak).run(stop)
    return EXIT_OK


# --- terminal output ----------------------------------------------------------------------------------------

ProgressHook = Callable[[Progress], None]


@contextlib.contextmanager
def progress_ui(enabled: bool) -> Iterator[ProgressHook | None]:
    """A rich progress bar on stderr; log lines are routed above it while it is shown."""
    if not enabled:
        yield None
        return
    console = Console(stderr=True)
    bar = rich_progress.Progress(
        rich_progress.SpinnerColumn(),
        rich_progress.TextColumn("{task.description}"),
        rich_progress.BarColumn(),
        rich_progress.MofNCompleteColumn(),
        rich_progress.TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    listing = bar.add_task("listing Keycloak users", total=None)
    confirming: list[rich_progress.TaskID] = []

    def update(p: Progress) -> None:
        bar.update(listing, completed=p.listed, total=max(p.total or 0, p.listed) or None)
        if p.candidates:
            if not confirming:
                confirming.append(bar.add_task("confirming deactivation candidates", total=p.candidates))
            bar.update(confirming[0], completed=p.confirmed, total=p.candidates)

    with bar, _logs_to(sys.stderr):  # inside `bar`, sys.stderr is rich's proxy that prints above the bar
        yield update


@contextlib.contextmanager
def _logs_to(stream: TextIO) -> Iterator[None]:
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(stream) for h in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            if old is not None:
                handler.setStream(old)


def print_summary(summary: RunSummary, console: Console) -> None:
    """A rich table of the run (and, for a dry run, of the drift)."""
    title = f"full reconcile {summary.run_id[:8]}" + (
        " (dry run: nothing written)" if summary.dry_run else ""
    )
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("", style="bold")
    table.add_column("users", justify="right")
    would = "would be " if summary.dry_run else ""
    for label, value in (
        ("listed in Keycloak", summary.listed),
        (f"{would}created", summary.created),
        (f"{would}updated", summary.updated),
        (f"{would}deactivated", summary.deactivated),
        (f"{would}reactivated", summary.reactivated),
        ("unchanged", summary.unchanged),
        ("stale (newer data kept)", summary.stale),
        ("deactivation candidates", summary.candidates),
        ("unreadable (left as stored)", summary.unreadable),
    ):
        table.add_row(label, str(value))
    style = {Outcome.SUCCESS: "green", Outcome.GUARD_TRIPPED: "bold red"}.get(summary.outcome, "red")
    table.add_row("outcome", f"[{style}]{summary.outcome.value}[/{style}]")
    table.add_row("duration", f"{summary.duration_s:.1f} s")
    console.print(table)
    if summary.dry_run and summary.drift:
        drift = Table(title="drift", show_header=True, header_style="bold")
        drift.add_column("action")
        drift.add_column("keycloak id", no_wrap=True, min_width=36)
        drift.add_column("fields (stored -> keycloak)")
        shown_per_action = 50
        for action, items in summary.drift.items():
            for item in items[:shown_per_action]:
                fields = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in item.diff.items())
                drift.add_row(action, item.external_id, fields)
            total = getattr(summary, action, len(items))
            if isinstance(total, int) and total > shown_per_action:
                drift.add_row(action, f"... and {total - shown_per_action} more", "")
        console.print(drift)
