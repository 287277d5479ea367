"""The apply core and erased documents: a read never brings personal data back unless Keycloak has the
user enabled (docs/ARCHITECTURE.md, "The local user document")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.domain.document import KEPT_ON_ERASURE, PERSONAL_FIELDS, F
from reconciler.domain.models import KeycloakUser, Observation, SyncedBy
from reconciler.domain.plan import Action
from tests.support.plans import MIRRORED, T0, T1, UID, one, stored, stored_after, user, users

PERSONAL = MIRRORED.personal_fields  # the fixed personal fields and the mirrored ones


def erased(u: KeycloakUser | None = None, **overrides: Any) -> dict[str, Any]:
    """The document of `u` deleted in Keycloak at T0, then erased (what `UserStore.erase_user` leaves)."""
    doc = stored(u or user(), is_active=False, deactivation_reason="deleted_in_keycloak", deactivated_at=T0)
    for name in PERSONAL:
        doc.pop(name, None)
    return {**doc, F.ERASED_AT: T0 + timedelta(seconds=0.5), **overrides}


def written_personal(change: Any) -> set[str]:
    if change.write is None:
        return set()
    inserted = change.write.insert_fields or {}
    return (set(change.write.set_fields) | set(inserted)) & set(PERSONAL)


def test_every_document_field_is_either_personal_or_kept_on_erasure() -> None:
    names = {value for key, value in vars(F).items() if key.isupper()}
    assert set(PERSONAL_FIELDS) | set(KEPT_ON_ERASURE) == names
    assert not set(PERSONAL_FIELDS) & set(KEPT_ON_ERASURE)


def test_mirrored_fields_are_personal_and_come_back_only_with_an_enabled_user() -> None:
    assert {"avatar_url", "department"} <= set(PERSONAL) and set(PERSONAL_FIELDS) <= set(PERSONAL)
    u = user(attributes=(("department", "Finance"),))
    doc = erased(u)
    assert "department" not in doc
    assert not written_personal(one(Observation(UID, user(enabled=False, attributes=u.attributes), T1), doc))
    back = one(Observation(UID, u, T1), doc)
    assert back.write is not None and back.write.set_fields["department"] == "Finance"


def test_a_404_against_an_erased_document_changes_nothing_and_touches_only_observed_at() -> None:
    assert one(Observation(UID, None, T1), erased()).action is Action.UNCHANGED
    touch = one(Observation(UID, None, T1), erased(), synced_by=SyncedBy.EVENT, touch_unchanged=True)
    assert touch.write is not None and touch.write.set_fields == {} and not touch.write.upsert


def test_a_disabled_user_keeps_its_erased_document_erased_and_only_the_state_is_written() -> None:
    change = one(Observation(UID, user(enabled=False), T1), erased(), sync_groups_and_roles=True)
    assert change.action is Action.UPDATED  # the reason: deleted -> disabled
    assert change.write is not None and not change.write.upsert
    assert change.write.set_fields[F.DEACTIVATION_REASON] == "disabled_in_keycloak"
    assert not written_personal(change)
    doc = erased(deactivation_reason="disabled_in_keycloak")
    assert one(Observation(UID, user(enabled=False, groups=("g",)), T1), doc).action is Action.UNCHANGED


def test_a_user_enabled_in_keycloak_again_is_mirrored_again_and_no_longer_erased() -> None:
    change = one(Observation(UID, user(), T1), erased())
    assert change.action is Action.REACTIVATED
    assert change.write is not None
    assert change.write.set_fields[F.EMAIL] == "alice@example.test"
    assert F.ERASED_AT in change.write.unset_fields
    assert F.ERASED_AT in change.diff  # the log line names it
    assert not change.write.unless_erased


def test_a_write_of_a_disabled_users_personal_fields_yields_to_an_erasure_since_the_read() -> None:
    change = one(Observation(UID, user(enabled=False, first_name="Al"), T1), stored(user(enabled=False)))
    assert change.write is not None and change.write.unless_erased
    assert F.ERASED_AT in change.write.unset_fields  # personal fields and erased_at never together
    enabled = one(Observation(UID, user(first_name="Al"), T1), stored(user()))
    assert enabled.write is not None and not enabled.write.unless_erased


def test_an_observation_older_than_the_erased_documents_read_is_stale() -> None:
    assert one(Observation(UID, user(), T0 - timedelta(seconds=1)), erased()).action is Action.STALE


@given(
    st.lists(st.one_of(st.none(), users), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_no_observation_but_an_enabled_user_writes_a_personal_field_to_an_erased_document(
    states: list[KeycloakUser | None], touch: bool, access: bool
) -> None:
    """Any sequence of reads (replays, late events, sweeps, changes, reconciles) applied to an erased
    document: personal fields come back only with a read of the user enabled, and then erased_at goes."""
    doc = erased()
    for i, state in enumerate(states):
        obs = Observation(UID, state, T1 + timedelta(seconds=i))
        change = one(obs, doc, synced_by=SyncedBy.EVENT, touch_unchanged=touch, sync_groups_and_roles=access)
        if doc.get(F.ERASED_AT) is not None and (state is None or not state.enabled):
            assert not written_personal(change)
        after = stored_after(doc, change)
        assert after is not None  # never deleted
        doc = after
        has_personal = any(doc.get(name) is not None for name in PERSONAL if name != F.EMAIL_VERIFIED)
        assert not (has_personal and doc.get(F.ERASED_AT) is not None)
    mirrored = any(s is not None and s.enabled for s in states)
    assert (doc.get(F.ERASED_AT) is None) is mirrored
    if not mirrored:
        assert not set(doc) & set(PERSONAL)
