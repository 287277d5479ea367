"""Organization memberships (ORGANIZATIONS_ENABLED) on the real stack, in a realm of 50 organizations.

The full reconcile reads each organization's member list exactly once per run and gives every listed user
its memberships (`[]` for users in none); a member added and removed, an organization renamed and one
deleted reach each affected document through the Kafka listener and, with the listener removed from the
realm, through the event-store sweep; with the setting off no document gets the field and Keycloak gets no
organization request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient

from reconciler.apply.applier import Applier
from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.events import OrganizationHint
from reconciler.domain.outcomes import Outcome
from reconciler.domain.plan import Action, ApplyPolicy
from reconciler.fullsync.reconcile import FullReconcile
from reconciler.sources.organizations import OrganizationHints
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.scripted_keycloak import FakeKeycloak
from tests.support.service import running_service, running_sweep_service, until_stored

pytestmark = pytest.mark.stack

ORGANIZATIONS = 50
PAGE_SIZE = 20  # 50 organizations: the organization listing takes three pages
SWEEP_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    alias: str

    def entry(self, name: str | None = None) -> dict[str, Any]:
        """The document's form of an (unmanaged) membership of this organization."""
        return {"id": self.id, "alias": self.alias, "name": name or self.name, "membership_type": "UNMANAGED"}


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real HTTP transport, counting every request by method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: Counter[tuple[str, str]] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests[(request.method, request.url.path)] += 1
        return await super().handle_async_request(request)

    def organization_requests(self) -> list[str]:
        return [path for _, path in self.requests if "/organizations" in path]


async def make_organization(kc_admin: KeycloakTestAdmin, label: str) -> Org:
    suffix = uuid.uuid4().hex[:6]  # names and aliases are unique in a realm
    name, alias = f"Org {label} {suffix}", f"org-{label}-{suffix}"
    return Org(await kc_admin.create_organization(name, alias), name, alias)


@pytest.fixture(scope="module")
async def organizations(kc_admin: KeycloakTestAdmin) -> list[Org]:
    """The module realm with organizations on, 50 of them, and a service account that may read them."""
    await kc_admin.enable_organizations()
    await kc_admin.grant_service_account_role("user-reconciler", "view-organizations")
    limit = asyncio.Semaphore(8)

    async def one(n: int) -> Org:
        async with limit:
            return await make_organization(kc_admin, f"{n:02d}")

    return list(await asyncio.gather(*(one(n) for n in range(ORGANIZATIONS))))


