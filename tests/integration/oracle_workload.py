"""The backtrack oracle's workload (test_oracle.py): the schema, random transactions as SQL, the
clients that run them through the proxy, and exact server-side snapshots.

Everything here is plain SQL text drawn by hypothesis strategies, so a failing example prints as
the statements that were run. Values are SQL expressions meant for a writer session with
``time_zone='+02:00'`` and ``sql_mode=''``: that is how zero and partial dates, negative TIME,
invalid ENUM values and clipped numbers reach the tables. Statements may fail on purpose
(duplicate keys, foreign keys): a failed statement is rolled back by the server on its own and the
transaction goes on, so the oracle only ever compares what the server really committed.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import pymysql
from hypothesis import strategies as st

from proxy.service import BackgroundService
from tests.integration.backtrack_support import connect_via

WRITER_SESSION = "SET time_zone = '+02:00', sql_mode = '', innodb_lock_wait_timeout = 10"
KEY_RANGE = 1000  # client c owns primary keys c*1000+1 .. c*1000+999 (c*1000+999 parks swaps)
PARKING = 999

# Errors a random statement may meet on purpose; the server rolls the statement back, nothing else.
STATEMENT_ERRORS = frozenset({
    1048,  # column cannot be null
    1062,  # duplicate key
    1264, 1292, 1366, 1406, 1690,  # values out of range (only in strict modes; kept for MySQL)
    1451, 1452,  # foreign key: parent row referenced / missing
    4025,  # CHECK constraint (MariaDB's JSON_VALID)
})
# Errors that end the whole transaction under concurrency: rolled back, then run again.
RETRY_ERRORS = frozenset({1205, 1213})  # lock wait timeout, deadlock
MAX_RETRIES = 20


# -- the schema ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column; ``pool`` holds the SQL expressions written into it (none: generated)."""

    name: str
    ddl: str
    pool: tuple[str, ...] = ()
    nullable: bool = True
    mariadb_only: bool = False

    @property
    def writable(self) -> bool:
        return bool(self.pool)

    def values(self) -> tuple[str, ...]:
        return self.pool + ("NULL",) if self.nullable else self.pool


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    clauses: str  # the key, indexes and foreign keys of CREATE TABLE

    def create_sql(self) -> str:
        columns = ", ".join(f"`{c.name}` {c.ddl}" for c in self.columns)
        return f"CREATE TABLE `{self.name}` ({columns}{', ' + self.clauses if self.clauses else ''}) " \
               "DEFAULT CHARSET=utf8mb4"

    @property
    def writable(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.writable)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _members(prefix: str, count: int) -> str:
    return ",".join(f"'{prefix}{i}'" for i in range(count))


D65_MAX = "9" * 35 + "." + "9" * 30
KEY = ("__key__",)  # the pool of a key column: filled in by the key strategies

