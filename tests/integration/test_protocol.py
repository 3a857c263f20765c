"""Protocol coverage: every command the relay must follow, by real clients through the real proxy.

Each test drives the session's real server (``mysql_server``) through the proxy with PyMySQL,
mysql-connector-python (pure Python, prepared cursors), the MariaDB Connector/Python ``mariadb``
package (in a child process: see ``ChildPython``), or, where no driver exposes a command,
hand-written packets (``rawmysql``). After each step it checks what the proxy believes about the
session (idle, in a transaction or not, user, database) and that the next command still works.
CLIENT_DEPRECATE_EOF on and off is covered with the raw client: none of the three drivers
installed here asks for it (and PyMySQL cannot read its responses).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from proxy.relay import SessionInfo
from proxy.service import BackgroundService
from tests.integration import rawmysql as raw

BIG = 0xFFFFFF  # one full protocol chunk: payloads of this size or more are split


# -- helpers ------------------------------------------------------------------------------------


def session_infos(svc: BackgroundService) -> list[SessionInfo]:
    """The proxy's view of every session, read on its event loop."""
    return svc.call_soon(lambda: svc.service.proxy.session_infos())


def session_of(svc: BackgroundService, connection_id: int) -> SessionInfo:
    """The proxy's session whose server connection id is ``connection_id``."""
    mine = [s for s in session_infos(svc) if s.server_connection_id == connection_id]
    assert len(mine) == 1, f"connection {connection_id}: {session_infos(svc)}"
    return mine[0]


def assert_idle(svc: BackgroundService, connection_id: int, in_transaction: bool = False,
                **expected: object) -> SessionInfo:
    """The session is idle, inside a transaction or not as said, and matches ``expected``."""
    info = session_of(svc, connection_id)
    assert info.state == "idle", info
    assert info.in_transaction is in_transaction, info
    for name, value in expected.items():
        assert getattr(info, name) == value, (name, info)
    return info


def assert_gone(svc: BackgroundService, connection_id: int) -> None:
    """The proxy no longer has a session for that server connection."""
    assert not [s for s in session_infos(svc) if s.server_connection_id == connection_id]


