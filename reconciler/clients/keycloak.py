"""Keycloak admin API client: service-account token manager plus the user reads the reconciler needs."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import quote

import httpx
from aiolimiter import AsyncLimiter
from tenacity import RetryCallState, retry_if_exception_type
from tenacity.wait import wait_base

from reconciler.base.config import Settings, load_ca_bundle
from reconciler.base.errors import (
    InvalidUserId,
    KeycloakConfigError,
    KeycloakError,
    KeycloakProtocolError,
    KeycloakUnavailable,
)
from reconciler.base.retry import RetryPolicy
from reconciler.clients.costs import RequestCosts
from reconciler.domain.attributes import AttributeMap
from reconciler.domain.models import KeycloakUser, MembershipType, OrganizationMembership, is_keycloak_id
from reconciler.observability import logs, metrics

__all__ = [
    "InvalidUserId",
    "KeycloakAdminClient",
    "KeycloakConfigError",
    "KeycloakError",
    "KeycloakProtocolError",
    "KeycloakUnavailable",
    "UnreadableUser",
    "UserPage",
    "created_filter",
    "organization_from_representation",
    "user_from_representation",
]

ORGANIZATIONS_ROLE: Final = "view-organizations"

log = logs.get_logger(__name__)

Operation = Literal[
    "token",
    "list_users",
    "get_user",
    "count_users",
    "user_groups",
    "user_realm_roles",
    "list_organizations",
    "organization_members",
    "user_organizations",
    "organization_member",
    "admin_events",
    "user_events",
    "events_config",
]

# Refresh a token this long before Keycloak says it expires (capped at a tenth of its lifetime).
_TOKEN_REFRESH_MARGIN_S = 30.0
_DEFAULT_TOKEN_LIFETIME_S = 60.0
_BAD_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


@dataclass(frozen=True)
class _Answer:
    """One request's answer; a GET answered 200 comes with its JSON, read once inside the attempt so that a
    body Keycloak cut short is retried."""

    response: httpx.Response
    body: Any = None


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, retry_after: float | None = None, outcome: str = "server_error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.outcome = outcome  # the requests metric's outcome label of the failed attempt


class _RetryAfterOrBackoff(wait_base):
    """Wait what a 429's Retry-After asks (capped), else exponential backoff with jitter."""

    def __init__(self, backoff: wait_base, cap_s: float) -> None:
        self._backoff = backoff
        self._cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self._cap_s)
        return self._backoff(retry_state)


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class UnreadableUser:
    """A listed user whose representation could not be read: its id (None if that was not valid) and why."""

    user_id: str | None
    reason: str


@dataclass(slots=True)
class UserPage:
    """One page of the user listing: the readable users, the unreadable ones, and how many items it had."""

    size: int
    users: list[KeycloakUser] = field(default_factory=list)
    unreadable: list[UnreadableUser] = field(default_factory=list)


def user_from_representation(data: Mapping[str, Any], mirrored: AttributeMap) -> KeycloakUser:
    """Map a Keycloak UserRepresentation (brief or full) to a `KeycloakUser`.

    `attributes` holds the first value of each attribute of `mirrored` (e.g. `attributes.picture[0]`); a
    brief representation has no attributes. Keycloak >= 24 keeps an attribute only when the realm's user
    profile declares it or enables unmanaged attributes. Raises `KeycloakProtocolError` when id, username
    or enabled is unusable.
    """
    if not isinstance(data, Mapping):
        raise KeycloakProtocolError("user representation is not a JSON object")
    user_id, username, enabled = data.get("id"), data.get("username"), data.get("enabled")
    if not isinstance(user_id, str) or not is_keycloak_id(user_id):
        raise KeycloakProtocolError("user representation has no valid Keycloak id")
    if not isinstance(username, str) or not username:
        raise KeycloakProtocolError(f"user {user_id} has no username")
    if not isinstance(enabled, bool):
        raise KeycloakProtocolError(f"user {user_id} has no boolean 'enabled'")
    created = data.get("createdTimestamp")
    return KeycloakUser(
        id=user_id,
        username=username,
        enabled=enabled,
        email=_optional_str(data, "email"),
        email_verified=data.get("emailVerified") is True,
        first_name=_optional_str(data, "firstName"),
        last_name=_optional_str(data, "lastName"),
        attributes=_first_values(data.get("attributes"), mirrored.attributes),
        created_timestamp_ms=created if isinstance(created, int) and not isinstance(created, bool) else None,
    )