# The full type list of the decoder's fidelity test, at its edge values, with the big values kept
# to tens of kilobytes (one example writes hundreds of row images).
WIDE_COLUMNS = (
    Column("id", "INT NOT NULL", KEY, nullable=False),
    Column("ti", "TINYINT", ("-128", "127", "0", "-1")),
    Column("tiu", "TINYINT UNSIGNED", ("0", "255", "128")),
    Column("si", "SMALLINT", ("-32768", "32767", "-2")),
    Column("siu", "SMALLINT UNSIGNED", ("65535", "32768", "0")),
    Column("mi", "MEDIUMINT", ("-8388608", "8388607", "-3")),
    Column("miu", "MEDIUMINT UNSIGNED", ("16777215", "8388608", "0")),
    Column("i", "INT", ("-2147483648", "2147483647", "-4")),
    Column("iu", "INT UNSIGNED", ("4294967295", "2147483648", "0")),
    Column("bi", "BIGINT", ("-9223372036854775808", "9223372036854775807", "-5")),
    Column("biu", "BIGINT UNSIGNED", ("18446744073709551615", "9223372036854775808", "0")),
    Column("d65", "DECIMAL(65,30)", (f"-{D65_MAX}", D65_MAX, "0", "-0." + "0" * 29 + "1")),
    Column("d10", "DECIMAL(10,2)", ("-99999999.99", "99999999.99", "1.05", "0")),
    Column("d55", "DECIMAL(5,5)", ("-0.99999", "0.99999", "-0.00001")),
    Column("d65i", "DECIMAL(65,0)", ("-" + "9" * 65, "9" * 65, "12345678901234567890")),
    Column("d12u", "DECIMAL(12,4) UNSIGNED", ("0", "99999999.9999", "0.0001", "-1")),
    Column("fl", "FLOAT", ("-3.40282e38", "3.40282e38", "1.4e-45", "0.1", "16777217", "-0.0", "0")),
    Column("db", "DOUBLE", ("-1.7976931348623157e308", "1.7976931348623157e308", "4.94e-324",
                            "0.30000000000000004", "-0.0", "0", "2.2250738585072014e-308")),
    Column("b1", "BIT(1)", ("b'0'", "b'1'")),
    Column("b9", "BIT(9)", ("0", "511", "256", "b'1'")),
    Column("b17", "BIT(17)", ("131071", "65536")),
    Column("b64", "BIT(64)", ("0", "18446744073709551615", "9223372036854775808", "1")),
    Column("dt", "DATE", ("'0000-00-00'", "'9999-12-31'", "'0001-01-01'", "'2020-00-15'", "'2020-02-00'",
                          "CURDATE()")),
    Column("tm", "TIME", ("'-838:59:59'", "'838:59:59'", "'-00:00:01'", "'00:00:00'")),
    Column("tm1", "TIME(1)", ("'-838:59:58.9'", "'-00:00:00.1'", "'12:34:56.7'")),
    Column("tm3", "TIME(3)", ("'-01:02:03.004'", "'-00:00:00.001'", "'838:59:58.999'")),
    Column("tm6", "TIME(6)", ("'-00:00:00.000001'", "'838:59:59.999999'", "'-838:59:59.999999'",
                              "'-12:00:00.5'")),
    Column("dtm", "DATETIME", ("'0000-00-00 00:00:00'", "'9999-12-31 23:59:59'", "'2020-00-15 10:00:00'",
                               "'1000-01-01 00:00:00'")),
    Column("dtm2", "DATETIME(2)", ("'0000-00-00 00:00:00.00'", "'9999-12-31 23:59:59.99'",
                                   "'2020-02-00 00:00:00.01'")),
    Column("dtm6", "DATETIME(6)", ("'0000-01-01 00:00:00.000001'", "'2001-02-03 04:05:06.123456'", "NOW(6)",
                                   "'9999-12-31 23:59:59.999999'")),
    Column("ts", "TIMESTAMP NULL", ("'0000-00-00 00:00:00'", "'2038-01-19 05:14:07'", "'1970-01-01 02:00:01'",
                                    "'1970-01-01 02:00:00'", "NOW()")),
    Column("ts3", "TIMESTAMP(3) NULL", ("'1970-01-01 02:00:01.001'", "'2038-01-19 05:14:07.999'",
                                        "'2020-03-29 03:30:00.5'")),
    Column("ts6", "TIMESTAMP(6) NULL", ("'2038-01-19 05:14:07.999999'", "'1970-01-01 02:00:01.000001'",
                                        "'0000-00-00 00:00:00'", "NOW(6)")),
    Column("tsu", "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)",
           ("'2010-10-10 10:10:10.101010'", "DEFAULT"), nullable=False),
    Column("yr", "YEAR", ("0", "1901", "2155", "2000", "69")),
    Column("cu", "CHAR(10) CHARACTER SET utf8mb4", ("''", "'😀é\u0303 \u3000'", "'abc  '", "'a\\0b'", "'E'")),
    Column("vcs", "VARCHAR(50) CHARACTER SET utf8mb4", ("'short'", "REPEAT('é', 50)", "''", "' '", "'x  '")),
    Column("vcu", "VARCHAR(300) CHARACTER SET utf8mb4", ("REPEAT('😀', 300)", "'trailing  '", "'a\\nb\\0'")),
    Column("tx", "TEXT CHARACTER SET utf8mb4", ("'text 😀'", "''", "REPEAT('ab', 1000)", "'\\''")),
    Column("ttx", "TINYTEXT CHARACTER SET utf8mb4", ("REPEAT('z', 255)", "'é'")),
    Column("mtx", "MEDIUMTEXT CHARACTER SET utf8mb4", ("REPEAT('é', 33000)", "'m'")),  # 66000 bytes
    Column("ltx", "LONGTEXT CHARACTER SET utf8mb4", ("REPEAT('😀', 300)", "''")),
    Column("cl", "CHAR(10) CHARACTER SET latin1", ("X'818D8F909D'", "'é'", "X'FF80'", "''")),
    Column("vcl", "VARCHAR(20) CHARACTER SET latin1", ("X'00818D8F909DFF'", "'€'", "'abc  '")),
    Column("txl", "TEXT CHARACTER SET latin1", ("X'818D8F909D'", "X'00'", "'ÿ'")),
    Column("v16", "VARCHAR(10) CHARACTER SET utf16", ("'héllo'", "'😀'", "''")),
    Column("bin", "BINARY(8)", ("X'0100000000000000'", "X'0000000000000000'", "X'FF00'", "X'00'", "''")),
    Column("vbin", "VARBINARY(20)", ("X'00'", "X'0000'", "''", "X'FF00'")),
    Column("blb", "BLOB", ("X'000102FF00'", "''", "X'00'", "REPEAT(X'00FF', 300)")),
    Column("tblb", "TINYBLOB", ("REPEAT(X'AB', 255)", "X'FF'", "X'00'")),
    Column("mblb", "MEDIUMBLOB", ("REPEAT(X'00FF', 33000)", "X'01'", "X'00'")),
    Column("lblb", "LONGBLOB", ("X'0000'", "REPEAT(X'01FE', 200)")),
    Column("js", "JSON", ("'{\"a\": [1, 2.5, \"x\"], \"b\": null}'", "'[]'", "'\"é\"'", "'null'", "'1e300'")),
    Column("e", "ENUM('a','b','é','') CHARACTER SET utf8mb4", ("'a'", "'é'", "'zz'", "''")),
    Column("el", "ENUM('é', X'81', 'b') CHARACTER SET latin1", ("X'81'", "'é'", "'nope'")),
    Column("e300", f"ENUM({_members('m', 300)})", ("'m0'", "'m299'", "'m256'")),
    Column("s", "SET('x','y','z')", ("''", "'x,y,z'", "'z,x'")),
    Column("sl", "SET('é','ä', X'9D') CHARACTER SET latin1", ("X'9D'", "'é,ä'", "''")),
    Column("s64", f"SET({_members('s', 64)})", ("'s63'", "'s0,s63'", "''", "'s31,s32'")),
    Column("gv", "INT AS (ti + 1) VIRTUAL"),
    Column("gs", "VARCHAR(60) CHARACTER SET utf8mb4 AS (CONCAT(vcs, '!')) STORED"),
    Column("vcz", "VARCHAR(1000) CHARACTER SET utf8mb4 COMPRESSED", ("REPEAT('é', 400)", "'z'", "''"),
           mariadb_only=True),
    Column("bz", "BLOB COMPRESSED", ("REPEAT(X'00FF', 2000)", "X'00'"), mariadb_only=True),
    Column("ip", "INET6", ("'::'", "'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'", "'::1'", "'1::'"),
           mariadb_only=True),
    Column("uu", "UUID", ("'00000000-0000-0000-0000-000000000000'", "UUID()",
                          "'ffffffff-ffff-ffff-ffff-ffffffffffff'"), mariadb_only=True),
    Column("geo", "GEOMETRY", ("ST_GeomFromText('POINT(1 2)')", "ST_GeomFromText('LINESTRING(0 0,1 1,2 0)')",
                               "ST_GeomFromText('POINT(0 0)', 4326)")),
    Column("pt", "POINT", ("POINT(1.5, -2)", "POINT(-1e300, 1e-300)")),
)

