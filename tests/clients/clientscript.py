"""The one script every client runs through the proxy, and the results it must give.

The client-compatibility tests (tests/integration/test_clients.py) drive several real clients
(PyMySQL, mysql-connector-python pure and C, SQLAlchemy ORM, the mariadb command-line client,
Node's mysql2) through the proxy. Each client has an adapter that runs these ``STEPS`` its own
way and reports one raw observation per step; ``comparable`` turns that into the form of
``EXPECTED`` so that every client is held to exactly the same results.

The script covers DDL, DML with and without a transaction, a rollback, prepared statements, a
20 MiB BLOB written and read back (bigger than one 16 MiB protocol packet, in both directions), a
multi-statement query with several result sets, LOAD DATA LOCAL INFILE, and a failing query
followed by a working one on the same connection.

Observations, by step kind:
  * EXEC, BLOB_WRITE, LOAD_LOCAL: affected rows (int);
  * QUERY: the rows; PREPARED: the rows, or affected rows when it returns no result set;
  * MULTI: the result sets that have columns, in order (OK results are left out);
  * BLOB_READ: the bytes read (or their ``blob_digest`` from clients in another process);
  * ERROR: the server's error number; BEGIN / COMMIT / ROLLBACK: nothing.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

BLOB_SIZE = 20 * 1024 * 1024  # > 0xFFFFFF: the BLOB needs two protocol chunks each way
BLOB_PARAM = "<the 20 MiB blob>"  # stands for the BLOB in a step's params
INFILE_PATH = "{infile}"  # stands for the LOCAL INFILE's path in a step's SQL
INFILE_ROWS = 5000  # ~85 KiB: every client uploads it in several packets
ER_NO_SUCH_TABLE = 1146

Row = tuple[str | None, ...]


class Kind(StrEnum):
    """What a step does; each adapter maps a kind onto its client's own API."""

    EXEC = "exec"  # a statement without a result set, text protocol
    QUERY = "query"  # a statement with one result set, text protocol
    BEGIN = "begin"  # the client's own way of starting a transaction
    COMMIT = "commit"
    ROLLBACK = "rollback"
    PREPARED = "prepared"  # '?' placeholders: server-side prepared where the client has them
    BLOB_WRITE = "blob_write"  # params hold BLOB_PARAM
    BLOB_READ = "blob_read"
    MULTI = "multi"  # several statements in one query
    LOAD_LOCAL = "load_local"  # LOAD DATA LOCAL INFILE of infile_text()
    ERROR = "error"  # a statement that must fail


@dataclass(frozen=True)
class Step:
    """One step of the script; ``expect`` None means "only has to succeed"."""

    name: str
    kind: Kind
    sql: str = ""
    params: tuple[int | str, ...] = ()
    expect: Any = None


@dataclass(frozen=True)
class ClientRun:
    """What one client's run of the script gave: raw observations, and its log for failures."""

    observed: dict[str, Any]
    log: str = ""


