#!/usr/bin/env python3
"""The local stack without Docker: Kafka (KRaft), Keycloak with the Kafka listener on PostgreSQL, SecantusDB.

Usage: stack.py up | down | status | start SERVICE | stop SERVICE
       (SERVICE: secantusdb, postgres, kafka, keycloak; on a cluster shape also kafka-N, keycloak-N and
       keycloak-front, and `kafka` / `keycloak` then mean all brokers / nodes; `status` lists the shape's)

STACK_KEYCLOAK_DB=postgres (default) runs Keycloak on a PostgreSQL 16 from the pinned PyPI wheel `pgserver`;
STACK_KEYCLOAK_DB=h2 on Keycloak's embedded H2 file database (no PostgreSQL: the fastest loop).
STACK_KEYCLOAK_NODES=2: two Keycloak nodes in one cluster behind a round-robin front (front.py) on the Keycloak
port; STACK_KAFKA_BROKERS=3: three KRaft brokers, the topics replicated three times (min.insync.replicas 2).

STACK_SECURE=1: connections as production has them. A test CA (made once with openssl, in the state folder's
`tls/`) signs one server certificate for 127.0.0.1; Kafka's client listener is SASL_SSL with SCRAM-SHA-512 users
(random passwords: the broker itself, `keycloak` for the event listener, `reconciler`), Keycloak serves HTTPS
on its port, and `.stack/env` names the CA files, the SASL user and the https URL. One Keycloak node only.

`stop SERVICE` / `start SERVICE` stop or start one service of a running stack (fault-injection tests use them on
a second stack, see STACK_STATE_DIR). STACK_MONGO_AUTH=true starts SecantusDB with --auth (SCRAM users must be
provisioned beforehand, without it).

Everything is downloaded once through the ordinary package clients (Maven, pip) and cached under `.cache/`;
runtime state (pid files, logs, `.stack/env`) lives under `.stack/`. Every server listens on 127.0.0.1 only,
and `down` stops only the processes whose pid files `up` wrote. Standard library only, so it runs before the
project's virtualenv exists.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
# A second, independent stack (e.g. for fault-injection tests) uses its own state folder and ports.
STATE = Path(os.environ.get("STACK_STATE_DIR", ROOT / ".stack")).resolve()
LOGS = STATE / "logs"
HOST = "127.0.0.1"

KAFKA_VERSION = "4.4.0"
KEYCLOAK_VERSION = os.environ.get("STACK_KEYCLOAK_VERSION", "26.5.6")
KAFKA_PORT = int(os.environ.get("STACK_KAFKA_PORT", "9092"))
KAFKA_CONTROLLER_PORT = int(os.environ.get("STACK_KAFKA_CONTROLLER_PORT", "9093"))
KEYCLOAK_PORT = int(os.environ.get("STACK_KEYCLOAK_PORT", "8080"))
KEYCLOAK_MANAGEMENT_PORT = int(os.environ.get("STACK_KEYCLOAK_MANAGEMENT_PORT", "9000"))
MONGO_PORT = int(os.environ.get("STACK_MONGO_PORT", "27017"))
POSTGRES_PORT = int(os.environ.get("STACK_POSTGRES_PORT", "5432"))
KEYCLOAK_DB = os.environ.get("STACK_KEYCLOAK_DB", "postgres")
PGSERVER_VERSION = "0.1.4"  # ships PostgreSQL 16.2 binaries in pgserver/pginstall/bin
POSTGRES_DATABASE = "keycloak"
POSTGRES_USER = "keycloak"
POSTGRES_PASSWORD = "keycloak"  # superuser of a loopback-only dev database
# initdb and postgres refuse to run as root: as root they run as this unprivileged user.
UNPRIVILEGED = ("nobody", "nogroup")
# STACK_KEYCLOAK_NODES=2: a cluster behind a round-robin front on STACK_KEYCLOAK_PORT; node i (from 0) serves on
# STACK_KEYCLOAK_NODE_PORT + i (management + i) and talks to the others on STACK_KEYCLOAK_CLUSTER_PORT + i.
KEYCLOAK_NODES = int(os.environ.get("STACK_KEYCLOAK_NODES", "1"))
NODE_PORT = int(os.environ.get("STACK_KEYCLOAK_NODE_PORT", str(KEYCLOAK_PORT + 1)))
NODE_MANAGEMENT_PORT = int(
    os.environ.get("STACK_KEYCLOAK_NODE_MANAGEMENT_PORT", str(KEYCLOAK_MANAGEMENT_PORT + 1))
)
CLUSTER_PORT = int(os.environ.get("STACK_KEYCLOAK_CLUSTER_PORT", str(KEYCLOAK_MANAGEMENT_PORT + 800)))
# STACK_KAFKA_BROKERS=3: a KRaft cluster, broker i (from 0) on STACK_KAFKA_PORT + 2i (controller + 2i).
KAFKA_BROKERS = int(os.environ.get("STACK_KAFKA_BROKERS", "1"))
SECURE = os.environ.get("STACK_SECURE", "").lower() in ("1", "true", "yes")
TLS_DIR = STATE / "tls"
SASL_MECHANISM = "SCRAM-SHA-512"
# The SCRAM users of a secure stack: the broker (inter-broker traffic and the topic tool), the listener, us.
KAFKA_USERS = ("broker", "keycloak", "reconciler")
# JGroups' failure detection listens on the cluster port + this (its default, 50000, overflows high ports).
FD_PORT_OFFSET = 100
FRONT_SCRIPT = Path(__file__).resolve().parent / "front.py"

REALM = "app"
REALM_FILE = ROOT / "keycloak-spi-config" / "realm" / "app-realm.json"
LISTENER_DIR = ROOT / "keycloak-spi-config" / "kafka-listener"
LISTENER_JAR = LISTENER_DIR / "target" / "keycloak-kafka-listener.jar"
TOPICS = {"keycloak.events": 3, "keycloak.admin-events": 3, "keycloak.events.dlq": 1}
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # local bootstrap admin of a loopback-only dev stack


class StackError(Exception):
    """A stack step failed; the message says what and how to fix it."""


def log(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a setup command; on failure raise with the tail of its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise StackError(redact(f"command failed ({result.returncode}): {' '.join(cmd)}\n" + "\n".join(tail)))
    return result  # type: ignore[no-any-return]


# Passwords of the secure stack, masked in every error this script prints (a failed command shows its args).
SECRETS: set[str] = set()


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "***")
    return text


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, proc: Service | None = None) -> None:
    """Poll `check` until it is true, the service died, or the deadline passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and not proc.alive():
            raise StackError(f"{proc.name} exited while starting; see {proc.log_file}\n{proc.log_tail()}")
        time.sleep(0.5)
    raise StackError(
        f"timed out after {timeout_s:.0f}s waiting for {what}" + (f"; see {proc.log_file}" if proc else "")
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


def java_home_for_keycloak() -> str | None:
    """Keycloak 26.5 runs on Java 21+; prefer a newer JDK when the default is older."""
    explicit = os.environ.get("STACK_KEYCLOAK_JAVA_HOME")
    if explicit:
        return explicit
    candidates = sorted(Path("/usr/lib/jvm").glob("temurin-2[1-9]*")) + sorted(
        Path("/usr/lib/jvm").glob("java-2[1-9]*")
    )
    return str(candidates[-1]) if candidates else None


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else fields[19]


@dataclass
class Service:
    name: str
    ports: tuple[int, ...]
    stop_signal: int = signal.SIGTERM

    @property
    def pid_file(self) -> Path:
        return STATE / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return LOGS / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        """True while the process `up` started still runs (a reused pid has another start time)."""
        try:
            pid_text, started = self.pid_file.read_text().split()
        except (OSError, ValueError):
            return False
        return process_start_time(int(pid_text)) == started

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_ports_free(self) -> None:
        for port in self.ports:
            if port_open(port):
                raise StackError(
                    f"port {port} on {HOST} is already taken by another program, so {self.name} cannot start; "
                    f"stop that program or choose another port (see STACK_*_PORT in scripts/stack/stack.py)"
                )

    def spawn(self, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # its own process group, so `down` stops it and its children only
            )
        self.pid_file.write_text(f"{proc.pid} {process_start_time(proc.pid)}")

    def signal_stop(self) -> bool:
        """Ask the process to stop; False when it was not running."""
        pid = self.pid()
        if pid is None or not self.alive():
            self.pid_file.unlink(missing_ok=True)
            return False
        log(f"stopping {self.name} (pid {pid})")
        try:
            os.killpg(pid, self.stop_signal)
        except ProcessLookupError:
            pass
        return True

    def wait_stopped(self, deadline: float) -> None:
        pid = self.pid()
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.3)
        if pid is not None and self.alive():
            log(f"{self.name} did not stop in time; killing it")
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 60) -> None:
        stop_together([self], timeout_s)


