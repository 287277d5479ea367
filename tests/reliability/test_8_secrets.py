"""Scenario 8: no secret in any log line or error message, with every reconciler of the suite at DEBUG.

Every reconciler process and command of the suite runs with LOG_LEVEL=DEBUG (aiokafka, httpx, httpcore and
PyMongo at DEBUG too) against a store that requires SCRAM authentication, through a proxy that captures every
access token Keycloak hands out. This module adds the error paths most likely to quote a credential (a wrong
client secret, a wrong store password, each a fresh random value that is then the configured secret) and
then scans everything the suite collected: every log file, every command's stdout and stderr, every reconcile
run record's error. None may contain the client secret, the store password, or any captured token (also
URL-encoded). A planted token proves the scan finds what it looks for.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.reliability.harness import (
    collect_run_errors,
    import_users,
    run_cli,
    seed_users,
)
from tests.reliability.scenario import ScenarioEnv

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

EXIT_KEYCLOAK_AUTH, EXIT_STORE = 3, 5


async def test_no_secret_in_any_log_line_or_error_message(
    env: ScenarioEnv, stack_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    await import_users(env.kc_admin, seed_users(50, "secret"))
    config = env.settings_for()
    tokens_before = len(env.proxy.tokens)
    ok = await run_cli(config, "reconcile", "--once", "--json", registry=env.secrets)
    assert ok.code == 0, ok.stderr[-2000:]
    assert len(env.proxy.tokens) > tokens_before, "the proxy captured no token"

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
    planted.write_text(f'{{"event": "x", "header": "Bearer {token}"}}\n{stack_env["MONGODB_PASSWORD"]}\n')
    _, found = env.secrets.scan([planted])
    assert len(found) == 2, found

    env.figures.update(
        secrets_checked=len(env.secrets.secrets()),
        tokens_captured=len(env.proxy.tokens),
        log_files=len(env.secrets.files),
        outputs=len(env.secrets.texts),
        lines_scanned=lines,
        debug_lines=debug_lines,
        leaks=0,
        duration_s=round(time.monotonic() - started, 1),
    )
