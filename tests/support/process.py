"""Run `reconciler ...` as a real child process, with settings passed as environment variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from reconciler.config import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings()` in a child equal `settings`."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name.upper(), None)
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def start_reconciler(settings: Settings, *args: str, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", *args],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_reconciler(
    settings: Settings, *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
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
