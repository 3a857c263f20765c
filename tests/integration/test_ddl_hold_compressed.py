"""Held DDL in compressed sessions (CLIENT_COMPRESS): the relay's compressed handlers reach the
DDL hook too (proxy.relay ``compressed_client_data``), the holder talks to the server over a
compressed link and its answer goes back compressed with the leg's sequence ids.

Real compressing clients (mysql-connector pure Python, the mariadb command-line client with
``--compress``; PyMySQL does not compress): what they see through the proxy equals what they see
connected straight to the server, the dropped and truncated tables are held, and a backtrack
brings them back exactly."""

from __future__ import annotations

import subprocess

import mysql.connector
import pytest

from proxy.ddlops import HOLD_SCHEMA
from tests.clients import mariadbcli
from tests.integration.backtrack_support import backtrack, fingerprint, wait_captured
from tests.integration.ddl_support import connector_answers, held_tables
from tests.integration.test_ddl_backtrack import assert_same, moment, schema_snapshot

pytestmark = [pytest.mark.timeout(180), pytest.mark.filterwarnings("ignore::UserWarning")]

SETUP = [
    "CREATE TABLE p (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE c (id INT PRIMARY KEY, pid INT, FOREIGN KEY (pid) REFERENCES p (id)) ENGINE=InnoDB",
    "INSERT INTO p VALUES (1)",
    "INSERT INTO c VALUES (10, 1)",
    "CREATE TABLE a (id INT PRIMARY KEY)",
    "CREATE TABLE b (id INT PRIMARY KEY, note VARCHAR(200))",
    "INSERT INTO b VALUES (1, REPEAT('x', 200))",
    "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    "INSERT INTO t (v) VALUES (1), (2), (3)",
]
SCENARIO = [
    "DROP TABLE missing",
    "DROP TABLE IF EXISTS missing, a",
    "DROP TABLE p",
    "TRUNCATE TABLE t",
    "INSERT INTO t (v) VALUES (9)",
    "SELECT * FROM t",
    "TRUNCATE missing",
    # Over 50 bytes: the client deflates it (shorter packets are stored as they are).
    "DROP TABLE /* a comment long enough for the client to deflate the packet */ b",
    "SHOW TABLES",
]


def compressed_connection(port: int, server, database: str):
    conn = mysql.connector.connect(host="127.0.0.1", port=port, user=server.user, password=server.password,
                                   database=database, compress=True, use_pure=True, autocommit=True)
    conn.get_warnings = True
    return conn


def observe(port: int, server, database: str) -> list[tuple]:
    """What a compressing client sees of each statement: rows, affected rows, warnings, or the
    error (the database's name replaced, to compare two databases)."""
    conn = compressed_connection(port, server, database)
    try:
        cur = conn.cursor()
        for sql in SETUP:
            cur.execute(sql)
        cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
        assert cur.fetchall() == [("Compression", "ON")]
        cur.close()
        return connector_answers(conn, SCENARIO, database)
    finally:
        conn.close()


def test_compressed_client_sees_what_the_server_answers(mysql_server, make_proxy, twin):
    direct_db, proxied_db = twin
    service = make_proxy(hold_ddl=True)
    before = held_tables(mysql_server)
    direct = observe(mysql_server.port, mysql_server, direct_db)
    proxied = observe(service.port, mysql_server, proxied_db)
    assert proxied == direct
    new = sorted(held_tables(mysql_server) - before)
    assert sorted(name.split("_", 2)[2] for name in new) == ["a", "b", "t"]
    by_table = {name.split("_", 2)[2]: name for name in new}
    assert mysql_server.query(f"SELECT id, v FROM `{HOLD_SCHEMA}`.`{by_table['t']}` ORDER BY id") == [
        (1, 1), (2, 2), (3, 3)]
    for name in new:
        mysql_server.query(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")


def run_compressed(client: str, port: int, server, database: str, statements: list[str]) -> None:
    if client == "connector":
        conn = compressed_connection(port, server, database)
        try:
            cur = conn.cursor()
            for sql in statements:
                cur.execute(sql)
            cur.close()
        finally:
            conn.close()
        return
    binary = mariadbcli.client_binary()
    if binary is None:
        pytest.skip("neither mariadb nor mysql (the command-line client) is on PATH")
    subprocess.run([binary, "--no-defaults", "--skip-ssl", "-h127.0.0.1", f"-P{port}", f"-u{server.user}",
                    f"-p{server.password}", "--compress", database, "-e", "; ".join(statements)],
                   capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.parametrize("client", ["connector", "mariadb-cli --compress"])
def test_compressed_drop_and_truncate_are_undone_by_a_backtrack(svc, mysql_server, database, client):
    run_compressed(client, svc.port, mysql_server, database, [
        "CREATE TABLE item (id INT AUTO_INCREMENT PRIMARY KEY, v INT, KEY (v))",
        "CREATE TABLE log (id INT PRIMARY KEY, what VARCHAR(20))",
        "CREATE TRIGGER item_bi BEFORE INSERT ON item FOR EACH ROW SET NEW.v = NEW.v + 1",
        "INSERT INTO item (v) VALUES (1), (2), (3)",
        "INSERT INTO log VALUES (1, 'one'), (2, 'two')",
    ])
    at = moment(svc, mysql_server)
    before = schema_snapshot(mysql_server, database)
    held_before = held_tables(mysql_server)
    run_compressed(client, svc.port, mysql_server, database,
                   ["TRUNCATE TABLE log", "INSERT INTO log VALUES (3, 'three')", "DROP TABLE item"])
    assert fingerprint(mysql_server, database) == {"log": [("33", "7468726565")]}
    assert len(held_tables(mysql_server) - held_before) == 2  # the truncated log and item: held
    wait_captured(svc, mysql_server)
    record = backtrack(svc, at)
    assert record.status == "completed", (record.error, record.conflicts)
    assert_same(schema_snapshot(mysql_server, database), before)


def test_compressed_protocol_prepared_drop_is_held(mysql_server, make_proxy, database):
    """COM_STMT_PREPARE / COM_STMT_EXECUTE of a DROP in a compressed session: the stand-in is
    prepared over the compressed link, the execute held."""
    service = make_proxy(hold_ddl=True)
    before = held_tables(mysql_server)
    conn = compressed_connection(service.port, mysql_server, database)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE z (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO z VALUES (1), (2)")
        cur.close()
        prepared = conn.cursor(prepared=True)
        prepared.execute("DROP TABLE z")
        prepared.close()
        cur = conn.cursor()
        cur.execute("SELECT 1")  # the session goes on
        assert cur.fetchall() == [(1,)]
    finally:
        conn.close()
    (name,) = held_tables(mysql_server) - before
    assert name.endswith("_0_z")
    assert mysql_server.query(f"SELECT id FROM `{HOLD_SCHEMA}`.`{name}` ORDER BY id") == [(1,), (2,)]
    mysql_server.query(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")
