"""Local stand-ins for the official images the testcontainers fixtures start, for machines with no registry.

    scripts/image/local_images.py        # builds what is missing or stale; prints the TEST_*_IMAGE settings

Built with podman (scripts/image/podman.sh) on the local Debian base (make_base.sh), sequentially, from
artifacts the host already has, so nothing is downloaded inside a build except Debian's Java 17 package:

    TEST_KAFKA_IMAGE     Kafka (KRaft) from the jars the local stack resolves with Maven (kafka-pom.xml)
    TEST_KEYCLOAK_IMAGE  Keycloak from the keycloak-quarkus-dist archive in the Maven repository, with the
                         project's Kafka listener and realm file
    TEST_MONGO_IMAGE     SecantusDB (MongoDB wire protocol) from wheels the host's pip downloads

Each image carries a digest of its inputs as a label; a second run rebuilds only what changed. Needs root
(debootstrap, rootful podman), Maven and the project's virtual environment (`make install`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FILES = HERE / "test-stack"
CACHE = ROOT / ".cache"
CONTEXTS = CACHE / "test-images"
PODMAN = [str(HERE / "podman.sh")]
LABEL = "reconciler.inputs"
LISTENER_LABEL = "reconciler.listener-sha256"  # read by tests/support/containers.py

BASE_IMAGE = os.environ.get("BASE_IMAGE", "localhost/reconciler-base:bookworm-py3.11")
JRE_IMAGE = "localhost/reconciler-test-jre:bookworm-17"
# The local stack's versions: Kafka from its Maven pom, Keycloak from the same setting and default.
KAFKA_POM = ROOT / "scripts" / "stack" / "kafka-pom.xml"
KAFKA_VERSION = re.search(r"<kafka\.version>([^<]+)<", KAFKA_POM.read_text()).group(1)  # type: ignore[union-attr]
KEYCLOAK_VERSION = os.environ.get("STACK_KEYCLOAK_VERSION", "26.7.3")
LISTENER_DIR = ROOT / "keycloak-spi-config" / "kafka-listener"
LISTENER_JAR = LISTENER_DIR / "target" / "keycloak-kafka-listener.jar"
REALM_FILE = ROOT / "keycloak-spi-config" / "realm" / "app-realm.json"


@dataclass
class Image:
    tag: str
    containerfile: str
    files: dict[str, Path] = field(default_factory=dict)  # build context name -> host file or folder
    build_args: dict[str, str] = field(default_factory=dict)
    # Only the Java image reaches out (Debian's mirror, as the host's apt does); the others build offline,
    # which also keeps Keycloak's build-time start off the host's ports.
    network: str = "none"
    labels: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"local-images: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


# --- artifacts the host already has (or fetches once with its own clients) ------------------------------
def kafka_libs() -> Path:
    """The folder scripts/stack/stack.py fills (same path and marker), so the two share one download."""
    libs = CACHE / "kafka" / f"libs-{KAFKA_VERSION}"
    if not (libs / ".complete").exists():
        log(f"resolving Apache Kafka {KAFKA_VERSION} with Maven")
        shutil.rmtree(libs, ignore_errors=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(KAFKA_POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ]
        )
        (libs / ".complete").touch()
    return libs


def keycloak_archive() -> Path:
    repo = Path(os.environ.get("MAVEN_REPO", Path.home() / ".m2" / "repository"))
    name = f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
    archive = repo / "org/keycloak/keycloak-quarkus-dist" / KEYCLOAK_VERSION / name
    if not archive.exists():
        log(f"downloading Keycloak {KEYCLOAK_VERSION} with Maven (about 160 MB, once)")
        artifact = f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
        run(["mvn", "-q", "-B", "dependency:get", artifact, "-Dtransitive=false"])
    return archive


def listener_jar() -> Path:
    """Rebuilt when a source is newer than the jar (the stack's rule)."""
    sources = [p.stat().st_mtime for p in LISTENER_DIR.rglob("*") if p.is_file() and "target" not in p.parts]
    if not LISTENER_JAR.exists() or max(sources, default=0) > LISTENER_JAR.stat().st_mtime:
        log("building the Kafka event listener provider with Maven")
        run(["mvn", "-q", "-B", "-f", str(LISTENER_DIR / "pom.xml"), "package", "-DskipTests"])
    return LISTENER_JAR


def secantus_wheels() -> tuple[str, Path]:
    """Wheels of the SecantusDB version installed in this environment and its dependencies, for Python 3.11
    on Debian bookworm (the base image), downloaded once by the host's pip with the host's settings."""
    version = metadata.version("secantusdb")
    wheels = CACHE / "wheels" / f"secantusdb-{version}"
    if not (wheels / ".complete").exists():
        log(f"downloading SecantusDB {version} wheels with pip")
        shutil.rmtree(wheels, ignore_errors=True)
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "--python-version=3.11",
                "--dest",
                str(wheels),
                f"secantusdb=={version}",
            ]
        )
        (wheels / ".complete").touch()
    return version, wheels


