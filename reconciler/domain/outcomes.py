"""The outcome words of a full reconcile or replay: one enum for run records, metrics, the CLI and replay."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How a run ended (or that it is still running, or was not started because another replica runs one)."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    GUARD_TRIPPED = "guard_tripped"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # left `running` by a holder that lost its lease; closed by the next holder
    SKIPPED_LEASE = "skipped_lease"
