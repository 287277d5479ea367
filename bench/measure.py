"""What a measured job counts: store round trips and writes (a pymongo CommandListener), Keycloak requests
(the reconciler's own Prometheus counter), wall time and the process's peak RSS."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from pymongo import monitoring

_WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})


class StoreCounter(monitoring.CommandListener):
    """Counts every command sent to the store (one command = one round trip) and the user documents written.

    `users_collection` names the collection whose writes count as user writes; writes elsewhere (run
    records, leases) are counted apart.
    """

    def __init__(self, users_collection: str = "users") -> None:
        self.users_collection = users_collection
        self.enabled = False
        self.round_trips = 0
        self.by_command: Counter[str] = Counter()
        self.user_write_commands = 0
        self.user_docs_written = 0  # inserted + upserted + modified, from the server's replies
        self.other_write_commands = 0
        self._user_writes: set[int] = set()

    def reset(self) -> None:
        self.round_trips = 0
        self.by_command.clear()
        self.user_write_commands = 0
        self.user_docs_written = 0
        self.other_write_commands = 0
        self._user_writes.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not self.enabled:
            return
        self.round_trips += 1
        self.by_command[event.command_name] += 1
        if event.command_name in _WRITE_COMMANDS:
            if event.command.get(event.command_name) == self.users_collection:
                self.user_write_commands += 1
                self._user_writes.add(event.request_id)
            else:
                self.other_write_commands += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id not in self._user_writes:
            return
        self._user_writes.discard(event.request_id)
        reply = event.reply
        if event.command_name == "insert":
            self.user_docs_written += int(reply.get("n", 0))
        elif event.command_name == "update":
            self.user_docs_written += int(reply.get("nModified", 0)) + len(reply.get("upserted", []) or [])
        elif event.command_name == "findAndModify":
            self.user_docs_written += int((reply.get("lastErrorObject") or {}).get("n", 0))
        elif event.command_name == "delete":
            self.user_docs_written += int(reply.get("n", 0))

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._user_writes.discard(event.request_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store_round_trips": self.round_trips,
            "store_user_write_commands": self.user_write_commands,
            "store_user_docs_written": self.user_docs_written,
            "store_other_write_commands": self.other_write_commands,
            "store_commands": dict(self.by_command),
        }


def install_store_counter(users_collection: str = "users") -> StoreCounter:
    """Register a counter for every client created afterwards in this process."""
    counter = StoreCounter(users_collection)
    monitoring.register(counter)
    return counter


def keycloak_requests() -> dict[str, int]:
    """Keycloak requests made so far by this process (attempts, token requests included), per operation."""
    counts: Counter[str] = Counter()
    for metric in REGISTRY.collect():
        if metric.name == "reconciler_keycloak_requests":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["operation"]] += int(sample.value)
    return dict(counts)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(slots=True)
class Stopwatch:
    started: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return time.perf_counter() - self.started
