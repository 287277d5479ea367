"""Faults the production-shaped scenarios inject beside stack.py's clean stop/start: a crash of one member."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.reliability.conftest import ReliabilityStack


def sigkill(stack: ReliabilityStack, service: str) -> None:
    """SIGKILL a service's whole process group, as a crash would (its pid file names the group leader; stack.py
    started each service in a session of its own, so nothing else is hit). `stack.start(service)` restarts it."""
    pid = int((stack.control.state_dir / f"{service}.pid").read_text().split()[0])
    os.killpg(pid, signal.SIGKILL)
