"""Backtrack across the DDL shapes that used to be conflicts, sent through the proxy to a real
server: each is undone exactly by a backtrack (every definition and every row equal the
snapshot at the point) and redone by a forward backtrack.

Whole-table saves (proxy.ddlsave): a destructive ALTER of a table without a primary key or of a
key column, CONVERT TO CHARACTER SET, DROP/TRUNCATE PARTITION, ALTER ... RENAME with other
clauses; of a table other tables' foreign keys reference too (their keys pointed back at it).
Recorded as their ALTER or CREATE (proxy.ddlrecord): ALTER ... RENAME alone, CREATE and DROP
INDEX, CREATE TABLE ... SELECT / LIKE, CREATE OR REPLACE TABLE. Views (proxy.ddlviews)."""

from __future__ import annotations

import time

import pymysql
import pytest

from proxy import ddlops, ddlrecord, ddlsave
from proxy.ddllink import PyMySQLExecutor
from proxy.ddlops import HOLD_SCHEMA, Journal, Op, ensure_hold_schema
from proxy.ddlsave import save_whole
from tests.integration.backtrack_support import backtrack, connect_via
from tests.integration.test_ddl_backtrack import execute, moment, schema_snapshot, there_and_back


def run_story(svc, server, database, setup: list[str], after_point: list[str]) -> tuple[dict, dict, list]:
    """``setup``, the point, ``after_point``; then back to the point and forward again."""
    client = connect_via(svc, server, database)
    execute(client, *setup)
    before_at = moment(svc, server)
    before = schema_snapshot(server, database)
    execute(client, *after_point)
    after_at = moment(svc, server)
    after = schema_snapshot(server, database)
    records = there_and_back(svc, server, database, before_at, before, after_at, after)
    return before, after, records


def held_copies(server, pattern: str) -> list:
    return server.query(f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{HOLD_SCHEMA}' "
                        f"AND TABLE_NAME LIKE '{pattern}'")


def test_destructive_alter_of_a_table_without_key(svc, mysql_server, database):
    before, after, records = run_story(svc, mysql_server, database, [
        "CREATE TABLE t (id INT, v INT, s VARCHAR(20), KEY (v))",
        "INSERT INTO t VALUES (1, 10, 'alpha-long'), (1, 10, 'alpha-long'), (2, NULL, 'beta'), (3, 30, NULL)",
    ], [
        "UPDATE t SET s = 'gamma-longer' WHERE id = 2", "INSERT INTO t VALUES (4, 40, 'delta')",  # older layout
        "SET SESSION sql_mode = ''",  # the narrowing MODIFY truncates instead of failing
        "ALTER TABLE t DROP COLUMN v, MODIFY s VARCHAR(4)",
        "INSERT INTO t VALUES (5, 'eeee')", "UPDATE t SET s = 'zz' WHERE id = 1 LIMIT 1", "DELETE FROM t WHERE id = 3",
        # then an ADD COLUMN (its undo saves the whole table for the forward) and another narrowing
        "ALTER TABLE t ADD COLUMN w INT DEFAULT 3", "UPDATE t SET w = 9 WHERE id = 5",
        "ALTER TABLE t MODIFY s VARCHAR(2)", "INSERT INTO t VALUES (6, 'ff', 6)",
    ])
    assert "`v`" not in after["create t"] and "`v`" in before["create t"]
    assert sum(s["name"].startswith("ddl_undo_op_") for s in records[0].steps) == 3, records[0].steps
    assert held_copies(mysql_server, "%\\_w\\_t"), "the whole table was not saved"


def test_alter_of_a_primary_key_column_with_foreign_keys(svc, mysql_server, database):
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE parent (id INT PRIMARY KEY)", "INSERT INTO parent VALUES (1), (2)",
        "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, pid INT, n INT, "
        "CONSTRAINT t_parent FOREIGN KEY (pid) REFERENCES parent (id), KEY (n))",
        "INSERT INTO t (pid, n) VALUES (1, 10), (2, 20), (1, NULL)", "DELETE FROM t WHERE id = 3",
    ], [
        "UPDATE t SET n = 30 WHERE id = 2",  # (no insert: a backtrack does not wind counters back)
        "ALTER TABLE t DROP PRIMARY KEY, CHANGE id id BIGINT NOT NULL, ADD PRIMARY KEY (id, pid)",
        "INSERT INTO t (id, pid, n) VALUES (100, 1, 5)", "UPDATE t SET n = n * 2 WHERE id = 1",
    ])
    assert "PRIMARY KEY (`id`,`pid`)" in after["create t"] and "AUTO_INCREMENT=" in before["create t"]