def stop_together(services: list[Service], timeout_s: float = 60) -> None:
    """Signal all, then wait for all: a Kafka broker shuts down cleanly only while a quorum of the others
    still runs, so brokers stopped one after another would leave the last waiting for its timeout."""
    stopping = [service for service in services if service.signal_stop()]
    deadline = time.monotonic() + timeout_s
    for service in stopping:
        service.wait_stopped(deadline)


KAFKA = Service("kafka", (KAFKA_PORT, KAFKA_CONTROLLER_PORT))
KEYCLOAK = Service("keycloak", (KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT))
MONGO = Service("secantusdb", (MONGO_PORT,))
# SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for Keycloak's pooled connections to close).
POSTGRES = Service("postgres", (POSTGRES_PORT,), stop_signal=signal.SIGINT)


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


def check_shape() -> None:
    if KEYCLOAK_DB not in ("h2", "postgres"):
        raise StackError(f"STACK_KEYCLOAK_DB must be h2 or postgres, not {KEYCLOAK_DB!r}")
    if KEYCLOAK_NODES < 1:
        raise StackError(f"STACK_KEYCLOAK_NODES must be 1 or more, not {KEYCLOAK_NODES}")
    if KAFKA_BROKERS not in (1, 3):
        raise StackError(f"STACK_KAFKA_BROKERS must be 1 or 3, not {KAFKA_BROKERS}")
    if KEYCLOAK_NODES > 1 and KEYCLOAK_DB != "postgres":
        raise StackError("a Keycloak cluster (STACK_KEYCLOAK_NODES > 1) needs STACK_KEYCLOAK_DB=postgres")
    if SECURE and KEYCLOAK_NODES > 1:
        # The round-robin front speaks plain HTTP; a TLS front is not built yet.
        raise StackError("STACK_SECURE=1 supports one Keycloak node (STACK_KEYCLOAK_NODES=1)")


