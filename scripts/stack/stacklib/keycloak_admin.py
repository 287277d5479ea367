"""Keycloak's admin REST API for the stack's own setup steps (the bootstrap admin, master realm)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .common import HOST, SECURE, TLS_DIR, StackError
from .keycloak import ADMIN_PASSWORD, ADMIN_USER, KEYCLOAK_PORT, keycloak_nodes


def base_url() -> str:
    return keycloak_nodes()[0].url if SECURE else f"http://{HOST}:{KEYCLOAK_PORT}"


def _open(req: urllib.request.Request) -> tuple[int, dict[str, str], Any]:
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem")) if SECURE else None
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as response:
            text = response.read().decode()
            return response.status, dict(response.headers), json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        raise StackError(
            f"Keycloak {req.method} {req.full_url}: {error.code} {error.read().decode()[:500]}"
        ) from error


def admin_token() -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN_USER,
            "password": ADMIN_PASSWORD,
        }
    ).encode()
    url = f"{base_url()}/realms/master/protocol/openid-connect/token"
    _, _, body = _open(urllib.request.Request(url, data=form, method="POST"))
    return str(body["access_token"])


def admin(
    method: str, path: str, body: object | None = None, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """One admin API call (path below /admin/realms); returns status, headers and the parsed body."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token or admin_token()}", "Content-Type": "application/json"}
    req = urllib.request.Request(
        f"{base_url()}/admin/realms{path}", data=data, method=method, headers=headers
    )
    return _open(req)
