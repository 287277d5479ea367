"""Drive a second, independent local stack (scripts/stack/stack.py with its own STACK_STATE_DIR and ports).

Fault-injection tests stop and start single services of *this* stack only; the main stack (`.stack/`) is
never touched. Every call runs stack.py as a child process; the async variants keep the event loop free.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.stack import ROOT, read_env_file

STACK_SCRIPT = ROOT / "scripts" / "stack" / "stack.py"
SERVICES = ("secantusdb", "postgres", "kafka", "keycloak")
# Services of the optional shapes (STACK_CDC=1: Kafka Connect; STACK_LDAP=1: OpenLDAP), stoppable like the others.
OPTIONAL_SERVICES = ("connect", "ldap")


class StackCommandError(AssertionError):
    pass


@dataclass
class StackControl:
    """One stack: its state folder, ports and extra environment for stack.py."""

    state_dir: Path
    ports: Mapping[str, int]  # STACK_*_PORT variable -> port
    extra_env: dict[str, str] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)  # (command, seconds)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
        env["STACK_STATE_DIR"] = str(self.state_dir)
        env.update({name: str(port) for name, port in self.ports.items()})
        env.update(self.extra_env)
        env.update(extra)
        return env

    def _finish(self, args: tuple[str, ...], code: int, output: str, started: float) -> str:
        self.timings.append((" ".join(args), time.monotonic() - started))
        if code != 0:
            raise StackCommandError(f"stack.py {' '.join(args)} failed ({code}):\n{output[-3000:]}")
        return output

    def run(self, *args: str, timeout_s: float = 600, **extra: str) -> str:
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(STACK_SCRIPT), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        return self._finish(args, result.returncode, result.stdout + result.stderr, started)

    async def arun(self, *args: str, timeout_s: float = 600, **extra: str) -> str:
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(STACK_SCRIPT),
            *args,
            env=self.env(**extra),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return self._finish(args, process.returncode, out.decode(errors="replace"), started)

    def running(self) -> set[str]:
        """Services of this stack whose pid file names a live process (stack.py status); a cluster member
        (`kafka-2`, `keycloak-front`) counts as its service (`kafka`, `keycloak`)."""
        result = subprocess.run(
            [sys.executable, str(STACK_SCRIPT), "status"],
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        return {
            line.split()[0].split("-")[0]
            for line in result.stdout.splitlines()
            if len(line.split()) > 1 and line.split()[1] == "running"
        }

    def read_env(self) -> dict[str, str]:
        return read_env_file(self.state_dir / "env")

    async def stop(self, service: str) -> None:
        """`service` is one of SERVICES (on a cluster shape: all its members) or one member (`kafka-2`)."""
        assert service.split("-")[0] in (*SERVICES, *OPTIONAL_SERVICES), service
        await self.arun("stop", service)

    async def start(self, service: str) -> None:
        assert service.split("-")[0] in (*SERVICES, *OPTIONAL_SERVICES), service
        await self.arun("start", service)
