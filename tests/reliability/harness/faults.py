"""Faults injected into the stack's services: a clean stop (`stack.py stop`) or a crash (SIGKILL of the
service's process group), the service down for as long as the scenario says, then started again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.reliability.conftest import ReliabilityStack


def sigkill(stack: ReliabilityStack, service: str) -> None:
    """SIGKILL a service's whole process group, as a crash would (its pid file names the group leader; stack.py
    started each service in a session of its own, so nothing else is hit). `stack.start(service)` restarts it."""
    pid = int((stack.control.state_dir / f"{service}.pid").read_text().split()[0])
    os.killpg(pid, signal.SIGKILL)


class Outage:
    """One service of the stack away: entering stops it (or SIGKILLs it with `crash`), `end()` starts it again
    and leaving does so if the scenario did not, also when a check failed, so the next scenario finds its
    stack whole.

    Times (monotonic): `began` before the stop or kill, `down_at` once it returned (the service is away),
    `up_at` once the service was started and ready again.
    """

    def __init__(self, stack: ReliabilityStack, service: str, *, crash: bool = False) -> None:
        self.stack = stack
        self.service = service
        self.crash = crash
        self.began = self.down_at = self.up_at = 0.0
        self.ended = False

    async def __aenter__(self) -> Outage:
        self.began = time.monotonic()
        if self.crash:
            sigkill(self.stack, self.service)
        else:
            await self.stack.stop(self.service)
        self.down_at = time.monotonic()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.ended:
            await self.end()

    def elapsed_s(self) -> float:
        """Seconds since the service went away."""
        return time.monotonic() - self.down_at

    async def hold(self, duration_s: float) -> None:
        """Until the service has been away `duration_s` (the injected fault's length: a duration, not a wait
        for a condition)."""
        await asyncio.sleep(max(0.0, duration_s - self.elapsed_s()))

    async def end(self) -> float:
        """Starts the service again (it is ready when this returns): the seconds it was away."""
        assert not self.ended, f"{self.service} is already back"
        self.ended = True  # also when the start fails: leaving does not try again
        await self.stack.start(self.service)
        self.up_at = time.monotonic()
        return self.down_s

    @property
    def down_s(self) -> float:
        """From the stop's (or kill's) end to the service ready again."""
        assert self.up_at, f"{self.service} is still away"
        return self.up_at - self.down_at

    @property
    def cycle_s(self) -> float:
        """From the stop command (or kill) to the service ready again: what a restart costs."""
        assert self.up_at, f"{self.service} is still away"
        return self.up_at - self.began
