"""structlog setup: JSON (or console) lines, with aiokafka/httpx/pymongo standard-library logs routed through it."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

import structlog

# Values that look like credentials are masked wherever they appear in a log line, as a last line of defence:
# code never logs secrets on purpose, but an exception text may quote a URL or a header.
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.~+/]+=*"),
    re.compile(
        r"(?i)((?:client_secret|password|access_token|refresh_token|secret)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"
    ),
    re.compile(r"(mongodb(?:\+srv)?://[^:/@\s]+:)[^@\s]+(@)"),
)

_known_secrets: set[str] = set()
# Tokens rotate every few minutes: only the last few can still appear anywhere, so the set stays bounded.
_recent_tokens: deque[str] = deque(maxlen=4)


def register_secret(value: str | None, *, ephemeral: bool = False) -> None:
    """Remember a secret value so that it is masked if it ever reaches a log line.

    `ephemeral` values (access tokens) are kept only while they are among the last few registered.
    """
    if value and len(value) >= 4:
        if ephemeral:
            _recent_tokens.append(value)
        else:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """Mask known secrets and credential-shaped substrings in `text`."""
    for secret in (*_known_secrets, *_recent_tokens):
        if secret in text:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(
            lambda m: m.group(1) + "***" + (m.group(2) if m.lastindex and m.lastindex >= 2 else ""), text
        )
    return text


def _redact_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
        elif isinstance(value, BaseException):
            event_dict[key] = redact(repr(value))
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "json", secrets: Iterable[str | None] = ()) -> None:
    """Configure structlog and the standard library once, for the whole process."""
    for secret in secrets:
        register_secret(secret)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_event,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries stay at WARNING unless we debug.
    for name in ("aiokafka", "kafka", "httpx", "httpcore", "pymongo"):
        logging.getLogger(name).setLevel(level if level == "DEBUG" else "WARNING")
    # PyMongo's command log quotes the documents it sends and receives: personal data. Off even at DEBUG.
    logging.getLogger("pymongo.command").setLevel("INFO")


@contextlib.contextmanager
def filtering(log_filter: logging.Filter) -> Iterator[None]:
    """`log_filter` sees every line of the process (on the root handlers) while the block runs."""
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(log_filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(log_filter)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named after its module."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
