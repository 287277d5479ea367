"""scripts/stack/stack.py as a newcomer meets it: idempotent `up`, clear port errors, honest status."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import ROOT, STACK_ENV_FILE

STACK = [sys.executable, str(ROOT / "scripts" / "stack" / "stack.py")]


def stack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACK, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def test_a_port_taken_by_another_program_is_named_in_the_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = stack("up", env={"STACK_STATE_DIR": str(tmp_path / "state"), "STACK_MONGO_PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already taken" in result.stderr
    assert not (tmp_path / "state" / "secantusdb.pid").exists()


def test_status_of_a_stack_that_never_started_says_stopped(tmp_path: Path) -> None:
    result = stack("status", env={"STACK_STATE_DIR": str(tmp_path / "state")})
    assert result.returncode == 1
    assert [line.split()[1] for line in result.stdout.splitlines()] == ["stopped"] * 3


@pytest.mark.stack
def test_a_second_up_while_the_stack_runs_changes_nothing(stack_env: dict[str, str]) -> None:
    if not STACK_ENV_FILE.exists():
        pytest.skip("the stack in use was not started by stack.py (containers)")
    before = {p.name: p.read_text() for p in STACK_ENV_FILE.parent.glob("*.pid")}
    result = stack("up")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("already running") == 3
    assert {p.name: p.read_text() for p in STACK_ENV_FILE.parent.glob("*.pid")} == before
    assert stack("status").returncode == 0
