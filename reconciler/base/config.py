"""Every knob of the reconciler, read from the environment (one place, validated at start)."""

from __future__ import annotations

import ssl
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Keycloak's tables whose rows name a user (`domain.changes.USER_ID_COLUMNS`, held equal by a test), and the
# federation components' configuration, whose rows say when a user-federation sync ended.
CdcTable = Literal[
    "user_entity",
    "user_attribute",
    "user_group_membership",
    "user_role_mapping",
    "federated_identity",
    "component_config",
]


class Settings(BaseSettings):
    """Reconciler settings. Each field is read from the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    # --- Keycloak -------------------------------------------------------------------------------------
    keycloak_url: AnyHttpUrl = Field(description="Base URL of Keycloak, e.g. https://sso.example.com")
    keycloak_realm: str = Field(min_length=1, description="Realm whose users are mirrored")
    keycloak_realm_id: str | None = Field(
        default=None,
        description="The realm's internal id (Keycloak's `id` of the realm; often its name): database rows "
        "(CDC) of users of other realms are then skipped without a read. Unset: every row is read and a "
        "read in KEYCLOAK_REALM decides",
    )
    keycloak_client_id: str = Field(
        default="user-reconciler",
        min_length=1,
        description="Confidential client with a service account holding realm-management/view-users",
    )
    keycloak_client_secret: SecretStr = Field(description="Secret of that client (never logged)")
    keycloak_verify_tls: bool = Field(default=True, description="Verify Keycloak's TLS certificate")
    keycloak_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of the CA(s) that signed Keycloak's certificate (e.g. a mounted Secret), "
        "trusted instead of the system CAs; empty: the system CAs",
    )
    keycloak_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one Keycloak request")
    keycloak_max_concurrency: int = Field(
        default=8, ge=1, le=256, description="Keycloak requests in flight at once, across all paths"
    )
    keycloak_max_requests_per_s: float = Field(
        default=0.0, ge=0, description="Keycloak request rate limit per process; 0 means unlimited"
    )
    keycloak_retry_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts for a Keycloak request that failed transiently"
    )
    keycloak_page_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Users per page in the full reconcile (100 lists 50,000 users in half the time of 500 "
        "here, 500 is faster at 10,000: BENCHMARKS.md)",
    )
    keycloak_list_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Pages of the full reconcile's listing requested at once (each still takes a slot of "
        "KEYCLOAK_MAX_CONCURRENCY); the run holds at most this many pages plus the one being applied",
    )
    keycloak_retry_after_max_s: float = Field(
        default=30.0, ge=0, description="Longest wait a 429's Retry-After may ask for"
    )
    keycloak_page_size_max: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="0 keeps every page of the full reconcile at KEYCLOAK_PAGE_SIZE users; above it, the "
        "listing adapts its page size between the two toward the fewest measured seconds per listed user "
        "(Keycloak's cost per user depends on the page size both ways, see BENCHMARKS.md)",
    )

    keycloak_listing: Literal["auto", "windows", "offset"] = Field(
        default="auto",
        description="How the full reconcile lists the realm: auto (the default: windows of creation time "
        "when Keycloak filters by it, found out once at the first run over a non-empty realm and logged, "
        "else offset pages), windows (Keycloak 26.6+: windows sized by /users/count, of at most "
        "KEYCLOAK_PAGE_SIZE - 1 users, so every request stays shallow; see ARCHITECTURE.md) or offset "
        "(offset pages, whose cost grows with their depth; also right behind a proxy that strips query "
        "parameters)",
    )

    # --- Store ----------------------------------------------------------------------------------------
    mongodb_uri: SecretStr = Field(
        description="MongoDB connection string (may carry credentials; never logged)"
    )
    mongodb_database: str = Field(default="app", min_length=1, description="Database holding the users")
    mongodb_users_collection: str = Field(default="users", min_length=1, description="Collection of users")
    mongodb_timeout_s: float = Field(default=10.0, gt=0, description="Server selection and socket timeout")
    mongodb_scan_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="How long one batch of a full reconcile's collection scan (the store snapshot, the closing "
        "scan) may take, instead of MONGODB_TIMEOUT_S: SecantusDB answers a scan's first batch only after "
        "reading most of the collection (24 s at 1,000,000 users on this project's bench machine)",
    )
    mongodb_retry_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Attempts of one batch of the full reconcile when the store timed out or was unreachable "
        "(every write is a guarded apply, so trying again is safe)",
    )

    # --- Kafka ----------------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1, description="Kafka brokers")
    kafka_group_id: str = Field(
        default="keycloak-user-reconciler", min_length=1, description="Consumer group"
    )
    kafka_group_instance_id: str | None = Field(
        default=None, description="Static membership id (e.g. the pod name); empty for dynamic membership"
    )
    kafka_user_events_topic: str = Field(
        default="keycloak.events", description="Topic of Keycloak user events"
    )
    kafka_admin_events_topic: str = Field(
        default="keycloak.admin-events", description="Topic of Keycloak admin events"
    )
    kafka_dead_letter_topic: str = Field(
        default="keycloak.events.dlq", min_length=1, description="Topic for messages that cannot be used"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="Kafka security protocol"
    )
    kafka_sasl_mechanism: str | None = Field(default=None, description="SASL mechanism, e.g. SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password (never logged)")
    kafka_retry_attempts: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Attempts of a one-shot command's Kafka connection (replay) before it gives up (exit 8); "
        "`run` never gives up on Kafka: it is not ready and keeps trying",
    )
    kafka_ssl_ca_file: Path | None = Field(
        default=None,
        description="PEM bundle of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL), trusted "
        "instead of the system CAs; empty: the system CAs",
    )

    # --- Event path -----------------------------------------------------------------------------------
    consumer_enabled: bool = Field(default=True, description="Run the Kafka consumer in `reconciler run`")
    consumer_max_pending_users: int = Field(
        default=10_000, ge=1, description="Distinct users queued before partitions are paused"
    )
    consumer_commit_interval_s: float = Field(
        default=1.0, gt=0, description="How often offsets are committed"
    )
    consumer_max_in_flight_users: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Users applied at once on the event path (their Keycloak reads stay bounded by "
        "KEYCLOAK_MAX_CONCURRENCY; their store writes are grouped)",
    )
    consumer_start_offset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a consumer group without committed offsets starts: the topics' whole history "
        "(earliest) or only new events (latest; the full reconcile covers the rest)",
    )
    consumer_max_poll_records: int = Field(
        default=500, ge=1, le=10_000, description="Records fetched per poll"
    )
    consumer_session_timeout_s: float = Field(
        default=30.0,
        ge=6,
        le=300,
        description="Group session timeout (static members keep partitions this long)",
    )
    consumer_drain_timeout_s: float = Field(
        default=20.0, gt=0, description="Time to finish in-flight work on revocation or shutdown"
    )
    event_not_found_retries: int = Field(
        default=3, ge=0, le=20, description="Re-reads of a user a create/update hint could not find yet"
    )
    event_not_found_backoff_s: float = Field(
        default=0.5, ge=0, description="First delay before re-reading a user not found after a hint"
    )
    event_recheck_delay_s: float = Field(
        default=2.0, ge=0, description="Delay of the follow-up re-check after an update hint; 0 disables it"
    )
    event_recheck: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Which update hints get the follow-up re-check (a second GET of the user): auto skips "
        "it for records marked `x-published: after-commit` (our listener), always re-checks every update "
        "hint (a Keycloak cluster, whose other nodes may answer from a cache not yet invalidated), never "
        "leaves it to the full reconcile",
    )
    event_burst_listing: bool = Field(
        default=True,
        description="Read a burst of waiting users (a new group's backlog, a replay of events, a mass "
        "change) by one full reconcile instead of one GET each, when the measured request costs say the "
        "listing is cheaper; needs RECONCILE_ENABLED",
    )
    event_covered_margin_s: float = Field(
        default=5.0,
        ge=0,
        description="A hint whose user the store observed at least this long after the event's time "
        "(Keycloak's clock) costs no read: clock skew between Keycloak and the reconciler must stay below it",
    )
    event_max_apply_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description=(
            "Attempts at a user whose apply fails with an error that is not an outage (e.g. a representation"
            " Keycloak sent that cannot be read); then its hints are dropped, counted and left to the next"
            " full reconcile. Outages are retried without limit."
        ),
    )

    # --- Full reconcile -------------------------------------------------------------------------------
    reconcile_enabled: bool = Field(default=True, description="Run the periodic full reconcile")
    reconcile_interval_s: float = Field(default=900.0, gt=0, description="Seconds between full reconciles")
    reconcile_jitter_s: float = Field(default=30.0, ge=0, description="Random delay added to each interval")
    reconcile_lease_ttl_s: float = Field(
        default=600.0, gt=0, description="Lease expiry: a crashed holder blocks others at most this long"
    )
    mass_deactivation_max_ratio: float = Field(
        default=0.10, ge=0, le=1, description="Share of active users one run may deactivate"
    )
    mass_deactivation_min_count: int = Field(
        default=5, ge=0, description="Deactivations always allowed in one run, whatever the share"
    )
    sync_groups_and_roles: bool = Field(default=False, description="Mirror group names and realm roles")
    mirrored_attributes: str = Field(
        default="picture=avatar_url",
        description="Keycloak user attributes mirrored into document fields, as comma-separated "
        "attribute=field pairs, e.g. picture=avatar_url,department=department,phoneNumber=phone_number; "
        "empty: none, and the full reconcile lists brief representations (cheaper, BENCHMARKS.md). A "
        "multi-valued attribute mirrors its first value, an absent or empty one is null. A field is a name "
        "(a letter, then letters, digits, _), none of the document's own, each the target of one attribute; "
        "mirrored fields are personal data (erased with the others). Checked at start (exit 2)",
    )
    organizations_enabled: bool = Field(
        default=False,
        description="Mirror each user's Keycloak 26 organization memberships (`organizations`: id, alias, "
        "name, membership type); needs the realm's organizations on and realm-management/view-organizations",
    )
    reconcile_store_snapshot: bool = Field(
        default=True,
        description="The full reconcile reads the store in one scan while its listing starts and compares "
        "listed users with it, instead of one store read per page; costs about 25 bytes per stored user "
        "for the run (sorted arrays). Not used with SYNC_GROUPS_AND_ROLES or ORGANIZATIONS_ENABLED",
    )

    # --- Erasure -------------------------------------------------------------------------------------
    erase_deleted_after_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds a user deleted in Keycloak keeps its personal fields in the store (e.g. "
        "2592000: 30 days); after that they are removed and the document is marked `erased_at`, its ids "
        "kept. 0: never (off)",
    )
    erase_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="How often `reconciler run` erases the users that are due (one replica, by a lease); "
        "used only when ERASE_DELETED_AFTER_S is above 0",
    )

    # --- Event-store sweep ----------------------------------------------------------------------------
    sweep_enabled: bool = Field(
        default=True,
        description="Read Keycloak's stored admin and user events in `reconciler run` (a second, durable "
        "source beside Kafka; needs realm-management/view-events)",
    )
    sweep_interval_s: float = Field(
        default=15.0, gt=0, description="Seconds between two reads of the event store"
    )
    sweep_overlap_s: float = Field(
        default=5.0,
        ge=0,
        description="Each read starts this far before the watermark (events of one millisecond, clock skew "
        "between Keycloak nodes); events already handled are skipped by id",
    )
    sweep_page_size: int = Field(default=500, ge=1, le=5000, description="Stored events per request")
    sweep_lease_ttl_s: float = Field(
        default=60.0, gt=0, description="Sweeper lease expiry: a crashed sweeper is replaced within this"
    )
    sweep_reconcile_spacing_s: float = Field(
        default=300.0,
        ge=0,
        description="Least time between two full reconciles the sweeper requests (imports, an old watermark)",
    )

    # --- Database changes (CDC) -------------------------------------------------------------------------
    cdc_enabled: bool = Field(
        default=False,
        description="Read the change topics Debezium writes from Keycloak's database (keycloak-spi-config/cdc/) "
        "in the consumer group: every committed change of a user, also those no event announces (LDAP "
        "syncs, imports, Workflows)",
    )
    cdc_topic_prefix: str = Field(
        default="keycloak.cdc",
        min_length=1,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The connector's `topic.prefix`: change topics are `<prefix>.<schema>.<table>`, "
        "heartbeats `__debezium-heartbeat.<prefix>`",
    )
    cdc_schema: str = Field(
        default="public",
        min_length=1,
        pattern=r"^[A-Za-z0-9_]+$",
        description="The PostgreSQL schema of Keycloak's tables",
    )
    cdc_tables: Annotated[list[CdcTable], NoDecode] = Field(
        default=[
            "user_entity",
            "user_attribute",
            "user_group_membership",
            "user_role_mapping",
            "component_config",
        ],
        min_length=1,
        description="Keycloak's tables the connector publishes (its `table.include.list`), comma-separated; "
        "each row names a user, except `component_config`, whose rows mark the end of a user-federation "
        "(LDAP) sync: leave it out and users removed from the directory wait for the periodic reconcile",
    )
    cdc_sync_reconcile_spacing_s: float = Field(
        default=300.0,
        ge=0,
        description="After a user-federation sync ended (its `component_config` mark), a full reconcile is "
        "requested so that users removed from the directory leave the store; at most one request per this "
        "many seconds (a later mark waits for the spacing; 0: one per sync)",
    )
    cdc_gap_s: float = Field(
        default=60.0,
        gt=0,
        description="Two consecutive Debezium heartbeats (every 10 s) further apart than this mean the "
        "connector was stopped or its slot lost and made anew, and changes of that time may be lost: a full "
        "reconcile is requested",
    )

    # --- Retries and batching ------------------------------------------------------------------------
    retry_request_backoff_s: float = Field(
        default=0.5,
        gt=0,
        description="First delay between attempts of one Keycloak request, store batch, Kafka connection or dead-letter publish",
    )
    retry_request_backoff_max_s: float = Field(
        default=10.0, gt=0, description="Longest delay between attempts of one request"
    )
    retry_user_backoff_s: float = Field(
        default=0.5,
        gt=0,
        description="First delay before a user whose apply failed (outage, refusal) is tried again; "
        "the worker is free meanwhile",
    )
    retry_user_backoff_max_s: float = Field(
        default=15.0,
        gt=0,
        description="Longest such delay: after an outage or a refusal is fixed, work resumes within it",
    )
    reconcile_retry_backoff_s: float = Field(
        default=30.0,
        gt=0,
        description="First delay before a failed full reconcile is tried again (doubling up to the interval)",
    )
    apply_batch_size: int = Field(
        default=100, ge=1, le=1000, description="Users read from the store and written in one batch"
    )
    permanent_failure_log_interval_s: float = Field(
        default=60.0, gt=0, description="At most one error line per this many seconds for a lasting refusal"
    )

    # --- Process --------------------------------------------------------------------------------------
    http_enabled: bool = Field(default=True, description="Serve /healthz, /readyz and /metrics")
    http_host: str = Field(default="0.0.0.0", description="Address of the health and metrics server")
    http_port: int = Field(default=8000, ge=0, le=65535, description="Port of the health and metrics server")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Log level (DEBUG also turns on the client libraries' lines, except PyMongo's command log, which quotes documents)",
    )
    log_format: Literal["json", "console"] = Field(default="json", description="JSON lines or human console")

    @field_validator(
        "keycloak_realm_id",
        "kafka_group_instance_id",
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "keycloak_ca_file",
        "kafka_ssl_ca_file",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("keycloak_ca_file", "kafka_ssl_ca_file")
    @classmethod
    def _ca_bundle_loads(cls, path: Path | None) -> Path | None:
        """Checked at start, so a missing or unreadable bundle is a configuration error, not an outage."""
        if path is not None:
            load_ca_bundle(path)
        return path

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not self.kafka_sasl_mechanism:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs KAFKA_SASL_MECHANISM"
            )
        if self.kafka_sasl_mechanism and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError("KAFKA_SASL_MECHANISM needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        return self

    @field_validator("cdc_tables", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _page_size_bounds(self) -> Settings:
        if self.keycloak_page_size_max and self.keycloak_page_size_max < self.keycloak_page_size:
            raise ValueError("KEYCLOAK_PAGE_SIZE_MAX must be 0 or at least KEYCLOAK_PAGE_SIZE")
        return self

    @property
    def keycloak_page_size_bounds(self) -> tuple[int, int]:
        """Smallest and largest page of the full reconcile's listing (equal: a fixed page size)."""
        return self.keycloak_page_size, max(self.keycloak_page_size, self.keycloak_page_size_max)

    @model_validator(mode="after")
    def _topics_distinct(self) -> Settings:
        if self.kafka_dead_letter_topic in {self.kafka_user_events_topic, self.kafka_admin_events_topic}:
            raise ValueError("KAFKA_DEAD_LETTER_TOPIC must differ from the event topics")
        return self

    @cached_property
    def keycloak_base_url(self) -> str:
        """Keycloak URL without a trailing slash."""
        return str(self.keycloak_url).rstrip("/")

    @property
    def event_topics(self) -> list[str]:
        """The event topics the consumer reads (empty names are left out)."""
        return [t for t in (self.kafka_user_events_topic, self.kafka_admin_events_topic) if t]

    @property
    def cdc_topics(self) -> list[str]:
        """The change topics (one per table) and the heartbeat topic, when CDC is on."""
        if not self.cdc_enabled:
            return []
        tables = [
            f"{self.cdc_topic_prefix}.{self.cdc_schema}.{table}" for table in dict.fromkeys(self.cdc_tables)
        ]
        return [*tables, f"__debezium-heartbeat.{self.cdc_topic_prefix}"]

    @property
    def consumed_topics(self) -> list[str]:
        """Every topic the consumer group reads: the events, and the changes when CDC is on."""
        return [*self.event_topics, *self.cdc_topics]


def load_ca_bundle(path: Path) -> ssl.SSLContext:
    """A client TLS context (hostname checked) that trusts the CAs of the PEM bundle at `path` only.

    Raises ValueError naming the problem, never the file's content."""
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    try:
        return ssl.create_default_context(cafile=str(path))
    except PermissionError:
        raise ValueError(f"{path} is not readable") from None
    except (ssl.SSLError, OSError) as error:
        raise ValueError(f"{path} holds no PEM CA certificate ({type(error).__name__})") from None
