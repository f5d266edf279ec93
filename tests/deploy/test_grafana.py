"""deploy/grafana/governor.json: a dashboard Grafana can import, reading governor's metrics.

Grafana cannot run here; the checks are those of its importer (valid JSON, a dashboard
object with panels, no fixed id) plus ours: the data source is the ``DS_PROMETHEUS``
variable, never a fixed uid, every panel reads metrics governor serves, and promtool
parses every query.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, exposed_metrics, metrics_used, run, tool

DASHBOARD = DEPLOY / "grafana" / "governor.json"
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
PANEL_TYPES = {"row", "timeseries", "bargauge", "stat", "gauge", "table", "state-timeline"}


def dashboard() -> dict[str, Any]:
    doc = json.loads(DASHBOARD.read_text())
    assert isinstance(doc, dict)
    return doc


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def test_importable_dashboard() -> None:
    doc = dashboard()
    assert doc["id"] is None, "a fixed id makes an import overwrite another dashboard"
    assert doc["uid"] == "governor"
    assert doc["title"]
    assert isinstance(doc["schemaVersion"], int)
    assert doc["schemaVersion"] >= 36
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in doc["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert 0 <= grid["x"] <= grid["x"] + grid["w"] <= 24, panel["title"]


def test_data_source_is_a_variable() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["tenant"]["datasource"] == DS
    for panel in panels():
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DS, panel["title"]
    assert '"uid": "prometheus"' not in DASHBOARD.read_text(), "a fixed data source uid"


def test_panels_the_issue_asks_for() -> None:
    by_title = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in panels()}
    wanted = {
        "Usage against cap": ["governor_usage_bytes", "governor_quota_bytes"],
        "Transfer rate": ["governor_transfer_bytes_total"],
        "Blocked": ["governor_blocked"],
        "Time to reset": ["governor_quota_reset_timestamp_seconds"],
        "Requests by outcome": ["governor_requests_total"],
        "Upstream latency (to response headers)": ["governor_upstream_response_seconds_bucket"],
        "Store up": ["governor_store_up"],
        "Store: pending bytes and flush time": ["governor_store_pending_bytes"],
    }
    for title, metrics in wanted.items():
        assert title in by_title, f"no panel {title!r}"
        for metric in metrics:
            assert metric in by_title[title], f"{title!r} does not read {metric}"


def test_queries_read_only_metrics_governor_serves() -> None:
    known = exposed_metrics()
    used: set[str] = set()
    for expr in queries():
        names = metrics_used(expr)
        assert names, f"no governor metric in {expr!r}"
        assert names <= known, f"unknown metrics {names - known} in {expr!r}"
        used |= names
    assert len(used) >= 10


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule for promtool."""

    def filled(expr: str) -> str:
        expr = expr.replace("$__rate_interval", "5m").replace("$tenant", ".*")
        assert "$" not in expr, f"a variable promtool cannot know: {expr!r}"
        return expr

    recorded = [
        {"record": f"dashboard:query{i}", "expr": filled(expr)} for i, expr in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = run(
        tool("promtool", "Debian package prometheus; .ci/run installs it"), "check", "rules", path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"SUCCESS: {len(recorded)} rules found", result.stdout)
