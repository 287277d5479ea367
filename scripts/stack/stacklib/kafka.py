"""Apache Kafka in KRaft mode from the Maven Central jars: one broker, or three (STACK_KAFKA_BROKERS=3)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .common import (
    CACHE,
    HOST,
    SECURE,
    STACK_DIR,
    STATE,
    TLS_DIR,
    Service,
    StackError,
    log,
    mvn_copy_dependencies,
    port_open,
    run,
    wait_for,
)
from .tls import KAFKA_USERS, SASL_MECHANISM, ensure_tls, jaas, kafka_client_properties, kafka_passwords

KAFKA_VERSION = "4.4.0"
KAFKA_PORT = int(os.environ.get("STACK_KAFKA_PORT", "9092"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("STACK_KAFKA_CONTROLLER_PORT", "9093"))
# STACK_KAFKA_BROKERS=3: a KRaft cluster, broker i (from 0) on STACK_KAFKA_PORT + 2i (controller + 2i).
KAFKA_BROKERS = int(os.environ.get("STACK_KAFKA_BROKERS", "1"))
TOPICS = {"keycloak.events": 3, "keycloak.admin-events": 3, "keycloak.events.dlq": 1}
KAFKA = Service("kafka", (KAFKA_PORT, KAFKA_CONTROLLER_PORT))


def kafka_libs() -> Path:
    """The broker's jars (they hold Kafka Connect's runtime too), resolved once into the cache."""
    return mvn_copy_dependencies(
        STACK_DIR / "kafka-pom.xml",
        CACHE / "kafka" / f"libs-{KAFKA_VERSION}",
        f"Apache Kafka {KAFKA_VERSION}",
    )


@dataclass(frozen=True)
class Broker:
    service: Service
    node_id: int
    port: int
    controller_port: int

    @property
    def home(self) -> Path:
        return STATE / self.service.name


def kafka_brokers() -> tuple[Broker, ...]:
    if KAFKA_BROKERS == 1:
        return (Broker(KAFKA, 1, KAFKA_PORT, KAFKA_CONTROLLER_PORT),)
    brokers = []
    for i in range(KAFKA_BROKERS):
        port, controller = KAFKA_PORT + 2 * i, KAFKA_CONTROLLER_PORT + 2 * i
        brokers.append(Broker(Service(f"kafka-{i + 1}", (port, controller)), i + 1, port, controller))
    return tuple(brokers)


def bootstrap_servers() -> str:
    return ",".join(f"{HOST}:{broker.port}" for broker in kafka_brokers())


def kafka_config(broker: Broker) -> str:
    replicas = len(kafka_brokers())
    min_isr = min(2, replicas)  # with 3 brokers an acks=all write survives one broker down
    if replicas == 1:
        quorum = f"controller.quorum.bootstrap.servers={HOST}:{broker.controller_port}"
    else:  # a static quorum: every broker is also a controller voter
        quorum = "controller.quorum.voters=" + ",".join(
            f"{b.node_id}@{HOST}:{b.controller_port}" for b in kafka_brokers()
        )
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={broker.node_id}",
            quorum,
            *kafka_listener_config(broker),
            "controller.listener.names=CONTROLLER",
            f"log.dirs={broker.home / 'data'}",
            "num.partitions=3",
            f"default.replication.factor={replicas}",  # min.insync.replicas is set per topic (create_topics)
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=10",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def kafka_listener_config(broker: Broker) -> list[str]:
    """The client listener: PLAINTEXT, or SASL_SSL with SCRAM on a secure stack (brokers talk to each other
    over it too). The controller listener stays PLAINTEXT on loopback: only the brokers themselves use it."""
    if not SECURE:
        return [
            f"listeners=PLAINTEXT://{HOST}:{broker.port},CONTROLLER://{HOST}:{broker.controller_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{broker.port}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    mechanism = SASL_MECHANISM.lower()
    return [
        f"listeners=SASL_SSL://{HOST}:{broker.port},CONTROLLER://{HOST}:{broker.controller_port}",
        f"advertised.listeners=SASL_SSL://{HOST}:{broker.port}",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name=SASL_SSL",
        f"sasl.enabled.mechanisms={SASL_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
        f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config={jaas('broker')}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={TLS_DIR / 'server-keystore.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={TLS_DIR / 'ca.pem'}",
    ]


KAFKA_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.kafkaserver.name = kafka.server.KafkaServer
logger.kafkaserver.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


def kafka_java(broker: Broker, heap: str) -> list[str]:
    libs = kafka_libs()
    log4j = broker.home / "log4j2.properties"
    return ["java", "-Xms256m", f"-Xmx{heap}", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]


def kafka_cluster_id(broker: Broker) -> str:
    """One id for all brokers of this stack, made once."""
    path = STATE / "kafka-cluster-id"
    if not path.exists():
        result = run([*kafka_java(broker, "256m"), "kafka.tools.StorageTool", "random-uuid"])
        path.write_text(result.stdout.strip().splitlines()[-1])
    return path.read_text().strip()


def format_kafka_storage(broker: Broker, config: Path) -> None:
    data = broker.home / "data"
    shape = "secure" if SECURE else "plaintext"
    marker = broker.home / "security-shape"
    if (data / "meta.properties").exists():
        if (marker.read_text() if marker.exists() else "plaintext") != shape:
            # The SCRAM users are written into the metadata when the storage is formatted.
            raise StackError(
                f"{broker.home} was formatted for a {'plaintext' if SECURE else 'secure'} Kafka; stop the stack "
                f"and remove {STATE} (or use another STACK_STATE_DIR) to switch STACK_SECURE"
            )
        return
    shutil.rmtree(data, ignore_errors=True)
    standalone = ["--standalone"] if KAFKA_BROKERS == 1 else []
    cluster_id = kafka_cluster_id(broker)
    format_command = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *standalone]
    if SECURE:
        passwords = kafka_passwords()
        for user in KAFKA_USERS:
            format_command += ["--add-scram", f"{SASL_MECHANISM}=[name={user},password={passwords[user]}]"]
    run([*kafka_java(broker, "256m"), *format_command])
    marker.write_text(shape)


def topic_command(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    """Kafka's topic tool against the stack (one JVM start: about a second, several on a busy machine)."""
    return run(
        [
            *kafka_java(broker, "256m"),
            "org.apache.kafka.tools.TopicCommand",
            "--bootstrap-server",
            bootstrap_servers(),
            *(["--command-config", str(kafka_client_properties())] if SECURE else []),
            *args,
        ]
    )


