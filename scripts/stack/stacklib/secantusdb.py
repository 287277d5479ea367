"""SecantusDB, the MongoDB wire-protocol server the tests and the local stack use (a dev dependency)."""

from __future__ import annotations

import os
import shutil

from .common import HOST, ROOT, STATE, Service, StackError, env_flag, log, port_open, wait_for

MONGO_PORT = int(os.environ.get("STACK_MONGO_PORT", "27017"))
MONGO = Service("secantusdb", (MONGO_PORT,))


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
            *(["--auth"] if env_flag("STACK_MONGO_AUTH") else []),
        ],
        cwd=STATE,
    )
    wait_for(f"SecantusDB on {HOST}:{MONGO_PORT}", lambda: port_open(MONGO_PORT), 60, MONGO)
    log(f"SecantusDB ready on {HOST}:{MONGO_PORT}")
