"""The CLI's tables at 80 columns (rich Console(width=80)), with records shaped like the admin
API's: nothing an ID, a time or an LSN is cut, no column dropped; readable step durations;
dry-run SQL with strings spelled as text where that is exact."""

from __future__ import annotations

import datetime as dt

from rich.console import Console

from proxy import clioutput
from proxy.sqldisplay import readable_sql

T0 = int(dt.datetime(2026, 12, 6, 14, 8, 43, 123456, tzinfo=dt.UTC).timestamp()) * 1_000_000 + 123456


def render(renderable, width: int = 80) -> str:
    console = Console(width=width, color_system=None, highlight=False)
    with console.capture() as captured:
        console.print(renderable)
    lines = captured.get().splitlines()
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    return captured.get()


def record(n: int, **extra) -> dict:
    return {"id": f"{n:08x}-6e80-47da-9157-c893caadc3bc", "status": "completed", "dry_run": False,
            "created_us": T0 + n * 1_000_000, "point": {"time_us": T0 - 60_000_000, "txn_id": 7, "lsn": 9},
            "durations": {"total_s": 12.3456, "paused_s": 0.2, "apply_prepare_load_temp_s": 0.01}, **extra}


def test_describe_backtracks_list_keeps_every_column_and_time_whole():
    records = [record(1), record(2, dry_run=True, status="applying"),
               record(3, status="failed", error="2 binlog conflict(s); nothing was written (use --force to go "
                                                  "ahead) and a long explanation that goes on and on\n  - details")]
    out = render(clioutput.backtracks_table(records))
    assert "CREATED (UTC)" in out and "POINT (UTC)" in out and "TOOK" in out
    for n in (1, 2, 3):
        line = next(line for line in out.splitlines() if line.startswith(f"{n:08x} "))
        assert clioutput.utc_text(T0 + n * 1_000_000) in line and "2026-12-06 14:07:43" in line
    assert "00000003: 2 binlog conflict(s)" in out and "details" not in out  # errors: first line, below


def test_changes_keep_commit_times_lsns_and_gtids_whole():
    txns = [{"txn_id": 1000 + i, "commit_time_us": T0 + i, "first_lsn": 123456 + i, "last_lsn": 123460 + i,
             "gtid": gtid, "origin": "client", "operations": ["update"],
             "rows": {"a_rather_long_database_name.with_a_long_table_name": {"update": 12, "insert": 3}},
             "statements": ["UPDATE with_a_long_table_name SET v = v + 1 WHERE id BETWEEN 1 AND 1000 " * 3]}
            for i, gtid in enumerate(["0-1-345", "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"])]
    out = render(clioutput.changes_table(txns))
    for i, txn in enumerate(txns):
        assert f"2026-12-06 14:08:43.{123456 + i}" in out
        assert f"{txn['first_lsn']}-{txn['last_lsn']}" in out
    assert "0-1-345" in out and "…" in out  # the statement is shortened, not the times


def test_step_durations_have_readable_names_in_a_sensible_order():
    out = render(clioutput.backtrack_view(record(1, durations={
        "commit_s": 0.001, "apply_prepare_load_temp_s": 0.5, "total_s": 1.0, "apply_something_new_s": 0.1})))
    places = [out.index(f"{name}  ") for name in ("total", "load images, before the pause", "commit",
                                                   "apply something new")]
    assert places == sorted(places)
    assert "_s" not in out.replace("dry_run", "")


def test_both_clocks_in_the_full_view():
    out = render(clioutput.backtrack_view(record(1, requested_to="2026-12-06T14:08:43.123456Z")))
    assert "2026-12-06 14:08:43.123456Z (" in out and ", local)" in out


def test_strings_are_spelled_where_exact():
    sql = ("INSERT INTO `d`.`t` VALUES (1, _utf8mb4 X'6974277320636166c3a9', X'00ff', _latin1 X'414243', "
           "_latin1 X'e9', _utf8mb4 X'610a62', _utf8mb4 X'615c62', _utf8mb4 X'', _utf8mb4 X'ff', _sjis X'4142', "
           "CAST(_utf8mb4 X'7b2261223a20317d' AS JSON), '2001-02-03', 1.5)")
    assert readable_sql(sql) == (
        "INSERT INTO `d`.`t` VALUES (1, _utf8mb4'it''s café', X'00ff', _latin1'ABC', "
        "_latin1 X'e9', _utf8mb4 X'610a62', _utf8mb4 X'615c62', _utf8mb4'', _utf8mb4 X'ff', _sjis X'4142', "
        "CAST(_utf8mb4'{\"a\": 1}' AS JSON), '2001-02-03', 1.5)")


def test_the_sql_notes_agree_with_the_plan_counts():
    notes = clioutput.statement_notes({"d.t": {"delete": 1, "reinsert": 2, "restore": 3}})
    assert notes[1] == ("-- d.t: 1 to delete, 3 to restore, 2 to re-insert: DELETE the affected rows, "
                        "then INSERT 5 row(s) as they were at the point")


def test_values_are_printed_as_they_are_never_as_markup_or_emoji(capsys, monkeypatch):
    """A fingerprint's ``:AB:`` is rich's emoji code for 🆎, and ``[bold]`` its markup: the CLI
    prints data, so both must come out exactly as the service sent them (a flaky CI failure was
    the 1 in ~8 certificate whose fingerprint holds ``:AB:``)."""
    fingerprint = "B5:E9:3B:ED:9F:8D:32:4F:8B:39:3C:16:A5:A0:92:E6:7B:AB:16:B2:4D:3D:29:B0:8C:26:F1:B8:9A:10:96:AD"
    status = {"state": "available", "pid": 1, "capture": False, "last_backtrack": None,
              "upstream": {"address": "127.0.0.1:3306", "server_version": "10.11 [bold]x[/bold] :ok:"},
              "tls": {"client": {"sha256_fingerprint": fingerprint}},
              "sessions": {"total": 0, "in_transaction": 0}}
    monkeypatch.setenv("COLUMNS", "80")
    clioutput.print_view(clioutput.status_view(status))
    out = capsys.readouterr().out
    assert fingerprint in "".join(out.split())
    assert "10.11 [bold]x[/bold] :ok:" in out
