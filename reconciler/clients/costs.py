"""What Keycloak requests cost this process, measured as it goes: an exponentially weighted mean of each
operation's duration (answered requests only, queueing for a slot excluded), and of a listed user's share
of its page's request, waiting for a slot included (`listed_user`).

The event path's burst switch (reconciler/sources/listing_road.py) compares what the waiting users would cost as one
`GET /users/{id}` each against one listing of the realm; both sides come from here and from the last full
reconcile's own duration, never from a constant tuned on one machine.
"""

from __future__ import annotations

from typing import Final

# Weight of the newest sample: about the last 20 requests count.
EWMA_WEIGHT: Final = 0.05


class RequestCosts:
    """Mean seconds per request, per operation (None until the first sample)."""

    def __init__(self) -> None:
        self._mean_s: dict[str, float] = {}

    def observe(self, operation: str, seconds: float) -> None:
        previous = self._mean_s.get(operation)
        self._mean_s[operation] = (
            seconds if previous is None else previous + EWMA_WEIGHT * (seconds - previous)
        )

    def mean_s(self, operation: str) -> float | None:
        return self._mean_s.get(operation)