# No primary key, a secondary index, duplicates on purpose: small pools, so equal rows are common.
BAG_COLUMNS = (
    Column("a", "INT", ("1", "2", "3")),
    Column("f", "DOUBLE", ("0.1", "-0.0", "0", "1e300")),
    Column("fl", "FLOAT", ("0.1", "3.40282e38", "-1.5")),
    Column("s", "VARCHAR(10) CHARACTER SET latin1", ("X'81'", "'x'", "'x '", "'X'")),
    Column("c", "CHAR(5) CHARACTER SET utf8mb4", ("'ab'", "'AB'", "'é'", "''")),
    Column("t", "TIMESTAMP(6) NULL", ("'2001-01-01 00:00:00.5'", "'0000-00-00 00:00:00'")),
    Column("d", "DATETIME(3)", ("'2020-00-15 10:00:00.001'", "'0000-00-00 00:00:00'")),
    Column("j", "JSON", ("'[1]'", "'{\"k\": \"é\"}'")),
    Column("b", "BIT(9)", ("0", "511")),
    Column("bl", "BLOB", ("X'00'", "X'0000'", "''")),
    Column("e", "ENUM('x','y','')", ("'x'", "''", "'bad'")),
)

# A composite key whose VARCHAR part compares case- and accent-insensitively and ignores trailing
# spaces (utf8mb4_general_ci, PAD SPACE): 'e', 'E', 'é' and 'x', 'x ' are one key to the server.
CPK_COLUMNS = (
    Column("a", "INT NOT NULL", KEY, nullable=False),
    Column("b", "VARCHAR(20) CHARACTER SET utf8mb4 NOT NULL", ("'e'", "'E'", "'é'", "'x'", "'x '", "'😀'", "''"),
           nullable=False),
    Column("c", "DATETIME(6) NOT NULL", ("'0000-00-00 00:00:00'", "'2020-01-01 00:00:00.000001'",
                                         "'2020-00-15 10:00:00'", "'9999-12-31 23:59:59.999999'"), nullable=False),
    Column("v", "INT", ("1", "2", "-2147483648")),
    Column("w", "VARCHAR(10) CHARACTER SET latin1", ("X'9D'", "'w'", "''")),
)