ITEMS_AFTER_TRANSACTIONS = [("1", "apple", "4"), ("2", "pear", "5"), ("3", "plum", "7")]
ITEMS_AT_END = [("1", "apple", "4"), ("2", "pear", "5"), ("3", "plum", "70"), ("5", "kiwi", "9")]
LOADED_SUMMARY = [(str(INFILE_ROWS), str(INFILE_ROWS - INFILE_ROWS // 1000),
                   str(INFILE_ROWS * (INFILE_ROWS + 1) // 2))]
LOADED_SAMPLE = [("1", "label-1"), ("999", "label-999"), ("1000", None), ("5000", None)]

STEPS: tuple[Step, ...] = (
    # A session variable and the connection id, to prove later that the error kept the session.
    Step("remember_session", Kind.EXEC, "SET @marker = 'kept', @conn = CONNECTION_ID()"),
    Step("create_items", Kind.EXEC,
         "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, qty INT NOT NULL)"),
    Step("create_blobs", Kind.EXEC, "CREATE TABLE blobs (id INT PRIMARY KEY, data LONGBLOB)"),
    Step("create_loaded", Kind.EXEC, "CREATE TABLE loaded (id INT PRIMARY KEY, label VARCHAR(40))"),
    Step("insert_outside_tx", Kind.EXEC,
         "INSERT INTO items VALUES (1, 'apple', 3), (2, 'pear', 5)", expect=2),
    Step("begin_committed", Kind.BEGIN),
    Step("update_in_tx", Kind.EXEC, "UPDATE items SET qty = qty + 1 WHERE id = 1", expect=1),
    Step("insert_in_tx", Kind.EXEC, "INSERT INTO items VALUES (3, 'plum', 7)", expect=1),
    Step("commit", Kind.COMMIT),
    Step("begin_rolled_back", Kind.BEGIN),
    Step("delete_in_tx", Kind.EXEC, "DELETE FROM items WHERE id = 2", expect=1),
    Step("insert_rolled_back", Kind.EXEC, "INSERT INTO items VALUES (4, 'fig', 1)", expect=1),
    Step("tx_sees_own_writes", Kind.QUERY, "SELECT id FROM items ORDER BY id",
         expect=[("1",), ("3",), ("4",)]),
    Step("rollback", Kind.ROLLBACK),
    Step("after_transactions", Kind.QUERY, "SELECT id, name, qty FROM items ORDER BY id",
         expect=ITEMS_AFTER_TRANSACTIONS),
    Step("prepared_select", Kind.PREPARED, "SELECT name, qty FROM items WHERE id = ?", (3,),
         expect=[("plum", "7")]),
    Step("prepared_insert", Kind.PREPARED, "INSERT INTO items VALUES (?, ?, ?)", (5, "kiwi", 9),
         expect=1),
    Step("prepared_aggregate", Kind.PREPARED,
         "SELECT COUNT(*), SUM(qty) FROM items WHERE qty > ?", (4,), expect=[("3", "21")]),
    Step("blob_write", Kind.BLOB_WRITE, "INSERT INTO blobs (id, data) VALUES (?, ?)",
         (1, BLOB_PARAM), expect=1),
    Step("blob_read", Kind.BLOB_READ, "SELECT data FROM blobs WHERE id = 1"),  # see expected()
    Step("multi_statement", Kind.MULTI,
         "SELECT COUNT(*) FROM items; UPDATE items SET qty = qty * 10 WHERE id = 3; "
         "SELECT id, qty FROM items WHERE id = 3; SELECT 'done' AS status",
         expect=[[("4",)], [("3", "70")], [("done",)]]),
    Step("load_local_infile", Kind.LOAD_LOCAL,
         f"LOAD DATA LOCAL INFILE '{INFILE_PATH}' INTO TABLE loaded "
         "FIELDS TERMINATED BY ',' LINES TERMINATED BY '\\n' (id, label)", expect=INFILE_ROWS),
    Step("loaded_summary", Kind.QUERY, "SELECT COUNT(*), COUNT(label), SUM(id) FROM loaded",
         expect=LOADED_SUMMARY),
    Step("loaded_sample", Kind.QUERY,
         "SELECT id, label FROM loaded WHERE id IN (1, 999, 1000, 5000) ORDER BY id",
         expect=LOADED_SAMPLE),
    Step("query_error", Kind.ERROR, "SELECT * FROM no_such_table", expect=ER_NO_SUCH_TABLE),
    Step("same_session_after_error", Kind.QUERY, "SELECT @marker, CONNECTION_ID() = @conn",
         expect=[("kept", "1")]),
    Step("final_items", Kind.QUERY, "SELECT id, name, qty FROM items ORDER BY id",
         expect=ITEMS_AT_END),
)


@functools.cache
def blob() -> bytes:
    """The 20 MiB BLOB: pseudo-random, so every byte value (NUL, quote, backslash) occurs."""
    return random.Random(20).randbytes(BLOB_SIZE)


def infile_text() -> str:
    """The LOCAL INFILE: ``id,label`` lines; every 1000th label is NULL (``\\N``)."""
    labels = ("\\N" if i % 1000 == 0 else f"label-{i}" for i in range(1, INFILE_ROWS + 1))
    return "".join(f"{i},{label}\n" for i, label in enumerate(labels, start=1))


def blob_digest(data: bytes) -> dict[str, Any]:
    """Length and SHA-256 of a BLOB: what a client in another process reports of its read."""
    return {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def steps_for(infile: str) -> list[Step]:
    """The script with the LOCAL INFILE's path filled in."""
    return [
        Step(s.name, s.kind, s.sql.replace(INFILE_PATH, infile), s.params, s.expect)
        for s in STEPS
    ]


def expected() -> dict[str, Any]:
    """What every client must observe, step by step, in ``comparable`` form."""
    result = {step.name: step.expect for step in STEPS}
    result["blob_read"] = blob_digest(blob())
    return result


def steps_in_transaction(steps: Sequence[Step]) -> set[str]:
    """Names of the steps after which the session is inside an explicit transaction."""
    inside, names = False, set()
    for step in steps:
        inside = step.kind == Kind.BEGIN or (inside and step.kind not in (Kind.COMMIT, Kind.ROLLBACK))
        if inside:
            names.add(step.name)
    return names


def normalize_value(value: Any) -> str | None:
    """One column value as text, the way the command-line client shows it."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    if isinstance(value, Decimal | int | str):
        return str(value)
    raise TypeError(f"unexpected column value {value!r}")


def normalize_rows(rows: Iterable[Sequence[Any]]) -> list[Row]:
    return [tuple(normalize_value(v) for v in row) for row in rows]


def comparable(step: Step, observed: Any) -> Any:
    """An adapter's raw observation of ``step`` in the form ``expected()`` uses. A string is an
    adapter's description of what went wrong (no step observes one); it stays as it is."""
    if isinstance(observed, str):
        return observed
    if step.kind == Kind.BLOB_READ:
        return blob_digest(observed) if isinstance(observed, bytes | bytearray) else observed
    if step.expect is None:
        return None
    if step.kind == Kind.MULTI:
        return [normalize_rows(result) for result in observed]
    if isinstance(step.expect, list):
        return normalize_rows(observed)
    return observed


def comparable_all(steps: Sequence[Step], observed: dict[str, Any]) -> dict[str, Any]:
    """Every step's observation in ``comparable`` form; a missing one shows as '<not run>'."""
    return {
        s.name: comparable(s, observed[s.name]) if s.name in observed else "<not run>"
        for s in steps
    }


def sql_literal(value: int | str) -> str:
    """A value as an SQL literal, for clients that get plain SQL text (the CLI, SQL PREPARE)."""
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def sql_prepare_texts(count: int, mark: Callable[[str], str]) -> list[str]:
    """The SQL ``PREPARE s`` / ``SET @p0 = ..`` / ``EXECUTE s USING @p0, ..`` statements that
    stand in for a prepared statement with ``count`` parameters, for clients without server-side
    prepared statements. ``mark(name)`` is the client's placeholder (or literal) for the value
    named ``name``: ``q`` is the statement's text, ``p0``, ``p1``, .. its parameters."""
    names = [f"p{i}" for i in range(count)]
    texts = [f"PREPARE s FROM {mark('q')}"]
    if names:
        texts.append("SET " + ", ".join(f"@{n} = {mark(n)}" for n in names))
    using = " USING " + ", ".join(f"@{n}" for n in names) if names else ""
    return [*texts, f"EXECUTE s{using}"]


def prepare_values(sql: str, params: Sequence[Any]) -> dict[str, Any]:
    """The values ``sql_prepare_texts`` names: the statement's text and its parameters."""
    return {"q": sql, **{f"p{i}": value for i, value in enumerate(params)}}


def steps_as_json(steps: Sequence[Step]) -> list[dict[str, Any]]:
    """The steps in a form a client in another process (or language) reads."""
    return [{k: v for k, v in asdict(s).items() if k != "expect"} for s in steps]
