"""Real binlog files written by MySQL 5.0-9.6 and MariaDB servers, through the file reader, the
decoder, the streamer's assembler and the change store, against the values the servers wrote.

The files live outside the repository (../shared/fixtures/mysql-binlogs, with a README listing
each file's values): every test here skips when they are absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from proxy.backtrack import _exact_txn
from proxy.changelog import binlog as bl
from proxy.changelog.binlogfile import BinlogFile, BinlogReadError
from proxy.changelog.decoder import (
    HIDDEN,
    MISSING,
    DateTimeValue,
    EnumValue,
    JsonValue,
    SetValue,
    TimestampValue,
    TimeValue,
    VectorValue,
    decode_rows,
    parse_table_map,
    rows_event_table_id,
    rows_literal_writer,
    sql_literal,
)
from proxy.changelog.store import ChangeStore
from proxy.changelog.streamer import TransactionAssembler
from proxy.inspectbinlog import InspectError, feed_file, inspect_binlogs
from proxy.loaddata import load_spec
from proxy.timeparse import parse_target

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mysql-binlogs"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(),
                                reason=f"the MySQL binlog fixtures are not here ({FIXTURES})")

# MySQL 8.0+ files the README lists, none broken on purpose: each must read without an error.
MYSQL8_FILES = (
    "binlog-invisible-columns.000001", "binlog_transaction_previous_GTID_no_tag.000001",
    "binlog_transaction_with_GTID_TAG.000001", "json-opaque.binlog", "json.binlog.000001",
    "master-bin.000001", "minimal_row_metadata.000001", "mysql-enum-string-set.000001",
    "mysql_type_bit.000001", "rpl_unfiltered_hidden_gcol.000001", "time_issue.000001",
    "transaction_compression.000001", "vector.binlog",
)
BROKEN_ON_PURPOSE = ("binlog_truncated_event.000001", "binlog_truncated_prev_gtid_event.000001",
                     "corrupt-relay-bin.000624")


def all_files() -> list[str]:
    if not FIXTURES.is_dir():
        return []
    return sorted(p.name for p in FIXTURES.iterdir() if p.name != "README.md")


def row_changes(name: str) -> list[tuple[str, object]]:
    """(table, RowChange) for every row of the file, straight from reader and decoder."""
    binlog = BinlogFile(FIXTURES / name)
    maps, out = {}, []
    for event in binlog.events():
        if event.type == bl.TABLE_MAP_EVENT:
            table = parse_table_map(event.body, binlog.format.flavor)
            maps[table.table_id] = table
        elif event.type in bl.ROWS_EVENTS:
            table = maps[rows_event_table_id(event.body)]
            out += [(table, row) for row in decode_rows(event.type, event.body, table)]
    return out


def after_images(name: str) -> list[tuple]:
    return [row.after for _, row in row_changes(name) if row.after is not None]


# -- every file: a clear outcome, never a crash ----------------------------------------------------

@pytest.mark.parametrize("name", all_files())
def test_every_file_reads_through_reader_store_and_changes_or_names_the_problem(name):
    try:
        documents = inspect_binlogs([FIXTURES / name], rows=True)
    except InspectError as exc:
        assert name not in MYSQL8_FILES, f"{name}: {exc}"
        assert name in str(exc) and re.search(r"offset \d+", str(exc)), str(exc)
        return
    assert name not in BROKEN_ON_PURPOSE, f"{name} is broken on purpose, yet read without error"
    for document in documents:
        assert document["file"].endswith(name)


@pytest.mark.parametrize("name", BROKEN_ON_PURPOSE)
def test_broken_files_are_refused_with_file_offset_and_event(name):
    with pytest.raises((BinlogReadError, InspectError), match=rf"{re.escape(name)}.*offset \d+"):
        inspect_binlogs([FIXTURES / name])


def test_relay_logs_read_by_offset_not_by_the_sources_positions():
    # The source's log_pos in a relay log's headers made the stream's contiguity check raise
    # EventsMissing; the file reader goes by the file's own offsets.
    events = list(BinlogFile(FIXTURES / "bug33029-slave-relay-bin.000001").events())
    assert all(a.end_pos == b.start_pos for a, b in zip(events, events[1:], strict=False))
    assert events[-1].end_pos == (FIXTURES / "bug33029-slave-relay-bin.000001").stat().st_size


def test_pre_release_table_map_is_a_named_error_not_an_index_error():
    # A pre-GA 5.1 file numbers its events as no released server does: the first one read by the
    # rules of today's numbering (type 18, Execute_load_query, or 19, the table map) is refused
    # by name, with its offset.
    with pytest.raises(InspectError, match=r"ver_5_1-wl2325_r\.001: at offset \d+, event type 1[89]"):
        inspect_binlogs([FIXTURES / "ver_5_1-wl2325_r.001"])


# -- MySQL 8.0/8.4/9.x values, as the README lists them ------------------------------------------

def test_vector_columns_decode_to_the_float32_bytes_and_are_written_back_as_them():
    rows = after_images("vector.binlog")
    assert rows[0][0] == 1 and rows[0][1] == VectorValue(bytes.fromhex("cdcc8c3fcdcc0c4033335340"))
    assert rows[1][0] == 2 and rows[1][1] == VectorValue(bytes.fromhex("0000803f000080bf00000000"))
    assert rows[0][1].floats() == pytest.approx((1.1, 2.2, 3.3))
    table = row_changes("vector.binlog")[0][0]
    assert [c.metadata for c in table.columns if c.type == 242] == [4]
    assert sql_literal(rows[0][1], table.columns[1]) == "X'cdcc8c3fcdcc0c4033335340'"
    # The undo's bulk writers: INSERT row literals hold the same bytes; LOAD DATA has no exact
    # spelling for a vector, so the applier keeps its INSERTs for such a table.
    fields = tuple((i, column) for i, column in enumerate(table.columns))
    assert rows_literal_writer(fields)([rows[0]]) == ["(1, X'cdcc8c3fcdcc0c4033335340')"]
    assert load_spec(fields, ("`id`", "`vector_column`")) is None
    bar = [image for table, row in row_changes("vector.binlog") if table.table == "bar"
           for image in (row.after,) if image is not None]
    assert len(bar[0][1].floats()) == 2 and len(bar[0][3].floats()) == 4


def test_tagged_gtid_is_stored_with_its_microsecond_commit_time_and_found_by_gtid(tmp_path):
    store = ChangeStore(tmp_path / "store.db")
    try:
        binlog = BinlogFile(FIXTURES / "binlog_transaction_with_GTID_TAG.000001")
        feed_file(binlog, TransactionAssembler(store, generated_columns=lambda s, t: []))
        [txn] = store.transactions()
        assert txn.gtid == "55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3"
        assert (txn.commit_time_us, txn.time_precision) == (1770368687207196, "us")
        target = parse_target("gtid:55778904-0299-11f1-B1B8-4ef0c4956feb:MyTag:3")
        assert _exact_txn(store, target) == txn.txn_id
    finally:
        store.close()


def test_tagged_gtid_shows_in_changes():
    [document] = inspect_binlogs([FIXTURES / "binlog_transaction_with_GTID_TAG.000001"], rows=True)
    assert document["gtid"] == "55778904-0299-11f1-b1b8-4ef0c4956feb:mytag:3"
    assert document["commit_time"] == "2026-02-06T09:04:47.207196Z"
    assert document["changes"][0]["after"] == {"col0": 3, "col1": 100, "col2": "250.00"}


def test_temporal_values_inside_json_print_as_mysql_prints_them():
    texts = [image[-1].to_text() for image in after_images("json-opaque.binlog")]
    assert texts == ['{"a": "base64:type15:VQ=="}', '{"b": "2012-03-18"}',
                     '{"c": "2012-03-18 11:30:45.000000"}', '{"c": "87:31:46.654321"}',
                     '{"d": 123.456}', '{"e": 9.00}', '{"e": [0, 1, true, false]}', '{"e": null}']


def test_hidden_column_of_a_functional_index_is_hidden_not_missing():
    [(table, row)] = row_changes("rpl_unfiltered_hidden_gcol.000001")
    assert row.after == (1, HIDDEN, b"1")
    assert MISSING not in row.after  # what the planner reads as a partial image


def test_named_hidden_columns_count_as_generated():
    [(table, _)] = row_changes("rpl_unfiltered_hidden_gcol.000001")
    from dataclasses import replace
    named = replace(table, columns=(table.columns[0], replace(table.columns[1], name="!hidden!i!0!0"),
                                    table.columns[2]))
    assert named.is_generated(1) and not named.is_generated(0)


def test_invisible_columns_are_in_the_table_map_and_the_images():
    changes = row_changes("binlog-invisible-columns.000001")
    table = changes[0][0]
    assert [c.name for c in table.columns if not c.visible] == ["f1", "f2", "f6"]
    assert changes[0][1].after == (1, 2, -3, b"4", b"\x05", 6000000000)
    update = changes[2][1]
    assert update.kind == "update" and update.after[:3] == (111, 222, -333)


def test_minimal_row_metadata_values():
    [(table, row)] = row_changes("minimal_row_metadata.000001")
    assert row.after[4] == 3230202323 and table.columns[4].unsigned
    assert table.columns[2].charset == 255 and row.after[2] == b"a"
    assert row.after[1] is MISSING and row.after[3] is MISSING  # the image is not FULL


def test_enum_set_bit_and_time_values():
    kinds = [row.kind for _, row in row_changes("mysql-enum-string-set.000001")]
    assert kinds == ["insert", "update", "delete"]
    update = row_changes("mysql-enum-string-set.000001")[1][1]
    assert isinstance(update.after[2], EnumValue) and update.after[2].member == b"variant2"
    assert isinstance(update.after[3], SetValue) and update.after[3].members == (b"two", b"four")
    assert after_images("mysql_type_bit.000001") == [(4, b"foo", 32)]
    assert after_images("time_issue.000001") == [(TimeValue(True, 507, 48, 27),)]


def test_json_images_of_writes_and_updates():
    changes = row_changes("json.binlog.000001")
    full = [row for _, row in changes[:12]]
    images = [image for row in full for image in (row.before, row.after) if image is not None]
    assert len(images) == 18
    assert full[0].after[1].to_text() == '{"age": 24, "data": "xxxxxxxxxx", "name": "Joe"}'
    assert full[6].after[1].to_text() == '{"age": 25, "data": "xxxxxxxxxx", "name": "Joe"}'


# -- compressed transactions -------------------------------------------------------------------------

def test_compressed_transaction_comes_out_as_its_events_at_the_payload_position():
    events = list(BinlogFile(FIXTURES / "transaction_compression.000001").events())
    payload_at = 274
    inner = [e for e in events if e.start_pos == payload_at]
    assert [e.type for e in inner] == [bl.QUERY_EVENT, bl.TABLE_MAP_EVENT, bl.WRITE_ROWS_V2, bl.XID_EVENT]
    assert all(e.end_pos == 431 for e in inner)
    raw = list(BinlogFile(FIXTURES / "transaction_compression.000001").events(expand=False))
    assert bl.TRANSACTION_PAYLOAD_EVENT in [e.type for e in raw]
    assert after_images("transaction_compression.000001") == [(1,)]


def test_compressed_transaction_reaches_the_store_as_one_transaction():
    [document] = inspect_binlogs([FIXTURES / "transaction_compression.000001"], rows=True)
    assert document["binlog_end"] == "transaction_compression.000001:431"
    assert [c["after"] for c in document["changes"]] == [{"col0": 1}]


def test_corrupt_zstd_payload_is_a_named_error():
    from proxy.changelog.binlogfile import payload_events
    [event] = [e for e in BinlogFile(FIXTURES / "transaction_compression.000001").events(expand=False)
               if e.type == bl.TRANSACTION_PAYLOAD_EVENT]
    event.body = event.body[:-20] + bytes(20)
    with pytest.raises(BinlogReadError, match=r"offset 274, event type 40: zstd"):
        payload_events(event)


# -- partial JSON ------------------------------------------------------------------------------------

def partial_event_parts() -> tuple[object, bytes, list[bytes]]:
    """The fixture's PARTIAL_UPDATE_ROWS event, and the full images of the same rows (from the
    UPDATE_ROWS event before it: its after-images are the rows the partial update starts from)."""
    binlog = BinlogFile(FIXTURES / "json.binlog.000001")
    maps, full_after, partial = {}, [], None
    for event in binlog.events():
        if event.type == bl.TABLE_MAP_EVENT:
            table = parse_table_map(event.body, "mysql")
            maps[table.table_id] = table
        elif event.type == bl.UPDATE_ROWS_V2:
            full_after = _update_after_images(event.body)
        elif event.type == bl.PARTIAL_UPDATE_ROWS_EVENT:
            partial = event
    return maps[rows_event_table_id(partial.body)], partial.body, full_after


def _update_after_images(body: bytes) -> list[bytes]:
    """The raw bytes of each after-image of an UPDATE_ROWS_V2 event of 4 columns (id INT, JSON,
    VARCHAR(100), INT; no NULLs), so that a test can build a FULL partial-update event."""
    pos = 8 + 2 + 1 + 1 + 1  # table id and flags, extra data length, width, two bitmaps
    images = []
    while pos < len(body):
        start = pos
        pos += 1 + 4  # null bitmap, id
        pos += 4 + int.from_bytes(body[pos:pos + 4], "little")  # JSON
        pos += 2 + int.from_bytes(body[pos:pos + 2], "little")  # VARCHAR(100) in 4-byte chars
        pos += 4
        images.append(bytes(body[start:pos]))
    return images[1::2]


def test_partial_json_with_a_minimal_before_image_keeps_the_diffs():
    table, body, _ = partial_event_parts()
    rows = decode_rows(bl.PARTIAL_UPDATE_ROWS_EVENT, body, table)
    assert [row.after[3] for row in rows] == [26, 34, 42, 26, 34, 42]
    assert str(rows[0].after[1]) == "partial JSON: REPLACE $.age 26"
    assert rows[0].before[1] is MISSING  # binlog_row_image was MINIMAL: a partial image


def test_partial_json_applied_to_a_full_before_image_gives_the_full_document():
    table, body, full_before = partial_event_parts()
    # The same event as MySQL writes it with binlog_row_image=FULL: the before-images are whole
    # rows (the ones the UPDATE before it left), the after-image part is the fixture's own.
    header = bytearray(body[:13])
    header[11] = header[12] = 0x0F  # every column in both images
    rest = body[13:]
    rows_out, pos = bytearray(header), 0
    for image in full_before:
        pos += 1 + 4  # the fixture's MINIMAL before-image: null bitmap and id
        after_start = pos
        pos += 1 + 1 + 1  # value options, partial-JSON bitmap, null bitmap of the after-image
        pos += 4 + int.from_bytes(rest[pos:pos + 4], "little")  # the JSON diffs
        pos += 2 + int.from_bytes(rest[pos:pos + 2], "little")  # name
        pos += 4  # age
        # value options, partial bitmap, null bitmap (no NULL in 4 columns either), then the id
        # the MINIMAL after-image left out, then its own values
        rows_out += image + rest[after_start:after_start + 3] + image[1:5] + rest[after_start + 3:pos]
    assert pos == len(rest)
    rows = decode_rows(bl.PARTIAL_UPDATE_ROWS_EVENT, bytes(rows_out), table)
    assert [row.after[1].to_text() for row in rows] == [
        '{"age": 26, "data": "xxxxxxxxxx", "name": "Joe"}', '{"age": 34, "data": "yyyyyyyyyy", "name": "Sue"}',
        '{"age": 42, "data": "zzzzzzzzzz", "name": "Pete"}', '{"age": 26, "data": "xxxxxxxxxx", "name": "Joe"}',
        '{"age": 34, "data": "yyyyyyyyyy", "name": "Sue"}', '{"age": 42, "data": "zzzzzzzzzz", "name": "Pete"}']
    assert MISSING not in rows[0].before and MISSING not in rows[0].after
    # A rebuilt document equals the same document decoded from binary JSON.
    assert rows[0].after[1] == JsonValue(b"", '{"age": 26, "data": "xxxxxxxxxx", "name": "Joe"}')
    assert sql_literal(rows[0].after[1], table.columns[1]).startswith("CAST(_utf8mb4 X'")


# -- a second opinion: mariadb-binlog -vv, where it reads the file ----------------------------------

SECOND_OPINION = ("binlog-invisible-columns.000001", "minimal_row_metadata.000001", "mysql_type_bit.000001",
                  "time_issue.000001", "mariadb-bin.000001", "ver_trunk_row_v2.001", "write-full-row.binlog",
                  "update-full-row.binlog")


def mariadb_binlog_values(path: Path) -> list[list[str]]:
    """Each row image mariadb-binlog -vv prints, as the value texts of its @N lines (integers it
    cannot tell the signedness of come as ``-3 (4294967293)``: both readings)."""
    out = subprocess.run(["mariadb-binlog", "-vv", "--base64-output=decode-rows", str(path)],
                         capture_output=True, text=True, errors="replace", check=True).stdout
    images: list[list[str]] = []
    for line in out.splitlines():
        if line.startswith("### WHERE") or line.startswith("### SET"):
            images.append([])
        match = re.match(r"###   @\d+=(.*?) /\* (\S+)", line)
        if match:
            images[-1].append(match.group(1))
    return images


def mariadb_spelling(value, column) -> str | None:
    """How mariadb-binlog prints a decoded value, or None where the spellings differ in ways
    that say nothing about the value (JSON, DECIMAL padding, DATETIME)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | float | Decimal | JsonValue | DateTimeValue):
        return None
    if column.type == 16:  # BIT: the bits
        return f"b'{value:0{column.bits}b}'"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "'" + "".join(chr(b) if 32 <= b < 127 and b not in (39, 92) else f"\\x{b:02x}" for b in value) + "'"
    if isinstance(value, TimeValue):
        return f"'{value}'"
    if isinstance(value, EnumValue):
        return str(value.index)
    if isinstance(value, TimestampValue):
        return str(value.seconds)
    return None