# --- building --------------------------------------------------------------------------------------------
def image_id(tag: str) -> str | None:
    found = subprocess.run(
        [*PODMAN, "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else None


def image_label(tag: str) -> str | None:
    fmt = '{{index .Labels "' + LABEL + '"}}'
    found = subprocess.run(
        [*PODMAN, "image", "inspect", "--format", fmt, tag], capture_output=True, text=True
    )
    return found.stdout.strip() if found.returncode == 0 else None


def fingerprint(name: str, path: Path) -> bytes:
    """A file by its content; a folder (jars, wheels: their names carry the versions) by names and sizes."""
    if path.is_file():
        return name.encode() + b"\n" + path.read_bytes()
    items = sorted(item for item in path.rglob("*") if item.is_file())
    return "".join(f"{name}/{item.relative_to(path)}:{item.stat().st_size}\n" for item in items).encode()


def inputs_digest(image: Image) -> str:
    digest = hashlib.sha256()
    digest.update((FILES / image.containerfile).read_bytes())
    for key, value in sorted(image.build_args.items()):
        # A parent image is named by its id, so a rebuilt parent rebuilds its children.
        digest.update(f"{key}={image_id(value) or value}\n".encode())
    for name, path in sorted(image.files.items()):
        digest.update(fingerprint(name, path))
    for key, value in sorted(image.labels.items()):
        digest.update(f"label {key}={value}\n".encode())
    return digest.hexdigest()


def stage_context(image: Image) -> Path:
    """A build context of hard links (copies across file systems) to the inputs, so nothing big is copied."""
    context = CONTEXTS / image.tag.rsplit("/", 1)[-1].split(":")[0]
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for name, path in image.files.items():
        if path.is_dir():
            shutil.copytree(path, context / name, copy_function=link_or_copy)
        else:
            link_or_copy(str(path), str(context / name))
    return context


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build(image: Image) -> None:
    digest = inputs_digest(image)
    if image_label(image.tag) == digest:
        log(f"{image.tag} is up to date")
        return
    previous = image_id(image.tag)
    started = time.monotonic()
    log(f"building {image.tag}")
    context = stage_context(image)
    args = [arg for key, value in image.build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    run(
        [
            *PODMAN,
            "build",
            "--network",
            image.network,
            "--tag",
            image.tag,
            "--label",
            f"{LABEL}={digest}",
            *[arg for key, value in image.labels.items() for arg in ("--label", f"{key}={value}")],
            "--file",
            str(FILES / image.containerfile),
            *args,
            str(context),
        ]
    )
    shutil.rmtree(context, ignore_errors=True)
    if previous and previous != image_id(image.tag):
        # The replaced image, unless something still uses it.
        subprocess.run([*PODMAN, "rmi", previous], capture_output=True)
    log(f"built {image.tag} in {time.monotonic() - started:.0f} s")


def images() -> dict[str, Image]:
    """The images by the setting that names them, in build order (the Java image first)."""
    secantus_version, wheels = secantus_wheels()
    jre = Image(JRE_IMAGE, "jre.Containerfile", build_args={"BASE_IMAGE": BASE_IMAGE}, network="host")
    kafka_files = {
        "libs": kafka_libs(),
        "kafka-run.sh": FILES / "kafka-run.sh",
        "kafka-log4j2.properties": FILES / "kafka-log4j2.properties",
    }
    keycloak_files = {
        "keycloak.zip": keycloak_archive(),
        "keycloak-kafka-listener.jar": listener_jar(),
        "app-realm.json": REALM_FILE,
        "keycloak-prebuild.sh": FILES / "keycloak-prebuild.sh",
    }
    return {
        "": jre,
        "TEST_KAFKA_IMAGE": Image(
            f"localhost/reconciler-test-kafka:{KAFKA_VERSION}",
            "kafka.Containerfile",
            kafka_files,
            {"JRE_IMAGE": JRE_IMAGE},
        ),
        "TEST_KEYCLOAK_IMAGE": Image(
            f"localhost/reconciler-test-keycloak:{KEYCLOAK_VERSION}",
            "keycloak.Containerfile",
            keycloak_files,
            {"JRE_IMAGE": JRE_IMAGE},
            # The fixtures mount the listener jar only into an image without this very jar: a mounted copy
            # has another modification time, which makes Keycloak redo its build (about 30 s) at every start.
            labels={LISTENER_LABEL: hashlib.sha256(LISTENER_JAR.read_bytes()).hexdigest()},
        ),
        "TEST_MONGO_IMAGE": Image(
            f"localhost/reconciler-test-secantusdb:{secantus_version}",
            "secantusdb.Containerfile",
            {"wheels": wheels},
            {"BASE_IMAGE": BASE_IMAGE},
        ),
    }


def build_all() -> dict[str, str]:
    """Builds the base, then each image in turn; returns the TEST_*_IMAGE settings."""
    run([str(HERE / "make_base.sh"), BASE_IMAGE], stdout=sys.stderr)
    built = images()
    for image in built.values():
        build(image)
    return {name: image.tag for name, image in built.items() if name}


def main() -> int:
    for name, tag in build_all().items():
        print(f"{name}={tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