@pytest.fixture
async def private_store(
    settings: Settings, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> AsyncIterator[UserStore]:
    """A database of this test's own (the module's realm, another store)."""
    name = f"{settings.mongodb_database[:50]}_{uuid.uuid4().hex[:6]}"
    async with UserStore.from_settings(override(settings, mongodb_database=name)) as store:
        await store.ensure_indexes()
        yield store
    await mongo_client.drop_database(name)


def orgs_settings(settings: Settings, store: UserStore, *, enabled: bool = True, **changes: Any) -> Settings:
    return override(
        settings,
        mongodb_database=store.users.database.name,
        organizations_enabled=enabled,
        keycloak_page_size=PAGE_SIZE,
        **changes,
    )


async def test_a_full_reconcile_reads_each_member_list_once_and_writes_every_membership(
    settings: Settings, kc_admin: KeycloakTestAdmin, organizations: list[Org], private_store: UserStore
) -> None:
    members: dict[str, list[Org]] = {}
    for n in range(12):
        user_id = await kc_admin.create_user()
        # Users 0-9 in two or three organizations each (several users per organization); 10 and 11 in none.
        orgs = (
            []
            if n >= 10
            else sorted(
                {organizations[n], organizations[(n * 7) % 50], organizations[n + 20]}, key=lambda o: o.id
            )
        )
        for org in orgs:
            await kc_admin.add_organization_member(org.id, user_id)
        members[user_id] = orgs
    config = orgs_settings(settings, private_store)
    transport = CountingTransport()
    async with KeycloakAdminClient(config, transport=transport) as keycloak:
        summary = await FullReconcile(config, private_store, keycloak).run()
        assert summary.outcome is Outcome.SUCCESS, summary
        realm_path = f"/admin/realms/{config.keycloak_realm}"
        for org in organizations:
            assert transport.requests[("GET", f"{realm_path}/organizations/{org.id}/members")] == 1, org
        assert transport.requests[("GET", f"{realm_path}/organizations")] == 3  # 20 + 20 + 10
        # Nothing per user: 50 member lists and 3 pages of organizations, whatever the number of users.
        assert len(transport.organization_requests()) == ORGANIZATIONS + 1
        for user_id, orgs in members.items():
            doc = await private_store.get_user(user_id)
            assert doc is not None and doc["organizations"] == [org.entry() for org in orgs], user_id

        transport.requests.clear()
        again = await FullReconcile(config, private_store, keycloak).run()
        assert again.applied[Action.UPDATED] == again.applied[Action.CREATED] == 0  # stable
        assert (
            sum(
                transport.requests[("GET", f"{realm_path}/organizations/{o.id}/members")]
                for o in organizations
            )
            == 50
        )


async def test_a_membership_written_by_the_event_path_during_a_run_is_not_undone_by_the_runs_older_view(
    settings: Settings, kc_admin: KeycloakTestAdmin, organizations: list[Org], private_store: UserStore
) -> None:
    """The run reads the member lists before it lists users: a member added (and applied by the event path)
    after its list was read must survive the run's later page (its observation is stamped no later than the
    member lists)."""
    user_id = await kc_admin.create_user()
    org = organizations[45]
    config = orgs_settings(settings, private_store)
    async with KeycloakAdminClient(config) as event_client:
        event_path = Applier(private_store, event_client, config)
        await event_path.observe_and_apply([user_id], ApplyPolicy.event())
        members_path = f"/admin/realms/{config.keycloak_realm}/organizations/{org.id}/members"

        class AddedAfterItsListWasRead(CountingTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                response = await super().handle_async_request(request)
                if request.url.path == members_path:  # answered without the user; now it joins
                    await kc_admin.add_organization_member(org.id, user_id)
                    await event_path.observe_and_apply([user_id], ApplyPolicy.event())
                    doc = await private_store.get_user(user_id)
                    assert doc is not None and doc["organizations"] == [org.entry()]
                return response

        transport = AddedAfterItsListWasRead()
        async with KeycloakAdminClient(config, transport=transport) as keycloak:
            summary = await FullReconcile(config, private_store, keycloak).run()
    assert summary.outcome is Outcome.SUCCESS
    assert transport.requests[("GET", members_path)] == 1
    doc = await private_store.get_user(user_id)
    assert doc is not None and doc["organizations"] == [org.entry()]
    assert summary.applied[Action.STALE] >= 1


async def test_with_the_setting_off_no_document_gets_the_field_and_keycloak_no_organization_request(
    settings: Settings, kc_admin: KeycloakTestAdmin, organizations: list[Org], private_store: UserStore
) -> None:
    user_id = await kc_admin.create_user()
    await kc_admin.add_organization_member(organizations[3].id, user_id)
    config = orgs_settings(settings, private_store, enabled=False)
    transport = CountingTransport()
    async with KeycloakAdminClient(config, transport=transport) as keycloak:
        summary = await FullReconcile(config, private_store, keycloak).run()
        assert summary.outcome is Outcome.SUCCESS and summary.listed > 0
        applier = Applier(private_store, keycloak, config)
        await applier.observe_and_apply([user_id], ApplyPolicy.event())
    assert transport.organization_requests() == []
    assert transport.requests  # the client did talk to Keycloak
    async for doc in private_store.users.find({}):
        assert "organizations" not in doc


async def test_the_event_path_reads_a_users_memberships_per_user(
    settings: Settings, kc_admin: KeycloakTestAdmin, organizations: list[Org], private_store: UserStore
) -> None:
    user_id = await kc_admin.create_user()
    orgs = sorted(organizations[40:43], key=lambda o: o.id)
    for org in orgs:
        await kc_admin.add_organization_member(org.id, user_id)
    config = orgs_settings(settings, private_store)
    transport = CountingTransport()
    async with KeycloakAdminClient(config, transport=transport) as keycloak:
        await Applier(private_store, keycloak, config).observe_and_apply([user_id], ApplyPolicy.event())
    doc = await private_store.get_user(user_id)
    assert doc is not None and doc["organizations"] == [org.entry() for org in orgs]
    # One read of the user's organizations, one of its membership in each (the type).
    assert len(transport.organization_requests()) == 1 + len(orgs)


async def scenario(kc_admin: KeycloakTestAdmin, users: Any, timeout_s: float) -> None:
    """A member added and removed, an organization renamed and one deleted: each affected document agrees
    within `timeout_s`."""
    kept, doomed = await make_organization(kc_admin, "kept"), await make_organization(kc_admin, "doomed")
    alice, bob = await kc_admin.create_user(), await kc_admin.create_user()
    for user_id in (alice, bob):
        await until_stored(users, user_id, "created", timeout_s=timeout_s, organizations=[])

    await kc_admin.add_organization_member(kept.id, alice)
    await until_stored(users, alice, "member added", timeout_s=timeout_s, organizations=[kept.entry()])
    await kc_admin.add_organization_member(kept.id, bob)
    await kc_admin.add_organization_member(doomed.id, bob)
    both = sorted([kept.entry(), doomed.entry()], key=lambda e: e["id"])
    await until_stored(users, bob, "member added twice", timeout_s=timeout_s, organizations=both)

    new_name = f"{kept.name} renamed"  # organization names are unique in a realm
    await kc_admin.rename_organization(kept.id, new_name)
    renamed = kept.entry(new_name)
    await until_stored(users, alice, "renamed (alice)", timeout_s=timeout_s, organizations=[renamed])
    both = sorted([renamed, doomed.entry()], key=lambda e: e["id"])
    await until_stored(users, bob, "renamed (bob)", timeout_s=timeout_s, organizations=both)

    await kc_admin.remove_organization_member(kept.id, alice)
    await until_stored(users, alice, "member removed", timeout_s=timeout_s, organizations=[])

    await kc_admin.delete_organization(doomed.id)
    doc = await until_stored(users, bob, "organization deleted", timeout_s=timeout_s, organizations=[renamed])
    assert doc["is_active"] is True


async def test_the_event_path_keeps_memberships_true(
    settings: Settings,
    realm: str,
    kc_admin: KeycloakTestAdmin,
    organizations: list[Org],
    users_collection: Any,
) -> None:
    config = override(
        settings,
        organizations_enabled=True,
        kafka_group_id=f"orgs-{realm}",
        reconcile_enabled=False,
        http_enabled=False,
        event_recheck_delay_s=0.5,
    )
    async with running_service(config):
        await scenario(kc_admin, users_collection, timeout_s=10.0)


@pytest.fixture
async def quiet_realm(kc_admin: KeycloakTestAdmin) -> AsyncIterator[None]:
    """Nothing of this realm reaches Kafka while the test runs: only the event store can tell."""
    config = (await kc_admin.request("GET", "/events/config")).json()
    listeners = [x for x in config["eventsListeners"] if x != "kafka"]
    await kc_admin.request("PUT", "/events/config", json={**config, "eventsListeners": listeners})
    yield
    await kc_admin.request("PUT", "/events/config", json=config)


async def test_the_sweep_keeps_memberships_true_without_the_listener(
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    organizations: list[Org],
    private_store: UserStore,
    mongo_client: AsyncMongoClient[dict[str, Any]],
    quiet_realm: None,
) -> None:
    config = orgs_settings(
        settings,
        private_store,
        sweep_enabled=True,
        sweep_interval_s=SWEEP_INTERVAL_S,
        sweep_overlap_s=2.0,
        consumer_enabled=False,
        reconcile_enabled=False,
        http_enabled=False,
    )
    users = mongo_client[config.mongodb_database][config.mongodb_users_collection]
    async with running_sweep_service(config) as service:
        assert service.sweeper is not None
        await scenario(kc_admin, users, timeout_s=SWEEP_INTERVAL_S + 10)
    async for doc in users.find({}):
        assert doc["synced_by"] == "sweep", doc["external_id"]


async def test_an_unreadable_member_list_is_given_up_so_the_record_is_committed(
    settings: Settings, private_store: UserStore
) -> None:
    """Edge case a real Keycloak does not produce (a member without a known membershipType): the record of
    the event is done (its partition's commits go on) and the hint counted as abandoned."""

    async def admin(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"id": str(uuid.uuid4()), "membershipType": "OWNER"}])

    config = orgs_settings(settings, private_store)
    hint = OrganizationHint(str(uuid.uuid4()), "members", None, config.keycloak_realm, "CREATE")
    abandoned = REGISTRY.get_sample_value("reconciler_hints_abandoned_total") or 0
    done: list[bool] = []
    async with KeycloakAdminClient(config, transport=httpx.MockTransport(FakeKeycloak(admin))) as keycloak:
        organization_hints = OrganizationHints(config, private_store, keycloak)
        assert await organization_hints.submit(hint, queue=None, done=lambda: done.append(True)) == 0  # type: ignore[arg-type]
    assert done == [True]
    assert REGISTRY.get_sample_value("reconciler_hints_abandoned_total") == abandoned + 1


