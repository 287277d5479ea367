"""Two `reconciler run` replicas as a rolling restart sees them: the event-store sweep's holder stopped with
SIGTERM, the other replica's sweep takes over within 5 s (not after the lease's minute-long expiry, nor at
its own next try an interval later)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from reconciler.base.config import Settings
from reconciler.sources.sweep import LEASE_NAME, STATE_NAME
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.process import start_reconciler, stop

pytestmark = pytest.mark.stack

TAKEOVER_S = 5.0
INTERVAL_S = 10.0  # longer than the takeover: a waiting replica's own next try would come too late
LEASE_TTL_S = 60.0  # the default: the lease left behind would block the other replica this long


def _pid_of(holder: str) -> int:
    """Holders are named hostname:pid:random."""
    return int(holder.split(":")[-2])


def _applied_by(log_file: Path, external_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of writes of this Keycloak user in one replica's log."""
    lines = []
    for line in log_file.read_text(errors="replace").splitlines():
        if external_id not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("external_id") == external_id:
            lines.append(entry)
    return lines


async def test_the_sweep_holder_stopped_with_sigterm_the_other_replica_sweeps_within_5s(
    settings: Settings, kc_admin: KeycloakTestAdmin, mongo_client: Any, tmp_path: Path
) -> None:
    config = override(
        settings,
        sweep_enabled=True,
        sweep_interval_s=INTERVAL_S,
        sweep_overlap_s=2.0,
        sweep_lease_ttl_s=LEASE_TTL_S,
        consumer_enabled=False,  # only the sweep can bring a change into the store
        reconcile_enabled=False,
        http_enabled=False,
        event_recheck_delay_s=0,
        mongodb_database=f"{settings.mongodb_database}_{uuid.uuid4().hex[:6]}",
    )
    database = mongo_client[config.mongodb_database]
    leases, state, users = database["leases"], database["sweep_state"], database["users"]
    logs = {name: tmp_path / f"replica-{name}.log" for name in ("a", "b")}
    replicas: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
    for log_file in logs.values():
        process = start_reconciler(config, "run", log_file=log_file)
        replicas[process.pid] = (process, log_file)
    try:
        lease = await eventually(
            lambda: leases.find_one({"_id": LEASE_NAME}), timeout_s=60, what="a replica holds the sweep lease"
        )
        holder_pid = _pid_of(lease["holder"])
        (other_pid,) = [pid for pid in replicas if pid != holder_pid]
        holder, holder_log = replicas[holder_pid]
        other, other_log = replicas[other_pid]
        # Right after one of the holder's sweeps its next one is an interval away: the change made now is
        # read by no sweep of the holder before it stops.
        first = await eventually(lambda: state.find_one({"_id": STATE_NAME}), timeout_s=60, what="a sweep")
        await eventually(
            lambda: state.find_one({"_id": STATE_NAME}),
            until=lambda doc: doc["saved_at"] > first["saved_at"],
            timeout_s=INTERVAL_S * 3,
            interval_s=0.1,
            what="the holder's next sweep",
        )
        user_id = await kc_admin.create_user(first_name="Takeover")

        holder.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        taken = await eventually(
            lambda: leases.find_one({"_id": LEASE_NAME}),
            until=lambda doc: doc is not None and _pid_of(doc["holder"]) == other_pid,
            timeout_s=TAKEOVER_S,
            interval_s=0.05,
            what="the other replica holds the sweep lease",
        )
        took_lease_s = time.monotonic() - stopped
        doc = await eventually(
            lambda: users.find_one({"external_id": user_id}),
            until=lambda doc: doc is not None,
            timeout_s=max(0.1, TAKEOVER_S - took_lease_s),
            interval_s=0.05,
            what="the change swept by the other replica",
        )
        swept_s = time.monotonic() - stopped
        assert doc["synced_by"] == "sweep" and doc["first_name"] == "Takeover"
        # No second signal: one that lands after the service stopped meets Python's default handler.
        assert holder.wait(timeout=60) == 0, holder_log.read_text()[-3000:]
        assert taken["holder"] != lease["holder"]
        written = await eventually(
            lambda: _async(_applied_by(other_log, user_id)), timeout_s=5, what="the write in its log"
        )
        assert [entry["synced_by"] for entry in written] == ["sweep"]
        print(f"sweep lease taken {took_lease_s:.2f} s and the change stored {swept_s:.2f} s after SIGTERM")
        assert other.poll() is None, other_log.read_text()[-3000:]
    finally:
        codes = [stop(process, signal.SIGTERM) for process, _ in replicas.values()]
    assert codes == [0, 0], [log_file.read_text()[-2000:] for log_file in logs.values()]
    assert await leases.find_one({"_id": LEASE_NAME}) is None  # the last one released it too
    if not os.environ.get("KEEP_TEST_DATABASES"):
        await mongo_client.drop_database(config.mongodb_database)


async def _async(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return value
