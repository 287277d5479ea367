"""The change source's watch over the stream (`sources/cdc.py`): gaps only from heartbeats read in a row."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from reconciler.base.config import Settings
from reconciler.sources.cdc import ChangeSource
from tests.conftest import override
from tests.support.polling import eventually, value
from tests.support.settings import make_settings

ENV = {"KEYCLOAK_URL": "http://127.0.0.1:1", "KEYCLOAK_REALM": "app", "KEYCLOAK_CLIENT_ID": "c",
       "KEYCLOAK_CLIENT_SECRET": "s", "MONGODB_URI": "mongodb://127.0.0.1:1", "KAFKA_BOOTSTRAP_SERVERS": "x:1"}  # fmt: skip
HEARTBEATS = "__debezium-heartbeat.keycloak.cdc"
ROWS = "keycloak.cdc.public.user_entity"
T0 = 1_800_000_000_000


def source(requests: list[str]) -> ChangeSource:
    settings: Settings = override(make_settings(ENV), cdc_enabled=True, cdc_gap_s=60.0)
    return ChangeSource(settings, requests.append)


def beat(changes: ChangeSource, offset: int, ts_ms: int, partition: int = 0) -> None:
    value = json.dumps({"ts_ms": ts_ms}).encode()
    changes.parse(HEARTBEATS, b'{"serverName":"keycloak.cdc"}', value, partition=partition, offset=offset)


def row(changes: ChangeSource, offset: int, ts_ms: int) -> None:
    value = {
        "op": "u",
        "after": {"id": str(uuid.uuid4())},
        "source": {"table": "user_entity", "ts_ms": ts_ms},
    }
    changes.parse(ROWS, None, json.dumps(value).encode(), partition=1, offset=offset)


def test_consecutive_heartbeats_far_apart_request_a_full_reconcile() -> None:
    requests: list[str] = []
    changes = source(requests)
    for n in range(5):
        beat(changes, n, T0 + n * 10_000)
    assert requests == []
    beat(changes, 5, T0 + 40_000 + 61_000)  # the connector emitted nothing for 61 s
    assert requests == ["cdc_gap"]


def test_heartbeats_not_read_in_a_row_and_quiet_tables_are_no_evidence() -> None:
    requests: list[str] = []
    changes = source(requests)
    beat(changes, 10, T0)
    beat(changes, 20, T0 + 600_000)  # offsets 11-19 read by another replica before a rebalance
    row(changes, 0, T0)
    row(changes, 1, T0 + 3_600_000)  # an hour without changes to the table
    beat(changes, 0, T0 + 600_000, partition=3)
    beat(changes, 1, T0 + 610_000, partition=3)
    assert requests == []


def test_the_lag_follows_the_latest_commit_read() -> None:
    changes = source([])
    assert changes.lag_s() < 5  # counted from the source's start before the first record
    beat(changes, 0, T0)  # a commit far in the future of the test's clock, say: the lag cannot go below 0
    assert changes.lag_s() == 0.0


def sync_mark(changes: ChangeSource, offset: int) -> None:
    value = {
        "op": "c",
        "after": {"id": str(uuid.uuid4()), "component_id": "ldap-1", "name": "lastSync_CHANGED"},
        "source": {"table": "component_config", "ts_ms": T0 + offset},
    }
    changes.parse(
        "keycloak.cdc.public.component_config", None, json.dumps(value).encode(), partition=0, offset=offset
    )


async def test_a_federation_sync_requests_a_full_reconcile_at_most_once_per_spacing() -> None:
    requests: list[str] = []
    settings: Settings = override(make_settings(ENV), cdc_enabled=True, cdc_sync_reconcile_spacing_s=0.5)
    changes = ChangeSource(settings, requests.append)
    try:
        sync_mark(changes, 0)
        assert requests == ["federation_sync"]  # the first at once
        started = time.monotonic()
        sync_mark(changes, 1)
        sync_mark(changes, 2)  # within the spacing: one request, when the spacing has passed
        assert requests == ["federation_sync"]
        await eventually(lambda: value(len(requests)), until=lambda n: n == 2, timeout_s=10, what="deferred")
        assert time.monotonic() - started >= 0.4
        await asyncio.sleep(0.6)
        assert requests == ["federation_sync", "federation_sync"]
    finally:
        changes.close()


async def test_a_request_waiting_for_its_spacing_is_dropped_on_close() -> None:
    requests: list[str] = []
    settings: Settings = override(make_settings(ENV), cdc_enabled=True, cdc_sync_reconcile_spacing_s=0.2)
    changes = ChangeSource(settings, requests.append)
    sync_mark(changes, 0)
    sync_mark(changes, 1)
    changes.close()
    await asyncio.sleep(0.4)
    assert requests == ["federation_sync"]
