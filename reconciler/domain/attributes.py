"""Which Keycloak user attributes the store mirrors, and into which document fields (MIRRORED_ATTRIBUTES).

Pure: the mapping is parsed and checked once at start (`AttributeMap.parse`) and handed, as a value, to the
representation's parse (`clients.keycloak`), the apply core (`plan.ApplyPolicy.mirrored`), the full
reconcile's snapshot and listing (brief pages when no attribute is mirrored) and erasure (mirrored fields are
personal data).

The setting's text is `attribute=field` pairs, comma-separated, e.g. `picture=avatar_url,department=department`;
empty: no attribute is mirrored. A multi-valued attribute mirrors its first value; an empty or absent one is
stored as null.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from reconciler.domain.document import COMPARED_PROJECTION, PERSONAL_FIELDS, PROFILE_FIELDS, F

# Keycloak's user-profile attribute names (letters, digits, `_`, `.`, `-`); document fields are plain names
# (no `$`, no `.` path, no leading `_`, which the store reserves).
_ATTRIBUTE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,99}")
_FIELD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# The document's own fields: a mirrored attribute never overwrites one.
RESERVED_FIELDS: Final[frozenset[str]] = frozenset(
    value for name, value in vars(F).items() if not name.startswith("_") and isinstance(value, str)
)
DEFAULT_MIRRORED_ATTRIBUTES: Final = "picture=avatar_url"


@dataclass(frozen=True, slots=True)
class AttributeMap:
    """(Keycloak attribute, document field) pairs, in the setting's order; attributes and fields distinct."""

    pairs: tuple[tuple[str, str], ...] = ()

    @staticmethod
    @functools.cache
    def parse(text: str) -> AttributeMap:
        """The mapping the setting's text says; ValueError with a one-line reason when it is malformed."""
        pairs: list[tuple[str, str]] = []
        for item in (part.strip() for part in text.split(",")):
            if item:
                pairs.append(_pair(item))
        attributes, fields = [a for a, _ in pairs], [f for _, f in pairs]
        for name in attributes:
            if attributes.count(name) > 1:
                raise ValueError(f"attribute '{name}' is mapped twice")
        for name in fields:
            if fields.count(name) > 1:
                raise ValueError(f"field '{name}' is the target of two attributes")
        return AttributeMap(tuple(pairs))

    def __str__(self) -> str:
        return ",".join(f"{attribute}={field}" for attribute, field in self.pairs)

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(attribute for attribute, _ in self.pairs)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(field for _, field in self.pairs)

    @property
    def needs_attributes(self) -> bool:
        """True when a listing must carry attributes (full representations); False: brief pages suffice."""
        return bool(self.pairs)

    @property
    def profile_fields(self) -> tuple[str, ...]:
        """What `plan.desired_document` yields for a found user (groups and roles not mirrored)."""
        return (*PROFILE_FIELDS, *self.fields)

    @property
    def compared_projection(self) -> tuple[str, ...]:
        """What the apply core reads back to compare."""
        return (*COMPARED_PROJECTION, *self.fields)

    @property
    def personal_fields(self) -> tuple[str, ...]:
        """What erasure removes: the fixed personal fields and every mirrored one."""
        return (*PERSONAL_FIELDS, *self.fields)


def _pair(item: str) -> tuple[str, str]:
    attribute, sep, field = (part.strip() for part in item.partition("="))
    shown = item[:80]
    if not sep or "=" in field:
        raise ValueError(f"'{shown}' is not attribute=field")
    if not _ATTRIBUTE.fullmatch(attribute):
        raise ValueError(f"'{shown}': the attribute is not a name (letters, digits, _ . -)")
    if not _FIELD.fullmatch(field):
        raise ValueError(f"'{shown}': the field is not a name (a letter, then letters, digits, _)")
    if field in RESERVED_FIELDS:
        raise ValueError(f"'{shown}': {field} is one of the document's own fields")
    return attribute, field


# Today's behaviour, and the default of MIRRORED_ATTRIBUTES (held equal to the setting by a test).
DEFAULT_ATTRIBUTE_MAP: Final = AttributeMap.parse(DEFAULT_MIRRORED_ATTRIBUTES)
