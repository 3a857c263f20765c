"""Backtrack across recorded DDL (proxy.ddlrecord): RENAME TABLE, CREATE TABLE, ALTER TABLE ADD
COLUMN sent through the proxy are undone exactly (SHOW CREATE TABLE and every row equal the
snapshot at the point), then redone by a forward backtrack. Rows logged before the DDL are
decoded with the layout they were logged with."""

from __future__ import annotations

from proxy import ddlrecord
from proxy.ddllink import PyMySQLExecutor
from proxy.ddlops import HOLD_SCHEMA, Journal, Op
from tests.integration.backtrack_support import backtrack, connect_via, wait_captured
from tests.integration.test_ddl_backtrack import assert_same, execute, moment, schema_snapshot, there_and_back


def test_rename_table_undone_then_redone(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))", "CREATE TABLE keep (id INT)",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    before_at = moment(svc, mysql_server)
    before = schema_snapshot(mysql_server, database)
    execute(client, "INSERT INTO t VALUES (3, 'c')", "RENAME TABLE t TO u, keep TO kept",
            "UPDATE u SET v = 'B' WHERE id = 2", "INSERT INTO u VALUES (4, 'd')", "INSERT INTO kept VALUES (7)")
    after_at = moment(svc, mysql_server)
    after = schema_snapshot(mysql_server, database)
    assert "create u" in after and "create t" not in after
    dry = backtrack(svc, before_at, dry_run=True)
    assert [(s["kind"], s["undo"]) for s in dry.plan["ddl_steps"]] == [
        ("rename", f"RENAME TABLE `{database}`.`kept` TO `{database}`.`keep`, `{database}`.`u` TO `{database}`.`t`")]
    there_and_back(svc, mysql_server, database, before_at, before, after_at, after)


def test_create_table_then_inserts_undone_then_redone(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    before_at = moment(svc, mysql_server)
    before = schema_snapshot(mysql_server, database)
    execute(client, "INSERT INTO t VALUES (2)",
            "CREATE TABLE n (id INT AUTO_INCREMENT PRIMARY KEY, s VARCHAR(20), KEY (s))",
            "INSERT INTO n (s) VALUES ('x'), ('y'), ('z')", "DELETE FROM n WHERE s = 'y'", "INSERT INTO t VALUES (3)")
    after_at = moment(svc, mysql_server)
    after = schema_snapshot(mysql_server, database)
    assert len(after["rows"]["n"]) == 2
    record = backtrack(svc, before_at)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(schema_snapshot(mysql_server, database), before)
    # The created table is held (moved aside, empty now: its rows were undone first), not destroyed.
    held = mysql_server.query(f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                              f"'{HOLD_SCHEMA}' AND TABLE_NAME LIKE '%\\_n'")
    assert held, "the created table was not moved into the hold schema"
    wait_captured(svc, mysql_server)
    forward = backtrack(svc, after_at)
    assert forward.status == "completed", (forward.error, forward.conflicts)
    assert_same(schema_snapshot(mysql_server, database), after)


def test_add_column_then_updates_undone_then_redone(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, v INT, note VARCHAR(10), KEY (v)) COMMENT 'first'",
            "INSERT INTO t VALUES (1, 10, 'a'), (2, 20, 'b'), (3, 30, 'c')")
    before_at = moment(svc, mysql_server)
    before = schema_snapshot(mysql_server, database)
    execute(client, "UPDATE t SET v = 11 WHERE id = 1", "DELETE FROM t WHERE id = 3",  # older layout
            "ALTER TABLE t ADD COLUMN w INT NOT NULL DEFAULT 5 AFTER id, ADD INDEX w_note (w, note), "
            "DROP INDEX v, ALTER COLUMN note SET DEFAULT 'n', COMMENT 'second'",
            "UPDATE t SET w = id * 2", "INSERT INTO t (id, v) VALUES (4, 40)", "UPDATE t SET note = 'B' WHERE id = 2")
    after_at = moment(svc, mysql_server)
    after = schema_snapshot(mysql_server, database)
    assert "`w` int(11) NOT NULL DEFAULT 5" in after["create t"]
    records = there_and_back(svc, mysql_server, database, before_at, before, after_at, after)
    # Three steps each way: the rows after the ALTER, the ALTER, the rows before it.
    assert len(records[0].steps) >= 3, records[0].steps


