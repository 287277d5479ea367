"""The `reconciler` command line: `run`, `reconcile`, `replay` and `verify` (see `main`)."""

from reconciler.cli.common import describe_settings_error
from reconciler.cli.main import build_parser, main

__all__ = ["build_parser", "describe_settings_error", "main"]
