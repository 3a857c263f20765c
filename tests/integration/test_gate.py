"""The pause gate against a real server, through the real proxy, driven by real clients.

What DESIGN.md decision 10 promises a client: a command sent while the gate is closed is held
(never forwarded) and runs after ``resume()``; a connection that arrives during a pause waits at
the door; ``drain`` lets short queries finish and kills long ones; ``drop_all`` ends every
session and the server rolls back their open transactions; a client held longer than the hold
timeout gets a clear ERR, never a hang. Also: the session state the proxy tracks (idle/busy,
transaction flag, server connection id, user, current database) matches the server's view.

Every test gets a private proxy (``make_proxy``) so a closed gate never leaks into other tests.
"""

from __future__ import annotations

import socket
import struct
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import mysql.connector
import pymysql
import pytest
import sqlalchemy

from proxy.gate import BACKTRACKING_ERRNO, BACKTRACKING_SQLSTATE, DrainResult
from proxy.relay import SessionInfo
from proxy.service import BackgroundService
from tests.integration.waiting import wait_for

T = TypeVar("T")
LOST_CONNECTION_ERRNOS = (2006, 2013)  # CR_SERVER_GONE_ERROR, CR_SERVER_LOST
ER_QUERY_INTERRUPTED = 1317


# -- helpers --------------------------------------------------------------------------------------


def connect(svc: BackgroundService, server, database: str | None = None, **kwargs
            ) -> pymysql.Connection:
    """A PyMySQL connection through the proxy."""
    kwargs.setdefault("autocommit", True)
    kwargs.setdefault("ssl_disabled", True)  # the proxy offers no TLS; skip building a context
    return pymysql.connect(host="127.0.0.1", port=svc.port, user=server.user,
                           password=server.password, database=database, **kwargs)


def query_one(conn: pymysql.Connection, sql: str, args=None) -> tuple:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def execute(conn: pymysql.Connection, sql: str, args=None) -> int:
    """Run a statement; returns the number of affected rows."""
    with conn.cursor() as cur:
        return cur.execute(sql, args)


def sessions(svc: BackgroundService) -> list[SessionInfo]:
    return svc.call_soon(svc.service.proxy.session_infos)


def session_of(svc: BackgroundService, conn: pymysql.Connection) -> SessionInfo:
    """The proxy's view of the session behind ``conn`` (found by the client's own address)."""
    host, port = conn._sock.getsockname()[:2]
    mine = [s for s in sessions(svc) if s.client == f"{host}:{port}"]
    assert len(mine) == 1, f"expected one session for {host}:{port}, got {mine}"
    return mine[0]


def wait_state(svc: BackgroundService, conn: pymysql.Connection, state: str) -> SessionInfo:
    return wait_for(lambda: (info := session_of(svc, conn)).state == state and info,
                    what=f"session state {state!r}")


def count_state(svc: BackgroundService, state: str) -> int:
    return sum(1 for s in sessions(svc) if s.state == state)


def server_has_row(server, database: str, row_id: int) -> bool:
    return bool(server.query("SELECT 1 FROM t WHERE id = %s", (row_id,), database=database))


def drain(svc: BackgroundService, timeout: float) -> DrainResult:
    return svc.call(lambda: svc.gate.drain(timeout))


def drop_all(svc: BackgroundService) -> list[int]:
    return svc.call(svc.gate.drop_all)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for clients that block (held by the gate, waiting at the door, sleeping).
    Not waited for at the end: a failed test's client ends when its proxy stops."""
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="client")
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def table(mysql_server, database: str) -> str:
    mysql_server.query("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", database=database)
    return database


# -- pause / resume -------------------------------------------------------------------------------
def test_held_command_is_not_forwarded_and_runs_after_resume(make_proxy, mysql_server, table, pool):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server, table)
    svc.call_soon(svc.gate.pause)
    insert: Future = pool.submit(execute, conn, "INSERT INTO t VALUES (1, 'held')")
    wait_state(svc, conn, "held")
    assert not insert.done()
    assert not server_has_row(mysql_server, table, 1), "a held command reached the server"
    svc.call_soon(svc.gate.resume)
    assert insert.result(timeout=10) == 1
    assert server_has_row(mysql_server, table, 1)
    assert query_one(conn, "SELECT v FROM t WHERE id = 1") == ("held",)
    assert wait_state(svc, conn, "idle").commands >= 2
    conn.close()


def test_new_connection_waits_at_door_then_succeeds(make_proxy, mysql_server, pool):
    svc = make_proxy(hold_timeout=30)
    svc.call_soon(svc.gate.pause)

    def connect_and_query() -> tuple:
        with connect(svc, mysql_server) as conn:
            return query_one(conn, "SELECT 'through the door'")

    arrival: Future = pool.submit(connect_and_query)
    wait_for(lambda: count_state(svc, "connecting") == 1, what="a connection at the door")
    assert not arrival.done()
    svc.call_soon(svc.gate.resume)
    assert arrival.result(timeout=10) == ("through the door",)


