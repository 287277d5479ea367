"""Prometheus metrics of the whole process: one prefix, base units, no per-user labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "reconciler"

# --- Keycloak -----------------------------------------------------------------------------------------
KEYCLOAK_REQUESTS = Counter(
    f"{PREFIX}_keycloak_requests_total",
    "Keycloak admin API requests by operation and outcome",
    ["operation", "outcome"],  # outcome: ok, not_found, retried, client_error, server_error, timeout, ...
)
KEYCLOAK_REQUEST_SECONDS = Histogram(
    f"{PREFIX}_keycloak_request_duration_seconds", "Keycloak admin API request duration", ["operation"]
)
KEYCLOAK_TOKEN_REFRESHES = Counter(
    f"{PREFIX}_keycloak_token_refreshes_total", "Service-account tokens fetched"
)

# --- Store and apply ----------------------------------------------------------------------------------
USER_CHANGES = Counter(
    f"{PREFIX}_user_changes_total",
    "Store changes by action and path",
    ["action", "synced_by"],  # action: created, updated, deactivated, reactivated, unchanged, stale
)
STORE_WRITE_SECONDS = Histogram(f"{PREFIX}_store_write_duration_seconds", "Duration of one store bulk write")
ERASURES = Counter(
    f"{PREFIX}_erasures_total",
    "User documents whose personal fields were erased",
    ["trigger"],  # due (ERASE_DELETED_AFTER_S passed), request (`reconciler erase USER_ID`)
)

# --- Full reconcile -----------------------------------------------------------------------------------
RECONCILE_RUNS = Counter(
    f"{PREFIX}_reconcile_runs_total", "Full reconcile runs by outcome", ["outcome"]
)  # outcome: success, failed, guard_tripped, cancelled, skipped_lease, abandoned (a dead holder's run, closed)
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Full reconcile run duration",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600),
)
RECONCILE_LAST_SUCCESS = Gauge(
    f"{PREFIX}_reconcile_last_success_timestamp_seconds", "Unix time of the last successful full reconcile"
)
UNREADABLE_USERS = Counter(
    f"{PREFIX}_reconcile_unreadable_users_total",
    "Users a full reconcile listed but could not read (left as stored, never deactivated for it)",
)
MASS_DEACTIVATION_GUARD_TRIPS = Counter(
    f"{PREFIX}_mass_deactivation_guard_trips_total", "Runs whose deactivations the guard refused"
)

# --- Event path ---------------------------------------------------------------------------------------
EVENTS = Counter(
    f"{PREFIX}_events_total", "Kafka messages by outcome", ["topic", "outcome"]
)  # outcome: hinted, ignored_realm, ignored_type, dead_lettered
HINTS_COALESCED = Counter(
    f"{PREFIX}_hints_coalesced_total", "Hints merged into an already queued or running user"
)
LOOKUPS = Counter(f"{PREFIX}_lookups_total", "Event-path user lookups by outcome", ["outcome"])
APPLY_LATENCY = Histogram(
    f"{PREFIX}_event_apply_latency_seconds",
    "From the Keycloak event time to the store write",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HINTS_ABANDONED = Counter(
    f"{PREFIX}_hints_abandoned_total",
    "Users the event path gave up on after EVENT_MAX_APPLY_ATTEMPTS failures that were not outages",
)
CDC_LAG = Gauge(
    f"{PREFIX}_cdc_lag_seconds",
    "Now minus the commit time of the latest database change (or Debezium heartbeat) read; before the first "
    "one, now minus the start of the source",
)
CDC_GAPS = Counter(
    f"{PREFIX}_cdc_gaps_total",
    "Silences of the database change stream longer than CDC_GAP_S between two consecutive heartbeats "
    "(changes may be lost: a full reconcile was requested)",
)
CONSUMER_RESTARTS = Counter(
    f"{PREFIX}_consumer_restarts_total",
    "Times `run` started the event path's Kafka clients again after Kafka failed them (outage, refusal)",
)
HINTS_COVERED = Counter(
    f"{PREFIX}_hints_covered_total",
    "Event-path users the store had already observed after their hints (no Keycloak read)",
)
BURST_LISTINGS = Counter(
    f"{PREFIX}_burst_listings_total",
    "Full reconciles the event path asked for to read a burst of waiting users, by outcome",
    ["outcome"],
)  # outcome: success, failed, guard_tripped, not_run (another replica held the lease)
STORE_RETRIES = Counter(
    f"{PREFIX}_store_retries_total",
    "Batches of the full reconcile tried again after the store timed out or was unreachable",
)
QUEUE_DEPTH = Gauge(f"{PREFIX}_queue_users", "Users queued or in flight on the event path")
CONSUMER_LAG = Gauge(
    f"{PREFIX}_consumer_lag_messages", "Messages behind the end of each partition", ["topic", "partition"]
)
CONSUMER_LAG_SECONDS = Gauge(
    f"{PREFIX}_consumer_lag_seconds",
    "Age of the oldest uncommitted message of each partition",
    ["topic", "partition"],
)
DEAD_LETTERS = Counter(f"{PREFIX}_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"])

# --- Failures -----------------------------------------------------------------------------------------
DEPENDENCY_FAILING = Gauge(
    f"{PREFIX}_dependency_failing",
    "1 while a dependency fails: kind temporary (an outage) or permanent (refused until someone acts)",
    ["component", "kind"],
)

# --- Event-store sweep --------------------------------------------------------------------------------
SWEEP_ACTIVE = Gauge(
    f"{PREFIX}_sweep_active",
    "1 while the event-store sweep runs (0: off, not permitted, or the realm stores no events)",
)
SWEEP_LAG_SECONDS = Gauge(f"{PREFIX}_sweep_lag_seconds", "Now minus the sweep's watermark")
SWEEP_EVENTS = Counter(
    f"{PREFIX}_sweep_events_total",
    "Stored events the sweep read, by source and outcome",
    ["source", "outcome"],
)  # source: admin, user; outcome: hinted, covered (already applied), ignored_*, invalid_*, seen
SWEEPS = Counter(f"{PREFIX}_sweeps_total", "Sweeps by outcome", ["outcome"])  # ok, failed, skipped_lease
SWEEP_DURATION = Histogram(f"{PREFIX}_sweep_duration_seconds", "Duration of one sweep")
SWEEP_RECONCILE_REQUESTS = Counter(
    f"{PREFIX}_sweep_reconcile_requests_total", "Full reconciles the sweep requested, by reason", ["reason"]
)