def create_topics(broker: Broker, topics: dict[str, int] = TOPICS) -> None:
    """Create the topics (name -> partitions) that do not exist yet, replicated on every broker. One listing
    first, so that a restart starts no JVM per topic that is already there."""
    replicas = len(kafka_brokers())
    existing = set(topic_command(broker, "--list").stdout.split())
    for topic, partitions in topics.items():
        if topic in existing:
            continue
        topic_command(
            broker,
            "--create",
            "--if-not-exists",
            "--topic",
            topic,
            "--partitions",
            str(partitions),
            "--replication-factor",
            str(replicas),
            "--config",
            f"min.insync.replicas={min(2, replicas)}",
        )


def start_kafka(broker: Broker) -> None:
    if SECURE:
        ensure_tls()
    broker.home.mkdir(parents=True, exist_ok=True)
    config = broker.home / "server.properties"
    config.touch(mode=0o600)  # it holds the broker's SCRAM password on a secure stack
    config.write_text(kafka_config(broker))
    (broker.home / "log4j2.properties").write_text(KAFKA_LOG4J)
    format_kafka_storage(broker, config)
    heap = "768m" if KAFKA_BROKERS == 1 else "512m"
    broker.service.spawn([*kafka_java(broker, heap), "kafka.Kafka", str(config)], cwd=broker.home)
    brokers = kafka_brokers()
    running = [b for b in brokers if b.service.alive()]
    if len(running) < len(brokers):
        # A broker answers only once a quorum of controllers runs, and topics need every broker: the last
        # broker's start waits for all of them.
        log(f"{broker.service.name} started ({len(running)} of {len(brokers)} brokers running)")
        return
    for b in brokers:
        wait_for(f"Kafka on {HOST}:{b.port}", partial(port_open, b.port), 120, b.service)
    create_topics(broker)
    log(f"Kafka {KAFKA_VERSION} ready on {bootstrap_servers()}, topics {', '.join(TOPICS)}")
