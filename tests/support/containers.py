"""The same stack in Docker (official Kafka, Keycloak and MongoDB images), for laptops with a Docker engine.

Used by the `stack_env` fixture only when no local stack is configured and `docker info` answers. The
Keycloak container gets the listener jar built from keycloak-spi-config/ and the same realm file.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.waiting_utils import wait_for_logs
from testcontainers.mongodb import MongoDbContainer

from tests.support.ports import free_port
from tests.support.stack import REALM_FILE, ROOT

KAFKA_IMAGE = "apache/kafka:4.1.0"
KEYCLOAK_IMAGE = "quay.io/keycloak/keycloak:26.5.6"
MONGO_IMAGE = "mongo:7.0"
LISTENER_DIR = ROOT / "keycloak-spi-config" / "kafka-listener"
LISTENER_JAR = LISTENER_DIR / "target" / "keycloak-kafka-listener.jar"


@contextmanager
def start_container_stack() -> Iterator[dict[str, str]]:
    if not LISTENER_JAR.exists():
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(LISTENER_DIR / "pom.xml"), "package", "-DskipTests"], check=True
        )
    realm = json.loads(REALM_FILE.read_text())
    secret = next(c["secret"] for c in realm["clients"] if c["clientId"] == "user-reconciler")
    kafka_port = free_port()
    with ExitStack() as stack:
        network = stack.enter_context(Network())
        kafka = (
            DockerContainer(KAFKA_IMAGE)
            .with_network(network)
            .with_network_aliases("kafka")
            .with_bind_ports(kafka_port, kafka_port)
            .with_env("KAFKA_NODE_ID", "1")
            .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
            .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@kafka:9093")
            .with_env(
                "KAFKA_LISTENERS",
                f"HOST://0.0.0.0:{kafka_port},INTERNAL://0.0.0.0:29092,CONTROLLER://0.0.0.0:9093",
            )
            .with_env("KAFKA_ADVERTISED_LISTENERS", f"HOST://127.0.0.1:{kafka_port},INTERNAL://kafka:29092")
            .with_env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "HOST:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            )
            .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "INTERNAL")
            .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
            .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
            .with_env("KAFKA_NUM_PARTITIONS", "3")
            .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")
        )
        stack.enter_context(kafka)
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        mongo = stack.enter_context(MongoDbContainer(MONGO_IMAGE).with_network(network))
        keycloak = (
            DockerContainer(KEYCLOAK_IMAGE)
            .with_network(network)
            .with_exposed_ports(8080)
            .with_volume_mapping(
                str(LISTENER_JAR), "/opt/keycloak/providers/keycloak-kafka-listener.jar", "ro"
            )
            .with_volume_mapping(str(REALM_FILE), "/opt/keycloak/data/import/app-realm.json", "ro")
            .with_env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
            .with_env("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin")
            .with_command(
                "start-dev --import-realm --health-enabled=true "
                "--spi-events-listener--kafka--bootstrap-servers=kafka:29092"
            )
        )
        stack.enter_context(keycloak)
        wait_for_logs(keycloak, "Listening on:", timeout=240)
        yield {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
            "KAFKA_USER_EVENTS_TOPIC": "keycloak.events",
            "KAFKA_ADMIN_EVENTS_TOPIC": "keycloak.admin-events",
            "KAFKA_DEAD_LETTER_TOPIC": "keycloak.events.dlq",
            "KEYCLOAK_URL": f"http://{keycloak.get_container_host_ip()}:{keycloak.get_exposed_port(8080)}",
            "KEYCLOAK_REALM": realm["realm"],
            "KEYCLOAK_CLIENT_ID": "user-reconciler",
            "KEYCLOAK_CLIENT_SECRET": secret,
            "KEYCLOAK_ADMIN_USER": "admin",
            "KEYCLOAK_ADMIN_PASSWORD": "admin",
            "KEYCLOAK_SELF_SERVICE_CLIENT_ID": "e2e-self-service",
            "MONGODB_URI": mongo.get_connection_url(),
            "MONGODB_DATABASE": "app",
        }
