"""Database changes as a hint source, end to end on the stack: Keycloak on PostgreSQL, Kafka Connect with
Debezium's PostgreSQL connector (keycloak-spi-config/cdc/), the reconciler's consumer group.

The realm's Kafka listener is removed, the event-store sweep is off and the periodic reconcile is not due:
whatever reaches the store here came through the committed rows alone (`synced_by: cdc`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from reconciler.base.config import Settings
from reconciler.service import Service
from tests.conftest import override
from tests.support.kafka import publish, watch_topic
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.service import running_service, until_stored
from tests.support.user_reads import GetCounter

pytestmark = pytest.mark.stack

# The acceptance: each change reaches the store within 5 s (measured from the admin call's return).
CDC_DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def cdc_settings(settings: Settings, realm: str, stack_env: dict[str, str]) -> Settings:
    if "CDC_TOPIC_PREFIX" not in stack_env:
        pytest.fail("the stack runs without Kafka Connect (STACK_CDC=0): start it with STACK_CDC=1")
    return override(
        settings,
        kafka_group_id=f"test-cdc-{realm}",
        consumer_start_offset="latest",
        cdc_enabled=True,
        cdc_topic_prefix=stack_env["CDC_TOPIC_PREFIX"],
        keycloak_realm_id=realm,  # test realms are created with id = name
        reconcile_enabled=False,
        sweep_enabled=False,
        http_enabled=False,
    )


@pytest.fixture(scope="module")
async def no_listener(kc_admin: KeycloakTestAdmin) -> AsyncIterator[None]:
    await kc_admin.set_event_listeners(["jboss-logging"])
    yield


@pytest.fixture
async def cdc_service(cdc_settings: Settings, no_listener: None) -> AsyncIterator[Service]:
    async with running_service(cdc_settings) as service:
        yield service


async def within(users: Any, user_id: str, what: str, **expected: Any) -> dict[str, Any]:
    started = time.monotonic()
    doc = await until_stored(users, user_id, what, timeout_s=CDC_DEADLINE_S, **expected)
    assert doc["synced_by"] == "cdc", doc
    print(f"{what}: {time.monotonic() - started:.2f}s")
    return doc


async def test_every_admin_change_reaches_the_store_through_the_database_alone(
    cdc_service: Service, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    user_id = await kc_admin.create_user(first_name="Row", last_name="Only")
    await within(users_collection, user_id, "created", is_active=True, display_name="Row Only")
    await kc_admin.update_user(user_id, lastName="Changed")
    await within(users_collection, user_id, "updated", last_name="Changed")
    await kc_admin.set_enabled(user_id, False)
    await within(
        users_collection, user_id, "disabled", is_active=False, deactivation_reason="disabled_in_keycloak"
    )
    await kc_admin.set_enabled(user_id, True)
    await within(users_collection, user_id, "re-enabled", is_active=True)
    await kc_admin.delete_user(user_id)
    await within(
        users_collection, user_id, "deleted", is_active=False, deactivation_reason="deleted_in_keycloak"
    )


async def test_an_attribute_set_and_removed_reaches_the_store(
    cdc_service: Service, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    """`picture` lives in user_attribute, whose rows' key is their own id: the removal needs the old row."""
    user_id = await kc_admin.create_user(attributes={"picture": ["https://img.example.test/a.png"]})
    await within(
        users_collection, user_id, "created with a picture", avatar_url="https://img.example.test/a.png"
    )
    await kc_admin.update_user(user_id, attributes={})
    await within(users_collection, user_id, "picture removed", avatar_url=None)


def change(table: str, op: str, row: Any, *, realm_ts: int = 1_800_000_000_000) -> bytes:
    body = {"before": None, "after": row, "op": op, "source": {"table": table, "ts_ms": realm_ts}}
    return json.dumps(body).encode()


async def test_hostile_change_records_are_dead_lettered_or_ignored_and_the_next_one_applied(
    cdc_service: Service,
    cdc_settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    realm: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Wrong types, missing columns, ids that are not ids, rows of other realms, huge values: none becomes a
    Keycloak read; the valid record after them (same partition) is applied."""
    user_id = str(uuid.uuid4())  # a user made by partial import: no event (its own rows may be read too)
    gets = GetCounter(monkeypatch)
    await kc_admin.partial_import_users(
        [{"id": user_id, "username": f"rowless-{user_id[:8]}", "enabled": True, "firstName": "Valid"}]
    )
    topic = f"{cdc_settings.cdc_topic_prefix}.public.user_entity"
    hostile = [
        b"\xff not json",
        b'{"op": "c", "after": {"id": 42}, "source": {"table": "user_entity", "ts_ms": "soon"}}',
        change("user_entity", "c", {"realm_id": realm}),  # no id column
        change("user_entity", "u", {"id": "../../admin/realms", "realm_id": realm}),
        change("user_entity", "u", {"id": "x" * 800_000, "realm_id": realm}),  # huge
        change("user_entity", "u", {"id": str(uuid.uuid4()), "realm_id": "some-other-realm"}),
    ]
    bootstrap = cdc_settings.kafka_bootstrap_servers
    async with watch_topic(bootstrap, cdc_settings.kafka_dead_letter_topic) as dead_letters:
        valid = change("user_entity", "u", {"id": user_id, "realm_id": realm})
        await publish(bootstrap, topic, [*hostile, valid], key=b"same-partition")
        doc = await until_stored(
            users_collection, user_id, "the valid row after the hostile ones", first_name="Valid"
        )
        assert doc["synced_by"] == "cdc"
        reasons = []
        for _ in range(5):
            record = await dead_letters.next_record(timeout_s=10)
            headers = dict(record.headers)
            assert headers["dlq-source-topic"].decode() == topic
            reasons.append(headers["dlq-reason"].decode())
    assert sorted(reasons) == sorted(
        ["not_json", "invalid_change", "missing_user_id", "invalid_user_id", "invalid_user_id"]
    )
    ignored = REGISTRY.get_sample_value(
        "reconciler_events_total", {"topic": topic, "outcome": "ignored_other_realm"}
    )
    assert ignored is not None and ignored >= 1
    # Only that user was read from Keycloak: no hostile record became a read (nor reached a URL).
    assert set(gets.calls) == {user_id}, gets.calls
