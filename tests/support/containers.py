"""The same stack in containers (Kafka, Keycloak with the listener, a MongoDB-wire store), with testcontainers.

Used by the `stack_env` fixture when no local stack is configured and a Docker API answers, or always with
TEST_STACK=containers. The images default to the official ones; TEST_KAFKA_IMAGE, TEST_KEYCLOAK_IMAGE and
TEST_MONGO_IMAGE name others with the same contract, such as the local images scripts/image/local_images.py
builds where no registry answers (`make test-containers`). Published ports bind 127.0.0.1 only.

The containers find each other by address, not by name: Keycloak is given the broker's address as the host
`kafka`, and the broker's controller is on localhost, so no DNS on the container network is needed (Podman's
CNI networks have none without a plugin).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import docker
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from tests.support.ports import free_port
from tests.support.stack import REALM_FILE, ROOT

KAFKA_IMAGE = os.environ.get("TEST_KAFKA_IMAGE") or "apache/kafka:4.4.0"
KEYCLOAK_IMAGE = os.environ.get("TEST_KEYCLOAK_IMAGE") or "quay.io/keycloak/keycloak:26.7.3"
MONGO_IMAGE = os.environ.get("TEST_MONGO_IMAGE") or "mongo:7.0"
# Containers and networks carry this label, so a runner can remove what an interrupted run left behind.
RUN_LABEL = "reconciler.test-run"
LISTENER_LABEL = "reconciler.listener-sha256"
LISTENER_DIR = ROOT / "keycloak-spi-config" / "kafka-listener"
LISTENER_JAR = LISTENER_DIR / "target" / "keycloak-kafka-listener.jar"
TOPICS = {"keycloak.events": 3, "keycloak.admin-events": 3, "keycloak.events.dlq": 1}
INTERNAL_KAFKA = "kafka:29092"  # the broker as the other containers reach it
HOST = "127.0.0.1"
# A cold Keycloak (the Quarkus build of start-dev, a new H2 schema, the realm import) on a busy 2-core machine.
KEYCLOAK_START_S = 480


def labels() -> dict[str, str]:
    return {RUN_LABEL: os.environ.get("TEST_RUN_ID", "manual")}


def publish(container: DockerContainer, port: int, host_port: int | None = None) -> int:
    """Publish the container's `port` on 127.0.0.1 only (testcontainers alone would bind every address)."""
    host_port = host_port or free_port()
    # docker-py takes (address, port) for a binding; testcontainers' own setter knows only a port.
    container.ports[f"{port}/tcp"] = (HOST, host_port)  # type: ignore[assignment]
    return host_port


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, container: DockerContainer) -> None:
    """Poll `check` until it holds; fail early with the container's log tail when the container exits."""
    deadline = time.monotonic() + timeout_s
    while not check():
        container.reload()
        if container.status not in ("created", "running"):
            raise RuntimeError(f"{what}: the container is {container.status}\n{log_tail(container)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s\n{log_tail(container)}")
        time.sleep(0.5)


def log_tail(container: DockerContainer, lines: int = 30) -> str:
    stdout, stderr = container.get_logs()
    text = (stdout + stderr).decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def kafka_container(network: Network, port: int) -> DockerContainer:
    """KRaft, broker and controller in one; clients on 127.0.0.1:`port` (the same number inside, so the
    advertised address works from the host), the other containers on kafka:29092."""
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_network(network)
        .with_kwargs(hostname="kafka", labels=labels())
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env(
            "KAFKA_LISTENERS", f"HOST://0.0.0.0:{port},INTERNAL://0.0.0.0:29092,CONTROLLER://localhost:9093"
        )
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"HOST://{HOST}:{port},INTERNAL://{INTERNAL_KAFKA}")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "HOST:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
        )
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "INTERNAL")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_NUM_PARTITIONS", "3")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    publish(container, port, port)
    return container


def create_topics(bootstrap: str) -> bool:
    """The stack's topics (as scripts/stack creates them); False while the broker does not answer yet."""

    async def create() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            wanted = [NewTopic(name, partitions, 1) for name, partitions in TOPICS.items()]
            existing = set(await admin.list_topics())
            missing = [topic for topic in wanted if topic.name not in existing]
            if missing:
                await admin.create_topics(missing)
            return True
        except TopicAlreadyExistsError:
            return True
        except KafkaError:
            return False
        finally:
            await admin.close()

    # In a thread of its own: the caller may be running inside the tests' event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


def mongo_container(network: Network) -> tuple[DockerContainer, str]:
    container = DockerContainer(MONGO_IMAGE).with_network(network).with_kwargs(labels=labels())
    port = publish(container, 27017)
    return container, f"mongodb://{HOST}:{port}/?directConnection=true"