def test_convert_to_character_set_and_table_options(svc, mysql_server, database):
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(10), b TEXT, n INT) DEFAULT CHARSET=latin1",
        "INSERT INTO t VALUES (1, _latin1 0x636166E9, 'plain', 1), (2, NULL, _latin1 0xC0C1, 2)",
    ], [
        "UPDATE t SET n = 10 WHERE id = 1",
        "ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        "INSERT INTO t VALUES (3, 'new', NULL, 3)", "UPDATE t SET s = 'x' WHERE id = 2",
        # the default alone (the columns keep theirs: whole table), then the row format (an ALTER back)
        "ALTER TABLE t DEFAULT CHARSET = latin1", "INSERT INTO t VALUES (4, 'four', NULL, 4)",
        "ALTER TABLE t ROW_FORMAT = COMPACT", "UPDATE t SET n = 44 WHERE id = 4",
    ])
    assert "latin1" in before["create t"] and "CHARACTER SET utf8mb4" in after["create t"]
    assert "ROW_FORMAT=COMPACT" in after["create t"]


PARTITIONED = ("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)) PARTITION BY RANGE (id) "
               "(PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN (20), "
               "PARTITION p2 VALUES LESS THAN MAXVALUE)")


def test_drop_and_truncate_partition_saved_by_their_rows(svc, mysql_server, database):
    before, after, records = run_story(svc, mysql_server, database, [
        PARTITIONED, "INSERT INTO t VALUES (1, 'a'), (5, 'b'), (11, 'c'), (15, 'd'), (25, 'e')",
        "CREATE TABLE l (id INT PRIMARY KEY) PARTITION BY LIST (id) "
        "(PARTITION a VALUES IN (1, 2), PARTITION b VALUES IN (3, 4), PARTITION c VALUES IN (5))",
        "INSERT INTO l VALUES (1), (3), (4), (5)",
    ], [
        "UPDATE t SET v = 'B' WHERE id = 5", "ALTER TABLE t DROP PARTITION p0",
        "INSERT INTO t VALUES (3, 'moved')",  # now in p1 (VALUES LESS THAN (20))
        "ALTER TABLE t TRUNCATE PARTITION p1", "INSERT INTO t VALUES (12, 'f')",
        "ALTER TABLE l DROP PARTITION b", "ALTER TABLE l DROP PARTITION c",
    ])
    assert "`p0`" in before["create t"] and "`p0`" not in after["create t"]
    assert len(after["rows"]["t"]) == 2 and len(after["rows"]["l"]) == 1  # 12 and 25; 1
    assert sum(s["name"].startswith("ddl_undo_op_") for s in records[0].steps) == 4, records[0].steps
    # Only the partitions' rows were saved (proxy.ddlpartitions), never the whole table.
    assert len(held_copies(mysql_server, "%\\_p\\_t")) >= 2 and held_copies(mysql_server, "%\\_p\\_l")


def test_exchange_partition_is_undone_by_itself(svc, mysql_server, database):
    """EXCHANGE PARTITION moves rows without logging them: its undo is the same exchange."""
    _, after, _ = run_story(svc, mysql_server, database, [
        PARTITIONED, "INSERT INTO t VALUES (1, 'one'), (15, 'fifteen'), (30, 'thirty')",
        "CREATE TABLE staging (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO staging VALUES (11, 'eleven')",
    ], [
        "UPDATE t SET v = 'FIFTEEN' WHERE id = 15",
        "ALTER TABLE t EXCHANGE PARTITION p1 WITH TABLE staging",
        "INSERT INTO staging VALUES (12, 'twelve')", "UPDATE t SET v = 'ELEVEN' WHERE id = 11",
    ])
    assert ("3131", "454C4556454E") in after["rows"]["t"] and ("3132", "7477656C7665") in after["rows"]["staging"]
    exchanges = [op for op in svc.service.ddl_holder.journal.ops() if op.kind == "exchange"]
    assert len(exchanges) == 3 and [op.undoes is None for op in exchanges].count(True) == 1  # the client's, 2 undos


