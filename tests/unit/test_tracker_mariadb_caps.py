"""Literal-bytes tests of what MariaDB's extended capabilities change in a response:
MARIADB_CLIENT_PROGRESS (progress reports), MARIADB_CLIENT_CACHE_METADATA (a metadata-follows
byte after each column count) and MARIADB_CLIENT_STMT_BULK_OPERATIONS (COM_STMT_BULK_EXECUTE).

Server packets are MariaDB 10.11.19's, captured with a raw client asking for each capability.
"""

from __future__ import annotations

import struct

import pytest

from proxy.tracker import COMMAND, SessionTracker
from proxy.wire import ProtocolError
from tests.unit.test_tracker import GREETING, packet

PROGRESS = 1 << 32
CACHE_METADATA = 1 << 36
STMT_BULK = 1 << 34


def login(extended: int, deprecate_eof: bool = False) -> SessionTracker:
    """A tracker after a MariaDB client asked for ``extended`` capabilities (the greeting
    offers PROGRESS, STMT_BULK, EXTENDED_METADATA, CACHE_METADATA)."""
    tracker = SessionTracker()
    tracker.feed_server(GREETING)
    # No CLIENT_LONG_PASSWORD: the extended flags are in the filler's last 4 bytes.
    caps = 0x012AA20C if deprecate_eof else 0x002AA20C
    response = (struct.pack("<IIB", caps, 1 << 24, 45) + b"\x00" * 19
                + struct.pack("<I", extended >> 32) + b"app\x00" + b"\x14" + b"\x05" * 20
                + b"shop\x00" + b"mysql_native_password\x00")
    tracker.feed_client(packet(response, 1))
    tracker.feed_server(packet(b"\x00\x00\x00\x02\x00\x00\x00", 2))
    assert tracker.phase == COMMAND
    return tracker


def stream(payloads: list[bytes], first_seq: int = 1) -> bytes:
    return b"".join(packet(p, first_seq + i) for i, p in enumerate(payloads))


# ALTER TABLE big ADD COLUMN w INT, ALGORITHM=COPY with progress_report_time=1 (captured).
REPORT_1 = bytes.fromhex("ffffff0101029d020011636f707920746f20746d70207461626c65")
REPORT_2 = bytes.fromhex("ffffff010102669a0011636f707920746f20746d70207461626c65")
REPORT_3 = bytes.fromhex("ffffff0102020000000d456e61626c696e67206b657973")
ALTER_OK = bytes.fromhex("00fd60e31600020000002c5265636f7264733a203135303030303020204475706c"
                         "6963617465733a203020205761726e696e67733a2030")


def test_progress_reports_do_not_end_the_response():
    tracker = login(PROGRESS)
    assert tracker.progress_reports
    tracker.feed_client(packet(b"\x03ALTER TABLE big ADD COLUMN w INT", 0))
    reports = stream([REPORT_1, REPORT_2, REPORT_3])
    for cut in range(0, len(reports), 7):  # however the reports are split
        tracker.feed_server(reports[cut:cut + 7])
        assert tracker.busy
    tracker.feed_server(packet(ALTER_OK, 4))
    assert not tracker.busy and not tracker.pending


def test_progress_report_between_results_of_a_multi_statement():
    tracker = login(PROGRESS)
    tracker.feed_client(packet(b"\x03DO 1; ALTER TABLE big FORCE", 0))
    more = bytes.fromhex("0000000a000000")  # OK, MORE_RESULTS_EXISTS | AUTOCOMMIT
    tracker.feed_server(stream([more, REPORT_1, REPORT_2]))
    assert tracker.busy
    tracker.feed_server(packet(ALTER_OK, 4))
    assert not tracker.busy


def test_without_the_capability_an_ffff_err_ends_the_response():
    """A client that did not ask gets no progress reports; an ERR is an ERR."""
    tracker = login(0)
    tracker.feed_client(packet(b"\x03DO 1", 0))
    tracker.feed_server(packet(REPORT_1, 1))
    assert not tracker.busy


# Binary rows of SELECT id, v FROM t WHERE id < 3 (captured).
ROWS = [bytes.fromhex("0000010000000161"), bytes.fromhex("0000020000000162")]
COLUMNS = [bytes.fromhex("03646566036c6162017401740269640269640c3f000b000000030350000000"),
           bytes.fromhex("03646566036c616201740174017601760c2d0028000000fd0000000000")]
