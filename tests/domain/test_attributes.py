"""MIRRORED_ATTRIBUTES: the parse of the mapping and what it refuses (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.base.config import Settings
from reconciler.domain.attributes import (
    DEFAULT_ATTRIBUTE_MAP,
    DEFAULT_MIRRORED_ATTRIBUTES,
    RESERVED_FIELDS,
    AttributeMap,
)
from reconciler.domain.document import KEPT_ON_ERASURE, PERSONAL_FIELDS, PROFILE_FIELDS, F


def test_the_default_is_todays_picture_to_avatar_url_and_the_settings_default() -> None:
    assert DEFAULT_ATTRIBUTE_MAP.pairs == (("picture", "avatar_url"),)
    assert Settings.model_fields["mirrored_attributes"].default == DEFAULT_MIRRORED_ATTRIBUTES
    assert DEFAULT_ATTRIBUTE_MAP.needs_attributes


def test_pairs_in_order_with_spaces_around_them() -> None:
    mapping = AttributeMap.parse(" picture = avatar_url , department=department,phoneNumber=phone_number,")
    assert mapping.pairs == (
        ("picture", "avatar_url"),
        ("department", "department"),
        ("phoneNumber", "phone_number"),
    )
    assert mapping.attributes == ("picture", "department", "phoneNumber")
    assert str(mapping) == "picture=avatar_url,department=department,phoneNumber=phone_number"
    assert mapping.profile_fields == (*PROFILE_FIELDS, "avatar_url", "department", "phone_number")
    assert mapping.personal_fields == (*PERSONAL_FIELDS, "avatar_url", "department", "phone_number")


@pytest.mark.parametrize("text", ["", "  ", ","])
def test_empty_mirrors_no_attribute(text: str) -> None:
    mapping = AttributeMap.parse(text)
    assert mapping.pairs == () and not mapping.needs_attributes
    assert mapping.profile_fields == PROFILE_FIELDS and mapping.personal_fields == PERSONAL_FIELDS


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("picture", "is not attribute=field"),
        ("picture=avatar_url=x", "is not attribute=field"),
        ("=avatar_url", "the attribute is not a name"),
        ("pic ture=avatar_url", "the attribute is not a name"),
        ("picture=", "the field is not a name"),
        ("picture=avatar.url", "the field is not a name"),
        ("picture=$where", "the field is not a name"),
        ("picture=_id", "the field is not a name"),
        ("picture=1st", "the field is not a name"),
        ('{"picture":"avatar_url"}', "is not attribute=field"),
        ("mail=email", "email is one of the document's own fields"),
        ("department=external_id", "external_id is one of the document's own fields"),
        ("active=is_active", "is_active is one of the document's own fields"),
        ("x=synced_by", "synced_by is one of the document's own fields"),
        ("picture=avatar_url,picture=photo", "attribute 'picture' is mapped twice"),
        ("picture=avatar_url,photo=avatar_url", "field 'avatar_url' is the target of two attributes"),
    ],
)
def test_malformed_mappings_are_refused_with_one_line(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        AttributeMap.parse(text)
    message = str(refused.value)
    assert reason in message and "\n" not in message


def test_every_field_of_the_document_itself_is_reserved() -> None:
    own = {value for key, value in vars(F).items() if key.isupper()}
    assert own == RESERVED_FIELDS
    assert set(PERSONAL_FIELDS) | set(KEPT_ON_ERASURE) <= RESERVED_FIELDS
    assert "avatar_url" not in RESERVED_FIELDS  # a mirrored field (the default mapping's), not the document's


names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda n: n not in RESERVED_FIELDS)


@given(st.dictionaries(names, names, max_size=5))
def test_a_mapping_reads_back_from_its_text(mapping: dict[str, str]) -> None:
    pairs = tuple(mapping.items())
    if len(set(mapping.values())) < len(pairs):
        with pytest.raises(ValueError, match="target of two attributes"):
            AttributeMap.parse(",".join(f"{a}={f}" for a, f in pairs))
        return
    parsed = AttributeMap.parse(",".join(f"{a}={f}" for a, f in pairs))
    assert parsed.pairs == pairs
    assert AttributeMap.parse(str(parsed)) == parsed
