"""Protocol compression (CLIENT_COMPRESS) through the proxy: real clients, the real server.

Clients that compress (mysql-connector-python pure and C extension, the mariadb command-line
client with ``--compress``) run the shared client script of tests/clients/clientscript.py
through the proxy (result sets, prepared statements, a 20 MiB BLOB both ways, multi-statements,
LOAD DATA LOCAL, an error); the server must say ``Compression ON`` for their sessions, and the
proxy's tracker must follow them (idle / in transaction after each step, the gate holding,
dropping and releasing their commands). A malformed compressed packet ends its session only.
PyMySQL does not compress (``compress`` raises NotImplementedError), so it is not among them.
"""

from __future__ import annotations

import socket
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor

import mysql.connector
import pytest

from proxy.compression import inflate, read_compressed_header
from proxy.gate import BACKTRACKING_ERRNO
from tests.clients import external, mariadbcli
from tests.clients.clientscript import comparable_all, expected, infile_text, steps_for
from tests.clients.pyclients import ADAPTERS, Target, run_script
from tests.integration.test_clients import (
    SessionProbe,
    assert_server_state,
    expected_probe,
    proxy_counters,
    wait_sessions_closed,
)
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.timeout(180)
LOST_CONNECTION_ERRNOS = (2006, 2013, 2055)  # gone away, lost, lost (mysql-connector's own)


def compressed_sessions(proxy) -> int:
    relay = proxy.service.proxy
    return proxy.call_soon(lambda: relay.compressed_sessions)


def connect(port: int, server, database: str | None = None, **kwargs):
    """mysql-connector (pure Python) with protocol compression."""
    kwargs.setdefault("autocommit", True)
    return mysql.connector.connect(host="127.0.0.1", port=port, user=server.user,
                                   password=server.password, database=database, compress=True,
                                   use_pure=True, **kwargs)


def status_compression(conn) -> str:
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
    (row,) = cur.fetchall()
    cur.close()
    return row[1]


@pytest.mark.parametrize("client", ["connector-pure-compressed", "connector-cext-compressed",
                                    "mariadb-cli --compress"])
def test_compressed_client_runs_the_script(client, proxy, mysql_server, database, tmp_path):
    infile = tmp_path / "infile.csv"
    infile.write_text(infile_text(), encoding="utf-8")
    target = Target("127.0.0.1", proxy.port, mysql_server.user, mysql_server.password, database)
    steps = steps_for(str(infile))
    probe = SessionProbe(proxy, database)
    sessions_before, errors_before = proxy_counters(proxy)
    compressed_before = compressed_sessions(proxy)

    if client == "connector-pure-compressed":
        observed = run_script(ADAPTERS[client](target), steps, probe)
        log = ""
    elif client == "connector-cext-compressed":
        run = external.run_python_process(client, target, steps, tmp_path)
        observed, log = run.observed, run.log
    else:
        if mariadbcli.client_binary() is None:
            pytest.skip("neither mariadb nor mysql (the command-line client) is on PATH")
        run = mariadbcli.run_cli(target, steps, options=("--compress",))
        observed, log = run.observed, run.log

    assert comparable_all(steps, observed) == expected(), log
    assert_server_state(mysql_server, database)
    sessions_after, errors_after = proxy_counters(proxy)
    assert sessions_after > sessions_before, "the client did not go through the proxy"
    assert errors_after == errors_before, "the proxy ended a session with a protocol error"
    assert compressed_sessions(proxy) - compressed_before == sessions_after - sessions_before
    if client == "connector-pure-compressed":
        assert probe.seen == expected_probe(client, steps)
    assert wait_sessions_closed(probe) == [], "the client left, its proxy session did not"