# A prefix primary key: rows whose first 4 characters agree are one key to the server. The pool is
# written per client: {c} is replaced by the client's letter, so clients never share a key.
PREFIXED_COLUMNS = (
    Column("k", "VARCHAR(40) CHARACTER SET utf8mb4 NOT NULL", ("'{c}abc'", "'{c}abcd'", "'{c}abcde'", "'{c}ABCDÉ'",
                                                             "'{c}ab'", "'{c}é😀é'", "'{c}é😀éz'"), nullable=False),
    Column("v", "INT", ("1", "2")),
)

PARENT_COLUMNS = (
    Column("id", "INT NOT NULL", KEY, nullable=False),
    Column("name", "VARCHAR(20) CHARACTER SET utf8mb4", ("'p'", "'P'", "'😀'")),
    Column("score", "DOUBLE", ("0.5", "-0.0")),
)

CHILD_COLUMNS = (
    Column("id", "INT NOT NULL", KEY, nullable=False),
    Column("parent_id", "INT", KEY),
    Column("qty", "DECIMAL(10,2)", ("1.50", "-99999999.99")),
    Column("note", "VARCHAR(20) CHARACTER SET latin1", ("X'8F'", "'n'")),
)


@dataclass(frozen=True)
class Schema:
    """The tables of one oracle database (the wide tables depend on the server's flavor)."""

    wide: Table
    heap: Table
    bag: Table
    cpk: Table
    prefixed: Table
    parent: Table
    child: Table

    @property
    def tables(self) -> tuple[Table, ...]:
        return (self.wide, self.heap, self.bag, self.cpk, self.prefixed, self.parent, self.child)


def oracle_schema(flavor: str) -> Schema:
    wide = tuple(c for c in WIDE_COLUMNS if flavor == "mariadb" or not c.mariadb_only)
    return Schema(
        wide=Table("wide", wide, "PRIMARY KEY (id)"),
        heap=Table("heap", wide, "KEY (id)"),  # the same columns without a primary key
        bag=Table("bag", BAG_COLUMNS, "KEY (a)"),
        cpk=Table("cpk", CPK_COLUMNS, "PRIMARY KEY (a, b, c)"),
        prefixed=Table("prefixed", PREFIXED_COLUMNS, "PRIMARY KEY (k(4))"),
        parent=Table("parent", PARENT_COLUMNS, "PRIMARY KEY (id)"),
        # No ON DELETE / ON UPDATE action: RESTRICT. (Cascades are a conflict by design.)
        child=Table("child", CHILD_COLUMNS, "PRIMARY KEY (id), KEY (parent_id), "
                    "FOREIGN KEY (parent_id) REFERENCES parent (id)"),
    )


# -- transactions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Txn:
    """One client transaction: ``ending`` is ``commit``, ``rollback`` or ``autocommit`` (a single
    statement outside BEGIN/COMMIT). Statements may include SAVEPOINT / ROLLBACK TO SAVEPOINT."""

    statements: tuple[str, ...]
    ending: str


Round = tuple[tuple[Txn, ...], ...]  # what each client runs, all clients at the same time


def _values(column: Column) -> st.SearchStrategy[str]:
    return st.sampled_from(column.values())


def _row(columns: tuple[Column, ...], keys: dict[str, st.SearchStrategy[int]]) -> st.SearchStrategy[str]:
    parts = [keys[c.name].map(str) if c.pool == KEY else _values(c) for c in columns]
    return st.tuples(*parts).map(lambda values: "(" + ", ".join(values) + ")")


def _assignments(table: Table, keys: dict, max_size: int = 4) -> st.SearchStrategy[str]:
    """``col = value, ...`` for some non-key columns."""
    columns = [c for c in table.writable if c.pool != KEY]
    chosen = st.lists(st.sampled_from(columns), min_size=1, max_size=max_size, unique_by=lambda c: c.name)
    return chosen.flatmap(lambda cs: st.tuples(*[_values(c).map(lambda v, c=c: f"`{c.name}` = {v}") for c in cs])
                          ).map(", ".join)


