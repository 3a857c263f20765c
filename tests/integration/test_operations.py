"""Operating auroratrack: status and /metrics checked against a scripted workload, and the
JSON of every CLI command kept to a stable schema (a snapshot: set UPDATE_SNAPSHOTS=1 to
accept a deliberate change)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from click.testing import CliRunner

from proxy.adminclient import AdminClient
from proxy.cli import main
from tests.integration.backtrack_support import backtrack, connect_via, now_iso, wait_captured

SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "cli_json_schema.json"



def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def test_status_and_metrics_follow_a_scripted_workload(svc, mysql_server, database):
    admin = AdminClient.from_data_dir(svc.service.config.data_dir)
    wait_captured(svc, mysql_server)  # the database fixture's CREATE DATABASE
    before = admin.get("/v1/status")
    busy = connect_via(svc, mysql_server, database)
    idle = connect_via(svc, mysql_server, database)
    with busy.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        for i in range(10):
            cur.execute(f"INSERT INTO t VALUES ({3 * i}, 1), ({3 * i + 1}, 2), ({3 * i + 2}, 3)")
        cur.execute("BEGIN")
        cur.execute("SELECT 1")
    wait_captured(svc, mysql_server)
    status = admin.get("/v1/status")
    text = admin.get_text("/metrics")

    assert status["state"] == "available"
    assert status["sessions"]["total"] == 2 and status["sessions"]["in_transaction"] == 1
    assert status["sessions"]["idle"] == 2  # both wait for their next command
    store, store_before = status["store"], before["store"]
    assert store["transactions"] - store_before["transactions"] == 11  # CREATE TABLE + 10 inserts
    assert store["change_records"] - store_before["change_records"] == 11  # one DDL + one rows event each
    assert store["target_window_s"] == 3600 and 0 < store["actual_window_s"] < 3600
    assert store["window_alert"] is False
    assert status["capture_lag"]["bytes"] == 0 and status["capture_lag"]["seconds"] == 0
    assert status["creation_rate_per_s"] > 0

    assert metric(text, "auroratrack_change_records_stored") == store["change_records"]
    assert metric(text, "auroratrack_backtrack_window_target_seconds") == 3600
    assert metric(text, "auroratrack_backtrack_window_alert") == 0
    assert metric(text, "auroratrack_capture_lag_bytes") == 0
    assert metric(text, "auroratrack_proxy_sessions", '{state="idle"}') == 2
    assert metric(text, "auroratrack_proxy_sessions_in_transaction") == 1
    assert metric(text, "auroratrack_queries_relayed_total") >= 13
    assert metric(text, "auroratrack_gate_open") == 1
    assert metric(text, "auroratrack_change_records_created_total") >= store["change_records"]
    assert metric(text, "auroratrack_backtracks", '{status="completed"}') == 0
    busy.close()
    idle.close()


def schema(value):
    """The shape of a JSON document: keys and value types, lists by their first element."""
    if isinstance(value, dict):
        if value and all("." in key for key in value):  # a mapping keyed by table names
            return {"<db.table>": schema(next(iter(value.values())))}
        if value and all(key.endswith("_s") and isinstance(v, float) for key, v in value.items()):
            return {"<step>_s": "float"}  # timings: which steps ran depends on the backtrack's path
        return {key: schema(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [schema(value[0])] if value else []
    return type(value).__name__ if value is not None else "null"


def same_shape(current, expected) -> bool:
    """Shapes match; a value that was null on one side may hold a value on the other (whether
    an optional field such as the streamer's last event time is set yet depends on timing)."""
    if "null" in (current, expected):
        return True
    if isinstance(current, dict) and isinstance(expected, dict):
        return current.keys() == expected.keys() and all(
            same_shape(current[key], expected[key]) for key in current)
    if isinstance(current, list) and isinstance(expected, list):
        return len(current) == len(expected) and all(map(same_shape, current, expected))
    return current == expected


def run_json(data_dir: Path, *args: str):
    result = CliRunner().invoke(main, [*args, "--data-dir", str(data_dir), "--output", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_cli_json_output_has_a_stable_schema(svc, mysql_server, database):
    data_dir = svc.service.config.data_dir
    client = connect_via(svc, mysql_server, database)
    with client.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO t VALUES (1, 'a')")
    wait_captured(svc, mysql_server)
    moment = now_iso()
    with client.cursor() as cur:
        cur.execute("DELETE FROM t")
    wait_captured(svc, mysql_server)
    record = backtrack(svc, moment)
    assert record.status == "completed"
    changes = run_json(data_dir, "changes", "--table", f"{database}.t")
    shapes = {
        "status": run_json(data_dir, "status"),
        "describe-backtracks": run_json(data_dir, "describe-backtracks"),
        "describe-backtracks ID": run_json(data_dir, "describe-backtracks", record.id),
        "changes": changes,
        "changes --rows": run_json(data_dir, "changes", "--rows", str(changes[-1]["txn_id"])),
    }
    assert {"paused_s", "applying_s", "total_s"} <= shapes["describe-backtracks ID"]["durations"].keys()
    current = {name: schema(document) for name, document in shapes.items()}
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert same_shape(current, expected), (
        "the CLI's JSON shape changed; if on purpose, rerun with UPDATE_SNAPSHOTS=1 and commit "
        f"tests/snapshots/cli_json_schema.json\ncurrent: {json.dumps(current, sort_keys=True)}")