def test_session_status_says_compression_on(proxy, mysql_server):
    with connect(proxy.port, mysql_server) as conn:
        assert status_compression(conn) == "ON"
    if (binary := mariadbcli.client_binary()) is not None:
        out = subprocess.run(
            [binary, "--no-defaults", "--skip-ssl", "-h127.0.0.1", f"-P{proxy.port}",
             f"-u{mysql_server.user}", f"-p{mysql_server.password}", "--compress", "-N", "-e",
             "SHOW SESSION STATUS LIKE 'Compression'"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        assert out.split() == ["Compression", "ON"]
    # A client that does not ask gets a plain session, as before.
    with mysql.connector.connect(host="127.0.0.1", port=proxy.port, user=mysql_server.user,
                                 password=mysql_server.password, use_pure=True) as conn:
        assert status_compression(conn) == "OFF"


# -- the gate ---------------------------------------------------------------------------------------


def execute(conn, sql: str) -> int:
    cur = conn.cursor()
    cur.execute(sql)
    if cur.with_rows:
        cur.fetchall()
    count = cur.rowcount
    cur.close()
    return count


def query_one(conn, sql: str) -> tuple:
    cur = conn.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    cur.fetchall()
    cur.close()
    return row


def session_of(svc, server_id: int):
    """The proxy's view of the session whose server connection is ``server_id``."""
    infos = svc.call_soon(svc.service.proxy.session_infos)
    (info,) = [i for i in infos if i.server_connection_id == server_id]
    return info


def wait_state(svc, server_id: int, state: str):
    return wait_for(lambda: (info := session_of(svc, server_id)).state == state and info,
                    what=f"session state {state!r}")


@pytest.fixture
def table(mysql_server, database: str) -> str:
    mysql_server.query("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", database=database)
    return database


@pytest.fixture
def pool():
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="client")
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


def test_gate_holds_a_compressed_command_and_runs_it_after_resume(make_proxy, mysql_server,
                                                                  table, pool):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc.port, mysql_server, table)
    server_id = query_one(conn, "SELECT CONNECTION_ID()")[0]
    execute(conn, "BEGIN")
    assert wait_state(svc, server_id, "idle").in_transaction
    execute(conn, "COMMIT")
    assert not wait_state(svc, server_id, "idle").in_transaction
    svc.call_soon(svc.gate.pause)
    insert: Future = pool.submit(execute, conn, "INSERT INTO t VALUES (1, 'held')")
    wait_state(svc, server_id, "held")
    assert not insert.done()
    assert not mysql_server.query("SELECT 1 FROM t", database=table), "a held command ran"
    svc.call_soon(svc.gate.resume)
    assert insert.result(timeout=10) == 1
    assert query_one(conn, "SELECT v FROM t WHERE id = 1") == ("held",)
    assert wait_state(svc, server_id, "idle").commands >= 5
    conn.close()


def test_held_compressed_command_gets_backtracking_error_and_session_goes_on(
        make_proxy, mysql_server):
    svc = make_proxy(hold_timeout=1.0)
    conn = connect(svc.port, mysql_server)
    cur = conn.cursor()  # before the pause: cursor() pings the server, which would be held too
    svc.call_soon(svc.gate.pause)
    with pytest.raises(mysql.connector.Error) as caught:
        cur.execute("SELECT 'held too long'")
    assert caught.value.errno == BACKTRACKING_ERRNO, caught.value
    svc.call_soon(svc.gate.resume)
    # The ERR came as a compressed packet in sequence: the same session goes on.
    assert query_one(conn, "SELECT REPEAT('after', 20)") == ("after" * 20,)
    assert status_compression(conn) == "ON"
    conn.close()


def test_drop_all_ends_a_compressed_session_and_rolls_back(make_proxy, mysql_server, table):
    svc = make_proxy(hold_timeout=30)
    conn = connect(svc.port, mysql_server, table)
    execute(conn, "BEGIN")
    assert execute(conn, "INSERT INTO t VALUES (7, 'uncommitted')") == 1
    server_id = query_one(conn, "SELECT CONNECTION_ID()")[0]
    assert session_of(svc, server_id).in_transaction
    cur = conn.cursor()  # now: cursor() pings, and reports a lost connection as "not available"
    svc.call_soon(svc.gate.pause)
    assert svc.call(lambda: svc.gate.drain(5)).killed == []
    assert svc.call(svc.gate.drop_all) == [server_id]
    svc.call_soon(svc.gate.resume)
    assert not mysql_server.query("SELECT 1 FROM t WHERE id = 7", database=table)
    with pytest.raises(mysql.connector.Error) as caught:
        cur.execute("COMMIT")
    assert caught.value.errno in LOST_CONNECTION_ERRNOS, caught.value


