"""Small store readers the scenarios share: run records and their errors."""

from __future__ import annotations

import re
from typing import Any

from tests.reliability.harness.secrets import SecretsRegistry
from tests.support.polling import value as value

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def run_records(users: Any) -> list[dict[str, Any]]:
    """The full reconcile's run records (`reconcile_runs`) of the scenario's database, oldest first."""
    runs = users.database["reconcile_runs"]
    return [doc async for doc in runs.find({}).sort("started_at", 1)]


async def collect_run_errors(users: Any, registry: SecretsRegistry, where: str) -> None:
    """Run records carry error messages: the secrets scan reads them too."""
    for record in await run_records(users):
        if record.get("error"):
            registry.add_text(f"{where} reconcile_runs {record['_id']}", str(record["error"]))
