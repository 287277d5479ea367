"""Kafka inside the error model, on every subcommand: an unreachable broker as a new user meets it.

`replay` tries the connection `KAFKA_RETRY_ATTEMPTS` times and ends with exit 8; `verify` and `reconcile
--once` do not need Kafka and succeed; `run` starts anyway, is not ready (`/readyz` names Kafka), logs the
outage calmly and stops cleanly. No command prints a traceback, "unexpected error" or an unclosed client.
(Refusals, exit 3, need the secure stack: tests/clients/test_secure_connections.py. A broker that comes
back while `run` waits: reliability scenario 16.)
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from reconciler.base.config import Settings
from reconciler.base.errors import ExitStatus
from tests.conftest import override
from tests.support.health import failing, metric, readiness
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.process import reconciler_command, run_reconciler_async, settings_env, start_reconciler

pytestmark = pytest.mark.stack


@pytest.fixture
def no_broker(settings: Settings) -> Settings:
    """Settings whose only broker is a port nothing listens on; quick retries."""
    return override(
        settings,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_retry_attempts=2,
        retry_request_backoff_s=0.1,
        kafka_group_id="test-no-broker",
    )


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("reconciler: error:")]


def assert_clean(output: str) -> None:
    for word in ("Traceback", "unexpected error", "Unclosed"):
        assert word not in output, output[-3000:]


async def test_replay_with_no_broker_ends_with_exit_8_and_one_line(no_broker: Settings) -> None:
    result = await run_reconciler_async(settings_env(no_broker), "replay", timeout_s=120)
    assert result.returncode == ExitStatus.KAFKA_UNAVAILABLE, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith("reconciler: error: Kafka unreachable: ") and "KAFKA_BOOTSTRAP_SERVERS" in line
    assert_clean(result.stdout + result.stderr)


@pytest.mark.parametrize("args", [("verify",), ("reconcile", "--once")])
async def test_commands_that_need_no_broker_do_not_notice_it(
    no_broker: Settings, args: tuple[str, ...]
) -> None:
    result = await run_reconciler_async(settings_env(no_broker), *args, timeout_s=180)
    assert result.returncode == ExitStatus.OK, result.stderr[-3000:]
    assert not error_lines(result.stderr)
    assert_clean(result.stdout + result.stderr)


async def test_run_with_no_broker_stays_up_not_ready_and_calm(no_broker: Settings, tmp_path: Path) -> None:
    """No crash loop: the process runs, `/readyz` says Kafka is unreachable, a few lines in all."""
    port = free_port()
    config = override(
        no_broker,
        http_enabled=True,
        http_port=port,
        reconcile_enabled=False,
        sweep_enabled=False,
        retry_user_backoff_max_s=2.0,
        log_level="INFO",
    )
    log_file = tmp_path / "run.log"
    process = start_reconciler(config, "run", log_file=log_file)
    try:
        _, body = await eventually(
            lambda: readiness(port),
            until=lambda answer: failing(answer, "kafka"),
            timeout_s=60,
            what="readiness naming Kafka",
        )
        assert body["checks"]["kafka"].startswith("temporary: no Kafka broker"), body
        # The consumer starts its clients again and again meanwhile (backoff up to 2 s here).
        await eventually(
            lambda: metric(port, "reconciler_consumer_restarts_total"),
            until=lambda count: count >= 4 or process.poll() is not None,
            timeout_s=60,
            interval_s=0.5,
            what="the consumer trying again",
        )
        assert process.poll() is None, log_file.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
    text = log_file.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert_clean(text)
    loud = [line for line in text.splitlines() if '"level": "error"' in line or '"level": "warning"' in line]
    assert any("dependency failing" in line and '"component": "kafka"' in line for line in loud), text[-3000:]
    # aiokafka alone logs about 70 lines a second while no broker answers: here, a handful in all.
    assert len(loud) <= 5, loud


def test_the_exit_statuses_of_kafka_are_documented() -> None:
    help_text = subprocess.run(
        reconciler_command("--help"), capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "  8  no Kafka broker answered" in help_text
    assert "Kafka's SASL user/password" in help_text


async def test_a_taken_health_port_is_a_configuration_error(settings: Settings) -> None:
    """Not "unexpected error": the setting to change is named (exit 2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = override(settings, http_enabled=True, http_port=port, consumer_enabled=False)
        result = await run_reconciler_async(settings_env(config), "run", timeout_s=120)
    assert result.returncode == ExitStatus.CONFIG, result.stderr[-3000:]
    (line,) = error_lines(result.stderr)
    assert f"HTTP_PORT={port}" in line and line.startswith("reconciler: error: configuration error: "), line
    assert_clean(result.stdout + result.stderr)