# -- malformed input ----------------------------------------------------------------------------------


def read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_malformed_compressed_packet_ends_only_its_session(make_proxy, mysql_server):
    svc = make_proxy(hold_timeout=30)
    bystander = connect(svc.port, mysql_server)
    victim = connect(svc.port, mysql_server)
    errors_before = svc.call_soon(lambda: svc.service.proxy.protocol_errors)
    # Claims 68 bytes of deflated content; carries 15 bytes that are not zlib.
    victim._socket.sock.sendall(bytes.fromhex("0f000000440000") + b"\x00" * 15)
    answer = read_until_closed(victim._socket.sock)
    # One compressed packet with the next sequence id (the bad one had 0), carrying the proxy's
    # ERR, then the connection closes.
    length, seq, uncompressed = read_compressed_header(answer)
    assert (len(answer), seq) == (7 + length, 1)
    err = inflate(answer[7:], uncompressed)
    assert err[4] == 0xFF and b"does not inflate" in err
    assert svc.call_soon(lambda: svc.service.proxy.protocol_errors) == errors_before + 1
    assert query_one(bystander, "SELECT REPEAT('still here', 10)") == ("still here" * 10,)
    with connect(svc.port, mysql_server) as fresh:
        assert status_compression(fresh) == "ON"
    bystander.close()



def test_change_user_in_a_compressed_session(proxy, mysql_server, database):
    """COM_CHANGE_USER's authentication exchange runs inside compressed packets (MariaDB
    Connector/Python: mysql-connector refuses to change user with compression)."""
    mariadb = pytest.importorskip("mariadb")
    conn = mariadb.connect(host="127.0.0.1", port=proxy.port, user=mysql_server.user,
                           password=mysql_server.password, compress=True, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        (server_id,) = cur.fetchone()
        conn.change_user(mysql_server.user, mysql_server.password, database)
        cur = conn.cursor()
        cur.execute("SELECT DATABASE(), CONNECTION_ID()")
        assert cur.fetchone() == (database, server_id)
        info = wait_for(lambda: (i := session_of(proxy, server_id)).database == database and i,
                        what="the tracker to see the new database")
        assert info.user == mysql_server.user and info.state == "idle"
        cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
        assert cur.fetchone() == ("Compression", "ON")
    finally:
        conn.close()


def mariadb_connector_run(port: int, server, database: str, compress: bool) -> list:
    """Prepared statements (Connector/C sends PREPARE and EXECUTE together) and executemany."""
    import mariadb

    conn = mariadb.connect(host="127.0.0.1", port=port, user=server.user, password=server.password,
                           database=database, compress=compress, autocommit=True)
    try:
        table = f"t_{int(compress)}_{port}"
        conn.cursor().execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, v TEXT)")
        results = []
        for sql, params in [("SELECT ?, REPEAT('z', ?)", (1, 300)),
                            (f"SELECT COUNT(*), SUM(LENGTH(v)) FROM {table} WHERE id > ?", (-1,)),
                            (f"SELECT id, v FROM {table} WHERE id < ? ORDER BY id", (500,))]:
            if not results:
                conn.cursor(prepared=True).executemany(
                    f"INSERT INTO {table} VALUES (?, ?)", [(i, f"v{i}" * 20) for i in range(1000)])
            cur = conn.cursor(prepared=True)
            cur.execute(sql, params)
            results.append([tuple(row) for row in cur.fetchall()])
        cur = conn.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
        results.append(cur.fetchone()[1])
        return results
    finally:
        conn.close()


def test_mariadb_connector_prepared_and_executemany_compressed(proxy, mysql_server, database):
    pytest.importorskip("mariadb")
    errors_before = proxy_counters(proxy)[1]
    direct = mariadb_connector_run(mysql_server.port, mysql_server, database, compress=True)
    through = mariadb_connector_run(proxy.port, mysql_server, database, compress=True)
    assert direct[-1] == through[-1] == "ON"
    assert through == direct and len(through[2]) == 500
    assert proxy_counters(proxy)[1] == errors_before
