"""KeycloakAdminClient: edge cases through httpx.MockTransport, the rest against the real local Keycloak."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from reconciler.base.config import Settings
from reconciler.clients.keycloak import (
    InvalidUserId,
    KeycloakAdminClient,
    KeycloakConfigError,
    KeycloakProtocolError,
    KeycloakUnavailable,
    user_from_representation,
)
from reconciler.domain.attributes import DEFAULT_ATTRIBUTE_MAP, AttributeMap
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.scripted_keycloak import USER_ID, FakeKeycloak, scripted, user_json

SECRET = "unit-test-client-secret-value"


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests_total(operation: str, outcome: str) -> float:
    return counter("reconciler_keycloak_requests_total", operation=operation, outcome=outcome)


def refreshes_total() -> float:
    return counter("reconciler_keycloak_token_refreshes_total")


# --- unit tests: what a real Keycloak cannot be made to do ------------------------------------------------


def unit_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "keycloak_url": "https://keycloak.test",
        "keycloak_realm": "app",
        "keycloak_client_id": "user-reconciler",
        "keycloak_client_secret": SECRET,
        "mongodb_uri": "mongodb://unused.test",
        "keycloak_retry_attempts": 3,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def client_for(fake: FakeKeycloak, **changes: Any) -> KeycloakAdminClient:
    """A client of `fake`, its retry settings shortened (override them with `changes`)."""
    settings = changes.pop("settings", None) or unit_settings()
    changes.setdefault("retry_request_backoff_s", 0.001)
    return KeycloakAdminClient(override(settings, **changes), transport=httpx.MockTransport(fake))


async def test_429_waits_for_retry_after_then_succeeds() -> None:
    fake = FakeKeycloak(
        scripted(httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(200, json=user_json()))
    )
    before = requests_total("get_user", "rate_limited")
    # A long backoff proves the wait came from Retry-After, not from the backoff.
    async with client_for(fake, retry_request_backoff_s=30.0, retry_request_backoff_max_s=30.0) as client:
        started = time.monotonic()
        user = await client.get_user(USER_ID)
        elapsed = time.monotonic() - started
    assert user is not None and user.id == USER_ID
    assert len(fake.admin_requests) == 2
    assert 1.0 <= elapsed < 5.0
    assert requests_total("get_user", "rate_limited") == before + 1


async def test_retry_after_is_capped() -> None:
    fake = FakeKeycloak(
        scripted(httpx.Response(429, headers={"Retry-After": "3600"}), httpx.Response(200, json=user_json()))
    )
    async with client_for(fake, keycloak_retry_after_max_s=0.05) as client:
        started = time.monotonic()
        assert await client.get_user(USER_ID) is not None
        assert time.monotonic() - started < 2.0


async def test_503_is_retried_then_unavailable() -> None:
    fake = FakeKeycloak(scripted(httpx.Response(503)))
    before = requests_total("count_users", "server_error")
    async with client_for(fake, settings=unit_settings(keycloak_retry_attempts=3)) as client:
        with pytest.raises(KeycloakUnavailable, match="after 3 attempts: HTTP 503"):
            await client.count_users()
    assert len(fake.admin_requests) == 3
    assert requests_total("count_users", "server_error") == before + 3


async def test_503_then_success() -> None:
    fake = FakeKeycloak(scripted(httpx.Response(503), httpx.Response(502), httpx.Response(200, json=7)))
    async with client_for(fake) as client:
        assert await client.count_users() == 7
    assert len(fake.admin_requests) == 3


ANSWER_NOT_WRITTEN = {"error": "unknown_error", "error_description": "Cannot parse the JSON"}


async def test_a_listing_keycloak_could_not_write_is_retried_like_a_server_error() -> None:
    # Keycloak's answer to a GET whose database connection died while the answer streamed (each pooled
    # connection does so once after a PostgreSQL restart; reliability scenario 12 meets it for real).
    fake = FakeKeycloak(scripted(httpx.Response(400, json=ANSWER_NOT_WRITTEN), httpx.Response(200, json=[])))
    before = requests_total("list_users", "server_error")
    async with client_for(fake) as client:
        assert await client.list_users(0, 10) == []
    assert len(fake.admin_requests) == 2
    assert requests_total("list_users", "server_error") == before + 1


async def test_a_listing_cut_short_is_retried_and_then_unavailable() -> None:
    # keycloak#34857: a transaction error while the listing streams leaves a 200 whose JSON breaks off.
    cut_short = httpx.Response(200, content=b'[{"id": "' + USER_ID.encode() + b'", "username": "a')
    fake = FakeKeycloak(scripted(cut_short, httpx.Response(200, json=[]), cut_short, cut_short, cut_short))
    async with client_for(fake) as client:
        assert await client.list_users(0, 10) == []
        with pytest.raises(KeycloakUnavailable, match="after 3 attempts: HTTP 200 with a broken JSON body"):
            await client.list_users(0, 10)
    assert len(fake.admin_requests) == 5


@pytest.mark.parametrize(
    "body",
    [
        {"error": "unknown_error", "error_description": "Invalid search query"},
        {"error": "invalid_request"},
        "not an object",
    ],
)
async def test_any_other_400_is_an_answer_not_understood_and_not_retried(body: Any) -> None:
    fake = FakeKeycloak(scripted(httpx.Response(400, json=body)))
    async with client_for(fake) as client:
        with pytest.raises(KeycloakProtocolError, match="HTTP 400"):
            await client.list_users(0, 10)
    assert len(fake.admin_requests) == 1


async def test_timeout_becomes_unavailable() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    fake = FakeKeycloak(hang)
    async with client_for(fake, settings=unit_settings(keycloak_retry_attempts=2)) as client:
        with pytest.raises(KeycloakUnavailable, match="timeout"):
            await client.list_users(0, 10)
    assert len(fake.admin_requests) == 2


@pytest.mark.parametrize(
    "bad_id",
    [
        "../../x",
        "users/../../x",
        "",
        "not-a-uuid",
        USER_ID + "/groups",
        USER_ID + "%2F..",
        " " + USER_ID,
        USER_ID + "\n",
    ],
)
async def test_invalid_id_is_rejected_before_any_request(bad_id: str) -> None:
    fake = FakeKeycloak(scripted(httpx.Response(200, json=user_json())))
    async with client_for(fake) as client:
        for call in (client.get_user, client.user_groups, client.user_realm_roles):
            with pytest.raises(InvalidUserId):
                await call(bad_id)
    assert fake.requests_seen == 0


async def test_concurrent_calls_share_one_token_refresh() -> None:
    async def ok(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=user_json(request.url.path.rsplit("/", 1)[-1]))

    fake = FakeKeycloak(ok, token_delay_s=0.05)
    before = refreshes_total()
    ids = [str(uuid.uuid4()) for _ in range(20)]
    async with client_for(fake) as client:
        users = await asyncio.gather(*(client.get_user(i) for i in ids))
    assert [u.id for u in users if u] == ids
    assert fake.token_requests == 1
    assert refreshes_total() == before + 1
    assert {r.headers["Authorization"] for r in fake.admin_requests} == {"Bearer token-1"}


async def test_401_refreshes_once_and_retries_once() -> None:
    fake = FakeKeycloak(scripted(httpx.Response(401), httpx.Response(200, json=user_json())))
    async with client_for(fake) as client:
        assert await client.get_user(USER_ID) is not None
    assert fake.token_requests == 2
    assert [r.headers["Authorization"] for r in fake.admin_requests] == ["Bearer token-1", "Bearer token-2"]


async def test_401_after_refresh_is_a_config_error() -> None:
    fake = FakeKeycloak(scripted(httpx.Response(401)))
    async with client_for(fake) as client:
        with pytest.raises(KeycloakConfigError, match="rejected a fresh service-account token"):
            await client.get_user(USER_ID)
    assert fake.token_requests == 2
    assert len(fake.admin_requests) == 2


async def test_concurrency_is_bounded() -> None:
    in_flight = peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return httpx.Response(200, json=user_json(request.url.path.rsplit("/", 1)[-1]))

    fake = FakeKeycloak(slow)
    async with client_for(fake, settings=unit_settings(keycloak_max_concurrency=3)) as client:
        await asyncio.gather(*(client.get_user(str(uuid.uuid4())) for _ in range(15)))
    assert peak == 3


async def test_rate_limit_spaces_requests() -> None:
    fake = FakeKeycloak(scripted(httpx.Response(200, json=1)))
    async with client_for(fake, settings=unit_settings(keycloak_max_requests_per_s=20)) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.count_users() for _ in range(5)))
        elapsed = time.monotonic() - started
    # 6 requests (token + 5) spaced 50 ms apart.
    assert elapsed >= 0.25


def test_user_from_representation() -> None:
    user = user_from_representation(
        {
            **user_json(),
            "email": "a@example.test",
            "emailVerified": True,
            "firstName": "Alice",
            "lastName": None,
            "attributes": {"picture": ["https://img.test/a.png"], "locale": ["en"]},
        },
        DEFAULT_ATTRIBUTE_MAP,
    )
    assert (user.email, user.email_verified, user.first_name, user.last_name) == (
        "a@example.test",
        True,
        "Alice",
        None,
    )
    assert user.attributes == (("picture", "https://img.test/a.png"),)  # only the mirrored ones
    assert user.created_timestamp_ms == 1
    assert user_from_representation(user_json(), DEFAULT_ATTRIBUTE_MAP).attributes == ()
    for broken in (
        {"username": "x", "enabled": True},
        {**user_json(), "id": "../x"},
        {**user_json(), "username": 3},
        {**user_json(), "enabled": "yes"},
    ):
        with pytest.raises(KeycloakProtocolError):
            user_from_representation(broken, DEFAULT_ATTRIBUTE_MAP)


def test_mirrored_attributes_read_their_first_non_empty_value() -> None:
    mapping = AttributeMap.parse("department=department,phoneNumber=phone_number,picture=avatar_url")
    data = {
        **user_json(),
        "attributes": {
            "department": ["Finance", "Sales"],
            "phoneNumber": [""],
            "picture": "not-a-list",
            "locale": ["en"],
        },
    }
    user = user_from_representation(data, mapping)
    assert user.attributes == (("department", "Finance"),)
    assert user.attribute("department") == "Finance" and user.attribute("phoneNumber") is None
    assert user_from_representation(data, AttributeMap.parse("")).attributes == ()


# --- integration tests: the real Keycloak ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def kc(settings: Settings) -> AsyncIterator[KeycloakAdminClient]:
    async with KeycloakAdminClient(settings) as client:
        yield client


@pytest.fixture(scope="module")
async def real_users(kc_admin: KeycloakTestAdmin) -> list[str]:
    # The module's realm is fresh; the unmanaged-attribute policy lets `picture` be stored (Keycloak >= 24).
    profile = (await kc_admin.request("GET", "/users/profile")).json()
    await kc_admin.request("PUT", "/users/profile", json={**profile, "unmanagedAttributePolicy": "ENABLED"})
    ids = [
        await kc_admin.create_user(
            f"kc-client-{i}", first_name=f"First{i}", attributes={"picture": [f"https://img.test/{i}.png"]}
        )
        for i in range(5)
    ]
    await kc_admin.set_enabled(ids[4], False)
    return ids


@pytest.mark.stack
async def test_count_list_and_get_real_users(kc: KeycloakAdminClient, real_users: list[str]) -> None:
    # The service-account user is neither counted nor listed.
    assert await kc.count_users() == len(real_users)
    listed = await kc.list_users(0, 100)
    assert {u.id for u in listed} == set(real_users)
    paged = [u for first in range(0, 6, 2) for u in await kc.list_users(first, 2)]
    assert sorted(u.id for u in paged) == sorted(real_users)

    user = await kc.get_user(real_users[0])
    assert user is not None
    assert (user.username, user.first_name, user.last_name) == ("kc-client-0", "First0", "User")
    assert (user.email, user.email_verified, user.enabled) == ("kc-client-0@example.test", True, True)
    assert user.attribute("picture") == "https://img.test/0.png"
    assert isinstance(user.created_timestamp_ms, int)
    disabled = await kc.get_user(real_users[4])
    assert disabled is not None and disabled.enabled is False


@pytest.mark.stack
async def test_brief_and_full_representation(
    kc: KeycloakAdminClient, kc_admin: KeycloakTestAdmin, real_users: list[str]
) -> None:
    raw = (await kc_admin.request("GET", "/users", params={"briefRepresentation": "true", "max": 1})).json()
    assert {"id", "username", "enabled", "email", "emailVerified", "firstName", "lastName"} <= raw[0].keys()
    assert "attributes" not in raw[0]

    brief = {u.id: u for u in await kc.list_users(0, 100)}
    full = {u.id: u for u in await kc.list_users(0, 100, brief=False)}
    for i, user_id in enumerate(real_users):
        assert brief[user_id].attribute("picture") is None
        assert full[user_id].attribute("picture") == f"https://img.test/{i}.png"
        # Everything but the attributes is the same in both.
        assert brief[user_id] == dataclasses.replace(full[user_id], attributes=())


@pytest.mark.stack
async def test_missing_user_is_none(kc: KeycloakAdminClient, real_users: list[str]) -> None:
    missing = str(uuid.uuid4())
    before = requests_total("get_user", "not_found")
    assert await kc.get_user(missing) is None
    assert requests_total("get_user", "not_found") == before + 1
    assert await kc.user_groups(missing) is None
    assert await kc.user_realm_roles(missing) is None


@pytest.mark.stack
async def test_groups_and_realm_roles(
    kc: KeycloakAdminClient, kc_admin: KeycloakTestAdmin, settings: Settings, real_users: list[str]
) -> None:
    user_id = real_users[1]
    assert await kc.user_groups(user_id) == ()
    names = [f"group-{i}" for i in range(3)]
    for name in names:
        created = await kc_admin.request("POST", "/groups", json={"name": name})
        group_id = created.headers["Location"].rsplit("/", 1)[-1]
        await kc_admin.request("PUT", f"/users/{user_id}/groups/{group_id}")
    # A subgroup is reported by its name, not its path.
    parent = (await kc_admin.request("GET", "/groups", params={"search": "group-0"})).json()[0]
    child = await kc_admin.request("POST", f"/groups/{parent['id']}/children", json={"name": "child"})
    await kc_admin.request("PUT", f"/users/{user_id}/groups/{child.headers['Location'].rsplit('/', 1)[-1]}")

    groups = await kc.user_groups(user_id)
    assert groups is not None and sorted(groups) == sorted([*names, "child"])

    await kc_admin.request("POST", "/roles", json={"name": "reconciler-test-role"})
    role = (await kc_admin.request("GET", "/roles/reconciler-test-role")).json()
    await kc_admin.request("POST", f"/users/{user_id}/role-mappings/realm", json=[role])
    roles = await kc.user_realm_roles(user_id)
    assert roles is not None
    assert set(roles) == {"reconciler-test-role", f"default-roles-{settings.keycloak_realm}"}


@pytest.mark.stack
async def test_group_listing_pages(kc_admin: KeycloakTestAdmin, settings: Settings) -> None:
    user_id = await kc_admin.create_user()
    for i in range(5):
        created = await kc_admin.request("POST", "/groups", json={"name": f"paged-{i}"})
        await kc_admin.request(
            "PUT", f"/users/{user_id}/groups/{created.headers['Location'].rsplit('/', 1)[-1]}"
        )
    before = requests_total("user_groups", "ok")
    async with KeycloakAdminClient(settings.model_copy(update={"keycloak_page_size": 2})) as client:
        groups = await client.user_groups(user_id)
    assert groups is not None and sorted(groups) == [f"paged-{i}" for i in range(5)]
    assert requests_total("user_groups", "ok") == before + 3
    await kc_admin.delete_user(user_id)


@pytest.mark.stack
async def test_wrong_secret_is_a_clear_config_error(settings: Settings) -> None:
    wrong = "wrong-secret-" + uuid.uuid4().hex
    bad = settings.model_copy(update={"keycloak_client_secret": type(settings.keycloak_client_secret)(wrong)})
    before = requests_total("token", "unauthorized") + requests_total("token", "client_error")
    async with KeycloakAdminClient(bad) as client:
        with pytest.raises(KeycloakConfigError) as caught:
            await client.count_users()
    message = str(caught.value)
    assert "bad client id or secret" in message and settings.keycloak_client_id in message
    assert wrong not in message and wrong not in repr(caught.value)
    # Permanent: one token request, not retried.
    assert requests_total("token", "unauthorized") + requests_total("token", "client_error") == before + 1


@pytest.mark.stack
async def test_unknown_realm_is_a_config_error(settings: Settings) -> None:
    async with KeycloakAdminClient(settings.model_copy(update={"keycloak_realm": "no-such-realm"})) as client:
        with pytest.raises(KeycloakConfigError, match="realm 'no-such-realm' not found"):
            await client.count_users()


@pytest.mark.stack
async def test_missing_view_users_is_a_clear_config_error(
    kc_admin: KeycloakTestAdmin, settings: Settings
) -> None:
    client_id = f"no-roles-{uuid.uuid4().hex[:8]}"
    await kc_admin.request(
        "POST",
        "/clients",
        json={
            "clientId": client_id,
            "publicClient": False,
            "serviceAccountsEnabled": True,
            "standardFlowEnabled": False,
            "secret": "no-roles-secret",
        },
    )
    weak = settings.model_copy(
        update={
            "keycloak_client_id": client_id,
            "keycloak_client_secret": type(settings.keycloak_client_secret)("no-roles-secret"),
        }
    )
    async with KeycloakAdminClient(weak) as client:
        with pytest.raises(
            KeycloakConfigError, match=f"client '{client_id}' lacks realm-management/view-users"
        ):
            await client.get_user(str(uuid.uuid4()))


@pytest.mark.stack
async def test_revoked_token_is_refreshed(
    kc: KeycloakAdminClient, settings: Settings, real_users: list[str]
) -> None:
    assert await kc.get_user(real_users[0]) is not None
    token = kc._token
    assert token is not None
    async with httpx.AsyncClient() as http:
        revoked = await http.post(
            f"{settings.keycloak_base_url}/realms/{settings.keycloak_realm}/protocol/openid-connect/revoke",
            data={
                "token": token,
                "token_type_hint": "access_token",
                "client_id": settings.keycloak_client_id,
                "client_secret": settings.keycloak_client_secret.get_secret_value(),
            },
        )
        assert revoked.status_code == 200
        still_valid = await http.get(
            f"{settings.keycloak_base_url}/admin/realms/{settings.keycloak_realm}/users/count",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert still_valid.status_code == 401  # the server really refuses it now
    refreshes, unauthorized = refreshes_total(), requests_total("get_user", "unauthorized")
    assert await kc.get_user(real_users[0]) is not None
    assert kc._token != token
    assert refreshes_total() == refreshes + 1
    assert requests_total("get_user", "unauthorized") == unauthorized + 1


@pytest.mark.stack
async def test_expired_token_is_refreshed_before_use(
    kc_admin: KeycloakTestAdmin, settings: Settings, real_users: list[str]
) -> None:
    # A 3 s token lifespan for the module realm's client: refresh happens before expiry, with no 401.
    clients = (
        await kc_admin.request("GET", "/clients", params={"clientId": settings.keycloak_client_id})
    ).json()
    representation = clients[0]
    original = dict(representation.get("attributes", {}))
    representation["attributes"] = {**original, "access.token.lifespan": "3"}
    await kc_admin.request("PUT", f"/clients/{representation['id']}", json=representation)
    try:
        async with KeycloakAdminClient(settings) as client:
            refreshes, unauthorized = refreshes_total(), requests_total("get_user", "unauthorized")
            assert await client.get_user(real_users[0]) is not None
            await asyncio.sleep(3.2)
            assert await client.get_user(real_users[0]) is not None
            assert refreshes_total() == refreshes + 2
            assert requests_total("get_user", "unauthorized") == unauthorized
    finally:
        representation["attributes"] = original
        await kc_admin.request("PUT", f"/clients/{representation['id']}", json=representation)
