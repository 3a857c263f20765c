"""The bulk paths of the decoder and the backtrack planner agree with the per-row ones.

The planner decodes whole rows events with ``decode_images`` (one generated loop per table),
folds them with bulk dict updates, and writes SQL literals with ``rows_literal_writer`` (one
generated f-string per row). Each is checked here against the simple path it replaces: the
generic per-column reader, a per-row fold, and ``literal_writer`` value by value.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import rewind
from proxy.changelog import _scan, decoder
from proxy.changelog.decoder import (
    ColumnDef,
    DecodeError,
    FieldType,
    decode_images,
    decode_rows,
    literal_writer,
    parse_table_map,
    rows_literal_writer,
)
from tests.unit import test_decoder as samples

WRITE_V1, UPDATE_V1, DELETE_V1 = 23, 24, 25

SAMPLES = [
    (samples.TIME_MAP, samples.TIME_ROWS), (samples.DECIMAL_MAP, samples.DECIMAL_ROWS),
    (samples.DATETIME_MAP, samples.DATETIME_ROWS), (samples.BITS_MAP, samples.BITS_ROWS),
    (samples.INTS_MAP, samples.INTS_ROWS), (samples.STRINGS_MAP, samples.STRINGS_INSERT),
]


# -- a synthetic table: fixed-size runs, strings of both prefix sizes, nullable columns --------


def _packed(n: int) -> bytes:
    assert n < 251
    return bytes([n])


def _table_map(table_id: int = 9) -> bytes:
    """(a INT, b BIGINT UNSIGNED, c CHAR(120) utf8mb4, d SMALLINT, e VARCHAR(10) latin1,
    f DOUBLE, g DECIMAL(5,2)), PRIMARY KEY (a); every column nullable."""
    body = table_id.to_bytes(6, "little") + b"\x01\x00"
    body += _packed(2) + b"db\0" + _packed(1) + b"t\0"
    types = bytes([FieldType.LONG, FieldType.LONGLONG, FieldType.STRING, FieldType.SHORT,
                   FieldType.VARCHAR, FieldType.DOUBLE, FieldType.NEWDECIMAL])
    meta = bytes([0xEE, 0xE0, 10, 0, 8, 5, 2])  # CHAR(480 bytes), VARCHAR(10), DOUBLE, (5,2)
    body += _packed(len(types)) + types + _packed(len(meta)) + meta + b"\x7f"

    def field(kind: int, data: bytes) -> bytes:
        return bytes([kind]) + _packed(len(data)) + data

    names = b"".join(_packed(len(n)) + n for n in (b"a", b"b", b"c", b"d", b"e", b"f", b"g"))
    body += field(1, b"\x40") + field(3, bytes([45, 8])) + field(4, names) + field(8, _packed(0))
    return body


def _value_bytes(column: int, value) -> bytes:
    if column == 0:
        return struct.pack("<i", value)
    if column == 1:
        return struct.pack("<Q", value)
    if column == 2:
        return struct.pack("<H", len(value)) + value
    if column == 3:
        return struct.pack("<h", value)
    if column == 4:
        return _packed(len(value)) + value
    if column == 5:
        return struct.pack("<d", value)
    # DECIMAL(5,2) from a non-negative number of hundredths: 3 integer digits in 2 bytes, 2
    # fraction digits in 1, the top bit set for a positive number
    return (0x8000 | value // 100).to_bytes(2, "big") + bytes([value % 100])


def _random_row(rng: random.Random, key: int) -> tuple:
    row = [key, rng.randrange(2**64), bytes(rng.choice(b"abc- ") for _ in range(rng.randrange(130))),
           rng.randrange(-2**15, 2**15), bytes(rng.randrange(256) for _ in range(rng.randrange(11))),
           rng.uniform(-1e6, 1e6), rng.randrange(10000)]
    for i in range(1, 7):
        if rng.random() < 0.2:
            row[i] = None
    return tuple(row)


def _image(row: tuple) -> bytes:
    nulls = sum(1 << i for i, v in enumerate(row) if v is None)
    return bytes([nulls]) + b"".join(_value_bytes(i, v) for i, v in enumerate(row) if v is not None)


def _rows_event(event_type: int, images: list[bytes], table_id: int = 9) -> bytes:
    head = table_id.to_bytes(6, "little") + b"\x00\x00" + _packed(7) + b"\x7f"
    if event_type == UPDATE_V1:
        head += b"\x7f"
    return head + b"".join(images)


# -- decoding ---------------------------------------------------------------------------------


def test_generated_loop_reader_agrees_with_the_generic_reader_with_and_without_nulls():
    rng = random.Random(7)
    table = parse_table_map(_table_map())
    rows = [_random_row(rng, key) for key in range(300)]
    body = _rows_event(WRITE_V1, [_image(row) for row in rows])
    kind, images = decode_images(WRITE_V1, body, table)
    assert kind == "insert"
    generic, pos = [], 8 + 1 + 1
    while pos < len(body):
        image, pos = decoder._read_image(body, pos, table._readers, 1)
        generic.append(image)
    assert images == generic
    assert [image[:6] for image in images] == [row[:6] for row in rows]
    assert any(None in image for image in images) and any(None not in image for image in images)


def test_decode_images_matches_decode_rows_for_every_kind():
    rng = random.Random(8)
    table = parse_table_map(_table_map())
    rows = [_random_row(rng, key) for key in range(50)]
    for event_type in (WRITE_V1, UPDATE_V1, DELETE_V1):
        body = _rows_event(event_type, [_image(row) for row in rows])
        kind, images = decode_images(event_type, body, table)
        changes = decode_rows(event_type, body, table)
        if kind == "update":
            assert [c.before for c in changes] == images[0::2]
            assert [c.after for c in changes] == images[1::2]
        else:
            assert [c.after if kind == "insert" else c.before for c in changes] == images
    for table_hex, rows_hex in SAMPLES:
        sample = parse_table_map(bytes.fromhex(table_hex))
        _, images = decode_images(WRITE_V1, bytes.fromhex(rows_hex), sample)
        assert images == [c.after for c in decode_rows(WRITE_V1, bytes.fromhex(rows_hex), sample)]


def test_an_update_event_cut_after_a_before_image_is_refused():
    rng = random.Random(9)
    table = parse_table_map(_table_map())
    body = _rows_event(UPDATE_V1, [_image(_random_row(rng, key)) for key in range(3)])
    with pytest.raises(DecodeError, match="inside an update"):
        decode_images(UPDATE_V1, body, table)


# -- SQL literals -----------------------------------------------------------------------------


def _per_value(fields, rows) -> list[str]:
    def value(row, where):
        return row[where[0]][where[1]] if isinstance(where, tuple) else row[where]

    return ["(" + ", ".join(literal_writer(column)(value(row, where)) for where, column in fields) + ")"
            for row in rows]


@pytest.mark.parametrize("table_map_hex, rows_hex", SAMPLES)
def test_bulk_literals_equal_literal_writer_for_every_sample_type(table_map_hex, rows_hex):
    table = parse_table_map(bytes.fromhex(table_map_hex))
    images = [c.after for c in decode_rows(WRITE_V1, bytes.fromhex(rows_hex), table)]
    fields = tuple((i, column) for i, column in enumerate(table.columns))
    assert rows_literal_writer(fields)(images) == _per_value(fields, images)
    with_nulls = [(None,) * len(image) for image in images]
    assert rows_literal_writer(fields)(with_nulls) == _per_value(fields, with_nulls)


def test_bulk_literals_of_pairs_and_charsets():
    rng = random.Random(10)
    table = parse_table_map(_table_map())
    rows = [_random_row(rng, key) for key in range(200)]
    _, images = decode_images(WRITE_V1, _rows_event(WRITE_V1, [_image(row) for row in rows]), table)
    pairs = list(zip(images, reversed(images), strict=True))
    columns = table.columns
    fields = tuple([((1, i), columns[i]) for i in range(len(columns))] + [((0, 2), columns[2]), ((0, 6), columns[6])])
    assert rows_literal_writer(fields)(pairs) == _per_value(fields, pairs)
    binary = ColumnDef("x", FieldType.VARCHAR, metadata=10, charset=63)
    unknown = ColumnDef("y", FieldType.BLOB, metadata=2, charset=None)
    assert rows_literal_writer(((0, binary), (1, unknown)))([(b"\x00a", b"z"), (None, b"")]) == [
        "(X'0061', X'7a')", "(NULL, X'')"]


# -- the planner's fold -----------------------------------------------------------------------


def _reference_fold(events: list[tuple[str, list[tuple]]], key: tuple[int, ...]) -> dict:
    """The net effect per key, one row change at a time (the definition the fold must keep)."""
    fates: dict = {}

    def touch(k, image_if_new, latest):
        if k in fates:
            fates[k][1] = latest
        else:
            fates[k] = [image_if_new, latest]

    for kind, images in events:
        pairs = list(zip(images[0::2], images[1::2], strict=True)) if kind == "update" else images
        for change in pairs:
            if kind == "insert":
                touch(tuple(change[i] for i in key), None, change)
            elif kind == "delete":
                touch(tuple(change[i] for i in key), change, None)
            else:
                before, after = change
                bk, ak = tuple(before[i] for i in key), tuple(after[i] for i in key)
                if bk == ak:
                    touch(bk, before, after)
                else:
                    touch(bk, before, None)
                    touch(ak, None, after)
    return fates


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("key", [(0,), (0, 1)])
def test_fold_equals_the_row_by_row_definition(seed, key):
    rng = random.Random(seed)
    columns = (ColumnDef("a", FieldType.LONG), ColumnDef("b", FieldType.LONG), ColumnDef("v", FieldType.LONG))
    schema = decoder.TableSchema("db", "t", 1, columns, primary_key=key, primary_key_prefixes=(0,) * len(key))
    table = rewind.TableChanges("db.t", schema)
    plan = rewind.Plan(0, [], {}, [])
    events = []
    for _ in range(rng.randrange(1, 12)):
        kind = rng.choice(("insert", "delete", "update"))
        span = rng.choice((3, 50))  # small key spaces repeat keys within and across events
        count = rng.randrange(0, 20)
        if kind == "update":
            images = []
            for _ in range(count):
                before = (rng.randrange(span), rng.randrange(2), rng.randrange(5))
                after = before if rng.random() < 0.7 else (rng.randrange(span), before[1], before[2])
                images += [before, (after[0], after[1], rng.randrange(5))]
        else:
            images = [(rng.randrange(span), rng.randrange(2), rng.randrange(5)) for _ in range(count)]
        events.append((kind, images))
        assert rewind._apply_row_changes(table, kind, images, plan)
    assert table.fates == _reference_fold(events, key)
    assert list(table.fates) == list(_reference_fold(events, key))  # same order: the undo's order


def test_keyless_fold_counts_copies_in_event_order():
    schema = decoder.TableSchema("db", "t", 1, (ColumnDef("v", FieldType.LONG),))
    table = rewind.TableChanges("db.t", schema)
    plan = rewind.Plan(0, [], {}, [])
    rewind._apply_row_changes(table, "insert", [(1,), (2,), (1,)], plan)
    rewind._apply_row_changes(table, "update", [(2,), (3,), (1,), (1,)], plan)
    rewind._apply_row_changes(table, "delete", [(3,)], plan)
    assert list(table.deltas.items()) == [((1,), 2), ((2,), 0), ((3,), 0)]


# -- the compiled row loop (setup.py builds proxy.changelog._scan_native with mypyc) -------------

ROOT = Path(__file__).resolve().parents[2]


def test_scan_loop_source_agrees_with_the_generated_loop():
    """``_scan.read_full_images`` as plain Python (the source of the compiled build) reads
    what the generated loop reads, NULLs, every sample type and truncation included."""
    rng = random.Random(11)
    tables = [(parse_table_map(_table_map()),
               _rows_event(WRITE_V1, [_image(_random_row(rng, key)) for key in range(200)]))]
    tables += [(parse_table_map(bytes.fromhex(m)), bytes.fromhex(r)) for m, r in SAMPLES]
    for table, body in tables:
        null_len = (len(table.columns) + 7) // 8
        kinds = [decoder._scan_kind(column) for column in table.columns]
        start = 8 + 1 + null_len
        generated = decoder._compile_full_images_reader(table)
        assert _scan.read_full_images(body, start, len(body), kinds, list(table._readers), null_len) == \
            generated(body, start, len(body))
        for cut in range(1, 12):  # truncated: both fail, or both read short (the caller's
            short = body[:-cut]    # overrun check refuses that)
            assert _outcome(_scan.read_full_images, short, start, len(body), kinds, list(table._readers),
                            null_len) == _outcome(generated, short, start, len(body))


def _outcome(read, *args):
    try:
        return read(*args)
    except (IndexError, struct.error):
        return "error"


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k != "AURORATRACK_PURE_PYTHON"}
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**inherited, **env})


def test_pure_python_row_loop_passes_the_decoder_tests_too():
    if decoder.SCAN_IMPLEMENTATION != "compiled":
        pytest.skip(f"the decoder tests already ran on the {decoder.SCAN_IMPLEMENTATION} row loop")
    tests = [str(ROOT / "tests" / "unit" / name) for name in ("test_decoder.py", "test_decoder_bulk.py")]
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                  AURORATRACK_PURE_PYTHON="1")
    assert result.returncode == 0, result.stdout[-3000:]


def test_pure_python_row_loop_can_be_forced_and_a_stale_build_is_ignored():
    code = "import proxy.changelog.decoder as d; print(d.SCAN_IMPLEMENTATION)"
    assert _run([sys.executable, "-c", code], AURORATRACK_PURE_PYTHON="1").stdout.strip() == \
        "pure Python (AURORATRACK_PURE_PYTHON is set)"
    stale = ("import sys, types\n"
             "fake = types.ModuleType('proxy.changelog._scan_native')\n"
             "fake._SOURCE_DIGEST = '0' * 64\n"
             "sys.modules['proxy.changelog._scan_native'] = fake\n" + code)
    assert _run([sys.executable, "-c", stale]).stdout.strip() == "pure Python (the compiled build is stale)"
