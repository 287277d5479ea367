"""Pure tests of the apply core's decisions: desired_document() and plan(), no I/O."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.apply.applier import ObservationClock
from reconciler.domain.attributes import DEFAULT_ATTRIBUTE_MAP, AttributeMap
from reconciler.domain.document import PROFILE_FIELDS
from reconciler.domain.models import (
    KeycloakUser,
    MembershipType,
    Observation,
    OrganizationMembership,
    SyncedBy,
)
from reconciler.domain.plan import (
    Action,
    desired_document,
    display_name,
    plan,
    profile_print,
)
from reconciler.fullsync.reconcile import mass_deactivation_limit
from tests.support.plans import MIRRORED, NOW, T0, T1, UID, one, policy, stored, stored_after, user, users

# --- desired_document --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("Alice", "Liddell", "Alice Liddell"),
        ("  Alice ", " Liddell  ", "Alice Liddell"),
        ("Alice", None, "Alice"),
        (None, "Liddell", "Liddell"),
        ("", "Liddell", "Liddell"),
        (None, None, "alice"),
        ("", "", "alice"),
        ("   ", "\t", "alice"),
    ],
)
def test_display_name_rules(first: str | None, last: str | None, expected: str) -> None:
    assert display_name(first, last, "alice") == expected
    doc = desired_document(Observation(UID, user(first_name=first, last_name=last), T0), MIRRORED)
    assert doc["display_name"] == expected


def test_desired_document_of_an_enabled_user() -> None:
    picture = (("picture", "https://img.example.test/a.png"),)
    doc = desired_document(Observation(UID, user(attributes=picture), T0), DEFAULT_ATTRIBUTE_MAP)
    assert doc == {
        "username": "alice",
        "email": "alice@example.test",
        "email_verified": True,
        "first_name": "Alice",
        "last_name": "Liddell",
        "display_name": "Alice Liddell",
        "avatar_url": "https://img.example.test/a.png",
        "is_active": True,
        "deactivation_reason": None,
    }


def test_mirrored_attributes_become_their_fields_and_empty_or_absent_ones_null() -> None:
    mapping = AttributeMap.parse("picture=avatar_url,department=department,phoneNumber=phone_number")
    u = user(attributes=(("department", " Finance "), ("phoneNumber", "")))
    doc = desired_document(Observation(UID, u, T0), mapping)
    assert (doc["avatar_url"], doc["department"], doc["phone_number"]) == (None, "Finance", None)
    assert set(doc) == set(mapping.profile_fields)
    nothing = desired_document(Observation(UID, u, T0), AttributeMap.parse(""))
    assert not {"avatar_url", "department", "phone_number"} & set(nothing)
    # The plan compares and writes the mapped fields: a new department is an update of that field alone.
    change = one(Observation(UID, user(attributes=(("department", "Sales"),)), T1), stored(u))
    assert change.action is Action.UPDATED and set(change.diff) == {"department"}
    assert change.write is not None and change.write.set_fields["department"] == "Sales"
    assert one(Observation(UID, u, T1), stored(u)).action is Action.UNCHANGED


def test_desired_document_of_a_disabled_user_and_of_a_missing_one() -> None:
    disabled = desired_document(Observation(UID, user(enabled=False), T0), MIRRORED)
    assert disabled["is_active"] is False
    assert disabled["deactivation_reason"] == "disabled_in_keycloak"
    assert desired_document(Observation(UID, None, T0), MIRRORED) == {
        "is_active": False,
        "deactivation_reason": "deleted_in_keycloak",
    }


def test_empty_strings_are_stored_as_null_and_groups_sorted() -> None:
    doc = desired_document(
        Observation(UID, user(email="", first_name="", groups=("b", "a", "b"), realm_roles=("r2", "r1")), T0),
        MIRRORED,
    )
    assert doc["email"] is None and doc["first_name"] is None
    assert doc["groups"] == ["a", "b"]
    assert doc["realm_roles"] == ["r1", "r2"]


# --- plan ---------------------------------------------------------------------------------------------------


def test_new_enabled_user_is_created_active_with_an_insert_only_id_and_created_at() -> None:
    change = one(Observation(UID, user(), T1), None)
    assert change.action is Action.CREATED
    write = change.write
    assert write.upsert and write.observed_at == T1
    assert write.insert_fields == {"external_id": UID, "created_at": NOW}
    assert write.set_fields["is_active"] is True
    assert write.set_fields["synced_by"] == "reconcile"
    assert write.set_fields["updated_at"] == NOW
    assert "deactivation_reason" not in write.set_fields
    assert "deactivated_at" not in write.set_fields
    assert not set(write.set_fields) & set(write.insert_fields)


def test_new_disabled_user_is_created_inactive() -> None:
    change = one(Observation(UID, user(enabled=False), T1), None)
    assert change.action is Action.CREATED
    assert change.write.set_fields["is_active"] is False
    assert change.write.set_fields["deactivation_reason"] == "disabled_in_keycloak"
    assert change.write.set_fields["deactivated_at"] == NOW


def test_unknown_user_not_found_changes_nothing() -> None:
    change = one(Observation(UID, None, T1), None)
    assert change.action is Action.UNCHANGED
    assert change.write is None


def test_unchanged_user_is_not_written() -> None:
    u = user()
    change = one(Observation(UID, u, T1), stored(u))
    assert change.action is Action.UNCHANGED
    assert change.write is None


def test_profile_change_updates_every_mirrored_field_and_reports_the_diff() -> None:
    old = user()
    new = user(username="alice2", email="a2@example.test", last_name="Smith")
    change = one(Observation(UID, new, T1), stored(old))
    assert change.action is Action.UPDATED
    assert change.diff == {
        "username": ("alice", "alice2"),
        "email": ("alice@example.test", "a2@example.test"),
        "last_name": ("Liddell", "Smith"),
        "display_name": ("Alice Liddell", "Alice Smith"),
    }
    assert change.write.set_fields["username"] == "alice2"
    assert change.write.set_fields["first_name"] == "Alice"  # whole desired state, not only the diff
    assert change.write.upsert  # a document that vanished meanwhile is recreated whole


def test_disabled_user_is_deactivated() -> None:
    change = one(Observation(UID, user(enabled=False), T1), stored(user()))
    assert change.action is Action.DEACTIVATED
    fields = change.write.set_fields
    assert fields["is_active"] is False
    assert fields["deactivation_reason"] == "disabled_in_keycloak"
    assert fields["deactivated_at"] == NOW


def test_deleted_user_is_deactivated_without_upsert() -> None:
    change = one(Observation(UID, None, T1), stored(user()))
    assert change.action is Action.DEACTIVATED
    assert not change.write.upsert  # never creates a document for a user Keycloak does not have
    assert change.write.set_fields["deactivation_reason"] == "deleted_in_keycloak"
    assert change.write.set_fields["deactivated_at"] == NOW
    assert "username" not in change.write.set_fields  # the profile is kept as it was


def test_already_deleted_user_stays_unchanged_and_disabled_then_deleted_gets_the_new_reason() -> None:
    gone = stored(user(), is_active=False, deactivation_reason="deleted_in_keycloak", deactivated_at=T0)
    assert one(Observation(UID, None, T1), gone).action is Action.UNCHANGED
    disabled = stored(user(enabled=False))
    change = one(Observation(UID, None, T1), disabled)
    assert change.action is Action.UPDATED
    assert change.write.set_fields["deactivation_reason"] == "deleted_in_keycloak"
    assert "deactivated_at" not in change.write.set_fields  # the original deactivation time stays


def test_re_enabled_user_is_reactivated_and_deactivation_fields_removed() -> None:
    doc = stored(user(enabled=False))
    change = one(Observation(UID, user(), T1), doc)
    assert change.action is Action.REACTIVATED
    assert change.write.set_fields["is_active"] is True
    assert set(change.write.unset_fields) == {"deactivated_at", "deactivation_reason", "erased_at"}
    assert not set(change.write.unset_fields) & set(change.write.set_fields)


def test_user_deleted_then_reappearing_is_reactivated() -> None:
    doc = stored(user(), is_active=False, deactivation_reason="deleted_in_keycloak", deactivated_at=T0)
    assert one(Observation(UID, user(), T1), doc).action is Action.REACTIVATED


def test_disabled_user_with_a_profile_change_stays_inactive_and_keeps_deactivated_at() -> None:
    doc = stored(user(enabled=False))
    change = one(Observation(UID, user(enabled=False, first_name="Al"), T1), doc)
    assert change.action is Action.UPDATED
    assert "deactivated_at" not in change.write.set_fields
    assert change.write.insert_fields["deactivated_at"] == NOW


@pytest.mark.parametrize("observed_at", [T0, T0 - timedelta(seconds=1)])
def test_observation_not_newer_than_the_document_is_stale(observed_at: datetime) -> None:
    doc = stored(user(), observed_at=T0)
    change = one(Observation(UID, user(first_name="Older"), observed_at), doc)
    assert change.action is Action.STALE
    assert change.write is None


def test_legacy_document_without_observed_at_or_is_active_is_brought_up_to_date() -> None:
    doc = {"external_id": UID, "username": "alice", "email": "alice@example.test"}
    change = one(Observation(UID, user(), T1), doc)
    assert change.action is Action.UPDATED
    assert change.diff["is_active"] == (None, True)
    assert one(Observation(UID, None, T1), doc).action is Action.DEACTIVATED


def test_groups_and_roles_are_compared_only_when_synced() -> None:
    u = user(groups=("staff",), realm_roles=("admin",))
    doc = stored(user())  # no groups stored yet
    assert one(Observation(UID, u, T1), doc).action is Action.UNCHANGED
    change = one(Observation(UID, u, T1), doc, sync_groups_and_roles=True)
    assert change.action is Action.UPDATED
    assert change.write.set_fields["groups"] == ["staff"]
    assert change.write.set_fields["realm_roles"] == ["admin"]
    synced = stored(u)
    assert (
        one(
            Observation(UID, user(groups=("staff",), realm_roles=("admin",)), T1),
            synced,
            sync_groups_and_roles=True,
        ).action
        is Action.UNCHANGED
    )


def test_several_observations_of_one_user_collapse_into_the_latest() -> None:
    changes = plan(
        [Observation(UID, user(first_name="New"), T1), Observation(UID, None, T0)],
        {UID: stored(user())},
        policy(SyncedBy.EVENT),
        now=NOW,
    ).changes
    assert [c.action for c in changes] == [Action.UPDATED]
    assert changes[0].write.set_fields["first_name"] == "New"
    assert changes[0].write.set_fields["synced_by"] == "event"


# --- properties ---------------------------------------------------------------------------------------------


@given(first=st.one_of(st.none(), users), second=st.one_of(st.none(), users))
def test_applying_twice_converges_and_the_second_apply_is_a_no_op(
    first: KeycloakUser | None, second: KeycloakUser | None
) -> None:
    doc = stored_after(None, one(Observation(UID, first, T0), None))
    doc = stored_after(doc, one(Observation(UID, second, T1), doc))
    again = one(Observation(UID, second, T1 + timedelta(seconds=1)), doc)
    assert again.action is Action.UNCHANGED
    if second is None:
        assert doc is None or doc["is_active"] is False
    else:
        assert doc is not None
        assert doc["is_active"] is second.enabled
        assert doc["username"] == second.username
        assert ("deactivated_at" in doc) is (not second.enabled)


@given(st.lists(st.one_of(st.none(), users), min_size=1, max_size=5), st.permutations(range(5)))
def test_any_order_of_observations_converges_to_the_latest(
    states: list[KeycloakUser | None], order: list[int]
) -> None:
    """Invariant 1: applied in any order, the guarded writes leave the latest observation's state.

    A not-found that meets no document leaves a tombstone (as the Applier records it), so an older found
    observation applied afterwards is stale instead of creating the user.
    """
    observations = [Observation(UID, state, T0 + timedelta(seconds=i)) for i, state in enumerate(states)]
    shuffled = [observations[i] for i in order if i < len(observations)]
    doc: dict[str, Any] | None = None
    died_at: datetime | None = None
    for obs in shuffled:
        tombstones = {UID: died_at} if died_at is not None else {}
        doc = stored_after(
            doc, one(obs, doc, synced_by=SyncedBy.EVENT, touch_unchanged=True, tombstones=tombstones)
        )
        if obs.user is None and doc is None:
            died_at = obs.observed_at if died_at is None else max(died_at, obs.observed_at)
    latest = observations[-1]
    if latest.user is None:
        assert doc is None or doc["is_active"] is False
        return
    assert doc is not None
    assert doc["observed_at"] == latest.observed_at
    wanted = desired_document(latest, MIRRORED)
    assert {k: doc.get(k) for k in wanted} == wanted | (
        {"deactivation_reason": None} if latest.user.enabled else {}
    )


def test_event_path_records_observed_at_of_an_unchanged_user_and_the_reconcile_does_not() -> None:
    u = user()
    touch = one(Observation(UID, u, T1), stored(u), synced_by=SyncedBy.EVENT, touch_unchanged=True)
    assert touch.action is Action.UNCHANGED
    assert touch.write is not None and touch.write.set_fields == {} and not touch.write.upsert
    assert touch.write.observed_at == T1
    assert one(Observation(UID, u, T1), stored(u)).write is None
    # Not found and no document: still nothing to touch.
    assert one(Observation(UID, None, T1), None, touch_unchanged=True).write is None


def test_an_older_observation_after_a_tombstone_is_stale_and_a_newer_one_creates() -> None:
    doc = stored_after(None, one(Observation(UID, None, T1), None))
    assert doc is None  # no document for a user Keycloak does not have; the Applier records a tombstone
    assert one(Observation(UID, user(), T0), None, tombstones={UID: T1}).action is Action.STALE
    assert one(Observation(UID, user(), T1 + timedelta(seconds=1)), None, tombstones={UID: T1}).action is (
        Action.CREATED
    )
    assert one(Observation(UID, user(), T0), None).action is Action.CREATED  # without the tombstone


def test_observation_clock_is_strictly_increasing_at_millisecond_precision() -> None:
    clock = ObservationClock()
    stamps = [clock() for _ in range(2000)]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert all(s.microsecond % 1000 == 0 and s.tzinfo is not None for s in stamps)


@pytest.mark.parametrize(
    ("candidates", "active", "trips"),
    [
        (0, 0, False),
        (5, 5, False),
        (6, 6, True),
        (10, 100, False),
        (11, 100, True),
        (6, 1000, False),
        (100, 1000, False),
        (101, 1000, True),
    ],
)
def test_mass_deactivation_guard_threshold(candidates: int, active: int, trips: bool) -> None:
    assert (candidates > mass_deactivation_limit(active, 0.10, 5)) is trips
    assert mass_deactivation_limit(1000, 0.10, 5) == 100


def test_ids_are_uuids() -> None:
    assert uuid.UUID(UID)


PROFILE = ("username", "enabled", "email", "email_verified", "first_name", "last_name", "attributes")


@given(
    listed=users,
    other=users,
    taken=st.sets(st.sampled_from(PROFILE), max_size=2),
    deactivated_earlier=st.booleans(),
    stored_later=st.booleans(),
)
def test_a_stored_print_equal_to_the_listed_one_is_exactly_an_unchanged_decision(
    listed: KeycloakUser, other: KeycloakUser, taken: set[str], deactivated_earlier: bool, stored_later: bool
) -> None:
    """The full reconcile's snapshot skips a listed user when the prints agree (reconciler/fullsync/snapshot.py): that
    must be what the apply core decides, for any stored state, both ways. The stored state is the listed
    user with up to two fields taken from another one. A document stored after the listing's observation
    is stale to the core whatever it says (no write either); the snapshot counts it unchanged."""
    stored_as = dataclasses.replace(listed, **{name: getattr(other, name) for name in taken})
    doc = stored(stored_as, observed_at=T1 + timedelta(seconds=1) if stored_later else T0)
    if deactivated_earlier and not stored_as.enabled:
        doc["deactivation_reason"] = "deleted_in_keycloak"
    observation = Observation(UID, listed, T1)
    same_print = profile_print(doc, MIRRORED) == profile_print(
        desired_document(observation, MIRRORED), MIRRORED
    )
    decided = one(observation, doc)
    if stored_later:
        assert decided.action is Action.STALE and decided.write is None
    else:
        assert same_print is (decided.action is Action.UNCHANGED)
        assert same_print is (decided.write is None)


def test_the_print_covers_every_field_the_core_compares_and_ignores_unhashable_documents() -> None:
    assert set(desired_document(Observation(UID, user(), T0), MIRRORED)) == set(MIRRORED.profile_fields)
    assert set(MIRRORED.profile_fields) == {*PROFILE_FIELDS, "avatar_url", "department"}
    assert profile_print({**stored(user()), "first_name": ["not", "a", "name"]}, MIRRORED) is None


# --- organization memberships (ORGANIZATIONS_ENABLED) --------------------------------------------------------

ORG_A = OrganizationMembership("1a000000-0000-4000-8000-000000000000", "acme", "Acme", MembershipType.MANAGED)
ORG_B = OrganizationMembership("0b000000-0000-4000-8000-000000000000", None, "Beta", MembershipType.UNMANAGED)


def test_organizations_are_stored_sorted_by_id_and_only_when_fetched() -> None:
    doc = desired_document(Observation(UID, user(organizations=(ORG_A, ORG_B, ORG_A)), T0), MIRRORED)
    assert doc["organizations"] == [
        {"id": ORG_B.id, "alias": None, "name": "Beta", "membership_type": "UNMANAGED"},
        {"id": ORG_A.id, "alias": "acme", "name": "Acme", "membership_type": "MANAGED"},
    ]
    assert "organizations" not in desired_document(Observation(UID, user(), T0), MIRRORED)
    assert desired_document(Observation(UID, user(organizations=()), T0), MIRRORED)["organizations"] == []


def test_an_organization_joined_renamed_or_left_updates_the_document() -> None:
    doc = stored(user(organizations=()))
    joined = one(Observation(UID, user(organizations=(ORG_A,)), T1), doc)
    assert joined.action is Action.UPDATED
    assert list(joined.diff) == ["organizations"]
    member = stored(user(organizations=(ORG_A,)))
    renamed = dataclasses.replace(ORG_A, name="Acme Renamed")
    change = one(Observation(UID, user(organizations=(renamed,)), T1), member)
    assert change.action is Action.UPDATED
    assert change.write.set_fields["organizations"][0]["name"] == "Acme Renamed"
    left = one(Observation(UID, user(organizations=()), T1), member)
    assert left.write.set_fields["organizations"] == []
    assert one(Observation(UID, user(organizations=(ORG_A,)), T1), member).action is Action.UNCHANGED


def test_a_read_without_organizations_leaves_the_stored_memberships_alone() -> None:
    """Setting off: the field is neither compared nor written."""
    member = stored(user(organizations=(ORG_A,)))
    assert one(Observation(UID, user(), T1), member).action is Action.UNCHANGED
    change = one(Observation(UID, user(first_name="New"), T1), member)
    assert "organizations" not in change.write.set_fields


def test_a_deleted_member_keeps_its_memberships_until_erased() -> None:
    """A 404 writes only the deactivated state (the store still knows the members of an organization)."""
    member = stored(user(organizations=(ORG_A,)))
    change = one(Observation(UID, None, T1), member)
    assert change.action is Action.DEACTIVATED
    assert "organizations" not in change.write.set_fields