EXECUTE = b"\x17\x05\x00\x00\x00\x00\x01\x00\x00\x00"
EXECUTE_CURSOR = b"\x17\x05\x00\x00\x00\x01\x01\x00\x00\x00"


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_cached_metadata_skips_column_definitions(deprecate_eof):
    tracker = login(CACHE_METADATA, deprecate_eof)
    assert tracker.cache_metadata
    end = bytes.fromhex("fe000002000000" if deprecate_eof else "fe00000200")
    # First execution: the count, metadata follows (1), the definitions.
    tracker.feed_client(packet(EXECUTE, 0))
    first = [b"\x02\x01", *COLUMNS] + ([] if deprecate_eof else [end]) + [*ROWS, end]
    tracker.feed_server(stream(first))
    assert not tracker.busy
    # Again: metadata does not follow (0); no definitions, the EOF after them only without
    # DEPRECATE_EOF. A row starting 0x00 must not be taken for a definition or an OK.
    tracker.feed_client(packet(EXECUTE, 0))
    again = [b"\x02\x00"] + ([] if deprecate_eof else [end]) + [*ROWS]
    tracker.feed_server(stream(again))
    assert tracker.busy
    tracker.feed_server(packet(end, len(again) + 1))
    assert not tracker.busy


@pytest.mark.parametrize("deprecate_eof", [False, True], ids=["eof", "deprecate_eof"])
def test_cached_metadata_with_a_cursor(deprecate_eof):
    tracker = login(CACHE_METADATA, deprecate_eof)
    opened = bytes.fromhex("fe000042000000" if deprecate_eof else "fe00004200")
    tracker.feed_client(packet(EXECUTE_CURSOR, 0))
    tracker.feed_server(stream([b"\x02\x00", opened]))
    assert not tracker.busy
    tracker.feed_client(packet(b"\x1c\x05\x00\x00\x00\x05\x00\x00\x00", 0))  # fetch 5
    last = bytes.fromhex("fe000082000000" if deprecate_eof else "fe00008200")
    tracker.feed_server(stream([*ROWS, last]))
    assert not tracker.busy


def test_cached_metadata_text_result_always_follows():
    """COM_QUERY's column count carries the byte too (always 1)."""
    tracker = login(CACHE_METADATA)
    tracker.feed_client(packet(b"\x03SELECT id, v FROM t LIMIT 1", 0))
    end = bytes.fromhex("fe00002200")
    tracker.feed_server(stream([b"\x02\x01", *COLUMNS, end, b"\x01\x31\x01\x61", end]))
    assert not tracker.busy


def test_metadata_follows_byte_missing_is_a_protocol_error():
    tracker = login(CACHE_METADATA)
    tracker.feed_client(packet(EXECUTE, 0))
    with pytest.raises(ProtocolError, match="metadata-follows"):
        tracker.feed_server(packet(b"\x02", 1))


# COM_STMT_BULK_EXECUTE: statement 0x16, flags SEND_TYPES (0x80), 2 INT parameters, rows.
BULK = (b"\xfa\x16\x00\x00\x00\x80\x00" + b"\x03\x00\x03\x00"
        + b"".join(b"\x00" + struct.pack("<i", i) + b"\x00" + struct.pack("<i", 1)
                   for i in range(1, 5)))


def test_bulk_execute_answered_by_ok_or_err():
    tracker = login(STMT_BULK)
    tracker.feed_client(packet(BULK, 0))
    assert tracker.busy
    tracker.feed_server(packet(b"\x00\x04\x00\x02\x00\x00\x00", 1))  # 4 rows affected
    assert not tracker.busy
    tracker.feed_client(packet(BULK, 0))
    tracker.feed_server(packet(b"\xff\x26\x04#23000Duplicate entry '1' for key 'PRIMARY'", 1))
    assert not tracker.busy


def test_bulk_insert_returning_answers_a_result_set():
    """INSERT ... RETURNING id, active by COM_STMT_BULK_EXECUTE (mariadb-client-test
    test_bulk_insert_returning, captured): a result set, one row per parameter set."""
    tracker = login(STMT_BULK | CACHE_METADATA)
    tracker.feed_client(packet(BULK, 0))
    col_id = bytes.fromhex("03646566" "0e") + b"client_test_db" + bytes.fromhex(
        "02743102743102696402696400" "0c3f000b0000000303500000" "00")
    col_active = bytes.fromhex("03646566" "0e") + b"client_test_db" + bytes.fromhex(
        "0274310274310661637469766506616374697665000c3f000b00000003000000000000")
    eof = bytes.fromhex("fe00000200")
    rows = [b"\x00\x00" + struct.pack("<ii", i, 1) for i in range(1, 5)]
    tracker.feed_server(stream([b"\x02\x01", col_id, col_active, eof, *rows]))
    assert tracker.busy
    tracker.feed_server(packet(eof, 9))
    assert not tracker.busy


def test_bulk_command_is_no_longer_refused():
    tracker = login(STMT_BULK)
    assert tracker.feed_client(packet(BULK, 0)) == packet(BULK, 0)


def test_partial_ff_packet_among_column_definitions_is_no_crash():
    """A malformed server packet that starts 0xFF where a column definition belongs, cut after
    its first byte: the progress check must not read past the bytes that have arrived."""
    tracker = login(PROGRESS)
    tracker.feed_client(packet(b"\x03SELECT 1, 2", 0))
    tracker.feed_server(packet(b"\x02", 1) + b"\x10\x00\x00\x02\xff")  # 16 bytes announced, 1 sent
    assert tracker.busy
