"""Pure parsers for the few binlog event bodies the streamer reads itself.

The streamer frames events itself (binlog.py) and never builds the library's event objects: they
cost more than the rest of capture, and the library parses some of these lossily for our
purposes (query texts decoded as UTF-8 with replacement; no microsecond commit timestamps from
MySQL's GTID events). Each function takes an event body (after the 19-byte common header,
without the checksum).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

QUERY_POST_HEADER = 13  # thread_id(4) exec_time(4) db_len(1) error_code(2) status_vars_len(2)
TABLE_MAP_POST_HEADER = 8  # table_id(6) flags(2)
_U64 = struct.Struct("<Q")
_MARIADB_GTID = struct.Struct("<QIB")


@dataclass(frozen=True)
class QueryBody:
    default_schema: str
    query: bytes
    error_code: int


class EventBodyError(ValueError):
    """An event body that does not hold what its type says it holds (a corrupt event)."""


def parse_query(body: bytes) -> QueryBody:
    """QUERY_EVENT: the default database and the statement text (raw bytes)."""
    if len(body) < QUERY_POST_HEADER:
        raise EventBodyError(f"QUERY_EVENT of {len(body)} bytes, shorter than its post-header")
    db_len = body[8]
    error_code, status_len = struct.unpack_from("<HH", body, 9)
    db_start = QUERY_POST_HEADER + status_len
    if db_start + db_len >= len(body) or body[db_start + db_len] != 0:
        raise EventBodyError(f"QUERY_EVENT: status variables ({status_len} bytes) and schema name "
                             f"({db_len} bytes) do not fit its {len(body)} bytes (a corrupt event)")
    schema = body[db_start : db_start + db_len].decode("utf-8", "replace")
    return QueryBody(schema, bytes(body[db_start + db_len + 1 :]), error_code)


def table_map_names(body: bytes) -> tuple[int, str, str]:
    """(table_id, schema, table) of a TABLE_MAP_EVENT."""
    table_id = int.from_bytes(body[:6], "little")
    pos = TABLE_MAP_POST_HEADER
    schema_len = body[pos]
    schema = body[pos + 1 : pos + 1 + schema_len].decode("utf-8", "replace")
    pos += 1 + schema_len + 1
    if pos >= len(body):
        raise EventBodyError(f"TABLE_MAP_EVENT of {len(body)} bytes ends inside its names")
    table_len = body[pos]
    table = body[pos + 1 : pos + 1 + table_len].decode("utf-8", "replace")
    return table_id, schema, table


def parse_rotate(body: bytes) -> tuple[int, str]:
    """ROTATE_EVENT: (position, file name) of what follows."""
    return _U64.unpack_from(body)[0], bytes(body[8:]).decode("utf-8", "replace")


@dataclass(frozen=True)
class MariadbGtid:
    gtid: str  # domain-server_id-sequence, as MariaDB spells it
    flags: int  # FL_STANDALONE, FL_PREPARED_XA, FL_COMPLETED_XA, ...


def parse_mariadb_gtid(body: bytes, server_id: int) -> MariadbGtid:
    """MariaDB's GTID_EVENT: sequence number(8), domain id(4), flags(1); the server id is the
    event header's."""
    seq_no, domain_id, flags = _MARIADB_GTID.unpack_from(body)
    return MariadbGtid(f"{domain_id}-{server_id}-{seq_no}", flags)


def rows_table_id(body: bytes) -> int:
    return int.from_bytes(body[:6], "little")


@dataclass(frozen=True)
class MysqlGtid:
    gtid: str | None  # None for ANONYMOUS_GTID (gtid_mode=OFF)
    commit_time_us: int | None  # immediate_commit_timestamp, when present


def parse_mysql_gtid(body: bytes, anonymous: bool, tagged: bool = False) -> MysqlGtid:
    """GTID_LOG_EVENT / ANONYMOUS_GTID_LOG_EVENT (MySQL 5.7+/8.x); with ``tagged``,
    GTID_TAGGED_LOG_EVENT (MySQL 8.4+, see ``parse_tagged_gtid``)."""
    if tagged:
        return parse_tagged_gtid(body)
    sid = body[1:17]
    gno = struct.unpack_from("<q", body, 17)[0]
    gtid = None
    if not anonymous:
        h = sid.hex()
        gtid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}:{gno}"
    commit_us = None
    pos = 1 + 16 + 8
    if len(body) >= pos + 1 + 16 + 7 and body[pos] == 2:  # LOGICAL_TIMESTAMP_TYPECODE
        ts_pos = pos + 1 + 16
        raw = int.from_bytes(body[ts_pos : ts_pos + 7], "little")
        commit_us = raw & ((1 << 55) - 1)  # the top bit says original_commit_timestamp follows
    return MysqlGtid(gtid, commit_us or None)


