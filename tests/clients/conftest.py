"""The store tests' fixtures: a store of its own per module, on the stack's server, dropped afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from reconciler.base.config import Settings
from reconciler.clients.store import UserStore
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def store_settings(stack_env: dict[str, str], database_name: str) -> Settings:
    return make_settings(stack_env, mongodb_database=database_name)


@pytest.fixture(scope="module")
async def store(
    store_settings: Settings, mongo_client: AsyncMongoClient[dict[str, Any]]
) -> AsyncIterator[UserStore]:
    async with UserStore.from_settings(store_settings) as user_store:
        await user_store.ensure_indexes()
        yield user_store
    if not os.environ.get("KEEP_TEST_DATABASES"):
        await mongo_client.drop_database(store_settings.mongodb_database)
