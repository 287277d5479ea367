"""The store snapshot's compact arrays answer like the dict and set they replace (reconciler/fullsync/snapshot.py):
the same users unchanged, forgotten, listed, changed and unvisited, whatever the keys share."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.domain.attributes import AttributeMap
from reconciler.domain.models import KeycloakUser, Observation
from reconciler.domain.plan import desired_document, profile_print
from reconciler.fullsync.snapshot import StoreSnapshot, user_key

MIRRORED = AttributeMap.parse("picture=avatar_url")
WHEN = datetime(2026, 12, 5, tzinfo=UTC)

# Keys that share their first byte, or their first 8 bytes (the arrays' sort key), with others.
prefixes = st.sampled_from([b"\x00" * 8, b"\x00" * 7 + b"\x01", b"\xff" * 8, b"\x7f" + b"\x00" * 7])
keys = st.one_of(
    st.binary(min_size=16, max_size=16),
    st.builds(lambda prefix, rest: prefix + rest, prefixes, st.binary(min_size=8, max_size=8)),
)


def _observation(key: bytes, name: str) -> Observation:
    user_id = str(uuid.UUID(bytes=key))
    user = KeycloakUser(id=user_id, username=f"u-{name}", enabled=True, first_name=name)
    return Observation(user_id, user, WHEN)


def _print_of(key: bytes, name: str) -> int:
    printed = profile_print(desired_document(_observation(key, name), MIRRORED), MIRRORED)
    assert printed is not None
    return printed


@settings(max_examples=200, deadline=None)
@given(
    stored=st.dictionaries(keys, st.sampled_from(["ann", "bob", "cy"]), max_size=60),
    listed=st.lists(st.tuples(keys, st.sampled_from(["ann", "bob", "cy"])), max_size=60),
    scanned=st.dictionaries(keys, st.sampled_from(["ann", "bob", "cy"]), max_size=60),
)
def test_the_arrays_answer_like_a_dict_and_a_set(
    stored: dict[bytes, str], listed: list[tuple[bytes, str]], scanned: dict[bytes, str]
) -> None:
    snapshot = StoreSnapshot(MIRRORED)
    for key, name in stored.items():
        snapshot.add(key, _print_of(key, name))
    snapshot.seal()
    prints = {key: _print_of(key, name) for key, name in stored.items()}  # the model: pending prints
    seen: set[bytes] = set()
    assert len(snapshot) == len(stored)

    for key, name in listed:  # the listing: unchanged, or applied the usual way (forgotten)
        observation = _observation(key, name)
        expected = key in prints and prints[key] == _print_of(key, name)
        assert snapshot.unchanged(key, observation) is expected
        if not expected:
            snapshot.forget(key)
            prints.pop(key, None)
        snapshot.mark_listed(key)
        seen.add(key)

    for key in {*stored, *scanned, *(k for k, _ in listed)}:
        assert snapshot.listed(key) is (key in seen)

    for key, name in scanned.items():  # the closing scan, over what the store holds at the end
        if key in seen:
            doc = desired_document(_observation(key, name), MIRRORED)
            was = prints.pop(key, None)
            assert snapshot.changed(key, doc) is (was is not None and was != profile_print(doc, MIRRORED))
    assert sorted(snapshot.unvisited()) == sorted(prints)


def test_only_canonical_keycloak_ids_have_a_key() -> None:
    user_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert user_key(user_id) == uuid.UUID(user_id).bytes
    assert user_key(user_id.upper()) is None
    assert user_key("not-an-id") is None
    assert user_key(None) is None
