"""Erasure on the real stack: due erasures in `reconciler run`, `reconciler erase USER_ID` (refused while
Keycloak has the user, `--force` for a disabled one), and nothing brings the personal fields back: a replay
of the topics, a full reconcile. No personal value ever reaches the logs, the output or the metrics."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.apply.applier import Applier
from reconciler.base.config import Settings
from reconciler.base.errors import ExitStatus
from reconciler.clients.keycloak import KeycloakAdminClient
from reconciler.clients.store import UserStore
from reconciler.domain.attributes import DEFAULT_ATTRIBUTE_MAP
from reconciler.domain.document import F
from reconciler.domain.plan import ApplyPolicy
from tests.conftest import override
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.process import run_reconciler_async, settings_env, start_reconciler, stop

pytestmark = pytest.mark.stack


class Person:
    """A user with personal values no other test uses, so any of them in an output is a leak."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        self.username = f"erasable-{tag}"
        self.email = f"private.{tag}@example.test"
        self.first_name = f"Firstname{tag}"
        self.last_name = f"Lastname{tag}"

    @property
    def values(self) -> tuple[str, ...]:
        return (self.username, self.email, self.first_name, self.last_name)

    async def create(self, kc_admin: KeycloakTestAdmin) -> str:
        return await kc_admin.create_user(
            self.username, email=self.email, first_name=self.first_name, last_name=self.last_name
        )


def assert_no_personal_value(text: str, *people: Person) -> None:
    for person in people:
        for value in person.values:
            assert value.lower() not in text.lower(), f"a personal value leaked: {value}"


def assert_erased(doc: dict[str, Any] | None) -> None:
    assert doc is not None
    assert doc.get(F.ERASED_AT) is not None, doc
    assert not set(doc) & set(DEFAULT_ATTRIBUTE_MAP.personal_fields), doc  # avatar_url too
    assert doc[F.ID] and doc[F.EXTERNAL_ID]  # the application's references hold
    assert doc[F.IS_ACTIVE] is False


async def mirror(settings: Settings, user_id: str) -> None:
    """Apply what Keycloak says of this user now (as any path would)."""
    async with KeycloakAdminClient(settings) as keycloak, UserStore.from_settings(settings) as store:
        await Applier(store, keycloak, settings).observe_and_apply([user_id], ApplyPolicy.event())


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await run_reconciler_async(settings_env(settings), *args, timeout_s=180)


async def test_a_user_deleted_longer_ago_than_the_setting_is_erased_by_run(
    settings: Settings, kc_admin: KeycloakTestAdmin, store: UserStore, tmp_path: Path
) -> None:
    person = Person()
    user_id = await person.create(kc_admin)
    port = free_port()
    config = override(
        settings,
        kafka_group_id=f"test-{uuid.uuid4().hex[:8]}",
        reconcile_enabled=False,
        http_enabled=True,
        http_port=port,
        erase_deleted_after_s=2,
        erase_interval_s=1,
    )
    log_file = tmp_path / "run.log"
    process = start_reconciler(config, "run", log_file=log_file)
    try:
        await eventually(
            lambda: store.get_user(user_id),
            until=lambda d: d is not None and d.get(F.EMAIL) == person.email,
            timeout_s=60,
            what="the user mirrored",
        )
        await kc_admin.delete_user(user_id)
        gone = await eventually(
            lambda: store.get_user(user_id),
            until=lambda d: d is not None and d.get(F.IS_ACTIVE) is False,
            timeout_s=30,
            what="the deletion mirrored",
        )
        assert gone is not None and gone[F.EMAIL] == person.email  # kept until the setting's time has passed
        doc = await eventually(
            lambda: store.get_user(user_id),
            until=lambda d: d is not None and d.get(F.ERASED_AT) is not None,
            timeout_s=30,
            what="the user erased",
        )
        assert_erased(doc)
        assert doc is not None and doc[F.ERASED_AT] >= gone[F.DEACTIVATED_AT]
        async with httpx.AsyncClient(timeout=10) as http:
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        assert stop(process, signal.SIGTERM) == 0, log_file.read_text()[-3000:]
    assert 'reconciler_erasures_total{trigger="due"} 1.0' in metrics
    assert_no_personal_value(metrics, person)
    output = log_file.read_text()
    audit = [line for line in output.splitlines() if "user erased" in line]
    assert len(audit) == 1 and user_id in audit[0] and '"trigger"' in audit[0], output[-3000:]
    assert_no_personal_value(output, person)


