"""Rewrite the README's configuration table from the Settings class (`make docs`)."""

from __future__ import annotations

from pathlib import Path

from reconciler.base.settings_doc import render_into

README = Path(__file__).resolve().parents[1] / "README.md"

if __name__ == "__main__":
    README.write_text(render_into(README.read_text()))
    print(f"updated the settings table in {README}")
