"""Keycloak (the Quarkus distribution from Maven Central) with the project's Kafka event listener and the
realm imported at start; one node, or a cluster (STACK_KEYCLOAK_NODES=2) behind the round-robin front."""

from __future__ import annotations

import os
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .common import (
    CACHE,
    HOST,
    ROOT,
    SECURE,
    STACK_DIR,
    STATE,
    TLS_DIR,
    Service,
    http_ok,
    java_home_for_keycloak,
    log,
    run,
    url_ok,
    wait_for,
)
from .kafka import bootstrap_servers
from .postgres import POSTGRES_DATABASE, POSTGRES_PASSWORD, POSTGRES_PORT, POSTGRES_USER
from .tls import SASL_MECHANISM, ensure_tls, kafka_passwords

KEYCLOAK_VERSION = os.environ.get("STACK_KEYCLOAK_VERSION", "26.7.3")
KEYCLOAK_PORT = int(os.environ.get("STACK_KEYCLOAK_PORT", "8080"))
KEYCLOAK_MANAGEMENT_PORT = int(os.environ.get("STACK_KEYCLOAK_MANAGEMENT_PORT", "9000"))
KEYCLOAK_DB = os.environ.get("STACK_KEYCLOAK_DB", "postgres")
# STACK_KEYCLOAK_NODES=2: a cluster behind a round-robin front on STACK_KEYCLOAK_PORT; node i (from 0) serves on
# STACK_KEYCLOAK_NODE_PORT + i (management + i) and talks to the others on STACK_KEYCLOAK_CLUSTER_PORT + i.
KEYCLOAK_NODES = int(os.environ.get("STACK_KEYCLOAK_NODES", "1"))
NODE_PORT = int(os.environ.get("STACK_KEYCLOAK_NODE_PORT", str(KEYCLOAK_PORT + 1)))
NODE_MANAGEMENT_PORT = int(
    os.environ.get("STACK_KEYCLOAK_NODE_MANAGEMENT_PORT", str(KEYCLOAK_MANAGEMENT_PORT + 1))
)
CLUSTER_PORT = int(os.environ.get("STACK_KEYCLOAK_CLUSTER_PORT", str(KEYCLOAK_MANAGEMENT_PORT + 800)))
# JGroups' failure detection listens on the cluster port + this (its default, 50000, overflows high ports).
FD_PORT_OFFSET = 100
FRONT_SCRIPT = STACK_DIR / "front.py"

REALM = "app"
REALM_FILE = ROOT / "keycloak-spi-config" / "realm" / "app-realm.json"
LISTENER_DIR = ROOT / "keycloak-spi-config" / "kafka-listener"
LISTENER_JAR = LISTENER_DIR / "target" / "keycloak-kafka-listener.jar"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # local bootstrap admin of a loopback-only dev stack

KEYCLOAK = Service("keycloak", (KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT))
FRONT = Service("keycloak-front", (KEYCLOAK_PORT,))


@dataclass(frozen=True)
class KeycloakNode:
    service: Service
    http_port: int
    management_port: int
    cluster_port: int | None  # None: the single node, local caches

    @property
    def url(self) -> str:
        return f"{'https' if SECURE else 'http'}://{HOST}:{self.http_port}"

    @property
    def management_url(self) -> str:
        # The management interface takes the main one's TLS settings.
        return f"{'https' if SECURE else 'http'}://{HOST}:{self.management_port}"


def keycloak_nodes() -> tuple[KeycloakNode, ...]:
    if KEYCLOAK_NODES == 1:
        return (KeycloakNode(KEYCLOAK, KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT, None),)
    nodes = []
    for i in range(KEYCLOAK_NODES):
        http, management, cluster = NODE_PORT + i, NODE_MANAGEMENT_PORT + i, CLUSTER_PORT + i
        service = Service(f"keycloak-{i + 1}", (http, management, cluster, cluster + FD_PORT_OFFSET))
        nodes.append(KeycloakNode(service, http, management, cluster))
    return tuple(nodes)