def test_connection_at_door_is_not_dropped(make_proxy, mysql_server, pool):
    """A connection that arrived during the pause has no server connection to drop: it keeps
    waiting through drain and drop_all, and gets in after resume."""
    svc = make_proxy(hold_timeout=30)
    svc.call_soon(svc.gate.pause)

    def connect_and_query() -> tuple:
        with connect(svc, mysql_server) as conn:
            return query_one(conn, "SELECT 'after the backtrack'")

    arrival: Future = pool.submit(connect_and_query)
    wait_for(lambda: count_state(svc, "connecting") == 1, what="a connection at the door")
    assert drain(svc, 2).still_busy == []
    assert drop_all(svc) == []
    assert count_state(svc, "connecting") == 1
    svc.call_soon(svc.gate.resume)
    assert arrival.result(timeout=10) == ("after the backtrack",)


def test_held_command_gets_backtracking_error_after_hold_timeout(make_proxy, mysql_server):
    svc = make_proxy(hold_timeout=1.0)
    conn = mysql.connector.connect(host="127.0.0.1", port=svc.port, user=mysql_server.user,
                                   password=mysql_server.password, ssl_disabled=True)
    cur = conn.cursor()
    svc.call_soon(svc.gate.pause)
    started = time.monotonic()
    with pytest.raises(mysql.connector.Error) as caught:
        cur.execute("SELECT 1")
    waited = time.monotonic() - started
    assert caught.value.errno == BACKTRACKING_ERRNO
    assert caught.value.sqlstate == BACKTRACKING_SQLSTATE
    assert "database is backtracking" in caught.value.msg
    assert 1.0 <= waited < 10.0  # the hold timeout, then an answer: never a hang
    # Only the command was refused: the session goes on once the gate reopens.
    svc.call_soon(svc.gate.resume)
    cur.execute("SELECT 2")
    assert cur.fetchall() == [(2,)]
    conn.close()


def test_command_without_response_is_not_answered_for(make_proxy, mysql_server):
    """COM_STMT_CLOSE has no response: it must not be held and answered with an ERR, or the
    client reads that ERR as the answer to its next command and every answer after it is
    one behind (regression: "SELECT 3" returned 2)."""
    svc = make_proxy(hold_timeout=1.0)
    conn = mysql.connector.connect(host="127.0.0.1", port=svc.port, user=mysql_server.user,
                                   password=mysql_server.password, ssl_disabled=True,
                                   use_pure=True)
    statement = conn.cmd_stmt_prepare(b"SELECT 1")
    svc.call_soon(svc.gate.pause)
    conn.cmd_stmt_close(statement["statement_id"])
    with pytest.raises(mysql.connector.Error) as caught:
        conn.cmd_query("SELECT 2")
    assert caught.value.errno == BACKTRACKING_ERRNO
    svc.call_soon(svc.gate.resume)
    conn.cmd_query("SELECT 3")
    assert conn.get_rows()[0] == [(3,)]
    conn.close()


def test_client_quitting_during_pause_ends_its_server_connection(make_proxy, mysql_server):
    """COM_QUIT is not held: the server connection (and its transaction) ends at once."""
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server)
    server_id = query_one(conn, "SELECT CONNECTION_ID()")[0]
    svc.call_soon(svc.gate.pause)
    conn.close()  # sends COM_QUIT
    wait_for(lambda: not mysql_server.query(
        "SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s", (server_id,)),
        what="the server connection to end")
    wait_for(lambda: not sessions(svc), what="the session to end")
    svc.call_soon(svc.gate.resume)


def read_first_packet(port: int) -> tuple[bytes, float]:
    """Connect with a bare socket and read the first packet the proxy sends (header removed)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        data = b""
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:3], "little"):
            chunk = sock.recv(4096)
            assert chunk, "the proxy closed the connection without a packet"
            data += chunk
    return data[4:], time.monotonic() - started


def test_new_connection_gets_backtracking_error_after_hold_timeout(make_proxy, mysql_server):
    svc = make_proxy(hold_timeout=1.0)
    svc.call_soon(svc.gate.pause)
    payload, waited = read_first_packet(svc.port)
    assert payload[0] == 0xFF
    assert struct.unpack("<H", payload[1:3])[0] == BACKTRACKING_ERRNO
    assert payload[3:9] == b"#" + BACKTRACKING_SQLSTATE.encode()
    assert b"database is backtracking" in payload[9:]
    assert 1.0 <= waited < 10.0  # the hold timeout, then an answer: never a hang
    # A real driver reports it as a MySQL error, not a hang or a protocol failure.
    with pytest.raises(pymysql.MySQLError) as caught:
        connect(svc, mysql_server)
    assert caught.value.args[0] == BACKTRACKING_ERRNO
    assert "database is backtracking" in caught.value.args[1]
    svc.call_soon(svc.gate.resume)
    with connect(svc, mysql_server) as conn:
        assert query_one(conn, "SELECT 1") == (1,)


class KilledBeforeAnswering(pymysql.connections.Connection):
    """A client whose server connection ends between the server's greeting and its answer."""

    on_greeting: Callable[[int], None]

    def _request_authentication(self) -> None:
        self.on_greeting(self.server_thread_id[0])
        super()._request_authentication()


