"""Backtrack across held DROP TABLE / TRUNCATE (proxy.ddlhold, proxy.ddlundo), then forward again.

The seed's story: a table with foreign keys to and from other tables, triggers, a view over it,
an AUTO_INCREMENT counter and rows is dropped through the proxy; a backtrack to before brings
back every definition (SHOW CREATE TABLE of every table, every trigger, the view) and every row;
a backtrack forward to after the drop takes it away again."""

from __future__ import annotations

import difflib
import shutil
import subprocess
import time

import pytest

from proxy.ddlops import HOLD_SCHEMA
from tests.integration.backtrack_support import backtrack, connect_via, fingerprint, now_iso, wait_captured


def execute(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def schema_snapshot(server, database: str) -> dict:
    """Rows (exact bytes) and every definition of the schema."""
    snap = {"rows": fingerprint(server, database)}
    with server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "ORDER BY TABLE_NAME", (database,))
        for name, kind in cur.fetchall():
            cur.execute(f"SHOW CREATE {'VIEW' if kind == 'VIEW' else 'TABLE'} `{name}`")
            snap[f"create {name}"] = cur.fetchone()[1]
        cur.execute("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
                    "ORDER BY TRIGGER_NAME", (database,))
        for (name,) in cur.fetchall():
            cur.execute(f"SHOW CREATE TRIGGER `{name}`")
            row = cur.fetchone()
            snap[f"trigger {name}"] = (row[1], row[2], row[3], row[4], row[5])  # mode, text, charsets
    return snap


def assert_same(got: dict, want: dict) -> None:
    """Equal snapshots; on a difference, the lines that differ (pytest cuts long strings)."""
    if got != want:
        lines = []
        for key in sorted(set(got) | set(want)):
            if got.get(key) != want.get(key):
                lines += [f"--- {key}", *difflib.unified_diff(str(want.get(key)).splitlines(),
                                                              str(got.get(key)).splitlines(), lineterm="")]
        raise AssertionError("\n".join(lines))


def moment(svc, server) -> str:
    wait_captured(svc, server)
    time.sleep(0.01)
    at = now_iso()
    time.sleep(0.01)
    return at


def there_and_back(svc, server, database, before_at, before, after_at, after) -> list:
    """Back to ``before_at`` (equal to ``before``, through DDL steps), then forward to
    ``after_at`` (equal to ``after``); returns both records."""
    record = backtrack(svc, before_at)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(schema_snapshot(server, database), before)
    assert any(s["name"].startswith("ddl_undo_op_") for s in record.steps), record.steps
    wait_captured(svc, server)
    forward = backtrack(svc, after_at)
    assert forward.status == "completed", (forward.error, forward.conflicts)
    assert_same(schema_snapshot(server, database), after)
    return [record, forward]


SEED = [
    "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20))",
    "CREATE TABLE kind (id INT PRIMARY KEY)",
    "CREATE TABLE item (id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT, v INT, note VARCHAR(30), kind_id INT, "
    "CONSTRAINT item_parent FOREIGN KEY (parent_id) REFERENCES parent (id), KEY (v), "
    "FOREIGN KEY (kind_id) REFERENCES kind (id) ON UPDATE CASCADE, KEY (note))",
    "CREATE TABLE note (id INT PRIMARY KEY, item_id INT, FOREIGN KEY (item_id) REFERENCES item (id))",
    "CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, what VARCHAR(10))",
    "CREATE TRIGGER item_bi BEFORE INSERT ON item FOR EACH ROW SET NEW.v = COALESCE(NEW.v, 0) + 1",
    "CREATE TRIGGER item_au AFTER UPDATE ON item FOR EACH ROW INSERT INTO audit (item_id, what) VALUES (NEW.id, 'upd')",
    "CREATE VIEW item_view AS SELECT i.id, p.name, i.v FROM item i JOIN parent p ON p.id = i.parent_id",
    "INSERT INTO parent VALUES (1, 'one'), (2, 'two')",
    "INSERT INTO item (parent_id, v, note) VALUES (1, 10, 'a'), (1, 20, 'b'), (2, 30, 'c'), (2, 40, 'd')",
    "DELETE FROM item WHERE id = 4",  # the counter stays ahead of the rows
    "UPDATE item SET v = v + 1 WHERE id = 1",
    "INSERT INTO note VALUES (1, 1), (2, 3)",
]


