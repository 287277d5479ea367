"""Starts measured jobs (`bench.job`) in fresh processes and collects their JSON results."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.env import LOGS_DIR, ROOT


class JobFailed(RuntimeError):
    pass


class Job:
    """One `python -m bench.job` process; its stdout and stderr go to a log file under results/logs/."""

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        LOGS_DIR.mkdir(parents=True, exist_ok=True)
        stem = f"{name}-{uuid.uuid4().hex[:6]}"
        self.name = name
        self.spec_path = LOGS_DIR / f"{stem}.spec.json"
        self.out_path = LOGS_DIR / f"{stem}.out.json"
        self.log_path = LOGS_DIR / f"{stem}.log"
        self.spec_path.write_text(json.dumps(spec, indent=2))
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.job", str(self.spec_path), str(self.out_path)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def result(self, timeout_s: float) -> dict[str, Any]:
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            code = -9
        finally:
            self._log.close()
        if code != 0 or not self.out_path.exists():
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
            raise JobFailed(f"job {self.name} failed (exit {code}); log {self.log_path}:\n{tail}")
        result: dict[str, Any] = json.loads(self.out_path.read_text())
        return result

    async def wait_for_file(self, path: Path, timeout_s: float) -> None:
        """Wait until the job creates `path` (its readiness signal); fail early if the job dies."""
        deadline = time.monotonic() + timeout_s
        while not _exists(path):
            if self.process.poll() is not None:
                self.result(0)  # raises with the log tail
            if time.monotonic() > deadline:
                raise JobFailed(f"job {self.name} not ready within {timeout_s} s (log {self.log_path})")
            await asyncio.sleep(0.05)


def _exists(path: Path) -> bool:
    return path.exists()


def run_job(name: str, spec: dict[str, Any], timeout_s: float = 3600) -> dict[str, Any]:
    return Job(name, spec).result(timeout_s)
