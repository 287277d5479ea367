"""Scenario 16: `reconciler run` started while the Kafka broker is down (a pod restarted during an outage).

The process must not crash-loop: it starts, is not ready (`/readyz` names Kafka), keeps the store true from
Keycloak's stored events (the sweep) while 100 updates of 30 users are made, and logs the outage calmly (a
handful of lines a minute, where aiokafka alone writes about 70 a second). When the broker returns the
process becomes ready without a restart, its group catches up (lag 0, every committed record applied) and
nothing moved back (the `observed_at` guard).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.reliability.harness import store_versions, wait_converged
from tests.reliability.scenario import ScenarioEnv, expected_versions
from tests.support.health import failing, readiness
from tests.support.polling import eventually
from tests.support.ports import free_port

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 30
UPDATES = 100
SWEEP_INTERVAL_S = 5.0
# What "calm" means: the monitor's first line, one a minute while it lasts, the consumer's restarts (at
# most one per RETRY_USER_BACKOFF_MAX_S) and the recovery line. aiokafka alone writes about 70 a second.
MAX_OUTAGE_LINES_PER_MINUTE = 12


async def test_run_started_while_the_broker_is_down_is_not_ready_and_converges(env: ScenarioEnv) -> None:
    users = await env.import_seed_users(USERS, "nobroker")
    http_port = free_port()
    settings: dict[str, Any] = {
        "sweep_enabled": True,
        "sweep_interval_s": SWEEP_INTERVAL_S,
        "sweep_overlap_s": 2.0,
        "sweep_lease_ttl_s": 20.0,
        "http_enabled": True,
        "http_port": http_port,
        "log_level": "INFO",  # the outage's lines are counted as an operator sees them
    }

    async def broker_down() -> None:
        await env.stack.stop("kafka")

    async with env.consumer(
        "16-run-without-broker", watch_writes=True, before_start=broker_down, **settings
    ) as scenario:
        reconciler, audit = scenario.process, scenario.audit
        started_at = time.monotonic()
        _, body = await eventually(
            lambda: readiness(http_port),
            until=lambda answer: failing(answer, "kafka"),
            timeout_s=60,
            what="not ready, naming Kafka",
        )
        assert body["checks"]["kafka"].startswith("temporary:"), body
        stream = await scenario.stream_updates(users, UPDATES, rate_per_s=5)
        await scenario.finish_load()
        expected = await expected_versions(env.kc_admin, stream)
        await wait_converged(env.users, expected, SWEEP_INTERVAL_S + 10, "converged from the event store")
        outage_s = time.monotonic() - started_at
        outage_lines = _warning_lines(reconciler.log_file.read_text(errors="replace"))
        assert reconciler.alive and reconciler.starts == 1, reconciler.tail()

        await env.stack.start("kafka")
        broker_back = time.monotonic()
        await eventually(
            lambda: readiness(http_port),
            until=lambda answer: answer[0] == 200,
            timeout_s=120,
            what="ready once the broker is back",
        )
        ready_after_s = round(time.monotonic() - broker_back, 1)
        await reconciler.wait_joined(120)
        await audit.wait_caught_up(240)
        exit_code = await scenario.stop()
        final = await audit.check()
        assert scenario.watcher is not None
        await scenario.watcher.drain()
        swept = sum(1 for write in scenario.watcher.writes if write.synced_by == "sweep")
    assert exit_code == 0, reconciler.tail()
    assert not final.violations, final.violations[:10]
    assert await store_versions(env.users, expected) == expected
    assert swept > 0, "the sweep wrote nothing: the store cannot have converged from it"
    per_minute = len(outage_lines) / max(outage_s / 60, 1.0)
    assert per_minute <= MAX_OUTAGE_LINES_PER_MINUTE, outage_lines[:20]
    text = reconciler.log_file.read_text(errors="replace")
    assert "Unclosed" not in text and "Traceback" not in text, reconciler.tail(80)
    checks = await scenario.closing_checks()
    env.figures.update(
        users=USERS,
        updates=UPDATES,
        outage_s=round(outage_s, 1),
        warning_lines_during_outage=len(outage_lines),
        ready_after_broker_back_s=ready_after_s,
        writes_by_the_sweep=swept,
        lost=0,
        duration_s=scenario.elapsed_s(),
        **checks,
    )


def _warning_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if '"level": "warning"' in line or '"level": "error"' in line]