def mongo_ready(uri: str) -> bool:
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
            client.admin.command("ping")
        return True
    except PyMongoError:
        return False


def has_listener(image: str) -> bool:
    """The image holds this listener jar already (the local image does, see scripts/image/local_images.py).
    Mounting it again would give it another modification time, and Keycloak would redo its build (about
    30 s) at every start."""
    client = docker.from_env()
    try:
        found = client.images.get(image).labels.get(LISTENER_LABEL)
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()
    return found == hashlib.sha256(LISTENER_JAR.read_bytes()).hexdigest()


def keycloak_container(network: Network, kafka_address: str) -> tuple[DockerContainer, int]:
    container = (
        DockerContainer(KEYCLOAK_IMAGE)
        .with_network(network)
        # Keycloak's listener reaches the broker by the name it advertises, `kafka`.
        .with_kwargs(extra_hosts={"kafka": kafka_address}, labels=labels())
        .with_volume_mapping(str(REALM_FILE), "/opt/keycloak/data/import/app-realm.json", "ro")
        .with_env("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
        .with_env("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin")
        .with_env("JAVA_OPTS_KC_HEAP", "-Xms256m -Xmx1024m")
        # The build options (health, metrics) are those the local image is built with (keycloak-prebuild.sh).
        .with_command(
            [
                "start-dev",
                # 26.7's development mode listens on localhost only (outside WSL): the published port needs
                # every interface of the container.
                "--http-host=0.0.0.0",
                "--import-realm",
                "--health-enabled=true",
                "--metrics-enabled=false",
                f"--spi-events-listener--kafka--bootstrap-servers={INTERNAL_KAFKA}",
                "--spi-events-listener--kafka--events-topic=keycloak.events",
                "--spi-events-listener--kafka--admin-events-topic=keycloak.admin-events",
            ]
        )
    )
    if not has_listener(KEYCLOAK_IMAGE):
        container.with_volume_mapping(str(LISTENER_JAR), f"/opt/keycloak/providers/{LISTENER_JAR.name}", "ro")
    return container, publish(container, 8080)


def url_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def container_address(container: DockerContainer, network: Network) -> str:
    container.reload()
    networks = container.get_wrapped_container().attrs["NetworkSettings"]["Networks"]
    return str(networks[network.name]["IPAddress"])


def build_listener() -> None:
    if not LISTENER_JAR.exists():
        subprocess.run(
            ["mvn", "-q", "-B", "-f", str(LISTENER_DIR / "pom.xml"), "package", "-DskipTests"], check=True
        )


@contextmanager
def start_container_stack() -> Iterator[dict[str, str]]:
    build_listener()
    realm = json.loads(REALM_FILE.read_text())
    secret = next(c["secret"] for c in realm["clients"] if c["clientId"] == "user-reconciler")
    kafka_port = free_port()
    bootstrap = f"{HOST}:{kafka_port}"
    with ExitStack() as stack:
        network = stack.enter_context(Network(docker_network_kw={"labels": labels()}))
        kafka = stack.enter_context(kafka_container(network, kafka_port))
        mongo, mongo_uri = mongo_container(network)
        stack.enter_context(mongo)
        # Keycloak starts while the broker and the store come up: its start is the long one.
        keycloak, keycloak_port = keycloak_container(network, container_address(kafka, network))
        stack.enter_context(keycloak)
        wait_until(f"Kafka topics on {bootstrap}", lambda: create_topics(bootstrap), 120, kafka)
        wait_until(f"the store at {mongo_uri}", lambda: mongo_ready(mongo_uri), 60, mongo)
        keycloak_url = f"http://{HOST}:{keycloak_port}"
        realm_url = f"{keycloak_url}/realms/{realm['realm']}/.well-known/openid-configuration"
        wait_until(f"Keycloak at {keycloak_url}", lambda: url_ok(realm_url), KEYCLOAK_START_S, keycloak)
        yield {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_USER_EVENTS_TOPIC": "keycloak.events",
            "KAFKA_ADMIN_EVENTS_TOPIC": "keycloak.admin-events",
            "KAFKA_DEAD_LETTER_TOPIC": "keycloak.events.dlq",
            "KEYCLOAK_URL": keycloak_url,
            "KEYCLOAK_REALM": realm["realm"],
            "KEYCLOAK_CLIENT_ID": "user-reconciler",
            "KEYCLOAK_CLIENT_SECRET": secret,
            "KEYCLOAK_ADMIN_USER": "admin",
            "KEYCLOAK_ADMIN_PASSWORD": "admin",
            "KEYCLOAK_SELF_SERVICE_CLIENT_ID": "e2e-self-service",
            "MONGODB_URI": mongo_uri,
            "MONGODB_DATABASE": "app",
            "HTTP_HOST": HOST,
        }
