"""Literal-bytes tests of the replication commands: COM_REGISTER_SLAVE is an ordinary command
answered by OK or ERR; COM_BINLOG_DUMP and COM_BINLOG_DUMP_GTID turn the session into a plain
byte stream (phase STREAM) that is relayed unread both ways."""

from __future__ import annotations

import struct

import pytest

from proxy.tracker import COMMAND, STREAM
from tests.unit.test_tracker import OK_SEQ1, login, packet

REGISTER_SLAVE = b"\x15" + struct.pack("<I", 77) + b"\x00\x00\x00" + struct.pack("<HII", 0, 0, 0)
BINLOG_DUMP = b"\x12" + struct.pack("<IHI", 4, 0, 77) + b"binlog.000001"
BINLOG_DUMP_GTID = b"\x1e" + struct.pack("<HIIQI", 0, 77, 0, 4, 0)  # MySQL: no file, no GTIDs
# The first events of a dump as MariaDB 10.11 sends them: OK byte, then the event (a fake
# ROTATE_EVENT header and body here: the tracker does not read them).
ROTATE = b"\x00" + struct.pack("<IBIIIH", 0, 0x04, 1, 43, 0, 0x20) + struct.pack("<Q", 4) + b"binlog.000001"


def test_register_slave_is_answered_by_one_packet():
    tracker = login()
    tracker.feed_client(packet(REGISTER_SLAVE, 0))
    assert tracker.busy
    tracker.feed_server(OK_SEQ1)
    assert not tracker.busy and tracker.phase == COMMAND


@pytest.mark.parametrize("dump", [BINLOG_DUMP, BINLOG_DUMP_GTID], ids=["dump", "dump_gtid"])
def test_dump_turns_the_session_into_a_stream(dump):
    tracker = login()
    command = packet(dump, 0)
    assert tracker.feed_client(command) == command
    assert tracker.phase == STREAM
    assert not tracker.busy and not tracker.pending and tracker.expected_server_seq is None
    # Events, sequence ids running on and wrapping, a packet split anywhere: all passed on.
    events = b"".join(packet(ROTATE, seq & 0xFF) for seq in range(1, 300))
    for cut in (1, 3, 17, len(events) // 2):
        assert tracker.feed_server(events[:cut]) == events[:cut]
        assert tracker.feed_server(events[cut:]) == events[cut:]
    assert tracker.feed_server(b"\x05\x00\x00\x2c\xfe\x00\x00\x02") == (
        b"\x05\x00\x00\x2c\xfe\x00\x00\x02")  # even a packet cut short
    assert tracker.feed_client(b"\x01\x00\x00\x00\x01") == b"\x01\x00\x00\x00\x01"  # COM_QUIT
    assert not tracker.busy


def test_dump_pipelined_behind_a_query_and_split():
    """The dump command arrives in pieces, behind a query whose answer is still owed; what
    follows the command is relayed unread, and the owed answer comes first in the stream."""
    tracker = login()
    stream = packet(b"\x03SET @master_binlog_checksum = 'NONE'", 0) + packet(BINLOG_DUMP, 0)
    forwarded = tracker.feed_client(stream[:-5]) + tracker.feed_client(stream[-5:])
    assert forwarded == stream and tracker.phase == STREAM
    answer = OK_SEQ1 + packet(ROTATE, 1)
    assert tracker.feed_server(answer) == answer
    assert tracker.commands_started == 2


def test_dump_is_held_by_a_closed_gate():
    tracker = login()
    command = packet(BINLOG_DUMP, 0)
    assert tracker.feed_client(command, lambda: False) == b""
    assert tracker.held_by_gate and tracker.phase == COMMAND
    assert tracker.release() == command and tracker.phase == STREAM
