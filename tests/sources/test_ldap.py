"""A real LDAP directory federated into the stack's realm (OpenLDAP, READ_ONLY, import on): what reaches the
store after Keycloak's changed-users sync, which emits no event at all.

- With database changes on, a user added and changed in slapd is mirrored within 5 s of the sync's end,
  through the committed rows alone (`synced_by: cdc`).
- A user removed in slapd is not removed by either sync: Keycloak drops its copy only when something reads
  that user (a GetUser, or a listing that would include it). So the removal reaches the store through the
  full reconcile, whose listing makes Keycloak drop the copy (and whose confirmation reads it). With
  database changes on, the sync's own end (its `lastSync_*` mark in `component_config`) requests that full
  reconcile: the removal is in the store within 5 s of the sync's end.
- With database changes off, the fallback the README states holds: the full reconcile mirrors the sync.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reconciler.base.config import Settings
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.fullsync.reconcile import FullReconcile, RunSummary
from reconciler.service import Service
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually, value
from tests.support.service import running_service, until_stored

pytestmark = pytest.mark.stack

SYNC_DEADLINE_S = 5.0
NO_SUCH_OBJECT = 32  # ldapdelete's exit status for an entry that is not there


@pytest.fixture(scope="module")
def ldap_env(stack_env: dict[str, str]) -> dict[str, str]:
    if "KEYCLOAK_LDAP_COMPONENT_ID" not in stack_env:
        pytest.fail("the stack runs without OpenLDAP (STACK_LDAP=0): start it with STACK_LDAP=1")
    return stack_env


@pytest.fixture(scope="module")
def ldap_settings(settings: Settings, ldap_env: dict[str, str]) -> Settings:
    """The stack's own realm (the one that federates the directory), the module's private store."""
    return override(
        settings,
        keycloak_realm=ldap_env["KEYCLOAK_REALM"],
        keycloak_realm_id=ldap_env["KEYCLOAK_REALM"],  # the stack's realm is created with id = name
        kafka_group_id=f"test-ldap-{uuid.uuid4().hex[:8]}",
        consumer_start_offset="latest",
        cdc_enabled=True,
        cdc_topic_prefix=ldap_env["CDC_TOPIC_PREFIX"],
        reconcile_enabled=False,
        sweep_enabled=False,
        http_enabled=False,
    )


@pytest.fixture(scope="module")
async def realm_admin(ldap_env: dict[str, str]) -> AsyncIterator[KeycloakTestAdmin]:
    admin = KeycloakTestAdmin.from_env(ldap_env, ldap_env["KEYCLOAK_REALM"], timeout_s=60)
    yield admin
    await admin.aclose()


class Directory:
    """The stack's slapd, changed the way its administrators do: ldapadd, ldapmodify, ldapdelete."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def _ldap(self, tool: str, ldif: str) -> None:
        command = [tool, "-x", "-H", self._env["LDAP_URL"], "-D", self._env["LDAP_BIND_DN"]]
        command += ["-y", self._env["LDAP_BIND_PASSWORD_FILE"]]
        subprocess.run(command, input=ldif, text=True, check=True, capture_output=True, timeout=30)

    def dn(self, uid: str) -> str:
        return f"uid={uid},{self._env['LDAP_USERS_DN']}"

    def add(self, uid: str, given: str, surname: str, mail: str) -> None:
        self._ldap(
            "ldapadd",
            f"dn: {self.dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {given} {surname}\n"
            f"givenName: {given}\nsn: {surname}\nmail: {mail}\n",
        )

    def modify(self, uid: str, **values: str) -> None:
        changes = "".join(f"replace: {name}\n{name}: {value}\n-\n" for name, value in values.items())
        self._ldap("ldapmodify", f"dn: {self.dn(uid)}\nchangetype: modify\n{changes}")

    def delete(self, uid: str, *, missing_ok: bool = False) -> None:
        command = ["ldapdelete", "-x", "-H", self._env["LDAP_URL"], "-D", self._env["LDAP_BIND_DN"]]
        command += ["-y", self._env["LDAP_BIND_PASSWORD_FILE"], self.dn(uid)]
        done = subprocess.run(command, check=False, capture_output=True, timeout=30)
        if done.returncode == NO_SUCH_OBJECT and missing_ok:
            return
        done.check_returncode()


async def changed_users_sync(admin: KeycloakTestAdmin, component: str) -> dict[str, Any]:
    """What the periodic changed-users sync does, triggered now through the admin API; its result."""
    path = f"/user-storage/{component}/sync"
    result = await admin.request("POST", path, params={"action": "triggerChangedUsersSync"})
    return result.json()  # type: ignore[no-any-return]


async def keycloak_id(admin: KeycloakTestAdmin, username: str) -> str:
    found = (await admin.request("GET", "/users", params={"username": username, "exact": "true"})).json()
    assert len(found) == 1, found
    return str(found[0]["id"])


@pytest.fixture
async def cdc_service(ldap_settings: Settings) -> AsyncIterator[Service]:
    async with running_service(ldap_settings) as service:
        yield service


