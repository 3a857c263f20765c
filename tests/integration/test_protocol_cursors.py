"""Prepared statements executed with a read-only cursor, through the real proxy, as JDBC's
``useCursorFetch``, Connector/C cursors and ``mariadb-test --cursor-protocol`` run them.

Every statement runs through the proxy and directly against the same server, with MariaDB
Connector/C (through Connector/Python, in a child process: see ``ChildPython``) and with the raw
client; the results must be the same and the proxy's session idle and usable after each.
The shape that used to drop the session: a stored program with a cursor of its own, whose
result sets carry SERVER_STATUS_CURSOR_EXISTS while their rows follow at once.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration import rawmysql as raw
from tests.integration.test_protocol import (  # noqa: F401  (fixtures)
    EOF_MODES,
    assert_idle,
    mariadb_child,
    raw_login,
    raw_works,
    table,
)

PROCEDURES = [
    # A procedure reading its own cursor and selecting each value: CURSOR_EXISTS leaks.
    "CREATE PROCEDURE own_cursor(k INT) BEGIN "
    "DECLARE done INT DEFAULT 0; DECLARE x INT; "
    "DECLARE c CURSOR FOR SELECT id FROM t WHERE id <= k ORDER BY id; "
    "DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1; "
    "OPEN c; l: LOOP FETCH c INTO x; IF done THEN LEAVE l; END IF; SELECT x, x * 2; END LOOP; "
    "CLOSE c; END",
    "CREATE PROCEDURE two_sets() BEGIN SELECT id FROM t WHERE id <= 3 ORDER BY id; "
    "SELECT v FROM t WHERE id = 4; END",
    "CREATE PROCEDURE no_set() BEGIN DECLARE x INT; SET x = 1; UPDATE t SET n = n WHERE 0; END",
]

STATEMENTS = [
    "CALL own_cursor(3)",
    "CALL two_sets()",
    "CALL no_set()",
    "BEGIN NOT ATOMIC DECLARE x VARCHAR(20); DECLARE c CURSOR FOR SELECT v FROM t WHERE id < 3 "
    "ORDER BY id; OPEN c; FETCH c INTO x; SELECT x; SELECT 'after'; CLOSE c; END",
    "BEGIN NOT ATOMIC SELECT 1; SELECT 2, 'two'; END",
    "BEGIN NOT ATOMIC DECLARE x INT; SET x = 1; END",
    "SELECT id, v FROM t ORDER BY id",  # a real cursor: rows through COM_STMT_FETCH
    "SELECT id FROM t WHERE id < 0",  # a cursor over no rows
    "UPDATE t SET n = n WHERE id = 1",  # no result set: the cursor flag is ignored
]

# Connector/C itself cannot read a stored program's own-cursor result sets with a cursor asked
# for (it takes CURSOR_EXISTS for its own cursor: "Commands out of sync", directly too); the raw
# client and mariadb-test below cover those.
CONNECTOR_STATEMENTS = [sql for sql in STATEMENTS if "CURSOR FOR" not in sql and "own_" not in sql]

# Every result set of one statement, through a read-only cursor fetching 2 rows at a time.
RUN_ALL = """
def run_all(statements):
    out = []
    for sql in statements:
        cur = conn.cursor(cursor_type=mariadb.constants.CURSOR.READ_ONLY, prefetch_size=2)
        cur.execute(sql)
        sets = []
        while True:
            sets.append(cur.fetchall() if cur.description else None)
            if not cur.nextset():
                break
        cur.close()
        out.append(sets)
    return out
