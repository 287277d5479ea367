"""The database-change source: Debezium's change records of Keycloak's user tables, read by the consumer
group beside the events (`domain.changes` parses them into the same user hints, the same queue applies
them), and the watch over the stream itself.

A replication slot is a production hazard (docs/operations.md): while nothing reads it PostgreSQL keeps
its WAL, and when it is dropped or the connector starts anew the changes in between are lost. The watch
makes both visible:

- `reconciler_cdc_lag_seconds`: now minus the commit time of the latest change or heartbeat this process
  read (minus its start while it has read none, so a stream that never delivered shows too). The
  connector's heartbeat (every 10 s) keeps it low in a quiet database on the replica that reads the
  heartbeat partition: the lowest lag over the replicas is the stream's.
- A gap: two *consecutive* heartbeat records (offsets n and n + 1 of one partition) whose commit times lie
  more than `CDC_GAP_S` apart mean the connector emitted nothing in between: it was stopped, or its slot
  was lost and made anew. Its changes of that time may be lost, so a full reconcile is requested at once, as
  the sweep does for a watermark older than the event store keeps. Heartbeats all land on one partition,
  so one replica watches; records it did not read in a row (a rebalance, a restart) are no evidence.
- A user-federation sync ended (`IgnoreReason.FEDERATION_SYNC`): the users it removed from the directory are
  named by no row, and Keycloak drops its copy of one only when it is read. A full reconcile reads them all
  (its listing makes Keycloak drop them, its confirmation reads find them gone), so one is requested, at
  most one per `CDC_SYNC_RECONCILE_SPACING_S` (a mark within the spacing is served when it has passed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from reconciler.base.config import Settings
from reconciler.domain.changes import HEARTBEAT_TOPIC_PREFIX, parse_change
from reconciler.domain.events import IgnoreReason, ParseResult
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
        self._beats: dict[int, tuple[int, datetime]] = {}  # heartbeat partition -> last (offset, commit time)
        self._started = datetime.now(UTC)
        self._sync_requested_at = float("-inf")  # monotonic: the last reconcile asked for after a sync
        self._sync_deferred: asyncio.TimerHandle | None = None
        metrics.CDC_LAG.set_function(self.lag_s)

    def parse(
        self, topic: str, key: bytes | None, value: bytes | None, *, partition: int = 0, offset: int = -1
    ) -> ParseResult:
        result = parse_change(
            topic, key, value, realm=self._settings.keycloak_realm, realm_ids=self._realm_ids
        )
        if result.commit_time is not None:
            self._observed(result.commit_time)
            if result.ignored is IgnoreReason.HEARTBEAT and topic.startswith(HEARTBEAT_TOPIC_PREFIX):
                self._heartbeat(partition, offset, result.commit_time)
        if result.ignored is IgnoreReason.FEDERATION_SYNC:
            self._federation_synced()
        return result

    def _federation_synced(self) -> None:
        if self._request_reconcile is None:
            log.info("a user-federation sync ended; the periodic reconcile is off, so removals wait")
            return
        wait_s = self._sync_requested_at + self._settings.cdc_sync_reconcile_spacing_s - time.monotonic()
        if wait_s <= 0:
            self._request_sync_reconcile()
        elif self._sync_deferred is None:
            self._sync_deferred = asyncio.get_running_loop().call_later(wait_s, self._request_sync_reconcile)

    def _request_sync_reconcile(self) -> None:
        self._sync_deferred = None
        self._sync_requested_at = time.monotonic()
        if self._request_reconcile is not None:
            self._request_reconcile("federation_sync")

    def close(self) -> None:
        """Drop a reconcile request still waiting for its spacing (the process is stopping)."""
        if self._sync_deferred is not None:
            self._sync_deferred.cancel()
            self._sync_deferred = None

    def lag_s(self) -> float:
        """Now minus the commit time of the latest change or heartbeat read (or this source's start)."""
        return max(0.0, (datetime.now(UTC) - (self._last_commit or self._started)).total_seconds())

    def _observed(self, commit_time: datetime) -> None:
        if self._last_commit is None or commit_time > self._last_commit:
            self._last_commit = commit_time

    def _heartbeat(self, partition: int, offset: int, commit_time: datetime) -> None:
        previous = self._beats.get(partition)
        self._beats[partition] = (offset, commit_time)
        if previous is None or offset != previous[0] + 1:
            return  # not read in a row here: no evidence either way
        gap_s = (commit_time - previous[1]).total_seconds()
        if gap_s > self._settings.cdc_gap_s:
            metrics.CDC_GAPS.inc()
            log.warning("database change stream was silent: changes may be lost", gap_s=round(gap_s, 1))
            if self._request_reconcile is not None:
                self._request_reconcile("cdc_gap")
