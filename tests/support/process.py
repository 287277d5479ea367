"""Run `reconciler ...` as a real child process, with settings passed as environment variables."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from reconciler.base.config import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings()` in a child equal `settings`."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name.upper(), None)
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list):  # CDC_TABLES: comma-separated, as an operator writes it
            env[name.upper()] = ",".join(str(item) for item in value)
            continue
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def reconciler_command(*args: str) -> list[str]:
    """The one way every test starts the reconciler: `python -m reconciler <args>` of this interpreter."""
    return [sys.executable, "-m", "reconciler", *args]


async def run_reconciler_async(
    env: Mapping[str, str], *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """One `reconciler <args>` to its end with this environment, without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(
        *reconciler_command(*args),
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    code = process.returncode if process.returncode is not None else -1
    return subprocess.CompletedProcess(
        list(args), code, out.decode(errors="replace"), err.decode(errors="replace")
    )


def start_reconciler(settings: Settings, *args: str, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen(
            reconciler_command(*args),
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_reconciler(
    settings: Settings, *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        reconciler_command(*args),
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def stop(
    process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60
) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    return process.wait(timeout=timeout_s)
