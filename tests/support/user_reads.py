"""Which users the reconciler read one by one from Keycloak (`GET /users/{id}`), counted per id."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from reconciler.clients.keycloak import KeycloakAdminClient


class GetCounter:
    """Counts `GET /users/{id}` per user id, by wrapping the client method (undone with `monkeypatch`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        original = KeycloakAdminClient.get_user

        async def counting(client: KeycloakAdminClient, user_id: str) -> Any:
            self.calls[user_id] += 1
            return await original(client, user_id)

        monkeypatch.setattr(KeycloakAdminClient, "get_user", counting)

    @property
    def total(self) -> int:
        return sum(self.calls.values())