"""


@pytest.fixture
def procedures(mysql_server, table) -> str:  # noqa: F811 (the imported fixture)
    for sql in PROCEDURES:
        mysql_server.query(sql, database=table)
    return table


def test_cursor_protocol_connector_c_same_as_direct(proxy, mysql_server, procedures,
                                                    mariadb_child):  # noqa: F811
    direct = SimpleNamespace(port=mysql_server.port)
    results = {}
    for name, target in (("direct", direct), ("proxy", proxy)):
        cid = mariadb_child.connect(target, mysql_server, procedures)
        mariadb_child.run(RUN_ALL)
        results[name] = mariadb_child.run(f"result = run_all({CONNECTOR_STATEMENTS!r})")
        if name == "proxy":
            assert_idle(proxy, cid)
        mariadb_child.works()
        mariadb_child.run("conn.close()")
    assert results["proxy"] == results["direct"]
    assert results["proxy"][0] == [[[1], [2], [3]], [["v4"]], None]  # two_sets()
    assert results["proxy"][4] == [[[i, f"v{i}"] for i in range(1, 11)]]


def execute_all(conn: raw.RawConnection, sid: int) -> list[tuple[int, int, int]]:
    """COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY and every packet of its answer, read with
    the server's rule: a cursor is open only when the terminator after the column definitions
    says CURSOR_EXISTS without MORE_RESULTS_EXISTS. Returns (columns, rows, status) per result."""
    conn.send_command(raw.COM_STMT_EXECUTE, struct.pack("<IBI", sid, raw.CURSOR_TYPE_READ_ONLY, 1))
    results = []
    while True:
        payload = conn.read_packet()
        if payload[0] == 0xFF:
            raise raw.ServerError(*raw.parse_err(payload))
        if payload[0] == 0x00:
            status = conn.parse_ok(payload).status
            results.append((0, 0, status))
        else:
            columns, _ = raw.read_lenenc(payload, 0)
            conn.read_column_definitions(columns)
            opened = conn.status & raw.SERVER_STATUS_CURSOR_EXISTS and not (
                conn.status & raw.SERVER_MORE_RESULTS_EXISTS)
            if conn.deprecate_eof or not opened:
                got = conn.read_rows(columns)
                opened = not got.rows and got.status & raw.SERVER_STATUS_CURSOR_EXISTS and not (
                    got.status & raw.SERVER_MORE_RESULTS_EXISTS)
                rows = len(got.rows)
            else:
                rows = 0
            if opened:
                fetched = conn.fetch(sid, 1000)
                rows = len(fetched.rows)
            results.append((columns, rows, conn.status & ~raw.SERVER_STATUS_CURSOR_EXISTS))
        if not conn.status & raw.SERVER_MORE_RESULTS_EXISTS:
            return results


@EOF_MODES
def test_cursor_protocol_raw_same_as_direct(proxy, mysql_server, procedures, deprecate_eof):
    """Both terminator forms (EOF, and the 0xFE OK of CLIENT_DEPRECATE_EOF), packet by packet."""
    direct = SimpleNamespace(port=mysql_server.port)
    results = {}
    for name, target in (("direct", direct), ("proxy", proxy)):
        with raw_login(target, mysql_server, procedures, deprecate_eof=deprecate_eof) as conn:
            got = []
            for sql in STATEMENTS:
                sid, _, _ = conn.prepare(sql)
                got.append(execute_all(conn, sid))
                if name == "proxy":
                    assert_idle(proxy, conn.connection_id)
            raw_works(conn)
            results[name] = got
    assert results["proxy"] == results["direct"]
    assert [cols for cols, _, _ in results["proxy"][0]] == [2, 2, 2, 0]  # own_cursor(3)


def test_mariadb_test_cursor_protocol(proxy, mysql_server, database, tmp_path):
    """The client the failures were found with: ``mariadb-test --cursor-protocol`` running a
    script of stored programs with cursors, through the proxy, records what it does directly."""
    binary = shutil.which("mariadb-test") or shutil.which("mysqltest")
    if binary is None:
        pytest.skip("mariadb-test is not installed (Debian package mariadb-test)")
    script = tmp_path / "cursors.test"
    script.write_text("\n".join([
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10));",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c');",
        "DELIMITER $$;",
        f"{PROCEDURES[0]}$$",
        "BEGIN NOT ATOMIC DECLARE x INT; DECLARE c CURSOR FOR SELECT id FROM t; OPEN c; "
        "FETCH c INTO x; SELECT x; SELECT 'more'; CLOSE c; END$$",
        "DELIMITER ;$$",
        "CALL own_cursor(2);",
        "SELECT v FROM t ORDER BY id;",
        "",
    ]))
    outputs = {}
    for name, port in (("direct", mysql_server.port), ("proxy", proxy.port)):
        mysql_server.query(f"DROP PROCEDURE IF EXISTS `{database}`.own_cursor")
        mysql_server.query(f"DROP TABLE IF EXISTS `{database}`.t")
        result = tmp_path / f"{name}.result"
        run = subprocess.run(
            [binary, "--host=127.0.0.1", f"--port={port}", f"--user={mysql_server.user}",
             f"--password={mysql_server.password}", f"--database={database}",
             "--cursor-protocol", f"--tmpdir={tmp_path}", f"--test-file={script}",
             "--record", f"--result-file={result}"],
            capture_output=True, text=True, timeout=120, cwd=Path(tmp_path))
        assert run.returncode == 0, (name, run.stdout[-2000:], run.stderr[-2000:])
        outputs[name] = result.read_text()
    assert outputs["proxy"] == outputs["direct"]
    assert "more" in outputs["proxy"]
