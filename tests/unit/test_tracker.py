"""Literal-bytes regression tests of proxy.tracker, one per bug found by the protocol tests.

Each conversation is written out packet by packet (header: 3-byte length, sequence id) as the
server and the client put it on the wire; comments name the fields.
"""

from __future__ import annotations

import pytest

from proxy.tracker import AUTH, COMMAND, SessionTracker
from proxy.wire import ER_NET_PACKET_TOO_LARGE, ProtocolError

# Captured MariaDB 10.11.19 greeting (see tests/unit/test_wire.py), header included.
GREETING = bytes.fromhex(
    "68000000"
    "0a352e352e352d31302e31312e31392d4d6172696144422d302b646562313275312d6c6f6700070000003731"
    "2f3661655b7600fef72d0200ff81150000000000001d0000005f5924415e34296f75213e54006d7973716c5f"
    "6e61746976655f70617373776f726400"
)


def login(deprecate_eof: bool = False, max_allowed_packet: int = 1 << 30) -> SessionTracker:
    """A tracker after the greeting, a HandshakeResponse41 for user 'app' and the server's OK."""
    tracker = SessionTracker(max_allowed_packet)
    tracker.feed_server(GREETING)
    caps = b"\x0d\xa2\x2a\x01" if deprecate_eof else b"\x0d\xa2\x2a\x00"
    response = (caps + b"\x00\x00\x00\x01\x2d" + b"\x00" * 23 + b"app\x00" + b"\x14" + b"\x05" * 20
                + b"shop\x00" + b"mysql_native_password\x00")
    tracker.feed_client(bytes((len(response), 0, 0, 1)) + response)
    tracker.feed_server(b"\x07\x00\x00\x02" + b"\x00\x00\x00\x02\x00\x00\x00")  # OK, autocommit
    assert tracker.phase == COMMAND and tracker.user == "app" and tracker.database == "shop"
    assert tracker.deprecate_eof is deprecate_eof
    return tracker


OK_SEQ1 = b"\x07\x00\x00\x01" + b"\x00\x00\x00\x02\x00\x00\x00"
ERR_1045_SEQ = b"\xff\x15\x04#28000Access denied for user 'bob'"

CHANGE_USER_BOB = (
    b"\x11"  # COM_CHANGE_USER
    b"bob\x00"  # user
    b"\x14" + b"\x01" * 20  # auth response, 1-byte length (CLIENT_SECURE_CONNECTION)
    + b"other\x00"  # database
    + b"\x2d\x00"  # character set
    + b"mysql_native_password\x00"
)


def packet(payload: bytes, seq: int) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes((seq,)) + payload


# -- COM_CHANGE_USER -----------------------------------------------------------------------------


def test_failed_change_user_keeps_the_session_as_it_was():
    """Bug: the user was replaced when COM_CHANGE_USER was sent, and its ERR moved the session
    to the closing phase, though MariaDB keeps the connection logged in as before."""
    tracker = login()
    tracker.feed_client(packet(CHANGE_USER_BOB, 0))
    assert tracker.phase == AUTH and tracker.busy
    tracker.feed_server(packet(b"\xfemysql_native_password\x00" + b"\x07" * 20 + b"\x00", 1))
    tracker.feed_client(packet(b"\x02" * 20, 2))  # answer to the auth switch
    tracker.feed_server(packet(ERR_1045_SEQ, 3))
    assert not tracker.busy
    assert tracker.phase == COMMAND
    assert (tracker.user, tracker.database) == ("app", "shop")
    tracker.feed_client(packet(b"\x0e", 0))  # COM_PING: the session goes on
    tracker.feed_server(OK_SEQ1)
    assert not tracker.busy


def test_successful_change_user_takes_user_and_database():
    tracker = login()
    tracker.feed_client(packet(CHANGE_USER_BOB, 0))
    tracker.feed_server(OK_SEQ1)
    assert (tracker.phase, tracker.user, tracker.database) == (COMMAND, "bob", "other")
    no_database = b"\x11app\x00\x14" + b"\x01" * 20 + b"\x00\x2d\x00mysql_native_password\x00"
    tracker.feed_client(packet(no_database, 0))
    tracker.feed_server(OK_SEQ1)
    assert (tracker.user, tracker.database) == ("app", None)


# -- COM_PROCESS_INFO ---------------------------------------------------------------------------


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_process_info_answer_is_a_result_set(deprecate_eof):
    """Bug: COM_PROCESS_INFO was taken to have a one-packet answer; the second packet of its
    result set then looked unsolicited and ended the session."""
    tracker = login(deprecate_eof)
    tracker.feed_client(packet(b"\x0a", 0))
    seq = 1
    stream = packet(b"\x01", seq)  # column count 1
    seq += 1
    stream += packet(b"\x03def\x00\x00\x00\x02Id\x00\x0c\x3f\x00\x15\x00\x00\x00\x08\x81\x00"
                     b"\x00\x00\x00", seq)
    seq += 1
    if not deprecate_eof:
        stream += packet(b"\xfe\x00\x00\x02\x00", seq)  # EOF after the column definitions
        seq += 1
    stream += packet(b"\x017", seq)  # one row: "7"
    seq += 1
    end = b"\xfe\x00\x00\x02\x00\x00\x00" if deprecate_eof else b"\xfe\x00\x00\x02\x00"
    stream += packet(end, seq)
    assert tracker.feed_server(stream) == stream
    assert not tracker.busy and not tracker.pending


