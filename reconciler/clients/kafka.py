"""Kafka connection options and the dead-letter publisher, shared by the consumer and replay."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.helpers import create_ssl_context
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from reconciler.base.config import Settings, load_ca_bundle
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger, register_secret

log = get_logger(__name__)

# A dead letter keeps the original bytes up to this size; Kafka's default message limit is about 1 MB.
DEAD_LETTER_MAX_VALUE_BYTES = 900_000


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options common to every Kafka client of the process."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
        "client_id": "keycloak-user-reconciler",
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        ca_file = settings.kafka_ssl_ca_file
        # A private CA (KAFKA_SSL_CA_FILE) replaces the system CAs; the broker's host name is checked either way.
        options["ssl_context"] = load_ca_bundle(ca_file) if ca_file else create_ssl_context()
    if settings.kafka_sasl_mechanism:
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        register_secret(password)
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=password,
        )
    return options


class DeadLetters:
    """Publishes messages that cannot be used to the dead-letter topic, with why and where they came from."""

    def __init__(self, settings: Settings) -> None:
        self._topic = settings.kafka_dead_letter_topic
        self._producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, record: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> None:
        """Publish and wait for the broker's ack, retrying until it succeeds: the source offset may only
        advance once the dead letter is safely stored."""
        value = record.value or b""
        truncated = len(value) > DEAD_LETTER_MAX_VALUE_BYTES
        headers = [
            ("dlq-reason", reason.encode()),
            ("dlq-detail", detail[:1000].encode("utf-8", "replace")),
            ("dlq-source-topic", record.topic.encode()),
            ("dlq-source-partition", str(record.partition).encode()),
            ("dlq-source-offset", str(record.offset).encode()),
            ("dlq-truncated", b"true" if truncated else b"false"),
        ]
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(multiplier=0.2, max=10),
            stop=stop_after_delay(300),  # then the consumer fails and restarts; nothing was committed
            reraise=True,
        ):
            with attempt:
                await self._producer.send_and_wait(
                    self._topic, value[:DEAD_LETTER_MAX_VALUE_BYTES], key=record.key, headers=headers
                )
        metrics.DEAD_LETTERS.labels(reason=reason).inc()
        log.warning(
            "message dead-lettered",
            reason=reason,
            detail=detail[:300],
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
