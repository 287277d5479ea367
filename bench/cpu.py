"""CPU seconds each server of the local stack (and this process) spent in a timed window.

On this 2-core machine the servers and the measured process share the CPU, so "where the time goes" is
first of all *which process* used it: a server's pid file under `.stack/` and every descendant of it
(PostgreSQL's backends, a launcher script's JVM) are summed from `/proc/<pid>/stat` (utime + stime).
Linux only; a server without a readable pid file is left out.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from tests.support.stack import STACK_ENV_FILE

SERVERS = ("secantusdb", "keycloak", "kafka", "postgres", "connect")
_TICK = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process readable now."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    return table


def _tree_seconds(root: int, table: dict[int, tuple[int, float]]) -> float:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0.0))[1]
        todo.extend(children.get(pid, []))
    return total


def snapshot(state_dir: Path | None = None) -> dict[str, float]:
    """CPU seconds so far of each stack server found (the stack of STACK_STATE_DIR, else `.stack/`), and of
    this process ("bench_process")."""
    if state_dir is None:
        state_dir = Path(os.environ.get("STACK_STATE_DIR") or STACK_ENV_FILE.parent)
    table = _processes()
    seconds: dict[str, float] = {}
    for name in SERVERS:
        try:
            pid = int((state_dir / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid in table:
            seconds[name] = _tree_seconds(pid, table)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds["bench_process"] = usage.ru_utime + usage.ru_stime
    return seconds


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two snapshots (processes present in both)."""
    return {name: round(after[name] - before[name], 2) for name in after if name in before}
