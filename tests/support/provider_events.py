"""What the Keycloak event-listener providers put on the wire: Keycloak's admin and user events as the playa
`keycloak-kafka-provider` and the SnuK87 `keycloak-kafka` serialise them (shared by the event parser's unit
tests and the event-path tests)."""

from __future__ import annotations

from typing import Any

REALM_NAME = "app"
REALM_UUID = "4f0c6c0e-9a1b-4d2e-8f3a-5b6c7d8e9f01"  # realms created by API get a UUID id
MASTER_UUID = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
USER_ID = "8e1f5b0a-3c2d-4e6f-9a7b-1c2d3e4f5a6b"
ADMIN_USER_ID = "5d6e7f80-9102-4a3b-8c4d-5e6f708192a3"
TIME_MS = 1_700_000_000_123


def playa_admin_event(
    resource_type: str = "USER",
    operation: str = "UPDATE",
    path: str = f"users/{USER_ID}",
    *,
    realm_id: str = REALM_NAME,
    representation: str | None = '{"firstName":"Alice","lastName":"Liddell"}',
    error: str | None = None,
) -> dict[str, Any]:
    """ru.playa.keycloak:keycloak-kafka-provider: `@class`, no id, no realmName, no details."""
    return {
        "@class": "ru.playa.keycloak.kafka.KeycloakAdminEvent",
        "time": TIME_MS,
        "realmId": realm_id,
        "authDetails": {
            "realmId": MASTER_UUID,
            "clientId": "b4c5d6e7-f809-4a1b-8c2d-3e4f5a6b7c8d",
            "userId": ADMIN_USER_ID,
            "ipAddress": "127.0.0.1",
        },
        "resourceType": resource_type,
        "operationType": operation,
        "resourcePath": path,
        "representation": representation,
        "error": error,
        "resourceTypeAsString": resource_type,
    }


def snuk87_admin_event(
    resource_type: str = "USER",
    operation: str = "UPDATE",
    path: str = f"users/{USER_ID}",
    *,
    realm_id: str = REALM_UUID,
    realm_name: str = REALM_NAME,
    error: str | None = None,
) -> dict[str, Any]:
    """SnuK87 keycloak-kafka (JSON): Jackson over every getter of Keycloak's AdminEvent."""
    return {
        "id": "e3b0c442-98fc-4c14-9afb-f4c8996fb924",
        "time": TIME_MS,
        "realmId": realm_id,
        "realmName": realm_name,
        "authDetails": {
            "realmId": MASTER_UUID,
            "realmName": "master",
            "clientId": "b4c5d6e7-f809-4a1b-8c2d-3e4f5a6b7c8d",
            "userId": ADMIN_USER_ID,
            "ipAddress": "10.0.0.7",
        },
        "resourceType": resource_type,
        "operationType": operation,
        "resourcePath": path,
        "representation": None if operation == "DELETE" else '{"enabled":false}',
        "error": error,
        "details": None,
        "resourceTypeAsString": resource_type,
    }


def playa_user_event(
    event_type: str = "UPDATE_PROFILE",
    user_id: str | None = USER_ID,
    *,
    realm_id: str = REALM_NAME,
    error: str | None = None,
) -> dict[str, Any]:
    """ru.playa provider user event: `@class`, no id, no realmName."""
    return {
        "@class": "ru.playa.keycloak.kafka.KeycloakEvent",
        "time": TIME_MS,
        "type": event_type,
        "realmId": realm_id,
        "clientId": "account-console",
        "userId": user_id,
        "sessionId": "2b3c4d5e-6f70-4812-9a3b-4c5d6e7f8091",
        "ipAddress": "192.168.1.20",
        "error": error,
        "details": {"previous_first_name": "Alice", "updated_first_name": "Alicia", "context": "ACCOUNT"},
    }


def snuk87_user_event(
    event_type: str = "UPDATE_PROFILE",
    user_id: str | None = USER_ID,
    *,
    realm_id: str = REALM_UUID,
    realm_name: str | None = REALM_NAME,
    error: str | None = None,
) -> dict[str, Any]:
    """SnuK87 keycloak-kafka (JSON): Jackson over every getter of Keycloak's Event."""
    return {
        "id": "a1b2c3d4-e5f6-4718-9a0b-1c2d3e4f5061",
        "time": TIME_MS,
        "type": event_type,
        "realmId": realm_id,
        "realmName": realm_name,
        "clientId": "account-console",
        "userId": user_id,
        "sessionId": None,
        "ipAddress": "192.168.1.20",
        "error": error,
        "details": {"auth_method": "openid-connect", "username": "alice"},
    }
