"""deploy/prometheus/alerts.yml: promtool checks the rules and proves each alert fires."""

from __future__ import annotations

from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, exposed_metrics, metrics_used, run, tool

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
PROMTOOL = "Debian package prometheus; .ci/run installs it"


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = run(tool("promtool", PROMTOOL), "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_test_rules_every_alert_fires() -> None:
    result = run(tool("promtool", PROMTOOL), "test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    # Each alert has a case where it fires (a non-empty exp_alerts), so none is untested.
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    fired = {
        case["alertname"]
        for group in doc["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in rules()}


def test_the_alerts_the_issue_asks_for() -> None:
    names = {rule["alert"] for rule in rules()}
    assert {
        "GovernorTenantAboveWarning",
        "GovernorTenantBlocked",
        "GovernorTenantCapProjected",
        "GovernorStoreDown",
        "GovernorPendingBytesGrowing",
        "GovernorUpstreamErrors",
    } <= names


def test_alerts_read_only_metrics_governor_serves() -> None:
    known = exposed_metrics()
    for rule in rules():
        used = metrics_used(rule["expr"])
        assert used, f"{rule['alert']} reads no governor metric"
        assert used <= known, f"{rule['alert']}: unknown metrics {used - known}"
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]
