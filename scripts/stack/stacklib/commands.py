"""The stack's shape (which services, in which order) and its commands: up, down, status, start, stop."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from .common import (
    CACHE,
    HOST,
    ROOT,
    SECURE,
    STATE,
    TLS_DIR,
    Service,
    StackError,
    env_flag,
    log,
    port_open,
    stop_together,
)
from .connect import CONNECT, cdc_env, start_connect
from .kafka import KAFKA, KAFKA_BROKERS, bootstrap_servers, kafka_brokers, start_kafka
from .keycloak import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    FRONT,
    KEYCLOAK,
    KEYCLOAK_DB,
    KEYCLOAK_NODES,
    KEYCLOAK_PORT,
    REALM,
    REALM_FILE,
    keycloak_nodes,
    start_front,
    start_keycloak,
)
from .ldap import LDAP, ldap_env, start_ldap
from .postgres import POSTGRES, start_postgres
from .secantusdb import MONGO, MONGO_PORT, start_mongo
from .tls import SASL_MECHANISM, kafka_passwords

# STACK_CDC=1 adds Kafka Connect with Debezium's PostgreSQL connector (the CDC source); it needs PostgreSQL.
CDC = env_flag("STACK_CDC")
# STACK_LDAP=1 adds OpenLDAP and the realm's user federation on it.
LDAP_ON = env_flag("STACK_LDAP")


def check_shape() -> None:
    if KEYCLOAK_DB not in ("h2", "postgres"):
        raise StackError(f"STACK_KEYCLOAK_DB must be h2 or postgres, not {KEYCLOAK_DB!r}")
    if KEYCLOAK_NODES < 1:
        raise StackError(f"STACK_KEYCLOAK_NODES must be 1 or more, not {KEYCLOAK_NODES}")
    if KAFKA_BROKERS not in (1, 3):
        raise StackError(f"STACK_KAFKA_BROKERS must be 1 or 3, not {KAFKA_BROKERS}")
    if KEYCLOAK_NODES > 1 and KEYCLOAK_DB != "postgres":
        raise StackError("a Keycloak cluster (STACK_KEYCLOAK_NODES > 1) needs STACK_KEYCLOAK_DB=postgres")
    if SECURE and KEYCLOAK_NODES > 1:
        # The round-robin front speaks plain HTTP; a TLS front is not built yet.
        raise StackError("STACK_SECURE=1 supports one Keycloak node (STACK_KEYCLOAK_NODES=1)")
    if CDC and KEYCLOAK_DB != "postgres":
        raise StackError("STACK_CDC=1 reads Keycloak's PostgreSQL: it needs STACK_KEYCLOAK_DB=postgres")
    if CDC and SECURE:
        # The Connect worker's SASL_SSL client settings are not written yet.
        raise StackError("STACK_CDC=1 does not support STACK_SECURE=1 yet")


def services() -> tuple[Service, ...]:
    """The services of the chosen shape, in start order."""
    check_shape()
    database = (POSTGRES,) if KEYCLOAK_DB == "postgres" else ()
    front = (FRONT,) if KEYCLOAK_NODES > 1 else ()
    kafka = (broker.service for broker in kafka_brokers())
    cdc = (CONNECT,) if CDC else ()
    ldap = (LDAP,) if LDAP_ON else ()
    return (MONGO, *database, *kafka, *(node.service for node in keycloak_nodes()), *front, *ldap, *cdc)


def starters() -> dict[str, Callable[[], None]]:
    kafka = {broker.service.name: partial(start_kafka, broker) for broker in kafka_brokers()}
    keycloak = {node.service.name: partial(start_keycloak, node) for node in keycloak_nodes()}
    return {
        MONGO.name: start_mongo,
        POSTGRES.name: start_postgres,
        **kafka,
        **keycloak,
        FRONT.name: start_front,
        CONNECT.name: start_connect,
        LDAP.name: start_ldap,
    }


STOP_ORDER = ("keycloak-front", "connect", "keycloak", "ldap", "kafka", "postgres", "secantusdb")


def stop_rank(service: Service) -> int:
    return next((i for i, prefix in enumerate(STOP_ORDER) if service.name.startswith(prefix)), 0)


def all_services() -> tuple[Service, ...]:
    """The chosen shape's services, then any other this state folder has a pid file of (another shape's)."""
    shape = {service.name: service for service in services()}
    known = {service.name: service for service in (MONGO, POSTGRES, KAFKA, KEYCLOAK, FRONT, CONNECT, LDAP)}
    others = [
        known.get(p.stem, Service(p.stem, ())) for p in sorted(STATE.glob("*.pid")) if p.stem not in shape
    ]
    return (*shape.values(), *others)


def write_env() -> Path:
    secret = next(
        c["secret"]
        for c in json.loads(REALM_FILE.read_text())["clients"]
        if c["clientId"] == "user-reconciler"
    )
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers(),
        "KAFKA_USER_EVENTS_TOPIC": "keycloak.events",
        "KAFKA_ADMIN_EVENTS_TOPIC": "keycloak.admin-events",
        "KAFKA_DEAD_LETTER_TOPIC": "keycloak.events.dlq",
        "KEYCLOAK_URL": keycloak_nodes()[0].url if SECURE else f"http://{HOST}:{KEYCLOAK_PORT}",
        "KEYCLOAK_MANAGEMENT_URL": keycloak_nodes()[0].management_url,
        # Each node's own URL, comma-separated, for tests that pin reads to one node (the front's in order).
        "KEYCLOAK_NODE_URLS": ",".join(node.url for node in keycloak_nodes()),
        "KEYCLOAK_REALM": REALM,
        "KEYCLOAK_CLIENT_ID": "user-reconciler",
        "KEYCLOAK_CLIENT_SECRET": secret,
        "KEYCLOAK_ADMIN_USER": ADMIN_USER,
        "KEYCLOAK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "KEYCLOAK_SELF_SERVICE_CLIENT_ID": "e2e-self-service",
        "MONGODB_URI": f"mongodb://{HOST}:{MONGO_PORT}/?directConnection=true",
        "MONGODB_DATABASE": "app",
        "HTTP_HOST": HOST,
        "STACK_HOME": str(ROOT),
        "STACK_STATE_DIR": str(STATE),
        "STACK_KEYCLOAK_DB": KEYCLOAK_DB,
        "STACK_KEYCLOAK_NODES": str(KEYCLOAK_NODES),
        "STACK_KAFKA_BROKERS": str(KAFKA_BROKERS),
        "STACK_SECURE": "1" if SECURE else "0",
    }
    if SECURE:
        values |= {
            "KEYCLOAK_CA_FILE": str(TLS_DIR / "ca.pem"),
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SASL_MECHANISM,
            "KAFKA_SASL_USERNAME": "reconciler",
            "KAFKA_SASL_PASSWORD": kafka_passwords()["reconciler"],
            "KAFKA_SSL_CA_FILE": str(TLS_DIR / "ca.pem"),
            # The test CA's folder: the server certificate and key, for a test's own TLS server (a proxy).
            "STACK_TLS_DIR": str(TLS_DIR),
        }
    if CDC:
        values |= cdc_env()
    if LDAP_ON:
        values |= ldap_env()
    path = STATE / "env"
    path.touch(mode=0o600)  # it holds the stack's client secret and passwords
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(exist_ok=True)
    started = time.monotonic()
    for service in services():
        start_if_stopped(service)
    env = write_env()
    # (A state folder outside the checkout is shown as it is: relative_to would raise after a good start.)
    shown = env.relative_to(ROOT) if env.is_relative_to(ROOT) else env
    log(f"stack ready in {time.monotonic() - started:.0f}s; settings in {shown}")


def start_if_stopped(service: Service) -> None:
    """Start `service` and wait until it is healthy, unless it already runs (a second `up` does nothing)."""
    if service.alive():
        log(f"{service.name} already running (pid {service.pid()})")
        return
    service.pid_file.unlink(missing_ok=True)
    service.check_ports_free()
    starters()[service.name]()


def down() -> None:
    ordered = sorted(all_services(), key=stop_rank)
    for rank in sorted({stop_rank(service) for service in ordered}):
        stop_together([service for service in ordered if stop_rank(service) == rank])
    (STATE / "env").unlink(missing_ok=True)
    log("stack stopped")


def services_named(name: str, choices: tuple[Service, ...]) -> list[Service]:
    """The service called `name`; on a cluster shape `keycloak` and `kafka` name all its nodes or brokers (so a
    fault-injection test written for one node takes the whole of Keycloak or Kafka down)."""
    members = [s for s in choices if s.name == name]
    if not members and name in ("keycloak", "kafka"):
        members = [s for s in choices if re.fullmatch(rf"{name}-\d+", s.name)]
    if not members:
        raise StackError(f"no service {name!r}; choose one of {', '.join(s.name for s in choices)}")
    return members


def start_one(name: str) -> None:
    """Start one service (or a cluster's members) if not running, and wait until it is healthy."""
    for service in services_named(name, services()):
        start_if_stopped(service)


def stop_one(name: str) -> None:
    """Stop one service that `up` or `start` started (its pid file); the others keep running."""
    stop_together(services_named(name, all_services()))
    log(f"{name} stopped")


def status() -> int:
    all_up = True
    shape = services()
    # A service of another shape that still runs is listed too (`down` stops it).
    for service in [s for s in all_services() if s in shape or s.alive()]:
        running = service.alive()
        all_up &= running
        ports = ", ".join(f"{p}:{'open' if port_open(p) else 'closed'}" for p in service.ports)
        print(
            f"{service.name:<14} {'running' if running else 'stopped':<8} pid={service.pid() or '-':<8} {ports}"
        )
    return 0 if all_up else 1


def main(argv: list[str], usage: str = "") -> int:
    command = argv[1] if len(argv) > 1 else "status"
    try:
        if command == "up":
            up()
        elif command == "down":
            down()
        elif command == "status":
            return status()
        elif command in ("start", "stop") and len(argv) == 3:
            (start_one if command == "start" else stop_one)(argv[2])
        else:
            print(usage, file=sys.stderr)
            return 2
    except StackError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
