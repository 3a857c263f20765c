"""SQL-level prepared DDL through the proxy (proxy.ddlprepare): PREPARE ... FROM a literal or a
user variable then EXECUTE, EXECUTE IMMEDIATE (MariaDB), DEALLOCATE PREPARE, a connection reset.

A real client (mysql-connector, plain and compressed) runs one scenario straight on the server
and through the proxy, in two databases built the same way: what it sees must be equal, the
DDL must be held, the other prepared statements untouched. A backtrack then undoes each form."""

from __future__ import annotations

import mysql.connector
import pymysql
import pytest

from proxy.ddlops import HOLD_SCHEMA
from tests.integration.backtrack_support import backtrack, connect_via, wait_captured
from tests.integration.ddl_support import connector_answers, held_tables, raw_script_answers
from tests.integration.rawmysql import RawConnection
from tests.integration.test_ddl_backtrack import assert_same, moment, schema_snapshot

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::UserWarning")]

TABLES = ["a", "b", "c", "d", "e", "f", "x"]
RESET = "(COM_RESET_CONNECTION)"
SCENARIO = [
    "PREPARE s FROM 'SELECT ? + 1'", "SET @x = 41", "EXECUTE s USING @x",  # not a DDL: untouched
    "PREPARE d1 FROM 'DROP TABLE a'", "EXECUTE d1", "EXECUTE d1",  # held, then the server's 1051
    "PREPARE d1 FROM 'SELECT 1'", "EXECUTE d1",  # the name now prepares something else
    "SET @q = 'TRUNCATE TABLE b'", "PREPARE d2 FROM @q", "EXECUTE d2", "SELECT COUNT(*) FROM b",
    "EXECUTE d2 USING @q",  # the server's 1210: a DDL has no parameters
    "PREPARE d3 FROM 'DROP TABLE c'", "DEALLOCATE PREPARE d3", "EXECUTE d3",  # 1243: forgotten
    "PREPARE d3 FROM 'DROP TABLE c'", "DROP PREPARE d3", "EXECUTE d3",
    "PREPARE d4 FROM 'DROP TABLE missing_t'", "EXECUTE d4",
    "PREPARE `D 5` FROM \"DROP TABLE IF EXISTS missing_u, x\"", "EXECUTE `d 5`",  # Note 1051
    "EXECUTE IMMEDIATE 'DROP TABLE IF EXISTS d, missing_v'",
    "SET @q2 = 'DROP TABLE e'", "EXECUTE IMMEDIATE @q2",
    "SET @q3 = 'SELECT 3'", "EXECUTE IMMEDIATE @q3",  # read, not a DDL: relayed as it came
    "EXECUTE IMMEDIATE 'SELECT 4'",
    "PREPARE d6 FROM 'DROP TABLE f'", RESET, "EXECUTE d6",  # 1243: the reset deallocated it
    "PREPARE d7 FROM 'DROP TABLE c\\'s'",  # an escape: the session reads the text (a syntax error)
    "SHOW TABLES",
]


def observe(port: int, server, database: str, compress: bool) -> list[tuple]:
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=server.user, password=server.password,
                                   database=database, compress=compress, use_pure=True, autocommit=True)
    conn.get_warnings = True
    try:
        cur = conn.cursor()
        for name in TABLES:
            cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY)")
            cur.execute(f"INSERT INTO {name} VALUES (1), (2)")
        cur.close()
        return connector_answers(conn, SCENARIO, database, special={RESET: conn.cmd_reset_connection})
    finally:
        conn.close()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "compressed"])
