"""binlog.BinlogSource's own event framing, over a socket pair: literal replication packets in,
RawEvents out (no server; the library's connect step is replaced by the socket)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pymysql
import pytest

from proxy.changelog import binlog as bl

MAX = 0xFFFFFF


def event_payload(event_type: int, end_pos: int, body: bytes, timestamp: int = 1700000000,
                  checksum: bytes = b"\xde\xad\xbe\xef") -> bytes:
    size = 19 + len(body) + len(checksum)
    header = struct.pack("<IBIIIH", timestamp, event_type, 7, size, end_pos, 0)
    return b"\x00" + header + body + checksum  # the checksum is not checked here


def packets(payload: bytes, seq: int = 1) -> bytes:
    """Frame a payload as the protocol does: pieces of 16 MiB - 1, and an empty one after an
    exact multiple."""
    out = []
    while True:
        piece, payload = payload[:MAX], payload[MAX:]
        out.append(len(piece).to_bytes(3, "little") + bytes([seq & 0xFF]) + piece)
        seq += 1
        if len(piece) < MAX:
            return b"".join(out)


def source_over(data: bytes, chunk: int = 1 << 20, start: bl.BinlogPosition | None = None,
                on_idle=None, checksum_len: int = 4) -> tuple[bl.BinlogSource, threading.Thread]:
    ours, theirs = socket.socketpair()
    source = bl.BinlogSource({"host": "unused", "port": 0, "user": "u", "passwd": ""}, 1,
                             start or bl.BinlogPosition("binlog.000001", 4), on_idle=on_idle)
    source._connect = lambda: (ours, checksum_len)  # the dump command is the library's part; not tested here

    def send() -> None:
        for i in range(0, len(data), chunk):
            theirs.sendall(data[i : i + chunk])
        theirs.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return source, thread


def collect(source: bl.BinlogSource) -> list[bl.RawEvent]:
    events = []
    with pytest.raises(bl.StreamLost):  # the fake server hangs up at the end
        for event in source.events():
            events.append(event)
    return events


@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_events_come_out_whole_however_the_bytes_arrive(chunk):
    bodies = [b"gtid-body-12", b"rows" * 50, b"xid-body"]
    data, pos = b"", 4
    for event_type, body in zip((bl.MARIADB_GTID_EVENT, bl.WRITE_ROWS_V1, bl.XID_EVENT), bodies, strict=True):
        pos += 19 + len(body) + 4
        data += packets(event_payload(event_type, pos, body))
    source, _ = source_over(data, chunk)
    events = collect(source)
    assert [(e.type, e.end_pos, e.body, e.log_file, e.server_id) for e in events] == [
        (bl.MARIADB_GTID_EVENT, 4 + 35, bodies[0], "binlog.000001", 7),
        (bl.WRITE_ROWS_V1, 4 + 35 + 223, bodies[1], "binlog.000001", 7),
        (bl.XID_EVENT, 4 + 35 + 223 + 31, bodies[2], "binlog.000001", 7),
    ]


def test_an_event_of_16_mib_and_more_spans_packets():
    body = bytes(range(256)) * ((MAX + 1000) // 256)  # the payload needs two packets
    end = 4 + 19 + len(body) + 4
    exact = b"x" * (MAX - 24)  # payload exactly 16 MiB - 1: followed by an empty packet
    data = packets(event_payload(bl.WRITE_ROWS_V1, end, body))
    data += packets(event_payload(bl.WRITE_ROWS_V1, end + 19 + len(exact) + 4, exact))
    data += packets(event_payload(bl.XID_EVENT, end + 19 + len(exact) + 4 + 31, b"xid-body"))
    events = collect(source_over(data, 65536)[0])
    assert [len(e.body) for e in events] == [len(body), len(exact), 8]
    assert events[0].body == body and events[1].body == exact


def test_rotate_heartbeat_and_a_missing_event():
    rotate_body = struct.pack("<Q", 4) + b"binlog.000002"
    data = packets(event_payload(bl.ROTATE_EVENT, 0, rotate_body, timestamp=0))  # artificial
    data += packets(event_payload(bl.HEARTBEAT_EVENT, 999, b"binlog.000002"))
    data += packets(event_payload(bl.MARIADB_GTID_EVENT, 4 + 35, b"gtid-body-12"))
    data += packets(event_payload(bl.XID_EVENT, 4 + 35 + 31 + 100, b"xid-body"))  # 100 bytes lost
    source, _ = source_over(data, start=bl.BinlogPosition("binlog.000001", 4))
    seen = []
    with pytest.raises(bl.EventsMissing, match="expected an event at 39"):
        for event in source.events():
            seen.append((event.type, event.log_file))
    assert seen == [(bl.ROTATE_EVENT, "binlog.000001"), (bl.MARIADB_GTID_EVENT, "binlog.000002")]


def test_server_errors_raise_as_pymysql_does_and_eof_ends_the_stream():
    error = b"\xff" + struct.pack("<H", 1236) + b"#HY000" + b"Could not find first log file name"
    with pytest.raises(pymysql.OperationalError) as raised:
        list(source_over(packets(error))[0].events())
    assert raised.value.args[0] == 1236
    eof = b"\xfe\x00\x00\x02\x00"
    assert list(source_over(packets(event_payload(bl.XID_EVENT, 4 + 31, b"xid-body")) + packets(eof))[0]
                .events())[0].type == bl.XID_EVENT


def test_on_idle_runs_only_when_no_received_event_is_left():
    ours, theirs = socket.socketpair()
    idle_at: list[int] = []
    events: list[bl.RawEvent] = []
    idle = threading.Event()

    def on_idle() -> None:
        idle_at.append(len(events))
        idle.set()

    source = bl.BinlogSource({"host": "unused", "port": 0, "user": "u", "passwd": ""}, 1,
                             bl.BinlogPosition("binlog.000001", 4), on_idle=on_idle)
    source._connect = lambda: (ours, 4)
    for pos in (35, 66, 97):
        theirs.sendall(packets(event_payload(bl.XID_EVENT, pos, b"xid-body")))

    def hang_up_when_idle() -> None:
        idle.wait(10)
        theirs.shutdown(socket.SHUT_WR)

    threading.Thread(target=hang_up_when_idle, daemon=True).start()
    with pytest.raises(bl.StreamLost):
        for event in source.events():
            events.append(event)
    assert len(events) == 3 and idle_at == [3]  # all three were received at once: one group


@pytest.mark.parametrize("checksum", [b"\xde\xad\xbe\xef", b""], ids=["crc32", "none"])
def test_event_start_positions_follow_the_servers_checksum_setting(checksum):
    bodies = [b"gtid-body-12", b"xid-body"]
    data, pos, starts = b"", 4, []
    for event_type, body in zip((bl.MARIADB_GTID_EVENT, bl.XID_EVENT), bodies, strict=True):
        starts.append(pos)
        pos += 19 + len(body) + len(checksum)
        data += packets(event_payload(event_type, pos, body, checksum=checksum))
    source, _ = source_over(data, checksum_len=len(checksum))
    events = collect(source)
    assert [e.body for e in events] == bodies
    assert [e.start_pos for e in events] == starts


def test_reads_are_paced_while_capture_keeps_up_and_the_group_commits_first():
    """Small reads (capture keeps up): the next read waits for ``read_pace_s`` and the events
    sent meanwhile come in one read; the group commits before the wait, not after it."""
    ours, theirs = socket.socketpair()
    log: list[tuple[str, float]] = []
    source = bl.BinlogSource({"host": "unused", "port": 0, "user": "u", "passwd": ""}, 1,
                             bl.BinlogPosition("binlog.000001", 4),
                             on_idle=lambda: log.append(("idle", time.monotonic())), read_pace_s=0.2)
    source._connect = lambda: (ours, 4)
    reads = []
    recv = source._recv
    source._recv = lambda sock: reads.append(time.monotonic()) or recv(sock)

    def server() -> None:
        theirs.sendall(packets(event_payload(bl.XID_EVENT, 35, b"xid-body")))
        time.sleep(0.05)  # while the reader waits out its pace, two more events arrive
        theirs.sendall(packets(event_payload(bl.XID_EVENT, 66, b"xid-body")))
        theirs.sendall(packets(event_payload(bl.XID_EVENT, 97, b"xid-body")))
        time.sleep(0.4)
        theirs.shutdown(socket.SHUT_WR)

    threading.Thread(target=server, daemon=True).start()
    events = []
    with pytest.raises(bl.StreamLost):
        for event in source.events():
            events.append((event.end_pos, time.monotonic()))
    assert [pos for pos, _ in events] == [35, 66, 97]
    # The second and third events came in one read, at least 0.2 s after the first.
    assert events[1][1] - events[0][1] >= 0.19 and events[2][1] - events[1][1] < 0.05
    # The group was committed as soon as the first event had been handed out and nothing waited.
    assert log and log[0][1] - events[0][1] < 0.05


def test_a_backlog_is_read_without_pauses():
    data = b"".join(packets(event_payload(bl.XID_EVENT, 4 + (i + 1) * 70_023, b"r" * 70_000))
                    for i in range(40))  # 2.8 MB: every read of 64 KiB or more
    source, _ = source_over(data)
    source.read_pace_s = 0.5
    began = time.monotonic()
    events = []
    for event in source.events():
        events.append(event)
        if len(events) == 40:
            break
    # Paced, its dozens of reads would take many seconds; a read that catches up with the
    # sender (shorter than 64 KiB) may be paced once or twice.
    assert time.monotonic() - began < 1.5
