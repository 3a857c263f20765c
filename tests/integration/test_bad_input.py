"""Bad input: broken peers end their own session and nothing else.

Raw sockets against the real proxy in front of the real server: a malformed packet, a wrong
sequence id, a declared length beyond max_allowed_packet, a client that disconnects mid-packet
or mid-result, a server connection killed mid-result. Each time the broken session ends (with
an ERR to the client where the protocol leaves room for one: errno and message checked), its
server connection is gone from the server's process list, a bystander PyMySQL session and the
proxy carry on, and the proxy is back to the sessions, tasks and file descriptors it had.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pymysql
import pytest

from proxy.service import BackgroundService
from tests.integration import rawmysql as raw

ER_HANDSHAKE_ERROR = 1043
ER_UNKNOWN_COM_ERROR = 1047
ER_NET_PACKET_TOO_LARGE = 1153
ER_NET_PACKETS_OUT_OF_ORDER = 1156
ER_CONNECTION_KILLED = 1927


@dataclass(frozen=True)
class Census:
    """What the proxy holds: sessions, asyncio tasks on its loop, this process's open fds."""

    sessions: int
    tasks: int
    fds: int


def census(svc: BackgroundService) -> Census:
    gc.collect()  # sockets of earlier tests' dropped client objects are not ours to count
    sessions, tasks = svc.call_soon(
        lambda: (len(svc.service.proxy.sessions), len(asyncio.all_tasks())))
    return Census(sessions, tasks, len(os.listdir("/proc/self/fd")))


def no_leak(now: Census, baseline: Census) -> bool:
    """Back to the baseline's sessions and tasks, and no more file descriptors than then."""
    return (now.sessions, now.tasks) == (baseline.sessions, baseline.tasks) and (
        now.fds <= baseline.fds)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def server_has_connection(mysql_server, connection_id: int) -> bool:
    rows = mysql_server.query(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (connection_id,))
    return rows[0][0] > 0


class Scene:
    """A proxy with a bystander session open; checks that only the broken session is gone."""

    def __init__(self, svc: BackgroundService, mysql_server, database: str):
        self.svc = svc
        self.server = mysql_server
        self.database = database
        self.bystander = pymysql.connect(
            host="127.0.0.1", port=svc.port, user=mysql_server.user,
            password=mysql_server.password, database=database, autocommit=True)
        with self.bystander.cursor() as cur:
            cur.execute("BEGIN")  # a session inside a transaction must survive untouched
            cur.execute("INSERT INTO t VALUES (100, 'bystander')")
        self.baseline = census(svc)

    def login(self, deprecate_eof: bool = True) -> raw.RawConnection:
        conn = raw.RawConnection("127.0.0.1", self.svc.port)
        conn.login(self.server.user, self.server.password, self.database,
                   deprecate_eof=deprecate_eof)
        return conn

    def assert_only_that_session_ended(self, server_connection_id: int | None) -> None:
        svc = self.svc
        wait_for(lambda: census(svc).sessions == self.baseline.sessions, what="session to end")
        if server_connection_id:
            wait_for(lambda: not server_has_connection(self.server, server_connection_id),
                     what=f"server connection {server_connection_id} to end")
        # The bystander's session is as it was, and works (its transaction is still open).
        infos = svc.call_soon(lambda: svc.service.proxy.session_infos())
        mine = [s for s in infos if s.server_connection_id == self.bystander.thread_id()]
        assert len(mine) == 1 and mine[0].state == "idle" and mine[0].in_transaction, infos
        with self.bystander.cursor() as cur:
            cur.execute("SELECT v FROM t WHERE id = 100")
            assert cur.fetchall() == (("bystander",),)
        # New clients are welcome.
        fresh = pymysql.connect(host="127.0.0.1", port=svc.port, user=self.server.user,
                                password=self.server.password)
        with fresh, fresh.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        # Nothing left behind: sessions, tasks, sockets.
        wait_for(lambda: no_leak(census(svc), self.baseline),
                 what=f"census {self.baseline} (now {census(svc)})")

    def close(self) -> None:
        self.bystander.rollback()
        self.bystander.close()


@pytest.fixture
def table(mysql_server, database) -> str:
    mysql_server.query(f"CREATE TABLE `{database}`.t (id INT PRIMARY KEY, v VARCHAR(20))")
    return database


@pytest.fixture
def scene(proxy, mysql_server, table) -> Iterator[Scene]:
    s = Scene(proxy, mysql_server, table)
    try:
        yield s
    finally:
        s.close()


def expect_err_then_close(conn: raw.RawConnection, errno: int, message: str) -> raw.ServerError:
    """The proxy answers with an ERR carrying ``errno`` and ``message``, then hangs up."""
    with pytest.raises(raw.ServerError) as err:
        conn.read_ok()
    assert err.value.errno == errno, err.value
    assert message in err.value.message, err.value
    assert err.value.message.startswith("auroratrack: ")
    assert conn.closed_by_peer()
    return err.value


# -- malformed packets --------------------------------------------------------------------------


