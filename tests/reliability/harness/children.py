"""Reconciler child processes of the scenarios: `run` under audit, one-shot commands, their settings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.base.config import Settings
from tests.conftest import override
from tests.reliability.harness.secrets import SecretsRegistry
from tests.support.http_proxy import RecordingProxy
from tests.support.polling import eventually
from tests.support.process import reconciler_command, run_reconciler_async, settings_env

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


MUTANTS_DIR = Path(__file__).resolve().parents[1] / "mutants"


def child_env(settings: Settings) -> dict[str, str]:
    """A reconciler child's environment: `settings`, plus the deliberate bug named by RELIABILITY_MUTANT
    (mutants/sitecustomize.py), used only to show that the scenarios fail when a property is broken."""
    env = settings_env(settings)
    if env.get("RELIABILITY_MUTANT"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(MUTANTS_DIR), env.get("PYTHONPATH", "")) if p)
    return env


class ReconcilerProcess:
    """`python -m reconciler <args>` as a child with `settings` as its environment; its output goes to a log file."""

    def __init__(self, settings: Settings, *args: str, log_file: Path) -> None:
        self.settings = settings
        self.args = args
        self.log_file = log_file
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.kills = 0
        self._joins_before_start = 0
        self._scanned = 0
        self._events: dict[str, list[dict[str, Any]]] = {}

    async def start(self) -> None:
        assert not self.alive, "already running"
        self._joins_before_start = len(self.log_events("partitions assigned"))
        with self.log_file.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *reconciler_command(),
                *self.args,
                env=child_env(self.settings),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines whose `event` is `name` (the file is read incrementally)."""
        if self.log_file.exists():
            with self.log_file.open("rb") as handle:
                handle.seek(self._scanned)
                chunk = handle.read()
            complete = chunk.rfind(b"\n") + 1
            self._scanned += complete
            for line in chunk[:complete].splitlines():
                if b'"event": "' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if (
                        isinstance(entry, dict)
                        and isinstance(entry.get("event"), str)
                        and str(entry.get("logger", "")).startswith("reconciler")
                    ):
                        self._events.setdefault(entry["event"], []).append(entry)
        return list(self._events.get(name, []))

    def own_notices(self, limit: int = 80) -> str:
        """The reconciler's own lines at info and above, the last `limit` (a failed scenario prints them:
        what the process decided, without the DEBUG and HTTP noise)."""
        if not self.log_file.exists():
            return ""
        kept: list[str] = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if (
                    isinstance(entry, dict)
                    and str(entry.get("logger", "")).startswith("reconciler")
                    and entry.get("level") != "debug"
                ):
                    kept.append(line)
        return "\n".join(kept[-limit:])

    def tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    async def wait_joined(self, timeout_s: float = 60) -> None:
        """Until this incarnation logged "partitions assigned" (it joined the group)."""

        async def joined() -> bool:
            if not self.alive:
                raise AssertionError(f"reconciler exited ({self.returncode}):\n{self.tail()}")
            return len(self.log_events("partitions assigned")) > self._joins_before_start

        await eventually(joined, timeout_s=timeout_s, interval_s=0.2, what="consumer joined its group")

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def kill(self) -> None:
        """SIGKILL: no drain, no commit, no goodbye to the group."""
        assert self.process is not None and self.alive
        self.process.send_signal(signal.SIGKILL)
        code = await self.process.wait()
        assert code == -signal.SIGKILL, code
        self.kills += 1

    async def terminate(self, timeout_s: float = 90) -> int:
        """SIGTERM and wait: the exit status (0 after a clean drain)."""
        assert self.process is not None
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"reconciler did not stop within {timeout_s}s:\n{self.tail()}") from None

    def pause(self) -> None:
        assert self.alive
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """While inside, the process is stopped (SIGSTOP): it writes and commits nothing, so the store and
        the committed offsets can be compared; it continues (SIGCONT) on leaving, also after a failed check."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def assert_never_restarted(self) -> None:
        """The first incarnation is still running: it rode the fault out without a restart."""
        assert self.alive and self.starts == 1, f"the reconciler had to be restarted:\n{self.tail()}"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])


async def run_cli(
    settings: Settings, *args: str, registry: SecretsRegistry, timeout_s: float = 600
) -> CliResult:
    """One `python -m reconciler ...` to the end, without blocking the event loop (the proxy runs on it)."""
    done = await run_reconciler_async(child_env(settings), *args, timeout_s=timeout_s)
    result = CliResult(done.returncode, done.stdout, done.stderr)
    registry.add_text(f"reconciler {' '.join(args)} (stdout)", result.stdout)
    registry.add_text(f"reconciler {' '.join(args)} (stderr)", result.stderr)
    return result


async def verify_in_sync(settings: Settings, registry: SecretsRegistry) -> dict[str, Any]:
    """`reconciler verify --json` must exit 0 (the store equals Keycloak)."""
    result = await run_cli(settings, "verify", "--json", registry=registry)
    assert result.code == 0, f"verify exit {result.code}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    report: dict[str, Any] = result.json()
    assert report["in_sync"] is True, report
    return report


def scenario_settings(
    settings: Settings, proxy: RecordingProxy, *, group: str | None = None, **overrides: Any
) -> Settings:
    """Settings of one scenario: Keycloak through the recording proxy, DEBUG logs (the secrets scenario
    reads them), its own consumer group, the periodic reconcile and the HTTP server off unless asked."""
    values: dict[str, Any] = {
        "keycloak_url": proxy.url,
        "log_level": "DEBUG",
        "log_format": "json",
        "kafka_group_id": group or f"rel-{uuid.uuid4().hex[:8]}",
        "reconcile_enabled": False,
        "http_enabled": False,
        "http_host": "127.0.0.1",
    }
    values.update(overrides)
    return override(settings, **values)