def keycloak_home(shape: str) -> Path:
    """One unpacked install per build shape (database, cache), so switching shapes never re-builds one."""
    home = CACHE / f"keycloak-{KEYCLOAK_VERSION}-{shape}"
    if (home / ".complete").exists():
        return home
    repo = Path(os.environ.get("MAVEN_REPO", Path.home() / ".m2" / "repository"))
    archive = (
        repo
        / "org/keycloak/keycloak-quarkus-dist"
        / KEYCLOAK_VERSION
        / f"keycloak-quarkus-dist-{KEYCLOAK_VERSION}.zip"
    )
    if not archive.exists():
        log(f"downloading Keycloak {KEYCLOAK_VERSION} with Maven (about 160 MB, once)")
        run(
            [
                "mvn",
                "-q",
                "-B",
                "dependency:get",
                f"-Dartifact=org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip",
                "-Dtransitive=false",
            ]
        )
    log(f"unpacking Keycloak {KEYCLOAK_VERSION} for the {shape} shape")
    staging = CACHE / f"keycloak-unpack-{shape}"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)
    (unpacked,) = list(staging.iterdir())
    shutil.rmtree(home, ignore_errors=True)
    unpacked.rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    for script in (home / "bin").glob("*.sh"):
        script.chmod(0o755)
    (home / ".complete").touch()
    return home


def listener_jar() -> Path:
    sources = sorted(
        p.stat().st_mtime for p in LISTENER_DIR.rglob("*") if p.is_file() and "target" not in p.parts
    )
    if not LISTENER_JAR.exists() or (sources and sources[-1] > LISTENER_JAR.stat().st_mtime):
        log("building the Kafka event listener provider with Maven")
        run(["mvn", "-q", "-B", "-f", str(LISTENER_DIR / "pom.xml"), "package", "-DskipTests"])
    return LISTENER_JAR


def keycloak_database_args(db: Path) -> list[str]:
    if KEYCLOAK_DB == "h2":
        return [f"--db-url=jdbc:h2:file:{db / 'keycloakdb'};NON_KEYWORDS=VALUE"]
    return [
        "--db=postgres",
        f"--db-url=jdbc:postgresql://{HOST}:{POSTGRES_PORT}/{POSTGRES_DATABASE}",
        f"--db-username={POSTGRES_USER}",
        f"--db-password={POSTGRES_PASSWORD}",
    ]


def keycloak_cluster_args(node: KeycloakNode) -> list[str]:
    if node.cluster_port is None:
        return []
    return [
        "--cache=ispn",  # members find each other through the shared database (jdbc-ping)
        f"--cache-embedded-network-bind-address={HOST}",
        f"--cache-embedded-network-bind-port={node.cluster_port}",
        # One issuer for every node: a token from one node is then valid on the others.
        f"--hostname=http://{HOST}:{KEYCLOAK_PORT}",
    ]


def keycloak_http_args(node: KeycloakNode) -> list[str]:
    if not SECURE:
        return [f"--http-host={HOST}", f"--http-port={node.http_port}"]
    return [
        f"--http-host={HOST}",
        # HTTPS on the Keycloak port. Dev mode serves HTTP whatever --http-enabled says (keycloak/keycloak#19339),
        # so its HTTP socket goes to a free loopback port the kernel picks, which nothing is told about.
        "--http-port=0",
        f"--https-port={node.http_port}",
        f"--https-certificate-file={TLS_DIR / 'server.pem'}",
        f"--https-certificate-key-file={TLS_DIR / 'server.key'}",
    ]


def keycloak_listener_args() -> list[str]:
    """The event listener's producer: SASL_SSL with its own SCRAM user on a secure stack (the password goes in
    its environment, see keycloak_env, so it is never on a command line)."""
    args = [
        f"--spi-events-listener--kafka--bootstrap-servers={bootstrap_servers()}",
        "--spi-events-listener--kafka--events-topic=keycloak.events",
        "--spi-events-listener--kafka--admin-events-topic=keycloak.admin-events",
    ]
    if SECURE:
        args += [
            "--spi-events-listener--kafka--security-protocol=SASL_SSL",
            f"--spi-events-listener--kafka--sasl-mechanism={SASL_MECHANISM}",
            "--spi-events-listener--kafka--sasl-username=keycloak",
            f"--spi-events-listener--kafka--ssl-truststore-location={TLS_DIR / 'ca.pem'}",
        ]
    return args


