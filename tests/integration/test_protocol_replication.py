"""Replication commands through the real proxy: COM_REGISTER_SLAVE, COM_BINLOG_DUMP.

After a dump command the session is a plain byte stream from the server (proxy.tracker phase
STREAM). What must hold: ``mariadb-binlog --read-from-remote-server`` prints through the proxy
exactly what it prints directly; a replica-style raw client (register, then dump) receives the
events; and a backtrack's gate neither waits for a stream to finish (it never does) nor leaves
it running: ``drop_all`` ends it like any other session.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time

import pytest

from tests.integration import rawmysql as raw
from tests.integration.test_protocol import raw_login, session_infos, wait_gone
from tests.integration.waiting import wait_for

COM_BINLOG_DUMP = 0x12
COM_REGISTER_SLAVE = 0x15
ROTATE_EVENT = 0x04
FORMAT_DESCRIPTION_EVENT = 0x0F


def mariadb_binlog() -> str:
    binary = shutil.which("mariadb-binlog") or shutil.which("mysqlbinlog")
    if binary is None:
        pytest.skip("mariadb-binlog is not installed (Debian: mariadb-client)")
    return binary


def binlog_command(binary: str, port: int, server, *args: str) -> list[str]:
    return [binary, "--read-from-remote-server", "--host=127.0.0.1", f"--port={port}",
            f"--user={server.user}", f"--password={server.password}", *args]


def test_mariadb_binlog_prints_the_same_through_the_proxy(proxy, mysql_server, database):
    binary = mariadb_binlog()
    mysql_server.query("CREATE TABLE r (id INT PRIMARY KEY, v TEXT)", database=database)
    mysql_server.query("INSERT INTO r SELECT seq, REPEAT('x', seq) FROM seq_1_to_300",
                       database=database)
    mysql_server.query("UPDATE r SET v = 'changed' WHERE id % 7 = 0", database=database)
    mysql_server.query("FLUSH /* auroratrack test */ BINARY LOGS")  # that file is complete now
    logs = [row[0] for row in mysql_server.query("SHOW BINARY LOGS")]
    complete = logs[-2]
    outputs = {}
    for name, port in (("direct", mysql_server.port), ("proxy", proxy.port)):
        for flags in ((), ("--verbose", "--base64-output=DECODE-ROWS")):
            run = subprocess.run(binlog_command(binary, port, mysql_server, *flags, complete),
                                 capture_output=True, timeout=120)
            assert run.returncode == 0, (name, run.stderr[-2000:])
            outputs[name, flags] = run.stdout
    for flags in ((), ("--verbose", "--base64-output=DECODE-ROWS")):
        assert outputs["proxy", flags] == outputs["direct", flags]
    decoded = outputs["proxy", ("--verbose", "--base64-output=DECODE-ROWS")].decode("utf-8", "replace")
    assert f"INSERT INTO `{database}`.`r`" in decoded and "'changed'" in decoded
    assert not [s for s in session_infos(proxy) if s.state == "streaming"]


def register_and_dump(conn: raw.RawConnection, binlog: str, server_id: int) -> None:
    """What a replica sends: COM_REGISTER_SLAVE (answered by OK), then COM_BINLOG_DUMP from
    the start of ``binlog`` (blocking: the server keeps the stream open)."""
    conn.query("SET @master_binlog_checksum = @@global.binlog_checksum")
    body = struct.pack("<I", server_id) + b"\x00" * 3 + struct.pack("<HII", 0, 0, 0)
    conn.send_command(COM_REGISTER_SLAVE, body)
    conn.read_ok()
    conn.send_command(COM_BINLOG_DUMP, struct.pack("<IHI", 4, 0, server_id) + binlog.encode())


def read_event(conn: raw.RawConnection) -> tuple[int, bytes]:
    """(event type, event) of the next binlog event packet."""
    payload = conn.read_packet()
    if payload[0] == 0xFF:
        raise raw.ServerError(*raw.parse_err(payload))
    assert payload[0] == 0x00, payload[:20]
    return payload[5], payload[1:]


def test_replica_registers_and_streams_then_the_gate_drops_it(make_proxy, mysql_server,
                                                              database):
    svc = make_proxy(hold_timeout=30)
    logs = [row[0] for row in mysql_server.query("SHOW BINARY LOGS")]
    with raw_login(svc, mysql_server) as conn:
        register_and_dump(conn, logs[-1], server_id=4000 + conn.connection_id % 1000)
        assert [read_event(conn)[0] for _ in range(2)] == [ROTATE_EVENT, FORMAT_DESCRIPTION_EVENT]
        wait_for(lambda: [s.state for s in session_infos(svc)] == ["streaming"],
                 what="the session to be a stream")
        # New events reach the replica as they are written.
        mysql_server.query("CREATE TABLE live (id INT)", database=database)
        deadline = time.monotonic() + 20
        while b"CREATE TABLE live" not in read_event(conn)[1]:
            assert time.monotonic() < deadline
        # A backtrack: the drain does not wait for the stream; drop_all ends it.
        svc.call_soon(svc.gate.pause)
        drained = svc.call(lambda: svc.gate.drain(10))
        assert drained.waited_s < 5 and not drained.killed and not drained.still_busy
        assert svc.call(svc.gate.drop_all) == [conn.connection_id]
        svc.call_soon(svc.gate.resume)
        assert conn.closed_by_peer()
        wait_gone(svc, conn.connection_id)
    assert not mysql_server.query("SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = %s",
                                  (conn.connection_id,))


def test_mariadb_binlog_stop_never_is_dropped_by_the_gate(make_proxy, mysql_server):
    binary = mariadb_binlog()
    svc = make_proxy(hold_timeout=30)
    first = mysql_server.query("SHOW BINARY LOGS")[-1][0]
    tail = subprocess.Popen(binlog_command(binary, svc.port, mysql_server, "--stop-never",
                                           "--stop-never-slave-server-id=4999", first),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: [s.state for s in session_infos(svc)] == ["streaming"],
                 what="mariadb-binlog's stream")
        svc.call_soon(svc.gate.pause)
        assert not svc.call(lambda: svc.gate.drain(10)).still_busy
        assert len(svc.call(svc.gate.drop_all)) == 1
        svc.call_soon(svc.gate.resume)
        out, err = tail.communicate(timeout=20)  # it ends: its connection is gone
        assert b"# at 4" in out
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert not session_infos(svc)
