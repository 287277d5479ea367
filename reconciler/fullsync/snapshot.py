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

import uuid
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


class StoreSnapshot:
    """Prints of the stored users (16-byte key -> 64-bit print), taken by `read` before the listing; empty
    (every page read by id) when it is not read. `mirrored`: the attributes the prints cover."""

    def __init__(self, mirrored: AttributeMap) -> None:
        self._prints: dict[bytes, int] = {}
        self._mirrored = mirrored
        self.fields: Final = scanned_fields(mirrored)

    async def read(self, store: UserStore) -> None:
        """Take the prints of every stored user (one scan)."""
        async for doc in store.scan_users(self.fields):
            key, printed = user_key(doc.get(F.EXTERNAL_ID)), profile_print(doc, self._mirrored)
            if key is not None and printed is not None:
                self._prints[key] = printed

    def __len__(self) -> int:
        return len(self._prints)

    def unchanged(self, key: bytes, observation: Observation) -> bool:
        """True when the stored document already says what this listed user implies (no write needed)."""
        stored = self._prints.get(key)
        mirrored = self._mirrored
        return stored is not None and stored == profile_print(
            desired_document(observation, mirrored), mirrored
        )

    def forget(self, key: bytes) -> None:
        """This user is applied the usual way (or left alone): the closing scan need not compare it."""
        self._prints.pop(key, None)

    def changed(self, key: bytes, doc: Mapping[str, Any]) -> bool:
        """Closing scan: True when the snapshot holds this user and its document changed since. Each user is
        compared once; what is left afterwards (`unvisited`) vanished from the store meanwhile."""
        stored = self._prints.pop(key, None)
        return stored is not None and stored != profile_print(doc, self._mirrored)

    def unvisited(self) -> Iterator[bytes]:
        return iter(self._prints)