def test_drop_table_undone_then_redone(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, *SEED)
    before_at = moment(svc, mysql_server)
    before = schema_snapshot(mysql_server, database)
    execute(client, "INSERT INTO parent VALUES (3, 'three')",
            "SET foreign_key_checks = 0", "DROP TABLE item", "SET foreign_key_checks = 1",
            "INSERT INTO parent VALUES (4, 'four')")
    after_at = moment(svc, mysql_server)
    after = schema_snapshot(mysql_server, database)
    assert "create item" not in after and "trigger item_bi" not in after

    record = backtrack(svc, before_at)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(schema_snapshot(mysql_server, database), before)
    assert any(s["name"].startswith("ddl_undo_op_") for s in record.steps)
    # (SHOW CREATE TABLE item says AUTO_INCREMENT=5: the counter came back with the table.)
    wait_captured(svc, mysql_server)

    record = backtrack(svc, after_at)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(schema_snapshot(mysql_server, database), after)


def test_truncate_undone_then_redone(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, *SEED[:3], SEED[4], *SEED[5:7], SEED[8], SEED[9])
    before_at = moment(svc, mysql_server)
    before = schema_snapshot(mysql_server, database)
    # (No rows written to item after it: undoing them would fire its triggers, a conflict.)
    execute(client, "TRUNCATE TABLE item", "INSERT INTO parent VALUES (5, 'five')")
    after_at = moment(svc, mysql_server)
    after = schema_snapshot(mysql_server, database)
    assert after["rows"]["item"] == [] and "AUTO_INCREMENT=" not in after["create item"]
    assert after["trigger item_bi"] == before["trigger item_bi"]  # TRUNCATE keeps the triggers
    there_and_back(svc, mysql_server, database, before_at, before, after_at, after)


def test_ddl_the_proxy_did_not_hold_is_still_a_conflict(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE a (id INT PRIMARY KEY)", "CREATE TABLE b (id INT PRIMARY KEY)",
            "INSERT INTO a VALUES (1)")
    before_at = moment(svc, mysql_server)
    execute(client, "DROP TABLE a")  # held
    mysql_server.query(f"DROP TABLE `{database}`.`b`")  # around the proxy: destroyed
    wait_captured(svc, mysql_server)
    record = backtrack(svc, before_at)
    assert record.status == "failed"
    assert any(c["kind"] == "ddl" and "DROP TABLE" in c["reason"] for c in record.conflicts), record.conflicts
    assert mysql_server.query(f"SHOW TABLES FROM `{database}`") == []  # nothing was written


