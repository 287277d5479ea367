"""The full reconcile's snapshot of the store: one print of the profile fields per stored user, read in one
collection scan while the listing's first pages are requested.

A listed user whose stored print equals the print of what Keycloak lists is unchanged, exactly as the apply
core would decide (`plan.profile_print`), so it costs no store read; only the others go through the apply
core, read by id as before. (One difference in the counts only: a matching document stored after the
page's observation is "stale" to the core and "unchanged" here; neither writes.) On SecantusDB a scan reads
a document in about a third of the time of a read by id (BENCHMARKS.md, "Where the time goes").

The store may change while the listing runs (the event path, another replica, the application). So the
closing scan after the listing compares every skipped user's document with its print again: a user whose
document changed or vanished since is read again from Keycloak (GetUser) and applied. A run therefore ends
as if each page's documents had been read when the page was listed, or later.
"""

from __future__ import annotations

import asyncio
import uuid
from array import array
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from typing import Any, Final

from reconciler.clients.store import UserStore
from reconciler.domain.attributes import AttributeMap
from reconciler.domain.document import F
from reconciler.domain.models import Observation
from reconciler.domain.plan import desired_document, profile_print


def scanned_fields(mirrored: AttributeMap) -> tuple[str, ...]:
    """What the snapshot and the closing scan read of each stored user: its id and the printed fields."""
    return (F.EXTERNAL_ID, *mirrored.profile_fields)


def user_key(external_id: object) -> bytes | None:
    """The 16 bytes of a canonical Keycloak id (a compact set member); None for anything else."""
    if not isinstance(external_id, str) or len(external_id) != 36:
        return None
    try:
        parsed = uuid.UUID(external_id)
    except ValueError:
        return None
    return parsed.bytes if str(parsed) == external_id else None


_PENDING: Final = 1  # a print still to compare (neither applied the usual way nor compared at the close)
_LISTED: Final = 2  # the run listed this user


class _Bucket:
    """The snapshot's users whose key starts with one byte, sorted by the key's first 8 bytes: 25 bytes a
    user in arrays, where a dict of bytes to int costs about 130 (the warm run's memory at a million)."""

    __slots__ = ("flags", "high", "low", "prints")

    def __init__(self) -> None:
        self.high = array("Q")
        self.low = array("Q")
        self.prints = array("q")  # hash() is a signed 64-bit value
        self.flags = bytearray()

    def sort(self) -> None:
        order = sorted(range(len(self.high)), key=self.high.__getitem__)
        self.high = array("Q", (self.high[i] for i in order))
        self.low = array("Q", (self.low[i] for i in order))
        self.prints = array("q", (self.prints[i] for i in order))
        self.flags = bytearray(self.flags[i] for i in order)

    def find(self, high: int, low: int) -> int:
        """The user's position, or -1."""
        position = bisect_left(self.high, high)
        while position < len(self.high) and self.high[position] == high:  # 8 shared bytes: rare
            if self.low[position] == low:
                return position
            position += 1
        return -1


class StoreSnapshot:
    """Prints of the stored users (16-byte key -> 64-bit print), taken by `read` before the listing; empty
    (every page read by id) when it is not read. `mirrored`: the attributes the prints cover. It also keeps
    which users the run listed (`mark_listed`, `listed`): a flag for the users it holds, a set for the rest."""

    def __init__(self, mirrored: AttributeMap) -> None:
        self._buckets = [_Bucket() for _ in range(256)]
        self._size = 0
        self._others: set[bytes] = set()  # listed users the snapshot does not hold
        self._mirrored = mirrored
        self._last: tuple[bytes, _Bucket, int] | None = None  # the last lookup: a page asks twice per user
        self.fields: Final = scanned_fields(mirrored)

    async def read(self, store: UserStore) -> None:
        """Take the prints of every stored user (one scan), then order them for lookups."""
        async for doc in store.scan_users(self.fields):
            key, printed = user_key(doc.get(F.EXTERNAL_ID)), profile_print(doc, self._mirrored)
            if key is not None and printed is not None:
                self.add(key, printed)
        for bucket in self._buckets:
            bucket.sort()
            await asyncio.sleep(0)  # the listing's first pages go on meanwhile

    def add(self, key: bytes, printed: int) -> None:
        """One stored user's print (the scan's; `seal` before any lookup)."""
        bucket = self._buckets[key[0]]
        bucket.high.append(int.from_bytes(key[:8]))
        bucket.low.append(int.from_bytes(key[8:]))
        bucket.prints.append(printed)
        bucket.flags.append(_PENDING)
        self._size += 1

    def seal(self) -> None:
        """Order what `add` took (`read` does it itself)."""
        for bucket in self._buckets:
            bucket.sort()

    def __len__(self) -> int:
        return self._size

    def _find(self, key: bytes) -> tuple[_Bucket, int] | None:
        last = self._last
        if last is not None and last[0] == key:
            return last[1], last[2]
        bucket = self._buckets[key[0]]
        position = bucket.find(int.from_bytes(key[:8]), int.from_bytes(key[8:]))
        if position < 0:
            return None
        self._last = (key, bucket, position)
        return bucket, position

    def unchanged(self, key: bytes, observation: Observation) -> bool:
        """True when the stored document already says what this listed user implies (no write needed)."""
        found = self._find(key)
        if found is None or not found[0].flags[found[1]] & _PENDING:
            return False
        mirrored = self._mirrored
        return found[0].prints[found[1]] == profile_print(desired_document(observation, mirrored), mirrored)

    def forget(self, key: bytes) -> None:
        """This user is applied the usual way (or left alone): the closing scan need not compare it."""
        found = self._find(key)
        if found is not None:
            found[0].flags[found[1]] &= ~_PENDING

    def mark_listed(self, key: bytes) -> None:
        found = self._find(key)
        if found is None:
            self._others.add(key)
        else:
            found[0].flags[found[1]] |= _LISTED

    def listed(self, key: bytes) -> bool:
        found = self._find(key)
        return key in self._others if found is None else bool(found[0].flags[found[1]] & _LISTED)

    def changed(self, key: bytes, doc: Mapping[str, Any]) -> bool:
        """Closing scan: True when the snapshot holds this user and its document changed since. Each user is
        compared once; what is left afterwards (`unvisited`) vanished from the store meanwhile."""
        found = self._find(key)
        if found is None or not found[0].flags[found[1]] & _PENDING:
            return False
        bucket, position = found
        bucket.flags[position] &= ~_PENDING
        return bucket.prints[position] != profile_print(doc, self._mirrored)

    def unvisited(self) -> Iterator[bytes]:
        """The users still to compare (none of them was applied, nor found by the closing scan)."""
        for bucket in self._buckets:
            for position, flags in enumerate(bucket.flags):
                if flags & _PENDING:
                    yield bucket.high[position].to_bytes(8) + bucket.low[position].to_bytes(8)
