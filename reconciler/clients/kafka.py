"""Kafka at the boundary: connection options, aiokafka's errors translated, the access check, dead letters,
and aiokafka's repeated outage lines folded into the failure monitor.

Like the Keycloak client and the store, nothing above this module sees an aiokafka exception: `kafka_boundary`
turns them into `KafkaUnavailable` (no broker answers: retried) or `KafkaRefused` (SASL credentials, an
untrusted certificate, missing ACLs: someone must act). aiokafka's own bootstrap swallows the cause of a
failed connection, so `check_access` connects itself to tell a refusal from an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest
from tenacity import retry_if_exception_type

from reconciler.base.config import Settings, load_ca_bundle
from reconciler.base.errors import KafkaFailure, KafkaRefused, KafkaUnavailable, ReconcilerError
from reconciler.base.retry import RetryPolicy
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger, register_secret

log = get_logger(__name__)

# A dead letter keeps the original bytes up to this size; Kafka's default message limit is about 1 MB.
DEAD_LETTER_MAX_VALUE_BYTES = 900_000
# One connection attempt of the access check: a broker that has not answered by then is away.
CHECK_TIMEOUT_S: Final = 10.0
_TOPIC_AUTHORIZATION_FAILED: Final = 29

# The broker said no to who we are or what we asked: retrying does not help.
_REFUSALS: Final = (
    kafka_errors.SaslAuthenticationFailed,
    kafka_errors.AuthenticationFailedError,
    kafka_errors.AuthenticationMethodNotSupported,
    kafka_errors.UnsupportedSaslMechanismError,
    kafka_errors.IllegalSaslStateError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.GroupAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
)
# aiokafka's lines while a broker is away or refuses (dozens a second): what the monitor reports instead.
_OUTAGE_LINE: Final = re.compile(
    r"(?i)unable (to )?(connect|bootstrap|update metadata|request metadata)|connect call failed|connection|"
    r"NodeNotReady|RequestTimedOut|KafkaTimeout|timed out|CoordinatorNotAvailable|NotCoordinator|"
    r"could not send|cannot send|failed fetch|coordinator request failed|heartbeat send request failed"
)
_REFUSAL_LINE: Final = re.compile(r"(?i)authenticat|authoriz|sasl|certificate|ssl")


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


def translate(error: BaseException, settings: Settings) -> KafkaFailure:
    """The error model's word for an aiokafka (or socket) error; the message names what to check."""
    if isinstance(error, KafkaFailure):
        return error
    if isinstance(error, ssl.SSLCertVerificationError):
        return KafkaRefused(_untrusted(settings, error.verify_message or type(error).__name__))
    if isinstance(error, ssl.SSLError):
        return KafkaRefused(f"TLS with Kafka failed ({type(error).__name__}): check KAFKA_SECURITY_PROTOCOL")
    if isinstance(error, _REFUSALS):
        return KafkaRefused(_refused(settings, error))
    detail = str(error) or type(error).__name__
    return KafkaUnavailable(
        f"no Kafka broker of KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers} answered: {detail}"[
            :500
        ]
    )


def _untrusted(settings: Settings, reason: str) -> str:
    ca_file = settings.kafka_ssl_ca_file
    trusted = (
        f"the CA in KAFKA_SSL_CA_FILE={ca_file}" if ca_file else "the system CAs (KAFKA_SSL_CA_FILE is empty)"
    )
    return f"the broker's TLS certificate is not trusted by {trusted} ({reason}): set KAFKA_SSL_CA_FILE"


def _refused(settings: Settings, error: BaseException) -> str:
    name = type(error).__name__
    if isinstance(
        error, kafka_errors.TopicAuthorizationFailedError | kafka_errors.GroupAuthorizationFailedError
    ):
        return f"the broker's ACLs refuse KAFKA_SASL_USERNAME={settings.kafka_sasl_username} ({name}): grant read on the topics and the group"
    return (
        f"the broker refused the SASL login of KAFKA_SASL_USERNAME={settings.kafka_sasl_username} "
        f"with {settings.kafka_sasl_mechanism} ({name}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
    )


_DRIVER_ERRORS: Final = (kafka_errors.KafkaError, OSError, asyncio.TimeoutError)


@contextlib.contextmanager
def kafka_boundary(settings: Settings) -> Iterator[None]:
    """Raise aiokafka's and the socket's errors as the error model's `KafkaFailure`s."""
    try:
        yield
    except ReconcilerError:
        raise
    except _DRIVER_ERRORS as error:
        raise translate(error, settings) from error


