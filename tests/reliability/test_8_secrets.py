"""Scenario 8: no secret in any log line or error message, with every reconciler of the suite at DEBUG.

On the secure stack (the default, STACK_SECURE=1) Kafka is SASL_SSL with SCRAM and Keycloak HTTPS: the
module also runs a consumer that logs in to Kafka at DEBUG, a replay with a wrong SASL password, and looks for
the SASL passwords (the reconciler's, the listener's, the broker's) as well.

Every reconciler process and command of the suite runs with LOG_LEVEL=DEBUG (aiokafka, httpx, httpcore and
PyMongo at DEBUG too) against a store that requires SCRAM authentication, through a proxy that captures every
access token Keycloak hands out. This module adds the error paths most likely to quote a credential (a wrong
client secret, a wrong store password, each a fresh random value that is then the configured secret) and
then scans everything the suite collected: every log file, every command's stdout and stderr, every reconcile
run record's error. None may contain the client secret, the store password, or any captured token (also
URL-encoded), nor any personal value of the users the module creates (usernames, emails, names and
pictures drawn at random, so that a match can only be a copy): the reconcile reads and writes them, the event
path applies one, and `erase` removes one user's. A planted token and a planted email prove the scan finds what
it looks for.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.reliability.harness import (
    ReconcilerProcess,
    collect_run_errors,
    import_users,
    personal_users,
    run_cli,
    seed_users,
)
from tests.reliability.scenario import ScenarioEnv
from tests.support.polling import eventually

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

EXIT_KEYCLOAK_AUTH, EXIT_STORE = 3, 5
PERSONAL_USERS = 30


async def _erase_one(env: ScenarioEnv, user_id: str) -> None:
    """`erase` of a user deleted in Keycloak at DEBUG: its audit line names the user by id only."""
    await env.kc_admin.request("DELETE", f"/users/{user_id}")
    erased = await run_cli(env.settings_for(), "erase", user_id, "--json", registry=env.secrets)
    assert erased.code == 0, erased.stderr[-2000:]
    doc = await env.users.find_one({"external_id": user_id})
    assert doc is not None and doc.get("erased_at") is not None and "email" not in doc, doc


async def test_no_secret_in_any_log_line_or_error_message(
    env: ScenarioEnv, stack_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    await import_users(env.kc_admin, seed_users(50, "secret"))
    people, personal = personal_users(PERSONAL_USERS)
    await import_users(env.kc_admin, people)
    env.secrets.fixed.update(personal)
    config = env.settings_for()
    tokens_before = len(env.proxy.tokens)
    ok = await run_cli(config, "reconcile", "--once", "--json", registry=env.secrets)
    assert ok.code == 0, ok.stderr[-2000:]
    assert len(env.proxy.tokens) > tokens_before, "the proxy captured no token"
    # The personal values went through the reconciler (read, compared, written): the scan below is no idle claim.
    mirrored = await env.users.count_documents(
        {"external_id": {"$in": [p["id"] for p in people]}, "email": {"$in": [p["email"] for p in people]}}
    )
    assert mirrored == PERSONAL_USERS, mirrored
    await _erase_one(env, people[0]["id"])

    wrong_secret = "wrong-" + secrets.token_urlsafe(18)
    env.secrets.fixed["wrong client secret (configured)"] = wrong_secret
    refused = await run_cli(
        env.settings_for(keycloak_client_secret=wrong_secret),
        "reconcile",
        "--once",
        "--json",
        registry=env.secrets,
    )
    assert refused.code == EXIT_KEYCLOAK_AUTH, (refused.code, refused.stderr[-2000:])

    wrong_password = secrets.token_urlsafe(18)
    env.secrets.fixed["wrong store password (configured)"] = wrong_password
    real_password = quote(stack_env["MONGODB_PASSWORD"], safe="")
    bad_uri = stack_env["MONGODB_URI"].replace(f":{real_password}@", f":{quote(wrong_password, safe='')}@")
    assert bad_uri != stack_env["MONGODB_URI"]
    denied = await run_cli(
        env.settings_for(mongodb_uri=bad_uri, mongodb_timeout_s=3),
        "reconcile",
        "--once",
        "--json",
        registry=env.secrets,
    )
    assert denied.code == EXIT_STORE, (denied.code, denied.stderr[-2000:])
    kafka_password = stack_env.get("KAFKA_SASL_PASSWORD")
    if kafka_password:
        await _kafka_over_sasl_ssl(env, tmp_path)
    await collect_run_errors(env.users, env.secrets, "8-secrets")

    # The sweep: everything every scenario of this session wrote.
    lines, findings = env.secrets.scan()
    assert not findings, f"secrets leaked: {findings[:20]}"
    texts = [p.read_text(errors="replace") for p in env.secrets.files if p.exists()]
    texts += [text for _, text in env.secrets.texts]
    debug_lines = sum(text.count('"level": "debug"') for text in texts)
    assert debug_lines > 100, "the logs are not at DEBUG: the scan proves little"
    assert lines > 200

    planted = tmp_path / "planted.log"
    token = next(iter(env.proxy.tokens))
    planted.write_text(
        f'{{"event": "x", "header": "Bearer {token}"}}\n{stack_env["MONGODB_PASSWORD"]}\n{kafka_password or ""}\n'
        f'{{"event": "y", "email": "{people[1]["email"]}"}}\n'
    )
    _, found = env.secrets.scan([planted])
    assert len(found) == (4 if kafka_password else 3), found

    env.figures.update(
        kafka_sasl_ssl=bool(kafka_password),
        secrets_checked=len(env.secrets.secrets()),
        personal_values_checked=sum(1 for label in env.secrets.fixed if label.startswith("personal data")),
        tokens_captured=len(env.proxy.tokens),
        log_files=len(env.secrets.files),
        outputs=len(env.secrets.texts),
        lines_scanned=lines,
        debug_lines=debug_lines,
        leaks=0,
        duration_s=round(time.monotonic() - started, 1),
    )


async def _kafka_over_sasl_ssl(env: ScenarioEnv, tmp_path: Path) -> None:
    """On a secure stack: a `run` at DEBUG whose consumer logs in with SCRAM over TLS (aiokafka's SASL exchange
    is logged at DEBUG) and applies an admin change, then a `replay` refused for a wrong SASL password."""
    consumer = ReconcilerProcess(env.settings_for(), "run", log_file=env.secrets.log_file("8-secrets-run"))
    await consumer.start()
    try:
        await consumer.wait_joined(timeout_s=120)
        people, personal = personal_users(1)
        env.secrets.fixed.update({f"{label} (event path)": value for label, value in personal.items()})
        person = people[0]
        user_id = await env.kc_admin.create_user(
            person["username"],
            email=person["email"],
            first_name=person["firstName"],
            last_name=person["lastName"],
            attributes=person["attributes"],
        )
        await eventually(
            lambda: env.users.find_one({"external_id": user_id}),
            until=lambda doc: doc is not None and doc["synced_by"] == "event",
            timeout_s=60,
            what="the admin change applied through SASL_SSL",
        )
    finally:
        assert await consumer.terminate() == 0, consumer.tail()
    wrong_kafka_password = "wrong-" + secrets.token_urlsafe(18)
    env.secrets.fixed["wrong kafka sasl password (configured)"] = wrong_kafka_password
    refused = await run_cli(
        env.settings_for(kafka_sasl_password=wrong_kafka_password),
        "replay",
        "--no-reconcile",
        registry=env.secrets,
        timeout_s=180,
    )
    # Kafka refusing the login is a refusal like Keycloak's: exit 3, one line naming what to check.
    assert refused.code == EXIT_KEYCLOAK_AUTH, (refused.code, refused.stderr[-2000:])
    assert "Kafka refused the reconciler" in refused.stderr, refused.stderr[-2000:]
