"""The apply core's test vocabulary, shared by the plan tests: a user, its stored document, one planned
change, and what the store holds after it (the store's semantics, in memory)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from reconciler.domain.attributes import AttributeMap
from reconciler.domain.models import KeycloakUser, Observation, SyncedBy
from reconciler.domain.plan import ApplyPolicy, Change, desired_document, plan

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
NOW = T0 + timedelta(minutes=5)
UID = "0b7f1c2e-8d0e-4c35-9a55-0d7a0a3f6c11"
# The mapping the plan tests apply: the default attribute and a custom one.
MIRRORED = AttributeMap.parse("picture=avatar_url,department=department")


def user(**fields: Any) -> KeycloakUser:
    values: dict[str, Any] = {
        "id": UID,
        "username": "alice",
        "enabled": True,
        "email": "alice@example.test",
        "email_verified": True,
        "first_name": "Alice",
        "last_name": "Liddell",
    }
    values.update(fields)
    return KeycloakUser(**values)


def stored(
    u: KeycloakUser, observed_at: datetime = T0, mirrored: AttributeMap = MIRRORED, **overrides: Any
) -> dict[str, Any]:
    """The document the store would hold after applying `u` observed at `observed_at`."""
    doc = {
        "external_id": u.id,
        "observed_at": observed_at,
        **desired_document(Observation(u.id, u, observed_at), mirrored),
    }
    if doc["is_active"]:
        doc.pop("deactivation_reason")
    else:
        doc["deactivated_at"] = observed_at
    doc.update(overrides)
    return doc


def policy(
    synced_by: SyncedBy = SyncedBy.RECONCILE,
    touch_unchanged: bool = False,
    sync_groups_and_roles: bool = False,
    mirrored: AttributeMap = MIRRORED,
) -> ApplyPolicy:
    return ApplyPolicy(
        synced_by, touch_unchanged=touch_unchanged, sync_access=sync_groups_and_roles, mirrored=mirrored
    )


def one(
    obs: Observation,
    doc: dict[str, Any] | None,
    tombstones: dict[str, datetime] | None = None,
    **policy_fields: Any,
) -> Change:
    planned = plan(
        [obs],
        {obs.user_id: doc} if doc is not None else {},
        policy(**policy_fields),
        now=NOW,
        tombstones=tombstones,
    )
    assert len(planned.changes) == 1
    return planned.changes[0]


names = st.one_of(st.none(), st.text(max_size=12))
users = st.builds(
    KeycloakUser,
    id=st.just(UID),
    username=st.text(min_size=1, max_size=12),
    enabled=st.booleans(),
    email=names,
    email_verified=st.booleans(),
    first_name=names,
    last_name=names,
    attributes=st.builds(
        lambda picture, department: tuple(
            (name, value) for name, value in (("picture", picture), ("department", department)) if value
        ),
        names,
        names,
    ),
)


def stored_after(doc: dict[str, Any] | None, change: Any) -> dict[str, Any] | None:
    """What the store holds after executing `change` on `doc` (the store's semantics, in memory)."""
    if change.write is None:
        return doc
    write = change.write
    if doc is None:
        if not write.upsert:
            return None
        doc = {**write.insert_fields}
    doc = {**doc, **write.set_fields, "observed_at": write.observed_at}
    for name in write.unset_fields:
        doc.pop(name, None)
    return doc