# GTID_TAGGED_LOG_EVENT is written with MySQL's serialization library (libs/mysql/serialization):
# a format version byte, then a message: its size, the last non-ignorable field id, and fields,
# each a field id and a value, every integer in its variable-length encoding.
_TAGGED_SERIALIZATION_V2 = 2
_TAGGED_SID, _TAGGED_GNO, _TAGGED_TAG, _TAGGED_IMMEDIATE_COMMIT = 1, 2, 3, 6
# Field id -> how its value is read: 'u' an unsigned varlen, 's' a signed (zig-zag) one,
# 'uuid' 16 unsigned varlens, 'str' a varlen length and bytes. Ids 0-11 of Gtid_event.
_TAGGED_FIELDS = {0: "u", 1: "uuid", 2: "s", 3: "str", 4: "s", 5: "s", 6: "u", 7: "u", 8: "u",
                  9: "u", 10: "u", 11: "u"}


class GtidEventError(EventBodyError):
    """A GTID event body that cannot be read."""


def read_varlen_uint(buf: bytes, pos: int) -> tuple[int, int]:
    """An unsigned integer in the serialization library's encoding: the first byte's trailing
    one-bits count the bytes that follow (0xff: eight follow); the value is the little-endian
    number of all of them shifted right by that count plus one."""
    first = buf[pos]
    if first == 0xFF:
        return int.from_bytes(buf[pos + 1:pos + 9], "little"), pos + 9
    size = 1
    while first >> (size - 1) & 1:
        size += 1
    if pos + size > len(buf):
        raise GtidEventError(f"varlen integer at {pos} runs past the body")
    return int.from_bytes(buf[pos:pos + size], "little") >> size, pos + size


def _read_tagged_field(kind: str, body: bytes, pos: int) -> tuple[object, int]:
    if kind == "uuid":
        sid = bytearray()
        for _ in range(16):
            byte, pos = read_varlen_uint(body, pos)
            sid.append(byte)
        return bytes(sid), pos
    value, pos = read_varlen_uint(body, pos)
    if kind == "s":
        return (value >> 1) ^ -(value & 1), pos
    if kind == "str":
        return bytes(body[pos:pos + value]), pos + value
    return value, pos


def _sid_text(sid: bytes) -> str:
    h = sid.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_tagged_gtid(body: bytes) -> MysqlGtid:
    """GTID_TAGGED_LOG_EVENT (MySQL 8.4+): the GTID spelled ``uuid:tag:gno`` and the
    microsecond ``immediate_commit_timestamp``."""
    try:
        if body[0] != _TAGGED_SERIALIZATION_V2:
            raise GtidEventError(f"unknown serialization version {body[0]}")
        size, pos = read_varlen_uint(body, 1)
        last_required, pos = read_varlen_uint(body, pos)
        end = min(size, len(body))
        fields: dict[int, object] = {}
        while pos < end:
            field_id, pos = read_varlen_uint(body, pos)
            kind = _TAGGED_FIELDS.get(field_id)
            if kind is None:
                if field_id <= last_required:
                    raise GtidEventError(f"unknown required field {field_id}")
                break  # an ignorable field of a newer server: nothing after it is needed
            fields[field_id], pos = _read_tagged_field(kind, body, pos)
    except IndexError as exc:
        raise GtidEventError(f"truncated tagged GTID event ({exc})") from exc
    tag = fields.get(_TAGGED_TAG, b"")
    sid, gno = fields.get(_TAGGED_SID), fields.get(_TAGGED_GNO)
    if not isinstance(sid, bytes) or len(sid) != 16 or not isinstance(gno, int):
        raise GtidEventError("tagged GTID event without its uuid or number")
    spelled = f"{_sid_text(sid)}:{tag.decode('ascii', 'replace')}:{gno}" if tag else f"{_sid_text(sid)}:{gno}"
    commit_us = fields.get(_TAGGED_IMMEDIATE_COMMIT)
    return MysqlGtid(spelled, commit_us if isinstance(commit_us, int) and commit_us else None)