async def test_the_store_names_the_members_of_an_organization_but_not_users_deleted_in_keycloak(
    settings: Settings, kc_admin: KeycloakTestAdmin, organizations: list[Org], private_store: UserStore
) -> None:
    """A deleted user's document keeps its memberships; a rename or a member added must not read it again
    each time. A disabled member still exists in Keycloak and is named."""
    org = organizations[30]
    active, disabled, deleted = [await kc_admin.create_user() for _ in range(3)]
    for user_id in (active, disabled, deleted):
        await kc_admin.add_organization_member(org.id, user_id)
    config = orgs_settings(settings, private_store)
    async with KeycloakAdminClient(config) as keycloak:
        applier = Applier(private_store, keycloak, config)
        await applier.observe_and_apply([active, disabled, deleted], ApplyPolicy.event())
        assert sorted(await private_store.organization_members(org.id)) == sorted([active, disabled, deleted])
        await kc_admin.set_enabled(disabled, False)
        await kc_admin.delete_user(deleted)
        await applier.observe_and_apply([disabled, deleted], ApplyPolicy.event())
    gone = await private_store.get_user(deleted)
    assert gone is not None and gone["deactivation_reason"] == "deleted_in_keycloak" and gone["organizations"]
    assert sorted(await private_store.organization_members(org.id)) == sorted([active, disabled])
