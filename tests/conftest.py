"""Shared fixtures: the real stack's endpoints, settings with a private database, and a Keycloak admin."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from reconciler.base.config import Settings
from reconciler.clients.store import UserStore
from tests.support import kafka_clients
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.settings import make_settings as make_settings
from tests.support.settings import override as override
from tests.support.stack import HOW_TO_START, REALM_FILE, discover_stack_env, docker_available


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    """Endpoints of the real stack. Never skips: without a stack the integration tests fail and say why."""
    env = discover_stack_env()
    if env is not None:
        kafka_clients.register(env)
        yield env
        return
    if docker_available():
        from tests.support.containers import start_container_stack

        with start_container_stack() as container_env:
            yield container_env
        return
    pytest.fail(HOW_TO_START, pytrace=False)


def _database_name(request: pytest.FixtureRequest) -> str:
    module = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].lower())
    return f"t_{module}_{uuid.uuid4().hex[:8]}"[:60]


def _realm_name(request: pytest.FixtureRequest) -> str:
    """At most 36 characters: Keycloak makes the name the realm's id, a VARCHAR(36) on PostgreSQL (H2 let
    longer ones through, so a long module name broke only on PostgreSQL)."""
    name = _database_name(request).replace("_", "-")
    return name if len(name) <= 36 else f"{name[:27]}{name[-9:]}"


@pytest.fixture(scope="module")
def database_name(request: pytest.FixtureRequest) -> str:
    """A private database per test module, so modules never see each other's users."""
    return _database_name(request)


@pytest.fixture(scope="module")
async def realm(stack_env: dict[str, str], request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh realm per test module, made from the stack's realm file (same clients, listener, events).

    Modules never see each other's users or events, and a full reconcile lists only the module's users.
    """
    name = _realm_name(request)
    admin = KeycloakTestAdmin.from_env(stack_env, name)
    await admin.create_realm(json.loads(REALM_FILE.read_text()), name)
    yield name
    if not os.environ.get("KEEP_TEST_DATABASES"):
        await admin.delete_realm(name)
    await admin.aclose()


@pytest.fixture(scope="module")
def settings(stack_env: dict[str, str], database_name: str, realm: str) -> Settings:
    return make_settings(stack_env, mongodb_database=database_name, keycloak_realm=realm)


@pytest.fixture(scope="module")
async def kc_admin(stack_env: dict[str, str], realm: str) -> AsyncIterator[KeycloakTestAdmin]:
    """The bootstrap admin acting on the module's realm."""
    admin = KeycloakTestAdmin.from_env(stack_env, realm)
    yield admin
    await admin.aclose()


@pytest.fixture(scope="session")
async def mongo_client(stack_env: dict[str, str]) -> AsyncIterator[AsyncMongoClient[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack_env["MONGODB_URI"], tz_aware=True)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def users_collection(
    mongo_client: AsyncMongoClient[dict[str, Any]], settings: Settings
) -> AsyncIterator[Any]:
    """The module's users collection, dropped with its database afterwards."""
    yield mongo_client[settings.mongodb_database][settings.mongodb_users_collection]
    if not os.environ.get("KEEP_TEST_DATABASES"):
        await mongo_client.drop_database(settings.mongodb_database)


@pytest.fixture(scope="module")
async def store(settings: Settings) -> AsyncIterator[UserStore]:
    """The module's store, indexes created (modules with other needs define their own `store`)."""
    async with UserStore.from_settings(settings) as user_store:
        await user_store.ensure_indexes()
        yield user_store