def services() -> tuple[Service, ...]:
    """The services of the chosen shape, in start order."""
    check_shape()
    database = (POSTGRES,) if KEYCLOAK_DB == "postgres" else ()
    front = (FRONT,) if KEYCLOAK_NODES > 1 else ()
    kafka = (broker.service for broker in kafka_brokers())
    return (MONGO, *database, *kafka, *(node.service for node in keycloak_nodes()), *front)


# --- TLS and SASL material (STACK_SECURE=1) ----------------------------------------------------------------
def openssl(*args: str) -> None:
    if shutil.which("openssl") is None:
        raise StackError("STACK_SECURE=1 needs the openssl command (apt-get install openssl)")
    run(["openssl", *args])


def ensure_tls() -> None:
    """A test CA and one server certificate for 127.0.0.1/localhost, made once per state folder."""
    if (TLS_DIR / ".complete").exists():
        return
    log(f"making a test CA and a server certificate in {TLS_DIR}")
    shutil.rmtree(TLS_DIR, ignore_errors=True)
    TLS_DIR.mkdir(parents=True)
    TLS_DIR.chmod(0o700)
    ca_key, ca, key, csr, cert = (
        TLS_DIR / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    days = "825"
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        days,
        "-subj",
        "/CN=keycloak-user-reconciler test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={HOST}"
    )
    extensions = TLS_DIR / "server.ext"
    extensions.write_text(
        f"subjectAltName=IP:{HOST},DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        days,
        "-extfile",
        str(extensions),
    )
    # Kafka's PEM keystore: the (PKCS#8, unencrypted) key and the certificate chain in one file.
    (TLS_DIR / "server-keystore.pem").write_text(key.read_text() + cert.read_text())
    ca_key.unlink()  # nothing else is ever signed with it
    for path in TLS_DIR.iterdir():
        path.chmod(0o600)
    (TLS_DIR / ".complete").touch()