# -- response ends ------------------------------------------------------------------------------


def test_busy_until_the_last_byte_of_the_packet_that_ends_a_response():
    """Bug: a COM_FIELD_LIST (or rows) response was complete at the first byte of its EOF, so
    the session looked idle while 4 bytes of it were still on the way."""
    tracker = login()
    tracker.feed_client(packet(b"\x04t\x00", 0))  # COM_FIELD_LIST t
    eof = packet(b"\xfe\x00\x00\x03\x00", 1)  # EOF: IN_TRANS | AUTOCOMMIT
    tracker.feed_server(eof[:5])
    assert tracker.busy and tracker.pending
    tracker.feed_server(eof[5:8])
    assert tracker.busy
    tracker.feed_server(eof[8:])
    assert not tracker.busy and tracker.in_transaction  # the EOF's flags are read too


def test_pipelined_responses_complete_at_their_last_byte():
    tracker = login()
    tracker.feed_client(packet(b"\x03SELECT 1", 0) + packet(b"\x0e", 0))  # query, then ping
    assert len(tracker.pending) == 2
    rows = (packet(b"\x01", 1) + packet(b"\x03def", 2) + packet(b"\xfe\x00\x00\x02\x00", 3)
            + packet(b"\x011", 4))
    err = packet(b"\xff\x7a\x04#42S02gone", 5)  # an ERR in the middle of the rows
    tracker.feed_server(rows + err[:-1])
    assert len(tracker.pending) == 2
    tracker.feed_server(err[-1:])
    assert len(tracker.pending) == 1
    tracker.feed_server(OK_SEQ1)
    assert not tracker.busy


# -- malformed server packets are protocol errors, never another exception -----------------------


def test_short_eof_after_column_definitions():
    """Bug: a 1-byte EOF after the column definitions raised IndexError."""
    tracker = login()
    tracker.feed_client(packet(b"\x03SELECT 1", 0))
    with pytest.raises(ProtocolError, match="EOF packet too short"):
        tracker.feed_server(packet(b"\x01", 1) + packet(b"\x03def", 2) + packet(b"\xfe", 3))


def test_ok_packet_is_read_within_its_own_bounds():
    """Bug: a truncated OK was read on into the next packet's bytes (or past the buffer)."""
    tracker = login()
    tracker.feed_client(packet(b"\x03DO 1", 0) + packet(b"\x0e", 0))
    with pytest.raises(ProtocolError, match="OK packet too short"):
        tracker.feed_server(packet(b"\x00\x00\x00", 1) + packet(b"\x00\x00\x00\x03\x00", 1))
    tracker = login()
    tracker.feed_client(packet(b"\x03DO 1", 0))
    with pytest.raises(ProtocolError):
        tracker.feed_server(packet(b"\x00\xfc", 1))  # affected_rows cut short


def test_column_count_cut_short():
    tracker = login()
    tracker.feed_client(packet(b"\x03SELECT 1", 0))
    with pytest.raises(ProtocolError, match="column count"):
        tracker.feed_server(packet(b"\xfc\x01", 1) + packet(b"\x03def", 2))


def test_response_ending_with_a_16_mib_packet_is_a_protocol_error():
    """Bug: an ERR of 0xFFFFFF bytes ended the response, and its continuation chunk then
    raised IndexError on the empty queue of pending responses."""
    tracker = login()
    tracker.feed_client(packet(b"\x03SELECT 1", 0))
    head = packet(b"\x01", 1) + packet(b"\x03def", 2) + packet(b"\xfe\x00\x00\x02\x00", 3)
    big_err = b"\xff\xff\xff\x04" + b"\xff" + b"e" * (0xFFFFFF - 1)
    with pytest.raises(ProtocolError, match="16 MiB"):
        tracker.feed_server(head + big_err + b"\x00\x00\x00\x05")


@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_set_option_answer_status_is_read_in_both_forms(deprecate_eof):
    """Bug: the OK-with-0xFE-header answer of COM_SET_OPTION (CLIENT_DEPRECATE_EOF) was read
    as an EOF: its status was ignored once the packet carried session state information."""
    tracker = login(deprecate_eof)
    tracker.feed_client(packet(b"\x1b\x00\x00", 0))
    # With DEPRECATE_EOF: 0xFE, affected_rows 0, last_insert_id 0, status
    # IN_TRANS|AUTOCOMMIT|SESSION_STATE_CHANGED, warnings 0, info "", session state changes.
    # Without: an EOF with warnings 0 and status IN_TRANS|AUTOCOMMIT.
    answer = (b"\xfe\x00\x00\x03\x40\x00\x00\x00\x05\x00\x03\x02db" if deprecate_eof
              else b"\xfe\x00\x00\x03\x00")
    tracker.feed_server(packet(answer, 1))
    assert not tracker.busy and tracker.in_transaction


# -- client packets -------------------------------------------------------------------------------


def test_declared_length_beyond_max_allowed_packet_is_refused_before_it_arrives():
    """Bug: a COM_INIT_DB (or short COM_QUERY) announcing more than max_allowed_packet was held
    until all of it had arrived before being refused."""
    tracker = login(max_allowed_packet=1024)
    with pytest.raises(ProtocolError) as err:
        tracker.feed_client(b"\x00\x00\x10\x00" + b"\x02" + b"d" * 100)  # 1 MiB COM_INIT_DB
    assert err.value.errno == ER_NET_PACKET_TOO_LARGE
