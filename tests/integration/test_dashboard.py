"""The Grafana dashboard shipped in dashboards/auroratrack.json loads as it is and queries only
what serve exposes: its structure is checked the way Grafana reads it (panels with unique ids
and grid positions, a Prometheus datasource variable every query goes through), each PromQL
expression is parsed (promql-parser, when installed), and every metric it names exists on a
real running serve's /metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from proxy.adminclient import AdminClient
from tests.integration.backtrack_support import backtrack, connect_via, now_iso, wait_captured

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "auroratrack.json"
# Grafana's own variables, replaced by a value of the same kind before parsing
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def expressions(board: dict) -> list[str]:
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metrics an expression selects: from the parsed PromQL when promql-parser is there
    (which also proves it parses), else by their names' shape."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    try:
        import promql_parser
    except ImportError:
        return set(re.findall(r"\bauroratrack_[a-z_]+\b", expr))
    names: set[str] = set()
    walk(promql_parser.parse(expr), names)
    return names


def walk(node, names: set[str]) -> None:
    if type(node).__name__ == "VectorSelector":
        names.add(node.name)
        return
    for attribute in ("args", "expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        for item in child if isinstance(child, list) else [child]:
            if item is not None and not isinstance(item, (str, int, float)):
                walk(item, names)


def test_the_dashboard_is_grafana_json_that_loads_as_it_is():
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys() and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for subject in ("window", "change records", "lag", "sessions", "backtracks", "duration"):
        assert subject in titles


def test_every_metric_the_dashboard_queries_is_on_metrics(svc, mysql_server, database):
    with connect_via(svc, mysql_server, database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO t VALUES (1)")
    wait_captured(svc, mysql_server)
    moment = now_iso()
    with connect_via(svc, mysql_server, database) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM t")
    wait_captured(svc, mysql_server)
    assert backtrack(svc, moment).status == "completed"  # a duration in the histogram too
    text = AdminClient.from_data_dir(svc.service.config.data_dir).get_text("/metrics")
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    queried = set().union(*(metric_names(expr) for expr in expressions(dashboard())))
    assert queried and queried <= exposed, sorted(queried - exposed)
    assert {"auroratrack_backtrack_window_actual_seconds", "auroratrack_change_records_created_total",
            "auroratrack_capture_lag_seconds", "auroratrack_proxy_sessions",
            "auroratrack_backtrack_duration_seconds_bucket"} <= queried


@pytest.mark.parametrize("expr", ["rate(x_total[$__rate_interval])"])
def test_grafana_variables_are_replaced_before_parsing(expr):
    assert metric_names(expr) in ({"x_total"}, set())  # set(): the fallback only knows auroratrack_ names
