"""What a probe sees of a running `reconciler run`: its readiness answer and its metrics."""

from __future__ import annotations

from typing import Any

import httpx


async def readiness(port: int) -> tuple[int, dict[str, Any]]:
    """`/readyz`'s status and body; (0, {}) while the server does not answer yet."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            answer = await http.get(f"http://127.0.0.1:{port}/readyz")
    except httpx.TransportError:
        return 0, {}
    return answer.status_code, answer.json()


def failing(answer: tuple[int, dict[str, Any]], check: str) -> bool:
    """Not ready, and `check` (e.g. "kafka") is one of the reasons."""
    return answer[0] == 503 and answer[1].get("checks", {}).get(check, "ok") != "ok"


async def metric(port: int, name: str) -> float:
    """The value of an unlabelled sample on `/metrics` (0 when absent)."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0
