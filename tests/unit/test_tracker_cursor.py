"""Literal-bytes tests of COM_STMT_EXECUTE with and without a cursor, and COM_STMT_FETCH.

The server conversations are MariaDB 10.11.19's, captured with tests/integration/rawmysql.py
against the real server. The shape that dropped sessions (``mariadb-test --cursor-protocol``):
a stored procedure with a cursor of its own (DECLARE c CURSOR ... OPEN c) returns a result set
while that cursor is open; every EOF of that result set carries SERVER_STATUS_CURSOR_EXISTS,
though the client's cursor was never opened and the rows follow at once.
"""

from __future__ import annotations

import pytest

from tests.unit.test_tracker import login, packet

# COM_STMT_EXECUTE, statement 7, flags, iteration_count 1.
EXECUTE_CURSOR = b"\x17\x07\x00\x00\x00\x01\x01\x00\x00\x00"  # CURSOR_TYPE_READ_ONLY
EXECUTE_PLAIN = b"\x17\x07\x00\x00\x00\x00\x01\x00\x00\x00"  # CURSOR_TYPE_NO_CURSOR
FETCH_2 = b"\x1c\x07\x00\x00\x00\x02\x00\x00\x00"  # COM_STMT_FETCH, statement 7, 2 rows

COLUMN_V_A = bytes.fromhex("0364656600000003765f6103765f610c3f000b000000030000000000")
ROW_1 = bytes.fromhex("000001000000")  # binary row: header 0x00, NULL bitmap, INT 1
OK_AUTOCOMMIT_NO_INDEX = bytes.fromhex("00000022000000")  # the CALL's final OK
# SERVER_STATUS_CURSOR_EXISTS | NO_INDEX_USED | MORE_RESULTS_EXISTS | AUTOCOMMIT = 0x6a
EOF_SP_CURSOR = bytes.fromhex("fe00006a00")
OK_EOF_SP_CURSOR = bytes.fromhex("fe00006a000000")  # the same, as the 0xFE OK of DEPRECATE_EOF


def stream(payloads: list[bytes], first_seq: int = 1) -> bytes:
    return b"".join(packet(p, first_seq + i) for i, p in enumerate(payloads))


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_procedure_with_its_own_cursor_returns_rows_at_once(deprecate_eof):
    """Bug: the EOF after the column definitions said CURSOR_EXISTS, the response was taken as
    complete (a cursor opened), and the row that followed looked unsolicited: session ended."""
    tracker = login(deprecate_eof)
    tracker.feed_client(packet(EXECUTE_CURSOR, 0))  # CALL p1(1), cursor asked for
    if deprecate_eof:
        answer = [b"\x01", COLUMN_V_A, ROW_1, OK_EOF_SP_CURSOR, OK_AUTOCOMMIT_NO_INDEX]
    else:
        answer = [b"\x01", COLUMN_V_A, EOF_SP_CURSOR, ROW_1, EOF_SP_CURSOR, OK_AUTOCOMMIT_NO_INDEX]
    wire = stream(answer)
    final_ok = len(packet(OK_AUTOCOMMIT_NO_INDEX, 0))
    assert tracker.feed_server(wire[:-final_ok]) == wire[:-final_ok]
    assert tracker.busy  # the final OK is still owed
    tracker.feed_server(wire[-final_ok:])
    assert not tracker.busy and not tracker.pending


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_cursor_opened_then_fetched(deprecate_eof):
    """A SELECT with CURSOR_TYPE_READ_ONLY: column definitions and a terminator with
    CURSOR_EXISTS end the response; COM_STMT_FETCH returns rows and LAST_ROW_SENT."""
    tracker = login(deprecate_eof)
    tracker.feed_client(packet(EXECUTE_CURSOR, 0))
    column_a = bytes.fromhex("03646566036c6162027431027431016101610c3f000b000000030000000000")
    opened = bytes.fromhex("fe000062000000" if deprecate_eof else "fe00006200")  # 0x62
    tracker.feed_server(stream([b"\x01", column_a, opened]))
    assert not tracker.busy and not tracker.pending
    tracker.feed_client(packet(FETCH_2, 0))
    assert tracker.busy
    last = bytes.fromhex("fe000082000000" if deprecate_eof else "fe00008200")  # LAST_ROW_SENT
    tracker.feed_server(stream([ROW_1, last]))
    assert not tracker.busy
    tracker.feed_client(packet(FETCH_2, 0))  # the cursor is closed now: an ERR
    tracker.feed_server(packet(b"\xff\x8d\x05#HY000The statement (7) has no open cursor.", 1))
    assert not tracker.busy


def test_fetch_rows_with_more_results_flag_still_end_at_their_eof():
    """A fetch answers one batch of one result set: its terminator ends it, whatever flags."""
    tracker = login()
    tracker.feed_client(packet(FETCH_2, 0))
    tracker.feed_server(stream([ROW_1, ROW_1, bytes.fromhex("fe00004a00")]))  # CURSOR|MORE
    assert not tracker.busy


def test_no_cursor_asked_rows_follow_whatever_the_status_says():
    """Without a cursor flag the server never opens one: rows follow the column definitions
    even if their EOF carried CURSOR_EXISTS without MORE_RESULTS."""
    tracker = login()
    tracker.feed_client(packet(EXECUTE_PLAIN, 0))
    tracker.feed_server(stream([b"\x01", COLUMN_V_A, bytes.fromhex("fe00004200")]))
    assert tracker.busy
    tracker.feed_server(stream([ROW_1, bytes.fromhex("fe00000200")], first_seq=4))
    assert not tracker.busy


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_cursor_asked_statement_without_result_set_answers_ok(deprecate_eof):
    """UPDATE, SET, a procedure that selects nothing: the cursor flag is ignored, one OK."""
    tracker = login(deprecate_eof)
    tracker.feed_client(packet(EXECUTE_CURSOR, 0))
    tracker.feed_server(packet(bytes.fromhex("00000002000000"), 1))
    assert not tracker.busy


def test_several_result_sets_with_a_cursor_asked():
    """BEGIN NOT ATOMIC SELECT 1; SELECT 2; END with a cursor asked: no cursor, two result
    sets with MORE_RESULTS_EXISTS, then the final OK (captured, without DEPRECATE_EOF)."""
    tracker = login()
    tracker.feed_client(packet(EXECUTE_CURSOR, 0))
    col = bytes.fromhex("03646566" "000000" "0131" "00" "0c" "3f00" "01000000" "03" "8100" "00" "0000")
    more = bytes.fromhex("fe00000a00")  # MORE_RESULTS_EXISTS | AUTOCOMMIT
    row = bytes.fromhex("000001000000")
    answer = [b"\x01", col, more, row, more, b"\x01", col, more, row, more,
              bytes.fromhex("00000002000000")]
    tracker.feed_server(stream(answer))
    assert not tracker.busy and not tracker.pending


def test_execute_is_held_until_its_flags_byte_is_seen():
    """The cursor flag is read from the command itself: a COM_STMT_EXECUTE cut before its
    flags byte is not forwarded until the byte arrives."""
    tracker = login()
    whole = packet(EXECUTE_CURSOR + b"\x00" * 200, 0)
    assert tracker.feed_client(whole[:8]) == b""
    assert tracker.feed_client(whole[8:12]) == whole[:12]
    assert tracker.feed_client(whole[12:]) == whole[12:]
    assert tracker.pending[0].cursor