def keycloak_env(db: Path) -> dict[str, str]:
    java_opts = [
        # Keycloak's transaction log lives in the state folder, so two stacks share one install.
        f"-Dquarkus.transaction-manager.object-store.directory={db / 'transaction-logs'}",
        # Java 25 otherwise logs IllegalAccessError warnings for JBoss Threads' reflection.
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
        f"-Djgroups.fd.port-offset={FD_PORT_OFFSET}",
    ]
    env = {
        "JAVA_OPTS_APPEND": " ".join(java_opts),
        "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
        "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "JAVA_OPTS_KC_HEAP": "-Xms256m -Xmx1024m",
    }
    if SECURE:
        env["KAFKA_SASL_PASSWORD"] = kafka_passwords()["keycloak"]
    java_home = java_home_for_keycloak()
    if java_home:
        env["JAVA_HOME"] = java_home
    return env


def prepare_keycloak_home(shape: str) -> Path:
    home = keycloak_home(shape)
    jar = listener_jar()
    target = home / "providers" / jar.name
    if not target.exists() or target.read_bytes() != jar.read_bytes():
        shutil.copy2(jar, target)
    imports = home / "data" / "import"
    imports.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REALM_FILE, imports / REALM_FILE.name)
    return home


def cluster_members(node: KeycloakNode, offset: int) -> int:
    """Members of the last Infinispan cluster view the node logged after `offset` (0 before the first)."""
    try:
        with node.service.log_file.open("rb") as log_file:
            log_file.seek(offset)
            text = log_file.read().decode(errors="replace")
    except OSError:
        return 0
    views = re.findall(r"ISPN000094: Received new cluster view for channel \S+: \[[^\]]*\] \((\d+)\)", text)
    return int(views[-1]) if views else 0


def start_keycloak(node: KeycloakNode) -> None:
    if SECURE:
        ensure_tls()
    shape = KEYCLOAK_DB + ("-ispn" if node.cluster_port is not None else "")
    home = prepare_keycloak_home(shape)
    db = STATE / ("keycloak-db" if node.service is KEYCLOAK else f"{node.service.name}-db")
    db.mkdir(parents=True, exist_ok=True)
    log_offset = node.service.log_size()
    node.service.spawn(
        [
            str(home / "bin" / "kc.sh"),
            "start-dev",
            *keycloak_http_args(node),
            f"--http-management-port={node.management_port}",
            "--health-enabled=true",
            *keycloak_database_args(db),
            *keycloak_cluster_args(node),
            "--metrics-enabled=false",
            "--import-realm",
            *keycloak_listener_args(),
        ],
        env=keycloak_env(db),
        cwd=home,
    )
    ready = f"{node.management_url}/health/ready"
    # A cold start (Quarkus build of the shape, a new schema) took 4 min 48 s on a loaded 2-core machine.
    wait_for(f"Keycloak health at {ready}", lambda: url_ok(ready), 480, node.service)
    realm = f"{node.url}/realms/{REALM}/.well-known/openid-configuration"
    wait_for(f"realm {REALM}", lambda: url_ok(realm), 60, node.service)
    log(f"Keycloak {KEYCLOAK_VERSION} ready on {node.url} (realm {REALM}, {shape})")
    if node.cluster_port is not None:
        wait_for_cluster_view(node, log_offset)


def wait_for_cluster_view(node: KeycloakNode, log_offset: int) -> None:
    """A node that joined running ones must see them all, or caches would not be invalidated across nodes."""
    members = 1 + sum(
        1 for n in keycloak_nodes() if n.service.name != node.service.name and n.service.alive()
    )
    if members == 1:
        return
    joined = lambda: cluster_members(node, log_offset) >= members  # noqa: E731
    wait_for(f"{node.service.name} in a cluster view of {members} members", joined, 90, node.service)
    log(f"{node.service.name} joined the Keycloak cluster: a view of {members} members")


def start_front() -> None:
    nodes = keycloak_nodes()
    FRONT.spawn(
        [sys.executable, str(FRONT_SCRIPT), str(KEYCLOAK_PORT), *(node.url for node in nodes)], cwd=STATE
    )
    realm = f"http://{HOST}:{KEYCLOAK_PORT}/realms/{REALM}/.well-known/openid-configuration"
    wait_for(f"the Keycloak front on {HOST}:{KEYCLOAK_PORT}", lambda: http_ok(realm), 30, FRONT)
    log(f"Keycloak front ready on http://{HOST}:{KEYCLOAK_PORT} (round robin over {len(nodes)} nodes)")