async def check_access(settings: Settings, topics: list[str] | None = None) -> None:
    """Connect to the bootstrap brokers as the clients will (TLS, SASL) and read the topics' metadata.

    Raises `KafkaRefused` at the first refusal (no other broker would accept what this one refused) and
    `KafkaUnavailable` when no broker answers.
    """
    options = client_options(settings)
    unavailable: KafkaFailure | None = None
    for host, port in _bootstrap_hosts(settings.kafka_bootstrap_servers):
        try:
            await _check_one(host, port, options, topics or [])
        except _DRIVER_ERRORS as error:
            failure = translate(error, settings)
            if isinstance(failure, KafkaRefused):
                raise failure from error
            unavailable = failure
        else:
            return
    raise unavailable or KafkaUnavailable("KAFKA_BOOTSTRAP_SERVERS names no broker")


async def _check_one(host: str, port: int, options: dict[str, Any], topics: list[str]) -> None:
    async with asyncio.timeout(CHECK_TIMEOUT_S):
        conn = await create_conn(
            host,
            port,
            client_id=options["client_id"],
            request_timeout_ms=int(CHECK_TIMEOUT_S * 1000),
            ssl_context=options.get("ssl_context"),
            security_protocol=options["security_protocol"],
            sasl_mechanism=options.get("sasl_mechanism"),
            sasl_plain_username=options.get("sasl_plain_username"),
            sasl_plain_password=options.get("sasl_plain_password"),
        )
        try:
            metadata = await conn.send(MetadataRequest(topics, allow_auto_topic_creation=False))
        finally:
            conn.close()
    for topic in getattr(metadata, "topics", ()):
        if topic[0] == _TOPIC_AUTHORIZATION_FAILED:
            raise kafka_errors.TopicAuthorizationFailedError(str(topic[1]))


def _bootstrap_hosts(servers: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for entry in servers.split(","):
        host, _, port = entry.strip().rpartition(":")
        if host and port.isdigit():
            hosts.append((host.strip("[]"), int(port)))
    return hosts


async def connect_with_retries(settings: Settings, topics: list[str] | None = None) -> None:
    """A one-shot command's access check: an outage is tried `KAFKA_RETRY_ATTEMPTS` times, a refusal once."""
    retrying = RetryPolicy.kafka_connect(settings).retrying(retry_if_exception_type(KafkaUnavailable))
    await retrying(check_access, settings, topics)


@contextlib.asynccontextmanager
async def started(client: Any, settings: Settings) -> AsyncIterator[Any]:
    """Start an aiokafka client inside the boundary and always stop it (no "Unclosed" client is left)."""
    try:
        with kafka_boundary(settings):
            await client.start()
            yield client
    finally:
        await stop_quietly(client)


async def stop_quietly(client: Any) -> None:
    """Stop an aiokafka client whose broker may be away: its errors say nothing new here."""
    stop = getattr(client, "stop", None) or client.close
    try:
        await stop()
    except Exception as error:  # the failure that matters was reported where it happened
        log.debug("closing a Kafka client failed", client=type(client).__name__, error=str(error))


class KafkaOutageFold(logging.Filter):
    """aiokafka's repeated connection-error lines (about 70 a second while a broker is down) are reported
    to `on_failure` (the failure monitor logs one line when an outage starts, one a minute while it lasts,
    one when it ends) and kept only at DEBUG."""

    def __init__(self, on_failure: Callable[[KafkaFailure], None]) -> None:
        super().__init__("aiokafka")
        self._on_failure = on_failure

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiokafka") or record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if _REFUSAL_LINE.search(message):
            self._on_failure(KafkaRefused(f"Kafka refused the client: {message[:300]}"))
        elif _OUTAGE_LINE.search(message):
            self._on_failure(KafkaUnavailable(f"Kafka unreachable: {message[:300]}"))
        else:
            return True
        if logging.getLogger("aiokafka").isEnabledFor(logging.DEBUG):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return True
        return False


class DeadLetters:
    """Publishes messages that cannot be used to the dead-letter topic, with why and where they came from."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.kafka_dead_letter_topic
        self._producer = AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
        self._policy = RetryPolicy.dead_letter_publish(settings)

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    async def publish(self, record: ConsumerRecord[bytes, bytes], reason: str, detail: str) -> None:
        """Publish and wait for the broker's ack, retrying an outage (the failure policy's
        `dead_letter_publish`): the source offset may only advance once the dead letter is safely stored."""
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
        retrying = self._policy.retrying(retry_if_exception_type(KafkaUnavailable))
        await retrying(self._send, value[:DEAD_LETTER_MAX_VALUE_BYTES], record.key, headers)
        metrics.DEAD_LETTERS.labels(reason=reason).inc()
        log.warning(
            "message dead-lettered",
            reason=reason,
            detail=detail[:300],
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    async def _send(self, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        with kafka_boundary(self._settings):
            await self._producer.send_and_wait(self._topic, value, key=key, headers=headers)