def test_malformed_handshake_response(scene):
    with raw.RawConnection("127.0.0.1", scene.svc.port) as conn:
        conn.read_handshake()
        conn.send_packet(b"\x05\xa2" + b"\x00" * 8)  # 10 bytes: not a HandshakeResponse41
        expect_err_then_close(conn, ER_HANDSHAKE_ERROR, "handshake response too short")
    scene.assert_only_that_session_ended(conn.connection_id)


@pytest.mark.parametrize(
    ("packet", "errno", "message"),
    [
        (b"", ER_UNKNOWN_COM_ERROR, "empty command packet"),
        (b"\x20\x00\x00\x00\x00", ER_UNKNOWN_COM_ERROR,
         "does not relay command 0x20"),  # COM_CLONE (MySQL's clone protocol)
        (b"\x11bob", ER_HANDSHAKE_ERROR, "without terminator"),  # COM_CHANGE_USER, no NUL
    ],
    ids=["empty", "clone", "change_user_unterminated"],
)
def test_malformed_command(scene, packet, errno, message):
    with scene.login() as conn:
        conn.send_packet(packet, seq=0)
        expect_err_then_close(conn, errno, message)
    scene.assert_only_that_session_ended(conn.connection_id)


def test_unknown_command_byte_is_the_servers_business(scene):
    """Not malformed for the proxy: the server answers, and the session goes on."""
    with scene.login() as conn:
        conn.send_command(0x77, b"whatever")
        with pytest.raises(raw.ServerError) as err:
            conn.read_ok()
        assert err.value.errno == ER_UNKNOWN_COM_ERROR
        assert not err.value.message.startswith("auroratrack")
        assert conn.query("SELECT 2")[0].rows == [b"\x012"]


# -- sequence ids -------------------------------------------------------------------------------


def test_wrong_sequence_id_on_a_command(scene):
    with scene.login() as conn:
        conn.send_packet(b"\x03SELECT 1", seq=5)
        expect_err_then_close(conn, ER_NET_PACKETS_OUT_OF_ORDER,
                              "command packet with sequence id 5, expected 0")
    scene.assert_only_that_session_ended(conn.connection_id)


def test_wrong_sequence_id_in_the_handshake_response(scene):
    with raw.RawConnection("127.0.0.1", scene.svc.port) as conn:
        nonce = conn.read_handshake()
        response = conn.handshake_response(
            scene.server.user, raw.native_password_scramble(scene.server.password, nonce),
            None, raw.BASE_CAPABILITIES)
        conn.send_packet(response, seq=3)
        expect_err_then_close(conn, ER_NET_PACKETS_OUT_OF_ORDER,
                              "client sent sequence id 3, expected 1")
    scene.assert_only_that_session_ended(conn.connection_id)