def test_sql_prepared_ddl_answers_as_the_server_does_and_is_held(mysql_server, make_proxy, twin, compress):
    direct_db, proxied_db = twin
    service = make_proxy(hold_ddl=True)
    before = held_tables(mysql_server)
    direct = observe(mysql_server.port, mysql_server, direct_db, compress)
    proxied = observe(service.port, mysql_server, proxied_db, compress)
    for want, got in zip(direct, proxied, strict=True):
        assert got == want
    new = sorted(held_tables(mysql_server) - before)
    # a (EXECUTE), b (from @q), x (a quoted name), d (IMMEDIATE), e (IMMEDIATE @q2); c and f
    # were deallocated before their EXECUTE, so they are still there.
    assert sorted(name.split("_", 2)[2] for name in new) == ["a", "b", "d", "e", "x"]
    by_table = {name.split("_", 2)[2]: name for name in new}
    assert mysql_server.query(f"SELECT id FROM `{HOLD_SCHEMA}`.`{by_table['b']}` ORDER BY id") == [(1,), (2,)]
    for name in new:
        mysql_server.query(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")


SCRIPTS = [  # multi-statement queries (CLIENT_MULTI_STATEMENTS)
    "PREPARE m1 FROM 'DROP TABLE a'; EXECUTE m1; EXECUTE m1",  # held, then the server's 1051
    "PREPARE m2 FROM 'TRUNCATE t'; DEALLOCATE PREPARE m2; EXECUTE m2",  # 1243
    "DROP TABLE IF EXISTS nothing; PREPARE m3 FROM 'TRUNCATE t'; EXECUTE m3; SELECT COUNT(*) FROM t",
    "EXECUTE IMMEDIATE 'DROP TABLE b'; SHOW TABLES",
]


def script_answers(port: int, server, db: str) -> list[bytes]:
    """Every packet of each script's answer, as the client reads it (the database's name
    replaced by as many D's)."""
    conn = RawConnection("127.0.0.1", port)
    try:
        conn.login(server.user, server.password, db)
        for sql in ("CREATE TABLE a (id INT PRIMARY KEY)", "CREATE TABLE b (id INT PRIMARY KEY)",
                    "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (5), (6)"):
            conn.query(sql)
        return raw_script_answers(conn, SCRIPTS, db)
    finally:
        conn.close()


def test_prepared_ddl_in_multi_statement_queries(mysql_server, make_proxy, twin):
    service = make_proxy(hold_ddl=True)
    before = held_tables(mysql_server)
    direct = script_answers(mysql_server.port, mysql_server, twin[0])
    proxied = script_answers(service.port, mysql_server, twin[1])
    for script, want, got in zip(SCRIPTS, direct, proxied, strict=True):
        assert got == want, f"{script}: proxy {got!r} != server {want!r}"
    new = sorted(held_tables(mysql_server) - before)
    assert sorted(name.split("_", 2)[2] for name in new) == ["a", "b", "t"]
    for name in new:
        mysql_server.query(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")


def execute(conn: pymysql.Connection, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def test_each_form_is_undone_by_a_backtrack(svc, mysql_server, database):
    other = database[:50] + "_other"
    mysql_server.query(f"CREATE DATABASE `{other}`")
    try:
        client = connect_via(svc, mysql_server, database)
        execute(client, "CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10))",
                "CREATE TABLE b (id INT PRIMARY KEY, a_id INT, FOREIGN KEY (a_id) REFERENCES a (id))",
                "CREATE TRIGGER a_bi BEFORE INSERT ON a FOR EACH ROW SET NEW.v = UPPER(NEW.v)",
                "CREATE TABLE c (id INT PRIMARY KEY)", "CREATE TABLE e (id INT PRIMARY KEY)",
                "INSERT INTO a (v) VALUES ('one'), ('two')", "INSERT INTO b VALUES (1, 1)",
                "INSERT INTO c VALUES (1), (2), (3)", "INSERT INTO e VALUES (5)",
                f"CREATE TABLE `{other}`.a (id INT PRIMARY KEY)")
        at = moment(svc, mysql_server)
        before = schema_snapshot(mysql_server, database)
        other_before = schema_snapshot(mysql_server, other)
        execute(client, "PREPARE t1 FROM 'TRUNCATE TABLE c'", "EXECUTE t1",
                "SET @drop_b = 'DROP TABLE b'", "PREPARE t2 FROM @drop_b",
                "PREPARE t3 FROM 'DROP TABLE a'",
                f"USE `{other}`",
                "EXECUTE t2", "EXECUTE t3",  # in the database of their PREPARE, not this one
                f"EXECUTE IMMEDIATE 'DROP TABLE `{database}`.e'")
        assert mysql_server.query(f"SHOW TABLES FROM `{database}`") == [("c",)]
        assert mysql_server.query(f"SELECT COUNT(*) FROM `{database}`.c") == [(0,)]
        assert_same(schema_snapshot(mysql_server, other), other_before)
        wait_captured(svc, mysql_server)
        record = backtrack(svc, at)
        assert record.status == "completed", (record.error, record.conflicts)
        assert_same(schema_snapshot(mysql_server, database), before)
        assert_same(schema_snapshot(mysql_server, other), other_before)
    finally:
        mysql_server.query(f"DROP DATABASE IF EXISTS `{other}`")
