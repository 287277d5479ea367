"""Kafka Connect (distributed mode, one worker) with Debezium's PostgreSQL connector: the CDC source.

The worker runs from the broker's own jars (they hold connect-runtime 4.4.0); the connector's plugin folder is
resolved with Maven (debezium-pom.xml). `start` prepares the database as the tables' owner
(keycloak-spi-config/cdc/grants.sql: role, heartbeat table, replica identity, publication), gives the
connector's role a random password kept in a properties file that only the worker reads (Connect's file config
provider: the connector's stored config names the file, never the password), registers the connector through
the REST API and waits until the connector and its task run.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from .common import (
    CACHE,
    HOST,
    ROOT,
    SECRETS,
    STACK_DIR,
    STATE,
    Service,
    StackError,
    http_ok,
    log,
    mvn_copy_dependencies,
    wait_for,
)
from .kafka import KAFKA_BROKERS, bootstrap_servers, create_topics, kafka_brokers, kafka_libs
from .postgres import POSTGRES_DATABASE, POSTGRES_PORT, psql

CONNECT_PORT = int(os.environ.get("STACK_CONNECT_PORT", "8083"))
CONNECT = Service("connect", (CONNECT_PORT,))
CONNECT_URL = f"http://{HOST}:{CONNECT_PORT}"
DEBEZIUM_VERSION = "3.7.1.Final"  # 3.6.1 needs a class Kafka 4.4 moved (Sanitizer)
CDC_DIR = ROOT / "keycloak-spi-config" / "cdc"
CONNECTOR_FILE = CDC_DIR / "keycloak-users-connector.json"
GRANTS_FILE = CDC_DIR / "grants.sql"
CDC_ROLE = "keycloak_cdc"
# Read by the file config provider relative to the worker's working directory (its home below).
SECRETS_FILE_NAME = "cdc-database.properties"
# The user tables whose committed changes are hints, and the federation components' configuration (a sync's
# end) (topic = prefix.schema.table).
CDC_TABLES = (
    "user_entity",
    "user_attribute",
    "user_group_membership",
    "user_role_mapping",
    "component_config",
)

CONNECT_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
logger.common.name = org.apache.kafka.common
logger.common.level = warn
logger.reflections.name = org.reflections
logger.reflections.level = error
"""


def connector() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(CONNECTOR_FILE.read_text())
    return spec


def topic_prefix() -> str:
    return str(connector()["config"]["topic.prefix"])


def cdc_env() -> dict[str, str]:
    """What a consumer of the change topics needs, for .stack/env."""
    spec = connector()
    prefix = topic_prefix()
    return {
        "KAFKA_CONNECT_URL": CONNECT_URL,
        "CDC_CONNECTOR_NAME": spec["name"],
        "CDC_TOPIC_PREFIX": prefix,
        "CDC_TOPICS": ",".join(f"{prefix}.public.{table}" for table in CDC_TABLES),
        "CDC_HEARTBEAT_TOPIC": f"__debezium-heartbeat.{prefix}",
        "CDC_SLOT_NAME": spec["config"]["slot.name"],
        "CDC_PUBLICATION": spec["config"]["publication.name"],
    }


def connect_home() -> Path:
    home = STATE / "connect"
    home.mkdir(parents=True, exist_ok=True)
    return home


def plugin_path() -> Path:
    """Connect's plugin path: a folder of plugins (one per version, so an old one is never scanned too), in it
    one sub-folder with Debezium's jars."""
    plugins = CACHE / f"connect-plugins-debezium-{DEBEZIUM_VERSION}"
    mvn_copy_dependencies(
        STACK_DIR / "debezium-pom.xml",
        plugins / "debezium-connector-postgres",
        f"Debezium's PostgreSQL connector {DEBEZIUM_VERSION}",
    )
    return plugins


def worker_config() -> str:
    replicas = KAFKA_BROKERS
    return "\n".join(
        [
            f"bootstrap.servers={bootstrap_servers()}",
            "group.id=keycloak-cdc-connect",
            f"listeners=http://{HOST}:{CONNECT_PORT}",
            f"rest.advertised.host.name={HOST}",
            f"rest.advertised.port={CONNECT_PORT}",
            "config.storage.topic=connect-configs",
            "offset.storage.topic=connect-offsets",
            "status.storage.topic=connect-status",
            f"config.storage.replication.factor={replicas}",
            f"offset.storage.replication.factor={replicas}",
            f"status.storage.replication.factor={replicas}",
            "offset.storage.partitions=5",
            # The source's position is committed this often: a crash repeats at most this much of the stream.
            "offset.flush.interval.ms=10000",
            "key.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            f"plugin.path={plugin_path()}",
            # Plugins found through their service files: the worker starts about 30 s sooner than with a scan
            # of every class (Connect suggests it in its own log), and Debezium ships the service files.
            "plugin.discovery=service_load",
            "config.providers=file",
            "config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider",
            "",
        ]
    )


