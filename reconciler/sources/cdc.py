"""The database-change source: Debezium's change records of Keycloak's user tables, read by the consumer
group beside the events (`domain.changes` parses them into the same user hints, the same queue applies
them), and the watch over the stream itself.

A replication slot is a production hazard (docs/operations.md): while nothing reads it PostgreSQL keeps
its WAL, and when it is dropped or the connector starts anew the changes in between are lost. The watch
makes both visible: `reconciler_cdc_lag_seconds` is now minus the commit time of the last record read
(heartbeats included, so a quiet database keeps it low), and a jump in commit times larger than
`CDC_GAP_S` between two records means the stream skipped changes: a full reconcile is requested at once,
as the sweep does for a watermark older than the event store keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.base.config import Settings
from reconciler.domain.changes import parse_change
from reconciler.domain.events import ParseResult
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger

log = get_logger(__name__)

RequestReconcile = Callable[[str], None]


class ChangeSource:
    """Parses the change topics' records for the consumer and watches the stream's commit times."""

    def __init__(self, settings: Settings, request_reconcile: RequestReconcile | None = None) -> None:
        self._settings = settings
        self.topics = frozenset(settings.cdc_topics)
        self._realm_ids = frozenset({settings.keycloak_realm_id}) if settings.keycloak_realm_id else None
        self._request_reconcile = request_reconcile
        self._last_commit: datetime | None = None
        metrics.CDC_LAG.set_function(self.lag_s)

    def parse(self, topic: str, key: bytes | None, value: bytes | None) -> ParseResult:
        result = parse_change(
            topic, key, value, realm=self._settings.keycloak_realm, realm_ids=self._realm_ids
        )
        if result.commit_time is not None:
            self._observed(result.commit_time)
        return result

    def lag_s(self) -> float:
        """Now minus the commit time of the latest change or heartbeat read (0 before the first one)."""
        if self._last_commit is None:
            return 0.0
        return max(0.0, (datetime.now(UTC) - self._last_commit).total_seconds())

    def _observed(self, commit_time: datetime) -> None:
        last = self._last_commit
        if last is not None and (commit_time - last).total_seconds() > self._settings.cdc_gap_s:
            gap_s = round((commit_time - last).total_seconds(), 1)
            metrics.CDC_GAPS.inc()
            log.warning("database change stream skipped time: changes may be lost", gap_s=gap_s)
            if self._request_reconcile is not None:
                self._request_reconcile("cdc_gap")
        if last is None or commit_time > last:
            self._last_commit = commit_time
