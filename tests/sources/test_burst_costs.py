"""The burst switch's cost of a listed user: only runs that mostly read measure the listing."""

from __future__ import annotations

from reconciler.clients.costs import RequestCosts
from reconciler.sources.listing_road import _read_cost


def test_a_run_that_mostly_wrote_does_not_measure_the_listing() -> None:
    assert _read_cost(239.0, {"listed": 10_000, "created": 10_000}) is None  # a cold fill: the writes
    assert _read_cost(7.2, {"listed": 10_000, "updated": 100, "unchanged": 9_900}) == 7.2 / 10_000
    assert _read_cost(1.0, {"listed": 0}) is None


def test_request_costs_follow_the_recent_requests() -> None:
    costs = RequestCosts()
    assert costs.mean_s("get_user") is None
    costs.observe("get_user", 0.010)
    assert costs.mean_s("get_user") == 0.010
    for _ in range(200):  # Keycloak got slower: the mean follows within a few dozen requests
        costs.observe("get_user", 0.100)
    mean = costs.mean_s("get_user")
    assert mean is not None and 0.099 < mean <= 0.100