def test_drop_column_and_narrowing_modify_undone_then_redone(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, v INT, s VARCHAR(20), d DECIMAL(10,3), KEY (v))",
            "INSERT INTO t VALUES (1, 10, 'alpha-long', 1.125), (2, 20, 'beta', -2.5), (3, NULL, NULL, NULL)")
    before_at = moment(svc, mysql_server)
    before = schema_snapshot(mysql_server, database)
    execute(client, "UPDATE t SET s = 'gamma-longer' WHERE id = 2",
            "SET SESSION sql_mode = ''",  # a narrowing MODIFY truncates (with warnings) instead of failing
            "ALTER TABLE t DROP COLUMN v, MODIFY s VARCHAR(4), CHANGE d dd DECIMAL(4,1)",
            "INSERT INTO t VALUES (4, 'abcd', 1.5)", "UPDATE t SET s = 'zz' WHERE id = 1")
    after_at = moment(svc, mysql_server)
    after = schema_snapshot(mysql_server, database)
    assert "`v`" not in after["create t"] and after["rows"]["t"][1][1] == b"gamm".hex().upper()
    records = there_and_back(svc, mysql_server, database, before_at, before, after_at, after)
    assert len(records[0].steps) >= 3, records[0].steps
    # The saved columns are held data: listed with the op, in the hold schema.
    saved = mysql_server.query(f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                               f"'{HOLD_SCHEMA}' AND TABLE_NAME LIKE '%\\_s\\_t'")
    assert saved


def test_alter_that_renames_a_referenced_table_without_key_is_not_recorded(svc, mysql_server, database):
    """No key to restore by, and no whole-table swap back under the old name (the child's
    foreign key follows the table to its new name): run as sent, a DDL conflict at backtrack
    time. (Without the rename, ddlsave swaps it back in place: test_ddl_shapes.)"""
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (code INT, v INT, UNIQUE KEY (code))",
            "CREATE TABLE child (id INT PRIMARY KEY, code INT, FOREIGN KEY (code) REFERENCES t (code))",
            "INSERT INTO t VALUES (1, 1)")
    before_at = moment(svc, mysql_server)
    execute(client, "ALTER TABLE t DROP COLUMN v, RENAME TO u")
    wait_captured(svc, mysql_server)
    record = backtrack(svc, before_at)
    assert record.status == "failed"
    assert any(c["kind"] == "ddl" and "DROP COLUMN" in c["reason"] for c in record.conflicts), record.conflicts


def test_recorded_ops_a_crash_left_started_are_settled_by_what_the_server_shows(mysql_server, database, tmp_path):
    """ddlrecord.recover at start: an op journalled ``started`` whose statement ran is done,
    one whose statement never ran is failed (a backtrack then names it a conflict)."""
    mysql_server.query(f"CREATE TABLE `{database}`.a (id INT PRIMARY KEY)")
    mysql_server.query(f"CREATE TABLE `{database}`.b (id INT PRIMARY KEY)")
    journal = Journal(tmp_path / "ddl.db")
    try:
        with mysql_server.connect() as conn:
            control = PyMySQLExecutor(conn)
            before_b = control.run(f"SHOW CREATE TABLE `{database}`.b").rows[0][1]
            ran = Op("r1", "alter", "ALTER TABLE a ADD COLUMN v INT", [], created_us=1,
                     change={"tables": [[database, "a"]], "before": control.run(
                         f"SHOW CREATE TABLE `{database}`.a").rows[0][1]})
            control.run(f"ALTER TABLE `{database}`.a ADD COLUMN v INT")  # ... then the process died
            never = Op("r2", "alter", "ALTER TABLE b ADD COLUMN v INT", [], created_us=2,
                       change={"tables": [[database, "b"]], "before": before_b})
            renamed = Op("r3", "rename", "RENAME TABLE gone TO there", [], created_us=3,
                         change={"tables": [[database, "gone"], [database, "there"]]})
            for op in (ran, never, renamed):
                journal.save(op)
            outcomes = ddlrecord.recover(journal, control)
        assert outcomes == ["op r1 (alter) done", "op r2 (alter) failed", "op r3 (rename) done"]
        assert "`v` int(11)" in journal.get("r1").change["after"]
    finally:
        journal.close()


