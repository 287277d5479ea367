"""Change-stream recorders of the store: every write a scenario caused to the users, or to one lease, in order."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from tests.reliability.harness.records import value
from tests.support.polling import eventually

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True, slots=True)
class StoreWrite:
    external_id: str
    operation: str  # insert, update, replace
    observed_at: datetime | None  # as written by this operation (None: this write did not set it)
    is_active: bool | None  # as written by this operation (None: unchanged)
    synced_by: str | None
    deactivation_reason: str | None


_MARKER_PREFIX = "watcher-marker-"


class _ChangeRecorder:
    """A change stream on `collection` read in the background: each change goes to `_record`, in commit
    order; a failure of the stream is kept in `error` (the subclasses surface it)."""

    def __init__(self, collection: Any, **watch_options: Any) -> None:
        self._collection = collection
        self._watch_options = watch_options
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.error: BaseException | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=type(self).__name__)
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            async with await self._collection.watch(**self._watch_options) as stream:
                self._ready.set()
                async for change in stream:
                    self._record(change)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # surfaced by the subclass (drain, check)
            self.error = error
            self._ready.set()

    def _record(self, change: Mapping[str, Any]) -> None:
        raise NotImplementedError


class StoreWatcher(_ChangeRecorder):
    """Records every write to the users collection through a change stream."""

    def __init__(self, users: Any) -> None:
        super().__init__(users, full_document="updateLookup")
        self._users = users
        self._ids: dict[Any, str] = {}
        self.writes: list[StoreWrite] = []
        self._markers: set[str] = set()

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


@dataclass(frozen=True, slots=True)
class LeaseWrite:
    """One write to a lease document, with the lease's state right after it."""

    operation: str  # insert, update, replace, delete
    holder: str | None  # None after a delete (released)
    expires_at: datetime | None
    renewed_at: datetime | None  # the writer's clock when it took or renewed the lease


class LeaseWatcher(_ChangeRecorder):
    """Records every write to one lease document (`leases`, `_id` = `name`) through a change stream, in
    commit order: who held it and until when, so a scenario can check that no holder took a lease another
    holder still had."""

    def __init__(self, leases: Any, name: str) -> None:
        super().__init__(leases)
        self._name = name
        self.writes: list[LeaseWrite] = []

    def _record(self, change: Mapping[str, Any]) -> None:
        if (change.get("documentKey") or {}).get("_id") != self._name:
            return  # another lease (the sweep's)
        operation = change.get("operationType", "")
        previous = self.writes[-1] if self.writes else None
        if operation == "delete":
            self.writes.append(LeaseWrite(operation, None, None, None))
            return
        if operation in ("insert", "replace"):
            fields = change.get("fullDocument") or {}
        elif operation == "update":
            # Only the changed fields: a renewal sets the same holder, which may not be listed.
            fields = (change.get("updateDescription") or {}).get("updatedFields") or {}
        else:
            return
        holder = fields.get("holder", previous.holder if previous else None)
        self.writes.append(LeaseWrite(operation, holder, fields.get("expires_at"), fields.get("renewed_at")))

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"lease change stream failed: {self.error!r}")

    def takeovers(self) -> list[tuple[LeaseWrite, LeaseWrite]]:
        """(the previous holder's last write, the first write of the next holder) for every change of holder
        without a release in between: the new holder may take the lease only once that write expired."""
        pairs: list[tuple[LeaseWrite, LeaseWrite]] = []
        for before, after in zip(self.writes, self.writes[1:], strict=False):
            if before.holder is not None and after.holder is not None and after.holder != before.holder:
                pairs.append((before, after))
        return pairs

    def first_write_of(self, holder_pid: int) -> LeaseWrite | None:
        """The first write by the process with this pid (holder ids are `host:pid:random`)."""
        return next((w for w in self.writes if w.holder and _holder_pid(w.holder) == holder_pid), None)

    def last_write_of(self, holder_pid: int) -> LeaseWrite | None:
        return next(
            (w for w in reversed(self.writes) if w.holder and _holder_pid(w.holder) == holder_pid), None
        )


def _holder_pid(holder: str) -> int | None:
    parts = holder.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