def test_alter_rename_alone_and_with_other_clauses(svc, mysql_server, database):
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE a (id INT PRIMARY KEY, v INT)", "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
        "INSERT INTO a VALUES (1, 1), (2, 2)", "INSERT INTO b VALUES (1, 10)",
    ], [
        "ALTER TABLE a RENAME TO a2", "INSERT INTO a2 VALUES (3, 3)",
        "ALTER TABLE b ADD COLUMN w INT DEFAULT 7, RENAME TO b2, DROP COLUMN v",
        "UPDATE b2 SET w = 8 WHERE id = 1",
    ])
    assert set(after) >= {"create a2", "create b2"} and "create a" not in after and "create b" in before


def test_create_index_and_drop_index(svc, mysql_server, database):
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v INT, s VARCHAR(10), KEY old_v (v))",
        "INSERT INTO t VALUES (1, 1, 'a'), (2, 2, 'b')",
    ], [
        "CREATE UNIQUE INDEX s_u ON t (s)", "INSERT INTO t VALUES (3, 3, 'c')", "DROP INDEX old_v ON t",
        "UPDATE t SET v = 9 WHERE id = 1",
    ])
    assert "`s_u`" in after["create t"] and "`old_v`" not in after["create t"]


def test_create_table_select_and_like(svc, mysql_server, database):
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE src (id INT PRIMARY KEY, v VARCHAR(10))", "INSERT INTO src VALUES (1, 'a'), (2, 'b')",
    ], [
        "CREATE TABLE copy AS SELECT id, v, id * 2 AS dbl FROM src",
        "INSERT INTO copy VALUES (9, 'z', 18)", "CREATE TABLE shaped LIKE src", "INSERT INTO shaped VALUES (1, 'x')",
        "UPDATE src SET v = 'A' WHERE id = 1",
    ])
    assert len(after["rows"]["copy"]) == 3 and "create copy" not in before


def test_create_or_replace_table(svc, mysql_server, database):
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW SET NEW.v = NEW.v + 1",
        "INSERT INTO t VALUES (1, 1), (2, 2)", "CREATE TABLE keep (v INT)", "INSERT INTO keep VALUES (1)",
    ], [
        # (no rows written to the old t: a backtrack refuses to write a table with triggers)
        "UPDATE keep SET v = 5", "CREATE OR REPLACE TABLE t (x VARCHAR(5))", "INSERT INTO t VALUES ('new')",
        "CREATE OR REPLACE TABLE fresh (id INT) SELECT 1 AS id",
    ])
    assert "`x`" in after["create t"] and "trigger t_bi" in before and "trigger t_bi" not in after


def test_views_created_altered_replaced_and_dropped(svc, mysql_server, database):
    before, after, records = run_story(svc, mysql_server, database, [
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1)",
        "CREATE VIEW keep AS SELECT id FROM t", "CREATE SQL SECURITY INVOKER VIEW gone AS SELECT v FROM t",
        "CREATE VIEW gone2 AS SELECT 2 AS two", "CREATE VIEW gone3 AS SELECT id * 3 AS three FROM t",
    ], [
        "CREATE VIEW fresh (a, b) AS SELECT id, v FROM t WHERE v > 0", "ALTER VIEW keep AS SELECT id, v FROM t",
        "INSERT INTO t VALUES (2, 2)", "CREATE OR REPLACE ALGORITHM=MERGE VIEW keep AS SELECT v FROM t",
        "DROP VIEW gone", "DROP VIEW IF EXISTS gone2, missing, gone3",
    ])
    assert "create fresh" in after and "create gone" in before and "create gone" not in after
    assert "create gone3" in before and "create gone3" not in after
    assert before["create keep"] != after["create keep"]
    assert sum(s["name"].startswith("ddl_undo_op_") for s in records[0].steps) == 5, records[0].steps
    assert sum(s["name"].startswith("ddl_undo_op_") for s in records[1].steps) == 5, records[1].steps


def test_dry_run_names_the_swap_of_a_whole_table_save(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT, v INT)", "INSERT INTO t VALUES (1, 1)")
    before_at = moment(svc, mysql_server)
    execute(client, "ALTER TABLE t DROP COLUMN v")
    moment(svc, mysql_server)
    dry = backtrack(svc, before_at, dry_run=True)
    assert dry.status != "failed", (dry.error, dry.conflicts)
    [step] = dry.plan["ddl_steps"]
    assert step["kind"] == "alter" and step["undo"].startswith(f"RENAME TABLE `{database}`.`t` TO `{HOLD_SCHEMA}`")


