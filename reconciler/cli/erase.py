"""`reconciler erase`: erase one user's personal fields at once (an erasure request), or the users due."""

from __future__ import annotations

import argparse
import asyncio
import json

from reconciler.apply.applier import Applier
from reconciler.apply.erasure import Eraser, Erasure, Outcome
from reconciler.base.config import Settings
from reconciler.base.errors import ExitStatus
from reconciler.cli.common import CliExit, Subcommand, load_settings, open_clients
from reconciler.clients.store import UserStore
from reconciler.domain.models import is_keycloak_id


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user_id", nargs="?", metavar="USER_ID", help="the Keycloak id of the user to erase")
    parser.add_argument(
        "--due",
        action="store_true",
        help="erase every user deleted in Keycloak more than ERASE_DELETED_AFTER_S ago (instead of USER_ID)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="erase a user Keycloak still has *disabled*: the store keeps it erased while it stays disabled "
        "(an enabled user is refused even so)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def erase_command(args: argparse.Namespace) -> int:
    if args.due == (args.user_id is not None):
        raise CliExit(ExitStatus.CONFIG, "give either USER_ID or --due")
    if args.due and args.force:
        raise CliExit(ExitStatus.CONFIG, "--force applies to one USER_ID")
    if args.user_id is not None and not is_keycloak_id(args.user_id):
        # The value is not repeated: it may be anything, a mistyped e-mail address too.
        raise CliExit(ExitStatus.CONFIG, "USER_ID is not a Keycloak user id (a UUID)")
    settings = load_settings()
    if args.due:
        return _print_due(asyncio.run(_erase_due(settings)), settings, args.json)
    return _print_request(asyncio.run(_erase_one(settings, args.user_id, args.force)), args.json)


async def _erase_due(settings: Settings) -> int:
    if settings.erase_deleted_after_s <= 0:
        raise CliExit(ExitStatus.CONFIG, "ERASE_DELETED_AFTER_S is 0: no erasure is ever due")
    # Only the store is needed: the documents say which users were deleted in Keycloak, and when.
    async with UserStore.from_settings(settings) as store:
        await store.ping()
        await store.ensure_indexes()
        return await Eraser(store, settings).erase_due()


async def _erase_one(settings: Settings, user_id: str, force: bool) -> Erasure:
    async with open_clients(settings) as (keycloak, store):
        return await Eraser(store, settings).erase_request(
            Applier(store, keycloak, settings), user_id, force=force
        )


def _print_due(erased: int, settings: Settings, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"outcome": "ok", "erased": erased}, separators=(",", ":")), flush=True)
    else:
        print(f"erased {erased} user(s) deleted in Keycloak over {settings.erase_deleted_after_s:g} s ago")
    return ExitStatus.OK


def _print_request(erasure: Erasure, as_json: bool) -> int:
    if as_json:
        print(json.dumps(erasure.to_dict(), separators=(",", ":")), flush=True)
    if erasure.outcome is Outcome.REFUSED:
        raise CliExit(
            ExitStatus.ERASE_REFUSED,
            f"not erased: {erasure.reason}; delete it in Keycloak first "
            "(or disable it there and add --force)",
        )
    if not as_json:
        print(_describe(erasure))
    return ExitStatus.OK


def _describe(erasure: Erasure) -> str:
    if erasure.outcome is Outcome.NO_DOCUMENT:
        return f"{erasure.external_id}: no document in the store, nothing to erase"
    when = erasure.erased_at.isoformat() if erasure.erased_at else "?"
    if erasure.outcome is Outcome.ALREADY_ERASED:
        return f"{erasure.external_id}: already erased at {when} (document {erasure.id})"
    return f"{erasure.external_id}: erased at {when} (document {erasure.id})"


COMMAND = Subcommand(
    "erase",
    help="erase a user's personal fields (an erasure request), or those of every user due",
    description="USER_ID: read the user from Keycloak; if Keycloak no longer has it, remove its personal "
    "fields from the store now and mark the document erased (its _id and external_id stay). A user Keycloak "
    f"still has is refused with exit status {ExitStatus.ERASE_REFUSED.value}: delete it in Keycloak first, "
    "or disable it there and add --force (the store then keeps it erased while Keycloak has it disabled; "
    "enabling it mirrors it again). --due: erase every user deleted in Keycloak more than "
    "ERASE_DELETED_AFTER_S ago (what `reconciler run` does every ERASE_INTERVAL_S).",
    handler=erase_command,
    arguments=_arguments,
)