def test_wrong_sequence_id_in_a_local_infile_upload(scene):
    with scene.login() as conn:
        conn.send_command(raw.COM_QUERY, b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t")
        assert conn.read_packet()[:1] == b"\xfb"  # the server asks for the file
        expected = conn.seq
        conn.send_packet(b"1\tone\n", seq=expected + 7)
        expect_err_then_close(conn, ER_NET_PACKETS_OUT_OF_ORDER,
                              f"client sent sequence id {expected + 7}, expected {expected}")
    scene.assert_only_that_session_ended(conn.connection_id)


# -- max_allowed_packet ---------------------------------------------------------------------------


@pytest.fixture
def small_packet_scene(make_proxy, mysql_server, table) -> Iterator[Scene]:
    s = Scene(make_proxy(max_allowed_packet=1024 * 1024), mysql_server, table)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("command", [b"\x03", b"\x02", b"\x16"],
                         ids=["COM_QUERY", "COM_INIT_DB", "COM_STMT_PREPARE"])
def test_declared_length_beyond_max_allowed_packet(small_packet_scene, command):
    scene = small_packet_scene
    with scene.login() as conn:
        # Only the header and a few bytes: the proxy must refuse on the declared length.
        declared = 1024 * 1024 + 1
        conn.sock.sendall(struct.pack("<I", declared)[:3] + b"\x00" + command + b"SELECT ")
        err = expect_err_then_close(conn, ER_NET_PACKET_TOO_LARGE, "exceeds max_allowed_packet")
        assert str(declared) in err.message
    scene.assert_only_that_session_ended(conn.connection_id)


def test_packet_of_16_mib_beyond_max_allowed_packet(small_packet_scene):
    """A chunk of 0xFFFFFF bytes, refused as soon as its header is seen."""
    scene = small_packet_scene
    with scene.login() as conn:
        conn.sock.sendall(b"\xff\xff\xff\x00\x03SELECT '" + b"x" * 1000)
        expect_err_then_close(conn, ER_NET_PACKET_TOO_LARGE, "exceeds max_allowed_packet")
    scene.assert_only_that_session_ended(conn.connection_id)
    # Just below the limit still goes through, with a driver.
    conn = pymysql.connect(host="127.0.0.1", port=scene.svc.port, user=scene.server.user,
                           password=scene.server.password)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT LENGTH(%s)", ("y" * (1024 * 1024 - 100),))
        assert cur.fetchone() == (1024 * 1024 - 100,)


# -- peers that go away --------------------------------------------------------------------------


def abort(conn: raw.RawConnection) -> None:
    """Close with a TCP reset, as a crashed client would."""
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_client_disconnects_mid_packet(scene):
    with scene.login() as conn:
        cid = conn.connection_id
        # A 100 000-byte COM_QUERY of which only the start arrives.
        conn.sock.sendall(struct.pack("<I", 100_000)[:3] + b"\x00" + b"\x03SELECT '" + b"a" * 500)
        wait_for(lambda: scene.svc.call_soon(
            lambda: [s.busy for s in scene.svc.service.proxy.sessions.values()
                     if s.server_connection_id == cid]) == [True], what="the proxy to see it")
        abort(conn)
    scene.assert_only_that_session_ended(cid)


def test_client_disconnects_mid_handshake(scene):
    with raw.RawConnection("127.0.0.1", scene.svc.port) as conn:
        conn.read_handshake()
        conn.sock.sendall(b"\x50\x00\x00\x01\x0d\xa2")  # 80 bytes announced, 2 sent
        cid = conn.connection_id
        conn.close()
    scene.assert_only_that_session_ended(cid)


BIG_RESULT = b"SELECT seq, REPEAT('r', 1000) FROM seq_1_to_50000"  # ~50 MB of rows


def test_client_disconnects_mid_result(scene):
    with scene.login() as conn:
        cid = conn.connection_id
        conn.send_command(raw.COM_QUERY, BIG_RESULT)
        got = 0
        while got < 1_000_000:  # read ~1 MB of the ~50 MB, then vanish
            got += len(conn.sock.recv(65536))
        wait_for(lambda: scene.svc.call_soon(
            lambda: [s.busy for s in scene.svc.service.proxy.sessions.values()
                     if s.server_connection_id == cid]) == [True], what="a busy session")
        abort(conn)
    scene.assert_only_that_session_ended(cid)


KILLED_ERRS = {(ER_CONNECTION_KILLED, "Connection was killed")}


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate_eof", "eof"])
def test_server_connection_killed_mid_result(scene, deprecate_eof):
    with scene.login(deprecate_eof) as conn:
        cid = conn.connection_id
        conn.send_command(raw.COM_QUERY, BIG_RESULT)
        columns = raw.read_lenenc(conn.read_packet(), 0)[0]
        conn.read_column_definitions(columns)
        for _ in range(100):  # the rows are streaming
            assert conn.read_packet()[0] not in (0xFE, 0xFF)
        scene.server.query(f"KILL CONNECTION {cid}")  # from a direct admin connection
        # Keep reading. The server's socket is shut at once, often in the middle of a row: then
        # there is no room for an ERR and the proxy just hangs up after the last byte it got.
        # At a packet boundary the client gets the server's ERR, if the server sent one.
        rows = 100
        with pytest.raises((raw.ServerError, raw.ConnectionClosed)) as ended:
            while True:
                assert conn.read_packet()[0] != 0xFE, "the result must not look complete"
                rows += 1
        assert rows < 50_000
        if isinstance(ended.value, raw.ServerError):
            assert (ended.value.errno, ended.value.message) in KILLED_ERRS, ended.value
        assert conn.closed_by_peer()
    scene.assert_only_that_session_ended(cid)


def test_server_connection_killed_during_a_query(scene):
    """Killed while the client waits at a packet boundary: it gets what the server sends, its
    ERR or (when KILL shut the socket first) a closed connection, never a made-up ERR."""
    with scene.login() as conn:
        cid = conn.connection_id
        conn.send_command(raw.COM_QUERY, b"SELECT SLEEP(30)")
        wait_for(lambda: scene.server.query(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s "
            "AND INFO LIKE 'SELECT SLEEP%%'", (cid,))[0][0] == 1, what="the query to run")
        scene.server.query(f"KILL CONNECTION {cid}")
        with pytest.raises((raw.ServerError, raw.ConnectionClosed)) as err:
            conn.read_results()
        if isinstance(err.value, raw.ServerError):
            assert (err.value.errno, err.value.message) in KILLED_ERRS, err.value
        assert conn.closed_by_peer()
    scene.assert_only_that_session_ended(cid)


def test_server_connection_killed_while_idle(scene):
    """The server's unsolicited ERR (or plain close) of an idle session ends it cleanly."""
    with scene.login() as conn:
        cid = conn.connection_id
        scene.server.query(f"KILL CONNECTION {cid}")
        wait_for(lambda: census(scene.svc).sessions == scene.baseline.sessions,
                 what="the killed session to end")
        try:
            packet = conn.read_packet()
        except raw.ConnectionClosed:
            packet = b""
        if packet:
            assert raw.parse_err(packet)[0] == ER_CONNECTION_KILLED
        assert conn.closed_by_peer()
    scene.assert_only_that_session_ended(cid)