@st.composite
def _insert(draw: st.DrawFn, table: Table, keys: dict,
            verbs: tuple[str, ...] = ("INSERT", "INSERT IGNORE", "REPLACE")) -> str:
    writable = table.writable
    if draw(st.booleans()):
        columns = writable
    else:
        required = tuple(c for c in writable if c.pool == KEY or not c.nullable and c.name != "tsu")
        optional = [c for c in writable if c not in required]
        extra = draw(st.lists(st.sampled_from(optional), max_size=5, unique_by=lambda c: c.name))
        columns = tuple(c for c in writable if c in required or c in extra)
    rows = draw(st.lists(_row(columns, keys), min_size=1, max_size=3))
    verb = draw(st.sampled_from(verbs + ("ODKU",)))
    names = ", ".join(f"`{c.name}`" for c in columns)
    head = "INSERT" if verb == "ODKU" else verb
    sql = f"{head} INTO `{table.name}` ({names}) VALUES {', '.join(rows)}"
    if verb == "ODKU":
        sql += " ON DUPLICATE KEY UPDATE " + draw(_assignments(table, keys, 3))
    return sql


def _key_strategies(base: int) -> dict[str, st.SearchStrategy[int]]:
    return {
        "id": st.integers(base + 1, base + 8),
        "a": st.integers(base + 1, base + 3),
        "parent_id": st.integers(base + 1, base + 5),
    }


@st.composite
def _wide_op(draw: st.DrawFn, table: Table, base: int) -> tuple[str, ...]:
    keys = _key_strategies(base)
    key = keys["id"]
    everything = f"id BETWEEN {base + 1} AND {base + PARKING - 1}"
    kind = draw(st.sampled_from(("insert", "insert", "update", "update", "key", "shift", "swap", "delete")))
    if kind == "insert":
        return (draw(_insert(table, keys)),)
    if kind == "update":
        where = draw(st.one_of(key.map(lambda k: f"id = {k}"),
                               st.tuples(key, key).map(lambda ks: f"id IN {ks}"),
                               st.just(everything)))
        return (f"UPDATE wide SET {draw(_assignments(table, keys))} WHERE {where}",)
    if kind == "key":  # a primary key update, maybe with other columns
        sets = draw(st.one_of(st.just(""), _assignments(table, keys, 2).map(lambda s: ", " + s)))
        return (f"UPDATE wide SET id = {draw(key)}{sets} WHERE id = {draw(key)}",)
    if kind == "shift":  # several key updates in one statement, ordered so no key collides midway
        delta = draw(st.sampled_from((-3, -1, 1, 5)))
        order = "DESC" if delta > 0 else "ASC"
        return (f"UPDATE wide SET id = id + {delta} WHERE {everything} AND id + {delta} > {base} "
                f"ORDER BY id {order}",)
    if kind == "swap":  # two rows trade keys within one transaction
        x, y, park = draw(key), draw(key), base + PARKING
        return (f"UPDATE wide SET id = {park} WHERE id = {x}", f"UPDATE wide SET id = {x} WHERE id = {y}",
                f"UPDATE wide SET id = {y} WHERE id = {park}")
    where = draw(st.one_of(key.map(lambda k: f"id = {k}"), st.tuples(key, key).map(
        lambda ks: f"id BETWEEN {min(ks)} AND {max(ks)}"), st.just(everything)))
    return (f"DELETE FROM wide WHERE {where}",)


@st.composite
def _heap_op(draw: st.DrawFn, table: Table, base: int) -> tuple[str, ...]:
    # Every type in a table without a primary key: rows are found by their whole image.
    keys = _key_strategies(base)
    key = keys["id"]
    limit = st.sampled_from(("", " LIMIT 1", " LIMIT 2"))
    kind = draw(st.sampled_from(("insert", "dup", "update", "move", "delete")))
    if kind == "insert":
        return (draw(_insert(table, keys, verbs=("INSERT",))),)
    if kind == "dup":  # an exact copy of a row that is there
        names = ", ".join(f"`{c.name}`" for c in table.writable)
        return (f"INSERT INTO heap ({names}) SELECT {names} FROM heap WHERE id = {draw(key)} LIMIT 1",)
    if kind == "update":
        return (f"UPDATE heap SET {draw(_assignments(table, keys))} WHERE id = {draw(key)}{draw(limit)}",)
    if kind == "move":
        return (f"UPDATE heap SET id = {draw(key)} WHERE id = {draw(key)}{draw(limit)}",)
    return (f"DELETE FROM heap WHERE id = {draw(key)}{draw(limit)}",)


