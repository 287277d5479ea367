"""Monitoring against a live `reconciler run`: its /metrics passes `promtool check metrics`, and a real
Prometheus (Debian's package, run here on loopback with a temporary config and data directory) scraping it
loads the alert rules and answers every panel query of the Grafana dashboard with data, without error."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import yaml

from reconciler.base.config import Settings
from scripts import gen_monitoring
from tests.conftest import override
from tests.support.kafka import publish
from tests.support.kafka_offsets import create_topics, delete_topics
from tests.support.keycloak_admin import KeycloakTestAdmin
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.process import start_reconciler, stop
from tests.support.tools import require

pytestmark = pytest.mark.stack

DASHBOARD = gen_monitoring.ROOT / "deploy" / "grafana" / "keycloak-user-reconciler.json"
JOB = "keycloak-user-reconciler"
# Grafana's built-in variables, as Grafana would fill them for a short range (the test scrapes every second).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


async def _get(url: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url, params=params)


async def _status(url: str) -> int:
    try:
        return (await _get(url)).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture(scope="module")
async def live(
    settings: Settings,
    kc_admin: KeycloakTestAdmin,
    users_collection: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[str]:
    """A `reconciler run` that has applied an event, run a full reconcile and dead-lettered a message; its
    /metrics URL. Its user-events and dead-letter topics are private (the garbage stays here); admin events
    come from Keycloak on the shared topic."""
    suffix = uuid.uuid4().hex[:8]
    config = override(
        settings,
        kafka_group_id=f"monitoring-{suffix}",
        kafka_user_events_topic=f"monitoring-{suffix}.events",
        kafka_dead_letter_topic=f"monitoring-{suffix}.dlq",
        http_host="127.0.0.1",
        http_port=free_port(),
        reconcile_interval_s=3600,
        event_recheck_delay_s=0.0,
        # Only this fixture's events: the shared admin topic holds every earlier test's history.
        consumer_start_offset="latest",
    )
    topics = {config.kafka_user_events_topic: 1, config.kafka_dead_letter_topic: 1}
    await create_topics(config.kafka_bootstrap_servers, topics)
    log_file = tmp_path_factory.mktemp("reconciler") / "run.log"
    process = start_reconciler(config, "run", log_file=log_file)
    base = f"http://127.0.0.1:{config.http_port}"
    try:
        await eventually(
            lambda: _status(f"{base}/readyz"), until=lambda s: s == 200, timeout_s=60, what="/readyz"
        )
        user_id = await kc_admin.create_user(first_name="Monitored")
        # The event path applied it (the start-up full reconcile may have written the document first).
        await eventually(
            lambda: users_collection.find_one({"external_id": user_id}),
            until=lambda doc: doc is not None,
            timeout_s=30,
            what="the user stored",
        )
        await eventually(
            lambda: _get(f"{base}/metrics"),
            until=lambda r: (
                "reconciler_event_apply_latency_seconds_count " in r.text
                and "reconciler_event_apply_latency_seconds_count 0.0" not in r.text
            ),
            timeout_s=30,
            what="the event path applied the user's event",
        )
        await publish(config.kafka_bootstrap_servers, config.kafka_user_events_topic, [b"{not json"])
        await eventually(
            lambda: _get(f"{base}/metrics"),
            until=lambda r: (
                "reconciler_dead_letters_total{" in r.text
                and 'reconciler_reconcile_runs_total{outcome="success"}' in r.text
            ),
            timeout_s=60,
            what="a dead letter and a successful full reconcile in /metrics",
        )
        yield f"{base}/metrics"
    finally:
        exit_code = stop(process)
        await delete_topics(config.kafka_bootstrap_servers, topics)
    assert exit_code == 0, log_file.read_text()[-3000:]


async def test_metrics_pass_promtool_check_metrics(live: str) -> None:
    exposition = (await _get(live)).text
    lint = await asyncio.create_subprocess_exec(
        require("promtool"),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(lint.communicate(exposition.encode()), 60)
    # promtool prints one line per lint problem (and exits 3); silence is a pass.
    assert lint.returncode == 0 and not output.strip(), output.decode()


@pytest.fixture(scope="module")
def prometheus(live: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus scraping the live reconciler every second, with the alert rules loaded; its base URL."""
    directory = tmp_path_factory.mktemp("prometheus")
    target = live.removeprefix("http://").removesuffix("/metrics")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(gen_monitoring.RULES_FILE)],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    with (directory / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                require("prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        assert stop(process, signal.SIGTERM, timeout_s=30) == 0, (directory / "prometheus.log").read_text()[
            -3000:
        ]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    (job,) = [v for v in dashboard["templating"]["list"] if v["name"] == "job"]
    variables = {**GRAFANA_VARIABLES, "$job": job["current"]["value"]}
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in variables.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            queries.append((panel["title"], expr))
    return queries


async def _query(prometheus: str, expr: str) -> dict[str, Any]:
    response = await _get(f"{prometheus}/api/v1/query", query=expr)
    body: dict[str, Any] = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body


async def test_prometheus_loads_the_alert_rules(prometheus: str) -> None:
    await eventually(
        lambda: _status(f"{prometheus}/-/ready"), until=lambda s: s == 200, timeout_s=60, what="ready"
    )
    body = (await _get(f"{prometheus}/api/v1/rules")).json()
    loaded = {rule["name"] for group in body["data"]["groups"] for rule in group["rules"]}
    assert loaded == {alert["alert"] for alert in gen_monitoring.load()["alerts"]}
    assert all(r["health"] != "err" for g in body["data"]["groups"] for r in g["rules"]), body


async def test_every_dashboard_query_answers_with_data(prometheus: str) -> None:
    await eventually(
        lambda: _status(f"{prometheus}/-/ready"), until=lambda s: s == 200, timeout_s=60, what="ready"
    )
    queries = dashboard_queries()
    assert len(queries) >= 20
    for title, expr in queries:
        # Rates need two scrapes after the reconciler's series appeared: poll each until it has data.
        body = await eventually(
            lambda expr=expr: _query(prometheus, expr),
            until=lambda b: bool(b["data"]["result"]),
            timeout_s=60,
            interval_s=0.5,
            what=f"data for panel {title!r}: {expr}",
        )
        assert body["data"]["resultType"] == "vector"


def test_dashboard_covers_the_operator_questions() -> None:
    exprs = " ".join(expr for _, expr in dashboard_queries())
    for metric in (
        "consumer_lag_messages",
        "consumer_lag_seconds",
        "event_apply_latency_seconds",
        "events_total",
        "dead_letters_total",
        "user_changes_total",
        "reconcile_duration_seconds",
        "reconcile_last_success_timestamp_seconds",
        "keycloak_requests_total",
        "mass_deactivation_guard_trips_total",
        "queue_users",
    ):
        assert f"reconciler_{metric}" in exprs, metric
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    assert re.search(r"action, synced_by", exprs)
