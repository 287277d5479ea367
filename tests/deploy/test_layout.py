"""The package's layout as the documents describe it, and the layering contract `make lint` enforces.

- docs/ARCHITECTURE.md's "Where things live" names every module of every subpackage, and nothing else;
- the README's "Code layout" names every subpackage;
- `lint-imports` (import-linter, configured in pyproject.toml) keeps the layers: shown here by a copy of the
  package with one deliberate upward import, which it must refuse.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
PACKAGE = ROOT / "reconciler"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def tree() -> dict[str, set[str]]:
    """Subpackage (or top-level module) -> its modules, as the files say."""
    layout: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            layout[f"{path.name}/"] = {p.stem for p in path.glob("*.py") if p.stem != "__init__"}
        elif path.suffix == ".py" and path.stem not in {"__init__", "__main__"}:
            layout[path.name] = set()
    return layout


def documented() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Where things live", 1)[1]
    layout: dict[str, set[str]] = {}
    for row in re.findall(r"^\| `([a-z_]+/|[a-z_]+\.py)` \|([^|]*)\|", section, flags=re.MULTILINE):
        name, modules = row
        # the modules column: `name` or `name` (`Class`, ...): the first word of each code span outside ()
        outside = re.sub(r"\([^)]*\)", "", modules)
        layout[name] = set(re.findall(r"`([a-z_]+)`", outside))
    return layout


def test_architecture_names_every_module_and_nothing_else() -> None:
    assert documented() == tree()


def test_readme_names_every_subpackage() -> None:
    text = (ROOT / "README.md").read_text().split("## Code layout", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in tree() if f"`{name}`" not in text]
    assert missing == [], missing


def test_the_layers_hold_on_main() -> None:
    result = subprocess.run([str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_an_upward_import_breaks_the_layer_contract(tmp_path: Path) -> None:
    """The domain importing the service (a lower layer importing the top one) fails `lint-imports`."""
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "reconciler", ignore=shutil.ignore_patterns("__pycache__"))
    models = copy / "reconciler" / "domain" / "models.py"
    models.write_text(models.read_text() + "\nimport reconciler.service  # deliberate: a layer violation\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    result = subprocess.run(
        [str(LINT_IMPORTS)],
        cwd=tmp_path,
        env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout[-3000:]
    assert "BROKEN" in result.stdout and "reconciler.domain.models -> reconciler.service" in result.stdout, (
        result.stdout[-3000:]
    )
