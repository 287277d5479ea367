"""psql on the stack's PostgreSQL as its superuser (Keycloak's own role, the owner of Keycloak's tables), for
tests that look at or break what the CDC source depends on: the replication slot, the WAL it holds.

The stack (scripts/stack/stacklib/postgres.py) runs the server from the PyPI wheel `pgserver`, whose binaries
it keeps in the checkout's `.cache`; the client used here is that wheel's psql, over TCP on loopback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DATABASE = "keycloak"
# The stack's superuser of a loopback-only dev database (scripts/stack/stacklib/postgres.py).
SUPERUSER = "keycloak"
SUPERUSER_PASSWORD = "keycloak"


def postmaster_port(state_dir: Path) -> int:
    """The port of the stack's running server, from its data folder's postmaster.pid (4th line)."""
    pid_file = state_dir / "postgres" / "data" / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[3])
    except (OSError, IndexError, ValueError) as error:
        raise AssertionError(f"PostgreSQL of the stack in {state_dir} is not running ({pid_file})") from error


def psql_binary(stack_home: Path) -> Path:
    """The psql of the pgserver wheel the stack installed (the newest complete one in `.cache`)."""
    installed = sorted(
        p.parent / "pgserver" / "pginstall" / "bin" / "psql"
        for p in (stack_home / ".cache").glob("pgserver-*/.complete")
    )
    if not installed:
        raise AssertionError(f"no pgserver binaries under {stack_home / '.cache'}: start the stack first")
    return installed[-1]


@dataclass(frozen=True)
class Postgres:
    """One server: `query` runs SQL as the superuser and returns psql's unaligned, tuples-only output."""

    psql: Path
    port: int

    @classmethod
    def of_stack(cls, env: dict[str, str]) -> Postgres:
        """The server of the stack whose `.stack/env` is `env` (STACK_HOME, STACK_STATE_DIR)."""
        return cls(psql_binary(Path(env["STACK_HOME"])), postmaster_port(Path(env["STACK_STATE_DIR"])))

    def _connection(self, database: str) -> list[str]:
        return [str(self.psql), "-h", HOST, "-p", str(self.port), "-U", SUPERUSER, "-d", database]

    def query(self, sql: str, database: str = DATABASE, timeout_s: float = 120) -> str:
        result = subprocess.run(
            [*self._connection(database), "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql],
            env={**os.environ, "PGPASSWORD": SUPERUSER_PASSWORD, "PGCONNECT_TIMEOUT": "5"},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode != 0:
            raise PsqlError(result.stderr.strip() or f"psql exited with {result.returncode}")
        return result.stdout.strip()

    async def aquery(self, sql: str, database: str = DATABASE, timeout_s: float = 120) -> str:
        return await asyncio.to_thread(self.query, sql, database, timeout_s)


class PsqlError(AssertionError):
    pass