def kafka_passwords() -> dict[str, str]:
    """The SCRAM users' passwords, random, made once per state folder (never printed)."""
    path = TLS_DIR / "kafka-users.json"
    if not path.exists():
        TLS_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({user: secrets.token_urlsafe(24) for user in KAFKA_USERS}))
        path.chmod(0o600)
    passwords: dict[str, str] = json.loads(path.read_text())
    SECRETS.update(passwords.values())
    return passwords


def jaas(user: str) -> str:
    password = kafka_passwords()[user]
    return f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'


def kafka_client_properties() -> Path:
    """The topic tool's client settings on a secure stack (the broker's own SCRAM user)."""
    path = TLS_DIR / "kafka-client.properties"
    path.write_text(
        "\n".join(
            [
                "security.protocol=SASL_SSL",
                f"sasl.mechanism={SASL_MECHANISM}",
                f"sasl.jaas.config={jaas('broker')}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={TLS_DIR / 'ca.pem'}",
                "",
            ]
        )
    )
    path.chmod(0o600)
    return path


def url_ok(url: str) -> bool:
    """`http_ok` that trusts the test CA for an https URL."""
    if not url.startswith("https:"):
        return http_ok(url)
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError):
        return False


# --- PostgreSQL (Keycloak's database) ----------------------------------------------------------------------
def postgres_bin() -> Path:
    """The PostgreSQL binaries of the pinned `pgserver` wheel, installed once with pip into the cache."""
    target = CACHE / f"pgserver-{PGSERVER_VERSION}"
    bin_dir = target / "pgserver" / "pginstall" / "bin"
    if not (target / ".complete").exists():
        log(f"installing PostgreSQL binaries (PyPI wheel pgserver {PGSERVER_VERSION}) with pip, once")
        shutil.rmtree(target, ignore_errors=True)
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--no-compile",
                "--disable-pip-version-check",
                # The binaries do not depend on the Python that runs pip: always take the cp311 wheel.
                "--only-binary=:all:",
                "--python-version=3.11",
                "--implementation=cp",
                f"--target={target}",
                f"pgserver=={PGSERVER_VERSION}",
            ],
            env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"},
        )
        (target / ".complete").touch()
    return bin_dir


