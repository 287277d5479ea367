"""`reconciler`'s entry point: the parser over an explicit list of subcommands, and the one error exit."""

from __future__ import annotations

import argparse
import json
import sys

from reconciler.base import errors
from reconciler.base.errors import EXIT_STATUS_HELP, ExitStatus
from reconciler.cli import erase, reconcile, replay, run, verify
from reconciler.cli.common import CliExit, Subcommand
from reconciler.observability.logs import get_logger, redact

log = get_logger(__name__)

SUBCOMMANDS: tuple[Subcommand, ...] = (
    run.COMMAND,
    reconcile.COMMAND,
    replay.COMMAND,
    verify.COMMAND,
    erase.COMMAND,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler",
        description="Keeps the application's MongoDB copy of Keycloak users true. Configured by environment "
        "variables (KEYCLOAK_URL, KEYCLOAK_REALM, KEYCLOAK_CLIENT_SECRET, MONGODB_URI, ...).",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS:
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.description,
            epilog=EXIT_STATUS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if command.arguments is not None:
            command.arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console script `reconciler`: returns the exit status. Every error ends in one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CliExit as stop:
        if stop.reason:
            _fail_line(stop.reason)
        return stop.code
    except KeyboardInterrupt:
        _fail_line("interrupted")
        return ExitStatus.INTERRUPTED
    except Exception as error:  # the one place every failure of every subcommand ends up
        status = errors.exit_status(error)
        if status is ExitStatus.FAILED and not isinstance(error, errors.ReconcilerError):
            log.debug("unexpected error", exc_info=True)
        if getattr(args, "json", False):
            _print_failure_json(error)
        _fail_line(f"{errors.headline(error)}: {error}" if str(error) else errors.headline(error))
        return status


def _print_failure_json(error: BaseException) -> None:
    """`--json` promises one object on stdout, also when the command could not run."""
    failure = {"outcome": "failed", "error": redact(str(error))[:500], "error_kind": errors.kind(error)}
    print(json.dumps(failure, separators=(",", ":")), flush=True)


def _fail_line(reason: str) -> None:
    line = " ".join(redact(reason).split())
    print(f"reconciler: error: {line}", file=sys.stderr)
