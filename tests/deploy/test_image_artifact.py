"""The container image, built and run: `reconciler --help`, `reconcile --once` and a short `run` against the
local stack (host network), as the image's non-root user with a read-only root filesystem.

Needs a container engine: podman as root (on machines without a registry the image is built on a local
Debian base, scripts/image/make_base.sh) or docker. Skipped without one, except in CI (CI=true), where
scripts/tools/install.sh has installed podman.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.base.config import Settings
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.process import settings_env
from tests.support.tools import in_ci

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/keycloak-user-reconciler:test"
HOW_TO_ENABLE = (
    "no container engine: install podman as root (`make tools`, i.e. scripts/tools/install.sh) or docker "
    "to build and run the image in this test"
)


def engine() -> list[str] | None:
    """podman through the project's wrapper (its containers.conf) when root can use it, else docker."""
    if shutil.which("podman") and os.geteuid() == 0:
        return [str(ROOT / "scripts" / "image" / "podman.sh")]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return ["docker"]
    return None


def run(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT)


@pytest.fixture(scope="module")
def container_engine() -> list[str]:
    found = engine()
    if found is None:
        if in_ci():
            pytest.fail(f"CI must run the image test: {HOW_TO_ENABLE}", pytrace=False)
        pytest.skip(HOW_TO_ENABLE)
    return found


@pytest.fixture(scope="module")
def image(container_engine: list[str]) -> str:
    # podman here has no registry to pull the official base from: build on the local Debian one.
    env = {**os.environ, "LOCAL_BASE": "1" if "podman" in container_engine[0] else "0"}
    started = time.monotonic()
    build = subprocess.run(
        [str(ROOT / "scripts" / "image" / "build.sh"), TAG],
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
        cwd=ROOT,
        env=env,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    size = run(*container_engine, "image", "inspect", "--format", "{{.Size}}", TAG)
    print(f"\nimage {TAG}: {int(size.stdout) / 1e6:.0f} MB, base + build {time.monotonic() - started:.0f} s")
    return TAG


def env_file(settings: Settings, path: Path) -> Path:
    """The settings as an env file (not `-e NAME=value`: secrets would show in the process list)."""
    names = {name.upper() for name in Settings.model_fields}
    lines = [f"{k}={v}" for k, v in settings_env(settings).items() if k in names]
    path.write_text("\n".join(lines) + "\n")
    return path


def container_run(engine: list[str], *args: str) -> list[str]:
    """`run` as production runs it: the image's own user, read-only root, no capabilities."""
    return [
        *engine,
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        *args,
    ]


def test_image_runs_as_the_unprivileged_user(container_engine: list[str], image: str) -> None:
    user = run(*container_engine, "image", "inspect", "--format", "{{.Config.User}}", image)
    assert user.stdout.strip() == "10001:10001"
    result = run(*container_run(container_engine, image, "--help"), timeout_s=120)
    assert result.returncode == 0, result.stderr
    assert "reconcile" in result.stdout and "replay" in result.stdout


@pytest.fixture
def image_settings(settings: Settings) -> Settings:
    return override(
        settings,
        kafka_group_id=f"image-{uuid.uuid4().hex[:8]}",
        http_host="127.0.0.1",
        http_port=free_port(),
        reconcile_enabled=False,
        event_recheck_delay_s=0.0,
    )


async def test_reconcile_once_in_the_image_writes_the_store(
    container_engine: list[str],
    image: str,
    image_settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    tmp_path: Path,
) -> None:
    user_id = await kc_admin.create_user(first_name="Image", last_name="Once")
    env = env_file(image_settings, tmp_path / "env")
    result = run(
        *container_run(container_engine, "--env-file", str(env), image, "reconcile", "--once", "--json")
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    doc = await users_collection.find_one({"external_id": user_id})
    assert doc is not None and doc["synced_by"] == "reconcile" and doc["last_name"] == "Once"


@pytest.fixture
def running_container(
    container_engine: list[str], image: str, image_settings: Settings, tmp_path: Path
) -> Iterator[str]:
    name = f"reconciler-test-{uuid.uuid4().hex[:8]}"
    env = env_file(image_settings, tmp_path / "env")
    args = container_run(container_engine, "--detach", "--name", name, "--env-file", str(env), image, "run")
    args.remove("--rm")  # kept until its exit status is read
    try:
        # A container that failed to start still exists: the finally removes it either way.
        started = run(*args, timeout_s=120)
        assert started.returncode == 0, started.stderr
        yield name
    finally:
        run(*container_engine, "rm", "--force", name, timeout_s=120)


async def _healthz(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            return (await http.get(url)).status_code
    except httpx.HTTPError:
        return 0


async def test_run_in_the_image_applies_events_and_stops_cleanly(
    container_engine: list[str],
    running_container: str,
    image_settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
) -> None:
    health = f"http://127.0.0.1:{image_settings.http_port}/readyz"
    await eventually(lambda: _healthz(health), until=lambda s: s == 200, timeout_s=90, what="/readyz 200")
    user_id = await kc_admin.create_user(first_name="Image", last_name="Run")
    doc = await eventually(
        lambda: users_collection.find_one({"external_id": user_id}),
        until=lambda d: d is not None,
        timeout_s=60,
        what="the event path stored the user",
    )
    assert doc["synced_by"] == "event"
    # SIGTERM: the consumer drains and commits, the process exits 0 within the drain timeout.
    stopped = run(*container_engine, "stop", "--time", "60", running_container, timeout_s=120)
    assert stopped.returncode == 0, stopped.stderr
    status = run(*container_engine, "inspect", "--format", "{{.State.ExitCode}}", running_container)
    logs = run(*container_engine, "logs", running_container)
    assert status.stdout.strip() == "0", logs.stderr[-3000:]
