"""Building blocks of the reliability scenarios: reconciler child processes, a load generator of real Keycloak
changes, the "every committed offset is applied" check, a change-stream recorder and the secrets scan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from aiokafka import ConsumerRecord

from reconciler.config import Settings
from tests.conftest import override
from tests.support.http_proxy import ProxiedRequest, RecordingProxy
from tests.support.kafka_offsets import (
    Offsets,
    PartitionReader,
    committed_offsets,
    end_offsets,
    seed_group_offsets,
)
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.process import settings_env

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# --- secrets ----------------------------------------------------------------------------------------------------
@dataclass
class SecretsRegistry:
    """Where the suite's reconcilers wrote (log files, captured outputs) and what must never appear there."""

    log_dir: Path
    fixed: dict[str, str]
    tokens: set[str]  # live: the proxy adds every token it sees
    files: list[Path] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (where, text) not written to a file

    def log_file(self, name: str) -> Path:
        path = self.log_dir / f"{name}.log"
        if path not in self.files:
            self.files.append(path)
        return path

    def add_text(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def secrets(self) -> dict[str, str]:
        values = dict(self.fixed)
        for index, token in enumerate(sorted(self.tokens)):
            values[f"token #{index + 1}"] = token
        # Also the form a secret takes inside a URL or a form body.
        for label, value in list(values.items()):
            if quote(value, safe="") != value:
                values[f"{label} (url-encoded)"] = quote(value, safe="")
        return {label: value for label, value in values.items() if len(value) >= 8}

    def scan(self, files: Iterable[Path] | None = None) -> tuple[int, list[str]]:
        """(lines scanned, findings); a finding names the secret and where, never shows it."""
        secrets = self.secrets()
        findings: list[str] = []
        lines = 0
        sources: list[tuple[str, str]] = []
        for path in files if files is not None else self.files:
            if path.exists():
                sources.append((path.name, path.read_text(errors="replace")))
        if files is None:
            sources.extend(self.texts)
        for where, text in sources:
            for number, line in enumerate(text.splitlines(), 1):
                lines += 1
                for label, value in secrets.items():
                    if value in line:
                        findings.append(f"{label} in {where} line {number}")
        return lines, findings

    def assert_clean(self, files: Iterable[Path] | None = None) -> int:
        lines, findings = self.scan(files)
        assert not findings, f"secrets leaked: {findings[:20]}"
        return lines


# --- reconciler child processes -----------------------------------------------------------------------------------
MUTANTS_DIR = Path(__file__).parent / "mutants"


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
                sys.executable,
                "-m",
                "reconciler",
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
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reconciler",
        *args,
        env=child_env(settings),
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
    result = CliResult(process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
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


# --- Keycloak load ----------------------------------------------------------------------------------------------------
def seed_users(count: int, prefix: str) -> list[dict[str, Any]]:
    """User representations with fixed ids (lastName "v0"), for the realm partial import."""
    return [
        {
            "id": str(uuid.uuid4()),
            "username": f"{prefix}-{i:05d}",
            "email": f"{prefix}-{i:05d}@example.test",
            "emailVerified": True,
            "firstName": "Rel",
            "lastName": "v0",
            "enabled": True,
        }
        for i in range(count)
    ]


async def import_users(
    kc: KeycloakTestAdmin,
    users: list[dict[str, Any]],
    batch: int = 500,
    *,
    settings: Settings | None = None,
) -> None:
    """Create users with the realm partial import. Keycloak reports it as admin events of resource type
    REALM (`users/<id>`), which the reconciler ignores; they are published asynchronously, so with
    `settings` this waits until all of them are in the admin topic (a scenario then starts after them)."""
    before = (
        await end_offsets(settings.kafka_bootstrap_servers, [settings.kafka_admin_events_topic])
        if settings is not None
        else {}
    )
    for start in range(0, len(users), batch):
        await kc.partial_import_users(users[start : start + batch])
    if settings is None:
        return
    wanted = {f"users/{u['id']}" for u in users}
    async with PartitionReader(settings.kafka_bootstrap_servers) as reader:

        async def published() -> int:
            ends = await end_offsets(settings.kafka_bootstrap_servers, [settings.kafka_admin_events_topic])
            records = await reader.read({tp: (before.get(tp, 0), end) for tp, end in ends.items()})
            seen = set()
            for record in records:
                with contextlib.suppress(ValueError):
                    event = json.loads(record.value or b"null")
                    if isinstance(event, dict) and event.get("realmId") == settings.keycloak_realm:
                        seen.add(event.get("resourcePath"))
            return len(wanted & seen)

        await eventually(
            published, until=lambda n: n == len(wanted), timeout_s=120, interval_s=0.5, what="import events"
        )


def version_of(last_name: Any) -> int | None:
    if isinstance(last_name, str) and last_name.startswith("v") and last_name[1:].isdigit():
        return int(last_name[1:])
    return None


class UpdateStream:
    """Real admin API updates: each sets one user's lastName to "v<n>", n counting up per user.

    Updates of one user never overlap, so Keycloak's final state of a user is its highest confirmed version.
    A failed update (Keycloak down, a dropped connection) is retried with the same version until it succeeds.
    """

    def __init__(
        self,
        kc: KeycloakTestAdmin,
        users: list[dict[str, Any]],
        total: int,
        *,
        concurrency: int = 6,
        rate_per_s: float | None = None,
        rng: random.Random,
    ) -> None:
        self._kc = kc
        self._users = {u["id"]: u for u in users}
        # Every user at least once (a user without events stays unknown to the event path), the rest random.
        plan = [u["id"] for u in users][:total]
        plan += [rng.choice(users)["id"] for _ in range(total - len(plan))]
        rng.shuffle(plan)
        self._plan = plan
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._concurrency = concurrency
        self._interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next_slot = 0.0
        self.versions: dict[str, int] = {}  # confirmed by Keycloak
        self.done = 0
        self.failures = 0
        self.started_at = 0.0
        self.finished_at = 0.0

    @property
    def total(self) -> int:
        return len(self._plan)

    async def run(self) -> None:
        self.started_at = time.monotonic()
        queue = iter(self._plan)
        await asyncio.gather(*(self._worker(queue) for _ in range(self._concurrency)))
        self.finished_at = time.monotonic()

    async def _pace(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._interval
        await asyncio.sleep(slot - now)

    async def _worker(self, queue: Any) -> None:
        for user_id in queue:
            await self._pace()
            async with self._locks[user_id]:
                version = self.versions.get(user_id, 0) + 1
                await self._update(user_id, version)
                self.versions[user_id] = version
                self.done += 1

    async def _update(self, user_id: str, version: int) -> None:
        user = self._users[user_id]
        body = {k: user[k] for k in ("username", "email", "emailVerified", "firstName", "enabled")}
        body["lastName"] = f"v{version}"
        deadline = time.monotonic() + 300
        while True:
            try:
                await self._kc.request("PUT", f"/users/{user_id}", json=body)
                return
            except (httpx.HTTPError, OSError) as error:
                self.failures += 1
                if time.monotonic() > deadline:
                    raise AssertionError(f"update of {user_id} kept failing: {error!r}") from error
                await asyncio.sleep(0.5)


# --- Kafka: what was committed, what is applied ---------------------------------------------------------------------
@dataclass
class CommitCheck:
    committed_records: int  # records below the committed offsets (since the scenario started)
    user_updates: int  # of those, Keycloak UPDATE events of the scenario's users
    pending_records: int  # records at or above the committed offsets (not committed yet)
    violations: list[tuple[str, int, int | None]]  # (user, version the committed events require, stored)


def update_version(record_value: bytes | None, realm: str) -> tuple[str, int] | None:
    """(user id, lastName version) of a Keycloak admin UPDATE event of `realm` carrying a representation."""
    try:
        event = json.loads(record_value or b"null")
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("realmId") != realm or event.get("operationType") != "UPDATE":
        return None
    path, representation = event.get("resourcePath"), event.get("representation")
    if not isinstance(path, str) or not path.startswith("users/") or not isinstance(representation, str):
        return None
    try:
        body = json.loads(representation)
    except ValueError:
        return None
    version = version_of(body.get("lastName")) if isinstance(body, dict) else None
    parts = path.split("/")
    return (parts[1], version) if version is not None and len(parts) == 2 else None


class OffsetAudit:
    """Compares a consumer group's committed offsets with the store, from the offsets a scenario started at."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], realm: str, users: Any) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self.realm = realm
        self.users = users
        self.start: Offsets = {}
        self._reader = PartitionReader(bootstrap)

    async def __aenter__(self) -> OffsetAudit:
        await self._reader.__aenter__()
        # The group starts at the current end, not at offset 0 (other scenarios' events are not its business).
        self.start = await end_offsets(self.bootstrap, self.topics)
        await seed_group_offsets(self.bootstrap, self.group, self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._reader.__aexit__(*exc)

    async def lag(self) -> int:
        """Records not yet committed by the group (0: it has caught up)."""
        ends = await end_offsets(self.bootstrap, self.topics)
        committed = await committed_offsets(self.bootstrap, self.group)
        return sum(end - committed.get(tp, self.start.get(tp, 0)) for tp, end in ends.items())

    async def committed_user_updates(self) -> int:
        """Keycloak UPDATE events of the realm below the group's committed offsets."""
        committed = await committed_offsets(self.bootstrap, self.group)
        ranges = {tp: (start, committed.get(tp, start)) for tp, start in self.start.items()}
        return sum(
            1 for r in await self._reader.read(ranges) if update_version(r.value, self.realm) is not None
        )

    async def committed_total(self) -> int:
        """Records committed by the group since the scenario started."""
        committed = await committed_offsets(self.bootstrap, self.group)
        return sum(committed.get(tp, start) - start for tp, start in self.start.items())

    async def wait_caught_up(self, timeout_s: float) -> None:
        await eventually(
            self.lag, until=lambda lag: lag == 0, timeout_s=timeout_s, interval_s=1, what="lag 0"
        )

    async def check(self) -> CommitCheck:
        """Every committed Keycloak UPDATE event's version must be in the store (at or above it).

        Call it only while no reconciler can write (killed or paused): then the store is exactly what was
        applied when the offsets were committed.
        """
        committed = await committed_offsets(self.bootstrap, self.group)
        ends = await end_offsets(self.bootstrap, self.topics)
        ranges = {tp: (start, committed.get(tp, start)) for tp, start in self.start.items()}
        records = await self._reader.read(ranges)
        required: dict[str, int] = {}
        for record in records:
            change = update_version(record.value, self.realm)
            if change is not None:
                required[change[0]] = max(required.get(change[0], 0), change[1])
        stored = await store_versions(self.users, required)
        violations = [
            (user, need, stored.get(user))
            for user, need in sorted(required.items())
            if (stored.get(user) or 0) < need
        ]
        pending = sum(end - committed.get(tp, self.start.get(tp, 0)) for tp, end in ends.items())
        user_updates = sum(1 for r in records if update_version(r.value, self.realm) is not None)
        return CommitCheck(len(records), user_updates, pending, violations)

    async def update_records(self) -> list[ConsumerRecord[bytes, bytes]]:
        """Keycloak UPDATE events of the realm written to the topics since the start."""
        ends = await end_offsets(self.bootstrap, self.topics)
        records = await self._reader.read({tp: (start, ends[tp]) for tp, start in self.start.items()})
        return [r for r in records if update_version(r.value, self.realm) is not None]

    async def count_updates(self) -> int:
        return len(await self.update_records())

    async def topic_versions(self) -> dict[str, int]:
        """Per user, the highest lastName version an UPDATE event in the topics carries."""
        versions: dict[str, int] = {}
        for record in await self.update_records():
            change = update_version(record.value, self.realm)
            assert change is not None
            versions[change[0]] = max(versions.get(change[0], 0), change[1])
        return versions


async def store_versions(users: Any, ids: Iterable[str]) -> dict[str, int | None]:
    wanted = list(ids)
    found: dict[str, int | None] = {}
    async for doc in users.find({"external_id": {"$in": wanted}}, {"external_id": 1, "last_name": 1}):
        found[doc["external_id"]] = version_of(doc.get("last_name"))
    return found


async def wait_converged(users: Any, expected: Mapping[str, int], timeout_s: float, what: str) -> None:
    """Until every user's stored lastName version equals Keycloak's (`expected`)."""

    async def behind() -> list[tuple[str, int, int | None]]:
        stored = await store_versions(users, expected)
        return [(u, v, stored.get(u)) for u, v in expected.items() if stored.get(u) != v]

    await eventually(
        behind, until=lambda lagging: not lagging, timeout_s=timeout_s, interval_s=0.5, what=what
    )


async def wait_applied(users: Any, reached_kafka: Mapping[str, int], timeout_s: float, what: str) -> None:
    """Until every user's stored version is at least the newest one an event in Kafka carries."""

    async def behind() -> list[tuple[str, int, int | None]]:
        stored = await store_versions(users, reached_kafka)
        return [(u, v, stored.get(u)) for u, v in reached_kafka.items() if (stored.get(u) or 0) < v]

    await eventually(
        behind, until=lambda lagging: not lagging, timeout_s=timeout_s, interval_s=0.5, what=what
    )


async def keycloak_versions(kc: KeycloakTestAdmin) -> dict[str, int]:
    """Every user's lastName version as Keycloak has it now (the truth)."""
    users = await kc.list_users()
    return {u["id"]: v for u in users if (v := version_of(u.get("lastName"))) is not None}


# --- the store, watched -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoreWrite:
    external_id: str
    operation: str  # insert, update, replace
    observed_at: datetime | None  # as written by this operation (None: this write did not set it)
    is_active: bool | None  # as written by this operation (None: unchanged)
    synced_by: str | None
    deactivation_reason: str | None


_MARKER_PREFIX = "watcher-marker-"


class StoreWatcher:
    """Records every write to the users collection through a change stream."""

    def __init__(self, users: Any) -> None:
        self._users = users
        self._ids: dict[Any, str] = {}
        self.writes: list[StoreWrite] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._markers: set[str] = set()
        self.error: BaseException | None = None

    async def __aenter__(self) -> StoreWatcher:
        self._task = asyncio.create_task(self._run(), name="store-watcher")
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def drain(self, timeout_s: float = 60) -> None:
        """Until the stream has delivered every write made before this call: a marker document is written
        and waited for (a change stream delivers in commit order), then removed."""
        marker = f"{_MARKER_PREFIX}{uuid.uuid4().hex}"
        await self._users.insert_one({"_id": marker, "external_id": marker})
        try:
            await eventually(
                lambda: value(marker in self._markers or self.error is not None),
                timeout_s=timeout_s,
                what="the change stream caught up",
            )
        finally:
            await self._users.delete_one({"_id": marker})
        if self.error is not None:
            raise AssertionError(f"change stream failed: {self.error!r}")

    async def _run(self) -> None:
        try:
            async with await self._users.watch(full_document="updateLookup") as stream:
                self._ready.set()
                async for change in stream:
                    self._record(change)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # surfaced by drain()
            self.error = error
            self._ready.set()

    def _record(self, change: Mapping[str, Any]) -> None:
        operation = change.get("operationType", "")
        key = (change.get("documentKey") or {}).get("_id")
        full = change.get("fullDocument") or {}
        if operation in ("insert", "replace"):
            fields = full
        elif operation == "update":
            fields = (change.get("updateDescription") or {}).get("updatedFields") or {}
        else:
            return
        external_id = full.get("external_id") or self._ids.get(key)
        if not external_id:
            return
        if external_id.startswith(_MARKER_PREFIX):
            self._markers.add(external_id)
            return
        self._ids[key] = external_id
        self.writes.append(
            StoreWrite(
                external_id,
                operation,
                fields.get("observed_at"),
                fields.get("is_active"),
                fields.get("synced_by"),
                fields.get("deactivation_reason"),
            )
        )

    def observed_at_regressions(self) -> tuple[int, list[str]]:
        """(writes checked, users whose observed_at did not strictly increase from one write to the next)."""
        last: dict[str, datetime] = {}
        bad: list[str] = []
        checked = 0
        for write in self.writes:
            if write.observed_at is None:
                continue
            checked += 1
            previous = last.get(write.external_id)
            if previous is not None and write.observed_at <= previous:
                bad.append(f"{write.external_id}: {previous.isoformat()} -> {write.observed_at.isoformat()}")
            last[write.external_id] = write.observed_at
        return checked, bad

    def deactivations(self) -> dict[str, StoreWrite]:
        """The first write that set is_active false, per user."""
        first: dict[str, StoreWrite] = {}
        for write in self.writes:
            if write.is_active is False and write.external_id not in first:
                first[write.external_id] = write
        return first


# --- proxy ------------------------------------------------------------------------------------------------------------
_ALLOWED_PATHS = (
    re.compile(r"^/realms/(?P<realm>[^/?]+)/protocol/openid-connect/token$"),
    re.compile(r"^/admin/realms/(?P<realm>[^/?]+)/users$"),
    re.compile(r"^/admin/realms/(?P<realm>[^/?]+)/users/count$"),
    re.compile(r"^/admin/realms/(?P<realm>[^/?]+)/users/(?P<id>[^/?]+)(/groups|/role-mappings/realm)?$"),
)


def audit_requests(requests: Iterable[ProxiedRequest], realm: str) -> tuple[int, set[str], list[str]]:
    """(requests, user ids requested, problems): every request must be a known read of `realm`, and every
    /admin/realms/<realm>/users/<id> path must carry a canonical UUID."""
    count = 0
    ids: set[str] = set()
    problems: list[str] = []
    for request in requests:
        count += 1
        path = request.raw_path.split("?", 1)[0]
        match = next((m for pattern in _ALLOWED_PATHS if (m := pattern.match(path))), None)
        if match is None or match.group("realm") != realm:
            problems.append(f"{request.method} {request.raw_path[:200]}")
            continue
        user_id = match.groupdict().get("id")
        if user_id is not None and user_id != "count":
            if not UUID_RE.match(user_id):
                problems.append(f"{request.method} {request.raw_path[:200]}")
            ids.add(user_id)
        if request.method not in ("GET", "POST") or (request.method == "POST" and "token" not in path):
            problems.append(f"{request.method} {request.raw_path[:200]}")
    return count, ids, problems


# --- misc -------------------------------------------------------------------------------------------------------------
async def value(result: Any) -> Any:
    """An awaitable of a plain value, for `eventually` probes that only read local state."""
    return result


async def run_records(users: Any) -> list[dict[str, Any]]:
    """The full reconcile's run records (`reconcile_runs`) of the scenario's database, oldest first."""
    runs = users.database["reconcile_runs"]
    return [doc async for doc in runs.find({}).sort("started_at", 1)]


async def collect_run_errors(users: Any, registry: SecretsRegistry, where: str) -> None:
    """Run records carry error messages: the secrets scan reads them too."""
    for record in await run_records(users):
        if record.get("error"):
            registry.add_text(f"{where} reconcile_runs {record['_id']}", str(record["error"]))
