"""The whole chain on the real stack: Keycloak -> listener provider -> Kafka, for admin and user events."""

from __future__ import annotations

import uuid

import pytest

from tests.support.kafka import watch_topic
from tests.support.keycloak_admin import KeycloakTestAdmin

pytestmark = pytest.mark.stack


async def test_admin_api_user_creation_publishes_an_admin_event(
    stack_env: dict[str, str], kc_admin: KeycloakTestAdmin, realm: str
) -> None:
    async with watch_topic(
        stack_env["KAFKA_BOOTSTRAP_SERVERS"], stack_env["KAFKA_ADMIN_EVENTS_TOPIC"]
    ) as topic:
        user_id = await kc_admin.create_user()
        event = await topic.wait_for(lambda m: m.get("resourcePath") == f"users/{user_id}")

    assert event["operationType"] == "CREATE"
    assert event["resourceType"] == "USER"
    assert event["realmId"] in {realm, event.get("realmName")}


async def test_user_updating_their_own_profile_publishes_a_user_event(
    stack_env: dict[str, str], kc_admin: KeycloakTestAdmin
) -> None:
    username = f"self-{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    user_id = await kc_admin.create_user(username, password=password)

    async with watch_topic(
        stack_env["KAFKA_BOOTSTRAP_SERVERS"], stack_env["KAFKA_USER_EVENTS_TOPIC"]
    ) as topic:
        await kc_admin.update_own_profile(username, password, firstName="Changed")
        event = await topic.wait_for(
            lambda m: m.get("userId") == user_id and m.get("type") == "UPDATE_PROFILE"
        )

    assert isinstance(event["time"], int)
    assert (await kc_admin.get_user(user_id) or {}).get("firstName") == "Changed"
