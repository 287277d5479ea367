"""At LOG_LEVEL=DEBUG the client libraries' own lines are on, but never a personal value: PyMongo's command
log (it quotes the documents sent to the store) stays off. A real `reconcile --once` at DEBUG, its output
searched for the values of a user it mirrored."""

from __future__ import annotations

import secrets

from pymongo import AsyncMongoClient

from reconciler.base.config import Settings
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.process import run_reconciler_async, settings_env
from tests.support.settings import override


async def test_a_reconcile_at_debug_logs_no_personal_value_of_the_users_it_mirrors(
    settings: Settings, kc_admin: KeycloakTestAdmin, mongo_client: AsyncMongoClient[dict[str, object]]
) -> None:
    personal = {
        "username": f"pd-{secrets.token_hex(8)}",
        "email": f"pd-{secrets.token_hex(8)}@example.test",
        "first_name": f"First{secrets.token_hex(6)}",
        "last_name": f"Last{secrets.token_hex(6)}",
    }
    user_id = await kc_admin.create_user(
        personal["username"],
        email=personal["email"],
        first_name=personal["first_name"],
        last_name=personal["last_name"],
    )
    done = await run_reconciler_async(
        settings_env(override(settings, log_level="DEBUG")), "reconcile", "--once", timeout_s=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    users = mongo_client[settings.mongodb_database][settings.mongodb_users_collection]
    stored = await users.find_one({"external_id": user_id})
    assert stored is not None and stored["email"] == personal["email"], "the run did not mirror the user"
    logged = done.stdout + done.stderr
    assert '"logger": "pymongo.' in logged, "PyMongo logged nothing at DEBUG: the check proves nothing"
    assert '"level": "debug"' in logged
    leaked = [field for field, value in personal.items() if value in logged]
    assert not leaked, f"personal fields in the DEBUG output: {leaked}"
