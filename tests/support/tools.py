"""The external tools of the operator-artifact tests (promtool, prometheus, podman): found or failed loudly."""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = "install it with `make tools` (scripts/tools/install.sh, as root: apt-get)"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(tool: str) -> str:
    """The tool's path; a test that needs a missing tool fails (these tools are part of `make test`)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` is not on PATH: {INSTALL_HINT}", pytrace=False)
    return path
