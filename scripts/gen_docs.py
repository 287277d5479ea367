"""Rewrite the configuration reference's settings table from the Settings class (`make docs`)."""

from __future__ import annotations

from pathlib import Path

from reconciler.base.settings_doc import render_into

CONFIGURATION = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

if __name__ == "__main__":
    CONFIGURATION.write_text(render_into(CONFIGURATION.read_text()))
    print(f"updated the settings table in {CONFIGURATION}")