def _first_values(attributes: object, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(name, first value) of each of `names` the representation's attributes hold a non-empty string for."""
    if not isinstance(attributes, Mapping):
        return ()
    found: list[tuple[str, str]] = []
    for name in names:
        values = attributes.get(name)
        if isinstance(values, list) and values and isinstance(values[0], str) and values[0]:
            found.append((name, values[0]))
    return tuple(found)


def organization_from_representation(data: Any, membership_type: MembershipType) -> OrganizationMembership:
    """Map a Keycloak OrganizationRepresentation (brief) to a membership of that type. Raises
    `KeycloakProtocolError` when id or name is unusable (the id ends up in an admin API URL)."""
    if not isinstance(data, Mapping):
        raise KeycloakProtocolError("organization representation is not a JSON object")
    org_id, name = _optional_str(data, "id"), _optional_str(data, "name")
    if org_id is None or not is_keycloak_id(org_id) or name is None:
        raise KeycloakProtocolError("organization representation has no valid id or name")
    return OrganizationMembership(org_id.lower(), _optional_str(data, "alias"), name, membership_type)


def _membership_type(data: Any) -> MembershipType:
    value = data.get("membershipType") if isinstance(data, Mapping) else None
    if value not in tuple(MembershipType):
        raise KeycloakProtocolError("member representation has no known membershipType")
    return MembershipType(value)


# Pages at least this large tell what a listed user costs (a page of one is mostly the request's overhead).
LISTED_USER_MIN_PAGE: Final = 10


class KeycloakAdminClient:
    """Reads users of one realm through the admin REST API with a service-account token.

    Every request is bounded by a semaphore (`keycloak_max_concurrency`) and an optional rate limit
    (`keycloak_max_requests_per_s`); transient failures are retried with backoff (`keycloak_retry_attempts`).
    """

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self.mirrored = AttributeMap.parse(settings.mirrored_attributes)
        self._base = settings.keycloak_base_url
        self._realm_path = quote(settings.keycloak_realm, safe="")
        self._admin_base = f"{self._base}/admin/realms/{self._realm_path}"
        self._token_url = f"{self._base}/realms/{self._realm_path}/protocol/openid-connect/token"
        self._client_secret = settings.keycloak_client_secret.get_secret_value()
        logs.register_secret(self._client_secret)
        self._http = httpx.AsyncClient(
            transport=transport,
            verify=_tls_verification(settings),
            timeout=httpx.Timeout(settings.keycloak_timeout_s),
            limits=httpx.Limits(max_connections=settings.keycloak_max_concurrency + 1),
            headers={"Accept": "application/json"},
        )
        self._semaphore = asyncio.Semaphore(settings.keycloak_max_concurrency)
        rate = settings.keycloak_max_requests_per_s
        # One request per 1/rate seconds, no bursts: Keycloak sees an even load (None: unlimited).
        self._limiter = AsyncLimiter(1, 1.0 / rate) if rate > 0 else None
        self._attempts = settings.keycloak_retry_attempts
        policy = RetryPolicy.keycloak_request(settings)
        self._retry_policy = policy.waiting(
            _RetryAfterOrBackoff(policy.wait, settings.keycloak_retry_after_max_s)
        )
        self.costs = RequestCosts()  # measured per-request times (the event path's burst switch)
        self.last_count: int | None = None  # the realm's user count at the latest /users/count
        # Keycloak's clock (the Date header of its latest answer, 1 s resolution), None before one came.
        self.server_time_ms: int | None = None
        self._token: str | None = None
        self._token_refresh_at = 0.0
        self._token_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # --- users ------------------------------------------------------------------------------------------

    async def list_users(self, first: int, max_results: int, *, brief: bool = True) -> list[KeycloakUser]:
        """One page of users, ordered by Keycloak (offset paging; service-account users are not listed).

        On Keycloak 26.5 `briefRepresentation=true` returns id, username, firstName, lastName, email,
        emailVerified, enabled, createdTimestamp and access: no attributes, so no mirrored attribute.
        Pass `brief=False` when attributes are mirrored (`self.mirrored.needs_attributes`); the full form
        adds attributes, requiredActions, totp, notBefore, disableableCredentialTypes and a per-user
        userProfileMetadata (about 1.5 kB each).
        """
        page = await self.list_user_page(first, max_results, brief=brief)
        if page.unreadable:
            raise KeycloakProtocolError(page.unreadable[0].reason)
        return page.users

    async def list_user_page(
        self, first: int, max_results: int, *, brief: bool = True, created: tuple[int, int] | None = None
    ) -> UserPage:
        """Like `list_users`, but a representation that cannot be read is set aside in `unreadable` (with its
        id when that is a valid Keycloak id) instead of failing the whole page: one bad user must not stop
        the full reconcile for everyone else. `size` counts every item, for paging.

        `created` = (after, before), epoch ms, both inclusive: only users created then (Keycloak 26.6+;
        older versions ignore the filter), ordered by username, service accounts left out as in the plain
        listing (see `created_filter`)."""
        params: dict[str, Any] = {
            "first": first,
            "max": max_results,
            "briefRepresentation": str(brief).lower(),
        }
        if created is not None:
            params.update(created_filter(*created))
        started = time.perf_counter()
        data = await self._get_json("list_users", "/users", params)
        if not isinstance(data, list):
            raise KeycloakProtocolError("user listing is not a JSON array")
        if data and max_results >= LISTED_USER_MIN_PAGE:  # a real page, not the start-up check's one user
            self.costs.observe("listed_user", (time.perf_counter() - started) / len(data))
        page = UserPage(size=len(data))
        for item in data:
            try:
                page.users.append(user_from_representation(item, self.mirrored))
            except KeycloakProtocolError as error:
                raw_id = item.get("id") if isinstance(item, Mapping) else None
                user_id = raw_id if isinstance(raw_id, str) and is_keycloak_id(raw_id) else None
                page.unreadable.append(UnreadableUser(user_id, str(error)))
        return page

    async def get_user(self, user_id: str) -> KeycloakUser | None:
        """The full representation of one user, or None when Keycloak has no such user (404)."""
        path = f"/users/{self._checked_id(user_id)}"
        data = await self._get_json("get_user", path, None, not_found_ok=True)
        if data is None:
            return None
        user = user_from_representation(data, self.mirrored)
        if user.id != user_id:
            raise KeycloakProtocolError(f"asked for user {user_id}, Keycloak returned {user.id}")
        return user

    async def count_users(self) -> int:
        """Number of users in the realm (service-account users are not counted)."""
        data = await self._get_json("count_users", "/users/count", None)
        if not isinstance(data, int) or isinstance(data, bool):
            raise KeycloakProtocolError("user count is not an integer")
        self.last_count = data
        return data

    async def count_created(self, created_after: int, created_before: int) -> int:
        """Users created in `[created_after, created_before]` (epoch ms, both inclusive), counted as
        `list_user_page(created=...)` lists them (Keycloak 26.6+; older versions ignore the filter and count
        the realm)."""
        params = created_filter(created_after, created_before)
        data = await self._get_json("count_users", "/users/count", params)
        if not isinstance(data, int) or isinstance(data, bool):
            raise KeycloakProtocolError("user count is not an integer")
        return data

    async def user_groups(self, user_id: str) -> tuple[str, ...] | None:
        """Names (not paths) of the groups the user is a direct member of; None when the user is gone (404)."""
        path = f"/users/{self._checked_id(user_id)}/groups"
        page_size = self._settings.keycloak_page_size
        names: list[str] = []
        first = 0
        while True:
            params = {"first": first, "max": page_size, "briefRepresentation": "true"}
            page = await self._get_json("user_groups", path, params, not_found_ok=True)
            if page is None:
                return None
            names.extend(self._names(page, "groups"))
            if len(page) < page_size:
                return tuple(names)
            first += page_size

    async def user_realm_roles(self, user_id: str) -> tuple[str, ...] | None:
        """Names of the realm roles mapped directly to the user (composites not expanded); None on 404."""
        path = f"/users/{self._checked_id(user_id)}/role-mappings/realm"
        data = await self._get_json("user_realm_roles", path, None, not_found_ok=True)
        return None if data is None else tuple(self._names(data, "realm roles"))

    # --- organizations (Keycloak 26; needs realm-management/view-organizations) ----------------------------

    async def user_organizations(self, user_id: str) -> tuple[OrganizationMembership, ...] | None:
        """The organizations the user is a member of, each with the user's membership type; None when the
        user is gone (404). One request for the organizations, one per organization for the type (Keycloak's
        organization representation does not carry it)."""
        checked = self._checked_id(user_id)
        data = await self._get_json(
            "user_organizations",
            f"/organizations/members/{checked}/organizations",
            {"briefRepresentation": "true"},
            not_found_ok=True,
            role=ORGANIZATIONS_ROLE,
        )
        if data is None:
            return None
        if not isinstance(data, list):
            raise KeycloakProtocolError("organizations of a member is not a JSON array")
        orgs = [organization_from_representation(item, MembershipType.UNMANAGED) for item in data]
        memberships: list[OrganizationMembership] = []
        for org in orgs:
            member = await self._get_json(
                "organization_member",
                f"/organizations/{org.id}/members/{checked}",
                None,
                not_found_ok=True,
                role=ORGANIZATIONS_ROLE,
            )
            if member is not None:  # None: removed since the first read (or the organization deleted)
                memberships.append(dataclasses.replace(org, membership_type=_membership_type(member)))
        return tuple(sorted(memberships))

    async def list_organizations(self, first: int, max_results: int) -> list[OrganizationMembership]:
        """One page of the realm's organizations (id, alias, name; the membership type is a placeholder)."""
        data = await self._get_json(
            "list_organizations",
            "/organizations",
            {"first": first, "max": max_results, "briefRepresentation": "true"},
            role=ORGANIZATIONS_ROLE,
        )
        if not isinstance(data, list):
            raise KeycloakProtocolError("organization listing is not a JSON array")
        return [organization_from_representation(item, MembershipType.UNMANAGED) for item in data]

    async def organization_members(
        self, organization_id: str, first: int, max_results: int
    ) -> list[tuple[str, MembershipType]] | None:
        """One page of an organization's members: (user id, membership type); None when the organization
        does not exist (404)."""
        if not is_keycloak_id(organization_id):
            raise InvalidUserId(f"not a Keycloak organization id: {organization_id!r:.80}")
        data = await self._get_json(
            "organization_members",
            f"/organizations/{organization_id}/members",
            {"first": first, "max": max_results},
            not_found_ok=True,
            role=ORGANIZATIONS_ROLE,
        )
        if data is None:
            return None
        if not isinstance(data, list):
            raise KeycloakProtocolError("organization member listing is not a JSON array")
        members: list[tuple[str, MembershipType]] = []
        for item in data:
            user_id = item.get("id") if isinstance(item, Mapping) else None
            if not isinstance(user_id, str) or not is_keycloak_id(user_id):
                raise KeycloakProtocolError("organization member has no valid Keycloak id")
            members.append((user_id.lower(), _membership_type(item)))
        return members

    async def all_organization_members(self, organization_id: str) -> list[tuple[str, MembershipType]]:
        """Every member of one organization, paged by `keycloak_page_size` ([] when it does not exist)."""
        page_size = self._settings.keycloak_page_size
        members: list[tuple[str, MembershipType]] = []
        first = 0
        while True:
            page = await self.organization_members(organization_id, first, page_size)
            if page is None:
                return members
            members.extend(page)
            if len(page) < page_size:
                return members
            first += page_size

    async def organization_memberships(self) -> dict[str, list[OrganizationMembership]]:
        """user id -> its memberships, from every organization's member list: each organization listed and
        each member list read once, paged (the full reconcile's one read per run)."""
        page_size = self._settings.keycloak_page_size
        organizations: list[OrganizationMembership] = []
        first = 0
        while True:
            page = await self.list_organizations(first, page_size)
            organizations.extend(page)
            if len(page) < page_size:
                break
            first += page_size
        # Concurrently, bounded by the client's semaphore and rate limit like every request.
        member_lists = await asyncio.gather(*(self.all_organization_members(org.id) for org in organizations))
        by_user: dict[str, list[OrganizationMembership]] = {}
        for org, members in zip(organizations, member_lists, strict=True):
            for user_id, membership_type in members:
                membership = dataclasses.replace(org, membership_type=membership_type)
                by_user.setdefault(user_id, []).append(membership)
        return by_user

    async def check_access(self) -> int:
        """At start: a token, then one small authorised read of the realm's users; returns the user count.

        Raises `KeycloakConfigError` when Keycloak refuses (bad secret, no view-users, unknown realm; with
        ORGANIZATIONS_ENABLED no view-organizations, or organizations off in the realm), and
        also when the listing is empty while `/users/count` says there are users: the service account can
        count but not view them, which must never read as "Keycloak has no users".
        """
        total = await self.count_users()
        listed = await self._get_json(
            "list_users", "/users", {"first": 0, "max": 1, "briefRepresentation": "true"}
        )
        if self._settings.organizations_enabled:  # refused (no view-organizations) or off in the realm
            await self.list_organizations(0, 1)
        if total > 0 and isinstance(listed, list) and not listed:
            raise KeycloakConfigError(self._cannot_view(total))
        return total

    def _cannot_view(self, total: int) -> str:
        return (
            f"Keycloak lists no users of realm '{self._settings.keycloak_realm}' to client"
            f" '{self._settings.keycloak_client_id}' while /users/count says {total}: the service account"
            " lacks realm-management/view-users"
        )

    def empty_listing_error(self, total: int) -> KeycloakConfigError:
        """The error of a listing that came back empty although Keycloak counts users (see check_access)."""
        return KeycloakConfigError(self._cannot_view(total))

    # --- the event store (needs realm-management/view-events) ---------------------------------------------

    async def events_config(self) -> dict[str, Any]:
        """The realm's event settings: which events are stored, for how long, which listeners run."""
        data = await self._get_json("events_config", "/events/config", None, role="view-events")
        if not isinstance(data, dict):
            raise KeycloakProtocolError("events config is not a JSON object")
        return data

    async def admin_events(
        self, date_from_ms: int, first: int, max_results: int, resource_types: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Stored admin events from `date_from_ms` (inclusive), oldest first."""
        window = self._event_window(date_from_ms, first, max_results)
        data = await self._get_json(
            "admin_events",
            "/admin-events",
            {**window, "resourceTypes": list(resource_types)},
            role="view-events",
        )
        return self._objects(data)

    async def user_events(
        self, date_from_ms: int, first: int, max_results: int, types: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Stored user events of these types from `date_from_ms` (inclusive), oldest first."""
        window = self._event_window(date_from_ms, first, max_results)
        data = await self._get_json(
            "user_events", "/events", {**window, "type": list(types)}, role="view-events"
        )
        return self._objects(data)

    @staticmethod
    def _event_window(date_from_ms: int, first: int, max_results: int) -> dict[str, Any]:
        """`dateFrom` is epoch milliseconds on Keycloak 26.5 (inclusive); oldest first, paged."""
        return {"dateFrom": str(date_from_ms), "direction": "asc", "first": first, "max": max_results}

    @staticmethod
    def _objects(data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, list):
            raise KeycloakProtocolError("event listing is not a JSON array")
        return [item for item in data if isinstance(item, dict)]

    @staticmethod
    def _checked_id(user_id: str) -> str:
        if not is_keycloak_id(user_id):
            raise InvalidUserId(f"not a Keycloak user id: {user_id!r:.80}")
        return user_id

    @staticmethod
    def _names(data: Any, what: str) -> list[str]:
        if not isinstance(data, list) or not all(
            isinstance(item, Mapping) and isinstance(item.get("name"), str) for item in data
        ):
            raise KeycloakProtocolError(f"{what} listing is not an array of named objects")
        return [item["name"] for item in data]

    # --- admin requests ---------------------------------------------------------------------------------

    async def _get_json(
        self,
        operation: Operation,
        path: str,
        params: Mapping[str, Any] | None,
        *,
        not_found_ok: bool = False,
        role: str = "view-users",
    ) -> Any:
        url = self._admin_base + path
        token = await self._access_token()
        answer = await self._send(operation, "GET", url, params=params, token=token)
        if answer.response.status_code in (401, 403):
            # 401: revoked, or expired earlier than announced. 403: the token's roles are those of its issue
            # time, so a role granted since needs a new token. Either way: one fresh token, one more try.
            self._invalidate_token(token)
            token = await self._access_token()
            answer = await self._send(operation, "GET", url, params=params, token=token)
        response = answer.response
        status = response.status_code
        if status == 404 and role == ORGANIZATIONS_ROLE and _organizations_off(response):
            # Not "this user or organization is gone": a 404 for every organization read (users would
            # otherwise be deactivated as deleted).
            raise KeycloakConfigError(
                f"organizations are not enabled in realm '{self._settings.keycloak_realm}' ({operation}: HTTP"
                " 404): turn them on in the realm, or set ORGANIZATIONS_ENABLED=false"
            )
        if status == 404 and not_found_ok:
            return None
        if status == 401:
            raise KeycloakConfigError(
                f"Keycloak rejected a fresh service-account token of client '{self._settings.keycloak_client_id}'"
                f" for {operation} (HTTP 401): check that KEYCLOAK_URL is the URL Keycloak issues tokens for"
            )
        if status == 403:
            raise KeycloakConfigError(
                f"the service account of client '{self._settings.keycloak_client_id}' lacks"
                f" realm-management/{role} in realm '{self._settings.keycloak_realm}' ({operation}: HTTP 403)"
            )
        if status != 200:
            raise KeycloakProtocolError(f"unexpected HTTP {status} from Keycloak for {operation}")
        self._note_server_time(response)
        return answer.body

    def _note_server_time(self, response: httpx.Response) -> None:
        date = response.headers.get("Date")
        if not date:
            return
        try:
            self.server_time_ms = int(parsedate_to_datetime(date).timestamp() * 1000)
        except (TypeError, ValueError, IndexError):
            return

    @staticmethod
    def _json(response: httpx.Response, operation: Operation) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise KeycloakProtocolError(f"Keycloak sent invalid JSON for {operation}") from exc

    async def _send(
        self,
        operation: Operation,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> _Answer:
        """One logical request: bounded, rate limited, retried while the failure is transient."""
        headers = {"Authorization": f"Bearer {token}"} if token else None

        async def attempt() -> _Answer:
            async with self._semaphore:
                if self._limiter is not None:
                    await self._limiter.acquire()
                started = time.perf_counter()
                try:
                    response = await self._http.request(
                        method, url, params=params, data=data, headers=headers
                    )
                except httpx.ConnectError as exc:
                    self._observe(operation, "connection_error", started)
                    reason = _certificate_failure(exc)
                    if reason is not None:
                        raise KeycloakConfigError(self._untrusted(reason)) from exc
                    raise _Transient(f"connection error ({type(exc).__name__})") from exc
                except httpx.TimeoutException as exc:
                    self._observe(operation, "timeout", started)
                    raise _Transient(f"timeout ({type(exc).__name__})") from exc
                except httpx.TransportError as exc:
                    self._observe(operation, "connection_error", started)
                    raise _Transient(f"connection error ({type(exc).__name__})") from exc
                try:
                    answer = _answer(method, response)
                except _Transient as failure:
                    self._observe(operation, failure.outcome, started)
                    raise
                self._observe(operation, _outcome(response.status_code), started)
                return answer

        retrying = self._retry_policy.retrying(
            retry_if_exception_type(_Transient), before_sleep=lambda state: self._log_retry(operation, state)
        )
        try:
            return await retrying(attempt)
        except _Transient as exc:
            raise KeycloakUnavailable(
                f"Keycloak {operation} failed after {self._attempts} attempts: {exc.reason}"
            ) from exc

    def _untrusted(self, reason: str) -> str:
        ca_file = self._settings.keycloak_ca_file
        trusted = (
            f"the CA in KEYCLOAK_CA_FILE={ca_file}"
            if ca_file
            else "the system CAs (KEYCLOAK_CA_FILE is empty)"
        )
        return (
            f"Keycloak's TLS certificate at {self._base} is not trusted by {trusted} ({reason}): set"
            " KEYCLOAK_CA_FILE to the CA that signed it"
        )

    def _observe(self, operation: Operation, outcome: str, started: float) -> None:
        seconds = time.perf_counter() - started
        metrics.KEYCLOAK_REQUESTS.labels(operation=operation, outcome=outcome).inc()
        metrics.KEYCLOAK_REQUEST_SECONDS.labels(operation=operation).observe(seconds)
        if outcome in ("ok", "not_found"):  # answered: what a read of this kind costs Keycloak
            self.costs.observe(operation, seconds)

    @staticmethod
    def _log_retry(operation: Operation, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "keycloak request retried",
            operation=operation,
            attempt=state.attempt_number,
            reason=exc.reason if isinstance(exc, _Transient) else repr(exc),
            delay_s=round(state.upcoming_sleep, 3),
        )

    # --- token ------------------------------------------------------------------------------------------

    async def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_refresh_at:
            return self._token
        async with self._token_lock:
            # Whoever waited on the lock reuses the token the holder just fetched.
            if self._token is not None and time.monotonic() < self._token_refresh_at:
                return self._token
            return await self._fetch_token()

    def _invalidate_token(self, token: str) -> None:
        # Only the token that failed: a concurrent caller may already have replaced it.
        if self._token == token:
            self._token = None

    async def _fetch_token(self) -> str:
        requested_at = time.monotonic()
        form = {
            "grant_type": "client_credentials",
            "client_id": self._settings.keycloak_client_id,
            "client_secret": self._client_secret,
        }
        response = (await self._send("token", "POST", self._token_url, data=form)).response
        client, realm = self._settings.keycloak_client_id, self._settings.keycloak_realm
        if response.status_code in (400, 401):
            error = _oauth_error(response)
            if error in _BAD_CLIENT_ERRORS or response.status_code == 401:
                raise KeycloakConfigError(
                    f"Keycloak refused the token request of client '{client}' in realm '{realm}' ({error}):"
                    " bad client id or secret, or the client is not confidential with service accounts enabled"
                )
            raise KeycloakConfigError(f"Keycloak refused the token request of client '{client}' ({error})")
        if response.status_code == 404:
            raise KeycloakConfigError(f"realm '{realm}' not found at {self._base} (token endpoint: HTTP 404)")
        if response.status_code != 200:
            raise KeycloakConfigError(
                f"token endpoint answered HTTP {response.status_code} for client '{client}'"
            )
        body = self._json(response, "token")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise KeycloakProtocolError("token response has no access_token")
        logs.register_secret(token, ephemeral=True)
        lifetime = body.get("expires_in")
        lifetime_s = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else None
        lifetime_s = lifetime_s or _DEFAULT_TOKEN_LIFETIME_S
        self._token = token
        self._token_refresh_at = requested_at + lifetime_s - min(_TOKEN_REFRESH_MARGIN_S, lifetime_s / 10)
        metrics.KEYCLOAK_TOKEN_REFRESHES.inc()
        log.debug("keycloak token fetched", client_id=client, expires_in_s=lifetime_s)
        return token


def created_filter(created_after: int, created_before: int) -> dict[str, str]:
    """The query parameters of a creation-time window. `search=*` matches every user (a LIKE '%' on the
    username) and sends Keycloak down its search branch, which leaves service accounts out of the list and
    the count alike; the filter branch (no `search`) would include them, and a listed representation does
    not say which users are service accounts."""
    return {"search": "*", "createdAfter": str(created_after), "createdBefore": str(created_before)}


def _tls_verification(settings: Settings) -> ssl.SSLContext | bool:
    """httpx's `verify`: the CA bundle of KEYCLOAK_CA_FILE, the system CAs, or off (KEYCLOAK_VERIFY_TLS)."""
    if not settings.keycloak_verify_tls:
        return False
    if settings.keycloak_ca_file is not None:
        return load_ca_bundle(settings.keycloak_ca_file)
    return True


def _certificate_failure(error: BaseException) -> str | None:
    """Why the server's certificate was not trusted (OpenSSL's short reason), or None when the connection failed
    for another reason (an outage)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        seen = seen.__cause__ or seen.__context__
    return None


def _organizations_off(response: httpx.Response) -> bool:
    """Keycloak's answer to an organization read in a realm whose organizations are off (26.7: HTTP 404 with
    `{"errorMessage": "Organizations not enabled for this realm."}`)."""
    try:
        body = response.json()
    except ValueError:
        return False
    message = body.get("errorMessage") if isinstance(body, dict) else None
    return isinstance(message, str) and "not enabled" in message.lower()


def _answer(method: str, response: httpx.Response) -> _Answer:
    """The answer of one attempt, or `_Transient` when it is worth another."""
    status = response.status_code
    if status == 429:
        raise _Transient("HTTP 429", _retry_after_s(response.headers.get("Retry-After")), "rate_limited")
    if status >= 500 or (method == "GET" and _answer_not_written(response)):
        raise _Transient(f"HTTP {status}")
    if method != "GET" or status != 200:
        return _Answer(response)
    try:
        return _Answer(response, response.json())
    except ValueError:  # cut short: Keycloak failed while it streamed (keycloak#34857)
        raise _Transient("HTTP 200 with a broken JSON body") from None


def _answer_not_written(response: httpx.Response) -> bool:
    """Keycloak's HTTP 400 "Cannot parse the JSON" to a GET: a GET sends no JSON, so this is Keycloak failing to
    write its own answer (a database connection lost while the answer streams, as after a PostgreSQL restart:
    each pooled connection fails once; Keycloak maps every JSON-processing error to 400 since its PR #19492).
    A server error, retried like one."""
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error_description") == "Cannot parse the JSON"


def _outcome(status: int) -> str:
    if status < 300:
        return "ok"
    return {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, "client_error")


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    # Keycloak's own error codes are short identifiers; anything else is not echoed.
    return error if isinstance(error, str) and error.isidentifier() else f"HTTP {response.status_code}"
