"""Backtrack across stored-program DDL (proxy.ddlroutines) sent through the proxy to a real
server: triggers, procedures, functions and events created, altered or replaced and dropped,
with DML between the steps that they shape. A backtrack to before each step, newest first,
gives back every definition (SHOW CREATE ... with its sql_mode, character set and time zone, and
the triggers' ACTION_ORDER) and every row; a forward backtrack then redoes them all."""

from __future__ import annotations

import shutil
import subprocess

import pymysql
import pytest

from proxy import ddlrecord, ddlroutines
from proxy.ddllink import PyMySQLExecutor
from proxy.ddlops import Journal, Op
from tests.integration.backtrack_support import backtrack, connect_via, wait_captured
from tests.integration.test_ddl_backtrack import assert_same, execute, moment, schema_snapshot


def snapshot(server, database: str) -> dict:
    """schema_snapshot, the triggers' order and every routine's and event's SHOW CREATE (its
    created/modified times left out: a re-made program gets new ones)."""
    snap = schema_snapshot(server, database)
    with server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER, TRIGGER_NAME "
                    "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s ORDER BY 1, 2, 3, 4", (database,))
        snap["trigger order"] = cur.fetchall()
        cur.execute("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s "
                    "UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
                    (database, database))
        for kind, name in cur.fetchall():
            cur.execute(f"SHOW CREATE {kind} `{name}`")
            snap[f"{kind.lower()} {name}"] = cur.fetchone()
    return snap


def step_by_step(svc, server, database: str, setup: list[str], steps: list[list[str]], force: bool = False,
                 **client_options) -> list:
    """``setup``; then each step (a DDL and the DML after it), its moment and snapshot taken
    before it; then back to before each step, newest first, each time equal to that snapshot;
    then forward to after the last step. Returns the snapshots (the last: after every step)."""
    client = connect_via(svc, server, database, **client_options)
    execute(client, *setup)
    moments, snaps = [], []
    for statements in steps:
        moments.append(moment(svc, server))
        snaps.append(snapshot(server, database))
        execute(client, *statements)
    end_at, end = moment(svc, server), snapshot(server, database)
    for at, want in reversed(list(zip(moments, snaps, strict=True))):
        record = backtrack(svc, at, force=force)
        assert record.status == "completed", (record.error, record.conflicts)
        assert any(s["name"].startswith("ddl_undo_op_") for s in record.steps), record.steps
        assert_same(snapshot(server, database), want)
        wait_captured(svc, server)
    forward = backtrack(svc, end_at, force=force)
    assert forward.status == "completed", (forward.error, forward.conflicts)
    assert_same(snapshot(server, database), end)
    return [*snaps, end]


def test_triggers_created_reordered_replaced_and_dropped(svc, mysql_server, database):
    # BEFORE INSERT triggers that set v from the row's id: the last to fire wins, so the rows
    # show which triggers there were and in what order. Rows are only inserted: the forward
    # re-inserts them under the triggers they were inserted under, which fire again (forced)
    # and write the same values; a row re-inserted under other triggers would not be the same.
    snaps = step_by_step(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20), w INT)",
        "CREATE TRIGGER t_a BEFORE INSERT ON t FOR EACH ROW SET NEW.v = CONCAT('a', NEW.id)",
        "CREATE TRIGGER t_w AFTER DELETE ON t FOR EACH ROW SET @deleted = OLD.id",
        "INSERT INTO t (id) VALUES (1)",
    ], [
        ["CREATE TRIGGER t_b BEFORE INSERT ON t FOR EACH ROW FOLLOWS t_a SET NEW.v = CONCAT('b', NEW.id)",
         "INSERT INTO t (id) VALUES (2)"],
        ["SET SESSION sql_mode = 'ANSI_QUOTES'", "SET NAMES latin1",
         "CREATE TRIGGER t_c BEFORE INSERT ON t FOR EACH ROW PRECEDES t_b SET NEW.w = NEW.id * 10",
         "SET SESSION sql_mode = DEFAULT", "SET NAMES utf8mb4", "INSERT INTO t (id) VALUES (3)"],
        ["CREATE OR REPLACE TRIGGER t_a BEFORE INSERT ON t FOR EACH ROW FOLLOWS t_b SET NEW.v = CONCAT('A', NEW.id)",
         "INSERT INTO t (id) VALUES (4)"],
        ["DROP TRIGGER t_b", "INSERT INTO t (id) VALUES (5)"],
        ["DROP TRIGGER IF EXISTS t_c", "INSERT INTO t (id) VALUES (6)"],
    ], force=True)  # (a backtrack writing a table with triggers is a conflict unless forced)
    def inserting(snap: dict) -> list[str]:
        return [row[4] for row in snap["trigger order"] if row[2] == "INSERT"]

    assert inserting(snaps[1]) == ["t_a", "t_b"] and inserting(snaps[2]) == ["t_a", "t_c", "t_b"]
    assert inserting(snaps[3]) == ["t_c", "t_b", "t_a"] and inserting(snaps[4]) == ["t_c", "t_a"]
    assert inserting(snaps[5]) == ["t_a"] and "trigger t_w" in snaps[5]
    assert snaps[2]["trigger t_c"][0] == "ANSI_QUOTES" and snaps[2]["trigger t_c"][2] == "latin1"


