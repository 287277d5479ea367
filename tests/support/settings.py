"""Reconciler settings for the stack, built explicitly (tests and benchmarks alike)."""

from __future__ import annotations

from typing import Any

from reconciler.base.config import Settings

SECURITY_SETTINGS = (
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_ca_file",
    "keycloak_ca_file",
)


def make_settings(stack_env: dict[str, str], **overrides: Any) -> Settings:
    """Settings for the stack, built explicitly (not from this process's environment)."""
    values: dict[str, Any] = {
        "keycloak_url": stack_env["KEYCLOAK_URL"],
        "keycloak_realm": stack_env["KEYCLOAK_REALM"],
        "keycloak_client_id": stack_env["KEYCLOAK_CLIENT_ID"],
        "keycloak_client_secret": stack_env["KEYCLOAK_CLIENT_SECRET"],
        "mongodb_uri": stack_env["MONGODB_URI"],
        "kafka_bootstrap_servers": stack_env["KAFKA_BOOTSTRAP_SERVERS"],
        "kafka_user_events_topic": stack_env.get("KAFKA_USER_EVENTS_TOPIC", "keycloak.events"),
        "kafka_admin_events_topic": stack_env.get("KAFKA_ADMIN_EVENTS_TOPIC", "keycloak.admin-events"),
        "kafka_dead_letter_topic": stack_env.get("KAFKA_DEAD_LETTER_TOPIC", "keycloak.events.dlq"),
        "http_host": "127.0.0.1",
        "log_format": "json",
        # The event-store sweep reads the realm's stored events too: tests of it switch it on themselves, so
        # the others see Kafka hints alone (and the Keycloak requests they count stay theirs).
        "sweep_enabled": False,
        # Likewise the listing road for bursts (tests/sources/test_listing_road.py): elsewhere a burst is read user by user.
        "event_burst_listing": False,
    }
    # A secure stack's Kafka SASL_SSL and Keycloak CA settings (absent on a plaintext one).
    for name in SECURITY_SETTINGS:
        if stack_env.get(name.upper()):
            values[name] = stack_env[name.upper()]
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def override(settings: Settings, **changes: Any) -> Settings:
    """A validated copy of `settings` with some fields changed (model_copy would skip validation)."""
    return Settings(_env_file=None, **{**dict(settings), **changes})  # type: ignore[call-arg]