def test_whole_table_swap_keeps_triggers_generated_columns_and_foreign_keys(svc, mysql_server, database):
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE parent (id INT PRIMARY KEY)", "INSERT INTO parent VALUES (1), (2)",
        "CREATE TABLE t (id INT, pid INT, g INT AS (id * 2) VIRTUAL, note VARCHAR(10), "
        "CONSTRAINT t_parent FOREIGN KEY (pid) REFERENCES parent (id))",
        "CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW SET NEW.pid = COALESCE(NEW.pid, 1)",
        "INSERT INTO t (id, pid, note) VALUES (1, 1, 'a'), (2, 2, 'b'), (2, 2, 'b')",
    ], [
        # (no rows written to t after the point: a backtrack refuses to write a table with triggers)
        "ALTER TABLE t DROP COLUMN note", "INSERT INTO parent VALUES (3)",
    ])
    assert "`note`" in before["create t"] and "`note`" not in after["create t"]
    assert "trigger t_bi" in before and "CONSTRAINT `t_parent`" in before["create t"]


def children_in_the_hold_schema(server) -> list:
    """Foreign keys of live tables that point into the hold schema: there must be none."""
    return server.query("SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME FROM "
                        "information_schema.REFERENTIAL_CONSTRAINTS WHERE "
                        f"UNIQUE_CONSTRAINT_SCHEMA = '{HOLD_SCHEMA}' AND CONSTRAINT_SCHEMA <> '{HOLD_SCHEMA}'")


def test_whole_table_save_of_a_referenced_table(svc, mysql_server, database):
    """Two tables' foreign keys reference ``t``, which has no primary key: its DROP COLUMN saves
    the whole table, and the children's keys, which follow ``t`` into the hold schema at the
    swap, point at the restored ``t`` again, both ways, and still check. (A cascading key
    would make the backtrack a conflict of its own: cascades never reach the binlog.)"""
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE t (code INT NOT NULL, v INT, UNIQUE KEY (code))",
        "CREATE TABLE child (id INT PRIMARY KEY, code INT, KEY k (id, code), "
        "CONSTRAINT child_t FOREIGN KEY (code) REFERENCES t (code) ON UPDATE RESTRICT)",
        "CREATE TABLE other (id INT PRIMARY KEY, code INT, CONSTRAINT other_t FOREIGN KEY (code) REFERENCES t (code))",
        "INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)", "INSERT INTO child VALUES (1, 1), (2, 2), (3, 3)",
        "INSERT INTO other VALUES (1, 1)",
    ], [
        "ALTER TABLE t DROP COLUMN v", "INSERT INTO t VALUES (4)", "INSERT INTO child VALUES (4, 4)",
        "DELETE FROM child WHERE id = 3", "DELETE FROM t WHERE code = 3",
    ])
    assert "`v`" in before["create t"] and "`v`" not in after["create t"]
    assert not children_in_the_hold_schema(mysql_server)
    client = connect_via(svc, mysql_server, database)
    with pytest.raises(pymysql.err.IntegrityError) as refused:
        execute(client, "INSERT INTO child VALUES (9, 99)")
    assert refused.value.args[0] == 1452  # the key checks against the live t
    with pytest.raises(pymysql.err.IntegrityError) as refused:
        execute(client, "DELETE FROM t WHERE code = 2")
    assert refused.value.args[0] == 1451  # a parent row still referenced


def test_convert_to_character_set_of_a_referenced_parent(svc, mysql_server, database):
    """The usual migration: a parent with a primary key that orders reference, converted."""
    before, after, _ = run_story(svc, mysql_server, database, [
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(20)) DEFAULT CHARSET=latin1",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer INT, CONSTRAINT orders_customer FOREIGN KEY (customer) "
        "REFERENCES customers (id))",
        "INSERT INTO customers VALUES (1, _latin1 0x4AF6726E), (2, 'Ann')", "INSERT INTO orders VALUES (1, 1)",
    ], [
        "ALTER TABLE customers CONVERT TO CHARACTER SET utf8mb4", "INSERT INTO customers VALUES (3, 'Zoë')",
        "INSERT INTO orders VALUES (2, 3)",
    ])
    assert "latin1" in before["create customers"] and "utf8mb4" in after["create customers"]
    assert not children_in_the_hold_schema(mysql_server)