def test_triggers_of_a_table_held_by_drop_table_and_of_its_successor(svc, mysql_server, database):
    """A trigger recorded by its CREATE goes with its table into the hold (as a definition) and
    comes back with it; a new table under the same name gets a trigger of its own."""
    snaps = step_by_step(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'one')",
    ], [
        ["CREATE TRIGGER t_a BEFORE INSERT ON t FOR EACH ROW SET NEW.v = CONCAT('a', NEW.id)",
         "INSERT INTO t (id) VALUES (2)"],
        ["DROP TABLE t"],
        ["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
         "CREATE TRIGGER t_a BEFORE INSERT ON t FOR EACH ROW SET NEW.v = CONCAT('new', NEW.id)",
         "INSERT INTO t (id) VALUES (3)"],
    ], force=True)
    assert "trigger t_a" in snaps[1] and "trigger t_a" not in snaps[2] and "'new'" in snaps[3]["trigger t_a"][1]


def test_routine_ops_a_crash_left_started_are_settled(mysql_server, database, tmp_path):
    """ddlrecord.recover at start: a CREATE PROCEDURE that ran is done; a DROP EVENT that never
    ran is failed (the event is as it was)."""
    journal = Journal(tmp_path / "ddl.db")
    try:
        with mysql_server.connect(database) as conn:
            control = PyMySQLExecutor(conn)
            control.run("CREATE EVENT e ON SCHEDULE AT '2035-01-01 00:00:00' DISABLE DO SELECT 1")
            made = Op("r1", "routine", "CREATE PROCEDURE p() SELECT 1", [], created_us=1,
                      change={"object": "PROCEDURE", "tables": [[database, "p"]], "before": [None]})
            kept = Op("r2", "routine", "DROP EVENT e", [], created_us=2,
                      change={"object": "EVENT", "tables": [[database, "e"]],
                              "before": [ddlroutines.show(control, "EVENT", database, "e")]})
            control.run("CREATE PROCEDURE p() SELECT 1")  # ... then the process died
            for op in (made, kept):
                journal.save(op)
            assert ddlrecord.recover(journal, control) == ["op r1 (routine) done", "op r2 (routine) failed"]
    finally:
        journal.close()


def test_procedures_created_altered_replaced_and_dropped(svc, mysql_server, database):
    snaps = step_by_step(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'seed')",
    ], [
        ["SET SESSION sql_mode = 'PIPES_AS_CONCAT'",
         "CREATE PROCEDURE p(x INT) COMMENT 'first' INSERT INTO t VALUES (x, 'p' || x)",
         "SET SESSION sql_mode = DEFAULT", "CALL p(2)"],
        ["ALTER PROCEDURE p SQL SECURITY INVOKER COMMENT 'second'", "CALL p(3)"],
        ["CREATE OR REPLACE DEFINER = CURRENT_USER PROCEDURE p(x INT) UPDATE t SET v = 'q' WHERE id = x", "CALL p(1)"],
        ["CREATE PROCEDURE IF NOT EXISTS p2() DELETE FROM t WHERE id = 2", "CALL p2()",
         # a compound body: recorded, as this client did not ask for multi-statements
         "CREATE PROCEDURE p3() BEGIN INSERT INTO t VALUES (5, 'five'); UPDATE t SET v = 'x' WHERE id = 5; END",
         "CALL p3()"],
        ["DROP PROCEDURE p", "DROP PROCEDURE IF EXISTS p2", "INSERT INTO t VALUES (4, 'plain')"],
    ])
    assert snaps[1]["procedure p"][1] == "PIPES_AS_CONCAT" and "'second'" in snaps[2]["procedure p"][2]
    assert "procedure p" not in snaps[-1] and "procedure p2" in snaps[-2] and "procedure p3" in snaps[-1]