def test_held_table_leaves_with_its_transaction(make_proxy, tmp_path, mysql_server, database):
    from proxy.ddlops import HOLD_SCHEMA
    from tests.integration.backtrack_support import capturing_service

    svc = capturing_service(make_proxy, tmp_path / "data")
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, c CHAR(200))",
            "INSERT INTO t SELECT seq, REPEAT('x', 200) FROM seq_1_to_2000", "DROP TABLE t")
    wait_captured(svc, mysql_server)
    holder = svc.service.ddl_holder
    store_path = svc.service.config.store_path
    held = holder.sweep(store_path)
    assert [(h.table, h.kind, h.restorable) for h in held] == [(f"{database}.t", "drop", True)]
    assert held[0].bytes > 0
    # The window moves past the DROP's transaction: the store evicts it, the table goes for real.
    from proxy.changelog.store import ChangeStore

    store = ChangeStore(store_path)
    try:
        store.evict(window_us=0, max_bytes=None)
    finally:
        store.close()
    assert holder.sweep(store_path) == []
    assert mysql_server.query("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                              "AND TABLE_NAME = %s", (HOLD_SCHEMA, held[0].hold_name)) == [(0,)]
    status_ops = [op.state for op in holder.journal.ops() if op.op_id == held[0].op_id]
    assert status_ops == ["evicted"]


def test_dry_run_shows_the_ddl_steps(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE a (id INT PRIMARY KEY)", "INSERT INTO a VALUES (1)")
    before_at = moment(svc, mysql_server)
    execute(client, "TRUNCATE a", "DROP TABLE a")
    wait_captured(svc, mysql_server)
    record = backtrack(svc, before_at, dry_run=True)
    assert record.status == "completed", record.error
    steps = record.plan["ddl_steps"]
    assert [(s["kind"], s["statement"]) for s in steps] == [("drop", "DROP TABLE a"), ("truncate", "TRUNCATE a")]
    assert steps[0]["undo"].startswith(f"RENAME TABLE `{HOLD_SCHEMA}`.")
    assert mysql_server.query(f"SHOW TABLES FROM `{database}`") == []  # a dry run writes nothing


def test_drop_database_undone_then_redone(svc, mysql_server, database):
    schema = database[:50] + "_dropdb"
    mysql_server.query(f"CREATE DATABASE `{schema}` CHARACTER SET latin1")
    try:
        client = connect_via(svc, mysql_server, schema)
        execute(client, "CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
                "CREATE TABLE b (id INT PRIMARY KEY, a_id INT, FOREIGN KEY (a_id) REFERENCES a (id))",
                "CREATE TRIGGER a_bi BEFORE INSERT ON a FOR EACH ROW SET NEW.v = NEW.v * 2",
                "CREATE VIEW va AS SELECT id, v FROM a",
                "CREATE VIEW vva AS SELECT id FROM va",
                "CREATE PROCEDURE pa() SELECT COUNT(*) FROM a",
                "CREATE FUNCTION fa(x INT) RETURNS INT DETERMINISTIC RETURN x + 1",
                "INSERT INTO a (v) VALUES (1), (2), (3)", "INSERT INTO b VALUES (1, 1)",
                f"CREATE TABLE `{database}`.later (id INT PRIMARY KEY)")
        before_at = moment(svc, mysql_server)
        before = schema_snapshot(mysql_server, schema)
        before["routines"] = mysql_server.query(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION, SQL_MODE FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = %s ORDER BY 2", (schema,))
        before["db"] = mysql_server.query(f"SHOW CREATE DATABASE `{schema}`")
        with client.cursor() as cur:
            affected = cur.execute(f"DROP DATABASE `{schema}`")
        assert affected == 4  # a, b, va, vva: as the server counts them
        assert mysql_server.query("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                                  (schema,)) == [(0,)]
        execute(connect_via(svc, mysql_server, database), "INSERT INTO later VALUES (1)")
        after_at = moment(svc, mysql_server)

        record = backtrack(svc, before_at)
        assert record.status == "completed", (record.error, record.conflicts)
        got = schema_snapshot(mysql_server, schema)
        got["routines"] = mysql_server.query(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION, SQL_MODE FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = %s ORDER BY 2", (schema,))
        got["db"] = mysql_server.query(f"SHOW CREATE DATABASE `{schema}`")
        assert_same(got, before)
        wait_captured(svc, mysql_server)

        record = backtrack(svc, after_at)
        if record.status != "completed":
            pytest.fail("\n".join(c["reason"] for c in record.conflicts) or record.error)
        assert mysql_server.query("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                                  (schema,)) == [(0,)]
        assert mysql_server.query(f"SELECT * FROM `{database}`.later") == [(1,)]
    finally:
        mysql_server.query(f"DROP DATABASE IF EXISTS `{schema}`")


DUMPED = [
    "CREATE TABLE parent (id INT PRIMARY KEY, name VARCHAR(20))",
    "CREATE TABLE item (id INT AUTO_INCREMENT PRIMARY KEY, parent_id INT, v INT, "
    "CONSTRAINT item_parent FOREIGN KEY (parent_id) REFERENCES parent (id))",
    "CREATE TABLE note (id INT PRIMARY KEY, item_id INT, "
    "CONSTRAINT note_item FOREIGN KEY (item_id) REFERENCES item (id))",
    "CREATE TRIGGER item_bi BEFORE INSERT ON item FOR EACH ROW BEGIN IF NEW.v IS NULL THEN SET NEW.v = 0; END IF; END",
    "CREATE VIEW item_view AS SELECT i.id, p.name, i.v FROM item i JOIN parent p ON p.id = i.parent_id",
]


def test_a_dump_loaded_into_the_wrong_database_is_undone(svc, mysql_server, database):
    """The 3 a.m. mistake: another schema's mariadb-dump loaded into this one, through the
    proxy, with the mariadb client. The dump turns foreign_key_checks off and drops each table
    before making it again, referenced parents first: every table comes back as it was, its
    children's keys pointing at it, and a forward backtrack puts the dump's tables back."""
    dump, cli = shutil.which("mariadb-dump") or shutil.which("mysqldump"), shutil.which("mariadb") or shutil.which(
        "mysql")
    if dump is None or cli is None:
        pytest.skip("no mariadb-dump/mysqldump and mariadb/mysql client on PATH")
    source = database[:50] + "_src"
    mysql_server.query(f"CREATE DATABASE `{source}`")
    try:
        for sql in [*DUMPED, "INSERT INTO parent VALUES (1, 'other'), (9, 'nine')",
                    "INSERT INTO item (parent_id, v) VALUES (9, 90)", "INSERT INTO note VALUES (5, 1)"]:
            mysql_server.query(sql, database=source)
        login = ["--no-defaults", "-u", mysql_server.user, f"-p{mysql_server.password}"]
        dumped = subprocess.run([dump, *login, "-h", mysql_server.host, "-P", str(mysql_server.port),
                                 source], capture_output=True, text=True, timeout=120, check=True)
    finally:
        mysql_server.query(f"DROP DATABASE `{source}`")
    client = connect_via(svc, mysql_server, database)
    execute(client, *DUMPED, "INSERT INTO parent VALUES (1, 'one'), (2, 'two')",
            "INSERT INTO item (parent_id, v) VALUES (1, 10), (2, 20), (2, 30)", "INSERT INTO note VALUES (1, 3)")
    before_at, before = moment(svc, mysql_server), schema_snapshot(mysql_server, database)
    loaded = subprocess.run([cli, *login, "-h", "127.0.0.1", "-P", str(svc.port), database], input=dumped.stdout,
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    after_at, after = moment(svc, mysql_server), schema_snapshot(mysql_server, database)
    assert after["rows"]["parent"] == [("31", "6F74686572"), ("39", "6E696E65")]  # the dump's rows
    there_and_back(svc, mysql_server, database, before_at, before, after_at, after)


def test_drops_of_nothing_are_no_conflict(svc, mysql_server, database):
    """DROP TABLE IF EXISTS of a missing table or a view, DROP DATABASE IF EXISTS of a missing
    schema: the server logs them all the same, rebuilt without the tag; each is a no-op op known
    by its GTID, and a backtrack across them goes through."""
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY)", "CREATE VIEW v AS SELECT 1 AS x",
            "INSERT INTO t VALUES (1)")
    before_at, before = moment(svc, mysql_server), schema_snapshot(mysql_server, database)
    execute(client, "DROP TABLE IF EXISTS nothere", "DROP TABLE IF EXISTS v, nothere",
            f"DROP DATABASE IF EXISTS `{database[:50]}_nothere`", "INSERT INTO t VALUES (2)")
    wait_captured(svc, mysql_server)
    noops = [op for op in svc.service.ddl_holder.journal.ops() if op.kind == "noop"]
    assert len(noops) == 3 and all(op.gtids for op in noops)
    record = backtrack(svc, before_at)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(schema_snapshot(mysql_server, database), before)


def test_a_dropped_sequence_is_held_and_comes_back(svc, mysql_server, database):
    """MariaDB shows a SEQUENCE as a table (SHOW CREATE TABLE ... SEQUENCE=1): its DROP is held
    like a table's, the missing name beside it is a no-op, and a backtrack brings it back as it
    was stored."""
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY)", "CREATE SEQUENCE s START WITH 100",
            "SELECT NEXTVAL(s)")
    before_at, before = moment(svc, mysql_server), schema_snapshot(mysql_server, database)
    execute(client, "DROP TABLE IF EXISTS s, nothere")
    wait_captured(svc, mysql_server)
    assert "create s" not in schema_snapshot(mysql_server, database)
    record = backtrack(svc, before_at)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(schema_snapshot(mysql_server, database), before)
    # (the values the server had cached in memory are skipped, as after a restart: none repeats)
    assert mysql_server.query("SELECT NEXTVAL(s)", database=database)[0][0] > 100