def as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse root: as root, run them as an unprivileged user (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return cmd
    user, group = UNPRIVILEGED
    return ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", *cmd]


def postgres_home() -> Path:
    home = STATE / "postgres"
    home.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user, group = UNPRIVILEGED
        shutil.chown(home, user, group)
    return home


def init_postgres(bin_dir: Path, data: Path) -> None:
    """A fresh cluster with one password-protected superuser (SCRAM over TCP, like production)."""
    log("initialising Keycloak's PostgreSQL database")
    probe = subprocess.run(as_postgres_user([str(bin_dir / "postgres"), "--version"]), capture_output=True)
    if probe.returncode != 0:
        raise StackError(
            f"the unprivileged user {UNPRIVILEGED[0]} cannot run {bin_dir / 'postgres'}: the checkout must be in "
            "folders every user may enter (chmod o+x on its parents), or use STACK_KEYCLOAK_DB=h2"
        )
    shutil.rmtree(data, ignore_errors=True)
    password_file = data.parent / "initdb-password"
    password_file.write_text(POSTGRES_PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(password_file, *UNPRIVILEGED)
    try:
        run(
            as_postgres_user(
                [
                    str(bin_dir / "initdb"),
                    f"--pgdata={data}",
                    f"--username={POSTGRES_USER}",
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                ]
            )
        )
    finally:
        password_file.unlink(missing_ok=True)


def postgres_ready(bin_dir: Path) -> bool:
    probe = [str(bin_dir / "pg_isready"), "-q", "-h", HOST, "-p", str(POSTGRES_PORT), "-U", POSTGRES_USER]
    return subprocess.run(probe, capture_output=True).returncode == 0


def psql(bin_dir: Path, sql: str) -> str:
    cmd = [str(bin_dir / "psql"), "-h", HOST, "-p", str(POSTGRES_PORT), "-U", POSTGRES_USER, "-d", "postgres"]
    return run([*cmd, "-tAc", sql], env={**os.environ, "PGPASSWORD": POSTGRES_PASSWORD}).stdout.strip()


def start_postgres() -> None:
    bin_dir = postgres_bin()
    home = postgres_home()
    data = home / "data"
    if not (data / "PG_VERSION").exists():
        init_postgres(bin_dir, data)
    settings = {
        "listen_addresses": HOST,
        "port": str(POSTGRES_PORT),
        "unix_socket_directories": "",  # TCP only: nothing in /tmp, no clash with another stack
        "max_connections": "200",  # Keycloak's pool, per node
        "shared_buffers": "64MB",
    }
    options = [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
    POSTGRES.spawn(as_postgres_user([str(bin_dir / "postgres"), "-D", str(data), *options]), cwd=home)
    wait_for(f"PostgreSQL on {HOST}:{POSTGRES_PORT}", lambda: postgres_ready(bin_dir), 60, POSTGRES)
    if psql(bin_dir, f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DATABASE}'") != "1":
        psql(bin_dir, f"CREATE DATABASE {POSTGRES_DATABASE}")
    log(f"PostgreSQL 16 ready on {HOST}:{POSTGRES_PORT} (database {POSTGRES_DATABASE})")


# --- Kafka -------------------------------------------------------------------------------------------------
def kafka_libs() -> Path:
    libs = CACHE / "kafka" / f"libs-{KAFKA_VERSION}"
    marker = libs / ".complete"
    if not marker.exists():
        log(f"resolving Apache Kafka {KAFKA_VERSION} and its dependencies with Maven")
        shutil.rmtree(libs, ignore_errors=True)
        run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(ROOT / "scripts/stack/kafka-pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
                "-DincludeScope=runtime",
            ]
        )
        marker.touch()
    return libs


@dataclass(frozen=True)
class Broker:
    service: Service
    node_id: int
    port: int
    controller_port: int

    @property
    def home(self) -> Path:
        return STATE / self.service.name


def kafka_brokers() -> tuple[Broker, ...]:
    if KAFKA_BROKERS == 1:
        return (Broker(KAFKA, 1, KAFKA_PORT, KAFKA_CONTROLLER_PORT),)
    brokers = []
    for i in range(KAFKA_BROKERS):
        port, controller = KAFKA_PORT + 2 * i, KAFKA_CONTROLLER_PORT + 2 * i
        brokers.append(Broker(Service(f"kafka-{i + 1}", (port, controller)), i + 1, port, controller))
    return tuple(brokers)


def bootstrap_servers() -> str:
    return ",".join(f"{HOST}:{broker.port}" for broker in kafka_brokers())


def kafka_config(broker: Broker) -> str:
    replicas = len(kafka_brokers())
    min_isr = min(2, replicas)  # with 3 brokers an acks=all write survives one broker down
    if replicas == 1:
        quorum = f"controller.quorum.bootstrap.servers={HOST}:{broker.controller_port}"
    else:  # a static quorum: every broker is also a controller voter
        quorum = "controller.quorum.voters=" + ",".join(
            f"{b.node_id}@{HOST}:{b.controller_port}" for b in kafka_brokers()
        )
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={broker.node_id}",
            quorum,
            *kafka_listener_config(broker),
            "controller.listener.names=CONTROLLER",
            f"log.dirs={broker.home / 'data'}",
            "num.partitions=3",
            f"default.replication.factor={replicas}",  # min.insync.replicas is set per topic (create_topics)
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=10",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def kafka_listener_config(broker: Broker) -> list[str]:
    """The client listener: PLAINTEXT, or SASL_SSL with SCRAM on a secure stack (brokers talk to each other
    over it too). The controller listener stays PLAINTEXT on loopback: only the brokers themselves use it."""
    if not SECURE:
        return [
            f"listeners=PLAINTEXT://{HOST}:{broker.port},CONTROLLER://{HOST}:{broker.controller_port}",
            f"advertised.listeners=PLAINTEXT://{HOST}:{broker.port}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    mechanism = SASL_MECHANISM.lower()
    return [
        f"listeners=SASL_SSL://{HOST}:{broker.port},CONTROLLER://{HOST}:{broker.controller_port}",
        f"advertised.listeners=SASL_SSL://{HOST}:{broker.port}",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name=SASL_SSL",
        f"sasl.enabled.mechanisms={SASL_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
        f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config={jaas('broker')}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={TLS_DIR / 'server-keystore.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={TLS_DIR / 'ca.pem'}",
    ]


KAFKA_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = warn
logger.kafkaserver.name = kafka.server.KafkaServer
logger.kafkaserver.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


def kafka_java(broker: Broker, heap: str) -> list[str]:
    libs = kafka_libs()
    log4j = broker.home / "log4j2.properties"
    return ["java", "-Xms256m", f"-Xmx{heap}", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]


def kafka_cluster_id(broker: Broker) -> str:
    """One id for all brokers of this stack, made once."""
    path = STATE / "kafka-cluster-id"
    if not path.exists():
        result = run([*kafka_java(broker, "256m"), "kafka.tools.StorageTool", "random-uuid"])
        path.write_text(result.stdout.strip().splitlines()[-1])
    return path.read_text().strip()


def format_kafka_storage(broker: Broker, config: Path) -> None:
    data = broker.home / "data"
    shape = "secure" if SECURE else "plaintext"
    marker = broker.home / "security-shape"
    if (data / "meta.properties").exists():
        if (marker.read_text() if marker.exists() else "plaintext") != shape:
            # The SCRAM users are written into the metadata when the storage is formatted.
            raise StackError(
                f"{broker.home} was formatted for a {'plaintext' if SECURE else 'secure'} Kafka; stop the stack "
                f"and remove {STATE} (or use another STACK_STATE_DIR) to switch STACK_SECURE"
            )
        return
    shutil.rmtree(data, ignore_errors=True)
    standalone = ["--standalone"] if KAFKA_BROKERS == 1 else []
    cluster_id = kafka_cluster_id(broker)
    format_command = ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *standalone]
    if SECURE:
        passwords = kafka_passwords()
        for user in KAFKA_USERS:
            format_command += ["--add-scram", f"{SASL_MECHANISM}=[name={user},password={passwords[user]}]"]
    run([*kafka_java(broker, "256m"), *format_command])
    marker.write_text(shape)


def create_topics(broker: Broker) -> None:
    replicas = len(kafka_brokers())
    for topic, partitions in TOPICS.items():
        run(
            [
                *kafka_java(broker, "256m"),
                "org.apache.kafka.tools.TopicCommand",
                "--bootstrap-server",
                bootstrap_servers(),
                *(["--command-config", str(kafka_client_properties())] if SECURE else []),
                "--create",
                "--if-not-exists",
                "--topic",
                topic,
                "--partitions",
                str(partitions),
                "--replication-factor",
                str(replicas),
                "--config",
                f"min.insync.replicas={min(2, replicas)}",
            ]
        )


def start_kafka(broker: Broker) -> None:
    if SECURE:
        ensure_tls()
    broker.home.mkdir(parents=True, exist_ok=True)
    config = broker.home / "server.properties"
    config.touch(mode=0o600)  # it holds the broker's SCRAM password on a secure stack
    config.write_text(kafka_config(broker))
    (broker.home / "log4j2.properties").write_text(KAFKA_LOG4J)
    format_kafka_storage(broker, config)
    heap = "768m" if KAFKA_BROKERS == 1 else "512m"
    broker.service.spawn([*kafka_java(broker, heap), "kafka.Kafka", str(config)], cwd=broker.home)
    brokers = kafka_brokers()
    running = [b for b in brokers if b.service.alive()]
    if len(running) < len(brokers):
        # A broker answers only once a quorum of controllers runs, and topics need every broker: the last
        # broker's start waits for all of them.
        log(f"{broker.service.name} started ({len(running)} of {len(brokers)} brokers running)")
        return
    for b in brokers:
        wait_for(f"Kafka on {HOST}:{b.port}", lambda b=b: port_open(b.port), 120, b.service)
    create_topics(broker)
    log(f"Kafka {KAFKA_VERSION} ready on {bootstrap_servers()}, topics {', '.join(TOPICS)}")


# --- Keycloak ----------------------------------------------------------------------------------------------
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


def log_size(service: Service) -> int:
    return service.log_file.stat().st_size if service.log_file.exists() else 0


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
    log_offset = log_size(node.service)
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


# --- SecantusDB --------------------------------------------------------------------------------------------
def start_mongo() -> None:
    server = shutil.which("secantusd-py", path=str(ROOT / ".venv" / "bin")) or shutil.which("secantusd-py")
    if server is None:
        raise StackError("secantusd-py not found: run `make install` first (SecantusDB is a dev dependency)")
    data = STATE / "secantus-data"
    data.mkdir(parents=True, exist_ok=True)
    MONGO.spawn(
        [
            server,
            "--host",
            HOST,
            "--port",
            str(MONGO_PORT),
            "--storage-path",
            str(data),
            "--log-level",
            "WARNING",
            *(["--auth"] if os.environ.get("STACK_MONGO_AUTH", "").lower() in ("1", "true", "yes") else []),
        ],
        cwd=STATE,
    )
    wait_for(f"SecantusDB on {HOST}:{MONGO_PORT}", lambda: port_open(MONGO_PORT), 60, MONGO)
    log(f"SecantusDB ready on {HOST}:{MONGO_PORT}")


# --- Commands ----------------------------------------------------------------------------------------------
def starters() -> dict[str, Callable[[], None]]:
    kafka = {broker.service.name: partial(start_kafka, broker) for broker in kafka_brokers()}
    keycloak = {node.service.name: partial(start_keycloak, node) for node in keycloak_nodes()}
    return {
        MONGO.name: start_mongo,
        POSTGRES.name: start_postgres,
        **kafka,
        **keycloak,
        FRONT.name: start_front,
    }


STOP_ORDER = ("keycloak-front", "keycloak", "kafka", "postgres", "secantusdb")


def stop_rank(service: Service) -> int:
    return next((i for i, prefix in enumerate(STOP_ORDER) if service.name.startswith(prefix)), 0)


def all_services() -> tuple[Service, ...]:
    """The chosen shape's services, then any other this state folder has a pid file of (another shape's)."""
    shape = {service.name: service for service in services()}
    known = {service.name: service for service in (MONGO, POSTGRES, KAFKA, KEYCLOAK, FRONT)}
    others = [
        known.get(p.stem, Service(p.stem, ())) for p in sorted(STATE.glob("*.pid")) if p.stem not in shape
    ]
    return (*shape.values(), *others)


def write_env() -> Path:
    secret = next(
        c["secret"]
        for c in json.loads(REALM_FILE.read_text())["clients"]
        if c["clientId"] == "user-reconciler"
    )
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers(),
        "KAFKA_USER_EVENTS_TOPIC": "keycloak.events",
        "KAFKA_ADMIN_EVENTS_TOPIC": "keycloak.admin-events",
        "KAFKA_DEAD_LETTER_TOPIC": "keycloak.events.dlq",
        "KEYCLOAK_URL": keycloak_nodes()[0].url if SECURE else f"http://{HOST}:{KEYCLOAK_PORT}",
        "KEYCLOAK_MANAGEMENT_URL": keycloak_nodes()[0].management_url,
        # Each node's own URL, comma-separated, for tests that pin reads to one node (the front's in order).
        "KEYCLOAK_NODE_URLS": ",".join(node.url for node in keycloak_nodes()),
        "KEYCLOAK_REALM": REALM,
        "KEYCLOAK_CLIENT_ID": "user-reconciler",
        "KEYCLOAK_CLIENT_SECRET": secret,
        "KEYCLOAK_ADMIN_USER": ADMIN_USER,
        "KEYCLOAK_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "KEYCLOAK_SELF_SERVICE_CLIENT_ID": "e2e-self-service",
        "MONGODB_URI": f"mongodb://{HOST}:{MONGO_PORT}/?directConnection=true",
        "MONGODB_DATABASE": "app",
        "HTTP_HOST": HOST,
        "STACK_HOME": str(ROOT),
        "STACK_STATE_DIR": str(STATE),
        "STACK_KEYCLOAK_DB": KEYCLOAK_DB,
        "STACK_KEYCLOAK_NODES": str(KEYCLOAK_NODES),
        "STACK_KAFKA_BROKERS": str(KAFKA_BROKERS),
        "STACK_SECURE": "1" if SECURE else "0",
    }
    if SECURE:
        values |= {
            "KEYCLOAK_CA_FILE": str(TLS_DIR / "ca.pem"),
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SASL_MECHANISM,
            "KAFKA_SASL_USERNAME": "reconciler",
            "KAFKA_SASL_PASSWORD": kafka_passwords()["reconciler"],
            "KAFKA_SSL_CA_FILE": str(TLS_DIR / "ca.pem"),
            # The test CA's folder: the server certificate and key, for a test's own TLS server (a proxy).
            "STACK_TLS_DIR": str(TLS_DIR),
        }
    path = STATE / "env"
    path.touch(mode=0o600)  # it holds the stack's client secret and passwords
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def up() -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(exist_ok=True)
    started = time.monotonic()
    for service in services():
        start_if_stopped(service)
    env = write_env()
    # (A state folder outside the checkout is shown as it is: relative_to would raise after a good start.)
    shown = env.relative_to(ROOT) if env.is_relative_to(ROOT) else env
    log(f"stack ready in {time.monotonic() - started:.0f}s; settings in {shown}")


def start_if_stopped(service: Service) -> None:
    """Start `service` and wait until it is healthy, unless it already runs (a second `up` does nothing)."""
    if service.alive():
        log(f"{service.name} already running (pid {service.pid()})")
        return
    service.pid_file.unlink(missing_ok=True)
    service.check_ports_free()
    starters()[service.name]()


def down() -> None:
    ordered = sorted(all_services(), key=stop_rank)
    for rank in sorted({stop_rank(service) for service in ordered}):
        stop_together([service for service in ordered if stop_rank(service) == rank])
    (STATE / "env").unlink(missing_ok=True)
    log("stack stopped")


def services_named(name: str, choices: tuple[Service, ...]) -> list[Service]:
    """The service called `name`; on a cluster shape `keycloak` and `kafka` name all its nodes or brokers (so a
    fault-injection test written for one node takes the whole of Keycloak or Kafka down)."""
    members = [s for s in choices if s.name == name]
    if not members and name in ("keycloak", "kafka"):
        members = [s for s in choices if re.fullmatch(rf"{name}-\d+", s.name)]
    if not members:
        raise StackError(f"no service {name!r}; choose one of {', '.join(s.name for s in choices)}")
    return members


def start_one(name: str) -> None:
    """Start one service (or a cluster's members) if not running, and wait until it is healthy."""
    for service in services_named(name, services()):
        start_if_stopped(service)


def stop_one(name: str) -> None:
    """Stop one service that `up` or `start` started (its pid file); the others keep running."""
    stop_together(services_named(name, all_services()))
    log(f"{name} stopped")


def status() -> int:
    all_up = True
    shape = services()
    # A service of another shape that still runs is listed too (`down` stops it).
    for service in [s for s in all_services() if s in shape or s.alive()]:
        running = service.alive()
        all_up &= running
        ports = ", ".join(f"{p}:{'open' if port_open(p) else 'closed'}" for p in service.ports)
        print(
            f"{service.name:<14} {'running' if running else 'stopped':<8} pid={service.pid() or '-':<8} {ports}"
        )
    return 0 if all_up else 1


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "status"
    try:
        if command == "up":
            up()
        elif command == "down":
            down()
        elif command == "status":
            return status()
        elif command in ("start", "stop") and len(argv) == 3:
            (start_one if command == "start" else stop_one)(argv[2])
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except StackError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
