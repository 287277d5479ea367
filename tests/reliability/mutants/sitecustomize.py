"""Deliberate bugs, to prove the reliability scenarios fail when a property is violated.

Not part of the suite. With RELIABILITY_MUTANT=<name> set, the harness puts this folder on the PYTHONPATH of
every reconciler child process (never of pytest itself), and Python imports this module at start-up:

  commit_before_apply   offsets are committed as soon as a record is read, before its write  (scenarios 1, 3)
  outage_as_deleted     an unreachable Keycloak reads as "user not found"                   (scenario 2)
  no_confirmation       the full reconcile deactivates candidates without asking Keycloak     (scenario 5)
  no_observed_at_guard  writes overwrite documents observed later                           (scenario 6)
  unchecked_ids         any non-empty string is taken as a Keycloak user id                 (scenario 7)
  leak_token            access tokens are logged and log masking is off                     (scenario 8, all)

Usage: RELIABILITY_MUTANT=no_confirmation make reliability PYTEST_ARGS="-k churn"  (expect a failure)
"""

from __future__ import annotations

import os
import sys
from typing import Any

MUTANT = os.environ.get("RELIABILITY_MUTANT", "")


def _commit_before_apply() -> None:
    from reconciler.sources import offsets

    original = offsets.PartitionOffsets.track

    def track(self: Any, offset: int, parts: int) -> None:
        original(self, offset, 0)

    offsets.PartitionOffsets.track = track  # type: ignore[method-assign]


def _outage_as_deleted() -> None:
    from reconciler.clients import keycloak

    original = keycloak.KeycloakAdminClient.get_user

    async def get_user(self: Any, user_id: str) -> Any:
        try:
            return await original(self, user_id)
        except keycloak.KeycloakUnavailable:
            return None

    keycloak.KeycloakAdminClient.get_user = get_user  # type: ignore[method-assign]


def _no_confirmation() -> None:
    if "reconcile" not in sys.argv:
        return
    from reconciler.apply import applier as apply
    from reconciler.domain.models import Observation

    async def observe(self: Any, user_ids: Any) -> list[Observation]:
        return [Observation(user_id, None, self.clock()) for user_id in dict.fromkeys(user_ids)]

    apply.Applier.observe = observe  # type: ignore[method-assign]


def _no_observed_at_guard() -> None:
    from pymongo import UpdateOne

    from reconciler.clients import store
    from reconciler.domain import plan

    def update_op(write: Any) -> UpdateOne:
        op = original_op(write)
        return UpdateOne({"external_id": write.external_id}, op._doc, upsert=write.upsert)

    original_op = store.UserStore._update_op
    store.UserStore._update_op = staticmethod(update_op)  # type: ignore[method-assign]
    original_plan = plan._plan_one

    def plan_one(obs: Any, doc: Any, *args: Any) -> Any:
        if doc is not None:
            doc = {k: v for k, v in doc.items() if k != "observed_at"}
        return original_plan(obs, doc, *args)

    plan._plan_one = plan_one  # type: ignore[assignment]


def _unchecked_ids() -> None:
    from reconciler.clients import keycloak
    from reconciler.domain import events, models

    def anything(value: object) -> bool:
        return isinstance(value, str) and bool(value)

    for module in (events, keycloak, models):
        module.is_keycloak_id = anything  # type: ignore[attr-defined]


def _leak_token() -> None:
    from reconciler.clients import keycloak
    from reconciler.observability import logs

    def no_redaction(text: str) -> str:
        return text

    def no_registration(value: str | None, *, ephemeral: bool = False) -> None:
        return None

    logs.redact = no_redaction
    logs.register_secret = no_registration
    original = keycloak.KeycloakAdminClient._fetch_token

    async def fetch_token(self: Any) -> str:
        token: str = await original(self)
        keycloak.log.debug("token fetched", token=token)
        return token

    keycloak.KeycloakAdminClient._fetch_token = fetch_token  # type: ignore[method-assign]


_MUTANTS = {
    "commit_before_apply": _commit_before_apply,
    "outage_as_deleted": _outage_as_deleted,
    "no_confirmation": _no_confirmation,
    "no_observed_at_guard": _no_observed_at_guard,
    "unchecked_ids": _unchecked_ids,
    "leak_token": _leak_token,
}

if MUTANT:
    _MUTANTS[MUTANT]()
    print(f"reliability mutant active: {MUTANT}", file=sys.stderr)
