"""Test-side Keycloak administration with the bootstrap admin: create, change and delete users and groups.

This is the "outside world" the reconciler mirrors; it deliberately does not reuse reconciler code.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx


class KeycloakTestAdmin:
    """Admin REST calls as the master realm's bootstrap admin (password grant on admin-cli)."""

    def __init__(
        self,
        base_url: str,
        realm: str,
        username: str,
        password: str,
        self_service_client: str,
        *,
        timeout_s: float = 30.0,
        ca_file: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.realm = realm
        self._username = username
        self._password = password
        self._self_service_client = self_service_client
        # A secure stack's Keycloak has a certificate of the stack's own test CA.
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._verify = verify
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, verify=verify)
        self._token: str | None = None
        self._token_expires = 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], realm: str, *, timeout_s: float = 30.0) -> KeycloakTestAdmin:
        """From the local stack's settings (`.stack/env`): KEYCLOAK_URL and the bootstrap admin."""
        return cls(
            env["KEYCLOAK_URL"],
            realm,
            env["KEYCLOAK_ADMIN_USER"],
            env["KEYCLOAK_ADMIN_PASSWORD"],
            env.get("KEYCLOAK_SELF_SERVICE_CLIENT_ID", "e2e-self-service"),
            timeout_s=timeout_s,
            ca_file=env.get("KEYCLOAK_CA_FILE") or None,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _headers(self) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._token_expires:
            response = await self._http.post(
                "/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": self._username,
                    "password": self._password,
                },
            )
            response.raise_for_status()
            body = response.json()
            self._token = body["access_token"]
            self._token_expires = time.monotonic() + body["expires_in"] - 10
        return {"Authorization": f"Bearer {self._token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An admin API call on this realm (`path` relative to /admin/realms/{realm})."""
        url = f"/admin/realms/{self.realm}{path}" if not path.startswith("/admin/") else path
        response = await self._http.request(method, url, headers=await self._headers(), **kwargs)
        response.raise_for_status()
        return response

    async def read_burst(self, width: int) -> list[int]:
        """`width` reads of the realm's user count at once, each on a connection of its own: their HTTP
        statuses (0: no answer; all 0 when no admin token could be had)."""
        try:
            headers = await self._headers()
        except httpx.HTTPError:
            return [0] * width
        limits = httpx.Limits(max_connections=width)
        async with httpx.AsyncClient(
            base_url=self.base_url, timeout=self._http.timeout, verify=self._verify, limits=limits
        ) as http:

            async def read() -> int:
                try:
                    response = await http.get(f"/admin/realms/{self.realm}/users/count", headers=headers)
                except httpx.HTTPError:
                    return 0
                return response.status_code

            return list(await asyncio.gather(*(read() for _ in range(width))))

    # --- service account ------------------------------------------------------------------------------------
    async def _service_account_role(self, client_id: str, role: str) -> tuple[str, str, dict[str, Any]]:
        """(service-account user id, realm-management client uuid, role) of `client_id`'s service account."""
        (client,) = (await self.request("GET", "/clients", params={"clientId": client_id})).json()
        account = (await self.request("GET", f"/clients/{client['id']}/service-account-user")).json()
        (management,) = (
            await self.request("GET", "/clients", params={"clientId": "realm-management"})
        ).json()
        representation = (await self.request("GET", f"/clients/{management['id']}/roles/{role}")).json()
        return account["id"], management["id"], representation

    async def revoke_service_account_role(self, client_id: str, role: str) -> None:
        """Take a realm-management role (e.g. view-users) away from a client's service account."""
        account, management, representation = await self._service_account_role(client_id, role)
        await self.request(
            "DELETE", f"/users/{account}/role-mappings/clients/{management}", json=[representation]
        )

    async def grant_service_account_role(self, client_id: str, role: str) -> None:
        account, management, representation = await self._service_account_role(client_id, role)
        await self.request(
            "POST", f"/users/{account}/role-mappings/clients/{management}", json=[representation]
        )

    async def set_access_token_lifespan(self, client_id: str, seconds: int) -> None:
        """Tokens keep the roles of their issue time: a short lifespan makes a role change bite soon. (The
        realm file sets the client's own `access.token.lifespan`, which overrides the realm's.)"""
        (client,) = (await self.request("GET", "/clients", params={"clientId": client_id})).json()
        client.setdefault("attributes", {})["access.token.lifespan"] = str(seconds)
        await self.request("PUT", f"/clients/{client['id']}", json=client)

    # --- realms --------------------------------------------------------------------------------------------
    async def create_realm(self, export: dict[str, Any], name: str) -> None:
        """Create realm `name` from a realm export, renamed (its clients, service account and events kept)."""
        representation = {**export}
        representation["realm"] = name
        representation["id"] = name
        await self.request("POST", "/admin/realms", json=representation)

    async def set_event_listeners(self, listeners: list[str]) -> None:
        """The realm's event listeners (e.g. without `kafka`: no event of this realm reaches Kafka)."""
        config = (await self.request("GET", "/events/config")).json()
        config["eventsListeners"] = listeners
        await self.request("PUT", "/events/config", json=config)

    async def delete_realm(self, name: str) -> None:
        await self.request("DELETE", f"/admin/realms/{name}")

    # --- users ---------------------------------------------------------------------------------------------
    async def create_user(
        self,
        username: str | None = None,
        *,
        email: str | None = None,
        first_name: str | None = "Test",
        last_name: str | None = "User",
        enabled: bool = True,
        attributes: dict[str, list[str]] | None = None,
        password: str | None = None,
    ) -> str:
        """Create a user and return its Keycloak id."""
        username = username or f"u-{uuid.uuid4().hex[:12]}"
        body: dict[str, Any] = {
            "username": username,
            "email": email if email is not None else f"{username}@example.test",
            "emailVerified": True,
            "firstName": first_name,
            "lastName": last_name,
            "enabled": enabled,
            "attributes": attributes or {},
        }
        if password:
            body["credentials"] = [{"type": "password", "value": password, "temporary": False}]
        response = await self.request("POST", "/users", json=body)
        return response.headers["Location"].rsplit("/", 1)[-1]

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        try:
            return (await self.request("GET", f"/users/{user_id}")).json()  # type: ignore[no-any-return]
        except httpx.HTTPStatusError as error:
            if error.response.status_code == 404:
                return None
            raise

    async def update_user(self, user_id: str, **fields: Any) -> None:
        """PUT a partial representation (camelCase keys, as the admin API takes them)."""
        current = await self.get_user(user_id)
        assert current is not None, f"user {user_id} does not exist"
        current.update(fields)
        await self.request("PUT", f"/users/{user_id}", json=current)

    async def set_enabled(self, user_id: str, enabled: bool) -> None:
        await self.update_user(user_id, enabled=enabled)

    async def delete_user(self, user_id: str) -> None:
        await self.request("DELETE", f"/users/{user_id}")

    async def list_users(self, max_results: int = 100_000) -> list[dict[str, Any]]:
        response = await self.request("GET", "/users", params={"first": 0, "max": max_results})
        return response.json()  # type: ignore[no-any-return]

    async def delete_all_users(self) -> None:
        for user in await self.list_users():
            await self.delete_user(user["id"])

    async def partial_import_users(self, users: list[dict[str, Any]]) -> None:
        """Create many users in one request (realm partial import; emits no events)."""
        await self.request("POST", "/partialImport", json={"ifResourceExists": "OVERWRITE", "users": users})

    # --- groups and roles ----------------------------------------------------------------------------------
    async def create_group(self, name: str) -> str:
        response = await self.request("POST", "/groups", json={"name": name})
        return response.headers["Location"].rsplit("/", 1)[-1]

    async def add_to_group(self, user_id: str, group_id: str) -> None:
        await self.request("PUT", f"/users/{user_id}/groups/{group_id}")

    async def remove_from_group(self, user_id: str, group_id: str) -> None:
        await self.request("DELETE", f"/users/{user_id}/groups/{group_id}")

    async def create_realm_role(self, name: str) -> dict[str, Any]:
        await self.request("POST", "/roles", json={"name": name})
        return (await self.request("GET", f"/roles/{name}")).json()  # type: ignore[no-any-return]

    async def grant_realm_role(self, user_id: str, role: dict[str, Any]) -> None:
        await self.request("POST", f"/users/{user_id}/role-mappings/realm", json=[role])

    # --- organizations (Keycloak 26) -------------------------------------------------------------------------
    async def enable_organizations(self) -> None:
        """Switch the realm's organizations on (the admin API answers 400 for them otherwise)."""
        realm = (await self.request("GET", f"/admin/realms/{self.realm}")).json()
        realm["organizationsEnabled"] = True
        await self.request("PUT", f"/admin/realms/{self.realm}", json=realm)

    async def create_organization(self, name: str, alias: str) -> str:
        response = await self.request("POST", "/organizations", json={"name": name, "alias": alias})
        return response.headers["Location"].rsplit("/", 1)[-1]

    async def get_organization(self, organization_id: str) -> dict[str, Any]:
        return (await self.request("GET", f"/organizations/{organization_id}")).json()  # type: ignore[no-any-return]

    async def rename_organization(self, organization_id: str, name: str) -> None:
        current = await self.get_organization(organization_id)
        await self.request("PUT", f"/organizations/{organization_id}", json={**current, "name": name})

    async def delete_organization(self, organization_id: str) -> None:
        await self.request("DELETE", f"/organizations/{organization_id}")

    async def add_organization_member(self, organization_id: str, user_id: str) -> None:
        """Keycloak 26.7 records ORGANIZATION_MEMBERSHIP CREATE on `organizations/{id}/members`."""
        await self.request("POST", f"/organizations/{organization_id}/members", json=user_id)

    async def remove_organization_member(self, organization_id: str, user_id: str) -> None:
        """An unmanaged member only leaves (a managed one would be deleted with it)."""
        await self.request("DELETE", f"/organizations/{organization_id}/members/{user_id}")

    # --- the user acting on their own account (user events) -------------------------------------------------
    async def user_token(self, username: str, password: str) -> str:
        response = await self._http.post(
            f"/realms/{self.realm}/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": self._self_service_client,
                "username": username,
                "password": password,
                "scope": "openid",
            },
        )
        response.raise_for_status()
        return response.json()["access_token"]  # type: ignore[no-any-return]

    async def update_own_profile(self, username: str, password: str, **fields: Any) -> None:
        """The user changes their own profile through the account API (emits an UPDATE_PROFILE user event)."""
        headers = {
            "Authorization": f"Bearer {await self.user_token(username, password)}",
            "Accept": "application/json",  # the account endpoint serves the account console page otherwise
        }
        account = f"/realms/{self.realm}/account/"
        current = (await self._http.get(account, headers=headers)).raise_for_status().json()
        current.pop("userProfileMetadata", None)
        current.update(fields)
        (await self._http.post(account, headers=headers, json=current)).raise_for_status()
