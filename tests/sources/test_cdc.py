"""Database changes as a hint source, end to end on the stack: Keycloak on PostgreSQL, Kafka Connect with
Debezium's PostgreSQL connector (keycloak-spi-config/cdc/), the reconciler's consumer group.

The realm's Kafka listener is removed, the event-store sweep is off and the periodic reconcile is not due:
whatever reaches the store here came through the committed rows alone (`synced_by: cdc`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reconciler.base.config import Settings
from reconciler.service import Service
from tests.conftest import override
from tests.sources.test_event_path import running_service, until_stored
from tests.support.keycloak_admin import KeycloakTestAdmin

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
