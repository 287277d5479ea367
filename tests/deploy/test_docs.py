"""The configuration reference's settings table is the Settings class, field for field."""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.base.config import Settings
from reconciler.base.settings_doc import BEGIN, END, render_into

# The checkout's root, found by its pyproject.toml so the test does not depend on its own folder's depth.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_the_settings_table_matches_the_settings_class() -> None:
    text = CONFIGURATION.read_text()
    assert render_into(text) == text, "docs/configuration.md settings table is stale: run `make docs`"


def test_every_setting_is_in_the_table_and_nothing_else() -> None:
    table = CONFIGURATION.read_text().split(BEGIN, 1)[1].split(END, 1)[0]
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.MULTILINE))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_every_setting_has_a_description() -> None:
    assert [name for name, field in Settings.model_fields.items() if not field.description] == []