def test_compound_bodies_from_a_multi_statement_session_are_recorded(svc, mysql_server, database):
    """With CLIENT_MULTI_STATEMENTS (the mariadb CLI's default) a body's ';' could end a
    statement: a text that is one BEGIN ... END (nested IF, CASE, WHILE, a label, columns named
    ``begin``/``end``) is recorded and undone like any other."""
    multi = pymysql.constants.CLIENT.MULTI_STATEMENTS
    step_by_step(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, `begin` INT, `end` INT, v VARCHAR(20))",
        "INSERT INTO t VALUES (1, 1, 2, 'seed')",
    ], [
        ["CREATE TRIGGER t_v BEFORE INSERT ON t FOR EACH ROW body: BEGIN IF NEW.`end` < NEW.`begin` THEN "
         "SET NEW.v = 'backwards'; ELSE SET NEW.v = CASE WHEN NEW.`end` = NEW.`begin` THEN 'empty' ELSE 'ok' END; "
         "END IF; END body", "INSERT INTO t (id, `begin`, `end`) VALUES (2, 5, 3), (3, 4, 4)"],
        ["CREATE PROCEDURE fill(n INT) BEGIN DECLARE i INT DEFAULT 10; WHILE i < 10 + n DO "
         "INSERT INTO t (id, `begin`, `end`) VALUES (i, i, i + 1); SET i = i + 1; END WHILE; "
         "SELECT t.`end`, `begin` FROM t WHERE `end` > 100; END;", "CALL fill(3)"],
        ["DROP PROCEDURE fill", "DROP TRIGGER t_v", "INSERT INTO t VALUES (4, 0, 1, 'after')"],
    ], force=True, client_flag=multi)  # (a backtrack writing a table with triggers is a conflict unless forced)
    ops = [op for op in svc.service.ddl_holder.journal.ops() if op.kind == "routine"]
    assert {op.change["object"] for op in ops} >= {"TRIGGER", "PROCEDURE"}


