"""`reconciler replay` rebuilds a wiped store from the topics; `reconciler verify` reports drift, writes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from reconciler.base.config import Settings
from tests.conftest import override
from tests.support.kafka import watch_topic
from tests.support.kafka_offsets import committed_offsets
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.process import run_reconciler
from tests.support.service import running_service, until_stored

pytestmark = pytest.mark.stack


def cli_json(settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_reconciler(settings, *args, "--json")
    assert result.stdout.strip(), f"no JSON on stdout; stderr: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result.returncode, json.loads(result.stdout)


async def test_replay_rebuilds_a_wiped_store_and_verify_agrees(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    live = override(settings, kafka_group_id=f"live-{uuid.uuid4().hex[:8]}", reconcile_enabled=False,
                     http_enabled=False)  # fmt: skip
    async with watch_topic(settings.kafka_bootstrap_servers, settings.kafka_admin_events_topic) as topic:
        user_ids = [await kc_admin.create_user(first_name="Replay", last_name=str(i)) for i in range(8)]
        for user_id in user_ids[:4]:
            await kc_admin.update_user(user_id, lastName="changed")
        await kc_admin.set_enabled(user_ids[4], False)
        await kc_admin.delete_user(user_ids[5])
        await topic.wait_for(
            lambda m: m.get("resourcePath") == f"users/{user_ids[5]}" and m["operationType"] == "DELETE"
        )
    async with running_service(live):  # the live group applies and commits
        await until_stored(users_collection, user_ids[3], "live group applied", last_name="changed")
        await until_stored(users_collection, user_ids[4], "live group applied the disable", is_active=False)
    offsets_before = await committed_offsets(live.kafka_bootstrap_servers, live.kafka_group_id)
    assert offsets_before

    await users_collection.delete_many({})
    code, summary = cli_json(settings, "replay")
    assert code == 0, summary
    assert summary["distinct_users"] == len(user_ids), summary
    assert summary["hints"] > summary["distinct_users"]  # several events per user
    # The full reconcile reads every named user at a page's cost: none is looked up one by one.
    assert summary["lookups"] == 0, summary
    assert summary["reconcile"]["outcome"] == "success"
    assert summary["reconcile"]["created"] == len(user_ids) - 1  # all but the deleted one

    # Keycloak's view, user by user.
    for user_id in user_ids[:4]:
        doc = await users_collection.find_one({"external_id": user_id})
        assert doc is not None and doc["last_name"] == "changed" and doc["synced_by"] == "reconcile"
    disabled = await users_collection.find_one({"external_id": user_ids[4]})
    assert disabled is not None and disabled["is_active"] is False
    assert await users_collection.find_one({"external_id": user_ids[5]}) is None  # deleted: never recreated

    code, report = cli_json(settings, "verify")
    assert (code, report["in_sync"]) == (0, True), report
    assert (
        await committed_offsets(live.kafka_bootstrap_servers, live.kafka_group_id) == offsets_before
    )  # replay used no group: live offsets untouched

    await users_collection.delete_many({})
    code, again = cli_json(settings, "replay", "--no-reconcile")  # without the reconcile: one GET per user
    assert code == 0 and again["lookups"] == len(user_ids) and again["created"] == len(user_ids) - 1
    doc = await users_collection.find_one({"external_id": user_ids[0]})
    assert doc is not None and doc["last_name"] == "changed" and doc["synced_by"] == "replay"
    code, twice = cli_json(settings, "replay", "--no-reconcile")  # safe to run twice
    assert code == 0 and twice["created"] == 0 and twice["lookups"] == len(user_ids)


async def test_verify_reports_each_kind_of_drift_and_writes_nothing(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    kept, changed, missing, gone = [await kc_admin.create_user() for _ in range(4)]
    code, summary = cli_json(settings, "reconcile", "--once")
    assert code == 0, summary
    await users_collection.update_one({"external_id": changed}, {"$set": {"email": "tampered@example.test"}})
    await users_collection.delete_one({"external_id": missing})
    await kc_admin.delete_user(gone)
    before = sorted([d async for d in users_collection.find({}, {"_id": 0})], key=lambda d: d["external_id"])

    code, report = cli_json(settings, "verify")

    assert code == 7, report
    assert report["in_sync"] is False
    assert (report["missing"], report["different"], report["should_be_inactive"]) == (1, 1, 1)
    assert [u["external_id"] for u in report["users"]["missing"]] == [missing]
    assert [u["external_id"] for u in report["users"]["different"]] == [changed]
    assert [u["external_id"] for u in report["users"]["should_be_inactive"]] == [gone]
    after = sorted([d async for d in users_collection.find({}, {"_id": 0})], key=lambda d: d["external_id"])
    assert after == before
    assert kept not in {u["external_id"] for items in report["users"].values() for u in items}