@st.composite
def _bag_op(draw: st.DrawFn, table: Table, base: int) -> tuple[str, ...]:
    # The bag is shared by every client (no key to own): concurrent clients meet on its rows.
    a = st.sampled_from(table.column("a").pool)
    limit = st.sampled_from(("", " LIMIT 1", " LIMIT 2"))
    kind = draw(st.sampled_from(("insert", "insert", "dup", "update", "move", "delete")))
    if kind == "insert":
        rows = draw(st.lists(_row(table.columns, {}), min_size=1, max_size=3))
        return (f"INSERT INTO bag VALUES {', '.join(rows)}",)
    if kind == "dup":  # an exact copy of a row that is there
        return (f"INSERT INTO bag SELECT * FROM bag WHERE a = {draw(a)} LIMIT 1",)
    if kind == "update":
        return (f"UPDATE bag SET {draw(_assignments(table, {}, 3))} WHERE a = {draw(a)}{draw(limit)}",)
    if kind == "move":
        return (f"UPDATE bag SET a = {draw(a)} WHERE a = {draw(a)}{draw(limit)}",)
    extra = draw(st.one_of(st.just(""), _values(table.column("s")).map(lambda v: f" AND s <=> {v}")))
    return (f"DELETE FROM bag WHERE a = {draw(a)}{extra}{draw(limit)}",)


@st.composite
def _cpk_op(draw: st.DrawFn, table: Table, base: int) -> tuple[str, ...]:
    keys = _key_strategies(base)
    a = keys["a"]
    b, c = _values(table.column("b")), _values(table.column("c"))
    kind = draw(st.sampled_from(("insert", "insert", "update", "key_b", "recase", "key_c", "key_a", "delete")))
    if kind == "insert":
        return (draw(_insert(table, keys)),)
    if kind == "update":
        return (f"UPDATE cpk SET {draw(_assignments(table, keys, 2))} WHERE a = {draw(a)}",)
    if kind == "key_b":  # may change only the case, the accent or trailing spaces of a key part
        return (f"UPDATE cpk SET b = {draw(b)} WHERE a = {draw(a)} AND b = {draw(b)}",)
    if kind == "recase":  # a new key to the log, the same key to the collation (or a duplicate)
        expression = draw(st.sampled_from(("UPPER(b)", "LOWER(b)", "CONCAT(b, ' ')", "TRIM(b)",
                                           "REPLACE(b, 'e', 'é')")))
        return (f"UPDATE cpk SET b = {expression} WHERE a = {draw(a)}",)
    if kind == "key_c":
        return (f"UPDATE cpk SET c = {draw(c)}, v = {draw(_values(table.column('v')))} WHERE a = {draw(a)}",)
    if kind == "key_a":
        delta = draw(st.sampled_from((-1, 1)))
        return (f"UPDATE cpk SET a = a + {delta} WHERE a = {draw(a)}",)
    extra = draw(st.one_of(st.just(""), b.map(lambda v: f" AND b = {v}")))
    return (f"DELETE FROM cpk WHERE a = {draw(a)}{extra}",)


