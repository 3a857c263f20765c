"""A serve process killed with SIGKILL in the middle of a held DROP TABLE: after the restart the
database is at one of the two states (the table as it was, or held), and the journal says which.

The op is stopped at a test pause point (AURORATRACK_DDL_TEST_PAUSE, proxy.ddlops._test_pause):
before its RENAME (triggers already dropped: the restart rolls back and re-creates them) or
after it (foreign keys of the held table not yet dropped: the restart finishes the op)."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pymysql
import pytest

from proxy.ddlops import HOLD_SCHEMA
from tests.integration.test_backtrack_crash import admin_client, start_serve


def journal_states(data_dir: Path) -> list[str]:
    path = data_dir / "ddl.db"
    if not path.exists():
        return []
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT state FROM ops ORDER BY created_us")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def definitions(server, database: str) -> dict:
    out = {}
    with server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        out["tables"] = sorted(r[0] for r in cur.fetchall())
        if "t" in out["tables"]:
            cur.execute("SHOW CREATE TABLE t")
            out["create"] = cur.fetchone()[1]
            cur.execute("SELECT * FROM t ORDER BY id")
            out["rows"] = cur.fetchall()
        cur.execute("SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = %s ORDER BY 1", (database,))
        out["triggers"] = cur.fetchall()
    return out


@pytest.mark.parametrize("point", ["before_rename", "after_rename"])
def test_sigkill_in_the_middle_of_a_held_drop(mysql_server, database, tmp_path, point):
    with mysql_server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE p (id INT PRIMARY KEY)")
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, pid INT, CONSTRAINT t_p FOREIGN KEY (pid) REFERENCES p (id))")
        cur.execute("CREATE TRIGGER t_bi BEFORE INSERT ON t FOR EACH ROW SET NEW.pid = NEW.pid")
        cur.execute("INSERT INTO p VALUES (1)")
        cur.execute("INSERT INTO t VALUES (1, 1), (2, 1)")
    before = definitions(mysql_server, database)
    held_before = set(_hold_tables(mysql_server))
    data_dir = tmp_path / "data"
    serve = start_serve(mysql_server, data_dir, {"AURORATRACK_DDL_TEST_PAUSE": f"{point}:60"})
    try:
        admin = admin_client(data_dir, serve)
        port = int(admin.get("/v1/status")["listen"].rsplit(":", 1)[1])
        client = pymysql.connect(host="127.0.0.1", port=port, user=mysql_server.user,
                                 password=mysql_server.password, database=database, autocommit=True)
        threading.Thread(target=_drop_quietly, args=(client,), daemon=True).start()
        deadline = time.monotonic() + 30
        while journal_states(data_dir) != ["started"] or (
                point == "after_rename" and "t" in definitions(mysql_server, database)["tables"]):
            assert time.monotonic() < deadline, "the held DROP never reached its pause point"
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        serve = start_serve(mysql_server, data_dir, {})
        admin_client(data_dir, serve)  # up: the journal was settled before clients got in
        after = definitions(mysql_server, database)
        if point == "before_rename":
            assert journal_states(data_dir) == ["failed"]
            assert after == before  # rolled back: the table, its trigger and foreign key as they were
        else:
            assert journal_states(data_dir) == ["done"]
            assert after == {"tables": ["p"], "triggers": ()}  # finished: held
            held = sorted(set(_hold_tables(mysql_server)) - held_before)
            assert len(held) == 1 and held[0].endswith("_0_t")
            name = held[0]
            assert mysql_server.query(f"SELECT * FROM `{HOLD_SCHEMA}`.`{name}` ORDER BY id") == list(before["rows"])
            assert mysql_server.query("SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
                                      "CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s", (HOLD_SCHEMA, name)) == [(0,)]
            mysql_server.query(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")
    finally:
        serve.kill()
        serve.wait(10)


def _hold_tables(server) -> list[str]:
    return [r[0] for r in server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                                       (HOLD_SCHEMA,))]


def _drop_quietly(client) -> None:
    try:
        with client.cursor() as cur:
            cur.execute("DROP TABLE t")
    except pymysql.MySQLError:
        pass  # the proxy was killed under it


def test_sigkill_in_the_middle_of_a_ddl_crossing_backtrack(mysql_server, database, tmp_path):
    """Killed between its steps (the rows after the DROP undone, the DROP not yet): the next
    start finishes the backtrack before clients get in, and its record says so."""
    if mysql_server.private is None:
        pytest.skip("needs the server's binlog position helpers of a private server")
    from tests.integration.backtrack_support import fingerprint, now_iso
    from tests.integration.streamer_support import wait_caught_up_dir

    data_dir = tmp_path / "data"
    serve = start_serve(mysql_server, data_dir, {"AURORATRACK_DDL_TEST_PAUSE": "between_steps:60"})
    try:
        admin = admin_client(data_dir, serve)
        port = int(admin.get("/v1/status")["listen"].rsplit(":", 1)[1])
        client = pymysql.connect(host="127.0.0.1", port=port, user=mysql_server.user,
                                 password=mysql_server.password, database=database, autocommit=True)
        with client.cursor() as cur:
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
            cur.execute("CREATE TABLE o (id INT PRIMARY KEY)")
            cur.execute("INSERT INTO t VALUES (1, 1), (2, 2)")
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        before = fingerprint(mysql_server, database)
        time.sleep(0.02)
        moment = now_iso()
        time.sleep(0.02)
        with client.cursor() as cur:
            cur.execute("INSERT INTO o VALUES (1)")
            cur.execute("UPDATE t SET v = 10 WHERE id = 1")
            cur.execute("DROP TABLE t")
            cur.execute("INSERT INTO o VALUES (2)")
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        record = admin.post("/v1/backtracks", {"to": moment})
        deadline = time.monotonic() + 60
        while not any(s["name"].startswith("ddl_rows") for s in admin.get(f"/v1/backtracks/{record['id']}")["steps"]):
            if time.monotonic() > deadline:
                url = f"/v1/backtracks/{record['id']}"
                pytest.fail(f"the backtrack never did its first step: {admin.get(url)}")
            time.sleep(0.05)
        assert (data_dir / "ddl_backtrack.json").exists()
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        assert "t" not in definitions(mysql_server, database)["tables"]  # between the two states
        serve = start_serve(mysql_server, data_dir, {})
        admin = admin_client(data_dir, serve)
        assert fingerprint(mysql_server, database) == before
        after = admin.get(f"/v1/backtracks/{record['id']}")
        assert after["status"] == "completed" and "finished at the next start" in after["error"], after
    finally:
        serve.kill()
        serve.wait(10)


def schema_state(server, schema: str) -> dict | None:
    """Every definition and row of ``schema`` (None when it does not exist)."""
    from tests.integration.test_ddl_backtrack import schema_snapshot

    if server.query("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (schema,)) == [(0,)]:
        return None
    snap = schema_snapshot(server, schema)
    snap["routines"] = server.query("SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION, SQL_MODE FROM "
                                    "information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s ORDER BY 2", (schema,))
    snap["db"] = server.query(f"SHOW CREATE DATABASE `{schema}`")
    return snap


@pytest.mark.parametrize("point", ["before_rename", "after_rename", "after_schema"])
def test_sigkill_in_the_middle_of_a_held_drop_database(mysql_server, database, tmp_path, point):
    """Killed before the RENAME (triggers already dropped: rolled back, all there), after it (the
    schema's view and procedure still there: finished, all held) or after the schema's own DROP
    (journal not yet marked: finished). The journal says which; a backtrack to before the DROP
    brings the schema back exactly either way."""
    if mysql_server.private is None:
        pytest.skip("needs the server's binlog position helpers of a private server")
    from tests.integration.backtrack_support import now_iso
    from tests.integration.streamer_support import wait_caught_up_dir
    from tests.integration.test_ddl_backtrack import assert_same

    schema = database[:50] + "_crashdb"
    mysql_server.query(f"CREATE DATABASE `{schema}` CHARACTER SET latin1")
    with mysql_server.connect(schema) as conn, conn.cursor() as cur:
        for sql in ["CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
                    "CREATE TABLE b (id INT PRIMARY KEY, a_id INT, "
                    "CONSTRAINT b_a FOREIGN KEY (a_id) REFERENCES a (id))",
                    "CREATE TRIGGER a_bi BEFORE INSERT ON a FOR EACH ROW SET NEW.v = NEW.v * 2",
                    "CREATE VIEW va AS SELECT id, v FROM a",
                    "CREATE PROCEDURE pa() SELECT COUNT(*) FROM a",
                    "INSERT INTO a (v) VALUES (1), (2), (3)", "INSERT INTO b VALUES (1, 1), (2, 3)"]:
            cur.execute(sql)
    before = schema_state(mysql_server, schema)
    held_before = set(_hold_tables(mysql_server))
    data_dir = tmp_path / "data"
    serve = start_serve(mysql_server, data_dir, {"AURORATRACK_DDL_TEST_PAUSE": f"{point}:60"})
    try:
        admin = admin_client(data_dir, serve)
        port = int(admin.get("/v1/status")["listen"].rsplit(":", 1)[1])
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        time.sleep(0.02)
        moment = now_iso()
        time.sleep(0.02)
        client = pymysql.connect(host="127.0.0.1", port=port, user=mysql_server.user,
                                 password=mysql_server.password, database=database, autocommit=True)
        threading.Thread(target=_run_quietly, args=(client, f"DROP DATABASE `{schema}`"), daemon=True).start()
        deadline = time.monotonic() + 30
        while journal_states(data_dir) != ["started"] or not _at_point(mysql_server, schema, point):
            assert time.monotonic() < deadline, "the held DROP DATABASE never reached its pause point"
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        serve = start_serve(mysql_server, data_dir, {})
        admin = admin_client(data_dir, serve)  # up: the journal was settled before clients got in
        held = sorted(set(_hold_tables(mysql_server)) - held_before)
        if point == "before_rename":
            assert journal_states(data_dir) == ["failed"]
            assert_same(schema_state(mysql_server, schema), before)  # all there, trigger re-created
            assert held == []
        else:
            assert journal_states(data_dir) == ["done"]
            assert schema_state(mysql_server, schema) is None  # all dropped, the tables held
            assert [name.split("_", 2)[2] for name in held] == ["a", "b"]
            assert mysql_server.query(f"SELECT id, v FROM `{HOLD_SCHEMA}`.`{held[0]}` ORDER BY id") == [
                (1, 2), (2, 4), (3, 6)]
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        record = admin.post("/v1/backtracks", {"to": moment})
        deadline = time.monotonic() + 120
        while (record := admin.get(f"/v1/backtracks/{record['id']}"))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, f"the backtrack did not end: {record}"
            time.sleep(0.1)
        assert record["status"] == "completed", record
        assert_same(schema_state(mysql_server, schema), before)
    finally:
        serve.kill()
        serve.wait(10)
        mysql_server.query(f"DROP DATABASE IF EXISTS `{schema}`")


def _at_point(server, schema: str, point: str) -> bool:
    """The op has reached ``point`` as the server shows it."""
    if point == "before_rename":  # the trigger dropped, the RENAME not yet run
        return server.query("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                            (schema,)) == [(0,)]
    tables = server.query("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (schema,))
    if point == "after_rename":
        return tables == [(1,)]  # only the view is left
    return server.query("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                        (schema,)) == [(0,)]


def _run_quietly(client, sql: str) -> None:
    try:
        with client.cursor() as cur:
            cur.execute(sql)
    except pymysql.MySQLError:
        pass  # the proxy was killed under it
