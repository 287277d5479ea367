"""UserStore: the application's MongoDB copy of Keycloak users, on PyMongo's async API (not Motor).

A thin data layer: it reads documents, executes the guarded writes the apply core hands it, and keeps the
lease and run records of the full reconcile. It decides nothing about users.

Every user write is guarded by `observed_at` (invariant 2, docs/ARCHITECTURE.md): the update filter only matches a document that
was observed *before* the write's observation (or never), and it upserts. When a newer document exists the
filter misses, the upsert tries to insert a second document with the same `external_id`, and the unique
index refuses it with E11000: that write is *stale*, counted and never retried.

A write for a user the apply core found no document of (`UserWrite.expect_absent`) is a plain insert
instead: on SecantusDB a guarded upsert costs about 3x an insert, and a cold full reconcile is all such
writes. The unique index makes the insert as safe as the guard: if a document appeared meanwhile the insert
is refused with E11000, and that write is then retried as the ordinary guarded upsert, which decides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Concatenate, Final, ParamSpec, Self, TypeVar

import pymongo
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, InsertOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)
from pymongo.errors import ConfigurationError as MongoConfigurationError

from reconciler.base.config import Settings
from reconciler.base.errors import StoreError, StoreRefused, StoreUnavailable
from reconciler.domain.document import (
    F,
    UserWrite,
    WriteStatus,
    utc_now,
)
from reconciler.domain.models import DeactivationReason
from reconciler.domain.outcomes import Outcome
from reconciler.observability import metrics
from reconciler.observability.logs import get_logger, redact

log = get_logger(__name__)

Document = dict[str, Any]

LEASES_COLLECTION: Final = "leases"
RUNS_COLLECTION: Final = "reconcile_runs"
TOMBSTONES_COLLECTION: Final = "tombstones"
SWEEP_COLLECTION: Final = "sweep_state"
# A tombstone only has to outlive observations still in flight (a reconcile page, a retried hint).
TOMBSTONE_RETENTION: Final = timedelta(days=1)
_DUPLICATE_KEY: Final = 11000
# Authentication failed, unauthorised: wrong until someone fixes the credentials or roles.
_REFUSED_CODES: Final = frozenset({13, 18})

P = ParamSpec("P")
R = TypeVar("R")


def translate(error: PyMongoError) -> StoreError:
    """The driver's exception as the project's error: refused (permanent) or unavailable (temporary)."""
    text = redact(str(error).splitlines()[0] if str(error) else "")[:300]
    message = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if isinstance(error, MongoConfigurationError) or (
        isinstance(error, OperationFailure) and error.code in _REFUSED_CODES
    ):
        return StoreRefused(message)
    return StoreUnavailable(message)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except PyMongoError as error:
        raise translate(error) from error


def _store_boundary(
    method: Callable[Concatenate[UserStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[UserStore, P], Coroutine[Any, Any, R]]:
    """PyMongo's exceptions never leave the store: they become `StoreUnavailable` or `StoreRefused`."""

    @functools.wraps(method)
    async def wrapper(self: UserStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with _translated():
            return await method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True, slots=True)
