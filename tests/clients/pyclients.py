"""Python client adapters for the shared client script (tests/clients/clientscript.py).

Each adapter opens one connection through the proxy and maps the script's step kinds onto its
driver's own API: PyMySQL, mysql-connector-python (pure Python or C extension; its prepared
cursor gives server-side prepared statements), and SQLAlchemy's ORM session over PyMySQL.
``run_script`` feeds the steps to an adapter and collects one raw observation per step.
Clients with no server-side prepared statements use SQL ``PREPARE`` / ``EXECUTE`` instead.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import mysql.connector
import pymysql
from pymysql.constants import CLIENT
from sqlalchemy import URL, create_engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tests.clients.clientscript import (
    BLOB_PARAM,
    Kind,
    Step,
    blob,
    prepare_values,
    sql_prepare_texts,
)
from tests.clients.ormmodels import Blob, Item, Loaded

MAX_PACKET = 64 * 1024 * 1024  # room for the 20 MiB BLOB as an escaped SQL literal


@dataclass(frozen=True)
class Target:
    """Where an adapter connects: the proxy's address, credentials and the test's database."""

    host: str
    port: int
    user: str
    password: str
    database: str


class Adapter(Protocol):
    """What ``run_script`` needs from a client."""

    def execute(self, sql: str) -> int: ...
    def query(self, sql: str) -> list[Sequence[Any]]: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def prepared(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]] | int: ...
    def write_blob(self, sql: str, params: Sequence[Any]) -> int: ...
    def read_blob(self, sql: str) -> bytes: ...
    def multi(self, sql: str) -> list[list[Sequence[Any]]]: ...
    def load_local(self, sql: str) -> int: ...
    def errno_of(self, sql: str) -> int | None: ...
    def close(self) -> None: ...


_STEP_RUNNERS: dict[Kind, Callable[[Adapter, str, list[Any]], Any]] = {
    Kind.EXEC: lambda adapter, sql, _: adapter.execute(sql),
    Kind.QUERY: lambda adapter, sql, _: adapter.query(sql),
    Kind.BEGIN: lambda adapter, _, __: adapter.begin(),
    Kind.COMMIT: lambda adapter, _, __: adapter.commit(),
    Kind.ROLLBACK: lambda adapter, _, __: adapter.rollback(),
    Kind.PREPARED: lambda adapter, sql, params: adapter.prepared(sql, params),
    Kind.BLOB_WRITE: lambda adapter, sql, params: adapter.write_blob(sql, params),
    Kind.BLOB_READ: lambda adapter, sql, _: adapter.read_blob(sql),
    Kind.MULTI: lambda adapter, sql, _: adapter.multi(sql),
    Kind.LOAD_LOCAL: lambda adapter, sql, _: adapter.load_local(sql),
    Kind.ERROR: lambda adapter, sql, _: adapter.errno_of(sql),
}


def run_step(adapter: Adapter, step: Step) -> Any:
    """Run one step; returns the raw observation (see the clientscript docstring)."""
    params = [blob() if p == BLOB_PARAM else p for p in step.params]
    return _STEP_RUNNERS[step.kind](adapter, step.sql, params)


def run_script(adapter: Adapter, steps: Sequence[Step],
               after_step: Callable[[Step], None] | None = None) -> dict[str, Any]:
    """Run every step in order on one connection; returns {step name: raw observation}.

    ``after_step`` is called after each step, once its response has reached the client."""
    observed = {}
    try:
        for step in steps:
            observed[step.name] = run_step(adapter, step)
            if after_step is not None:
                after_step(step)
    finally:
        adapter.close()
    return observed


def fetch_result_sets(cursor: Any) -> list[list[Sequence[Any]]]:
    """Every result set of an executed multi-statement query; OK results are left out."""
    results = []
    while True:
        if cursor.description:
            results.append(list(cursor.fetchall()))
        if not cursor.nextset():
            return results


# -- PyMySQL ------------------------------------------------------------------------------------


class PyMySQLAdapter:
    """PyMySQL: text protocol only, so prepared statements are SQL PREPARE / EXECUTE."""

    def __init__(self, target: Target):
        self.conn = pymysql.connect(
            host=target.host, port=target.port, user=target.user, password=target.password,
            database=target.database, autocommit=True, local_infile=True,
            client_flag=CLIENT.MULTI_STATEMENTS, max_allowed_packet=MAX_PACKET,
        )

    def _run(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        cur = self.conn.cursor()
        cur.execute(sql, params)
        return cur

    def execute(self, sql: str) -> int:
        return self._run(sql).rowcount

    def query(self, sql: str) -> list[Sequence[Any]]:
        return list(self._run(sql).fetchall())

    def begin(self) -> None:
        self.conn.begin()

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def prepared(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]] | int:
        values = prepare_values(sql, params)
        for statement in sql_prepare_texts(len(params), lambda name: "%(" + name + ")s"):
            cur = self._run(statement, values)
        result = list(cur.fetchall()) if cur.description else cur.rowcount
        self._run("DEALLOCATE PREPARE s")
        return result

    def write_blob(self, sql: str, params: Sequence[Any]) -> int:
        return self._run(sql.replace("?", "%s"), params).rowcount

    def read_blob(self, sql: str) -> bytes:
        return self._run(sql).fetchone()[0]

    def multi(self, sql: str) -> list[list[Sequence[Any]]]:
        return fetch_result_sets(self._run(sql))

    def load_local(self, sql: str) -> int:
        return self.execute(sql)

    def errno_of(self, sql: str) -> int | None:
        try:
            self._run(sql)
        except pymysql.MySQLError as exc:
            return exc.args[0]
        return None

    def close(self) -> None:
        self.conn.close()


# -- mysql-connector-python -----------------------------------------------------------------------


class ConnectorAdapter:
    """mysql-connector-python; ``use_pure`` picks the pure-Python or the C-extension protocol.

    Prepared steps and the BLOB write go through ``cursor(prepared=True)``: server-side
    prepared statements (COM_STMT_PREPARE / COM_STMT_EXECUTE, binary protocol)."""

    def __init__(self, target: Target, use_pure: bool, compress: bool = False):
        if not use_pure and not mysql.connector.HAVE_CEXT:
            raise RuntimeError("mysql-connector's C extension cannot be loaded in this process")
        self.pure = use_pure
        self.conn = mysql.connector.connect(
            host=target.host, port=target.port, user=target.user, password=target.password,
            database=target.database, autocommit=True, use_pure=use_pure, allow_local_infile=True,
            compress=compress,
        )  # TLS left at its default (preferred): the proxy does not offer it, so none is used
        if use_pure == hasattr(self.conn, "_cmysql"):  # only CMySQLConnection has _cmysql
            raise RuntimeError(f"asked for use_pure={use_pure}, got {type(self.conn).__name__}")

    def _run(self, sql: str, params: Sequence[Any] | None = None, prepared: bool = False) -> Any:
        cur = self.conn.cursor(prepared=prepared) if prepared else self.conn.cursor(buffered=True)
        cur.execute(sql, params)
        return cur

    def execute(self, sql: str) -> int:
        cur = self._run(sql)
        count = cur.rowcount
        cur.close()
        return count

    def query(self, sql: str) -> list[Sequence[Any]]:
        return list(self._run(sql).fetchall())

    def begin(self) -> None:
        self.conn.start_transaction()

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def prepared(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]] | int:
        cur = self._run(sql, tuple(params), prepared=True)
        result = list(cur.fetchall()) if cur.description else cur.rowcount
        cur.close()
        return result

    def write_blob(self, sql: str, params: Sequence[Any]) -> int:
        # Pure Python streams a file-like parameter with COM_STMT_SEND_LONG_DATA (128 KiB
        # commands that get no response); the C extension sends it inside COM_STMT_EXECUTE.
        if self.pure:
            params = [io.BytesIO(p) if isinstance(p, bytes) else p for p in params]
        result = self.prepared(sql, params)
        assert isinstance(result, int)
        return result

    def read_blob(self, sql: str) -> bytes:
        # The pure-Python protocol cannot read a binary-protocol row of 16 MiB or more (its
        # read_binary_result ignores continuation packets, with or without the proxy), so it
        # reads the BLOB back through the text protocol; the C extension through its prepared
        # cursor, like it wrote it.
        rows = self.query(sql) if self.pure else self.prepared(sql, ())
        assert isinstance(rows, list)
        return bytes(rows[0][0])

    def multi(self, sql: str) -> list[list[Sequence[Any]]]:
        cur = self.conn.cursor()
        cur.execute(sql)
        return fetch_result_sets(cur)

    def load_local(self, sql: str) -> int:
        return self.execute(sql)

    def errno_of(self, sql: str) -> int | None:
        try:
            self._run(sql)
        except mysql.connector.Error as exc:
            return exc.errno
        return None

    def close(self) -> None:
        self.conn.close()


# -- SQLAlchemy ORM ---------------------------------------------------------------------------------


class SQLAlchemyAdapter:
    """SQLAlchemy 2 ORM ``Session`` over PyMySQL, on a pool of exactly one connection.

    "Outside a transaction" means what it does in SQLAlchemy: the statement runs in the
    session's own short transaction, committed at once. The BLOB is written and read as a mapped
    object; multiple result sets come from the raw DBAPI cursor (SQLAlchemy's documented way)."""

    def __init__(self, target: Target):
        url = URL.create("mysql+pymysql", target.user, target.password, target.host,
                         target.port, target.database)
        self.engine = create_engine(
            url, pool_size=1, max_overflow=0, connect_args={
                "local_infile": True, "client_flag": CLIENT.MULTI_STATEMENTS,
                "max_allowed_packet": MAX_PACKET,
            },
        )
        self.session = Session(self.engine)
        self.in_transaction = False

    def _run(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self.session.execute(text(sql), params or {})

    def _done(self) -> None:
        """Outside an explicit transaction, each step commits its own."""
        if not self.in_transaction:
            self.session.commit()

    def execute(self, sql: str) -> int:
        count = self._run(sql).rowcount
        self._done()
        return count

    def query(self, sql: str) -> list[Sequence[Any]]:
        rows = [tuple(row) for row in self._run(sql)]
        self._done()
        return rows

    def begin(self) -> None:
        self.session.begin()
        self.in_transaction = True

    def commit(self) -> None:
        self.session.commit()
        self.in_transaction = False

    def rollback(self) -> None:
        self.session.rollback()
        self.in_transaction = False

    def prepared(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]] | int:
        values = prepare_values(sql, params)
        for statement in sql_prepare_texts(len(params), lambda name: f":{name}"):
            result = self._run(statement, values)
        outcome = [tuple(r) for r in result] if result.returns_rows else result.rowcount
        self._run("DEALLOCATE PREPARE s")
        self._done()
        return outcome

    def write_blob(self, sql: str, params: Sequence[Any]) -> int:
        self.session.add(Blob(id=params[0], data=params[1]))
        self.session.flush()  # the ORM checks that exactly one row was inserted
        self._done()
        return 1

    def read_blob(self, sql: str) -> bytes:
        self.session.expunge_all()  # so the ORM reads it from the server, not its identity map
        stmt = select(Blob).where(Blob.id == 1)
        data = self.session.scalars(stmt).one().data
        self._done()
        return data

    def multi(self, sql: str) -> list[list[Sequence[Any]]]:
        cursor = self.session.connection().connection.cursor()
        cursor.execute(sql)
        results = fetch_result_sets(cursor)
        cursor.close()
        self._done()
        return results

    def load_local(self, sql: str) -> int:
        return self.execute(sql)

    def errno_of(self, sql: str) -> int | None:
        try:
            self._run(sql)
        except DBAPIError as exc:
            self.session.rollback()  # the ORM idiom after a failed statement
            self.in_transaction = False
            return exc.orig.args[0]
        return None

    def close(self) -> None:
        self.session.close()
        self.engine.dispose()


def orm_snapshot(target: Target) -> tuple[list[tuple[int, str, int]], list[tuple[int, str | None]]]:
    """Items and a few loaded rows as the ORM loads them (mapped objects, bound parameters)."""
    url = URL.create("mysql+pymysql", target.user, target.password, target.host, target.port,
                     target.database)
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            items = [(i.id, i.name, i.qty) for i in session.scalars(select(Item).order_by(Item.id))]
            loaded = [(row.id, row.label) for row in (session.get(Loaded, k) for k in (1, 1000))]
    finally:
        engine.dispose()
    return items, loaded


ADAPTERS = {
    "pymysql": PyMySQLAdapter,
    "connector-pure": lambda target: ConnectorAdapter(target, use_pure=True),
    "connector-cext": lambda target: ConnectorAdapter(target, use_pure=False),
    # Protocol compression (CLIENT_COMPRESS): tests/integration/test_compression.py
    "connector-pure-compressed": lambda target: ConnectorAdapter(target, True, compress=True),
    "connector-cext-compressed": lambda target: ConnectorAdapter(target, False, compress=True),
    "sqlalchemy-orm": SQLAlchemyAdapter,
}
