"""Kafka Connect's REST API for one connector: its status and stored config, and the recovery after a lost
replication slot that keycloak-spi-config/cdc/README.md describes (stop, delete the offsets, resume)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.polling import eventually


class ConnectorClient:
    def __init__(self, base_url: str, name: str) -> None:
        self.name = name
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=30)

    @classmethod
    def of_stack(cls, env: dict[str, str]) -> ConnectorClient:
        return cls(env["KAFKA_CONNECT_URL"], env["CDC_CONNECTOR_NAME"])

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str) -> Any:
        response = await self._http.request(method, f"/connectors/{self.name}{path}")
        response.raise_for_status()
        return response.json() if response.content else None

    async def config(self) -> dict[str, str]:
        """The stored config, as anyone who can reach the REST API sees it."""
        config: dict[str, str] = await self._call("GET", "/config")
        return config

    async def raw(self, path: str) -> str:
        """The body of a GET below /connectors/{name} (e.g. "" for the connector, "/status"), as text."""
        return (await self._http.get(f"/connectors/{self.name}{path}")).raise_for_status().text

    async def states(self) -> tuple[str, str | None]:
        """(connector state, first task's state or None); ("UNREACHABLE", None) while the worker is away."""
        try:
            status = await self._call("GET", "/status")
        except (httpx.TransportError, httpx.HTTPStatusError):
            return "UNREACHABLE", None
        tasks = status.get("tasks") or []
        return status["connector"]["state"], tasks[0]["state"] if tasks else None

    async def until_running(self, timeout_s: float) -> None:
        await eventually(
            self.states, until=lambda s: s == ("RUNNING", "RUNNING"), timeout_s=timeout_s, interval_s=0.5,
            what=f"connector {self.name} and its task RUNNING",
        )  # fmt: skip

    async def reset_position(self, timeout_s: float = 60) -> None:
        """The documented recovery after the slot was lost: stop, forget the offsets, resume (a new slot at
        the current WAL position; whatever changed in between is lost to this source)."""
        await self._call("PUT", "/stop")
        await eventually(
            self.states, until=lambda s: s[0] == "STOPPED", timeout_s=timeout_s, interval_s=0.5,
            what=f"connector {self.name} STOPPED",
        )  # fmt: skip
        await self._call("DELETE", "/offsets")
        await self._call("PUT", "/resume")
        await self.until_running(timeout_s)
