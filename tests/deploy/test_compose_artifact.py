"""docker-compose.yml read by a real compose implementation: podman-compose (a dev dependency) `config`.

`--dry-run` lets it run without podman; it resolves the file (build, depends_on conditions, volumes) as
`up` would, and what it prints must be the file's services with the reconciler's hardening intact.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"


def test_podman_compose_config_resolves_the_file() -> None:
    podman_compose = Path(sys.executable).with_name("podman-compose")
    result = subprocess.run(
        [str(podman_compose), "--dry-run", "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    written = yaml.safe_load(COMPOSE_FILE.read_text())
    assert set(resolved["services"]) == set(written["services"])
    reconciler = resolved["services"]["reconciler"]
    assert reconciler["read_only"] is True and reconciler["cap_drop"] == ["ALL"]
    assert reconciler["build"]["dockerfile"] == "Dockerfile"
    for service in resolved["services"].values():
        assert set(service.get("depends_on", {})) <= set(resolved["services"]), "depends on a missing service"
