"""Alert rules as code: the generated files match their one source, promtool accepts them, and every alert
has unit tests (deploy/monitoring/alerts.test.yaml) where it fires and where it stays silent, which fail
when the alert's expression is broken (each expression's comparison is negated and the tests must fail)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import gen_monitoring
from tests.support.tools import require

MONITORING = gen_monitoring.ROOT / "deploy" / "monitoring"
UNIT_TESTS = MONITORING / "alerts.test.yaml"
ALERTS = [alert["alert"] for alert in gen_monitoring.load()["alerts"]]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def write_suite(directory: Path, groups: dict[str, Any]) -> Path:
    """The rules and the unit tests in `directory`, each expected alert given the rule's annotations
    (promtool compares them exactly; the source keeps them in one place)."""
    (directory / "reconciler.rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    annotations = {r["alert"]: r["annotations"] for g in groups["groups"] for r in g["rules"]}
    suite = yaml.safe_load(UNIT_TESTS.read_text())
    for test in suite["tests"]:
        for case in test["alert_rule_test"]:
            for expected in case["exp_alerts"]:
                expected["exp_annotations"] = annotations[case["alertname"]]
    path = directory / "alerts.test.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def generated_groups() -> dict[str, Any]:
    groups: dict[str, Any] = yaml.safe_load(gen_monitoring.RULES_FILE.read_text())
    return groups


def test_generated_files_match_the_source() -> None:
    for path, text in gen_monitoring.render().items():
        assert path.read_text() == text, f"{path.name} is stale: run `make docs`"


def test_prometheus_rule_carries_the_same_rules() -> None:
    rule = yaml.safe_load(gen_monitoring.PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == generated_groups()


def test_every_alert_has_a_for_duration_and_a_runbook_heading() -> None:
    runbook = gen_monitoring.RUNBOOK.read_text()
    headings = {gen_monitoring.anchor(h) for h in re.findall(r"^#+ (.+)$", runbook, flags=re.MULTILINE)}
    runbook_path = gen_monitoring.RUNBOOK.relative_to(gen_monitoring.ROOT).as_posix()
    for group in generated_groups()["groups"]:
        for rule in group["rules"]:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
            page, _, fragment = rule["annotations"]["runbook_url"].partition("#")
            assert page == runbook_path and fragment in headings, rule["alert"]


@pytest.mark.parametrize(
    "path", [gen_monitoring.RULES_FILE, gen_monitoring.PROMETHEUS_RULE], ids=["rules", "PrometheusRule"]
)
def test_promtool_checks_the_rules(path: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(doc.get("spec", doc)))
    result = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            (fires if case["exp_alerts"] else silent).add(case["alertname"])
    assert fires == set(ALERTS), f"no firing case: {sorted(set(ALERTS) - fires)}"
    assert silent == set(ALERTS), f"no silent case: {sorted(set(ALERTS) - silent)}"


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    result = promtool("test", "rules", str(write_suite(tmp_path, generated_groups())), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def negate(expr: str) -> str:
    """The expression with its final comparison inverted: an alert that fires exactly when it should not."""
    operator = re.findall(r" (>|==) ", expr)[-1]
    head, _, tail = expr.rpartition(f" {operator} ")
    return f"{head} {'<=' if operator == '>' else '!='} {tail}"


@pytest.mark.parametrize("alert", ALERTS)
def test_unit_tests_catch_a_broken_expression(alert: str, tmp_path: Path) -> None:
    groups = generated_groups()
    (rule,) = [r for g in groups["groups"] for r in g["rules"] if r["alert"] == alert]
    rule["expr"] = negate(rule["expr"])
    result = promtool("test", "rules", str(write_suite(tmp_path, groups)), cwd=tmp_path)
    assert result.returncode != 0, f"the unit tests still pass with `{rule['expr']}`"
    assert f"alertname: {alert}," in result.stdout + result.stderr
