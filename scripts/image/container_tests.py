"""Runs tests through the testcontainers fixtures (tests/support/containers.py) on Podman's Docker API.

    scripts/image/container_tests.py [PYTEST ARGS...]        # `make test-containers` (CONTAINER_TESTS=... chooses)

Without DOCKER_HOST it builds the local images (local_images.py; a TEST_*_IMAGE already set is used as it
is) and starts `podman system service` on a private socket; with DOCKER_HOST (a Docker engine, say) it uses
that engine and the official images. TEST_IMAGES=local or TEST_IMAGES=official overrides that choice. Then
it runs pytest with TEST_STACK=containers, so no local stack is used, removes whatever containers and
networks of this run are left, and stops the service it started. Run it with the virtual environment's Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import local_images

RUN_LABEL = "reconciler.test-run"  # tests/support/containers.py labels what it starts with it


def log(message: str) -> None:
    print(f"container-tests: {message}", file=sys.stderr, flush=True)


def image_settings(default: str) -> dict[str, str]:
    if os.environ.get("TEST_IMAGES", default) == "official":
        return {}
    started = time.monotonic()
    settings = {name: os.environ.get(name) or tag for name, tag in local_images.build_all().items()}
    log(f"images ready in {time.monotonic() - started:.0f} s")
    return settings


def api_answers(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=5)
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, OSError):
        return False
    finally:
        client.close()


@contextmanager
def podman_service() -> Iterator[str]:
    """Podman's Docker API on a socket of its own; yields its DOCKER_HOST and stops it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="reconciler-podman-"))
    url = f"unix://{folder / 'podman.sock'}"
    log_file = (folder / "service.log").open("w")
    service = subprocess.Popen(
        [*local_images.PODMAN, "system", "service", "--time=0", url],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not api_answers(url):
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not answer on {url}; see {log_file.name}")
            time.sleep(0.2)
        yield url
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log_file.close()
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()


def remove_leftovers(url: str, run_id: str) -> None:
    """What an interrupted run left (testcontainers' reaper, Ryuk, is off on Podman)."""
    client = docker.DockerClient(base_url=url, timeout=60)
    try:
        selector = {"label": f"{RUN_LABEL}={run_id}"}
        for container in client.containers.list(all=True, filters=selector):
            log(f"removing leftover container {container.short_id}")
            container.remove(force=True)
        for network in client.networks.list(filters=selector):
            network.remove()
    finally:
        client.close()


def run_tests(url: str, images: dict[str, str], pytest_args: list[str]) -> int:
    run_id = uuid.uuid4().hex[:12]
    env = os.environ | images
    env |= {
        "DOCKER_HOST": url,
        "TEST_STACK": "containers",
        "TEST_RUN_ID": run_id,
        # Podman runs no Ryuk reaper, and the published ports are on this host's loopback.
        "TESTCONTAINERS_RYUK_DISABLED": "true",
        "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
    }
    try:
        # The per-test timeout covers the test bodies only: the containers' start (the first test's setup,
        # 4 min for a loaded 2-core machine) has its own deadlines in tests/support/containers.py.
        pytest = [sys.executable, "-m", "pytest", "-o", "timeout_func_only=true"]
        return subprocess.run([*pytest, *pytest_args], env=env).returncode
    finally:
        remove_leftovers(url, run_id)


def main(pytest_args: list[str]) -> int:
    os.chdir(local_images.ROOT)
    engine = os.environ.get("DOCKER_HOST")
    images = image_settings("official" if engine else "local")
    if engine:
        return run_tests(engine, images, pytest_args)
    with podman_service() as url:
        return run_tests(url, images, pytest_args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