def test_comment_marks_inside_strings_do_not_stop_recording(svc, mysql_server, database):
    """``DEFAULT '#fff'`` or a ';' in a table comment: one statement, no comment; recorded."""
    client = connect_via(svc, mysql_server, database)
    before_at, before = moment(svc, mysql_server), schema_snapshot(mysql_server, database)
    execute(client, "CREATE TABLE colors (id INT PRIMARY KEY, hex CHAR(7) DEFAULT '#ffffff', "
                    "dash VARCHAR(4) DEFAULT '--') COMMENT 'palette; /* web */'",
            "INSERT INTO colors (id) VALUES (1)")
    after_at, after = moment(svc, mysql_server), schema_snapshot(mysql_server, database)
    assert after["rows"]["colors"] == [("31", "23666666666666", "2D2D")]
    there_and_back(svc, mysql_server, database, before_at, before, after_at, after)


def test_schemas_created_altered_and_dropped_empty_are_undone(svc, mysql_server, database):
    """CREATE DATABASE (a table made in it after), ALTER DATABASE, and DROP DATABASE of a schema
    with only a view and a procedure: back to before each, then forward again."""
    made, altered, emptied = (database[:50] + suffix for suffix in ("_new", "_alt", "_emp"))
    mysql_server.query(f"CREATE DATABASE `{altered}` CHARACTER SET latin1 COMMENT 'old'")
    mysql_server.query(f"CREATE DATABASE `{emptied}` COLLATE utf8mb4_unicode_ci")
    mysql_server.query("CREATE VIEW v AS SELECT 1 AS x", database=emptied)
    mysql_server.query("CREATE PROCEDURE p() SELECT 2", database=emptied)

    def schemas() -> dict:
        shown = {}
        for db in (made, altered, emptied):
            rows = mysql_server.query("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (db,))
            shown[db] = rows and (mysql_server.query(f"SHOW CREATE DATABASE `{db}`")[0][1],
                                  mysql_server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE "
                                                     "TABLE_SCHEMA = %s ORDER BY 1", (db,)),
                                  mysql_server.query("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE "
                                                     "ROUTINE_SCHEMA = %s", (db,)))
        return shown

    try:
        client = connect_via(svc, mysql_server, database)
        before_at, before = moment(svc, mysql_server), schemas()
        execute(client, f"CREATE DATABASE `{made}` CHARACTER SET utf8mb4", f"CREATE TABLE `{made}`.t (id INT)",
                f"INSERT INTO `{made}`.t VALUES (1)",
                f"ALTER DATABASE `{altered}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci COMMENT 'new'",
                f"DROP DATABASE `{emptied}`", f"CREATE DATABASE IF NOT EXISTS `{altered}`")
        after_at, after = moment(svc, mysql_server), schemas()
        assert after[made] and not after[emptied] and "'new'" in after[altered][0]
        ops = [op for op in svc.service.ddl_holder.journal.ops() if op.kind == "schema"]
        assert len(ops) == 4 and all(op.gtids for op in ops)
        record = backtrack(svc, before_at)
        assert record.status == "completed", (record.error, record.conflicts)
        assert schemas() == before
        wait_captured(svc, mysql_server)
        record = backtrack(svc, after_at)
        assert record.status == "completed", (record.error, record.conflicts)
        assert schemas() == after
    finally:
        for db in (made, altered, emptied):
            mysql_server.query(f"DROP DATABASE IF EXISTS `{db}`")