def test_server_gone_during_handshake_is_a_lost_connection(make_proxy, mysql_server):
    """Found by the 500-client test on a loaded machine: the server dropped a connection whose
    client was slow to answer its greeting (connect_timeout). The proxy's ERR carried sequence
    id 1, which the client, having just sent its own packet 1, rejected as a protocol error
    ("Packet sequence number wrong"). Like a direct connection, it must see a lost connection."""
    svc = make_proxy(hold_timeout=30)

    def kill(connection_id: int) -> None:
        mysql_server.query(f"KILL CONNECTION {connection_id}")
        wait_for(lambda: not sessions(svc), what="the proxy to end the session")

    conn = KilledBeforeAnswering(host="127.0.0.1", port=svc.port, user=mysql_server.user,
                                 password=mysql_server.password, defer_connect=True)
    conn.on_greeting = kill
    with pytest.raises(pymysql.OperationalError) as caught:
        conn.connect()
    assert caught.value.args[0] in LOST_CONNECTION_ERRNOS


# -- drop_all -------------------------------------------------------------------------------------
def test_drop_all_rolls_back_open_transaction(make_proxy, mysql_server, table):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server, table)
    conn.begin()
    assert execute(conn, "INSERT INTO t VALUES (7, 'uncommitted')") == 1
    server_id = query_one(conn, "SELECT CONNECTION_ID()")[0]
    assert session_of(svc, conn).in_transaction
    svc.call_soon(svc.gate.pause)
    assert drain(svc, 5).killed == []
    assert drop_all(svc) == [server_id]
    svc.call_soon(svc.gate.resume)
    assert server_id not in {r[0] for r in mysql_server.query(
        "SELECT ID FROM information_schema.PROCESSLIST")}
    assert not server_has_row(mysql_server, table, 7)
    # The row lock went with the transaction: another writer takes the key at once.
    with mysql_server.connect(table) as other, other.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cur.execute("INSERT INTO t VALUES (7, 'other writer')")
    with pytest.raises(pymysql.OperationalError) as caught:
        query_one(conn, "COMMIT")
    assert caught.value.args[0] in LOST_CONNECTION_ERRNOS
    assert svc.call_soon(lambda: len(svc.service.proxy.sessions)) == 0


def test_drop_all_ends_session_running_a_query(make_proxy, mysql_server, table, pool):
    """Dropped without a drain: closing the socket does not stop a running query on the server,
    so the gate kills it; its transaction is rolled back and its row lock released."""
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server, table)
    conn.begin()
    assert execute(conn, "INSERT INTO t VALUES (9, 'locked')") == 1
    server_id = query_one(conn, "SELECT CONNECTION_ID()")[0]
    sleeper: Future = pool.submit(run_sleep, conn, 30)
    wait_state(svc, conn, "busy")
    svc.call_soon(svc.gate.pause)
    assert drop_all(svc) == [server_id]
    svc.call_soon(svc.gate.resume)
    outcome, elapsed = sleeper.result(timeout=10)
    assert outcome in LOST_CONNECTION_ERRNOS and elapsed < 10
    assert not mysql_server.query("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s",
                                  (server_id,))
    assert not server_has_row(mysql_server, table, 9)
    with mysql_server.connect(table) as other, other.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cur.execute("INSERT INTO t VALUES (9, 'other writer')")


def test_idle_session_sees_lost_connection_and_driver_reconnects(make_proxy, mysql_server):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server)
    before = query_one(conn, "SELECT CONNECTION_ID()")[0]
    svc.call_soon(svc.gate.pause)
    assert drop_all(svc) == [before]
    svc.call_soon(svc.gate.resume)
    with pytest.raises(pymysql.OperationalError) as caught:
        query_one(conn, "SELECT 1")
    assert caught.value.args[0] in LOST_CONNECTION_ERRNOS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # PyMySQL 1.2 deprecates reconnect
        conn.ping(reconnect=True)
    after = query_one(conn, "SELECT CONNECTION_ID()")[0]
    assert after != before
    assert session_of(svc, conn).server_connection_id == after
    conn.close()