def test_mariadb_cli_delimiter_script_is_recorded(svc, mysql_server, database):
    """The real mariadb client with DELIMITER: each CREATE arrives as one query with its body."""
    cli = shutil.which("mariadb") or shutil.which("mysql")
    if cli is None:
        pytest.skip("no mariadb/mysql command-line client on PATH")
    execute(connect_via(svc, mysql_server, database), "CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    before_at, before = moment(svc, mysql_server), snapshot(mysql_server, database)
    script = ("DELIMITER //\nCREATE TRIGGER t_v BEFORE INSERT ON t FOR EACH ROW BEGIN\n"
              "  IF NEW.v IS NULL THEN SET NEW.v = NEW.id * 2; END IF;\nEND//\n"
              "CREATE PROCEDURE add_row(x INT) BEGIN\n  INSERT INTO t (id) VALUES (x);\nEND//\n"
              "DELIMITER ;\nCALL add_row(7);\n")
    done = subprocess.run([cli, "--no-defaults", "-h", "127.0.0.1", "-P", str(svc.port), "-u", mysql_server.user,
                           f"-p{mysql_server.password}", database], input=script, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    after_at, after = moment(svc, mysql_server), snapshot(mysql_server, database)
    assert "trigger t_v" in after and "procedure add_row" in after
    record = backtrack(svc, before_at, force=True)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(snapshot(mysql_server, database), before)
    wait_captured(svc, mysql_server)
    record = backtrack(svc, after_at, force=True)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(snapshot(mysql_server, database), after)


def test_a_second_statement_after_a_body_stays_a_conflict(svc, mysql_server, database):
    """``CREATE ... BEGIN ... END; SELECT 2`` in one query: the CREATE runs as sent, unrecorded,
    and a backtrack across it is refused as DDL."""
    client = connect_via(svc, mysql_server, database, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
    before_at = moment(svc, mysql_server)
    with client.cursor() as cur:
        cur.execute("CREATE PROCEDURE p() BEGIN SELECT 1; END; SELECT 2")
        while cur.nextset():
            pass
    moment(svc, mysql_server)
    assert not [op for op in svc.service.ddl_holder.journal.ops() if op.kind == "routine"]
    record = backtrack(svc, before_at)
    assert record.status == "failed" and any(c["kind"] == "ddl" for c in record.conflicts), record.conflicts


def test_functions_created_altered_replaced_and_dropped(svc, mysql_server, database):
    snaps = step_by_step(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1)",
    ], [
        ["CREATE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x * 2", "INSERT INTO t VALUES (2, f(2))"],
        ["ALTER FUNCTION f COMMENT 'doubles'", "UPDATE t SET v = f(v) WHERE id = 1"],
        ["CREATE OR REPLACE FUNCTION f(x INT) RETURNS INT DETERMINISTIC RETURN x * 3",
         "INSERT INTO t VALUES (3, f(3))"],
        ["DROP FUNCTION f", "DELETE FROM t WHERE id = 2"],
    ])
    assert "'doubles'" in snaps[2]["function f"][2] and "x * 3" in snaps[3]["function f"][2]
    assert "function f" not in snaps[-1]


def test_events_created_altered_renamed_and_dropped(svc, mysql_server, database):
    snaps = step_by_step(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1)",
    ], [
        ["SET SESSION time_zone = '+05:00'",
         "CREATE EVENT e ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM t",
         "SET SESSION time_zone = DEFAULT", "INSERT INTO t VALUES (2, 2)"],
        ["ALTER EVENT e ON SCHEDULE EVERY 2 DAY STARTS '2031-01-01 00:00:00' COMMENT 'two'",
         "UPDATE t SET v = 3 WHERE id = 2"],
        ["ALTER EVENT e RENAME TO e2", "INSERT INTO t VALUES (3, 3)"],
        ["CREATE OR REPLACE EVENT e2 ON SCHEDULE AT '2032-01-01 00:00:00' ON COMPLETION PRESERVE DISABLE "
         "DO INSERT INTO t VALUES (9, 9)", "DELETE FROM t WHERE id = 1"],
        ["DROP EVENT e2", "INSERT INTO t VALUES (4, 4)"],
    ])
    assert snaps[1]["event e"][2] == "+05:00" and "'two'" in snaps[2]["event e"][3]
    assert "event e2" in snaps[3] and "event e" not in snaps[3] and "event e2" not in snaps[-1]


def test_statement_the_server_refuses_records_nothing(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY)")
    journal = svc.service.ddl_holder.journal
    done_before = [op.op_id for op in journal.ops("done")]
    refused = {
        "DROP PROCEDURE missing": 1305, "DROP FUNCTION missing_f": 1305, "DROP TRIGGER missing": 1360,
        "DROP EVENT missing": 1539, "ALTER PROCEDURE missing COMMENT 'x'": 1305,
        "CREATE TRIGGER t_x BEFORE INSERT ON no_table FOR EACH ROW SET @a = 1": 1146,
    }
    for statement, errno in refused.items():
        with pytest.raises(pymysql.err.MySQLError) as failed:
            execute(client, statement)
        assert failed.value.args[0] == errno, (statement, failed.value.args)
    assert [op.op_id for op in journal.ops("done")] == done_before  # nothing a backtrack would undo
    failed_ops = {op.statement for op in journal.ops("failed") if op.kind == "routine"}
    assert failed_ops == set(refused) - {"DROP FUNCTION missing_f"}  # (no stored function: maybe a UDF)
    execute(client, "INSERT INTO t VALUES (1)")  # the session goes on
