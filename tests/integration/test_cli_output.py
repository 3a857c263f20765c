"""What the CLI prints fits an 80-column terminal and reads well: the real ``auroratrack``
command (COLUMNS=80, stdout a pipe) against a real serve after a real backtrack.

* ``describe-backtracks``: the creation time whole, the point column there; a backtrack found
  by the 8-character ID the list shows; step durations by readable names.
* ``changes``: every commit time whole on one line; auroratrack's own schema hidden unless --all.
* ``backtrack --dry-run --sql``: strings as text where exact, hex only for binary bytes, and a
  note per table that says how the plan's counts become the statements.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.integration.backtrack_support import backtrack, connect_via, now_iso, wait_captured
from tests.integration.test_cli_safety import run_cli

WIDTH = 80


def run80(*args: str) -> str:
    result = run_cli(*args, columns=WIDTH)
    assert result.returncode == 0, result.stderr
    text = result.stdout.split("\nSQL")[0]  # statements are never wrapped: see clioutput.plan_parts
    too_wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not too_wide, "\n".join(too_wide)
    return result.stdout


def utc(time_us: int, fraction: bool = False) -> str:
    moment = dt.datetime.fromtimestamp(time_us // 1_000_000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{moment}.{time_us % 1_000_000:06d}" if fraction else moment


@pytest.fixture
def history(svc, mysql_server, database):
    """Rows with quotes, accents and binary bytes; a real backtrack (which creates auroratrack's
    marker schema); then one more change to plan a dry run over."""
    with connect_via(svc, mysql_server, database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20) CHARACTER SET utf8mb4, "
                    "code VARBINARY(4), born DATE)")
        cur.execute("INSERT INTO t VALUES (1, 'it''s', X'00ff', '2001-02-03'), (2, 'café', X'41', '1999-12-31')")
        wait_captured(svc, mysql_server)
        moment = now_iso()
        cur.execute("UPDATE t SET name = 'changed'")
    wait_captured(svc, mysql_server)
    record = backtrack(svc, moment)  # closes every client connection
    assert record.status == "completed", record.error
    wait_captured(svc, mysql_server)
    moment = now_iso()
    with connect_via(svc, mysql_server, database) as conn, conn.cursor() as cur:
        cur.execute("UPDATE t SET name = 'again', code = X'42' WHERE id = 1")
        cur.execute("DELETE FROM t WHERE id = 2")
        cur.execute("INSERT INTO t VALUES (3, 'new', NULL, NULL)")
    wait_captured(svc, mysql_server)
    return {"data_dir": str(svc.service.config.data_dir), "record": record, "moment": moment}


def test_describe_backtracks_fits_80_columns(history):
    record = history["record"]
    out = run80("describe-backtracks", "--data-dir", history["data_dir"])
    assert "POINT (UTC)" in out and "CREATED (UTC)" in out
    line = next(line for line in out.splitlines() if line.startswith(record.id[:8]))
    assert utc(record.created_us) in line and utc(record.point["time_us"]) in line and "completed" in line
    one = run80("describe-backtracks", record.id[:8], "--data-dir", history["data_dir"])
    assert record.id in one  # found by the prefix the list shows
    assert "clients paused" in one and "load images" in one and "_s " not in one
    assert "apply_prepare_load_temp_s" in json.dumps(record.durations)  # the JSON keys stay


def test_changes_fit_80_columns_and_hide_auroratracks_own_schema(history, database):
    listed = json.loads(run_cli("changes", "--output", "json", "--data-dir", history["data_dir"]).stdout)
    out = run80("changes", "--data-dir", history["data_dir"])
    for txn in listed:
        assert utc(txn["commit_time_us"], fraction=True) in out  # whole, never folded
        assert not any(table.startswith("auroratrack.") for table in txn["tables"])
    assert "auroratrack." not in out
    assert any(txn["origin"] == "backtrack" and f"{database}.t" in txn["tables"] for txn in listed)
    everything = run80("changes", "--all", "--limit", "50", "--data-dir", history["data_dir"])
    assert "auroratrack.backtrack_marker" in everything


def test_dry_run_sql_spells_strings_and_agrees_with_the_plan(history, database):
    out = run80("backtrack", "--to", history["moment"], "--dry-run", "--sql", "--data-dir", history["data_dir"])
    sql = out[out.index("\nSQL"):]
    assert "_utf8mb4'it''s'" in sql and "_utf8mb4'café'" in sql  # text where it is exact
    assert "X'00ff'" in sql and "X'41'" in sql  # binary bytes: hex is the only exact spelling
    assert "'2001-02-03'" in sql
    plan = json.loads(run_cli("backtrack", "--to", history["moment"], "--dry-run", "--output", "json",
                              "--data-dir", history["data_dir"]).stdout)["plan"]["tables"][f"{database}.t"]
    assert plan == {"delete": 1, "reinsert": 1, "restore": 1}
    assert f"{database}.t: 1 to delete, 1 to restore, 1 to re-insert" in sql
    inserts = [s for s in sql.split(";") if "INSERT INTO" in s]
    assert sum(s.count("), (") + 1 for s in inserts) == 2  # restored + re-inserted: as the note says
