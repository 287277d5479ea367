"""What reached Keycloak through the recording proxy: only valid user paths, counted."""

from __future__ import annotations

import re
from collections.abc import Iterable

from tests.support.http_proxy import ProxiedRequest

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


_ALLOWED_PATHS = (
    re.compile(r"^/realms/(?P<realm>[^/?]+)/protocol/openid-connect/token$"),
    re.compile(r"^/admin/realms/(?P<realm>[^/?]+)/users$"),
    re.compile(r"^/admin/realms/(?P<realm>[^/?]+)/users/count$"),
    re.compile(r"^/admin/realms/(?P<realm>[^/?]+)/users/(?P<id>[^/?]+)(/groups|/role-mappings/realm)?$"),
    # The event-store sweep (scenarios that switch it on).
    re.compile(r"^/admin/realms/(?P<realm>[^/?]+)/(admin-events|events|events/config)$"),
)


def audit_requests(requests: Iterable[ProxiedRequest], realm: str) -> tuple[int, set[str], list[str]]:
    """(requests, user ids requested, problems): every request must be a known read of `realm`, and every
    /admin/realms/<realm>/users/<id> path must carry a canonical UUID."""
    count = 0
    ids: set[str] = set()
    problems: list[str] = []
    for request in requests:
        count += 1
        path = request.raw_path.split("?", 1)[0]
        match = next((m for pattern in _ALLOWED_PATHS if (m := pattern.match(path))), None)
        if match is None or match.group("realm") != realm:
            problems.append(f"{request.method} {request.raw_path[:200]}")
            continue
        user_id = match.groupdict().get("id")
        if user_id is not None and user_id != "count":
            if not UUID_RE.match(user_id):
                problems.append(f"{request.method} {request.raw_path[:200]}")
            ids.add(user_id)
        if request.method not in ("GET", "POST") or (request.method == "POST" and "token" not in path):
            problems.append(f"{request.method} {request.raw_path[:200]}")
    return count, ids, problems