async def test_a_directory_change_reaches_the_store_through_the_database_within_5_s(
    cdc_service: Service, ldap_env: dict[str, str], realm_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    directory = Directory(ldap_env)
    component = ldap_env["KEYCLOAK_LDAP_COMPONENT_ID"]
    uid = f"ldap-{uuid.uuid4().hex[:8]}"
    directory.add(uid, "Grace", "Hopper", f"{uid}@example.org")
    result = await changed_users_sync(realm_admin, component)
    synced = time.monotonic()
    assert result.get("added", 0) + result.get("updated", 0) >= 1, result
    user_id = await keycloak_id(realm_admin, uid)
    doc = await until_stored(
        users_collection, user_id, "added in LDAP", timeout_s=SYNC_DEADLINE_S, email=f"{uid}@example.org"
    )
    assert doc["synced_by"] == "cdc" and doc["first_name"] == "Grace", doc
    assert time.monotonic() - synced <= SYNC_DEADLINE_S

    # A periodic sync of the stack may have made the change already: either way within 5 s of a sync's end.
    directory.modify(uid, mail=f"{uid}.new@example.org", givenName="Amazing")
    await changed_users_sync(realm_admin, component)
    doc = await until_stored(
        users_collection, user_id, "changed in LDAP", timeout_s=SYNC_DEADLINE_S,
        email=f"{uid}.new@example.org", first_name="Amazing",
    )  # fmt: skip
    assert doc["synced_by"] == "cdc", doc

    directory.delete(uid)  # its removal: the next test


async def test_a_directory_removal_reaches_the_store_within_5_s_of_the_sync_through_its_end_mark(
    ldap_settings: Settings, ldap_env: dict[str, str], realm_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    """The periodic reconcile is on but not due (an hour); the sync's end mark asks for a run at once."""
    settings = override(
        ldap_settings, reconcile_enabled=True, reconcile_interval_s=3600, cdc_sync_reconcile_spacing_s=0
    )
    directory = Directory(ldap_env)
    component = ldap_env["KEYCLOAK_LDAP_COMPONENT_ID"]
    uid = f"ldap-{uuid.uuid4().hex[:8]}"
    directory.add(uid, "Gone", "Soon", f"{uid}@example.org")
    try:
        async with running_service(settings) as service:
            scheduler = service.scheduler
            assert scheduler is not None
            await changed_users_sync(realm_admin, component)
            user_id = await keycloak_id(realm_admin, uid)
            await until_stored(users_collection, user_id, "added in LDAP", timeout_s=SYNC_DEADLINE_S)
            start_run = await eventually(
                lambda: value(scheduler.last_summary), timeout_s=120, what="the run at start ended"
            )
            directory.delete(uid)
            await changed_users_sync(realm_admin, component)
            synced = time.monotonic()
            gone = await eventually(
                lambda: users_collection.find_one({"external_id": user_id}),
                until=lambda doc: doc is not None and not doc["is_active"],
                timeout_s=SYNC_DEADLINE_S,
                what="the user removed in the directory deactivated",
            )
            assert time.monotonic() - synced <= SYNC_DEADLINE_S
            assert gone["deactivation_reason"] == "deleted_in_keycloak", gone
            assert scheduler.last_summary is not start_run, "no full reconcile ran after the sync"
    finally:
        directory.delete(uid, missing_ok=True)


async def test_a_directory_removal_and_the_fallback_without_cdc_are_the_full_reconcile(
    ldap_settings: Settings,
    ldap_env: dict[str, str],
    realm_admin: KeycloakTestAdmin,
    users_collection: Any,
    store: UserStore,
) -> None:
    """Without database changes, a synced directory user reaches the store by the full reconcile (no event
    is emitted for a sync); a user removed in the directory is deactivated by it as deleted in Keycloak."""
    directory = Directory(ldap_env)
    component = ldap_env["KEYCLOAK_LDAP_COMPONENT_ID"]
    no_cdc = override(ldap_settings, cdc_enabled=False)
    kept, removed = (f"ldap-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for uid in (kept, removed):
        directory.add(uid, "Fall", "Back", f"{uid}@example.org")
    await changed_users_sync(realm_admin, component)
    ids = {uid: await keycloak_id(realm_admin, uid) for uid in (kept, removed)}

    first = await full_reconcile(no_cdc, store)
    assert first.ok, first.error
    for uid in (kept, removed):
        doc = await users_collection.find_one({"external_id": ids[uid]})
        assert doc is not None and doc["is_active"] and doc["synced_by"] == "reconcile", doc

    directory.delete(removed)
    await changed_users_sync(realm_admin, component)
    second = await full_reconcile(no_cdc, store)
    assert second.ok, second.error
    gone = await eventually(
        lambda: users_collection.find_one({"external_id": ids[removed]}),
        until=lambda doc: doc is not None and not doc["is_active"],
        timeout_s=SYNC_DEADLINE_S,
        what="the removed directory user deactivated",
    )
    assert gone["deactivation_reason"] == "deleted_in_keycloak", gone
    still = await users_collection.find_one({"external_id": ids[kept]})
    assert still is not None and still["is_active"], still
    directory.delete(kept)


async def full_reconcile(settings: Settings, store: UserStore) -> RunSummary:
    async with KeycloakAdminClient(settings) as keycloak:
        return await FullReconcile(settings, store, keycloak).run()