def request(method: str, path: str, body: object | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{CONNECT_URL}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        raise StackError(
            f"Kafka Connect {method} {path}: {error.code} {error.read().decode()[:500]}"
        ) from error
    return json.loads(text) if text else None


def keycloak_schema_ready() -> bool:
    return psql("SELECT to_regclass('public.user_attribute') IS NOT NULL", POSTGRES_DATABASE) == "t"


def prepare_database(home: Path) -> None:
    """Role, heartbeat table, replica identity and publication (grants.sql), and the role's password."""
    if not keycloak_schema_ready():
        raise StackError("Keycloak's tables do not exist yet: start keycloak before connect")
    psql("-", POSTGRES_DATABASE, stdin=GRANTS_FILE.read_text())
    secrets_file = home / SECRETS_FILE_NAME
    if not secrets_file.exists():
        secrets_file.touch(mode=0o600)
        password = secrets.token_urlsafe(24)
        secrets_file.write_text(
            f"hostname={HOST}\nport={POSTGRES_PORT}\ndbname={POSTGRES_DATABASE}\nuser={CDC_ROLE}\n"
            f"password={password}\n"
        )
    password = secrets_file.read_text().split("password=", 1)[1].strip()
    SECRETS.add(password)
    psql("-", POSTGRES_DATABASE, stdin=f"ALTER ROLE {CDC_ROLE} PASSWORD '{password}';")


# A restarted worker first serves the status its previous run stored (FAILED, say) until the task restarts.
FAILED_GRACE_S = 20
STABLE_S = 5


def connector_running(name: str, since: float) -> bool:
    """True when the connector and its task run; raise when either has stayed FAILED past the grace time."""
    try:
        status = request("GET", f"/connectors/{name}/status")
    except (StackError, OSError):
        return False
    tasks = status.get("tasks", [])
    failed = [t for t in tasks if t["state"] == "FAILED"] or status["connector"]["state"] == "FAILED"
    if failed and time.monotonic() - since > FAILED_GRACE_S:
        trace = next((t.get("trace", "") for t in tasks if t["state"] == "FAILED"), "")
        raise StackError(f"connector {name} failed: {(trace or str(status))[:1500]}")
    return status["connector"]["state"] == "RUNNING" and bool(tasks) and tasks[0]["state"] == "RUNNING"


def create_change_topics() -> None:
    """Connect would create a change topic with its first record; a consumer group that subscribes before then
    fails on the unknown topic, so the stack creates them (and the heartbeat topic) up front."""
    env = cdc_env()
    names = [*env["CDC_TOPICS"].split(","), env["CDC_HEARTBEAT_TOPIC"]]
    create_topics(kafka_brokers()[0], {name: 3 for name in names})


def start_connect() -> None:
    home = connect_home()
    prepare_database(home)
    create_change_topics()
    (home / "worker.properties").write_text(worker_config())
    (home / "log4j2.properties").write_text(CONNECT_LOG4J)
    started = time.monotonic()
    CONNECT.spawn(
        [
            "java",
            "-Xms128m",
            "-Xmx512m",
            f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
            "-cp",
            f"{kafka_libs()}/*",
            "org.apache.kafka.connect.cli.ConnectDistributed",
            str(home / "worker.properties"),
        ],
        cwd=home,
    )
    wait_for(f"Kafka Connect on {CONNECT_URL}", lambda: http_ok(f"{CONNECT_URL}/connectors"), 180, CONNECT)
    rest_s = time.monotonic() - started
    spec = connector()
    request("PUT", f"/connectors/{spec['name']}/config", spec["config"])
    registered = time.monotonic()
    running = partial(connector_running, spec["name"], registered)
    wait_for(f"connector {spec['name']} and its task RUNNING", running, 120, CONNECT)
    # A task that cannot stream (its stored position is gone with a dropped slot, say) is RUNNING for a moment
    # before it fails: it must stay running for a while to count as healthy.
    held = time.monotonic() + STABLE_S
    while time.monotonic() < held:
        if not connector_running(spec["name"], registered - FAILED_GRACE_S):
            raise StackError(
                f"connector {spec['name']} stopped running right after its start; see {CONNECT.log_file}"
            )
        time.sleep(0.5)
    log(
        f"Kafka Connect ready on {CONNECT_URL} (REST after {rest_s:.0f}s, connector {spec['name']} running after "
        f"{time.monotonic() - started:.0f}s; topics {topic_prefix()}.public.*)"
    )