def _client_letter(base: int) -> str:
    return "pqrs"[base // KEY_RANGE]


@st.composite
def _prefixed_op(draw: st.DrawFn, table: Table, base: int) -> tuple[str, ...]:
    letter = _client_letter(base)
    k = _values(table.column("k")).map(lambda v: v.replace("{c}", letter))
    v = _values(table.column("v"))
    kind = draw(st.sampled_from(("insert", "update", "rekey", "delete")))
    if kind == "insert":
        verb = draw(st.sampled_from(("INSERT", "INSERT IGNORE", "REPLACE")))
        return (f"{verb} INTO prefixed VALUES ({draw(k)}, {draw(v)})",)
    if kind == "update":
        return (f"UPDATE prefixed SET v = {draw(v)} WHERE k = {draw(k)}",)
    if kind == "rekey":  # beyond the prefix or within it, or the case of it
        expression = draw(st.sampled_from(("CONCAT(k, 'z')", "LEFT(k, 3)", "UPPER(k)", "REVERSE(k)")) | k)
        return (f"UPDATE prefixed SET k = {expression} WHERE k = {draw(k)}",)
    return (f"DELETE FROM prefixed WHERE k = {draw(k)}",)


@st.composite
def _family_op(draw: st.DrawFn, schema: Schema, base: int) -> tuple[str, ...]:
    keys = _key_strategies(base)
    pid = keys["parent_id"]
    kind = draw(st.sampled_from(("parent", "child", "child", "reparent", "rekey", "drop_parent", "drop_child")))
    if kind == "parent":
        return (draw(_insert(schema.parent, {"id": pid})),)
    if kind == "child":
        return (draw(_insert(schema.child, keys, verbs=("INSERT", "INSERT IGNORE"))),)
    if kind == "reparent":
        target = draw(st.one_of(pid.map(str), st.just("NULL")))
        return (f"UPDATE child SET parent_id = {target} WHERE id = {draw(keys['id'])}",)
    if kind == "rekey":  # refused by the server while a child points at the parent
        return (f"UPDATE parent SET id = {draw(pid)} WHERE id = {draw(pid)}",)
    if kind == "drop_parent":
        return (f"DELETE FROM parent WHERE id = {draw(pid)}",)
    return (f"DELETE FROM child WHERE id = {draw(keys['id'])}",)


def _operation(schema: Schema, base: int) -> st.SearchStrategy[tuple[str, ...]]:
    return st.one_of(_wide_op(schema.wide, base), _heap_op(schema.heap, base), _bag_op(schema.bag, base),
                     _cpk_op(schema.cpk, base), _prefixed_op(schema.prefixed, base), _family_op(schema, base))


@st.composite
def transactions(draw: st.DrawFn, schema: Schema, base: int = 0, max_ops: int = 4) -> Txn:
    """A random transaction of client ``base // KEY_RANGE``: 1..max_ops operations over any tables."""
    operation = _operation(schema, base)
    ending = draw(st.sampled_from(("commit", "commit", "commit", "autocommit", "rollback")))
    if ending == "autocommit":
        single = draw(operation.filter(lambda op: len(op) == 1))
        return Txn(single, "autocommit")
    ops = draw(st.lists(operation, min_size=1, max_size=max_ops))
    statements = [s for op in ops for s in op]
    if len(ops) > 1 and draw(st.integers(0, 3)) == 0:  # undo a stretch of it with a savepoint
        start = draw(st.integers(0, len(statements) - 1))
        end = draw(st.integers(start + 1, len(statements)))
        statements[end:end] = ["ROLLBACK TO SAVEPOINT sp"]
        statements[start:start] = ["SAVEPOINT sp"]
    return Txn(tuple(statements), ending)


SEED_KEYS = {"id": 8, "a": 3, "parent_id": 4}  # as many as the key strategies use (4 parents are seeded)


def seed_statements(schema: Schema, clients: int) -> tuple[str, ...]:
    """Rows for every client's keys (and the shared bag) holding every edge value of every column
    at least once, column values taken in turn from their pools, so that updates and deletes have
    rows to meet from the first transaction on."""

    def rows(table: Table, count: int, keys: dict[str, int]) -> str:
        columns = table.writable
        values = []
        for k in range(count):
            row = [str(keys[c.name] + k % SEED_KEYS[c.name] + 1) if c.pool == KEY
                   else c.values()[k % len(c.values())] for c in columns]
            values.append("(" + ", ".join(row) + ")")
        names = ", ".join(f"`{c.name}`" for c in columns)
        return f"INSERT IGNORE INTO `{table.name}` ({names}) VALUES {', '.join(values)}"

    statements = [rows(schema.bag, 6, {}), "INSERT INTO bag SELECT * FROM bag LIMIT 2"]  # duplicates
    for client in range(clients):
        base = client * KEY_RANGE
        keys = {"id": base, "a": base, "parent_id": base}
        names = ", ".join(f"`{c.name}`" for c in schema.heap.writable)
        statements += [rows(schema.wide, 7, keys), rows(schema.heap, 7, keys),
                       f"INSERT INTO heap ({names}) SELECT {names} FROM heap WHERE id = {base + 1}",  # duplicates
                       rows(schema.cpk, 7, keys), rows(schema.parent, 4, keys), rows(schema.child, 5, keys),
                       "INSERT IGNORE INTO prefixed VALUES " + ", ".join(
                           f"({k.replace('{c}', _client_letter(base))}, {n})"
                           for n, k in enumerate(schema.prefixed.column("k").pool))]
    return tuple(statements)


# -- running them ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the server made of a workload: used to check that the workload does something."""

    committed: int = 0
    rolled_back: int = 0
    rows: int = 0  # rows changed by statements that succeeded
    failed: Counter = field(default_factory=Counter)  # error code -> statements refused on purpose
    retries: int = 0
    undone: Counter = field(default_factory=Counter)  # "table delete|reinsert|restore" -> rows, by backtracks
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, other: Tally) -> None:
        with self._lock:
            self.committed += other.committed
            self.rolled_back += other.rolled_back
            self.rows += other.rows
            self.failed.update(other.failed)
            self.retries += other.retries
            self.undone.update(other.undone)

    def backtracked(self, rows: dict[str, dict[str, int]]) -> None:
        """Count what a backtrack wrote (its record's ``rows``: "db.table" -> counts)."""
        with self._lock:
            for name, counts in rows.items():
                for kind, n in counts.items():
                    self.undone[f"{name.partition('.')[2]} {kind}"] += n


def writer(svc: BackgroundService, server, database: str) -> pymysql.Connection:
    """A client connection through the proxy in the permissive '+02:00' writer session."""
    conn = connect_via(svc, server, database, charset="utf8mb4")
    with conn.cursor() as cur:
        cur.execute(WRITER_SESSION)
    return conn


