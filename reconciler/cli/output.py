"""What the command line shows on a terminal: progress bars and summary tables (rich)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from rich import progress as rich_progress
from rich.console import Console
from rich.table import Table

from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import WRITING_ACTIONS, Action
from reconciler.fullsync.reconcile import Progress, RunSummary
from reconciler.fullsync.replay import ReplayProgress, ReplaySummary

ProgressHook = Callable[[Progress], None]
DRIFT_SHOWN_PER_ACTION = 50


def _bar(*columns: rich_progress.ProgressColumn) -> rich_progress.Progress:
    return rich_progress.Progress(
        *columns,
        rich_progress.BarColumn(),
        rich_progress.MofNCompleteColumn(),
        rich_progress.TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


@contextlib.contextmanager
def progress_ui(enabled: bool) -> Iterator[ProgressHook | None]:
    """A rich progress bar on stderr; log lines are routed above it while it is shown."""
    if not enabled:
        yield None
        return
    bar = _bar(rich_progress.SpinnerColumn(), rich_progress.TextColumn("{task.description}"))
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
def replay_progress(enabled: bool) -> Iterator[ReplayProgress | None]:
    """One bar per replay phase (reading the topics, applying the users)."""
    if not enabled:
        yield None
        return
    bar = _bar(rich_progress.TextColumn("{task.description}"))
    tasks: dict[str, rich_progress.TaskID] = {}

    def update(phase: str, done: int, total: int | None) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(f"{phase} ", total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
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


def _action_label(action: Action, dry_run: bool) -> str:
    if action is Action.STALE:
        return "stale (newer data kept)"
    return f"would be {action.value}" if dry_run and action in WRITING_ACTIONS else action.value


def print_summary(summary: RunSummary, console: Console) -> None:
    """A rich table of the run (and, for a dry run, of the drift)."""
    title = f"full reconcile {summary.run_id[:8]}" + (
        " (dry run: nothing written)" if summary.dry_run else ""
    )
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("", style="bold")
    table.add_column("users", justify="right")
    table.add_row("listed in Keycloak", str(summary.listed))
    for action in Action:
        table.add_row(_action_label(action, summary.dry_run), str(summary.applied[action]))
    table.add_row("deactivation candidates", str(summary.candidates))
    table.add_row("unreadable (left as stored)", str(summary.unreadable))
    style = {Outcome.SUCCESS: "green", Outcome.GUARD_TRIPPED: "bold red"}.get(summary.outcome, "red")
    table.add_row("outcome", f"[{style}]{summary.outcome.value}[/{style}]")
    table.add_row("duration", f"{summary.duration_s:.1f} s")
    console.print(table)
    if summary.dry_run and summary.drift:
        console.print(_drift_table(summary))


def _drift_table(summary: RunSummary) -> Table:
    drift = Table(title="drift", show_header=True, header_style="bold")
    drift.add_column("action")
    drift.add_column("keycloak id", no_wrap=True, min_width=36)
    drift.add_column("fields (stored -> keycloak)")
    for action, items in summary.drift.items():
        for item in items[:DRIFT_SHOWN_PER_ACTION]:
            fields = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in item.diff.items())
            drift.add_row(action.value, item.external_id, fields)
        more = summary.applied[action] - DRIFT_SHOWN_PER_ACTION
        if more > 0:
            drift.add_row(action.value, f"... and {more} more", "")
    return drift


def print_replay(summary: ReplaySummary, console: Console) -> None:
    table = Table(title="replay", show_header=False)
    rows: list[tuple[str, object]] = [
        ("events read", summary.events_read),
        ("user hints", summary.hints),
        ("distinct users", summary.distinct_users),
        ("Keycloak lookups", summary.lookups),
        *((action.value, summary.applied[action]) for action in Action),
        *sorted(summary.outcomes.items()),
        ("duration", f"{summary.duration_s:.1f} s"),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    if summary.reconcile is not None:
        print_summary(summary.reconcile, console)