async def test_erase_refuses_a_user_keycloak_still_has_unless_disabled_and_forced(
    settings: Settings, kc_admin: KeycloakTestAdmin, store: UserStore
) -> None:
    person = Person()
    user_id = await person.create(kc_admin)
    await mirror(settings, user_id)
    outputs: list[str] = []

    enabled = await cli(settings, "erase", user_id)
    outputs += [enabled.stdout, enabled.stderr]
    assert enabled.returncode == ExitStatus.ERASE_REFUSED, enabled.stderr
    assert "Keycloak still has the user, enabled" in enabled.stderr
    forced = await cli(settings, "erase", user_id, "--force")
    outputs += [forced.stdout, forced.stderr]
    assert forced.returncode == ExitStatus.ERASE_REFUSED  # enabled: forcing does not help
    assert (await store.get_user(user_id) or {}).get(F.EMAIL) == person.email

    await kc_admin.set_enabled(user_id, False)
    disabled = await cli(settings, "erase", user_id)
    outputs += [disabled.stdout, disabled.stderr]
    assert disabled.returncode == ExitStatus.ERASE_REFUSED
    assert "disabled" in disabled.stderr and "--force" in disabled.stderr
    done = await cli(settings, "erase", user_id, "--force", "--json")
    outputs += [done.stdout, done.stderr]
    assert done.returncode == 0, done.stderr
    assert '"outcome":"erased"' in done.stdout
    doc = await store.get_user(user_id)
    assert_erased(doc)
    assert doc is not None and doc[F.DEACTIVATION_REASON] == "disabled_in_keycloak"

    # While Keycloak keeps it disabled, every read leaves it erased: a hint, a full reconcile.
    await kc_admin.update_user(user_id, lastName=f"{person.last_name}x")
    await mirror(settings, user_id)
    reconcile = await cli(settings, "reconcile", "--once")
    outputs += [reconcile.stdout, reconcile.stderr]
    assert reconcile.returncode == 0, reconcile.stderr
    assert_erased(await store.get_user(user_id))
    again = await cli(settings, "erase", user_id, "--force")
    assert again.returncode == 0 and "already erased" in again.stdout

    # Enabled again in Keycloak: mirrored again, no longer erased.
    await kc_admin.set_enabled(user_id, True)
    await mirror(settings, user_id)
    back = await store.get_user(user_id)
    assert back is not None and back[F.EMAIL] == person.email and F.ERASED_AT not in back
    assert back[F.IS_ACTIVE] is True
    assert_no_personal_value("\n".join(outputs), person)


async def test_a_replay_and_a_full_reconcile_leave_an_erased_user_erased(
    settings: Settings, kc_admin: KeycloakTestAdmin, store: UserStore
) -> None:
    person = Person()
    user_id = await person.create(kc_admin)
    await kc_admin.update_user(user_id, firstName=f"{person.first_name}y")  # more events on the topics
    await kc_admin.update_user(user_id, firstName=person.first_name)
    await mirror(settings, user_id)
    await kc_admin.delete_user(user_id)

    erase = await cli(settings, "erase", user_id)
    assert erase.returncode == 0, erase.stderr
    assert "erased at" in erase.stdout
    assert_erased(await store.get_user(user_id))
    replay = await cli(settings, "replay", "--json")
    assert replay.returncode == 0, replay.stderr
    reconcile = await cli(settings, "reconcile", "--once", "--json")
    assert reconcile.returncode == 0, reconcile.stderr
    assert_erased(await store.get_user(user_id))
    outputs = [erase.stdout, erase.stderr, replay.stdout, replay.stderr, reconcile.stdout, reconcile.stderr]
    assert_no_personal_value("\n".join(outputs), person)


async def test_erase_checks_its_arguments_without_repeating_them(settings: Settings) -> None:
    bad = await cli(settings, "erase", "someone@example.test")
    assert bad.returncode == ExitStatus.CONFIG
    assert "not a Keycloak user id" in bad.stderr and "someone" not in bad.stderr
    neither = await cli(settings, "erase")
    assert neither.returncode == ExitStatus.CONFIG
    off = await cli(override(settings, erase_deleted_after_s=0), "erase", "--due")
    assert off.returncode == ExitStatus.CONFIG and "ERASE_DELETED_AFTER_S" in off.stderr
    unknown = await cli(settings, "erase", str(uuid.uuid4()))
    assert unknown.returncode == 0 and "nothing to erase" in unknown.stdout