def _error_code(exc: pymysql.MySQLError) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def run_transaction(conn: pymysql.Connection, txn: Txn) -> Tally:
    """Run one transaction; under concurrency, run it again after a deadlock or lock timeout."""
    tally = Tally()
    for _attempt in range(MAX_RETRIES):
        attempt = Tally()
        try:
            with conn.cursor() as cur:
                if txn.ending != "autocommit":
                    cur.execute("BEGIN")
                for statement in txn.statements:
                    try:
                        attempt.rows += cur.execute(statement)
                    except pymysql.MySQLError as exc:
                        if _error_code(exc) not in STATEMENT_ERRORS:
                            raise
                        attempt.failed[_error_code(exc)] += 1
                if txn.ending == "rollback":
                    cur.execute("ROLLBACK")
                    attempt.rolled_back += 1
                else:
                    if txn.ending == "commit":
                        cur.execute("COMMIT")
                    attempt.committed += 1
        except pymysql.MySQLError as exc:
            if _error_code(exc) not in RETRY_ERRORS:
                raise
            conn.rollback()
            tally.retries += 1
            continue
        tally.add(attempt)
        return tally
    raise AssertionError(f"transaction gave up after {MAX_RETRIES} deadlocks: {txn}")


def run_round(connections: list[pymysql.Connection], round_: Round) -> Tally:
    """Every client runs its transactions; clients run at the same time. Returns when all are done
    (a quiescent point: no transaction open anywhere)."""
    tally = Tally()
    if len(round_) == 1:
        for txn in round_[0]:
            tally.add(run_transaction(connections[0], txn))
        return tally
    errors: list[BaseException] = []
    start = threading.Barrier(len(round_))

    def client(conn: pymysql.Connection, txns: tuple[Txn, ...]) -> None:
        try:
            start.wait(10)
            for txn in txns:
                tally.add(run_transaction(conn, txn))
        except BaseException as exc:  # re-raised by the caller
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(conn, txns)) for conn, txns in zip(connections, round_,
                                                                                          strict=False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), "a client is stuck"
    return tally


# -- exact snapshots ----------------------------------------------------------------------------------


HASHED_TYPES = frozenset({"text", "mediumtext", "longtext", "blob", "mediumblob", "longblob"})


def _column_expression(name: str, data_type: str) -> list[str]:
    column = f"`{name}`"
    if data_type in ("float", "double"):
        # the decimal text of a FLOAT is rounded; the exact double (with -0) is not
        return [f"HEX(CAST({column} AS BINARY))", f"CAST(CAST({column} AS DOUBLE) AS CHAR)"]
    if data_type in ("enum", "set"):  # '' can be member '' or the invalid value 0
        return [f"HEX(CAST({column} AS BINARY))", f"{column} + 0"]
    if data_type in HASHED_TYPES:  # exact bytes, hashed: long values stay cheap to compare
        return [f"CONCAT(LENGTH({column}), ':', SHA2(CAST({column} AS BINARY), 256))"]
    return [f"HEX(CAST({column} AS BINARY))"]


Snapshot = dict[str, list[tuple]]


def snapshot(server, database: str) -> Snapshot:
    """Every table's rows as the server's own bytes, sorted: TIMESTAMPs in UTC, exact doubles,
    ENUM/SET indexes, hashes of long values. Read on the server directly, never through the proxy."""
    result = {}
    with server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SET time_zone = '+00:00'")
        cur.execute("SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION", (database,))
        columns: dict[str, list[str]] = {}
        for table, column, data_type in cur.fetchall():
            columns.setdefault(table, []).extend(_column_expression(column, data_type))
        for table, expressions in columns.items():
            cur.execute(f"SELECT {', '.join(expressions)} FROM `{table}`")
            result[table] = sorted(cur.fetchall(), key=repr)
    return result


def describe_difference(actual: Snapshot, expected: Snapshot, limit: int = 6) -> str:
    """Per table: the rows the database has that the snapshot has not, and the other way round."""
    lines = []
    for table in sorted(set(actual) | set(expected)):
        have, want = Counter(actual.get(table, [])), Counter(expected.get(table, []))
        extra, missing = have - want, want - have
        if not extra and not missing:
            continue
        lines.append(f"{table}: {sum(extra.values())} unexpected row(s), {sum(missing.values())} missing")
        lines += [f"  + {str(row)[:300]}" for row in list(extra)[:limit]]
        lines += [f"  - {str(row)[:300]}" for row in list(missing)[:limit]]
    return "\n".join(lines) or "no difference"


def rows_in(snap: Snapshot) -> int:
    return sum(len(rows) for rows in snap.values())

