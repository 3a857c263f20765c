"""Decoder fidelity against the real server: every decoded image rewrites the server's bytes.

A workload (INSERT, UPDATE of every column, DELETE) runs in a '+02:00' session with a permissive
sql_mode over tables holding every column type the server has, at its edge values. The test
reads the raw binlog events itself (the private server's binlog files, or a raw copy made with
``mariadb-binlog --read-from-remote-server --raw``), decodes every rows event with
``proxy.changelog.decoder`` and writes each before- and after-image through ``sql_literal`` into
a scratch table of identical column types, in a '+00:00' permissive session. Then it compares
server-side fingerprints (``HEX(CAST(col AS BINARY))``, exact double text for floats, the
numeric value of ENUM/SET): replaying the decoded changes over the fingerprints taken before a
phase must give exactly the fingerprints taken after it. Python values are never compared
with Python values; the server's own bytes are the oracle.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.changelog.decoder import (
    MISSING,
    ColumnDef,
    FieldType,
    TableSchema,
    charset_name,
    decode_rows,
    parse_table_map,
    rows_event_table_id,
    sql_literal,
)
from proxy.loaddata import load_rows, load_spec

BINLOG_MAGIC = b"\xfebin"
FORMAT_DESCRIPTION_EVENT = 15
TABLE_MAP_EVENT = 19
ROWS_EVENTS = {23, 24, 25, 30, 31, 32}
CHECKSUM_CRC32 = 1


# -- reading raw binlog events ------------------------------------------------------------------


@dataclass(frozen=True)
class RawEvent:
    file: str
    offset: int
    type: int
    body: bytes  # after the 19-byte header, without the CRC32


def read_binlog_file(path: Path, name: str) -> list[RawEvent]:
    """Every event of one binlog file, checksums verified."""
    data = path.read_bytes()
    assert data[:4] == BINLOG_MAGIC, f"{path} is not a binlog file"
    events, pos, crc_len = [], 4, 0
    while pos + 19 <= len(data):
        event_type = data[pos + 4]
        size = struct.unpack_from("<I", data, pos + 9)[0]
        event = data[pos:pos + size]
        if len(event) < size:
            break  # a partly written event at the end of the active file
        if event_type == FORMAT_DESCRIPTION_EVENT:
            crc_len = 4 if event[-5] == CHECKSUM_CRC32 else 0
        if crc_len:
            assert _crc_ok(event), f"bad CRC32 at {name}:{pos}"
        body_end = size - crc_len if event_type != FORMAT_DESCRIPTION_EVENT else size - 5
        events.append(RawEvent(name, pos, event_type, event[19:body_end]))
        pos += size
    return events


def _crc_ok(event: bytes) -> bool:
    stored = struct.unpack_from("<I", event, len(event) - 4)[0]
    if zlib.crc32(event[:-4]) == stored:
        return True
    # The server clears LOG_EVENT_BINLOG_IN_USE_F in a closed file's FORMAT_DESCRIPTION event
    # without recomputing its checksum, which covered the flag as first written.
    patched = bytearray(event[:-4])
    patched[17] ^= 0x01
    return event[4] == FORMAT_DESCRIPTION_EVENT and zlib.crc32(patched) == stored


def binlog_position(conn) -> tuple[str, int]:
    with conn.cursor() as cur:
        for statement in ("SHOW MASTER STATUS", "SHOW BINARY LOG STATUS"):
            try:
                cur.execute(statement)
            except Exception:  # noqa: BLE001 - the other spelling is tried next
                continue
            row = cur.fetchone()
            return row[0], int(row[1])
    raise AssertionError("the server reports no binlog position (is log_bin on?)")


def copy_binlogs(mysql_server, names: list[str], scratch: Path) -> Path:
    """A directory holding the named binlog files: the private server's own data directory, or
    a raw copy (into ``scratch``) over the replication protocol. Skips when neither works."""
    if mysql_server.private is not None:
        return Path(mysql_server.private.data_dir)
    tool = shutil.which("mariadb-binlog") or shutil.which("mysqlbinlog")
    if tool is None:
        pytest.skip("the server is not private and no mariadb-binlog/mysqlbinlog is on PATH to "
                    "copy its binlog files with --read-from-remote-server --raw")
    target = scratch / "binlogs"
    target.mkdir(exist_ok=True)
    result = subprocess.run(
        [tool, "--no-defaults", "--read-from-remote-server", "--raw", f"--host={mysql_server.host}",
         f"--port={mysql_server.port}", f"--user={mysql_server.user}",
         f"--password={mysql_server.password}", f"--result-file={target}/", "--to-last-log",
         names[0]],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"could not copy the binlog with {tool}: {result.stderr.strip()}")
    return target


def read_events_since(mysql_server, start: tuple[str, int], scratch: Path) -> list[RawEvent]:
    with mysql_server.connect() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("SHOW BINARY LOGS")
        names = [row[0] for row in cur.fetchall() if row[0] >= start[0]]
    directory = copy_binlogs(mysql_server, names, scratch)
    events = []
    for name in names:
        events += [e for e in read_binlog_file(directory / name, name)
                   if (e.file, e.offset) >= start]
    return events


# -- the tables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    name: str
    ddl: str
    values: tuple[str, ...] = ()  # SQL expressions for rows 1..4 (a '+02:00', sql_mode='' session)
    plain: str | None = None  # for generated columns: the plain type of the scratch copy
    mariadb_only: bool = False

    @property
    def is_float(self) -> bool:
        return self.ddl.split()[0].upper() in ("FLOAT", "DOUBLE")

    @property
    def is_enum_or_set(self) -> bool:
        return self.ddl.upper().startswith(("ENUM", "SET"))


def _members(prefix: str, count: int) -> str:
    return ",".join(f"'{prefix}{i}'" for i in range(count))


D65_MAX = "9" * 35 + "." + "9" * 30
TYPES_COLUMNS = (
    Col("id", "INT NOT NULL", ("1", "2", "3", "4")),
    Col("ti", "TINYINT", ("-128", "127", "0", "-1")),
    Col("tiu", "TINYINT UNSIGNED", ("0", "255", "1", "128")),
    Col("si", "SMALLINT", ("-32768", "32767", "0", "-2")),
    Col("siu", "SMALLINT UNSIGNED", ("0", "65535", "1", "32768")),
    Col("mi", "MEDIUMINT", ("-8388608", "8388607", "0", "-3")),
    Col("miu", "MEDIUMINT UNSIGNED", ("0", "16777215", "1", "8388608")),
    Col("i", "INT", ("-2147483648", "2147483647", "0", "-4")),
    Col("iu", "INT UNSIGNED", ("0", "4294967295", "1", "2147483648")),
    Col("bi", "BIGINT", ("-9223372036854775808", "9223372036854775807", "0", "-5")),
    Col("biu", "BIGINT UNSIGNED", ("0", "18446744073709551615", "1", "9223372036854775808")),
    Col("d65", "DECIMAL(65,30)", (f"-{D65_MAX}", D65_MAX, "0", "-0." + "0" * 29 + "1")),
    Col("d10", "DECIMAL(10,2)", ("-99999999.99", "99999999.99", "0", "1.05")),
    Col("d55", "DECIMAL(5,5)", ("-0.99999", "0.99999", "0", "-0.00001")),
    Col("d18", "DECIMAL(18,9)", ("-123456789.123456789", "999999999.999999999", "0",
                                 "0.000000001")),
    Col("d1", "DECIMAL(1,0)", ("-9", "9", "0", "1")),
    Col("d65i", "DECIMAL(65,0)", ("-" + "9" * 65, "9" * 65, "0", "12345678901234567890")),
    Col("d12u", "DECIMAL(12,4) UNSIGNED", ("0", "99999999.9999", "1.5", "0.0001")),
    Col("fl", "FLOAT", ("-3.40282e38", "3.40282e38", "1.4e-45", "0.1")),
    Col("fl2", "FLOAT", ("16777217", "-1.17549435e-38", "0", "1e10")),
    Col("db", "DOUBLE", ("-1.7976931348623157e308", "1.7976931348623157e308", "4.94e-324",
                         "0.30000000000000004")),
    Col("db2", "DOUBLE", ("2.2250738585072014e-308", "-0.0", "1e-300", "123.456")),
    Col("b1", "BIT(1)", ("b'0'", "b'1'", "b'1'", "b'0'")),
    Col("b7", "BIT(7)", ("b'1010101'", "b'1111111'", "0", "1")),
    Col("b8", "BIT(8)", ("0", "255", "128", "1")),
    Col("b9", "BIT(9)", ("0", "511", "256", "1")),
    Col("b17", "BIT(17)", ("0", "131071", "65536", "1")),
    Col("b64", "BIT(64)", ("0", "18446744073709551615", "9223372036854775808", "1")),
    Col("dt", "DATE", ("'0000-00-00'", "'9999-12-31'", "'0001-01-01'", "'2020-00-15'")),
    Col("tm", "TIME", ("'-838:59:59'", "'838:59:59'", "'00:00:00'", "'-00:00:01'")),
    Col("tm1", "TIME(1)", ("'-838:59:58.9'", "'838:59:58.9'", "'-00:00:00.1'", "'12:34:56.7'")),
    Col("tm3", "TIME(3)", ("'-01:02:03.004'", "'838:59:58.999'", "'-00:00:00.001'",
                           "'00:00:00.000'")),
    Col("tm4", "TIME(4)", ("'-00:00:00.0001'", "'-838:59:59.9999'", "'100:00:00.5'",
                           "'-00:59:59.9999'")),
    Col("tm6", "TIME(6)", ("'-00:00:00.000001'", "'838:59:59.999999'", "'-838:59:59.999999'",
                           "'-12:00:00.5'")),
    Col("dtm", "DATETIME", ("'0000-00-00 00:00:00'", "'9999-12-31 23:59:59'",
                            "'2020-00-15 10:00:00'", "'1000-01-01 00:00:00'")),
    Col("dtm2", "DATETIME(2)", ("'0000-00-00 00:00:00.00'", "'9999-12-31 23:59:59.99'",
                                "'2020-02-00 00:00:00.01'", "'1970-01-01 00:00:00.5'")),
    Col("dtm6", "DATETIME(6)", ("'0000-00-00 00:00:00.000000'", "'9999-12-31 23:59:59.999999'",
                                "'0000-01-01 00:00:00.000001'", "'2001-02-03 04:05:06.123456'")),
    Col("ts", "TIMESTAMP NULL", ("'0000-00-00 00:00:00'", "'2038-01-19 05:14:07'",
                                 "'1970-01-01 02:00:01'", "'2000-06-15 12:00:00'")),
    Col("ts3", "TIMESTAMP(3) NULL", ("'1970-01-01 02:00:01.001'", "'0000-00-00 00:00:00.000'",
                                     "'2038-01-19 05:14:07.999'", "'2020-03-29 03:30:00.5'")),
    Col("ts6", "TIMESTAMP(6) NULL", ("'2038-01-19 05:14:07.999999'",
                                     "'1970-01-01 02:00:01.000001'", "'0000-00-00 00:00:00'",
                                     "'2010-10-10 10:10:10.101010'")),
    Col("yr", "YEAR", ("0", "1901", "2155", "2000")),
    Col("cu", "CHAR(10) CHARACTER SET utf8mb4", ("''", "'😀é\u0303 \u3000'", "'abc  '",
                                                 "'a\\0b'")),
    Col("cbig", "CHAR(200) CHARACTER SET utf8mb4", ("REPEAT('é', 200)", "'x'", "''", "'😀'")),
    Col("vcu", "VARCHAR(300) CHARACTER SET utf8mb4", ("REPEAT('😀', 300)", "'trailing  '",
                                                      "''", "'a\\nb\\0'")),
    Col("vcs", "VARCHAR(50) CHARACTER SET utf8mb4", ("'short'", "REPEAT('é', 50)", "''",
                                                     "' '")),
    Col("tx", "TEXT CHARACTER SET utf8mb4", ("'text 😀'", "''", "REPEAT('ab', 1000)", "'\\''")),
    Col("ttx", "TINYTEXT CHARACTER SET utf8mb4", ("''", "REPEAT('z', 255)", "'é'", "'x'")),
    Col("mtx", "MEDIUMTEXT CHARACTER SET utf8mb4", ("REPEAT('x', 70000)", "''", "'m'",
                                                    "REPEAT('é', 40000)")),
    Col("ltx", "LONGTEXT CHARACTER SET utf8mb4", ("'long'", "REPEAT('😀', 20000)", "''", "'l'")),
    Col("cl", "CHAR(10) CHARACTER SET latin1", ("X'818D8F909D'", "'é'", "''", "X'FF80'")),
    Col("vcl", "VARCHAR(20) CHARACTER SET latin1", ("X'00818D8F909DFF'", "'€'", "''",
                                                    "'abc  '")),
    Col("txl", "TEXT CHARACTER SET latin1", ("X'818D8F909D'", "''", "'ÿ'", "X'00'")),
    Col("v16", "VARCHAR(10) CHARACTER SET utf16", ("'héllo'", "'😀'", "''", "'x'")),
    Col("bin", "BINARY(8)", ("X'0100000000000000'", "X'0000000000000000'", "X'FFFFFFFFFFFFFFFF'",
                             "X'00'")),
    Col("vbin", "VARBINARY(20)", ("X'00'", "X'0000'", "''", "X'FF00'")),
    Col("blb", "BLOB", ("X'000102FF00'", "''", "X'00'", "REPEAT(X'00FF', 30000)")),
    Col("tblb", "TINYBLOB", ("''", "X'00'", "REPEAT(X'AB', 255)", "X'FF'")),
    Col("mblb", "MEDIUMBLOB", ("REPEAT(X'00FF', 40000)", "X'00'", "''", "X'01'")),
    Col("lblb", "LONGBLOB", ("X'00'", "REPEAT(X'01FE', 150000)", "''", "X'0000'")),
    Col("js", "JSON", ("'{\"a\": [1, 2.5, \"x\"], \"b\": null}'", "'[]'", "'\"é\"'",
                       "'{}'")),
    Col("e", "ENUM('a','b','é','') CHARACTER SET utf8mb4", ("'a'", "'é'", "'zz'", "''")),
    Col("el", "ENUM('é', X'81', 'b') CHARACTER SET latin1", ("X'81'", "'é'", "'b'", "'nope'")),
    Col("e300", f"ENUM({_members('m', 300)})", ("'m0'", "'m299'", "'m255'", "'m256'")),
    Col("s", "SET('x','y','z')", ("''", "'x,y,z'", "'y'", "'z,x'")),
    Col("sl", "SET('é','ä', X'9D') CHARACTER SET latin1", ("X'9D'", "'é,ä'", "''", "'ä'")),
    Col("s64", f"SET({_members('s', 64)})", ("'s63'", "'s0,s63'", "''", "'s31,s32'")),
    Col("gv", "INT AS (ti + 1) VIRTUAL", plain="INT"),
    Col("gs", "VARCHAR(60) CHARACTER SET utf8mb4 AS (CONCAT(vcs, '!')) STORED",
        plain="VARCHAR(60) CHARACTER SET utf8mb4"),
    Col("ip", "INET6", ("'::'", "'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'", "'::1'", "'1::'"),
        mariadb_only=True),
    Col("uu", "UUID", ("'00000000-0000-0000-0000-000000000000'", "UUID()",
                       "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                       "'12345678-1234-4234-8234-123456780000'"), mariadb_only=True),
    Col("geo", "GEOMETRY", ("ST_GeomFromText('POINT(1 2)')",
                            "ST_GeomFromText('LINESTRING(0 0,1 1,2 0)')",
                            "ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))')",
                            "ST_GeomFromText('POINT(0 0)', 4326)")),
    Col("pt", "POINT", ("POINT(1.5, -2)", "POINT(0, 0)", "POINT(-1e300, 1e-300)",
                        "POINT(7, 8)")),
)


@dataclass
class TableCase:
    name: str
    columns: tuple[Col, ...]
    key: str  # the key clause of CREATE TABLE ("" for none)
    phases: dict[str, list[str]] = field(default_factory=dict)  # phase -> statements
    options: str = ""


def types_case(flavor: str) -> TableCase:
    columns = tuple(c for c in TYPES_COLUMNS if flavor == "mariadb" or not c.mariadb_only)
    data = [c for c in columns if not c.plain]
    names = ", ".join(f"`{c.name}`" for c in data)
    rows = [f"({', '.join(c.values[r] for c in data)})" for r in range(4)]
    nulls = ", ".join("5" if c.name == "id" else "NULL" for c in data)
    inserts = [f"INSERT INTO t_types ({names}) VALUES {', '.join(rows)}, ({nulls})"]
    updates = []
    for row in range(1, 6):  # every column of every row changes, and so does the key
        source = row % 5  # row 5 (all NULL) takes the values of row 1; row 4 becomes NULLs
        sets = [f"`{c.name}` = {'NULL' if source == 4 else c.values[source]}"
                for c in data if c.name != "id"]
        updates.append(f"UPDATE t_types SET id = id + 100, {', '.join(sets)} WHERE id = {row}")
    return TableCase("t_types", columns, "PRIMARY KEY (id)", {
        "insert": inserts, "update": updates, "delete": ["DELETE FROM t_types"]})


NOPK = TableCase(
    "t_nopk",
    (Col("x", "INT"), Col("f", "DOUBLE"), Col("fl", "FLOAT"),
     Col("s", "VARCHAR(10) CHARACTER SET latin1"), Col("t", "TIMESTAMP(6) NULL"),
     Col("j", "JSON")),
    "",
    {
        "insert": ["INSERT INTO t_nopk VALUES (1, 0.1, 0.1, X'81', '2001-01-01 00:00:00.5', "
                   "'[1]'), (1, 0.1, 0.1, X'81', '2001-01-01 00:00:00.5', '[1]'), "
                   "(2, NULL, 3.5, 'b', NULL, NULL)"],
        "update": ["UPDATE t_nopk SET x = 5, s = X'9D' WHERE x = 1 LIMIT 1",
                   "UPDATE t_nopk SET f = 1e300 WHERE x = 2"],
        "delete": ["DELETE FROM t_nopk WHERE x = 1 LIMIT 1", "DELETE FROM t_nopk"],
    },
)

COMPOSITE = TableCase(
    "t_cpk",
    (Col("a", "INT NOT NULL"), Col("b", "VARCHAR(20) CHARACTER SET utf8mb4 NOT NULL"),
     Col("c", "DATETIME(6) NOT NULL"), Col("v", "INT")),
    "PRIMARY KEY (a, b, c)",
    {
        "insert": ["INSERT INTO t_cpk VALUES (1, 'é', '2020-01-01 00:00:00.000001', 1), "
                   "(1, 'e', '0000-00-00 00:00:00', 2), (2, '😀', '2020-00-15 10:00:00', 3)"],
        "update": ["UPDATE t_cpk SET a = a + 10, b = CONCAT(b, 'x'), "
                   "c = '1999-12-31 23:59:59.999999' WHERE v = 1",
                   "UPDATE t_cpk SET v = v * 100 WHERE a = 1",
                   "UPDATE t_cpk SET b = 'key' WHERE a = 2"],
        "delete": ["DELETE FROM t_cpk WHERE v = 200", "DELETE FROM t_cpk"],
    },
)

PREFIX_KEY = TableCase(
    "t_prefix",
    (Col("k", "VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL"), Col("v", "INT")),
    "PRIMARY KEY (k(10))",
    {
        "insert": ["INSERT INTO t_prefix VALUES ('abcdefghijklmnop', 1), ('é', 2)"],
        "update": ["UPDATE t_prefix SET k = CONCAT(k, 'z'), v = v + 1"],
        "delete": ["DELETE FROM t_prefix"],
    },
)

# Pre-5.6 temporal formats (MariaDB creates them with mysql56_temporal_format=OFF). Only fsp 0:
# MariaDB's old TIME(n)/DATETIME(n)/TIMESTAMP(n) carry no metadata, so their images cannot be
# decoded from the binlog at all (mariadb-binlog cannot either).
OLD_TEMPORAL = TableCase(
    "t_old_temporal",
    (Col("id", "INT NOT NULL"), Col("t", "TIME"), Col("d", "DATETIME"),
     Col("ts", "TIMESTAMP NULL")),
    "PRIMARY KEY (id)",
    {
        "insert": ["INSERT INTO t_old_temporal VALUES (1, '-838:59:59', '0000-00-00 00:00:00', "
                   "'0000-00-00 00:00:00'), (2, '838:59:59', '9999-12-31 23:59:59', "
                   "'2038-01-19 05:14:07'), (3, '-00:00:01', '2020-00-15 10:00:00', "
                   "'1970-01-01 02:00:01'), (4, NULL, NULL, NULL)"],
        "update": ["UPDATE t_old_temporal SET t = '-12:34:56', d = '1000-01-01 00:00:00', "
                   "ts = '2000-01-01 00:00:00', id = id + 10"],
        "delete": ["DELETE FROM t_old_temporal"],
    },
)

# MariaDB's column compression: the image holds the compressed form; the decoder inflates it.
COMPRESSED = TableCase(
    "t_compressed",
    (Col("id", "INT NOT NULL"), Col("v", "VARCHAR(1000) CHARACTER SET utf8mb4 COMPRESSED"),
     Col("vs", "VARCHAR(50) CHARACTER SET latin1 COMPRESSED"), Col("b", "BLOB COMPRESSED"),
     Col("t", "MEDIUMTEXT CHARACTER SET latin1 COMPRESSED"),
     Col("after", "VARCHAR(10) CHARACTER SET latin1")),
    "PRIMARY KEY (id)",
    {
        "insert": ["INSERT INTO t_compressed VALUES (1, REPEAT('é', 500), REPEAT('z', 50), "
                   "REPEAT(X'00FF', 3000), REPEAT(X'818D8F909D', 20000), 'x'), "
                   "(2, 'tiny', X'81', UNHEX(SHA2('x', 512)), '', 'y'), "
                   "(3, '', '', '', NULL, NULL)"],
        "update": ["UPDATE t_compressed SET v = CONCAT(v, '😀'), vs = X'9D', b = X'00', "
                   "t = REPEAT('ab', 40000), id = id + 10"],
        "delete": ["DELETE FROM t_compressed"],
    },
)

PHASES = ("insert", "update", "delete")


def create_sql(case: TableCase, scratch: bool) -> str:
    columns = [f"`{c.name}` {c.plain if scratch and c.plain else c.ddl}" for c in case.columns]
    if scratch:
        columns.append("`_img` INT NOT NULL")
    elif case.key:
        columns.append(case.key)
    name = f"scratch_{case.name}" if scratch else case.name
    return f"CREATE TABLE `{name}` ({', '.join(columns)}) DEFAULT CHARSET=utf8mb4"


def fingerprint_sql(case: TableCase, table: str) -> str:
    parts = []
    for c in case.columns:
        parts.append(f"HEX(CAST(`{c.name}` AS BINARY))")
        if c.is_float:
            parts.append(f"CAST(CAST(`{c.name}` AS DOUBLE) AS CHAR)")
        if c.is_enum_or_set:
            parts.append(f"`{c.name}` + 0")
    return f"SELECT {', '.join(parts)} FROM `{table}`"


def snapshot(conn, case: TableCase) -> Counter:
    with conn.cursor() as cur:
        cur.execute(fingerprint_sql(case, case.name))
        return Counter(cur.fetchall())


# -- the test ---------------------------------------------------------------------------------


def permissive_session(conn, time_zone: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SET time_zone = '{time_zone}', sql_mode = 'NO_ENGINE_SUBSTITUTION'")


def create_tables(conn, cases: list[TableCase], flavor: str) -> None:
    with conn.cursor() as cur:
        for case in cases:
            old_format = case is OLD_TEMPORAL and flavor == "mariadb"
            if old_format:
                cur.execute("SET GLOBAL mysql56_temporal_format = OFF")
            try:
                cur.execute(create_sql(case, scratch=False))
            finally:
                if old_format:
                    cur.execute("SET GLOBAL mysql56_temporal_format = ON")
            cur.execute(create_sql(case, scratch=True))


def run_workload(conn, cases: list[TableCase]) -> tuple[dict, dict]:
    """Run the phases; return each phase's binlog start and every table's snapshots."""
    starts, snapshots = {}, {c.name: [snapshot(conn, c)] for c in cases}
    for phase in PHASES:
        starts[phase] = binlog_position(conn)
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+02:00', sql_mode = ''")
            for case in cases:
                for statement in case.phases[phase]:
                    cur.execute(statement)
            cur.execute("SET time_zone = '+00:00'")
        for case in cases:
            snapshots[case.name].append(snapshot(conn, case))
    return starts, snapshots


def decode_events(events: list[RawEvent], schema: str, flavor: str) -> list[tuple]:
    """(phase-position, table name, TableSchema, RowChange) for each change in ``schema``."""
    maps: dict[int, TableSchema] = {}
    changes = []
    for event in events:
        if event.type == TABLE_MAP_EVENT:
            table = parse_table_map(event.body, flavor)
            maps[table.table_id] = table
        elif event.type in ROWS_EVENTS:
            table = maps[rows_event_table_id(event.body)]
            if table.schema != schema:
                continue
            for change in decode_rows(event.type, event.body, table):
                changes.append(((event.file, event.offset), table.table, table, change))
    return changes


def types_of(decoded: list[tuple], name: str) -> tuple[int, ...]:
    schema = next(schema for _, table, schema, _ in decoded if table == name)
    return tuple(c.type for c in schema.columns)


def write_images(conn, case: TableCase, table: TableSchema, images: list[tuple]) -> dict:
    """Write each decoded image into the scratch table; return image number -> fingerprint."""
    names = [c.name for c in case.columns]
    assert [c.name for c in table.columns] == names
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM `scratch_{case.name}`")
        for number, image in enumerate(images):
            assert MISSING not in image, "binlog_row_image=FULL images must be complete"
            literals = [sql_literal(v, c) for v, c in zip(image, table.columns, strict=True)]
            cur.execute(f"INSERT INTO `scratch_{case.name}` "
                        f"({', '.join(f'`{n}`' for n in names)}, `_img`) "
                        f"VALUES ({', '.join(literals)}, {number})")
            # The same literals must also find the row again: the backtrack locates rows by
            # them (this is where an unpadded BINARY(n) would fail; the server re-pads writes).
            matches = ", ".join(f"`{n}` <=> {lit}" for n, lit in zip(names, literals,
                                                                     strict=True))
            cur.execute(f"SELECT {matches} FROM `scratch_{case.name}` WHERE `_img` = {number}")
            found = cur.fetchone()
            assert all(found), (f"{case.name}: these columns do not compare equal to their own "
                                f"literal: {[n for n, ok in zip(names, found, strict=True) if not ok]}")
        cur.execute(fingerprint_sql(case, f"scratch_{case.name}").replace(
            " FROM ", ", `_img` FROM ", 1))
        return {row[-1]: row[:-1] for row in cur.fetchall()}


def load_images(conn, case: TableCase, table: TableSchema, images: list[tuple]) -> dict:
    """Write every decoded image into the scratch table with one LOAD DATA LOCAL (the backtrack's
    bulk path); return image number -> fingerprint, or None when the table has a column type
    that path leaves to INSERTs."""
    fields = tuple([(i, column) for i, column in enumerate(table.columns)]
                   + [(len(table.columns), ColumnDef("_img", FieldType.LONG))])
    names = tuple(f"`{c.name}`" for c in table.columns) + ("`_img`",)
    spec = load_spec(fields, names)
    if spec is None:
        return None
    rows = [image + (number,) for number, image in enumerate(images)]
    with conn.cursor() as cur:
        cur.execute(f"DELETE FROM `scratch_{case.name}`")
        assert load_rows(conn, f"`scratch_{case.name}`", spec, rows) == len(rows)
        cur.execute(fingerprint_sql(case, f"scratch_{case.name}").replace(" FROM ", ", `_img` FROM ", 1))
        return {row[-1]: row[:-1] for row in cur.fetchall()}


def describe_mismatch(case: TableCase, missing: Counter, extra: Counter) -> str:
    """Which fingerprint columns differ between each missing row and its closest decoded one."""
    labels = []
    for c in case.columns:
        labels.append(c.name)
        labels += [f"{c.name}:double"] if c.is_float else []
        labels += [f"{c.name}+0"] if c.is_enum_or_set else []
    lines = [f"{sum(missing.values())} server rows not reproduced, {sum(extra.values())} "
             "decoded rows not on the server"]
    for row in missing:
        if not extra:
            lines.append(f"  unmatched server row {str(row)[:200]}")
            continue
        closest = min(extra, key=lambda other: sum(a != b for a, b in zip(row, other,
                                                                         strict=True)))
        diffs = [f"{labels[i]}: server {str(a)[:80]} decoded {str(b)[:80]}"
                 for i, (a, b) in enumerate(zip(row, closest, strict=True)) if a != b]
        lines.append("  " + "; ".join(diffs))
    return "\n".join(lines)


def phase_of(position: tuple[str, int], starts: dict) -> int:
    return max(i for i, phase in enumerate(PHASES) if starts[phase] <= position)


def check_case(conn, case: TableCase, decoded: list[tuple], starts: dict,
               snapshots: list[Counter]) -> None:
    """Replay each phase's decoded changes over the fingerprints taken before it; the result
    must be exactly the fingerprints taken after it."""
    mine = [(phase_of(pos, starts), schema, change)
            for pos, name, schema, change in decoded if name == case.name]
    assert mine, f"no row events decoded for {case.name}"
    images = [image for _, _, change in mine for image in (change.before, change.after)
              if image is not None]
    written = write_images(conn, case, mine[-1][1], images)
    loaded = load_images(conn, case, mine[-1][1], images)
    if loaded is not None:  # the bulk path writes exactly what the literals write
        assert loaded == written, f"{case.name}: LOAD DATA wrote other bytes than the SQL literals: " + \
            describe_mismatch(case, Counter(written.values()) - Counter(loaded.values()),
                              Counter(loaded.values()) - Counter(written.values()))
    elif conn.get_server_info() and "MariaDB" in conn.get_server_info():
        pytest.fail(f"{case.name}: a column type LOAD DATA cannot write on MariaDB")
    fingerprints = iter(written[n] for n in range(len(images)))
    for phase_index, phase in enumerate(PHASES):
        state = Counter(snapshots[phase_index])
        for _, _, change in (m for m in mine if m[0] == phase_index):
            assert change.kind == phase, f"{case.name}: a {change.kind} in the {phase} phase"
            if change.before is not None:
                before = next(fingerprints)
                assert state[before] > 0, (
                    f"{case.name}, {phase}: decoded before-image matches no row: {before}")
                state[before] -= 1
            if change.after is not None:
                state[next(fingerprints)] += 1
        expected = snapshots[phase_index + 1]
        assert +state == +expected, (
            f"{case.name}, {phase} phase: decoded images do not reproduce the server's rows: "
            + describe_mismatch(case, +(expected - state), +(state - expected)))


def test_decoded_images_rewrite_the_servers_bytes(mysql_server, database, tmp_path):
    flavor = mysql_server.flavor
    cases = [types_case(flavor), NOPK, COMPOSITE, PREFIX_KEY, OLD_TEMPORAL]
    if flavor == "mariadb":
        cases.append(COMPRESSED)
    with mysql_server.connect(database, charset="utf8mb4", local_infile=True) as conn:
        create_tables(conn, cases, flavor)
        permissive_session(conn, "+00:00")  # fingerprints are always taken in UTC
        starts, snapshots = run_workload(conn, cases)
        events = read_events_since(mysql_server, starts["insert"], tmp_path)
        decoded = decode_events(events, database, flavor)
        if flavor == "mariadb":  # the formats these tables exist for really were exercised
            assert types_of(decoded, "t_old_temporal")[1:] == (11, 12, 7)  # pre-5.6 formats
            assert types_of(decoded, "t_compressed")[1:5] == (141, 141, 140, 140)
        permissive_session(conn, "+00:00")
        for case in cases:
            check_case(conn, case, decoded, starts, snapshots[case.name])


def test_table_map_matches_information_schema(mysql_server, database, tmp_path):
    """Names, nullability, signedness, charsets, ENUM/SET members and keys from the table map
    agree with what the server says about the same table."""
    flavor = mysql_server.flavor
    case = types_case(flavor)
    with mysql_server.connect(database, charset="utf8mb4") as conn:
        start = binlog_position(conn)
        create_tables(conn, [case], flavor)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t_types (id) VALUES (1)")
            cur.execute(
                "SELECT c.COLUMN_NAME, c.IS_NULLABLE, c.COLUMN_TYPE, co.ID, c.CHARACTER_SET_NAME,"
                " c.DATA_TYPE, c.IS_GENERATED FROM information_schema.COLUMNS c "
                "LEFT JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = c.COLLATION_NAME"
                " WHERE c.TABLE_SCHEMA = %s AND c.TABLE_NAME = 't_types' "
                "ORDER BY c.ORDINAL_POSITION", (database,))
            info = cur.fetchall()
    events = read_events_since(mysql_server, start, tmp_path)
    maps = [parse_table_map(e.body, flavor) for e in events if e.type == TABLE_MAP_EVENT]
    table = next(t for t in maps if t.schema == database and t.table == "t_types")
    assert table.primary_key == (0,)
    assert len(table.columns) == len(info)
    for column, (name, nullable, column_type, collation, charset, data_type, _) in zip(
            table.columns, info, strict=True):
        assert column.name == name
        assert column.nullable == (nullable == "YES"), name
        if data_type != "year":  # MariaDB marks YEAR unsigned, MySQL gives it no sign bit
            assert column.unsigned == ("unsigned" in column_type), name
        if collation is not None and data_type not in ("enum", "set"):
            assert column.charset == collation, name
            assert charset_name(column.charset) == charset, name
        if data_type in ("binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"):
            assert column.is_binary, name
    by_name = {c.name: c for c in table.columns}
    assert by_name["el"].members == (b"\xe9", b"\x81", b"b")
    assert by_name["sl"].members == (b"\xe9", b"\xe4", b"\x9d")
    assert len(by_name["e300"].members) == 300 and by_name["e300"].pack_length == 2
    assert len(by_name["s64"].members) == 64 and by_name["s64"].pack_length == 8
    assert by_name["d65"].precision == 65 and by_name["d65"].scale == 30
    assert by_name["tm4"].fsp == 4 and by_name["b17"].bits == 17
    assert by_name["cbig"].length == 800 and by_name["bin"].is_binary
    generated = {row[0] for row in info if row[6] == "ALWAYS"}
    assert generated == {"gv", "gs"}
    assert table.with_generated(generated).is_generated(table.column_names.index("gs"))


def test_prefix_primary_key_is_reported(mysql_server, database, tmp_path):
    with mysql_server.connect(database) as conn:
        start = binlog_position(conn)
        create_tables(conn, [PREFIX_KEY], mysql_server.flavor)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO t_prefix VALUES ('abc', 1)")
    events = read_events_since(mysql_server, start, tmp_path)
    table = next(t for t in (parse_table_map(e.body) for e in events
                             if e.type == TABLE_MAP_EVENT) if t.table == "t_prefix")
    assert table.primary_key == (0,)
    assert table.primary_key_prefixes[0] > 0