@pytest.mark.parametrize("name", SECOND_OPINION)
def test_values_agree_with_mariadb_binlog(name):
    if shutil.which("mariadb-binlog") is None:
        pytest.skip("mariadb-binlog is not on PATH")
    theirs = mariadb_binlog_values(FIXTURES / name)
    ours = []
    for table, row in row_changes(name):
        for image in (row.before, row.after):
            if image is not None:
                ours.append([(v, table.columns[i]) for i, v in enumerate(image)
                             if v is not MISSING and v is not HIDDEN])
    assert len(ours) == len(theirs)
    compared = 0
    for our_image, their_image in zip(ours, theirs, strict=True):
        assert len(our_image) == len(their_image)
        for (value, column), text in zip(our_image, their_image, strict=True):
            spelled = mariadb_spelling(value, column)
            if spelled is not None:
                readings = {text, *re.findall(r"^(\S+) \((\d+)\)$", text)[0]} if " (" in text else {text}
                assert spelled in readings, (name, column, value, text)
                compared += 1
    assert compared > 0


def test_the_replication_stream_expands_a_compressed_transaction_as_the_file_reader_does():
    from tests.unit.test_binlog_framing import collect, packets, source_over

    data = (FIXTURES / "transaction_compression.000001").read_bytes()
    # The file's events after the format description, each sent as the server sends it: a
    # packet holding the status byte and the whole event.
    stream, pos = b"", 126
    while pos < len(data):
        size = int.from_bytes(data[pos + 9:pos + 13], "little")
        stream += packets(b"\x00" + data[pos:pos + size])
        pos += size
    source, thread = source_over(stream, start=bl.BinlogPosition("transaction_compression.000001", 126))
    streamed = collect(source)
    thread.join()
    from_file = [e for e in BinlogFile(FIXTURES / "transaction_compression.000001").events() if e.start_pos >= 126]
    assert [(e.type, e.end_pos, e.size, e.body) for e in streamed] == \
        [(e.type, e.end_pos, e.size, e.body) for e in from_file]
    assert bl.WRITE_ROWS_V2 in [e.type for e in streamed]
