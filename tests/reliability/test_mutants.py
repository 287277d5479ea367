"""Every deliberate bug of mutants/sitecustomize.py still installs (no stack needed; runs in `make test`).

A mutant that no longer finds the module or attribute it patches (after a module moved, say) makes every
reconciler child fail at start-up, or patches nothing: either way its scenario stops proving anything. This
starts Python the way the harness starts a reconciler child (the mutants folder on PYTHONPATH) for each one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.reliability.harness.children import MUTANTS_DIR

MUTANTS = [
    "commit_before_apply",
    "outage_as_deleted",
    "no_confirmation",
    "no_observed_at_guard",
    "unchecked_ids",
    "leak_token",
]


def test_the_list_names_every_mutant() -> None:
    source = (MUTANTS_DIR / "sitecustomize.py").read_text()
    defined = {
        line.split('"')[1] for line in source.splitlines() if line.startswith('    "') and '": _' in line
    }
    assert defined == set(MUTANTS)


@pytest.mark.parametrize("mutant", MUTANTS)
def test_the_mutant_installs_in_a_reconciler_child(mutant: str) -> None:
    env = {
        **os.environ,
        "RELIABILITY_MUTANT": mutant,
        "PYTHONPATH": os.pathsep.join(p for p in (str(MUTANTS_DIR), os.environ.get("PYTHONPATH")) if p),
    }
    # `reconcile` in the arguments: some mutants patch only the full reconcile's process.
    done = subprocess.run(
        [sys.executable, "-c", "import sitecustomize; print(sitecustomize.MUTANT)", "reconcile"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == mutant
    assert f"reliability mutant active: {mutant}" in done.stderr