def test_sqlalchemy_pool_pre_ping_replaces_dropped_connection(make_proxy, mysql_server):
    svc = make_proxy(hold_timeout=30)
    url = sqlalchemy.URL.create("mysql+pymysql", username=mysql_server.user,
                                password=mysql_server.password, host="127.0.0.1", port=svc.port)
    engine = sqlalchemy.create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            before = conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar()
        svc.call_soon(svc.gate.pause)
        assert drop_all(svc) == [before]
        svc.call_soon(svc.gate.resume)
        with engine.connect() as conn:  # the pooled connection is dead; pre-ping replaces it
            after = conn.execute(sqlalchemy.text("SELECT CONNECTION_ID()")).scalar()
        assert after != before
    finally:
        engine.dispose()


# -- drain ----------------------------------------------------------------------------------------
def run_sleep(conn: pymysql.Connection, seconds: float) -> tuple[object, float]:
    """Run SELECT SLEEP(seconds); returns (the result or the MySQL errno, elapsed seconds)."""
    started = time.monotonic()
    try:
        result: object = query_one(conn, "SELECT SLEEP(%s)", (seconds,))
    except pymysql.MySQLError as exc:
        result = exc.args[0]
    return result, time.monotonic() - started


def test_drain_kills_long_query_after_timeout(make_proxy, mysql_server, pool):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server)
    server_id = query_one(conn, "SELECT CONNECTION_ID()")[0]
    sleeper: Future = pool.submit(run_sleep, conn, 30)
    wait_state(svc, conn, "busy")
    svc.call_soon(svc.gate.pause)
    result = drain(svc, 1.0)
    assert result.killed == [server_id]
    assert result.still_busy == []
    assert 1.0 <= result.waited_s < 10.0  # the timeout, then the kill (grace: 5 s)
    outcome, elapsed = sleeper.result(timeout=10)
    # MySQL's SLEEP() returns 1 when interrupted; MariaDB may answer ER_QUERY_INTERRUPTED.
    assert outcome in ((1,), ER_QUERY_INTERRUPTED)
    assert elapsed < 10
    assert wait_state(svc, conn, "idle").server_connection_id == server_id
    svc.call_soon(svc.gate.resume)
    assert query_one(conn, "SELECT 'still connected'") == ("still connected",)
    conn.close()


def test_drain_lets_short_query_finish(make_proxy, mysql_server, pool):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server)
    sleeper: Future = pool.submit(run_sleep, conn, 0.5)
    wait_state(svc, conn, "busy")
    svc.call_soon(svc.gate.pause)
    result = drain(svc, 10.0)
    assert result.killed == [] and result.still_busy == []
    assert result.waited_s < 5.0
    # drain returned once the response was on its way to the client, not killed.
    assert sleeper.result(timeout=5)[0] == (0,)  # SLEEP() ran to its end
    svc.call_soon(svc.gate.resume)
    conn.close()


def test_drain_ignores_held_commands(make_proxy, mysql_server, pool):
    """A held command is not in flight: drain returns at once and kills nothing."""
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server)
    svc.call_soon(svc.gate.pause)
    held: Future = pool.submit(query_one, conn, "SELECT 'held'")
    wait_state(svc, conn, "held")
    result = drain(svc, 5.0)
    assert result.killed == [] and result.still_busy == [] and result.waited_s < 1.0
    svc.call_soon(svc.gate.resume)
    assert held.result(timeout=10) == ("held",)
    conn.close()


# -- session state --------------------------------------------------------------------------------
def test_session_state_tracking(make_proxy, mysql_server, database, pool):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc, mysql_server)
    info = session_of(svc, conn)
    assert info.state == "idle" and not info.in_transaction
    assert info.server_connection_id == query_one(conn, "SELECT CONNECTION_ID()")[0]
    assert info.user == mysql_server.user
    assert info.database is None

    query_one(conn, f"USE `{database}`")
    assert session_of(svc, conn).database == database
    conn.select_db("information_schema")  # COM_INIT_DB
    assert session_of(svc, conn).database == "information_schema"
    assert query_one(conn, "SELECT DATABASE()") == ("information_schema",)
    with pytest.raises(pymysql.MySQLError):  # a failed USE leaves the database as it was
        query_one(conn, "USE no_such_database_here")
    assert session_of(svc, conn).database == "information_schema"

    conn.begin()
    assert session_of(svc, conn).in_transaction
    conn.commit()
    assert not session_of(svc, conn).in_transaction

    sleeper: Future = pool.submit(run_sleep, conn, 1)
    assert wait_state(svc, conn, "busy").state == "busy"
    assert sleeper.result(timeout=10)[0] == (0,)
    assert session_of(svc, conn).state == "idle"
    conn.close()
