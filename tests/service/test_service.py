"""`reconciler run` as operators run it: health and metrics, SIGKILL and restart, two members, group sync."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.base.config import Settings
from reconciler.service import Service
from tests.conftest import override
from tests.support.kafka_offsets import committed_offsets, end_offsets
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.process import start_reconciler, stop
from tests.support.service import running_service, stored, until_stored

pytestmark = pytest.mark.stack


def service_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_group_id": f"test-{uuid.uuid4().hex[:8]}",
        "reconcile_enabled": False,
        "http_enabled": False,
        "http_port": 0,
        "event_recheck_delay_s": 0.5,
    }
    values.update(overrides)
    return override(settings, **values)


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url)


async def test_health_readiness_and_metrics_endpoints(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    config = service_settings(settings, http_enabled=True, reconcile_enabled=True, reconcile_interval_s=3600)
    async with running_service(config) as service:
        base = f"http://127.0.0.1:{service.http_port}"
        live = await _get(f"{base}/healthz")
        assert live.status_code == 200, live.text
        assert live.json()["checks"] == {"consumer": "ok", "reconcile": "ok"}
        ready = await eventually(lambda: _get(f"{base}/readyz"), until=lambda r: r.status_code == 200)
        assert ready.json()["checks"] == {"keycloak": "ok", "store": "ok", "kafka": "ok", "consumer": "ok"}

        user_id = await kc_admin.create_user()
        await until_stored(users_collection, user_id, "created", is_active=True)
        metrics = (await _get(f"{base}/metrics")).text
    for name in (
        "reconciler_events_total",
        "reconciler_lookups_total",
        "reconciler_event_apply_latency_seconds_bucket",
        "reconciler_consumer_lag_messages",
        "reconciler_consumer_lag_seconds",
        "reconciler_queue_users",
        "reconciler_reconcile_runs_total",
        "reconciler_reconcile_last_success_timestamp_seconds",
        "reconciler_keycloak_requests_total",
        "reconciler_user_changes_total",
    ):
        assert name in metrics, f"{name} missing from /metrics"
    assert user_id not in metrics  # no per-user labels


async def test_a_consumer_killed_mid_stream_and_restarted_loses_nothing(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any, tmp_path: Path
) -> None:
    # Static membership (as the StatefulSet does with the pod name): the restarted process takes the killed
    # member's place at once instead of waiting for its session to time out.
    config = service_settings(settings, kafka_group_instance_id="reconciler-0")
    log_file = tmp_path / "reconciler.log"
    user_ids = [await kc_admin.create_user(first_name="Crash", last_name="0") for _ in range(15)]
    process = start_reconciler(config, "run", log_file=log_file)
    try:
        for round_number in range(1, 6):
            await asyncio.gather(*(kc_admin.update_user(u, lastName=str(round_number)) for u in user_ids))
            if round_number == 3:
                # Mid-stream: some users applied, others not yet; then kill without any chance to commit.
                await eventually(
                    lambda: users_collection.count_documents({"external_id": {"$in": user_ids}}),
                    until=lambda n: n > 0,
                    timeout_s=30,
                    what="first applies",
                )
                assert stop(process, signal.SIGKILL) == -signal.SIGKILL
                process = start_reconciler(config, "run", log_file=log_file)
        for user_id in user_ids:
            await until_stored(
                users_collection, user_id, "converged after SIGKILL", timeout_s=60, last_name="5"
            )
    finally:
        exit_code = stop(process, signal.SIGTERM)
    assert exit_code == 0, log_file.read_text()[-3000:]
    # SIGTERM drained and committed: the group is at the end of every partition it read. A partition that
    # never held a record (end offset 0; which ones depends on how earlier tests' keys hashed) has nothing to
    # commit, and a group without a commit there starts at 0, its end.
    committed = await committed_offsets(config.kafka_bootstrap_servers, config.kafka_group_id)
    ends = await end_offsets(config.kafka_bootstrap_servers, config.event_topics)
    assert set(committed) <= set(ends)
    assert {tp: committed.get(tp, 0) for tp in ends} == ends


async def test_two_members_split_the_partitions_and_a_rebalance_loses_nothing(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    config = service_settings(settings)
    first_batch = [await kc_admin.create_user(first_name="Member", last_name="A") for _ in range(10)]
    async with running_service(config) as member_a:
        async with running_service(config) as member_b:
            assert member_a.consumer is not None and member_b.consumer is not None
            await eventually(
                lambda: _both_assigned(member_a, member_b), timeout_s=30, what="both members hold partitions"
            )
            second_batch = [await kc_admin.create_user(first_name="Member", last_name="B") for _ in range(10)]
            for user_id in first_batch:
                await kc_admin.update_user(user_id, lastName="A2")
        # member_b left: a rebalance hands its partitions back to member_a mid-stream.
        third_batch = [await kc_admin.create_user(first_name="Member", last_name="C") for _ in range(10)]
        for user_id in first_batch:
            await until_stored(users_collection, user_id, "first batch updated", last_name="A2")
        for user_id in second_batch:
            await until_stored(users_collection, user_id, "second batch", last_name="B")
        for user_id in third_batch:
            await until_stored(users_collection, user_id, "third batch after rebalance", last_name="C")


async def _both_assigned(a: Service, b: Service) -> bool:
    assert a.consumer is not None and b.consumer is not None
    return bool(a.consumer.assignment()) and bool(b.consumer.assignment())


async def test_group_membership_and_realm_roles_are_applied_when_sync_is_on(
    settings: Settings, kc_admin: KeycloakTestAdmin, users_collection: Any
) -> None:
    config = service_settings(settings, sync_groups_and_roles=True)
    group_name, role_name = f"team-{uuid.uuid4().hex[:6]}", f"role-{uuid.uuid4().hex[:6]}"
    group_id = await kc_admin.create_group(group_name)
    role = await kc_admin.create_realm_role(role_name)
    async with running_service(config):
        user_id = await kc_admin.create_user()
        await until_stored(users_collection, user_id, "created", is_active=True)
        await kc_admin.add_to_group(user_id, group_id)
        await eventually(
            lambda: stored(users_collection, user_id),
            until=lambda d: group_name in (d.get("groups") or []),
            what="group membership applied",
        )
        await kc_admin.grant_realm_role(user_id, role)
        await eventually(
            lambda: stored(users_collection, user_id),
            until=lambda d: role_name in (d.get("realm_roles") or []),
            what="realm role applied",
        )
        await kc_admin.remove_from_group(user_id, group_id)
        await eventually(
            lambda: stored(users_collection, user_id),
            until=lambda d: group_name not in (d.get("groups") or []),
            what="group removal applied",
        )