def parse_xa_prepare_xid(body: bytes) -> str:
    """The XID of an XA_PREPARE_LOG_EVENT, spelled as in ``XA COMMIT X'..',X'..',fmt``."""
    format_id, gtrid_len, bqual_len = struct.unpack_from("<iII", body, 1)
    data = body[13 : 13 + gtrid_len + bqual_len]
    return xid_key(data[:gtrid_len], data[gtrid_len:], format_id)


def xid_key(gtrid: bytes, bqual: bytes, format_id: int) -> str:
    return f"X'{gtrid.hex()}',X'{bqual.hex()}',{format_id}"


def parse_xa_statement(query: bytes) -> tuple[str, str | None]:
    """('XA COMMIT' | 'XA ROLLBACK' | 'XA START' | 'XA END' | 'XA PREPARE', xid key or None)."""
    text = query.decode("utf-8", "replace").strip()
    words = text.split(None, 2)
    verb = " ".join(words[:2]).upper()
    rest = words[2] if len(words) > 2 else ""
    for suffix in (" ONE PHASE", " one phase"):
        if rest.endswith(suffix):
            rest = rest[: -len(suffix)]
    return verb, normalise_xid(rest) if rest else None


def normalise_xid(text: str) -> str | None:
    """``X'6162',X'',1`` (server spelling) or ``'ab','',1`` -> the canonical key."""
    parts = _split_xid(text.strip())
    if not parts:
        return None
    values = [_xid_part(p) for p in parts[:2]]
    if any(v is None for v in values):
        return None
    gtrid = values[0]
    bqual = values[1] if len(values) > 1 else b""
    format_id = int(parts[2]) if len(parts) > 2 and parts[2].strip().lstrip("-").isdigit() else 1
    return xid_key(gtrid, bqual, format_id)


def _split_xid(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip() or p == ""]


def _xid_part(part: str) -> bytes | None:
    part = part.strip()
    if part[:2].upper() == "X'" and part.endswith("'"):
        return bytes.fromhex(part[2:-1])
    if part.startswith("'") and part.endswith("'"):
        return part[1:-1].encode()
    if part[:2].upper() == "0X":
        return bytes.fromhex(part[2:])
    return None


_DML_KEYWORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD"})
_TXN_KEYWORDS = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "XA", "SAVEPOINT"})


def classify_query(query: bytes) -> str:
    """'begin' | 'commit' | 'rollback' | 'rollback_to' (ROLLBACK TO a savepoint, inside a group)
    | 'xa' | 'savepoint' | 'statement' (row-changing SQL logged as a statement) | 'ddl' (anything
    else changes schema or is unknown: fail closed)."""
    word = _first_keyword(query)
    if word in _TXN_KEYWORDS:
        if word == "ROLLBACK" and savepoint_name(query) is not None:
            return "rollback_to"
        return word.lower()
    if word in _DML_KEYWORDS:
        return "statement"
    return "ddl"


def _first_keyword(query: bytes) -> str:
    text = query.lstrip()
    while text.startswith(b"/*"):  # skip leading comments (auroratrack tags, hints)
        end = text.find(b"*/")
        if end < 0:
            break
        text = text[end + 2 :].lstrip()
    word = text.split(None, 1)[0] if text.split() else b""
    return word.rstrip(b";").decode("ascii", "replace").upper()


def savepoint_name(query: bytes) -> str | None:
    """The savepoint a ``SAVEPOINT x`` or ``ROLLBACK [WORK] TO [SAVEPOINT] x`` names, folded to
    lower case (savepoint names are case-insensitive; the server logs ``ROLLBACK TO `x```
    spelled as the client wrote it); None for any other statement. Only on the rare path."""
    text = query.decode("utf-8", "replace").strip().rstrip(";").strip()
    while text.startswith("/*") and "*/" in text:
        text = text[text.index("*/") + 2 :].lstrip()
    words = text.split(None, 1)
    if not words:
        return None
    keyword, rest = words[0].upper(), words[1] if len(words) > 1 else ""
    if keyword == "ROLLBACK":
        head = rest.split(None, 1)
        if head and head[0].upper() == "WORK":
            rest = head[1] if len(head) > 1 else ""
            head = rest.split(None, 1)
        if not head or head[0].upper() != "TO":
            return None
        rest = head[1] if len(head) > 1 else ""
        head = rest.split(None, 1)
        if head and head[0].upper() == "SAVEPOINT" and len(head) > 1:
            rest = head[1]
    elif keyword != "SAVEPOINT":
        return None
    rest = rest.strip()
    if rest.startswith("`") and rest.endswith("`") and len(rest) >= 2:
        rest = rest[1:-1].replace("``", "`")
    return rest.lower() or None
