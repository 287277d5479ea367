"""The Keycloak client's organization reads (ORGANIZATIONS_ENABLED): what Keycloak 26.7.3 answers when the
realm's organizations are off or the service account lacks `view-organizations` (a refusal, never "this
user is gone"), a user gone (None), and a member representation it cannot read."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from reconciler.base.config import Settings
from reconciler.base.errors import KeycloakConfigError, KeycloakProtocolError
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.domain.models import MembershipType
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.scripted_keycloak import USER_ID, FakeKeycloak

ORG_ID = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[KeycloakAdminClient]:
    """A new client each test: a token keeps the roles of its issue time."""
    async with KeycloakAdminClient(override(settings, organizations_enabled=True)) as keycloak:
        yield keycloak


@pytest.mark.stack
async def test_organizations_off_in_the_realm_is_a_refusal_not_a_deleted_user(
    kc_admin: KeycloakTestAdmin, settings: Settings
) -> None:
    await kc_admin.grant_service_account_role("user-reconciler", "view-organizations")
    user_id = await kc_admin.create_user()
    async with KeycloakAdminClient(override(settings, organizations_enabled=True)) as keycloak:
        with pytest.raises(KeycloakConfigError, match="organizations are not enabled"):
            await keycloak.user_organizations(user_id)
        with pytest.raises(KeycloakConfigError, match="ORGANIZATIONS_ENABLED=false"):
            await keycloak.check_access()
    async with KeycloakAdminClient(settings) as keycloak:  # setting off: nothing asks for organizations
        assert await keycloak.check_access() >= 1


@pytest.mark.stack
async def test_without_view_organizations_the_start_is_refused_and_says_which_role(
    kc_admin: KeycloakTestAdmin, settings: Settings
) -> None:
    await kc_admin.enable_organizations()
    await kc_admin.revoke_service_account_role("user-reconciler", "view-organizations")
    try:
        async with KeycloakAdminClient(override(settings, organizations_enabled=True)) as keycloak:
            with pytest.raises(KeycloakConfigError, match="realm-management/view-organizations"):
                await keycloak.check_access()
    finally:
        await kc_admin.grant_service_account_role("user-reconciler", "view-organizations")


@pytest.mark.stack
async def test_memberships_of_a_user_and_of_a_user_that_is_gone(
    kc_admin: KeycloakTestAdmin, client: KeycloakAdminClient
) -> None:
    await kc_admin.enable_organizations()
    org_id = await kc_admin.create_organization("Client Test Org", "client-test-org")
    user_id = await kc_admin.create_user()
    assert await client.user_organizations(user_id) == ()
    await kc_admin.add_organization_member(org_id, user_id)
    (membership,) = await client.user_organizations(user_id) or ()
    assert (membership.id, membership.alias, membership.name) == (
        org_id,
        "client-test-org",
        "Client Test Org",
    )
    assert membership.membership_type is MembershipType.UNMANAGED
    assert await client.all_organization_members(org_id) == [(user_id, MembershipType.UNMANAGED)]
    await kc_admin.delete_user(user_id)
    assert await client.user_organizations(user_id) is None
    await kc_admin.delete_organization(org_id)
    assert await client.all_organization_members(org_id) == []


async def test_a_member_without_a_known_membership_type_is_unreadable() -> None:
    async def admin(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/organizations"):
            return httpx.Response(200, json=[{"id": ORG_ID, "name": "Org", "alias": "org"}])
        return httpx.Response(200, json={"id": USER_ID, "username": "alice", "membershipType": "OWNER"})

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        keycloak_url="https://keycloak.test",
        keycloak_realm="app",
        keycloak_client_secret="unit-test-secret",
        mongodb_uri="mongodb://unused.test",
        organizations_enabled=True,
    )
    async with KeycloakAdminClient(settings, transport=httpx.MockTransport(FakeKeycloak(admin))) as keycloak:
        with pytest.raises(KeycloakProtocolError, match="membershipType"):
            await keycloak.user_organizations(USER_ID)
