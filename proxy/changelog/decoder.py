"""Binlog row-image decoder: table maps and row images in, exact values and SQL literals out.

The capture side stores every TABLE_MAP and rows event body untouched (DESIGN.md decision 4);
this module turns them into values when an image is needed. It is pure: no I/O, no server, no
global state beyond constant tables. Every function takes an event *body*: the bytes after the
19-byte common header, without the trailing CRC32.

Values are lossless, never "friendly": integers keep their signedness at the limits, DECIMAL
is an exact ``Decimal``, FLOAT is the exact float32 value, strings stay ``bytes`` (their charset
is the column's), BINARY(n) is re-padded with the 0x00 bytes the image strips, zero and partial
dates and negative TIME(n) keep their exact fields (small frozen types below), TIMESTAMP is UTC
seconds plus microseconds, ENUM an index, SET a bitmask, BIT and YEAR plain integers, MySQL's
binary JSON raw bytes, MariaDB's COMPRESSED columns inflated. ``sql_literal`` writes any of them
back byte for byte, and finds them again in a WHERE, in a session with ``time_zone='+00:00'``
and a permissive ``sql_mode``: the backtrack depends on that.

Not decodable from the binlog alone, and refused rather than guessed where it can be detected:
MariaDB's pre-10.1 TIME(n)/DATETIME(n)/TIMESTAMP(n) with n > 0 (``mysql56_temporal_format=OFF``;
the table map carries no fraction width, so only the rows event's length betrays them),
MariaDB's compressed binlog events, and types newer than this module. MySQL's partial JSON
updates (PARTIAL_UPDATE_ROWS) decode to full after-images: their diffs are applied to the
before-image (jsondiff.py). MySQL 9's VECTOR is a ``VectorValue``; the hidden generated column
of a functional index reads as ``HIDDEN`` (never written back).

Formats follow MySQL's ``libbinlogevents`` / ``sql/log_event.cc`` documentation and MariaDB's
``log_event_server.cc``, re-derived here (no code copied); facts measured on MariaDB 10.11 are in
shared/research/capture-feasibility.md and the fidelity test.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import importlib
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import IntEnum
from typing import Any

from proxy.changelog import _scan
from proxy.changelog.jsondiff import JsonDiffError, JsonDiffValue, apply_diffs, read_diffs


class DecodeError(ValueError):
    """An event body that this decoder cannot read exactly; the message says where and why."""


class FieldType(IntEnum):
    """Column type codes as they appear in a table map (MySQL's ``enum_field_types``)."""

    DECIMAL = 0
    TINY = 1
    SHORT = 2
    LONG = 3
    FLOAT = 4
    DOUBLE = 5
    NULL = 6
    TIMESTAMP = 7
    LONGLONG = 8
    INT24 = 9
    DATE = 10
    TIME = 11
    DATETIME = 12
    YEAR = 13
    NEWDATE = 14
    VARCHAR = 15
    BIT = 16
    TIMESTAMP2 = 17
    DATETIME2 = 18
    TIME2 = 19
    TYPED_ARRAY = 20
    BLOB_COMPRESSED = 140  # MariaDB: BLOB/TEXT ... COMPRESSED
    VARCHAR_COMPRESSED = 141  # MariaDB: VARCHAR(n) COMPRESSED
    VECTOR = 242
    JSON = 245
    NEWDECIMAL = 246
    ENUM = 247
    SET = 248
    TINY_BLOB = 249
    MEDIUM_BLOB = 250
    LONG_BLOB = 251
    BLOB = 252
    VAR_STRING = 253
    STRING = 254
    GEOMETRY = 255


class MetadataField(IntEnum):
    """Optional table-map metadata TLV types (``binlog_row_metadata``; MySQL 8 names)."""

    SIGNEDNESS = 1
    DEFAULT_CHARSET = 2
    COLUMN_CHARSET = 3
    COLUMN_NAME = 4
    SET_STR_VALUE = 5
    ENUM_STR_VALUE = 6
    GEOMETRY_TYPE = 7
    SIMPLE_PRIMARY_KEY = 8
    PRIMARY_KEY_WITH_PREFIX = 9
    ENUM_AND_SET_DEFAULT_CHARSET = 10
    ENUM_AND_SET_COLUMN_CHARSET = 11
    COLUMN_VISIBILITY = 12


# Rows event type codes: v1 is what MariaDB writes, v2 (with an extra-data field) is MySQL's.
WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1 = 23, 24, 25
WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2 = 30, 31, 32
_ROWS_EVENTS = {
    WRITE_ROWS_V1: ("insert", False),
    UPDATE_ROWS_V1: ("update", False),
    DELETE_ROWS_V1: ("delete", False),
    WRITE_ROWS_V2: ("insert", True),
    UPDATE_ROWS_V2: ("update", True),
    DELETE_ROWS_V2: ("delete", True),
}
PARTIAL_UPDATE_ROWS = 39  # MySQL's UPDATE with partial JSON values (see jsondiff.py)
_UNSUPPORTED_ROWS_EVENTS = {
    166: "MariaDB compressed WRITE_ROWS (log_bin_compress=ON); set log_bin_compress=OFF",
    167: "MariaDB compressed UPDATE_ROWS (log_bin_compress=ON); set log_bin_compress=OFF",
    168: "MariaDB compressed DELETE_ROWS (log_bin_compress=ON); set log_bin_compress=OFF",
    169: "MariaDB compressed WRITE_ROWS (log_bin_compress=ON); set log_bin_compress=OFF",
    170: "MariaDB compressed UPDATE_ROWS (log_bin_compress=ON); set log_bin_compress=OFF",
    171: "MariaDB compressed DELETE_ROWS (log_bin_compress=ON); set log_bin_compress=OFF",
}

BINARY_COLLATION = 63
_TABLE_ID_AND_FLAGS = 8  # table_id (6 bytes) + flags (2), the post-header of both event kinds


# -- value types ------------------------------------------------------------------------------
# Python's own types would lose information (zero dates, negative TIME with fractions, SET
# member order), so these small frozen types keep the exact stored fields.


class _Missing:
    """Marks a column that is not part of a (non-FULL) row image."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Hidden:
    """Marks a hidden generated column of a functional index (MySQL 8.0.13+): the table map
    lists it, no row image ever holds it, and nothing may write it (the server computes it)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HIDDEN"


HIDDEN: Any = _Hidden()
HIDDEN_COLUMN_PREFIX = "!hidden!"  # MySQL's name for them: !hidden!<index>!<part>!<n>
# Types a NOBLOB row image may leave out: a column of these types missing from an image says
# nothing about it being hidden.
_BLOB_LIKE = frozenset({FieldType.BLOB, FieldType.JSON, FieldType.GEOMETRY, FieldType.VECTOR,
                        FieldType.TINY_BLOB, FieldType.MEDIUM_BLOB, FieldType.LONG_BLOB,
                        FieldType.BLOB_COMPRESSED})


@dataclass(frozen=True, slots=True)
class DateValue:
    """DATE exactly as stored: zero (0000-00-00) and partial (2020-00-15) dates included."""

    year: int
    month: int
    day: int

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    def to_python(self) -> datetime.date | None:
        """The ``datetime.date``, or None for dates Python cannot hold (zero, partial)."""
        try:
            return datetime.date(self.year, self.month, self.day)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class TimeValue:
    """TIME(n) exactly as stored: a sign, up to 838 hours, and microseconds."""

    negative: bool
    hour: int
    minute: int
    second: int
    microsecond: int = 0

    def __str__(self) -> str:
        text = f"{'-' if self.negative else ''}{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        return f"{text}.{self.microsecond:06d}" if self.microsecond else text

    def to_timedelta(self) -> datetime.timedelta:
        span = datetime.timedelta(hours=self.hour, minutes=self.minute, seconds=self.second,
                                  microseconds=self.microsecond)
        return -span if self.negative else span


@dataclass(frozen=True, slots=True)
class DateTimeValue:
    """DATETIME(n) exactly as stored, zero and partial dates included."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    microsecond: int = 0

    def __str__(self) -> str:
        text = (f"{self.year:04d}-{self.month:02d}-{self.day:02d} "
                f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}")
        return f"{text}.{self.microsecond:06d}" if self.microsecond else text

    def to_python(self) -> datetime.datetime | None:
        """A naive ``datetime``, or None for values Python cannot hold (zero, partial)."""
        try:
            return datetime.datetime(self.year, self.month, self.day, self.hour, self.minute,
                                     self.second, self.microsecond)
        except ValueError:
            return None


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class TimestampValue:
    """TIMESTAMP(n): seconds since the epoch in UTC plus microseconds; 0/0 is the zero value."""

    seconds: int
    microsecond: int = 0

    @property
    def is_zero(self) -> bool:
        return self.seconds == 0 and self.microsecond == 0

    def to_datetime(self) -> datetime.datetime | None:
        """An aware UTC ``datetime``, or None for the zero value 0000-00-00 00:00:00."""
        if self.is_zero:
            return None
        return _EPOCH + datetime.timedelta(seconds=self.seconds, microseconds=self.microsecond)

    def __str__(self) -> str:
        moment = self.to_datetime()
        text = "0000-00-00 00:00:00" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")
        return f"{text}.{self.microsecond:06d}" if self.microsecond else text


@dataclass(frozen=True, slots=True)
class EnumValue:
    """ENUM: the stored index (0 is the invalid-value ''), and its member's raw bytes.

    ``member`` is None for index 0, or when the table map carried no member names."""

    index: int
    member: bytes | None


@dataclass(frozen=True, slots=True)
class SetValue:
    """SET: the stored bitmask and its members' raw bytes in definition order."""

    mask: int
    members: tuple[bytes, ...]


@dataclass(frozen=True, slots=True, eq=False)
class JsonValue:
    """MySQL's binary JSON (type 245) as stored; ``to_text()`` renders it as JSON text.

    ``text`` is set instead of ``raw`` for a document rebuilt from a partial update's diffs
    (jsondiff.py). Two values are equal when their documents print the same (their raw bytes
    may differ: MySQL updates binary JSON in place, leaving gaps). MariaDB's JSON is LONGTEXT
    and decodes to plain ``bytes`` instead."""

    raw: bytes
    text: str | None = None

    def to_text(self) -> str:
        return self.text if self.text is not None else json_binary_to_text(self.raw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JsonValue):
            return NotImplemented
        if self.text is None and other.text is None and self.raw == other.raw:
            return True
        return self.to_text() == other.to_text()

    def __hash__(self) -> int:
        return hash(self.to_text())


@dataclass(frozen=True, slots=True)
class VectorValue:
    """MySQL 9's VECTOR: the stored bytes, float32 little-endian, one per dimension."""

    raw: bytes

    def floats(self) -> tuple[float, ...]:
        return struct.unpack(f"<{len(self.raw) // 4}f", self.raw)

    def __str__(self) -> str:
        # As VECTOR_TO_STRING prints it: 6 significant digits in exponent form.
        return "[" + ",".join(f"{value:.5e}" for value in self.floats()) + "]"



# -- schema types -----------------------------------------------------------------------------

_NUMERIC_TYPES = frozenset({
    FieldType.TINY, FieldType.SHORT, FieldType.INT24, FieldType.LONG, FieldType.LONGLONG,
    FieldType.NEWDECIMAL, FieldType.FLOAT, FieldType.DOUBLE,
})
_CHARACTER_TYPES = frozenset({
    FieldType.STRING, FieldType.VAR_STRING, FieldType.VARCHAR, FieldType.BLOB,
    FieldType.VARCHAR_COMPRESSED, FieldType.BLOB_COMPRESSED,
})
_TEMPORAL_FSP_TYPES = frozenset({FieldType.TIME2, FieldType.DATETIME2, FieldType.TIMESTAMP2})


def _string_real_type(metadata: int) -> tuple[int, int]:
    """(real type, max byte length) of a MYSQL_TYPE_STRING column from its 2 metadata bytes.

    The first byte is the real type (STRING, ENUM or SET); lengths above 255 borrow its bits
    4-5, stored inverted, as Field_string::do_save_field_metadata does."""
    high, low = metadata >> 8, metadata & 0xFF
    if high and (high & 0x30) != 0x30:
        return high | 0x30, low | (((high & 0x30) ^ 0x30) << 4)
    return high, low


@dataclass(frozen=True, slots=True)
class ColumnDef:
    """One column of a table map.

    ``type`` is the binlog type code; ``metadata`` the type's metadata as MySQL reads it
    (little-endian, except big-endian for STRING and NEWDECIMAL); ``charset`` a collation id
    (None when the table map has none for this column); ``members`` the ENUM or SET member
    strings as raw bytes, in definition order."""

    name: str | None
    type: int
    metadata: int = 0
    nullable: bool = True
    unsigned: bool = False
    charset: int | None = None
    members: tuple[bytes, ...] = ()
    geometry_type: int | None = None
    visible: bool = True

    @property
    def real_type(self) -> int:
        """The type hidden behind MYSQL_TYPE_STRING (ENUM, SET or STRING); else ``type``."""
        if self.type == FieldType.STRING:
            return _string_real_type(self.metadata)[0]
        return self.type

    @property
    def length(self) -> int:
        """Maximum byte length of CHAR/BINARY/VARCHAR/VARBINARY (0 for other types)."""
        if self.type == FieldType.STRING:
            return _string_real_type(self.metadata)[1]
        if self.type in (FieldType.VARCHAR, FieldType.VAR_STRING, FieldType.VARCHAR_COMPRESSED):
            return self.metadata
        return 0

    @property
    def pack_length(self) -> int:
        """Bytes of the length prefix of BLOB/TEXT/GEOMETRY/JSON; bytes of an ENUM/SET value."""
        if self.type in (FieldType.BLOB, FieldType.GEOMETRY, FieldType.JSON,
                         FieldType.BLOB_COMPRESSED):
            return self.metadata
        if self.real_type in (FieldType.ENUM, FieldType.SET):
            return self.metadata & 0xFF
        return 0

    @property
    def precision(self) -> int:
        return self.metadata >> 8 if self.type == FieldType.NEWDECIMAL else 0

    @property
    def scale(self) -> int:
        return self.metadata & 0xFF if self.type == FieldType.NEWDECIMAL else 0

    @property
    def fsp(self) -> int:
        """Fractional-second digits of TIME(n)/DATETIME(n)/TIMESTAMP(n)."""
        return self.metadata if self.type in _TEMPORAL_FSP_TYPES else 0

    @property
    def bits(self) -> int:
        """Width of a BIT(n) column."""
        return (self.metadata >> 8) * 8 + (self.metadata & 0xFF) if self.type == FieldType.BIT else 0

    @property
    def is_binary(self) -> bool:
        return self.charset == BINARY_COLLATION


@dataclass(frozen=True)
class TableSchema:
    """A table map: the layout every row image of this table id is decoded with.

    ``primary_key`` holds column indexes, ``primary_key_prefixes`` the matching prefix lengths
    (0 = whole column). ``generated`` names the generated columns: the binlog does not mark
    them, so the capture side fills it from information_schema (``with_generated``)."""

    schema: str
    table: str
    table_id: int
    columns: tuple[ColumnDef, ...]
    primary_key: tuple[int, ...] = ()
    primary_key_prefixes: tuple[int, ...] = ()
    generated: frozenset[str] = frozenset()
    flags: int = 0
    _readers: tuple[Callable, ...] = field(init=False, repr=False, compare=False)
    _full_images: Callable | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_readers", tuple(_make_reader(c) for c in self.columns))

    @property
    def column_names(self) -> tuple[str | None, ...]:
        return tuple(c.name for c in self.columns)

    def with_generated(self, names: frozenset[str] | set[str]) -> TableSchema:
        """This schema with its generated columns named (they must not be written back)."""
        return replace(self, generated=frozenset(names))

    def is_generated(self, index: int) -> bool:
        name = self.columns[index].name
        return name in self.generated or (name or "").startswith(HIDDEN_COLUMN_PREFIX)


@dataclass(frozen=True, slots=True)
class RowChange:
    """One row change. Images are tuples aligned with ``TableSchema.columns`` (None = SQL NULL,
    ``MISSING`` = not in the image); ``before`` is None for inserts, ``after`` for deletes."""

    kind: str  # 'insert' | 'update' | 'delete'
    before: tuple | None
    after: tuple | None


# -- low-level readers ------------------------------------------------------------------------


def read_packed_int(buf: bytes, pos: int) -> tuple[int, int]:
    """A packed ("length-encoded") integer at ``pos``: (value, position after it)."""
    first = buf[pos]
    if first < 251:
        return first, pos + 1
    if first == 252:
        return buf[pos + 1] | buf[pos + 2] << 8, pos + 3
    if first == 253:
        return int.from_bytes(buf[pos + 1:pos + 4], "little"), pos + 4
    if first == 254:
        return int.from_bytes(buf[pos + 1:pos + 9], "little"), pos + 9
    raise DecodeError(f"invalid packed integer prefix 0x{first:02x} at offset {pos}")


def _msb_bitmap(data: bytes, count: int) -> list[bool]:
    """A bitmap whose first bit is the most significant bit of the first byte."""
    return [bool(data[i >> 3] & (0x80 >> (i & 7))) for i in range(min(count, len(data) * 8))]


# -- table map --------------------------------------------------------------------------------

_METADATA_SIZE = {
    FieldType.FLOAT: 1, FieldType.DOUBLE: 1, FieldType.BLOB: 1, FieldType.GEOMETRY: 1,
    FieldType.JSON: 1, FieldType.TIMESTAMP2: 1, FieldType.DATETIME2: 1, FieldType.TIME2: 1,
    FieldType.VARCHAR: 2, FieldType.VAR_STRING: 2, FieldType.BIT: 2, FieldType.NEWDECIMAL: 2,
    FieldType.STRING: 2, FieldType.ENUM: 2, FieldType.SET: 2,
    FieldType.VARCHAR_COMPRESSED: 2, FieldType.BLOB_COMPRESSED: 1,
    FieldType.VECTOR: 1,  # MySQL 9: the byte length of the value's length prefix (4)
}
_BIG_ENDIAN_METADATA = frozenset({FieldType.STRING, FieldType.NEWDECIMAL, FieldType.ENUM,
                                  FieldType.SET})
_NO_METADATA = frozenset({
    FieldType.DECIMAL, FieldType.TINY, FieldType.SHORT, FieldType.LONG, FieldType.NULL,
    FieldType.TIMESTAMP, FieldType.LONGLONG, FieldType.INT24, FieldType.DATE, FieldType.TIME,
    FieldType.DATETIME, FieldType.YEAR, FieldType.NEWDATE,
})


def _split_metadata(types: bytes, block: bytes) -> list[int]:
    """Each column's metadata value from the table map's metadata block."""
    values = []
    pos = 0
    for code in types:
        size = _METADATA_SIZE.get(code)
        if size is None:
            if code not in _NO_METADATA:
                raise DecodeError(f"column type {code} has metadata of unknown size; "
                                  "the table map cannot be read")
            values.append(0)
            continue
        chunk = block[pos:pos + size]
        if len(chunk) != size:
            raise DecodeError("table map metadata block is shorter than its column types need")
        order = "big" if code in _BIG_ENDIAN_METADATA else "little"
        values.append(int.from_bytes(chunk, order))
        pos += size
    if pos != len(block):
        raise DecodeError(f"table map metadata block has {len(block) - pos} unexpected bytes")
    return values


def _read_optional_fields(body: bytes, pos: int) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    while pos < len(body):
        kind = body[pos]
        length, pos = read_packed_int(body, pos + 1)
        fields[kind] = body[pos:pos + length]
        pos += length
    return fields


def _packed_ints(data: bytes) -> list[int]:
    values, pos = [], 0
    while pos < len(data):
        value, pos = read_packed_int(data, pos)
        values.append(value)
    return values


def _string_lists(data: bytes) -> list[tuple[bytes, ...]]:
    """SET_STR_VALUE / ENUM_STR_VALUE: per column, a count and that many packed strings."""
    lists, pos = [], 0
    while pos < len(data):
        count, pos = read_packed_int(data, pos)
        members = []
        for _ in range(count):
            length, pos = read_packed_int(data, pos)
            members.append(bytes(data[pos:pos + length]))
            pos += length
        lists.append(tuple(members))
    return lists


def _charsets(fields: dict[int, bytes], default_kind: int, per_column_kind: int,
              count: int) -> list[int | None]:
    """Collation ids of ``count`` columns from a DEFAULT_CHARSET or COLUMN_CHARSET field.

    DEFAULT_CHARSET pairs name columns by their index among these ``count`` columns."""
    if per_column_kind in fields:
        values: list[int | None] = list(_packed_ints(fields[per_column_kind]))
        return (values + [None] * count)[:count]
    if default_kind in fields:
        numbers = _packed_ints(fields[default_kind])
        result: list[int | None] = [numbers[0]] * count
        for i in range(1, len(numbers) - 1, 2):
            if numbers[i] < count:
                result[numbers[i]] = numbers[i + 1]
        return result
    return [None] * count


@dataclass(frozen=True)
class _Layout:
    """The fixed part of a table map, before the flavor-dependent optional fields are applied."""

    table_id: int
    flags: int
    schema: str
    table: str
    types: bytes
    metadata: list[int]
    null_bits: int
    fields: dict[int, bytes]

    @property
    def real_types(self) -> list[int]:
        return [_string_real_type(m)[0] if t == FieldType.STRING else t
                for t, m in zip(self.types, self.metadata, strict=True)]

    def indexes(self, kinds: frozenset[int] | set[int], real: bool = True) -> list[int]:
        """Columns whose (real, or else binlog) type is one of ``kinds``."""
        codes = self.real_types if real else self.types
        return [i for i, code in enumerate(codes) if code in kinds]


def _read_layout(body: bytes) -> _Layout:
    table_id = int.from_bytes(body[0:6], "little")
    flags = body[6] | body[7] << 8
    pos = _TABLE_ID_AND_FLAGS
    schema_len = body[pos]
    schema = body[pos + 1:pos + 1 + schema_len].decode("utf-8", "surrogateescape")
    pos += schema_len + 2
    table_len = body[pos]
    table = body[pos + 1:pos + 1 + table_len].decode("utf-8", "surrogateescape")
    pos += table_len + 2
    count, pos = read_packed_int(body, pos)
    types = body[pos:pos + count]
    pos += count
    meta_len, pos = read_packed_int(body, pos)
    metadata = _split_metadata(types, body[pos:pos + meta_len])
    pos += meta_len
    null_len = (count + 7) // 8
    null_bits = int.from_bytes(body[pos:pos + null_len], "little")
    fields = _read_optional_fields(body, pos + null_len)
    return _Layout(table_id, flags, schema, table, types, metadata, null_bits, fields)


# Which columns own a SIGNEDNESS bit and a charset entry differs between the servers: MariaDB
# gives YEAR a bit (its Field_year is an always-unsigned Field_num) and GEOMETRY a charset (63);
# MySQL does neither.
_MARIADB_NUMERIC = _NUMERIC_TYPES | {FieldType.YEAR}
_MARIADB_CHARACTER = _CHARACTER_TYPES | {FieldType.GEOMETRY}


def _numeric_indexes(layout: _Layout, flavor: str) -> list[int]:
    return layout.indexes(_MARIADB_NUMERIC if flavor == "mariadb" else _NUMERIC_TYPES,
                          real=False)


def _character_indexes(layout: _Layout, flavor: str) -> list[int]:
    return layout.indexes(_MARIADB_CHARACTER if flavor == "mariadb" else _CHARACTER_TYPES)


def _signedness_fits(layout: _Layout, flavor: str) -> bool:
    """Whether SIGNEDNESS has the size this flavor's rule gives, zero padding bits and (for
    MariaDB) every YEAR column marked unsigned."""
    data = layout.fields.get(MetadataField.SIGNEDNESS, b"")
    numeric = _numeric_indexes(layout, flavor)
    if len(data) != (len(numeric) + 7) // 8:
        return False
    bits = _msb_bitmap(data, len(data) * 8)
    years = [bit for i, bit in zip(numeric, bits, strict=False)
             if layout.types[i] == FieldType.YEAR]
    return not any(bits[len(numeric):]) and all(years)


def _charsets_fit(layout: _Layout, flavor: str) -> bool:
    """Whether the charset field can describe exactly this flavor's character columns."""
    n_char = len(_character_indexes(layout, flavor))
    if MetadataField.COLUMN_CHARSET in layout.fields:
        return len(_packed_ints(layout.fields[MetadataField.COLUMN_CHARSET])) == n_char
    if MetadataField.DEFAULT_CHARSET in layout.fields:
        pairs = _packed_ints(layout.fields[MetadataField.DEFAULT_CHARSET])[1::2]
        return all(i < n_char for i in pairs)
    return True


def _infer_flavor(layout: _Layout) -> str:
    if MetadataField.COLUMN_VISIBILITY in layout.fields:
        return "mysql"  # only MySQL 8.0.23+ writes it (with binlog_row_metadata=FULL)
    if FieldType.YEAR in layout.types and MetadataField.SIGNEDNESS in layout.fields \
            and not _signedness_fits(layout, "mariadb"):
        return "mysql"
    if FieldType.GEOMETRY in layout.types and not _charsets_fit(layout, "mariadb"):
        return "mysql"
    return "mariadb"


def infer_flavor(body: bytes) -> str:
    """'mariadb' or 'mysql': which server wrote this TABLE_MAP body, as far as decoding cares.

    MySQL 8.0.23+ is recognised by its COLUMN_VISIBILITY field; otherwise the SIGNEDNESS and
    charset fields are checked against MariaDB's rule. Layouts both rules read the same way
    (no YEAR or GEOMETRY column) come out as 'mariadb', harmlessly. The capture side knows its
    server and should pass the flavor to ``parse_table_map`` instead of relying on this."""
    return _infer_flavor(_read_layout(bytes(body)))


def parse_table_map(body: bytes, flavor: str | None = None) -> TableSchema:
    """Parse a TABLE_MAP_EVENT body into a ``TableSchema``.

    ``flavor`` ('mariadb' or 'mysql') settles the two layout differences between the servers'
    optional metadata (see ``infer_flavor``, used when it is None)."""
    if flavor not in (None, "mariadb", "mysql"):
        raise ValueError(f"flavor must be 'mariadb', 'mysql' or None, not {flavor!r}")
    return _parse_table_map(bytes(body), flavor)


@functools.lru_cache(maxsize=1024)
def _parse_table_map(body: bytes, flavor: str | None) -> TableSchema:
    # Cached: the capture side re-reads the same table map for every rows event it decodes,
    # and a TableSchema (with its compiled readers) is immutable, so it can be shared.
    try:
        layout = _read_layout(body)
        columns = _build_columns(layout, flavor or _infer_flavor(layout))
    except (IndexError, struct.error) as exc:
        raise DecodeError(f"truncated or malformed table map ({exc})") from exc
    primary_key, prefixes = _primary_key(layout.fields)
    return TableSchema(layout.schema, layout.table, layout.table_id, tuple(columns),
                       primary_key, prefixes, flags=layout.flags)


def _build_columns(layout: _Layout, flavor: str) -> list[ColumnDef]:
    fields, count = layout.fields, len(layout.types)
    unsigned = _unsigned_flags(layout, flavor)
    charsets = _column_charsets(layout, flavor)
    members = _members(layout)
    geometry_types = dict(zip(layout.indexes({FieldType.GEOMETRY}, real=False),
                              _packed_ints(fields.get(MetadataField.GEOMETRY_TYPE, b"")),
                              strict=False))
    names = [n.decode("utf-8", "surrogateescape")
             for n in _string_list_flat(fields.get(MetadataField.COLUMN_NAME, b""))]
    visible = _msb_bitmap(fields.get(MetadataField.COLUMN_VISIBILITY, b""), count)
    return [
        ColumnDef(
            name=names[i] if i < len(names) else None,
            type=layout.types[i],
            metadata=layout.metadata[i],
            nullable=bool(layout.null_bits >> i & 1),
            unsigned=unsigned.get(i, False),
            charset=charsets.get(i),
            members=members.get(i, ()),
            geometry_type=geometry_types.get(i),
            visible=visible[i] if i < len(visible) else True,
        )
        for i in range(count)
    ]


def _unsigned_flags(layout: _Layout, flavor: str) -> dict[int, bool]:
    """SIGNEDNESS: one bit per numeric column, most significant bit first; set = unsigned."""
    numeric = _numeric_indexes(layout, flavor)
    bits = _msb_bitmap(layout.fields.get(MetadataField.SIGNEDNESS, b""), len(numeric))
    return dict(zip(numeric, bits, strict=False))


def _column_charsets(layout: _Layout, flavor: str) -> dict[int, int | None]:
    """Collation ids of character columns, and (from separate fields) of ENUM/SET columns."""
    char = _character_indexes(layout, flavor)
    enum_or_set = layout.indexes({FieldType.ENUM, FieldType.SET})
    return {
        **dict(zip(char, _charsets(layout.fields, MetadataField.DEFAULT_CHARSET,
                                   MetadataField.COLUMN_CHARSET, len(char)), strict=True)),
        **dict(zip(enum_or_set, _charsets(layout.fields, MetadataField.ENUM_AND_SET_DEFAULT_CHARSET,
                                          MetadataField.ENUM_AND_SET_COLUMN_CHARSET,
                                          len(enum_or_set)), strict=True)),
    }


def _members(layout: _Layout) -> dict[int, tuple[bytes, ...]]:
    """ENUM and SET member strings, raw bytes, from ENUM_STR_VALUE / SET_STR_VALUE."""
    members: dict[int, tuple[bytes, ...]] = {}
    for kind, code in ((FieldType.ENUM, MetadataField.ENUM_STR_VALUE),
                       (FieldType.SET, MetadataField.SET_STR_VALUE)):
        members.update(zip(layout.indexes({kind}), _string_lists(layout.fields.get(code, b"")),
                           strict=False))
    return members


def _string_list_flat(data: bytes) -> list[bytes]:
    """COLUMN_NAME: one packed-length string per column."""
    names, pos = [], 0
    while pos < len(data):
        length, pos = read_packed_int(data, pos)
        names.append(data[pos:pos + length])
        pos += length
    return names


def _primary_key(fields: dict[int, bytes]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if MetadataField.SIMPLE_PRIMARY_KEY in fields:
        key = tuple(_packed_ints(fields[MetadataField.SIMPLE_PRIMARY_KEY]))
        return key, (0,) * len(key)
    if MetadataField.PRIMARY_KEY_WITH_PREFIX in fields:
        pairs = _packed_ints(fields[MetadataField.PRIMARY_KEY_WITH_PREFIX])
        return tuple(pairs[0::2]), tuple(pairs[1::2])
    return (), ()


# -- value readers ----------------------------------------------------------------------------
# A reader takes (body, offset) and returns (value, offset after the value). One is built per
# column when the TableSchema is created, so the per-value work is a call and a few slices.

Reader = Callable[[bytes, int], tuple[Any, int]]


def _fixed_reader(fmt: str) -> Reader:
    unpack = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        return unpack(buf, pos)[0], pos + size

    return read


def _int24_reader(signed: bool) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[int, int]:
        return int.from_bytes(buf[pos:pos + 3], "little", signed=signed), pos + 3

    return read


def _read_year(buf: bytes, pos: int) -> tuple[int, int]:
    stored = buf[pos]
    return (stored + 1900 if stored else 0), pos + 1


def _read_null(buf: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _bit_reader(column: ColumnDef) -> Reader:
    size = (column.metadata >> 8) + (1 if column.metadata & 0xFF else 0)

    def read(buf: bytes, pos: int) -> tuple[int, int]:
        return int.from_bytes(buf[pos:pos + size], "big"), pos + size

    return read


_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def _decimal_reader(precision: int, scale: int) -> Reader:
    """DECIMAL(p,s) in MySQL's binary format: groups of 9 digits in 4 big-endian bytes, a
    shorter group for the leftover digits at each end; sign in the top bit (set = positive),
    negative values stored with every bit inverted."""
    intg0, intg_rest = divmod(precision - scale, 9)
    frac0, frac_rest = divmod(scale, 9)
    lead, trail = _DIG2BYTES[intg_rest], _DIG2BYTES[frac_rest]
    size = lead + 4 * (intg0 + frac0) + trail
    sign_bit = 1 << (8 * size - 1)
    negative_mask = (1 << (8 * size)) - 1 ^ sign_bit  # undo the inversion, keep the sign flip
    groups = struct.Struct(f">{intg0 + frac0}I").unpack_from
    trail_at = lead + 4 * (intg0 + frac0)
    trail_scale = 10 ** frac_rest

    def read(buf: bytes, pos: int) -> tuple[Decimal, int]:
        end = pos + size
        stored = int.from_bytes(buf[pos:end], "big")
        negative = not stored & sign_bit
        stored ^= negative_mask if negative else sign_bit
        raw = stored.to_bytes(size, "big")
        digits = int.from_bytes(raw[:lead], "big")
        for group in groups(raw, lead):
            digits = digits * 1_000_000_000 + group
        if trail:
            digits = digits * trail_scale + int.from_bytes(raw[trail_at:], "big")
        text = str(digits)
        if scale:
            text = text.rjust(scale + 1, "0")
            text = f"{text[:-scale]}.{text[-scale:]}"
        return Decimal(f"-{text}" if negative else text), end

    return read


def _read_date(buf: bytes, pos: int) -> tuple[DateValue, int]:
    packed = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
    return DateValue(packed >> 9, (packed >> 5) & 15, packed & 31), pos + 3


_FRACTION_SCALE = (1, 10000, 100, 1)  # by fraction bytes: what one stored unit is in µs


def _time2_reader(fsp: int) -> Reader:
    """TIME(n), MySQL 5.6 format: a big-endian offset-binary number whose absolute value is
    (hour<<12 | minute<<6 | second) followed by the fraction bytes; negative values are the
    arithmetic negation of the whole, which is what my_time_packed_from_binary undoes."""
    frac_bytes = (fsp + 1) // 2
    size = 3 + frac_bytes
    shift = 8 * frac_bytes
    offset = 0x800000 << shift
    mask = (1 << shift) - 1
    scale = _FRACTION_SCALE[frac_bytes]

    def read(buf: bytes, pos: int) -> tuple[TimeValue, int]:
        value = int.from_bytes(buf[pos:pos + size], "big") - offset
        negative = value < 0
        if negative:
            value = -value
        hms = value >> shift
        return (TimeValue(negative, (hms >> 12) & 0x3FF, (hms >> 6) & 0x3F, hms & 0x3F,
                          (value & mask) * scale), pos + size)

    return read


def _datetime2_reader(fsp: int) -> Reader:
    """DATETIME(n), MySQL 5.6 format: 5 big-endian bytes (sign bit, year*13+month, day, hour,
    minute, second) and the fraction bytes."""
    frac_bytes = (fsp + 1) // 2
    size = 5 + frac_bytes
    scale = _FRACTION_SCALE[frac_bytes]

    def read(buf: bytes, pos: int) -> tuple[DateTimeValue, int]:
        packed = int.from_bytes(buf[pos:pos + 5], "big") - 0x8000000000
        fraction = int.from_bytes(buf[pos + 5:pos + size], "big") * scale if frac_bytes else 0
        ymd = packed >> 17
        year, month = divmod(ymd >> 5, 13)
        hms = packed & 0x1FFFF
        return (DateTimeValue(year, month, ymd & 31, hms >> 12, (hms >> 6) & 0x3F, hms & 0x3F,
                              fraction), pos + size)

    return read


def _timestamp2_reader(fsp: int) -> Reader:
    """TIMESTAMP(n), MySQL 5.6 format: big-endian UTC seconds and the fraction bytes."""
    frac_bytes = (fsp + 1) // 2
    size = 4 + frac_bytes
    scale = _FRACTION_SCALE[frac_bytes]

    def read(buf: bytes, pos: int) -> tuple[TimestampValue, int]:
        seconds = int.from_bytes(buf[pos:pos + 4], "big")
        fraction = int.from_bytes(buf[pos + 4:pos + size], "big") * scale if frac_bytes else 0
        return TimestampValue(seconds, fraction), pos + size

    return read


_unpack_u32 = struct.Struct("<I").unpack_from
_unpack_u64 = struct.Struct("<Q").unpack_from


def _read_old_timestamp(buf: bytes, pos: int) -> tuple[TimestampValue, int]:
    return TimestampValue(_unpack_u32(buf, pos)[0]), pos + 4


def _read_old_datetime(buf: bytes, pos: int) -> tuple[DateTimeValue, int]:
    """Pre-5.6 DATETIME: the decimal number YYYYMMDDhhmmss as a little-endian uint64."""
    date_part, time_part = divmod(_unpack_u64(buf, pos)[0], 1_000_000)
    year, month_day = divmod(date_part, 10000)
    hour, minute_second = divmod(time_part, 10000)
    return (DateTimeValue(year, *divmod(month_day, 100), hour, *divmod(minute_second, 100)),
            pos + 8)


def _read_old_time(buf: bytes, pos: int) -> tuple[TimeValue, int]:
    """Pre-5.6 TIME: the signed decimal number hhmmss as a little-endian int24."""
    number = int.from_bytes(buf[pos:pos + 3], "little", signed=True)
    hour, minute_second = divmod(abs(number), 10000)
    return TimeValue(number < 0, hour, *divmod(minute_second, 100)), pos + 3


def _length_prefixed_reader(prefix: int) -> Reader:
    if prefix == 1:
        def read1(buf: bytes, pos: int) -> tuple[bytes, int]:
            end = pos + 1 + buf[pos]
            return buf[pos + 1:end], end

        return read1
    if prefix == 2:
        def read2(buf: bytes, pos: int) -> tuple[bytes, int]:
            end = pos + 2 + (buf[pos] | buf[pos + 1] << 8)
            return buf[pos + 2:end], end

        return read2

    def read(buf: bytes, pos: int) -> tuple[bytes, int]:
        start = pos + prefix
        end = start + int.from_bytes(buf[pos:start], "little")
        return buf[start:end], end

    return read


def _padded_reader(prefix: int, length: int) -> Reader:
    """BINARY(n) (and MariaDB's UUID/INET6): the image strips trailing 0x00, pad them back."""
    inner = _length_prefixed_reader(prefix)

    def read(buf: bytes, pos: int) -> tuple[bytes, int]:
        value, end = inner(buf, pos)
        return value.ljust(length, b"\0"), end

    return read


def _compressed_reader(prefix: int) -> Reader:
    """MariaDB's COMPRESSED columns: behind the length, a header byte, then either the value
    as is (header 0) or deflate data (header 0x80, +8 when there is no zlib wrapper, + the
    number of bytes of the big-endian original length that follows; see field_comp.cc). The
    value comes back uncompressed: written back, the server compresses it again, as it does
    for any client."""
    inner = _length_prefixed_reader(prefix)

    def read(buf: bytes, pos: int) -> tuple[bytes, int]:
        stored, end = inner(buf, pos)
        if not stored:
            return b"", end
        header = stored[0]
        if not header & 0x80:
            return stored[1:], end
        length_bytes = header & 0x07
        original = int.from_bytes(stored[1:1 + length_bytes], "big")
        window = -zlib.MAX_WBITS if header & 0x08 else zlib.MAX_WBITS
        value = zlib.decompress(stored[1 + length_bytes:], window)
        if len(value) != original:
            raise DecodeError(f"compressed column value inflates to {len(value)} bytes, "
                              f"its header says {original}")
        return value, end

    return read


def _enum_reader(column: ColumnDef) -> Reader:
    size = column.pack_length
    members = column.members

    def read(buf: bytes, pos: int) -> tuple[EnumValue, int]:
        index = int.from_bytes(buf[pos:pos + size], "little")
        member = members[index - 1] if 0 < index <= len(members) else None
        return EnumValue(index, member), pos + size

    return read


def _set_reader(column: ColumnDef) -> Reader:
    size = column.pack_length
    members = column.members

    def read(buf: bytes, pos: int) -> tuple[SetValue, int]:
        mask = int.from_bytes(buf[pos:pos + size], "little")
        chosen = tuple(m for i, m in enumerate(members) if mask >> i & 1)
        return SetValue(mask, chosen), pos + size

    return read


def _json_reader(prefix: int) -> Reader:
    inner = _length_prefixed_reader(prefix)

    def read(buf: bytes, pos: int) -> tuple[JsonValue, int]:
        raw, end = inner(buf, pos)
        return JsonValue(raw), end

    return read


def _vector_reader(prefix: int) -> Reader:
    inner = _length_prefixed_reader(prefix)

    def read(buf: bytes, pos: int) -> tuple[VectorValue, int]:
        raw, end = inner(buf, pos)
        return VectorValue(raw), end

    return read


def _unsupported_reader(column: ColumnDef, why: str) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        raise DecodeError(f"column {column.name!r} (type {column.type}): {why}")

    return read


_INT_FORMATS = {
    FieldType.TINY: ("<b", "<B"),
    FieldType.SHORT: ("<h", "<H"),
    FieldType.LONG: ("<i", "<I"),
    FieldType.LONGLONG: ("<q", "<Q"),
}


def _inline_plan(column: ColumnDef) -> tuple[str, Any] | None:
    """How the common, simple columns are read: ('struct', format) for fixed-size numbers,
    ('prefixed', n) for strings behind an n-byte length; None for everything else."""
    code = column.type
    if code in _INT_FORMATS:
        return "struct", _INT_FORMATS[code][column.unsigned]
    if code in (FieldType.FLOAT, FieldType.DOUBLE):
        return "struct", "<f" if code == FieldType.FLOAT else "<d"
    if code in (FieldType.VARCHAR, FieldType.VAR_STRING):
        return "prefixed", 1 if column.metadata < 256 else 2
    if code == FieldType.STRING:
        real_type, length = _string_real_type(column.metadata)
        if real_type == FieldType.STRING and not column.is_binary:
            return "prefixed", 1 if length < 256 else 2
    if code in (FieldType.BLOB, FieldType.GEOMETRY) and column.metadata in (1, 2):
        return "prefixed", column.metadata
    return None


def _make_reader(column: ColumnDef) -> Reader:
    """The reader for one column's values, chosen once per table map."""
    plan = _inline_plan(column)
    if plan is not None:
        kind, arg = plan
        return _fixed_reader(arg) if kind == "struct" else _length_prefixed_reader(arg)
    code = column.type
    simple = {
        FieldType.INT24: lambda: _int24_reader(not column.unsigned),
        FieldType.YEAR: lambda: _read_year,
        FieldType.NULL: lambda: _read_null,
        FieldType.BIT: lambda: _bit_reader(column),
        FieldType.NEWDECIMAL: lambda: _decimal_reader(column.precision, column.scale),
        FieldType.DATE: lambda: _read_date,
        FieldType.NEWDATE: lambda: _read_date,
        FieldType.TIME2: lambda: _time2_reader(column.fsp),
        FieldType.DATETIME2: lambda: _datetime2_reader(column.fsp),
        FieldType.TIMESTAMP2: lambda: _timestamp2_reader(column.fsp),
        FieldType.TIMESTAMP: lambda: _read_old_timestamp,
        FieldType.DATETIME: lambda: _read_old_datetime,
        FieldType.TIME: lambda: _read_old_time,
        FieldType.BLOB: lambda: _length_prefixed_reader(column.metadata),
        FieldType.GEOMETRY: lambda: _length_prefixed_reader(column.metadata),
        FieldType.JSON: lambda: _json_reader(column.metadata),
        FieldType.VECTOR: lambda: _vector_reader(column.metadata),
        FieldType.VARCHAR_COMPRESSED: lambda: _compressed_reader(
            1 if column.metadata < 256 else 2),
        FieldType.BLOB_COMPRESSED: lambda: _compressed_reader(column.metadata),
    }
    if code in simple:
        return simple[code]()
    if code == FieldType.STRING:
        return _string_column_reader(column)
    return _unsupported_reader(column, "this type cannot be decoded from a binlog image")


def _string_column_reader(column: ColumnDef) -> Reader:
    real_type, length = _string_real_type(column.metadata)
    if real_type == FieldType.ENUM:
        return _enum_reader(column)
    if real_type == FieldType.SET:
        return _set_reader(column)
    prefix = 1 if length < 256 else 2
    if column.is_binary:
        return _padded_reader(prefix, length)
    return _length_prefixed_reader(prefix)


# -- rows events ------------------------------------------------------------------------------


def rows_event_table_id(body: bytes) -> int:
    """The table id a rows event refers to (its table map must precede it)."""
    return int.from_bytes(body[0:6], "little")


def decode_rows(event_type: int, body: bytes, table: TableSchema) -> list[RowChange]:
    """Decode a WRITE/UPDATE/DELETE rows event body (v1 or v2) with its table map.

    Returns one ``RowChange`` per row, in event order."""
    kind, images = decode_images(event_type, body, table)
    if kind == "insert":
        return [RowChange("insert", None, image) for image in images]
    if kind == "delete":
        return [RowChange("delete", image, None) for image in images]
    return [RowChange("update", before, after)
            for before, after in zip(images[0::2], images[1::2], strict=True)]


def decode_images(event_type: int, body: bytes, table: TableSchema) -> tuple[str, list[tuple]]:
    """The row images of a WRITE/UPDATE/DELETE rows event (v1 or v2), without ``RowChange``s.

    Returns the kind ('insert', 'update' or 'delete') and the images in event order; an update
    contributes its before- and after-image, in that order (before images at even positions).
    Same values and errors as ``decode_rows``, which is built on it; bulk readers (the backtrack
    planner folds millions of rows) use it to skip an object per row."""
    if event_type == PARTIAL_UPDATE_ROWS:
        kind, has_extra = "update", True
    elif event_type not in _ROWS_EVENTS:
        why = _UNSUPPORTED_ROWS_EVENTS.get(event_type, "not a rows event")
        raise DecodeError(f"event type {event_type}: {why}")
    else:
        kind, has_extra = _ROWS_EVENTS[event_type]
    # The table id is not checked against the map's: the change store keeps one table map per
    # layout whatever id the server gave it (store.table_map_id), and the server gives a table a
    # new id when it reopens it (a DROP and CREATE, FLUSH TABLES, a full table cache), so a
    # stored map and a later rows event of the same table may carry different ids. The column
    # count and the image lengths are checked instead.
    body = bytes(body)
    try:
        if event_type == PARTIAL_UPDATE_ROWS:
            return kind, _decode_partial_update(body, table)
        return kind, _decode_images(kind, has_extra, body, table)
    except JsonDiffError as exc:
        raise DecodeError(f"partial JSON update of {table.schema}.{table.table}: {exc}") from exc
    except (IndexError, struct.error, zlib.error) as exc:
        raise DecodeError(f"truncated or corrupt rows event for {table.schema}.{table.table} "
                          f"({exc})") from exc


def _decode_images(kind: str, has_extra: bool, body: bytes, table: TableSchema) -> list[tuple]:
    pos, first, second = _rows_header(kind, has_extra, body, table)
    width = len(table.columns)
    full = (1 << width) - 1
    first &= full  # MySQL may set the bitmap's padding bits
    second &= full
    if not first and not second:
        # MINIMAL images can name no column at all (INSERT ... VALUES () with defaults): one
        # row, nothing to read.
        return [(MISSING,) * width] * (2 if kind == "update" else 1)
    end = len(body)
    if first == full and second == full:
        # FULL images, the common case: one loop reads every image of the event (compiled
        # when the native build is there, else generated for this table).
        if table._full_images is None:
            object.__setattr__(table, "_full_images", _full_images_reader(table))
        images, pos = table._full_images(body, pos, end)
    else:
        hidden = _hidden_columns(table, first, second, full)
        read_first = _image_reader(table, first, hidden)
        read_second = _image_reader(table, second, hidden) if kind == "update" else read_first
        images = []
        append = images.append
        while pos < end:
            image, pos = read_first(body, pos)
            append(image)
            if kind == "update":
                image, pos = read_second(body, pos)
                append(image)
    if pos != end:
        raise DecodeError(f"rows event for {table.schema}.{table.table} overran its body "
                          f"({pos} > {end}): the table map does not match the image")
    if kind == "update" and len(images) % 2:
        raise DecodeError(f"rows event for {table.schema}.{table.table} ends inside an update")
    return images


PARTIAL_JSON_UPDATES = 1  # value_options bit: JSON columns of the after-image may be diffs


def _decode_partial_update(body: bytes, table: TableSchema) -> list[tuple]:
    """A PARTIAL_UPDATE_ROWS_EVENT's images: each row is a before-image, then value options
    (a packed integer), with PARTIAL_JSON_UPDATES a bitmap with one bit per JSON column of the
    table (set: logged as diffs), then the after-image, whose diff-logged JSON values are
    applied to the before-image's (jsondiff.py) so that the after-image is full."""
    pos, first, second = _rows_header("update", True, body, table)
    full = (1 << len(table.columns)) - 1
    first &= full
    second &= full
    hidden = _hidden_columns(table, first, second, full)
    read_before = _image_reader(table, first, hidden)
    json_columns = [i for i, c in enumerate(table.columns) if c.type == FieldType.JSON]
    images: list[tuple] = []
    while pos < len(body):
        before, pos = read_before(body, pos)
        options, pos = read_packed_int(body, pos)
        partial: set[int] = set()
        if options & PARTIAL_JSON_UPDATES:
            size = (len(json_columns) + 7) >> 3
            bits = int.from_bytes(body[pos:pos + size], "little")
            pos += size
            partial = {col for n, col in enumerate(json_columns) if bits >> n & 1}
        after, pos = _read_partial_after(body, pos, table, second, hidden, partial, before)
        images += (before, after)
    if pos != len(body):
        raise DecodeError(f"rows event for {table.schema}.{table.table} overran its body")
    return images


def _read_partial_after(body: bytes, pos: int, table: TableSchema, present: int, hidden: int,
                        partial: set[int], before: tuple) -> tuple[tuple, int]:
    width = len(table.columns)
    indexes = [i for i in range(width) if present >> i & 1]
    null_len = (len(indexes) + 7) >> 3
    nulls = int.from_bytes(body[pos:pos + null_len], "little")
    pos += null_len
    values = [HIDDEN if hidden >> i & 1 else MISSING for i in range(width)]
    for n, i in enumerate(indexes):
        if nulls >> n & 1:
            values[i] = None
        elif i in partial:
            prefix = table.columns[i].metadata
            start = pos + prefix
            end = start + int.from_bytes(body[pos:start], "little")
            diffs = read_diffs(body[start:end])
            pos = end
            old = before[i]
            # Without the before-image's document (image not FULL) the diffs stay diffs.
            values[i] = (JsonValue(b"", apply_diffs(old.raw, diffs))
                         if isinstance(old, JsonValue) and old.text is None else JsonDiffValue(diffs))
        else:
            values[i], pos = table._readers[i](body, pos)
    return tuple(values), pos


def _rows_header(kind: str, has_extra: bool, body: bytes,
                 table: TableSchema) -> tuple[int, int, int]:
    """(offset of the first row, columns-present bitmap of the before/only image, of the
    after image)."""
    pos = _TABLE_ID_AND_FLAGS
    if has_extra:
        pos += body[pos] | body[pos + 1] << 8  # the length counts its own 2 bytes
    width, pos = read_packed_int(body, pos)
    if width != len(table.columns):
        raise DecodeError(f"rows event has {width} columns, the table map of "
                          f"{table.schema}.{table.table} has {len(table.columns)}")
    bitmap_len = (width + 7) // 8
    first = int.from_bytes(body[pos:pos + bitmap_len], "little")
    pos += bitmap_len
    second = first
    if kind == "update":
        second = int.from_bytes(body[pos:pos + bitmap_len], "little")
        pos += bitmap_len
    return pos, first, second


def _hidden_columns(table: TableSchema, first: int, second: int, full: int) -> int:
    """The columns of a rows event that are hidden generated columns, as a bitmap: those absent
    from every image while every other column is there (so the images are FULL but for them).

    The binlog marks them only by name (``!hidden!...``, with ``binlog_row_metadata=FULL``).
    Without names, a column absent from a FULL-looking image counts as hidden unless its type is
    one that ``binlog_row_image=NOBLOB`` leaves out. A MINIMAL image that happens to hold all
    columns but unnamed non-BLOB ones would be misread so; the undo needs column names
    (``binlog_row_metadata=FULL``) anyway, so that misreading can only show in ``changes``."""
    absent = full & ~(first | second)
    if not absent or (first | absent) != full or (second | absent) != full:
        return 0
    for i, column in enumerate(table.columns):
        if absent >> i & 1:
            named_hidden = (column.name or "").startswith(HIDDEN_COLUMN_PREFIX)
            if not named_hidden and (column.name is not None or column.type in _BLOB_LIKE):
                return 0
    return absent


def _image_reader(table: TableSchema, present: int,
                  hidden: int = 0) -> Callable[[bytes, int], tuple[tuple, int]]:
    """A function reading one row image whose columns are those set in ``present``; columns in
    ``hidden`` read as ``HIDDEN``, the other absent ones as ``MISSING``."""
    width = len(table.columns)
    indexes = [i for i in range(width) if present >> i & 1]
    readers = tuple(table._readers[i] for i in indexes)
    null_len = (len(indexes) + 7) >> 3
    if len(indexes) == width:
        def read_full(buf: bytes, pos: int) -> tuple[tuple, int]:
            return _read_image(buf, pos, readers, null_len)

        return read_full
    template = [HIDDEN if hidden >> i & 1 else MISSING for i in range(width)]

    def read_partial(buf: bytes, pos: int) -> tuple[tuple, int]:
        values, pos = _read_image(buf, pos, readers, null_len)
        full = template.copy()
        for i, value in zip(indexes, values, strict=True):
            full[i] = value
        return tuple(full), pos

    return read_partial


def _full_images_reader(table: TableSchema) -> Callable[[bytes, int, int], tuple[list[tuple], int]]:
    """The loop reading every FULL image of a rows event of this table: the mypyc-compiled
    ``_scan`` loop when it is built and current, else the generated pure-Python one."""
    if _NATIVE_SCAN is None:
        return _compile_full_images_reader(table)
    read = _NATIVE_SCAN.read_full_images
    kinds = [_scan_kind(column) for column in table.columns]
    readers = list(table._readers)
    null_len = (len(table.columns) + 7) >> 3

    def read_full_images(buf: bytes, pos: int, stop: int) -> tuple[list[tuple], int]:
        return read(buf, pos, stop, kinds, readers, null_len)

    return read_full_images


def _scan_kind(column: ColumnDef) -> int:
    """How ``_scan.read_full_images`` reads this column: the same inline plans as the
    generated reader (fixed-size integers, length-prefixed strings); the reader otherwise."""
    plan = _inline_plan(column)
    if plan is None:
        return _scan.OTHER
    kind, arg = plan
    if kind == "prefixed":
        return _scan.STR1 if arg == 1 else _scan.STR2
    if arg[1] in "bBhHiIqQ":
        size = struct.calcsize(arg)
        return (_scan.INT | _scan.INT_SIZES.index(size) << 2
                | (_scan.SIGNED if arg[1].islower() else 0))
    return _scan.OTHER  # FLOAT/DOUBLE: struct, through the column's reader


def _compile_full_images_reader(
        table: TableSchema) -> Callable[[bytes, int, int], tuple[list[tuple], int]]:
    """A generated function reading every complete row image from ``pos`` up to ``stop``.

    FULL images (every column present) are the common case, and a loop calling one reader per
    value costs about twice as much as inline code; the loop over rows is inside too, so a
    million-row event costs no call per row. Rows without any NULL (the null bitmap is all
    zero) take a branch-free path that reads runs of adjacent fixed-size columns with one
    ``struct`` call. The source is generated from the column types only (no names or other
    data from the event), compiled once per TableSchema."""
    namespace: dict[str, Any] = {}
    width = len(table.columns)
    null_len = (width + 7) >> 3
    lines = ["def read_full_images(buf, pos, stop):",
             "    images = []",
             "    append = images.append",
             "    while pos < stop:"]
    if null_len == 1:
        lines.append("        nulls = buf[pos]")
    else:
        lines.append(f"        nulls = int.from_bytes(buf[pos:pos + {null_len}], 'little')")
    lines += [f"        pos += {null_len}", "        if not nulls:"]
    lines += [f"            {line}" for line in _inline_reads_without_nulls(table, namespace)]
    lines.append("        else:")
    for i, column in enumerate(table.columns):
        lines += [f"            if nulls & {1 << i}:", f"                v{i} = None",
                  "            else:"]
        lines += [f"                {line}" for line in _inline_read(i, column, table._readers[i],
                                                                  namespace)]
    values = "".join(f"v{i}, " for i in range(width))
    lines += [f"        append(({values}))", "    return images, pos"]
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from type codes only
    return namespace["read_full_images"]


def _inline_reads_without_nulls(table: TableSchema, namespace: dict) -> list[str]:
    """Source lines reading every column of a row that has no NULL: adjacent fixed-size
    columns are read together with one struct format."""
    lines: list[str] = []
    run: list[tuple[int, str]] = []  # (column, struct code) of the pending fixed-size run

    def flush() -> None:
        if not run:
            return
        fmt = "<" + "".join(code for _, code in run)
        name = f"_unpack_run{run[0][0]}"
        namespace[name] = struct.Struct(fmt).unpack_from
        targets = "".join(f"v{i}, " for i, _ in run)
        lines.extend([f"{targets}= {name}(buf, pos)", f"pos += {struct.calcsize(fmt)}"])
        run.clear()

    for i, column in enumerate(table.columns):
        plan = _inline_plan(column)
        if plan is not None and plan[0] == "struct":
            run.append((i, plan[1].lstrip("<")))
            continue
        flush()
        lines.extend(_inline_read(i, column, table._readers[i], namespace))
    flush()
    return lines


def _inline_read(i: int, column: ColumnDef, reader: Reader, namespace: dict) -> list[str]:
    """Source lines that read column ``i`` into ``v{i}`` and advance ``pos``."""
    plan = _inline_plan(column)
    if plan is not None and plan[0] == "struct":
        namespace[f"_unpack{i}"] = struct.Struct(plan[1]).unpack_from
        return [f"v{i} = _unpack{i}(buf, pos)[0]", f"pos += {struct.calcsize(plan[1])}"]
    if plan is not None and plan[1] == 1:
        return ["end = pos + 1 + buf[pos]", f"v{i} = buf[pos + 1:end]", "pos = end"]
    if plan is not None:
        return ["end = pos + 2 + (buf[pos] | buf[pos + 1] << 8)", f"v{i} = buf[pos + 2:end]",
                "pos = end"]
    namespace[f"_read{i}"] = reader
    return [f"v{i}, pos = _read{i}(buf, pos)"]


def _read_image(buf: bytes, pos: int, readers: tuple[Reader, ...],
                null_len: int) -> tuple[tuple, int]:
    nulls = int.from_bytes(buf[pos:pos + null_len], "little")
    pos += null_len
    values = []
    append = values.append
    if not nulls:
        for read in readers:
            value, pos = read(buf, pos)
            append(value)
        return tuple(values), pos
    for read in readers:
        if nulls & 1:
            append(None)
        else:
            value, pos = read(buf, pos)
            append(value)
        nulls >>= 1
    return tuple(values), pos


# -- SQL literals -----------------------------------------------------------------------------

# Collation id -> character set, for MariaDB 10.11 and MySQL 8 (ids below 1024; see charset_name
# for the MariaDB NOPAD and UCA-14 ranges above). Ranges are inclusive.
_COLLATION_RANGES: tuple[tuple[int, int, str], ...] = (
    (1, 1, "big5"), (2, 2, "latin2"), (3, 3, "dec8"), (4, 4, "cp850"), (5, 5, "latin1"),
    (6, 6, "hp8"), (7, 7, "koi8r"), (8, 8, "latin1"), (9, 9, "latin2"), (10, 10, "swe7"),
    (11, 11, "ascii"), (12, 12, "ujis"), (13, 13, "sjis"), (14, 14, "cp1251"),
    (15, 15, "latin1"), (16, 16, "hebrew"), (18, 18, "tis620"), (19, 19, "euckr"),
    (20, 20, "latin7"), (21, 21, "latin2"), (22, 22, "koi8u"), (23, 23, "cp1251"),
    (24, 24, "gb2312"), (25, 25, "greek"), (26, 26, "cp1250"), (27, 27, "latin2"),
    (28, 28, "gbk"), (29, 29, "cp1257"), (30, 30, "latin5"), (31, 31, "latin1"),
    (32, 32, "armscii8"), (33, 33, "utf8mb3"), (34, 34, "cp1250"), (35, 35, "ucs2"),
    (36, 36, "cp866"), (37, 37, "keybcs2"), (38, 38, "macce"), (39, 39, "macroman"),
    (40, 40, "cp852"), (41, 42, "latin7"), (43, 43, "macce"), (44, 44, "cp1250"),
    (45, 46, "utf8mb4"), (47, 49, "latin1"), (50, 52, "cp1251"), (53, 53, "macroman"),
    (54, 55, "utf16"), (56, 56, "utf16le"), (57, 57, "cp1256"), (58, 59, "cp1257"),
    (60, 61, "utf32"), (62, 62, "utf16le"), (63, 63, "binary"), (64, 64, "armscii8"),
    (65, 65, "ascii"), (66, 66, "cp1250"), (67, 67, "cp1256"), (68, 68, "cp866"),
    (69, 69, "dec8"), (70, 70, "greek"), (71, 71, "hebrew"), (72, 72, "hp8"),
    (73, 73, "keybcs2"), (74, 74, "koi8r"), (75, 75, "koi8u"), (76, 76, "utf8mb3"),
    (77, 77, "latin2"), (78, 78, "latin5"), (79, 79, "latin7"), (80, 80, "cp850"),
    (81, 81, "cp852"), (82, 82, "swe7"), (83, 83, "utf8mb3"), (84, 84, "big5"),
    (85, 85, "euckr"), (86, 86, "gb2312"), (87, 87, "gbk"), (88, 88, "sjis"),
    (89, 89, "tis620"), (90, 90, "ucs2"), (91, 91, "ujis"), (92, 93, "geostd8"),
    (94, 94, "latin1"), (95, 96, "cp932"), (97, 98, "eucjpms"), (99, 99, "cp1250"),
    (101, 124, "utf16"), (128, 151, "ucs2"), (159, 159, "ucs2"), (160, 183, "utf32"),
    (192, 215, "utf8mb3"), (223, 223, "utf8mb3"), (224, 247, "utf8mb4"),
    (248, 250, "gb18030"),  # MySQL 8
    (255, 323, "utf8mb4"),  # MySQL 8's utf8mb4_0900_* family
    (576, 578, "utf8mb3"), (608, 610, "utf8mb4"), (640, 642, "ucs2"), (672, 674, "utf16"),
    (736, 738, "utf32"),
)
_COLLATIONS = {i: name for low, high, name in _COLLATION_RANGES for i in range(low, high + 1)}
# MariaDB 10.10+ UCA-14.0.0 collations: one block of 256 ids per character set from 2048.
_UCA1400_BLOCKS = ("utf8mb3", "utf8mb4", "ucs2", "utf16", "utf32")


def charset_name(collation_id: int | None) -> str | None:
    """The character set of a collation id, or None when unknown."""
    if collation_id is None:
        return None
    if 1024 <= collation_id < 2048:  # MariaDB's _nopad_ variants: 1024 + the PAD collation id
        return _COLLATIONS.get(collation_id - 1024)
    if 2048 <= collation_id < 2048 + 256 * len(_UCA1400_BLOCKS):
        return _UCA1400_BLOCKS[(collation_id - 2048) >> 8]
    return _COLLATIONS.get(collation_id)


def _float_literal(value: float) -> str:
    text = repr(value)
    if text in ("inf", "-inf", "nan"):
        raise ValueError(f"{text} cannot be stored in a MySQL FLOAT/DOUBLE column")
    # repr() round-trips exactly; the exponent makes the server parse a DOUBLE, not a DECIMAL.
    return text if "e" in text else f"{text}e0"


def _bytes_literal(value: bytes, column: ColumnDef) -> str:
    name = charset_name(column.charset)
    if name is None or name == "binary":
        return f"X'{value.hex()}'"
    return f"_{name} X'{value.hex()}'"


def _temporal_literal(value: Any, column: ColumnDef) -> str:
    text = str(value)
    if column.fsp and "." not in text and not isinstance(value, DateValue):
        text += "." + "0" * column.fsp
    return f"'{text}'"


def sql_literal(value: Any, column: ColumnDef) -> str:
    """A SQL expression that writes exactly ``value`` into ``column``.

    Meant for a session with ``time_zone='+00:00'`` and a permissive ``sql_mode`` (no STRICT,
    no NO_ZERO_DATE / NO_ZERO_IN_DATE), where zero dates and ENUM index 0 can be written."""
    if value is None:
        return "NULL"
    kind = type(value)
    if kind is bytes:
        return _bytes_literal(value, column)
    if kind is int:
        return str(value)
    if kind is float:
        return _float_literal(value)
    if kind is Decimal:
        return format(value, "f")
    if kind in (DateValue, TimeValue, DateTimeValue, TimestampValue):
        return _temporal_literal(value, column)
    if kind is EnumValue:
        return str(value.index)
    if kind is SetValue:
        # The server reads a SET as a signed 64-bit number: member 64 (bit 63) is written and
        # compared as a negative number; its unsigned spelling never matches in a WHERE.
        return str(value.mask - (1 << 64) if value.mask >> 63 else value.mask)
    if kind is JsonValue:
        text = value.to_text().encode("utf-8", "surrogateescape")
        return f"CAST(_utf8mb4 X'{text.hex()}' AS JSON)"
    if kind is VectorValue:
        # The stored float32 bytes: MySQL takes a binary string of 4 bytes per dimension as a
        # VECTOR as it is, where text (STRING_TO_VECTOR) would go through decimal digits.
        return f"X'{value.raw.hex()}'"
    if value is MISSING:
        raise ValueError(f"column {column.name!r} is not in this row image; nothing to write")
    if value is HIDDEN:
        raise ValueError(f"column {column.name!r} is a hidden generated column; never written")
    raise TypeError(f"no SQL literal for {kind.__name__} (column {column.name!r})")


def literal_writer(column: ColumnDef) -> Callable[[Any], str]:
    """``sql_literal`` specialised for one column: the charset introducer is worked out once,
    and the common value types (bytes, int, NULL) skip the generic dispatch. Used for bulk
    statements, where it is called once per value of up to millions of rows."""
    name = charset_name(column.charset)
    prefix = "X'" if name is None or name == "binary" else f"_{name} X'"

    def write(value: Any) -> str:
        kind = type(value)
        if kind is bytes:
            return prefix + value.hex() + "'"
        if kind is int:
            return str(value)
        if value is None:
            return "NULL"
        return sql_literal(value, column)

    return write


# Column types whose decoded values are always ``int`` / always ``bytes`` (or None): the bulk
# row writer below writes those inline; every other type goes through ``literal_writer``.
_INT_VALUE_TYPES = frozenset({FieldType.TINY, FieldType.SHORT, FieldType.INT24, FieldType.LONG,
                              FieldType.LONGLONG, FieldType.YEAR, FieldType.BIT})
_BYTES_VALUE_TYPES = frozenset({FieldType.VARCHAR, FieldType.VAR_STRING, FieldType.BLOB,
                                FieldType.GEOMETRY, FieldType.VARCHAR_COMPRESSED,
                                FieldType.BLOB_COMPRESSED})

RowField = tuple[int | tuple[int, int], ColumnDef]


@functools.lru_cache(maxsize=256)
def rows_literal_writer(fields: tuple[RowField, ...]) -> Callable[[Iterable[Any]], list[str]]:
    """A function writing rows as SQL row literals ``(v1, v2, ...)``, one string per row.

    Each field is (where, column): the value at ``row[where]`` (or ``row[i][j]`` when
    ``where`` is a pair ``(i, j)``, for rows that are tuples of images) written as
    ``literal_writer(column)`` would write it. Bulk statements write millions of rows, and a
    call per value was most of their cost: this function is generated once per field list,
    with integers and strings written inline in one f-string per row, and their charset
    introducers in its constant text when the row has no NULL among them (the source is made
    from type codes, charset names and positions only, never from column names or values)."""
    namespace: dict[str, Any] = {"_q": "'"}
    lines = ["def write_rows(rows):", "    out = []", "    append = out.append",
             "    for row in rows:"]
    checked, fast, slow = [], [], []  # values tested for NULL; the row without, and with NULLs
    for n, (where, column) in enumerate(fields):
        at = f"[{int(where[0])}][{int(where[1])}]" if isinstance(where, tuple) else f"[{int(where)}]"
        lines.append(f"        v{n} = row{at}")
        if column.type in _INT_VALUE_TYPES:
            checked.append(f"v{n} is None")
            fast.append(f"{{v{n}}}")
            slow.append(f"{{'NULL' if v{n} is None else v{n}}}")
        elif column.type in _BYTES_VALUE_TYPES or (column.type == FieldType.STRING
                                                   and column.real_type == FieldType.STRING):
            name = charset_name(column.charset)
            prefix = "X'" if name is None or name == "binary" else f"_{name} X'"
            if not prefix.replace("_", "").replace(" ", "").replace("'", "").isalnum():
                raise ValueError(f"unexpected charset name {name!r}")  # never: names are ours
            namespace[f"_p{n}"] = prefix
            checked.append(f"v{n} is None")
            fast.append(f"{prefix}{{v{n}.hex()}}'")
            slow.append(f"{{'NULL' if v{n} is None else _p{n} + v{n}.hex() + _q}}")
        else:
            namespace[f"_w{n}"] = literal_writer(column)
            fast.append(f"{{_w{n}(v{n})}}")
            slow.append(fast[-1])
    if checked:
        lines += [f"        if {' or '.join(checked)}:",
                  '            append(f"(' + ", ".join(slow) + ')")',
                  "        else:",
                  '            append(f"(' + ", ".join(fast) + ')")']
    else:
        lines.append('        append(f"(' + ", ".join(fast) + ')")')
    lines.append("    return out")
    exec("\n".join(lines), namespace)  # noqa: S102 - source built from type codes only
    return namespace["write_rows"]


# -- MySQL binary JSON ------------------------------------------------------------------------
# Layout from MySQL's json_binary.h: a type byte, then the value. Objects and arrays come in a
# small (16-bit offsets) and a large (32-bit) form; small scalars are inlined in value entries.

_JSON_SMALL_OBJECT, _JSON_LARGE_OBJECT, _JSON_SMALL_ARRAY, _JSON_LARGE_ARRAY = 0, 1, 2, 3
_JSON_LITERAL, _JSON_INT16, _JSON_UINT16, _JSON_INT32, _JSON_UINT32 = 4, 5, 6, 7, 8
_JSON_INT64, _JSON_UINT64, _JSON_DOUBLE, _JSON_STRING, _JSON_OPAQUE = 9, 10, 11, 12, 15
_JSON_LITERALS = {0: "null", 1: "true", 2: "false"}
_JSON_SCALARS = {
    _JSON_INT16: "<h", _JSON_UINT16: "<H", _JSON_INT32: "<i", _JSON_UINT32: "<I",
    _JSON_INT64: "<q", _JSON_UINT64: "<Q",
}


def json_binary_to_text(raw: bytes) -> str:
    """MySQL binary JSON as JSON text, in MySQL's own style (``{"a": 1, "b": [true]}``).

    Opaque scalars (DECIMAL, DATE, TIME, DATETIME inside JSON) come out as numbers or quoted
    strings, as MySQL prints them; re-parsing that text yields JSON numbers and strings, so
    only those opaque type tags do not survive a round trip through text."""
    if not raw:
        return "null"
    try:
        return _json_value(raw, raw[0], 1)
    except (IndexError, struct.error) as exc:
        raise DecodeError(f"malformed binary JSON ({exc})") from exc


def _json_value(raw: bytes, kind: int, pos: int) -> str:
    if kind in (_JSON_SMALL_OBJECT, _JSON_LARGE_OBJECT, _JSON_SMALL_ARRAY, _JSON_LARGE_ARRAY):
        return _json_container(raw, kind, pos)
    if kind == _JSON_LITERAL:
        return _JSON_LITERALS[raw[pos]]
    if kind in _JSON_SCALARS:
        return str(struct.unpack_from(_JSON_SCALARS[kind], raw, pos)[0])
    if kind == _JSON_DOUBLE:
        return repr(struct.unpack_from("<d", raw, pos)[0])
    if kind == _JSON_STRING:
        length, pos = _json_varlen(raw, pos)
        return _json_quote(raw[pos:pos + length].decode("utf-8", "surrogateescape"))
    if kind == _JSON_OPAQUE:
        field_type = raw[pos]
        length, pos = _json_varlen(raw, pos + 1)
        return _json_opaque(field_type, raw[pos:pos + length])
    raise DecodeError(f"unknown binary JSON type {kind}")


def _json_container(raw: bytes, kind: int, start: int) -> str:
    large = kind in (_JSON_LARGE_OBJECT, _JSON_LARGE_ARRAY)
    word = "<I" if large else "<H"
    size = 4 if large else 2
    count = struct.unpack_from(word, raw, start)[0]
    is_object = kind in (_JSON_SMALL_OBJECT, _JSON_LARGE_OBJECT)
    entries = start + 2 * size
    keys = []
    if is_object:
        for i in range(count):
            key_at = entries + i * (size + 2)
            offset = struct.unpack_from(word, raw, key_at)[0]
            length = struct.unpack_from("<H", raw, key_at + size)[0]
            keys.append(raw[start + offset:start + offset + length].decode("utf-8",
                                                                          "surrogateescape"))
        entries += count * (size + 2)
    values = [_json_entry(raw, start, entries + i * (1 + size), large) for i in range(count)]
    if is_object:
        return "{" + ", ".join(f"{_json_quote(k)}: {v}" for k, v in zip(keys, values,
                                                                          strict=True)) + "}"
    return "[" + ", ".join(values) + "]"


def _json_entry(raw: bytes, start: int, at: int, large: bool) -> str:
    kind = raw[at]
    inline = {_JSON_LITERAL, _JSON_INT16, _JSON_UINT16}
    if large:
        inline |= {_JSON_INT32, _JSON_UINT32}
    if kind in inline:
        return _json_value(raw, kind, at + 1)
    offset = struct.unpack_from("<I" if large else "<H", raw, at + 1)[0]
    return _json_value(raw, kind, start + offset)


def _json_varlen(raw: bytes, pos: int) -> tuple[int, int]:
    """Lengths inside binary JSON: 7 bits per byte, low bits first, high bit = more."""
    value, shift = 0, 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                 "\t": "\\t"}


def _json_quote(text: str) -> str:
    out = []
    for ch in text:
        if ch in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_opaque(field_type: int, data: bytes) -> str:
    if field_type == FieldType.NEWDECIMAL:
        precision, scale = data[0], data[1]
        value, _ = _decimal_reader(precision, scale)(data, 2)
        return format(value, "f")
    if field_type in (FieldType.DATE, FieldType.DATETIME, FieldType.TIMESTAMP,
                      FieldType.TIME):
        packed = struct.unpack_from("<q", data, 0)[0]
        return _json_quote(_packed_temporal_text(field_type, packed))
    encoded = base64.b64encode(data).decode("ascii")
    return _json_quote(f"base64:type{field_type}:{encoded}")


def _packed_temporal_text(field_type: int, packed: int) -> str:
    """MySQL's in-memory packed TIME/DATETIME longlong (used inside binary JSON) as text."""
    negative = packed < 0
    packed = abs(packed)
    fraction = packed & 0xFFFFFF
    whole = packed >> 24
    # MySQL prints TIME and DATETIME/TIMESTAMP inside JSON with all six fraction digits
    # ("2012-03-18 11:30:45.000000"), whatever the fraction is.
    if field_type == FieldType.TIME:
        time = TimeValue(negative, (whole >> 12) & 0x3FF, (whole >> 6) & 0x3F, whole & 0x3F)
        return f"{time}.{fraction:06d}"
    ymd = whole >> 17
    year, month = divmod(ymd >> 5, 13)
    if field_type == FieldType.DATE:
        return str(DateValue(year, month, ymd & 31))
    hms = whole & 0x1FFFF
    moment = DateTimeValue(year, month, ymd & 31, hms >> 12, (hms >> 6) & 0x3F, hms & 0x3F)
    return f"{moment}.{fraction:06d}"


# -- the compiled row loop ----------------------------------------------------------------------

NATIVE_SCAN_MODULE = "proxy.changelog._scan_native"


def _load_native_scan() -> tuple[Any, str]:
    """The mypyc-compiled build of ``_scan`` (``setup.py`` makes it from a stamped copy) when
    it exists and was built from exactly the current ``_scan.py``, and which loop runs. A build
    from another version of the source is ignored, so an edit is never shadowed by a stale
    extension; ``AURORATRACK_PURE_PYTHON`` forces the pure-Python loop."""
    if os.environ.get("AURORATRACK_PURE_PYTHON"):
        return None, "pure Python (AURORATRACK_PURE_PYTHON is set)"
    try:
        native = importlib.import_module(NATIVE_SCAN_MODULE)
    except ImportError:
        return None, "pure Python (no compiled build)"
    with open(_scan.__file__, "rb") as source:
        digest = hashlib.sha256(source.read()).hexdigest()
    if getattr(native, "_SOURCE_DIGEST", None) != digest:
        logging.getLogger(__name__).warning(
            "the compiled row loop (%s) was built from another version of %s and is ignored; "
            "`pip install -e .` rebuilds it", getattr(native, "__file__", NATIVE_SCAN_MODULE),
            _scan.__file__)
        return None, "pure Python (the compiled build is stale)"
    return native, "compiled"


_NATIVE_SCAN, SCAN_IMPLEMENTATION = _load_native_scan()