class SweepState:
    """Where the event-store sweep is: every stored event before `watermark_ms` (epoch ms) was applied;
    `handled` holds id -> time of the events near the watermark already applied (reads overlap it)."""

    watermark_ms: int
    handled: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LeaseTaken:
    """A lease taken or renewed; `expired_holder`: the holder whose lease had expired (it stopped renewing
    without releasing it: killed, or stalled), when this take replaced one."""

    expired_holder: str | None = None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One full reconcile run as recorded in `reconcile_runs`."""

    run_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: Outcome
    holder: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None


def _aware(value: Any) -> Any:
    """Datetimes read from a client built without tz_aware come back naive; they are UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class UserStore:
    """Users, leases and run records in one MongoDB database."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        users_collection: str = "users",
        *,
        owns_client: bool = False,
        scan_timeout_s: float | None = None,
    ) -> None:
        self._client = client
        self._scan_timeout_s = scan_timeout_s  # None: the client's socket timeout
        self._owns_client = owns_client
        db = client[database]
        self.users: AsyncCollection[Document] = db[users_collection]
        self.leases: AsyncCollection[Document] = db[LEASES_COLLECTION]
        self.runs: AsyncCollection[Document] = db[RUNS_COLLECTION]
        self.tombstones: AsyncCollection[Document] = db[TOMBSTONES_COLLECTION]
        self.sweep: AsyncCollection[Document] = db[SWEEP_COLLECTION]

    @classmethod
    def from_settings(cls, settings: Settings) -> UserStore:
        """A store with its own client (closed by `close()`); connecting happens lazily on first use."""
        timeout_ms = int(settings.mongodb_timeout_s * 1000)
        client: AsyncMongoClient[Document] = AsyncMongoClient(
            settings.mongodb_uri.get_secret_value(),
            tz_aware=True,
            appname="keycloak-user-reconciler",
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
        )
        return cls(
            client,
            settings.mongodb_database,
            settings.mongodb_users_collection,
            owns_client=True,
            scan_timeout_s=settings.mongodb_scan_timeout_s,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    @_store_boundary
    async def ping(self) -> None:
        """Raise `StoreUnavailable` or `StoreRefused` unless the server answers (readiness, CLI start)."""
        await self.users.database.command("ping")

    @_store_boundary
    async def ensure_indexes(self) -> None:
        """Create the indexes every query here relies on (idempotent)."""
        await self.users.create_index([(F.EXTERNAL_ID, ASCENDING)], unique=True, name="external_id_unique")
        await self.users.create_index([(F.IS_ACTIVE, ASCENDING)], name="is_active")
        # The members of an organization (ORGANIZATIONS_ENABLED): its rename or deletion hints each of them.
        await self.users.create_index([(f"{F.ORGANIZATIONS}.id", ASCENDING)], name="organization_ids")
        await self.runs.create_index(
            [("outcome", ASCENDING), ("started_at", DESCENDING)], name="outcome_started"
        )
        await self.runs.create_index([("started_at", DESCENDING)], name="started_at")
        # Leases are addressed by `_id` (the lease name) only; the default `_id` index is all they need.
        await self.tombstones.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expiry")

    # --- tombstones -----------------------------------------------------------------------------------------
    # "Keycloak said 404 at t" for users that had no document: no user document is created for them, so
    # without this an older observation of the user applied later would create it active (invariant 1, docs/ARCHITECTURE.md).

    @_store_boundary
    async def record_tombstones(self, deaths: Sequence[tuple[str, datetime]]) -> None:
        """Remember (external_id, observed_at) of 404s that found no document; a newer one is kept."""
        if not deaths:
            return
        ops = [
            UpdateOne(
                {"_id": external_id, "observed_at": {"$not": {"$gte": at}}},
                {"$set": {"observed_at": at, "expires_at": at + TOMBSTONE_RETENTION}},
                upsert=True,
            )
            for external_id, at in deaths
        ]
        try:
            await self.tombstones.bulk_write(ops, ordered=False)
        except BulkWriteError as error:
            # A duplicate key means a newer tombstone is there already: nothing to do for that one.
            others = [e for e in error.details.get("writeErrors", []) if e.get("code") != _DUPLICATE_KEY]
            if others:
                raise StoreUnavailable(
                    f"tombstone write failed: {others[0].get('errmsg', '')[:200]}"
                ) from error

    @_store_boundary
    async def find_tombstones(self, external_ids: Iterable[str]) -> dict[str, datetime]:
        """external_id -> observed_at of the 404, for those of `external_ids` that have a tombstone."""
        ids = list(dict.fromkeys(external_ids))
        if not ids:
            return {}
        cursor = self.tombstones.find({"_id": {"$in": ids}}, {"observed_at": 1})
        return {doc["_id"]: _aware(doc["observed_at"]) async for doc in cursor}

    # --- users ----------------------------------------------------------------------------------------------

    @_store_boundary
    async def find_by_external_ids(
        self, external_ids: Iterable[str], projection: Sequence[str]
    ) -> dict[str, Document]:
        """These fields (the apply core's: `AttributeMap.compared_projection`) of the documents of these
        Keycloak ids (one query), keyed by external_id; missing ids are absent."""
        ids = list(dict.fromkeys(external_ids))
        if not ids:
            return {}
        found: dict[str, Document] = {}
        cursor = self.users.find({F.EXTERNAL_ID: {"$in": ids}}, {name: 1 for name in projection})
        async for doc in cursor:
            found[doc[F.EXTERNAL_ID]] = {key: _aware(value) for key, value in doc.items()}
        return found

    async def last_observed(self, external_ids: Iterable[str]) -> dict[str, datetime]:
        """external_id -> the latest Keycloak read the store holds of it: its document's `observed_at`, else
        its tombstone's (ids the store never saw are absent)."""
        ids = list(dict.fromkeys(external_ids))
        seen: dict[str, datetime] = {}
        for user_id, doc in (await self.find_by_external_ids(ids, (F.EXTERNAL_ID, F.OBSERVED_AT))).items():
            if isinstance(doc.get(F.OBSERVED_AT), datetime):
                seen[user_id] = doc[F.OBSERVED_AT]
        seen.update(await self.find_tombstones(i for i in ids if i not in seen))
        return seen

    @_store_boundary
    async def get_user(self, external_id: str) -> Document | None:
        """The whole document of one Keycloak id (tests, verification)."""
        doc = await self.users.find_one({F.EXTERNAL_ID: external_id})
        return None if doc is None else {key: _aware(value) for key, value in doc.items()}

    @_store_boundary
    async def write_users(self, writes: Sequence[UserWrite]) -> tuple[WriteStatus, ...]:
        """Execute guarded writes in one unordered bulk write and report what became of each, in order.

        At most one write per external_id is allowed in a call. A write the guard refused is reported, not
        raised; any other write error raises `StoreUnavailable` (the caller retries: every write is
        idempotent). An insert that found a document (`expect_absent`) is retried as a guarded upsert.
        """
        if not writes:
            return ()
        if len({w.external_id for w in writes}) != len(writes):
            raise ValueError("write_users takes at most one write per external_id")
        with metrics.STORE_WRITE_SECONDS.time():
            try:
                result = await self.users.bulk_write([self._write_op(w) for w in writes], ordered=False)
                details: Mapping[str, Any] = result.bulk_api_result
            except BulkWriteError as error:
                details = error.details
        collided = sorted(
            item["index"]
            for item in details.get("writeErrors", [])
            if item.get("code") == _DUPLICATE_KEY and writes[item["index"]].expect_absent
        )
        statuses = _known_statuses(details, skip=frozenset(collided))
        # Upserts left are ones whose filter matched. Plain writes left matched or missed: the aggregate
        # count tells whether any missed, and only then a read tells which.
        matched_upserts = 0
        for index, write in enumerate(writes):
            if index in statuses or index in collided:
                continue
            if write.expect_absent:
                statuses[index] = WriteStatus.INSERTED
            elif write.upsert:
                statuses[index] = WriteStatus.UPDATED
                matched_upserts += 1
        unsure = [i for i in range(len(writes)) if i not in statuses and i not in collided]
        if unsure:
            matched_plain = int(details.get("nMatched", 0)) - matched_upserts
            statuses.update(await self._resolve_plain_writes(writes, unsure, matched_plain))
        if collided:
            again = [dataclasses.replace(writes[i], expect_absent=False) for i in collided]
            statuses.update(zip(collided, await self.write_users(again), strict=True))
        return tuple(statuses[i] for i in range(len(writes)))

    async def _resolve_plain_writes(
        self, writes: Sequence[UserWrite], unsure: list[int], matched: int
    ) -> dict[int, WriteStatus]:
        if matched >= len(unsure):
            return dict.fromkeys(unsure, WriteStatus.UPDATED)
        docs = await self.find_by_external_ids(
            [writes[i].external_id for i in unsure], (F.EXTERNAL_ID, F.OBSERVED_AT)
        )
        resolved: dict[int, WriteStatus] = {}
        for index in unsure:
            doc = docs.get(writes[index].external_id)
            ours = doc is not None and doc.get(F.OBSERVED_AT) == writes[index].observed_at
            resolved[index] = WriteStatus.UPDATED if ours else WriteStatus.STALE
        return resolved

    @classmethod
    def _write_op(cls, write: UserWrite) -> InsertOne[Document] | UpdateOne:
        if not write.expect_absent or write.insert_fields is None:
            return cls._update_op(write)
        document: Document = {**write.insert_fields, **write.set_fields, F.OBSERVED_AT: write.observed_at}
        for name in write.unset_fields:
            document.pop(name, None)
        document[F.EXTERNAL_ID] = write.external_id
        document[F.ID] = str(uuid.uuid4())
        return InsertOne(document)

    @staticmethod
    def _update_op(write: UserWrite) -> UpdateOne:
        # "observed before this write, or never": `$not` also matches a document without the field. Not an
        # `$or` of the two cases: SecantusDB (tests, local stack) then ignores the external_id index and scans
        # the collection for every write (a 10,000-user cold reconcile took minutes instead of seconds).
        guard: Document = {
            F.EXTERNAL_ID: write.external_id,
            F.OBSERVED_AT: {"$not": {"$gte": write.observed_at}},
        }
        if write.unless_erased:
            guard[F.ERASED_AT] = None  # missing (or null): an erasure since the read wins
        update: Document = {"$set": {**write.set_fields, F.OBSERVED_AT: write.observed_at}}
        if write.unset_fields:
            update["$unset"] = dict.fromkeys(write.unset_fields, "")
        if write.insert_fields is not None:
            update["$setOnInsert"] = {**write.insert_fields, F.ID: str(uuid.uuid4())}
        return UpdateOne(guard, update, upsert=write.upsert)

    async def scan_users(self, fields: Sequence[str], batch_size: int = 1000) -> AsyncIterator[Document]:
        """Stream these fields of every user document: one collection scan, `batch_size` at a time. Each
        batch may take `scan_timeout_s` (pymongo's timeout replaces the socket timeout for the fetch)."""
        projection = {name: 1 for name in fields} | {F.ID: 0}
        with _translated():
            cursor = self.users.find({}, projection, batch_size=batch_size)
            while True:
                with pymongo.timeout(self._scan_timeout_s):
                    try:
                        doc = await anext(cursor)
                    except StopAsyncIteration:
                        break
                yield doc

    # --- erasure --------------------------------------------------------------------------------------------
    # The filters are guards, like `observed_at`: a document reactivated (or no longer deleted) between the
    # decision and the write is not erased.

    @_store_boundary
    async def organization_members(self, organization_id: str) -> list[str]:
        """external_ids of the documents whose `organizations` hold this organization id (also after
        Keycloak deleted the organization: the store still remembers who was in it), except users deleted in
        Keycloak (their documents keep the memberships they had, and a read would only find them gone
        again)."""
        cursor = self.users.find(
            {
                f"{F.ORGANIZATIONS}.id": organization_id,
                F.DEACTIVATION_REASON: {"$ne": DeactivationReason.DELETED.value},
            },
            {F.EXTERNAL_ID: 1, F.ID: 0},
        )
        return [str(doc[F.EXTERNAL_ID]) async for doc in cursor]

    @_store_boundary
    async def due_erasures(self, deleted_before: datetime, limit: int) -> list[str]:
        """external_ids of documents deactivated as deleted in Keycloak at or before `deleted_before` and not
        erased yet (at most `limit`)."""
        cursor = self.users.find(
            {**_deleted_since(deleted_before), F.ERASED_AT: None}, {F.EXTERNAL_ID: 1, F.ID: 0}, limit=limit
        )
        return [str(doc[F.EXTERNAL_ID]) async for doc in cursor]

    @_store_boundary
    async def erase_user(
        self,
        external_id: str,
        erased_at: datetime,
        personal_fields: Sequence[str],
        *,
        deleted_before: datetime | None = None,
    ) -> str | None:
        """Remove the personal fields (`AttributeMap.personal_fields`: the mirrored ones too) of one inactive
        document not erased yet, and mark it `erased_at`.

        With `deleted_before`, only a document still deactivated as deleted in Keycloak since then (a due
        erasure). The `_id` of the erased document, or None when no document matched (absent, active,
        erased already, or no longer due).
        """
        guard: Document = {F.EXTERNAL_ID: external_id, F.IS_ACTIVE: False, F.ERASED_AT: None}
        if deleted_before is not None:
            guard.update(_deleted_since(deleted_before))
        doc = await self.users.find_one_and_update(
            guard,
            {
                "$unset": dict.fromkeys(personal_fields, ""),
                "$set": {F.ERASED_AT: erased_at, F.UPDATED_AT: erased_at},
            },
            projection={F.ID: 1},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else str(doc[F.ID])

    @_store_boundary
    async def count_active(self) -> int:
        return await self.users.count_documents({F.IS_ACTIVE: True})

    # --- lease ----------------------------------------------------------------------------------------------

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease `name` for `ttl_s` seconds; False while another holder's lease is valid."""
        return await self.take_lease(name, holder, ttl_s) is not None

    @_store_boundary
    async def take_lease(self, name: str, holder: str, ttl_s: float) -> LeaseTaken | None:
        """Take or renew the lease `name` for `ttl_s` seconds; None while another holder's lease is valid.

        A lease is free when it does not exist (released) or has expired, so a crashed holder blocks others
        at most `ttl_s`. Expiry uses this process's clock: keep replica clocks in sync (NTP) and `ttl_s` well
        above the skew. The answer names the holder whose expired lease this one replaced, if any.
        """
        now = utc_now()
        try:
            before = await self.leases.find_one_and_update(
                {"_id": name, "$or": [{"expires_at": {"$lte": now}}, {"holder": holder}]},
                {"$set": {"holder": holder, "expires_at": now + timedelta(seconds=ttl_s), "renewed_at": now}},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:
            return None  # the lease exists, unexpired, held by someone else
        if before is None or before.get("holder") == holder:
            return LeaseTaken()  # free (never held or released), or renewed
        return LeaseTaken(expired_holder=str(before.get("holder")))

    @_store_boundary
    async def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease up if `holder` still holds it; True when it did."""
        result = await self.leases.delete_one({"_id": name, "holder": holder})
        return result.deleted_count == 1

    @_store_boundary
    async def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        """Who holds the lease and until when (None when free or expired)."""
        doc = await self.leases.find_one({"_id": name})
        if doc is None or _aware(doc["expires_at"]) <= utc_now():
            return None
        return str(doc["holder"]), _aware(doc["expires_at"])

    # --- event-store sweep ----------------------------------------------------------------------------------

    @_store_boundary
    async def sweep_state(self, name: str) -> SweepState | None:
        """The sweeper's watermark and the ids of the events it handled near it."""
        doc = await self.sweep.find_one({"_id": name})
        if doc is None:
            return None
        return SweepState(int(doc["watermark_ms"]), dict(doc.get("handled") or {}))

    @_store_boundary
    async def save_sweep_state(self, name: str, state: SweepState) -> None:
        await self.sweep.replace_one(
            {"_id": name},
            {"watermark_ms": state.watermark_ms, "handled": state.handled, "saved_at": utc_now()},
            upsert=True,
        )

    # --- run records ----------------------------------------------------------------------------------------

    @_store_boundary
    async def start_run(self, run_id: str, started_at: datetime, holder: str | None = None) -> None:
        await self.runs.insert_one(
            {
                "_id": run_id,
                "started_at": started_at,
                "ended_at": None,
                "outcome": Outcome.RUNNING.value,
                "holder": holder,
            }
        )

    @_store_boundary
    async def finish_run(
        self,
        run_id: str,
        ended_at: datetime,
        outcome: Outcome,
        counts: Mapping[str, int],
        error: str | None = None,
    ) -> None:
        await self.runs.update_one(
            {"_id": run_id},
            {
                "$set": {
                    "ended_at": ended_at,
                    "outcome": Outcome(outcome).value,
                    "counts": dict(counts),
                    "error": error,
                }
            },
        )

    @_store_boundary
    async def abandon_runs(self, holder: str, ended_at: datetime, error: str) -> list[str]:
        """Close the records `holder` left `running` (it lost its lease without ending them): outcome
        `abandoned`. Returns their run ids. A holder that was only stalled and ends its run later overwrites
        this with the real outcome (`finish_run`)."""
        running = {"holder": holder, "outcome": Outcome.RUNNING.value}
        ids = [str(doc["_id"]) async for doc in self.runs.find(running, {"_id": 1})]
        if ids:
            await self.runs.update_many(
                {**running, "_id": {"$in": ids}},
                {"$set": {"ended_at": ended_at, "outcome": Outcome.ABANDONED.value, "error": error}},
            )
        return ids

    @_store_boundary
    async def get_run(self, run_id: str) -> RunRecord | None:
        doc = await self.runs.find_one({"_id": run_id})
        return None if doc is None else _run_record(doc)

    @_store_boundary
    async def last_successful_run(self) -> RunRecord | None:
        """The most recently started run that succeeded, by any replica."""
        doc = await self.runs.find_one({"outcome": Outcome.SUCCESS.value}, sort=[("started_at", DESCENDING)])
        return None if doc is None else _run_record(doc)


def _deleted_since(deleted_before: datetime) -> Document:
    return {
        F.IS_ACTIVE: False,
        F.DEACTIVATION_REASON: DeactivationReason.DELETED.value,
        F.DEACTIVATED_AT: {"$lte": deleted_before},
    }


def _known_statuses(details: Mapping[str, Any], skip: frozenset[int] = frozenset()) -> dict[int, WriteStatus]:
    """Statuses the bulk result states outright (refused by the guard, upserted); raises on real errors.
    `skip`: indexes the caller handles itself (inserts that found a document)."""
    statuses: dict[int, WriteStatus] = {}
    other_errors: list[str] = []
    for item in details.get("writeErrors", []):
        if item["index"] in skip:
            continue
        if item.get("code") == _DUPLICATE_KEY:
            statuses[item["index"]] = WriteStatus.STALE
        else:
            other_errors.append(
                f"#{item.get('index')}: code {item.get('code')}: {item.get('errmsg', '')[:200]}"
            )
    if other_errors or details.get("writeConcernErrors"):
        raise StoreUnavailable(
            "user bulk write failed: " + "; ".join(other_errors or ["write concern error"])[:1000]
        )
    for item in details.get("upserted", []):
        statuses[item["index"]] = WriteStatus.INSERTED
    return statuses


def _run_record(doc: Mapping[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=str(doc["_id"]),
        started_at=_aware(doc["started_at"]),
        ended_at=_aware(doc.get("ended_at")),
        outcome=Outcome(str(doc.get("outcome"))),
        holder=doc.get("holder"),
        counts=dict(doc.get("counts") or {}),
        error=doc.get("error"),
    )