def wait_gone(svc: BackgroundService, connection_id: int, timeout: float = 5.0) -> None:
    """Wait until the proxy has ended the session of that server connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [s for s in session_infos(svc) if s.server_connection_id == connection_id]:
            return
        time.sleep(0.02)
    assert_gone(svc, connection_id)


def connect_pymysql(svc: BackgroundService, server, database: str | None = None,
                    **kwargs) -> pymysql.Connection:
    kwargs.setdefault("user", server.user)
    kwargs.setdefault("password", server.password)
    return pymysql.connect(host="127.0.0.1", port=svc.port, database=database,
                           autocommit=True, **kwargs)


def connect_connector(svc: BackgroundService, server, database: str | None = None, **kwargs):
    kwargs.setdefault("user", server.user)
    kwargs.setdefault("password", server.password)
    return mysql.connector.connect(host="127.0.0.1", port=svc.port, database=database,
                                   autocommit=True, use_pure=True, **kwargs)


class ChildError(Exception):
    """An exception raised by the code a ``ChildPython`` ran."""


class ChildPython:
    """Python statements run one at a time in a child process, for the MariaDB connector.

    It must not run in the proxy's process: while it reads a binary result
    (mysql_stmt_store_result, mysql_stmt_fetch: COM_STMT_FETCH above all) it keeps the GIL, and
    the proxy's thread, which must relay those very bytes, would starve: a deadlock."""

    LOOP = (
        "import json, sys\n"
        "ns = {}\n"
        "for line in sys.stdin:\n"
        "    ns.pop('result', None)\n"
        "    try:\n"
        "        exec(json.loads(line), ns)\n"
        "        out = {'result': ns.get('result')}\n"
        "    except Exception as exc:\n"
        "        out = {'error': f'{type(exc).__name__}: {exc}'}\n"
        "    print(json.dumps(out, default=repr), flush=True)\n"
    )

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.LOOP], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, code: str) -> object:
        """Run ``code``; returns the value it left in ``result``; raises ChildError."""
        self.proc.stdin.write(json.dumps(code) + "\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        if "error" in out:
            raise ChildError(out["error"])
        return out["result"]

    def connect(self, svc: BackgroundService, server, database: str | None = None,
                **kwargs: object) -> int:
        """``conn = mariadb.connect(...)`` through the proxy; returns its connection id."""
        kwargs.setdefault("user", server.user)
        kwargs.setdefault("password", server.password)
        return self.run(f"conn = mariadb.connect(host='127.0.0.1', port={svc.port}, "
                        f"database={database!r}, autocommit=True, **{kwargs!r})\n"
                        "result = conn.connection_id")

    def works(self) -> None:
        """The next command on the child's ``conn`` works."""
        assert self.run("c = conn.cursor(); c.execute('SELECT 41 + 1'); result = c.fetchall()"
                        ) == [[42]]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def mariadb_child() -> Iterator[ChildPython]:
    """A child process with the MariaDB Connector/Python imported."""
    pytest.importorskip("mariadb", reason="MariaDB Connector/Python: apt-get install "
                        "libmariadb-dev; pip install mariadb")
    child = ChildPython()
    try:
        child.run("import mariadb")
        yield child
    finally:
        child.close()


def raw_login(svc: BackgroundService, server, database: str | None = None,
              deprecate_eof: bool = True, **kwargs) -> raw.RawConnection:
    conn = raw.RawConnection("127.0.0.1", svc.port)
    conn.login(server.user, server.password, database, deprecate_eof=deprecate_eof, **kwargs)
    return conn


def works(conn) -> None:
    """The next command on a driver connection works."""
    cur = conn.cursor()
    cur.execute("SELECT 41 + 1")
    assert tuple(cur.fetchall()[0]) == (42,)
    cur.close()


def raw_works(conn: raw.RawConnection) -> None:
    result = conn.query("SELECT 41 + 1")
    assert [raw.text_row_values(r, 1) for r in result[0].rows] == [[b"42"]]


EOF_MODES = pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate_eof", "eof"])


@pytest.fixture(scope="module")
def flavor(mysql_server) -> str:
    return mysql_server.flavor


@pytest.fixture
def table(mysql_server, database) -> str:
    """``database``.t with 10 rows (id 1..10, v 'v1'..'v10', n NULL on even ids)."""
    mysql_server.query(
        f"CREATE TABLE `{database}`.t (id INT PRIMARY KEY, v VARCHAR(20), n INT NULL, b LONGBLOB)")
    values = ", ".join(f"({i}, 'v{i}', {'NULL' if i % 2 == 0 else i})" for i in range(1, 11))
    mysql_server.query(f"INSERT INTO `{database}`.t (id, v, n) VALUES {values}")
    return database


# -- text protocol ------------------------------------------------------------------------------


def test_text_results(proxy, mysql_server, table):
    with connect_pymysql(proxy, mysql_server, table) as conn, conn.cursor() as cur:
        cid = conn.thread_id()
        assert_idle(proxy, cid, user=mysql_server.user, database=table)
        cur.execute("SELECT id, v, n FROM t ORDER BY id")
        rows = cur.fetchall()
        assert rows[:2] == ((1, "v1", 1), (2, "v2", None)) and len(rows) == 10
        assert_idle(proxy, cid)
        cur.execute("SELECT id FROM t WHERE id > 100")  # empty result set
        assert cur.fetchall() == ()
        assert_idle(proxy, cid)
        cur.execute("SELECT 1.5, 'x', NULL, CAST('2024-01-02' AS DATE), X'00FF'")
        assert cur.fetchone()[1:3] == ("x", None)
        cur.execute("SELECT seq, REPEAT('r', seq % 300) FROM seq_1_to_5000")
        assert len(cur.fetchall()) == 5000
        cur.execute("UPDATE t SET v = 'w' WHERE id = 1")
        assert cur.rowcount == 1
        assert_idle(proxy, cid)
        with pytest.raises(pymysql.err.ProgrammingError) as err:
            cur.execute("SELECT * FROM no_such_table")
        assert err.value.args[0] == 1146
        assert_idle(proxy, cid)
        works(conn)


def test_transaction_state_follows_status_flags(proxy, mysql_server, table):
    with connect_pymysql(proxy, mysql_server, table) as conn, conn.cursor() as cur:
        cid = conn.thread_id()
        cur.execute("BEGIN")
        assert_idle(proxy, cid, in_transaction=True)
        cur.execute("UPDATE t SET v = 'tx' WHERE id = 2")
        assert_idle(proxy, cid, in_transaction=True)
        cur.execute("ROLLBACK")
        assert_idle(proxy, cid, in_transaction=False)
        conn.autocommit(False)
        cur.execute("SELECT v FROM t WHERE id = 2")
        assert cur.fetchone() == ("v2",)
        assert_idle(proxy, cid, in_transaction=True)
        conn.commit()
        assert_idle(proxy, cid, in_transaction=False)


def test_multi_statements_and_multiple_results(proxy, mysql_server, table):
    with connect_pymysql(proxy, mysql_server, table,
                         client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        cid = conn.thread_id()
        cur.execute("SELECT 1; SELECT id, v FROM t WHERE id <= 2 ORDER BY id; "
                    "UPDATE t SET n = 7 WHERE id = 3; SELECT COUNT(*) FROM t")
        sets = [cur.fetchall()]
        while cur.nextset():
            sets.append(cur.fetchall())
        assert [tuple(s) for s in sets] == [((1,),), ((1, "v1"), (2, "v2")), (), ((10,),)]
        assert_idle(proxy, cid)
        # An error in the middle ends the response: the rest is not run.
        cur.execute("SELECT 1; SELECT * FROM nope; SELECT 3")
        with pytest.raises(pymysql.err.ProgrammingError):
            while cur.nextset():
                pass
        assert_idle(proxy, cid)
        # A transaction opened by one statement of the batch is seen.
        cur.execute("BEGIN; UPDATE t SET n = 8 WHERE id = 3")
        while cur.nextset():
            pass
        assert_idle(proxy, cid, in_transaction=True)
        cur.execute("COMMIT")
        assert_idle(proxy, cid)
        works(conn)


def test_stored_procedure_call_several_result_sets(proxy, mysql_server, table, mariadb_child):
    mysql_server.query(
        "CREATE PROCEDURE p(IN k INT, OUT total INT) BEGIN "
        "SELECT id FROM t WHERE id <= k ORDER BY id; SELECT 'second', k; "
        "SELECT id FROM t WHERE id < 0; SELECT COUNT(*) INTO total FROM t; END",
        database=table)
    with connect_pymysql(proxy, mysql_server, table) as conn, conn.cursor() as cur:
        cid = conn.thread_id()
        cur.execute("CALL p(2, @total)")
        sets = [cur.fetchall()]
        while cur.nextset():
            sets.append(cur.fetchall())
        # three result sets, then the CALL's own OK
        assert [tuple(s) for s in sets] == [((1,), (2,)), (("second", 2),), (), ()]
        assert_idle(proxy, cid)
        cur.execute("SELECT @total")
        assert cur.fetchone() == (10,)
    # Binary protocol: COM_STMT_EXECUTE of a CALL with an OUT parameter (SERVER_PS_OUT_PARAMS).
    cid = mariadb_child.connect(proxy, mysql_server, table)
    sets = mariadb_child.run("cur = conn.cursor()\n"
                             "cur.callproc('p', (3, 0))\n"
                             "result = [cur.fetchall()]\n"
                             "while cur.nextset():\n"
                             "    result.append(cur.fetchall() if cur.description else None)")
    # three result sets, the OUT parameter's result set, then the CALL's own OK
    assert sets == [[[1], [2], [3]], [["second", 3]], [], [[10]], None]
    assert_idle(proxy, cid)
    mariadb_child.works()


@EOF_MODES
def test_raw_text_results_with_and_without_deprecate_eof(proxy, mysql_server, table,
                                                         deprecate_eof):
    mysql_server.query("CREATE PROCEDURE two() BEGIN SELECT 1; SELECT 2, 3; END", database=table)
    with raw_login(proxy, mysql_server, table, deprecate_eof=deprecate_eof) as conn:
        info = assert_idle(proxy, conn.connection_id, database=table)
        assert info.user == mysql_server.user
        sessions = proxy.call_soon(lambda: list(proxy.service.proxy.sessions.values()))
        tracker = [s.tracker for s in sessions if s.server_connection_id == conn.connection_id][0]
        assert tracker.deprecate_eof is deprecate_eof
        results = conn.query("SELECT id, v FROM t ORDER BY id")
        assert len(results) == 1 and len(results[0].rows) == 10
        assert_idle(proxy, conn.connection_id)
        assert conn.query("SELECT id FROM t WHERE 0")[0].rows == []
        results = conn.query("SELECT 1; DO 0; SELECT 'a', 'b'; SELECT id FROM t WHERE 0")
        assert [r.columns for r in results] == [1, 0, 2, 1]
        assert_idle(proxy, conn.connection_id)
        results = conn.query("CALL two()")
        assert [r.columns for r in results] == [1, 2, 0]
        assert_idle(proxy, conn.connection_id)
        results = conn.query("BEGIN; SELECT 1")
        assert_idle(proxy, conn.connection_id, in_transaction=True)
        conn.query("COMMIT")
        assert_idle(proxy, conn.connection_id)
        raw_works(conn)


@EOF_MODES
def test_raw_pipelined_commands(proxy, mysql_server, table, deprecate_eof):
    """Several commands in one write: the proxy must find each response's end."""
    with raw_login(proxy, mysql_server, table, deprecate_eof=deprecate_eof) as conn:
        batch = b"".join(raw.frame(bytes((raw.COM_QUERY,)) + q, 0) for q in (
            b"SELECT id FROM t ORDER BY id", b"SELECT 1; SELECT 2", b"DO 1"))
        batch += raw.frame(bytes((raw.COM_PING,)), 0)
        batch += raw.frame(bytes((raw.COM_QUERY,)) + b"SELECT * FROM nope", 0)
        batch += raw.frame(bytes((raw.COM_INIT_DB,)) + table.encode(), 0)
        conn.sock.sendall(batch)
        assert len(conn.read_results()[0].rows) == 10
        assert [len(r.rows) for r in conn.read_results()] == [1, 1]
        conn.read_ok()
        conn.read_ok()
        with pytest.raises(raw.ServerError) as err:
            conn.read_results()
        assert err.value.errno == 1146
        conn.read_ok()
        assert_idle(proxy, conn.connection_id, database=table)
        raw_works(conn)


# -- prepared statements ------------------------------------------------------------------------


def test_prepared_statements_mysql_connector(proxy, mysql_server, table):
    conn = connect_connector(proxy, mysql_server, table)
    try:
        cid = conn.connection_id
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT id, v, n FROM t WHERE id BETWEEN ? AND ? ORDER BY id", (2, 4))
        assert cur.fetchall() == [(2, "v2", None), (3, "v3", 3), (4, "v4", None)]
        assert_idle(proxy, cid)
        cur.execute("SELECT id, v, n FROM t WHERE id BETWEEN ? AND ? ORDER BY id", (9, 20))
        assert [r[0] for r in cur.fetchall()] == [9, 10]
        cur.execute("UPDATE t SET v = ? WHERE id = ?", ("p", 1))
        assert cur.rowcount == 1
        assert_idle(proxy, cid)
        with pytest.raises(mysql.connector.Error):
            cur.execute("INSERT INTO t (id) VALUES (?)", (1,))  # duplicate key: ERR
        assert_idle(proxy, cid)
        cur.close()
        # The commands one by one: prepare, send long data, execute, reset, close.
        stmt = conn.cmd_stmt_prepare(b"UPDATE t SET b = ? WHERE id = ?")
        sid = stmt["statement_id"]
        assert_idle(proxy, cid)
        sent = conn.cmd_stmt_send_long_data(sid, 0, io.BytesIO(b"discarded"))
        assert sent == 9
        conn.cmd_stmt_reset(sid)  # drops the long data sent so far
        assert_idle(proxy, cid)
        # An IOBase parameter goes as COM_STMT_SEND_LONG_DATA packets of 128 KiB, then execute.
        conn.cmd_stmt_execute(sid, (io.BytesIO(b"L" * 300_000), 5), stmt["parameters"])
        assert_idle(proxy, cid)
        conn.cmd_stmt_close(sid)
        works(conn)
        assert_idle(proxy, cid)
    finally:
        conn.close()
    assert mysql_server.query("SELECT LENGTH(b) FROM t WHERE id = 5", database=table) == [
        (300_000,)]


@pytest.mark.parametrize("prefetch", [1, 3, 20])
def test_cursor_fetch_mariadb_connector(proxy, mysql_server, table, prefetch, mariadb_child):
    """A read-only server-side cursor: COM_STMT_EXECUTE opens it, COM_STMT_FETCH reads it."""
    child = mariadb_child
    cid = child.connect(proxy, mysql_server, table)
    child.run("cur = conn.cursor(cursor_type=mariadb.constants.CURSOR.READ_ONLY, "
              f"prefetch_size={prefetch})\n"
              "cur.execute('SELECT id, v FROM t WHERE id > ? ORDER BY id', (0,))")
    assert_idle(proxy, cid)  # the cursor is open; no command is in flight
    assert child.run("result = cur.fetchone()") == [1, "v1"]
    assert_idle(proxy, cid)
    assert child.run("result = cur.fetchall()") == [[i, f"v{i}"] for i in range(2, 11)]
    assert_idle(proxy, cid)
    assert child.run("cur.close()\n"
                     "cur = conn.cursor(prepared=True)\n"
                     "cur.execute('SELECT v FROM t WHERE id = ?', (4,))\n"
                     "result = cur.fetchall()\n"
                     "cur.execute('SELECT v FROM t WHERE id = ?', (5,))\n"
                     "result += cur.fetchall()") == [["v4"], ["v5"]]
    assert_idle(proxy, cid)
    child.works()
    child.run("conn.close()")
    wait_gone(proxy, cid)


@EOF_MODES
def test_raw_prepared_statement_lifecycle(proxy, mysql_server, table, deprecate_eof):
    """prepare, execute, cursor + fetch, send long data, reset, close; each step by hand."""
    with raw_login(proxy, mysql_server, table, deprecate_eof=deprecate_eof) as conn:
        cid = conn.connection_id
        sid, columns, params = conn.prepare("SELECT id, v FROM t WHERE id >= ? ORDER BY id")
        assert (columns, params) == (2, 1)
        assert_idle(proxy, cid)
        assert len(conn.execute(sid, params=[b"8"]).rows) == 3
        assert_idle(proxy, cid)
        opened = conn.execute(sid, flags=raw.CURSOR_TYPE_READ_ONLY, params=[b"1"])
        assert opened.status & raw.SERVER_STATUS_CURSOR_EXISTS and not opened.rows
        assert_idle(proxy, cid)
        got = []
        while True:
            batch = conn.fetch(sid, 4)
            got += batch.rows
            assert_idle(proxy, cid)
            if batch.status & raw.SERVER_STATUS_LAST_ROW_SENT:
                break
        assert len(got) == 10
        with pytest.raises(raw.ServerError):  # the cursor is exhausted and closed
            conn.fetch(sid, 1)
        assert_idle(proxy, cid)
        # A cursor closed early by COM_STMT_RESET.
        conn.execute(sid, flags=raw.CURSOR_TYPE_READ_ONLY, params=[b"1"])
        assert len(conn.fetch(sid, 2).rows) == 2
        conn.send_command(raw.COM_STMT_RESET, struct.pack("<I", sid))
        conn.read_ok()
        assert_idle(proxy, cid)
        # A statement without a result set: OK only, and no cursor.
        usid, _, uparams = conn.prepare("UPDATE t SET v = ? WHERE id = 6")
        assert uparams == 1
        conn.send_command(raw.COM_STMT_SEND_LONG_DATA, struct.pack("<IH", usid, 0) + b"long-")
        conn.send_command(raw.COM_STMT_SEND_LONG_DATA, struct.pack("<IH", usid, 0) + b"data")
        assert conn.execute(usid, long_data_params=1).affected_rows == 1
        assert_idle(proxy, cid)
        conn.send_command(raw.COM_STMT_CLOSE, struct.pack("<I", usid))  # no response
        conn.send_command(raw.COM_STMT_CLOSE, struct.pack("<I", sid))
        with pytest.raises(raw.ServerError) as err:
            conn.execute(sid)
        assert err.value.errno == 1243  # ER_UNKNOWN_STMT_HANDLER
        assert_idle(proxy, cid)
        assert conn.query("SELECT v FROM t WHERE id = 6")[0].rows == [b"\x09long-data"]
        raw_works(conn)


# -- utility commands -------------------------------------------------------------------------------


def test_init_db_and_ping(proxy, mysql_server, table):
    with connect_pymysql(proxy, mysql_server) as conn, conn.cursor() as cur:
        cid = conn.thread_id()
        assert_idle(proxy, cid, database=None)
        conn.select_db(table)  # COM_INIT_DB
        assert_idle(proxy, cid, database=table)
        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone() == (10,)
        with pytest.raises(pymysql.err.OperationalError) as err:
            conn.select_db("no_such_database_here")
        assert err.value.args[0] == 1049
        assert_idle(proxy, cid, database=table)
        conn.ping(reconnect=False)  # COM_PING
        assert_idle(proxy, cid)
        cur.execute(f"USE `{table}`")
        assert_idle(proxy, cid, database=table)
        works(conn)


def test_change_user(proxy, mysql_server, table, auth_users, mariadb_child):
    conn = connect_connector(proxy, mysql_server, table)
    try:
        cid = conn.connection_id
        cur = conn.cursor()
        cur.execute("BEGIN")
        cur.execute("SET @kept = 1")
        assert_idle(proxy, cid, in_transaction=True)
        conn.cmd_change_user(username="at_native", password="native-pw", database=table)
        # COM_CHANGE_USER ends the transaction and resets the session, like a new login.
        assert_idle(proxy, cid, in_transaction=False, user="at_native", database=table)
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER(), @kept")
        assert cur.fetchall() == [("at_native@%", None)]
        conn.cmd_change_user(username=mysql_server.user, password=mysql_server.password,
                             database="")
        assert_idle(proxy, cid, user=mysql_server.user, database=None)
        cur = conn.cursor()
        cur.execute("SELECT DATABASE()")
        assert cur.fetchall() == [(None,)]
        works(conn)
    finally:
        conn.close()
    # An auth switch inside COM_CHANGE_USER (ed25519), with the MariaDB connector.
    cid = mariadb_child.connect(proxy, mysql_server, table)
    mariadb_child.run(f"conn.change_user('at_ed25519', 'ed-pw', {table!r})")
    assert_idle(proxy, cid, user="at_ed25519", database=table)
    mariadb_child.works()


def test_change_user_with_wrong_password(proxy, mysql_server, table, auth_users):
    conn = connect_connector(proxy, mysql_server, table)
    try:
        cid = conn.connection_id
        with pytest.raises(mysql.connector.Error) as err:
            conn.cmd_change_user(username="at_native", password="wrong", database=table)
        assert err.value.errno == 1045
        # The server keeps the session, still logged in as before; so must the proxy.
        assert_idle(proxy, cid, user=mysql_server.user, database=table)
        cur = conn.cursor()
        cur.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1), DATABASE()")
        assert cur.fetchall() == [(mysql_server.user, table)]
    finally:
        conn.close()


def test_reset_connection(proxy, mysql_server, table, mariadb_child):
    conn = connect_connector(proxy, mysql_server, table)
    try:
        cid = conn.connection_id
        cur = conn.cursor()
        cur.execute("SET @x = 5")
        cur.execute("BEGIN")
        cur.execute("UPDATE t SET v = 'rolled back' WHERE id = 1")
        assert_idle(proxy, cid, in_transaction=True)
        assert conn.cmd_reset_connection()  # COM_RESET_CONNECTION
        assert_idle(proxy, cid, in_transaction=False, database=table)
        cur = conn.cursor()
        cur.execute("SELECT @x, (SELECT v FROM t WHERE id = 1)")
        assert cur.fetchall() == [(None, "v1")]
    finally:
        conn.close()
    cid = mariadb_child.connect(proxy, mysql_server, table)
    mariadb_child.run("conn.reset()")
    assert_idle(proxy, cid, database=table)
    mariadb_child.works()


@EOF_MODES
def test_set_option_field_list_statistics(proxy, mysql_server, table, deprecate_eof):
    with raw_login(proxy, mysql_server, table, deprecate_eof=deprecate_eof) as conn:
        cid = conn.connection_id
        # COM_SET_OPTION: multi-statements off, then on again (answered by EOF / OK-0xFE).
        conn.send_command(raw.COM_SET_OPTION, struct.pack("<H", 1))
        assert conn.read_packet()[0] == 0xFE
        assert_idle(proxy, cid)
        with pytest.raises(raw.ServerError) as err:
            conn.query("SELECT 1; SELECT 2")
        assert err.value.errno == 1064
        assert_idle(proxy, cid)
        conn.send_command(raw.COM_SET_OPTION, struct.pack("<H", 0))
        assert conn.read_packet()[0] == 0xFE
        assert len(conn.query("SELECT 1; SELECT 2")) == 2
        assert_idle(proxy, cid)
        # COM_FIELD_LIST: column definitions until EOF; an unknown table is an ERR.
        conn.send_command(raw.COM_FIELD_LIST, b"t\x00")
        definitions = []
        while (packet := conn.read_packet())[0] != 0xFE:
            definitions.append(packet)
        assert len(definitions) == 4 and b"\x02id" in definitions[0]
        assert_idle(proxy, cid)
        conn.send_command(raw.COM_FIELD_LIST, b"t\x00v%")
        assert conn.read_packet()[0] != 0xFE and conn.read_packet()[0] == 0xFE
        conn.send_command(raw.COM_FIELD_LIST, b"nope\x00")
        with pytest.raises(raw.ServerError) as err:
            conn.read_ok()
        assert err.value.errno == 1146
        assert_idle(proxy, cid)
        # COM_STATISTICS: one bare string.
        conn.send_command(raw.COM_STATISTICS)
        assert conn.read_packet().startswith(b"Uptime:")
        assert_idle(proxy, cid)
        raw_works(conn)
    conn = connect_connector(proxy, mysql_server, table)
    try:
        assert "Uptime" in conn.cmd_statistics()
        assert_idle(proxy, conn.connection_id)
        works(conn)
    finally:
        conn.close()


@EOF_MODES
def test_process_info_refresh_debug_and_unknown_commands(proxy, mysql_server, deprecate_eof):
    """The rarely used commands: COM_PROCESS_INFO answers with a result set, COM_REFRESH with
    an OK, COM_DEBUG with an EOF; a command the server does not know gets its ERR."""
    with raw_login(proxy, mysql_server, deprecate_eof=deprecate_eof) as conn:
        cid = conn.connection_id
        conn.send_command(0x0A)  # COM_PROCESS_INFO
        results = conn.read_results()
        assert results[0].columns >= 8 and len(results[0].rows) >= 1
        assert_idle(proxy, cid)
        conn.send_command(0x07, b"\x00")  # COM_REFRESH with no option
        conn.read_ok()
        assert_idle(proxy, cid)
        conn.send_command(0x0D)  # COM_DEBUG
        assert conn.read_packet()[0] == 0xFE
        assert_idle(proxy, cid)
        for command in (0x00, 0x0F, 0x1D, 0x21, 0xFE):
            conn.send_command(command)
            with pytest.raises(raw.ServerError) as err:
                conn.read_ok()
            assert err.value.errno == 1047  # ER_UNKNOWN_COM_ERROR, from the server
            assert_idle(proxy, cid)
        raw_works(conn)


def test_process_kill_and_quit(proxy, mysql_server, table):
    victim = connect_pymysql(proxy, mysql_server, table)
    victim_id = victim.thread_id()
    assert_idle(proxy, victim_id)
    with raw_login(proxy, mysql_server, table) as killer:
        killer.send_command(raw.COM_PROCESS_KILL, struct.pack("<I", victim_id))
        killer.read_ok()
        assert_idle(proxy, killer.connection_id)
        with pytest.raises(pymysql.err.OperationalError):
            works(victim)
        wait_gone(proxy, victim_id)
        killer.send_command(raw.COM_PROCESS_KILL, struct.pack("<I", 0x7FFFFFF0))
        with pytest.raises(raw.ServerError) as err:
            killer.read_ok()
        assert err.value.errno == 1094  # ER_NO_SUCH_THREAD
        assert_idle(proxy, killer.connection_id)
        raw_works(killer)
        # COM_QUIT: no answer; the server and the proxy close the session.
        killer.send_command(raw.COM_QUIT)
        assert killer.closed_by_peer()
        wait_gone(proxy, killer.connection_id)
    victim.close()
    conn = connect_pymysql(proxy, mysql_server, table)
    cid = conn.thread_id()
    conn.close()  # PyMySQL sends COM_QUIT
    wait_gone(proxy, cid)


@EOF_MODES
def test_load_data_local_infile(proxy, mysql_server, table, deprecate_eof):
    lines = "".join(f"{i}\tloaded{i}\n" for i in range(100, 3100)).encode()
    with tempfile.NamedTemporaryFile(suffix=".tsv", delete=False) as handle:
        handle.write(lines)
    try:
        with connect_pymysql(proxy, mysql_server, table, local_infile=True,
                             client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
            cid = conn.thread_id()
            cur.execute(f"LOAD DATA LOCAL INFILE '{handle.name}' INTO TABLE t (id, v)")
            assert cur.rowcount == 3000
            assert_idle(proxy, cid)
            # LOCAL INFILE in the middle of a multi-statement.
            cur.execute(f"SELECT 1; LOAD DATA LOCAL INFILE '{handle.name}' IGNORE INTO TABLE t "
                        f"(id, v); SELECT COUNT(*) FROM t")
            while cur.nextset():
                pass
            assert_idle(proxy, cid)
            # The client cannot read the file: it sends an empty upload and raises.
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute("LOAD DATA LOCAL INFILE '/nonexistent/file' INTO TABLE t (id, v)")
            assert_idle(proxy, cid)
            works(conn)
    finally:
        os.unlink(handle.name)
    with raw_login(proxy, mysql_server, table, deprecate_eof=deprecate_eof) as conn:
        conn.send_command(raw.COM_QUERY,
                          b"LOAD DATA LOCAL INFILE 'x.tsv' REPLACE INTO TABLE t (id, v)")
        result = conn.read_result(local_file=lines[:50_000])
        assert result.affected_rows > 0
        assert_idle(proxy, conn.connection_id)
        raw_works(conn)
    assert mysql_server.query("SELECT COUNT(*) FROM t", database=table) == [(3010,)]


# -- packets of 16 MiB and more ----------------------------------------------------------------------


def test_big_packets_both_ways_text_protocol(proxy, mysql_server, table):
    blob = os.urandom(1024) * (20 * 1024)  # 20 MiB: two full chunks and a short one
    with connect_pymysql(proxy, mysql_server, table) as conn, conn.cursor() as cur:
        cid = conn.thread_id()
        cur.execute("UPDATE t SET b = %s WHERE id = 1", (blob,))  # client -> server
        assert_idle(proxy, cid)
        cur.execute("SELECT b, id FROM t WHERE id = 1")  # server -> client
        assert cur.fetchone() == (blob, 1)
        assert_idle(proxy, cid)
        # Exactly 0xFFFFFF bytes each way: the packet is followed by an empty chunk.
        prefix = b"SELECT LENGTH('"
        suffix = b"')"
        query = prefix + b"a" * (BIG - 1 - len(prefix) - len(suffix)) + suffix
        assert len(query) + 1 == BIG
        cur.execute(query)
        assert cur.fetchone() == (BIG - 1 - len(prefix) - len(suffix),)
        assert_idle(proxy, cid)
        cur.execute(f"SELECT REPEAT('z', {BIG - 4})")  # row payload: 0xFD + 3 bytes + data
        assert len(cur.fetchone()[0]) == BIG - 4
        assert_idle(proxy, cid)
        works(conn)


def test_big_packets_prepared_statements(proxy, mysql_server, table):
    """Binary protocol: a 17 MiB parameter, a 17 MiB row, a 17 MiB COM_STMT_SEND_LONG_DATA.

    The blob is 0xFE bytes, so every continuation chunk starts like an EOF packet. The row is
    read back with the raw client: mysql-connector's pure-Python binary result reader does not
    join chunks of packets of 16 MiB or more (a client bug, seen without the proxy too)."""
    blob = b"\xfe" * (17 * 1024 * 1024)
    conn = connect_connector(proxy, mysql_server, table)
    try:
        cid = conn.connection_id
        cur = conn.cursor(prepared=True)
        cur.execute("UPDATE t SET b = ? WHERE id = 2", (blob,))  # client -> server
        assert cur.rowcount == 1
        assert_idle(proxy, cid)
        cur.close()
        works(conn)
    finally:
        conn.close()
    assert mysql_server.query("SELECT LENGTH(b), b = REPEAT(X'FE', LENGTH(b)) FROM t "
                              "WHERE id = 2", database=table) == [(len(blob), 1)]
    with raw_login(proxy, mysql_server, table) as rconn:
        cid = rconn.connection_id
        sid, _, _ = rconn.prepare("SELECT id, b FROM t WHERE id = ?")
        rows = rconn.execute(sid, params=[b"2"]).rows  # server -> client
        assert len(rows) == 1
        assert rows[0][2:6] == struct.pack("<i", 2) and rows[0].endswith(blob)
        assert len(rows[0]) == 1 + 1 + 4 + 9 + len(blob)  # header, null bitmap, INT, lenenc
        assert_idle(proxy, cid)
        # COM_STMT_SEND_LONG_DATA as one 17 MiB packet: two chunks, and no response.
        lsid, _, _ = rconn.prepare("SELECT LENGTH(?)")
        rconn.send_command(raw.COM_STMT_SEND_LONG_DATA, struct.pack("<IH", lsid, 0) + blob)
        rows = rconn.execute(lsid, long_data_params=1).rows
        assert int.from_bytes(rows[0][2:], "little") == len(blob)
        assert_idle(proxy, cid)
        raw_works(rconn)


# -- authentication --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_users(mysql_server, flavor) -> Iterator[None]:
    """at_native (mysql_native_password) and, on MariaDB, at_ed25519 (ed25519)."""
    statements = ["DROP USER IF EXISTS 'at_native'@'%'", "DROP USER IF EXISTS 'at_ed25519'@'%'"]
    if flavor == "mariadb":
        statements += [
            "CREATE USER 'at_native'@'%' IDENTIFIED VIA mysql_native_password "
            "USING PASSWORD('native-pw')",
            "CREATE USER 'at_ed25519'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw')",
        ]
    else:
        statements.append(
            "CREATE USER 'at_native'@'%' IDENTIFIED WITH mysql_native_password BY 'native-pw'")
    statements += ["GRANT ALL ON *.* TO 'at_native'@'%'", "GRANT ALL ON *.* TO 'at_ed25519'@'%'"]
    for sql in statements:
        if "at_ed25519" in sql and flavor != "mariadb":
            continue
        mysql_server.query(sql)
    yield
    for sql in statements[:2]:
        mysql_server.query(sql)


def test_auth_mysql_native_password(proxy, mysql_server, table, auth_users):
    with connect_pymysql(proxy, mysql_server, table, user="at_native",
                         password="native-pw") as conn:
        assert_idle(proxy, conn.thread_id(), user="at_native", database=table)
        works(conn)
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect_pymysql(proxy, mysql_server, table, user="at_native", password="wrong")
    assert err.value.args[0] == 1045
    # A client that starts with another plugin is switched to the user's (auth switch).
    conn = connect_connector(proxy, mysql_server, table, user="at_native",
                             password="native-pw", auth_plugin="caching_sha2_password")
    try:
        assert_idle(proxy, conn.connection_id, user="at_native")
        works(conn)
    finally:
        conn.close()


def test_auth_ed25519_via_auth_switch(proxy, mysql_server, table, auth_users, flavor,
                                      mariadb_child):
    if flavor != "mariadb":
        pytest.skip("ed25519 is a MariaDB authentication plugin")
    pytest.importorskip("nacl", reason="PyMySQL's client_ed25519 needs PyNaCl")
    # The server greets with mysql_native_password, then switches this user to client_ed25519.
    with connect_pymysql(proxy, mysql_server, table, user="at_ed25519", password="ed-pw") as conn:
        assert_idle(proxy, conn.thread_id(), user="at_ed25519", database=table)
        works(conn)
    cid = mariadb_child.connect(proxy, mysql_server, table, user="at_ed25519", password="ed-pw")
    assert_idle(proxy, cid, user="at_ed25519")
    mariadb_child.works()
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect_pymysql(proxy, mysql_server, table, user="at_ed25519", password="bad")
    assert err.value.args[0] == 1045


def test_auth_switch_raw(proxy, mysql_server, auth_users):
    """A HandshakeResponse naming an unknown plugin gets an auth switch request, relayed."""
    with raw.RawConnection("127.0.0.1", proxy.port) as conn:
        conn.read_handshake()
        conn.capabilities = raw.BASE_CAPABILITIES
        response = conn.handshake_response("at_native", b"\x01" * 20, None, conn.capabilities)
        response = response.replace(b"mysql_native_password\x00", b"made_up_plugin\x00")
        conn.send_packet(response)
        conn.finish_auth("native-pw")
        assert_idle(proxy, conn.connection_id, user="at_native")
        raw_works(conn)


@pytest.fixture
def caching_sha2_user(mysql_server, flavor) -> Iterator[str]:
    if flavor == "mariadb":
        pytest.skip("caching_sha2_password exists only on MySQL; the session's server is MariaDB")
    name = f"at_sha2_{uuid.uuid4().hex[:6]}"
    mysql_server.query(
        f"CREATE USER '{name}'@'%' IDENTIFIED WITH caching_sha2_password BY 'sha2-pw'")
    try:
        yield name
    finally:
        mysql_server.query(f"DROP USER IF EXISTS '{name}'@'%'")


def test_auth_caching_sha2_full_then_fast(proxy, mysql_server, caching_sha2_user):
    pytest.importorskip("cryptography", reason="PyMySQL's RSA full auth needs cryptography")
    mysql_server.query("FLUSH PRIVILEGES")  # empty the server's cache: the next login is full
    for _ in range(2):  # full auth (RSA key exchange without TLS), then fast auth from cache
        with connect_pymysql(proxy, mysql_server, user=caching_sha2_user,
                             password="sha2-pw") as conn:
            assert_idle(proxy, conn.thread_id(), user=caching_sha2_user)
            works(conn)
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect_pymysql(proxy, mysql_server, user=caching_sha2_user, password="nope")
    assert err.value.args[0] == 1045


def test_auth_caching_sha2_mysql_connector(proxy, mysql_server, caching_sha2_user):
    conn = connect_connector(proxy, mysql_server, user=caching_sha2_user, password="sha2-pw")
    try:
        assert_idle(proxy, conn.connection_id, user=caching_sha2_user)
        works(conn)
    finally:
        conn.close()


# -- TLS ---------------------------------------------------------------------------------------------


def test_client_requiring_tls_gets_a_clear_error(make_proxy, mysql_server, mariadb_child):
    # With --client-tls disabled the proxy offers no TLS, so a driver that requires it refuses on its own ...
    proxy = make_proxy(client_tls="disabled")
    with raw.RawConnection("127.0.0.1", proxy.port) as conn:
        conn.read_handshake()
        assert not conn.server_capabilities & raw.CLIENT_SSL
    with pytest.raises(pymysql.err.OperationalError) as err:
        connect_pymysql(proxy, mysql_server, ssl_verify_cert=True)
    assert err.value.args[0] == 2026 and "SSL" in err.value.args[1]
    with pytest.raises(ChildError, match="SSL is required, but the server does not support it"):
        mariadb_child.connect(proxy, mysql_server, ssl=True, ssl_verify_cert=True)
    # ... and one that sends an SSLRequest anyway gets the proxy's ERR, not a hang.
    with raw.RawConnection("127.0.0.1", proxy.port) as conn:
        conn.read_handshake()
        conn.send_packet(struct.pack("<IIB23s", raw.BASE_CAPABILITIES | raw.CLIENT_SSL,
                                     1 << 24, 45, b""))
        with pytest.raises(raw.ServerError) as rerr:
            conn.read_ok()
        assert rerr.value.errno == 2026
        assert "TLS" in rerr.value.message
        assert conn.closed_by_peer()


def test_client_requiring_tls_gets_it_by_default(proxy, mysql_server, mariadb_child):
    """The default proxy offers TLS with its self-signed certificate (this server offers none:
    the proxy's leg to it stays plaintext); a driver that verifies it against that file gets in."""
    if proxy.service.config.tls_cert is not None:
        pytest.skip("this proxy has a CA-signed certificate of its own: test_tls.py verifies that one")
    ca = str(proxy.service.config.data_dir / "tls-cert.pem")
    with connect_pymysql(proxy, mysql_server, ssl_ca=ca, ssl_verify_cert=True) as conn:
        assert conn._sock.version() in ("TLSv1.2", "TLSv1.3")
        assert_idle(proxy, conn.thread_id())
        works(conn)
