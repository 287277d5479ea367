"""Create a few demo users in the local stack's realm (idempotent), so `make run` shows users flowing."""

from __future__ import annotations

import os
import sys

import httpx

DEMO_USERS = [
    {"username": "ada", "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.test"},
    {"username": "grace", "firstName": "Grace", "lastName": "Hopper", "email": "grace@example.test"},
    {"username": "alan", "firstName": "Alan", "lastName": "Turing", "email": "alan@example.test"},
    {"username": "edsger", "firstName": "Edsger", "lastName": "Dijkstra", "email": "edsger@example.test"},
]


def main() -> int:
    base = os.environ["KEYCLOAK_URL"].rstrip("/")
    realm = os.environ["KEYCLOAK_REALM"]
    with httpx.Client(base_url=base, timeout=30) as http:
        token = (
            http.post(
                "/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": os.environ["KEYCLOAK_ADMIN_USER"],
                    "password": os.environ["KEYCLOAK_ADMIN_PASSWORD"],
                },
            )
            .raise_for_status()
            .json()["access_token"]
        )
        headers = {"Authorization": f"Bearer {token}"}
        for user in DEMO_USERS:
            response = http.post(
                f"/admin/realms/{realm}/users",
                headers=headers,
                json={**user, "enabled": True, "emailVerified": True},
            )
            if response.status_code == 409:
                print(f"demo user {user['username']} already exists", file=sys.stderr)
                continue
            response.raise_for_status()
            print(f"created demo user {user['username']}", file=sys.stderr)
    print(
        f"Open {base}/admin/master/console/#/{realm}/users (admin / admin) and change a user: "
        "the reconciler applies it within seconds.",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
