"""One version: the package's (pyproject.toml), the image tag the manifests deploy, and the changelog's."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_manifests_deploy_the_package_version() -> None:
    statefulset = yaml.safe_load((ROOT / "deploy" / "base" / "statefulset.yaml").read_text())
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"keycloak-user-reconciler:{VERSION}"
    overlay = yaml.safe_load((ROOT / "deploy" / "overlays" / "example" / "kustomization.yaml").read_text())
    assert {image["newTag"] for image in overlay["images"]} == {VERSION}
    assert f"keycloak-user-reconciler:{VERSION}" in (ROOT / "Dockerfile").read_text()


def test_the_changelog_has_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(VERSION)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, flags=re.MULTILINE)
    assert "## [Unreleased]" in text
