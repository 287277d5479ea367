"""Connection options of the test-side Kafka clients: PLAINTEXT, or the SASL_SSL of a secure stack.

A test helper is given a bootstrap string only; the stack fixtures `register` the security settings of the
stack that string belongs to (its `.stack/env`), so every helper connects the way the stack demands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka.helpers import create_ssl_context

_SECURITY: dict[str, dict[str, Any]] = {}


def register(env: Mapping[str, str]) -> None:
    """Remember how to reach the Kafka of the stack whose settings are `env` (nothing to do for PLAINTEXT)."""
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") or "PLAINTEXT"
    if protocol == "PLAINTEXT":
        return
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=env.get("KAFKA_SSL_CA_FILE") or None)
    if env.get("KAFKA_SASL_MECHANISM"):
        options |= {
            "sasl_mechanism": env["KAFKA_SASL_MECHANISM"],
            "sasl_plain_username": env["KAFKA_SASL_USERNAME"],
            "sasl_plain_password": env["KAFKA_SASL_PASSWORD"],
        }
    _SECURITY[env["KAFKA_BOOTSTRAP_SERVERS"]] = options


def connection(bootstrap: str) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client of the brokers at `bootstrap`."""
    return {"bootstrap_servers": bootstrap, **_SECURITY.get(bootstrap, {})}
