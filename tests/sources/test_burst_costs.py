"""The burst switch's cost of a listed user: only runs that mostly read measure the listing."""

from __future__ import annotations

import pytest

from reconciler.clients.costs import RequestCosts
from reconciler.sources.consumer import expected_waiting
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


def test_a_backlog_of_records_that_name_none_of_our_users_is_not_a_burst() -> None:
    # 10,000 records read, 50 of them hinted one of our users, none coalesced: the 20,000 unread records
    # are expected to name about 100 of ours, not 20,000 (a topic shared with other realms)
    waiting = expected_waiting(
        queued=3, unread_records=20_000, records_read=10_000, hints_read=50, distinct_share=1.0
    )
    assert waiting == 3 + 100


def test_waiting_users_follow_the_distinct_share_and_start_at_one_user_a_record() -> None:
    assert (
        expected_waiting(queued=0, unread_records=500, records_read=0, hints_read=0, distinct_share=1.0)
        == 500
    )
    # every record ours, but 9 of 10 hints named a user already waiting
    assert expected_waiting(
        queued=10, unread_records=1_000, records_read=200, hints_read=200, distinct_share=0.1
    ) == pytest.approx(110)
    # an admin event can name several users (a group's members): more than one hint a record
    assert (
        expected_waiting(queued=0, unread_records=10, records_read=4, hints_read=8, distinct_share=1.0) == 20
    )
