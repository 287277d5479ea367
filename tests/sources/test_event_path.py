"""End to end through the real listener provider: Keycloak changes reach the store within seconds."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.service import Service
from tests.conftest import override
from tests.support.kafka import publish, watch_topic
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.provider_events import snuk87_admin_event
from tests.support.service import running_service, stored, until_stored

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def event_settings(settings: Settings, realm: str) -> Settings:
    return override(
        settings,
        kafka_group_id=f"test-{realm}",
        reconcile_enabled=False,
        http_enabled=False,
        event_recheck_delay_s=0.5,
    )


@pytest.fixture(scope="module")
async def service(event_settings: Settings) -> AsyncIterator[Service]:
    async with running_service(event_settings) as running:
        yield running


def _value(value: Any) -> Any:
    async def probe() -> Any:
        return value

    return probe()


async def test_a_user_is_created_updated_disabled_enabled_and_deleted_through_events(
    service: Service, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    user_id = await kc_admin.create_user(first_name="Ada", last_name="Lovelace")
    doc = await until_stored(
        users_collection, user_id, "created", is_active=True, display_name="Ada Lovelace"
    )
    assert doc["synced_by"] == "event"

    await kc_admin.update_user(user_id, firstName="Augusta", email="augusta@example.test")
    await until_stored(
        users_collection, user_id, "profile updated", first_name="Augusta", email="augusta@example.test"
    )
    new_username = f"renamed-{uuid.uuid4().hex[:6]}"
    await kc_admin.update_user(user_id, username=new_username)
    await until_stored(users_collection, user_id, "username updated", username=new_username)

    await kc_admin.set_enabled(user_id, False)
    await until_stored(
        users_collection, user_id, "disabled", is_active=False, deactivation_reason="disabled_in_keycloak"
    )
    await kc_admin.set_enabled(user_id, True)
    doc = await until_stored(
        users_collection, user_id, "re-enabled", is_active=True, deactivation_reason=None
    )
    assert doc.get("deactivated_at") is None

    await kc_admin.delete_user(user_id)
    doc = await until_stored(
        users_collection, user_id, "deleted", is_active=False, deactivation_reason="deleted_in_keycloak"
    )
    assert doc["deactivated_at"] is not None


async def test_a_change_the_user_makes_themselves_is_applied(
    service: Service, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    username, password = f"self-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    user_id = await kc_admin.create_user(username, password=password, first_name="Before")
    await until_stored(users_collection, user_id, "created", first_name="Before")
    await kc_admin.update_own_profile(username, password, firstName="After", lastName="Self")
    await until_stored(users_collection, user_id, "self-service change", first_name="After", last_name="Self")


async def test_a_burst_of_updates_keeps_one_lookup_per_user_in_flight_and_converges(
    service: Service, kc_admin: KeycloakTestAdmin, users_collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight: Counter[str] = Counter()
    most_in_flight: Counter[str] = Counter()
    lookups: Counter[str] = Counter()
    original = KeycloakAdminClient.get_user

    async def counting_get_user(self: KeycloakAdminClient, user_id: str) -> Any:
        in_flight[user_id] += 1
        lookups[user_id] += 1
        most_in_flight[user_id] = max(most_in_flight[user_id], in_flight[user_id])
        try:
            return await original(self, user_id)
        finally:
            in_flight[user_id] -= 1

    monkeypatch.setattr(KeycloakAdminClient, "get_user", counting_get_user)
    user_ids = [await kc_admin.create_user(first_name="Burst", last_name="0") for _ in range(20)]
    for round_number in range(1, 11):
        await asyncio.gather(
            *(kc_admin.update_user(uid, lastName=str(round_number)) for uid in user_ids)
        )  # 200 updates in all
    for uid in user_ids:
        await until_stored(users_collection, uid, "burst converged", last_name="10", display_name="Burst 10")
    assert max(most_in_flight[uid] for uid in user_ids) == 1
    assert all(lookups[uid] >= 1 for uid in user_ids)


async def test_a_malformed_message_is_dead_lettered_and_the_next_valid_one_is_applied(
    service: Service,
    event_settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    realm: str,
) -> None:
    # A user made by partial import emits no user event: only the hand-made event below can bring it in.
    user_id = str(uuid.uuid4())
    await kc_admin.partial_import_users(
        [{"id": user_id, "username": f"quiet-{user_id[:8]}", "enabled": True, "firstName": "Valid"}]
    )
    assert await stored(users_collection, user_id) == {}
    bad_path = {
        "time": 1,
        "realmId": realm,
        "resourceType": "USER",
        "operationType": "UPDATE",
        "resourcePath": "users/../../x",
    }
    good = {"time": 2, "realmId": realm, "resourceType": "USER", "operationType": "UPDATE",
            "resourcePath": f"users/{user_id}"}  # fmt: skip
    bootstrap = event_settings.kafka_bootstrap_servers
    async with watch_topic(bootstrap, event_settings.kafka_dead_letter_topic) as dead_letters:
        await publish(
            bootstrap,
            event_settings.kafka_admin_events_topic,
            [b"\xff not json", json.dumps(bad_path).encode(), json.dumps(good).encode()],
            key=b"same-partition",  # one partition: the good message comes after the bad ones
        )
        await until_stored(users_collection, user_id, "valid message after bad ones", first_name="Valid")
        reasons: set[str] = set()
        for _ in range(2):
            record = await dead_letters.next_record(timeout_s=10)
            headers = dict(record.headers)
            reasons.add(headers["dlq-reason"].decode())
            assert headers["dlq-source-topic"].decode() == event_settings.kafka_admin_events_topic
            assert int(headers["dlq-source-offset"]) >= 0
    assert reasons == {"not_json", "invalid_resource_path"}


async def test_a_full_queue_pauses_fetching_and_everything_is_still_applied(
    event_settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any, realm: str
) -> None:
    # Users made by partial import emit no events: only the 120 hand-made events below name them.
    users = [{"id": str(uuid.uuid4()), "username": f"bp-{i}-{uuid.uuid4().hex[:6]}", "enabled": True,
              "firstName": "Pressure"} for i in range(40)]  # fmt: skip
    await kc_admin.partial_import_users(users)
    events = [
        json.dumps(
            {
                "time": 1,
                "realmId": realm,
                "resourceType": "USER",
                "operationType": "UPDATE",
                "resourcePath": f"users/{users[i % 40]['id']}",
            }
        ).encode()
        for i in range(120)
    ]
    settings = override(event_settings, kafka_group_id=f"bp-{realm}", consumer_max_pending_users=1)
    async with running_service(settings) as service:
        await publish(settings.kafka_bootstrap_servers, settings.kafka_admin_events_topic, events)
        for user in users:
            await until_stored(
                users_collection, user["id"], "applied under backpressure", first_name="Pressure"
            )
        assert service.consumer is not None and service.consumer.pauses > 0


async def test_our_after_commit_records_get_no_recheck_and_a_pre_commit_shaped_one_does(
    service: Service,
    event_settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    realm: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EVENT_RECHECK=auto (the default): our listener marks its records `x-published: after-commit`, so
    each of its hints costs one GET; a SnuK87 record (no key, no header, maybe published before commit)
    still gets the follow-up re-check after EVENT_RECHECK_DELAY_S."""
    assert event_settings.event_recheck == "auto"
    lookups: Counter[str] = Counter()
    original = KeycloakAdminClient.get_user

    async def counting_get_user(self: KeycloakAdminClient, user_id: str) -> Any:
        lookups[user_id] += 1
        return await original(self, user_id)

    monkeypatch.setattr(KeycloakAdminClient, "get_user", counting_get_user)
    bootstrap = event_settings.kafka_bootstrap_servers
    async with watch_topic(bootstrap, event_settings.kafka_admin_events_topic) as admin_events:
        ours = await kc_admin.create_user(first_name="Ours")
        await until_stored(users_collection, ours, "created by our listener's event", first_name="Ours")
        await kc_admin.update_user(ours, firstName="Ours2")
        await until_stored(users_collection, ours, "updated by our listener's event", first_name="Ours2")
        record = await admin_events.next_record()
        while (record.key or b"").decode() != ours:
            record = await admin_events.next_record()
        assert dict(record.headers)["x-published"] == b"after-commit"  # the marker auto relies on

    # A user made by partial import emits no event: only the SnuK87-shaped record names it.
    theirs = str(uuid.uuid4())
    await kc_admin.partial_import_users(
        [{"id": theirs, "username": f"snuk-{theirs[:8]}", "enabled": True, "firstName": "Theirs"}]
    )
    snuk87 = snuk87_admin_event(path=f"users/{theirs}", realm_id=realm, realm_name=realm)
    await publish(bootstrap, event_settings.kafka_admin_events_topic, [json.dumps(snuk87).encode()])
    await until_stored(users_collection, theirs, "created by the SnuK87 record", first_name="Theirs")
    # The read, then the re-check; ours, applied earlier, would have had its re-check before this one.
    await eventually(lambda: _value(lookups[theirs]), until=lambda n: n >= 2, what="SnuK87 re-check")
    assert lookups[theirs] == 2
    assert lookups[ours] == 2  # one GET per hint (create, update), no re-check