def test_a_crash_between_dropping_and_adding_a_childs_key_is_finished(svc, mysql_server, database, monkeypatch):
    """The swap's step 4 journals each child's key before dropping it: killed after the drop,
    the next start (ddlops.recover) adds it back, pointing at the live table."""
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (code INT NOT NULL, v INT, UNIQUE KEY (code))",
            "CREATE TABLE child (id INT PRIMARY KEY, code INT, CONSTRAINT child_t FOREIGN KEY (code) "
            "REFERENCES t (code))", "INSERT INTO t VALUES (1, 10)", "INSERT INTO child VALUES (1, 1)")
    before = schema_snapshot(mysql_server, database)
    execute(client, "ALTER TABLE t DROP COLUMN v")
    journal = svc.service.ddl_holder.journal
    saved = next(op for op in journal.ops() if op.kind == "alter" and op.change.get("saved"))
    assert saved.change["referenced"]

    add_foreign_keys = ddlops._add_foreign_keys

    def killed(op_id, post, db, name, clauses):
        if name == "child":
            raise SystemExit("killed after the child's key was dropped")
        add_foreign_keys(op_id, post, db, name, clauses)

    with mysql_server.connect() as conn:
        control = PyMySQLExecutor(conn)
        monkeypatch.setattr(ddlops, "_add_foreign_keys", killed)
        with pytest.raises(SystemExit):
            ddlsave.swap_back(control, journal, saved)
        monkeypatch.undo()
        assert "FOREIGN KEY" not in schema_snapshot(mysql_server, database)["create child"]
        assert any(o.repointed for o in journal.ops("started"))
        assert any("finished" in outcome for outcome in ddlops.recover(journal, control))
    assert schema_snapshot(mysql_server, database) == before
    assert not children_in_the_hold_schema(mysql_server)


def test_create_or_replace_that_fails_puts_the_held_table_back(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, v INT)", "INSERT INTO t VALUES (1, 1)")
    before = schema_snapshot(mysql_server, database)
    with pytest.raises(pymysql.err.OperationalError) as failed:
        execute(client, "CREATE OR REPLACE TABLE t (x INT, x INT)")
    assert failed.value.args[0] == 1060  # the server's own answer: duplicate column name
    assert schema_snapshot(mysql_server, database) == before
    execute(client, "INSERT INTO t VALUES (2, 2)")  # the session goes on


def test_saves_and_views_a_crash_left_started_are_settled(mysql_server, database, tmp_path):
    """ddlrecord.recover at start: a whole-table save whose ALTER never ran is failed and its
    copy dropped; a view statement that ran is done."""
    mysql_server.query(f"CREATE TABLE `{database}`.t (id INT, v INT)")
    journal = Journal(tmp_path / "ddl.db")
    try:
        with mysql_server.connect() as conn:
            control = PyMySQLExecutor(conn)
            ensure_hold_schema(control)
            before = control.run(f"SHOW CREATE TABLE `{database}`.t").rows[0][1]
            saved = Op("s1", "alter", "ALTER TABLE t DROP COLUMN v", [], created_us=1,
                       change={"tables": [[database, "t"]], "before": before})
            assert save_whole(control, saved, database, "t", before)
            view = Op("v1", "view", "CREATE VIEW w AS SELECT 1", [], created_us=2,
                      change={"tables": [[database, "w"]], "before": None})
            control.run(f"CREATE VIEW `{database}`.w AS SELECT 1")  # ... then the process died
            for op in (saved, view):
                journal.save(op)
            assert ddlrecord.recover(journal, control) == ["op s1 (alter) failed", "op v1 (view) done"]
        assert not held_copies(mysql_server, saved.change["saved"])
    finally:
        journal.close()


def test_alter_under_lock_tables_runs_unrecorded_after_a_short_wait(svc, mysql_server, database, monkeypatch):
    """The client holds the table (LOCK TABLES ... WRITE) while it waits for its ALTER: the save
    cannot read it and gives up after SAVE_LOCK_WAIT_S; the ALTER runs as sent."""
    monkeypatch.setattr(ddlsave, "SAVE_LOCK_WAIT_S", 1)
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT, v INT)", "INSERT INTO t VALUES (1, 1)")
    before_at = moment(svc, mysql_server)
    execute(client, "LOCK TABLES t WRITE")
    began = time.monotonic()
    execute(client, "ALTER TABLE t DROP COLUMN v", "UNLOCK TABLES")
    assert time.monotonic() - began < 30
    assert "`v`" not in schema_snapshot(mysql_server, database)["create t"]
    moment(svc, mysql_server)
    record = backtrack(svc, before_at)
    assert record.status == "failed" and any(c["kind"] == "ddl" for c in record.conflicts), record.conflicts
