"""Keycloak's PostgreSQL 16, from the pinned PyPI wheel `pgserver`, run unprivileged on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .common import (
    CACHE,
    HOST,
    STATE,
    UNPRIVILEGED,
    Service,
    StackError,
    as_unprivileged,
    log,
    run,
    unprivileged_home,
    wait_for,
)

POSTGRES_PORT = int(os.environ.get("STACK_POSTGRES_PORT", "5432"))
PGSERVER_VERSION = "0.1.4"  # ships PostgreSQL 16.2 binaries in pgserver/pginstall/bin
POSTGRES_DATABASE = "keycloak"
POSTGRES_USER = "keycloak"
POSTGRES_PASSWORD = "keycloak"  # superuser of a loopback-only dev database
# SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for Keycloak's pooled connections to close).
POSTGRES = Service("postgres", (POSTGRES_PORT,), stop_signal=signal.SIGINT)


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


def init_postgres(bin_dir: Path, data: Path) -> None:
    """A fresh cluster with one password-protected superuser (SCRAM over TCP, like production)."""
    log("initialising Keycloak's PostgreSQL database")
    probe = subprocess.run(as_unprivileged([str(bin_dir / "postgres"), "--version"]), capture_output=True)
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
            as_unprivileged(
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


def psql(sql: str, database: str = "postgres", stdin: str | None = None) -> str:
    """Run SQL as the superuser (Keycloak's own role, the tables' owner). `sql` "-" reads the script from
    `stdin`, which keeps passwords off the command line."""
    cmd = [
        str(postgres_bin() / "psql"),
        "-h",
        HOST,
        "-p",
        str(POSTGRES_PORT),
        "-U",
        POSTGRES_USER,
        "-d",
        database,
    ]
    args = ["-v", "ON_ERROR_STOP=1", "-tA", *(["-f", "-"] if sql == "-" else ["-c", sql])]
    env = {**os.environ, "PGPASSWORD": POSTGRES_PASSWORD}
    return run([*cmd, *args], env=env, input=stdin).stdout.strip()


# wal_level=logical lets the CDC source (Debezium, see connect.py) read the changes; it costs a little more
# WAL, and having it always on means turning CDC on needs no PostgreSQL restart.
POSTGRES_SETTINGS = {
    "listen_addresses": HOST,
    "port": str(POSTGRES_PORT),
    "unix_socket_directories": "",  # TCP only: nothing in /tmp, no clash with another stack
    "max_connections": "200",  # Keycloak's pool, per node
    "shared_buffers": "64MB",
    "wal_level": "logical",
}


def start_postgres() -> None:
    bin_dir = postgres_bin()
    home = unprivileged_home(STATE / "postgres")
    data = home / "data"
    if not (data / "PG_VERSION").exists():
        init_postgres(bin_dir, data)
    options = [arg for key, value in POSTGRES_SETTINGS.items() for arg in ("-c", f"{key}={value}")]
    POSTGRES.spawn(as_unprivileged([str(bin_dir / "postgres"), "-D", str(data), *options]), cwd=home)
    wait_for(f"PostgreSQL on {HOST}:{POSTGRES_PORT}", lambda: postgres_ready(bin_dir), 60, POSTGRES)
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DATABASE}'") != "1":
        psql(f"CREATE DATABASE {POSTGRES_DATABASE}")
    log(f"PostgreSQL 16 ready on {HOST}:{POSTGRES_PORT} (database {POSTGRES_DATABASE})")
