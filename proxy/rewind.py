"""Backtrack planning and apply: the net inverse of every row change after a point, in one
server transaction (DESIGN.md decisions 7 and 9).

The planner (``build_plan``) reads only the change store: for every row touched after the
point it works out the expected current image (the after-image of its last change) and the
target image (the before-image of its first change, or "absent"). Rows are keyed by primary
key; tables without one are handled as multisets of whole images, duplicates included. It also
finds the conflicts the log itself reveals: gaps, DDL and statement-format DML after the point,
partial images.

The applier (``Applier``) is the only writer to the server. Inside one transaction on
auroratrack's own connection it checks what the log cannot know (rows that drifted from their
latest image through writes the binlog never saw, rows that cannot be located, cascading foreign
keys, triggers), then deletes the affected rows and inserts the target images in bulk
statements, writes the backtrack marker, and commits. Any failure rolls the transaction back:
the database stays as it was. The session makes every value writable exactly: UTC time zone,
permissive sql_mode, foreign key checks off, generated columns skipped.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pymysql

from proxy.changelog import binlog as bl
from proxy.changelog.decoder import (
    MISSING,
    TableSchema,
    decode_rows,
    literal_writer,
    parse_table_map,
    sql_literal,
)
from proxy.changelog.store import ChangeStore, StoredTransaction

log = logging.getLogger(__name__)

ABSENT = None  # a row image that does not exist (before an insert, after a delete)
ORIGIN_SCHEMA = "auroratrack"
MARKER_TABLE = f"`{ORIGIN_SCHEMA}`.`backtrack_marker`"
BATCH_ROWS = 1000
BATCH_BYTES = 4 * 1024 * 1024
MAX_PLAN_SQL = 200  # statements shown by a dry run with --sql


@dataclass(frozen=True)
class Conflict:
    """Something that means the log cannot faithfully invert history for ``table``."""

    kind: str  # gap | ddl | statement | drift | missing | unexpected | cascade | trigger | partial_image
    table: str | None
    reason: str
    key: str | None = None

    def to_json(self) -> dict:
        return {"kind": self.kind, "table": self.table, "key": self.key, "reason": self.reason}


@dataclass
class TableChanges:
    """The net effect, after the point, on one table."""

    name: str  # "db.table"
    schema: TableSchema
    # primary-key tables: key -> [first before-image, last after-image]
    fates: dict[tuple, list] = field(default_factory=dict)
    # tables without a primary key: image -> net count of copies added after the point
    deltas: collections.Counter = field(default_factory=collections.Counter)
    _net: dict | None = field(default=None, repr=False)

    @property
    def has_key(self) -> bool:
        return bool(self.schema.primary_key)

    def net_fates(self) -> dict[tuple, tuple]:
        """Rows whose target differs from their current image (net no-ops dropped); computed
        once, after planning (the plan does not change afterwards)."""
        if self._net is None:
            self._net = {key: (first, last) for key, (first, last) in self.fates.items() if first != last}
        return self._net

    def counts(self) -> dict[str, int]:
        """Rows to delete, re-insert and restore (update back)."""
        if self.has_key:
            fates = self.net_fates().values()
            return {
                "delete": sum(1 for first, last in fates if first is ABSENT),
                "reinsert": sum(1 for first, last in fates if last is ABSENT),
                "restore": sum(1 for first, last in fates if first is not ABSENT and last is not ABSENT),
            }
        return {"delete": sum(n for n in self.deltas.values() if n > 0),
                "reinsert": sum(-n for n in self.deltas.values() if n < 0), "restore": 0}


@dataclass
class Plan:
    """What a backtrack to a point will do, before it does it."""

    after_txn_id: int  # keep transactions up to and including this one
    undone: list[StoredTransaction]
    tables: dict[str, TableChanges]
    conflicts: list[Conflict]
    flavor: str | None = None
    last_txn_id: int = 0  # the newest transaction folded in so far
    _schemas: dict = field(default_factory=dict, repr=False)
    _skipped: set = field(default_factory=set, repr=False)

    def summary(self) -> dict:
        return {
            "transactions_undone": len(self.undone),
            "tables": {name: t.counts() for name, t in sorted(self.tables.items())},
            "conflicts": [c.to_json() for c in self.conflicts],
        }


# -- planning -------------------------------------------------------------------------------------------


def build_plan(store: ChangeStore, after_txn_id: int, flavor: str | None = None) -> Plan:
    """The net inverse of every transaction after ``after_txn_id`` that the store holds."""
    plan = Plan(after_txn_id, [], {}, [], flavor=flavor, last_txn_id=after_txn_id)
    return extend_plan(plan, store)


def extend_plan(plan: Plan, store: ChangeStore) -> Plan:
    """Fold in the transactions stored since the plan was last built or extended. A backtrack
    plans while clients still run, and after pausing them folds in only what arrived since
    (decoding a million row images takes seconds; the pause should not)."""
    newer = store.transactions(after_txn_id=plan.last_txn_id)
    plan.conflicts = [c for c in plan.conflicts if c.kind != "gap"] + _gap_conflicts(store, plan.after_txn_id)
    for txn in newer:
        plan.undone.append(txn)
        plan.last_txn_id = txn.txn_id
        plan.conflicts.extend(_log_conflicts(txn))
        if txn.n_changes:
            _fold_transaction(plan, store, txn)
    for name in plan._skipped:
        plan.tables.pop(name, None)
    for table in plan.tables.values():
        table._net = None  # recomputed on next use
    return plan


def _fold_transaction(plan: Plan, store: ChangeStore, txn: StoredTransaction) -> None:
    for change in store.changes(txn.first_lsn, txn.last_lsn):
        if change.kind != "rows":
            continue
        name, schema = _schema_for(store, change.table_map_id, plan._schemas, plan.flavor)
        if name.startswith(ORIGIN_SCHEMA + ".") or name in plan._skipped:
            continue
        table = plan.tables.get(name)
        if table is None:
            table = plan.tables[name] = TableChanges(name, schema)
        elif table.schema.columns != schema.columns:
            plan.conflicts.append(Conflict("ddl", name, "the table's columns changed after the point"))
            plan._skipped.add(name)
            continue
        if not _apply_row_changes(table, decode_rows(change.event_type, change.body, schema), plan):
            plan._skipped.add(name)


def _schema_for(store: ChangeStore, table_map_id: int, cache: dict, flavor: str | None) -> tuple[str, TableSchema]:
    found = cache.get(table_map_id)
    if found is None:
        schema_name, table_name, body, generated = store.table_map(table_map_id)
        schema = parse_table_map(body, flavor).with_generated(frozenset(generated))
        found = cache[table_map_id] = (f"{schema_name}.{table_name}", schema)
    return found


def _apply_row_changes(table: TableChanges, changes, plan: Plan) -> bool:
    """Fold decoded row changes into the table's net effect; False if an image is partial."""
    key_indexes = table.schema.primary_key
    if len(key_indexes) == 1:
        only = key_indexes[0]

        def key_of(image: tuple) -> tuple:
            return (image[only],)
    else:
        def key_of(image: tuple) -> tuple:
            return tuple(image[i] for i in key_indexes)
    for change in changes:
        before, after = change.before, change.after
        if (before is not None and MISSING in before) or (after is not None and MISSING in after):
            plan.conflicts.append(Conflict("partial_image", table.name,
                                           "a row image is not FULL (binlog_row_image was not FULL)"))
            return False
        if not key_indexes:
            if before is not None:
                table.deltas[before] -= 1
            if after is not None:
                table.deltas[after] += 1
            continue
        before_key = key_of(before) if before is not None else None
        after_key = key_of(after) if after is not None else None
        if before_key is not None and before_key == after_key:
            _fold(table.fates, before_key, before, after)
            continue
        if before_key is not None:  # a delete, or the old key of a key-changing update
            _fold(table.fates, before_key, before, ABSENT)
        if after_key is not None:  # an insert, or the new key of a key-changing update
            _fold(table.fates, after_key, ABSENT, after)
    return True


def _fold(fates: dict, key: tuple, before, after) -> None:
    fate = fates.get(key)
    if fate is None:
        fates[key] = [before, after]
    else:
        fate[1] = after


def _gap_conflicts(store: ChangeStore, after_txn_id: int) -> list[Conflict]:
    return [Conflict("gap", None, f"changes were lost after the point (binlog {gap.lost_from} to "
                     f"{gap.resumed_at} was gone: {gap.reason})")
            for gap in store.gaps() if gap.after_txn_id is None or gap.after_txn_id >= after_txn_id]


def _log_conflicts(txn: StoredTransaction) -> list[Conflict]:
    conflicts = []
    tables = [t for t in txn.tables if not t.startswith(ORIGIN_SCHEMA + ".")]
    if txn.tables and not tables:
        return []  # auroratrack's own schema (the backtrack marker): never part of an undo
    tables = tables or [None]
    statement = txn.statements[0][:200] if txn.statements else ""
    if "ddl" in txn.flags:
        for table in tables:
            conflicts.append(Conflict("ddl", table, f"DDL after the point (txn {txn.txn_id}, "
                                      f"GTID {txn.gtid}): {statement}"))
    if "statement" in txn.flags:
        for table in tables:
            conflicts.append(Conflict("statement", table, f"statement-format DML after the point cannot be "
                                      f"inverted (txn {txn.txn_id}): {statement}"))
    return conflicts


# -- apply ------------------------------------------------------------------------------------------------


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def qualified(table_name: str) -> str:
    schema, _, table = table_name.partition(".")
    return f"{quote_name(schema)}.{quote_name(table)}"


class Applier:
    """Writes a plan to the server on one connection, in one transaction (see the module doc).

    ``emit`` receives every SQL statement sent (for dry runs with --sql and for the log)."""

    def __init__(self, conn: pymysql.Connection, tag: str, emit: Callable[[str], None] | None = None,
                 dry_run: bool = False, trust_absent: bool = False):
        self.conn = conn
        self.tag = f"/* auroratrack {tag} */ "
        self.emit = emit
        self.dry_run = dry_run  # writes are only emitted, never sent; checks still run
        # Not forced: rows the log says are gone are neither looked for nor deleted; if one
        # exists after all, the INSERT of its target fails on its key (DuplicateRow), and
        # ``unexpected_rows`` names it. Saves a SELECT and a DELETE per re-inserted row.
        self.trust_absent = trust_absent
        self._temp_tables = 0

    # -- the transaction ---------------------------------------------------------------------------
    def begin(self) -> None:
        for statement in (
            "SET SESSION time_zone = '+00:00'",
            "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
            "SET SESSION foreign_key_checks = 0",
            "SET SESSION autocommit = 0",
        ):
            self._run(statement, record=False)
        self._run("START TRANSACTION", record=False)

    def commit(self) -> None:
        self._run("COMMIT", record=False)

    def rollback(self) -> None:
        try:
            self._run("ROLLBACK", record=False)
        except pymysql.MySQLError:
            pass  # the connection is gone: the server rolls back on its own

    # -- checks the server must answer ----------------------------------------------------------------
    def server_conflicts(self, plan: Plan) -> list[Conflict]:
        """Drift, missing rows, unexpected rows, cascading foreign keys and triggers."""
        conflicts = self._cascade_conflicts(plan.tables) + self._trigger_conflicts(plan.tables)
        for table in plan.tables.values():
            if table.has_key:
                conflicts.extend(self._keyed_drift(table))
            else:
                conflicts.extend(self._multiset_drift(table))
        return conflicts

    def _cascade_conflicts(self, tables: dict[str, TableChanges]) -> list[Conflict]:
        if not tables:
            return []
        rows = self._query(
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, UNIQUE_CONSTRAINT_SCHEMA, "
            "REFERENCED_TABLE_NAME, UPDATE_RULE, DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE UPDATE_RULE IN ('CASCADE','SET NULL','SET DEFAULT') "
            "OR DELETE_RULE IN ('CASCADE','SET NULL','SET DEFAULT')"
        )
        conflicts = []
        for schema, child, name, parent_schema, parent, on_update, on_delete in rows:
            parent_name = f"{parent_schema}.{parent}"
            if parent_name in tables:
                conflicts.append(Conflict(
                    "cascade", parent_name,
                    f"foreign key {name} on {schema}.{child} cascades (ON UPDATE {on_update}, ON DELETE {on_delete}): "
                    "cascaded changes never reach the binlog, so they cannot be undone"))
        return conflicts

    def _trigger_conflicts(self, tables: dict[str, TableChanges]) -> list[Conflict]:
        if not tables:
            return []
        rows = self._query(
            "SELECT EVENT_OBJECT_SCHEMA, EVENT_OBJECT_TABLE, TRIGGER_NAME FROM information_schema.TRIGGERS")
        return [Conflict("trigger", f"{s}.{t}", f"trigger {name} would fire while the undo writes the table")
                for s, t, name in rows if f"{s}.{t}" in tables]

    def _keyed_drift(self, table: TableChanges) -> list[Conflict]:
        fates = table.net_fates()
        expected_present = [last for first, last in fates.values() if last is not ABSENT]
        expected_absent = [key for key, (first, last) in fates.items() if last is ABSENT]
        columns = self._write_columns(table)
        key_indexes = table.schema.primary_key
        conflicts = []
        if expected_present:
            temp = self._temp_table(table, columns, expected_present)
            on = " AND ".join(f"c.{self._col(table, i)} = e.{self._col(table, i)}" for i in key_indexes)
            same = " AND ".join(self._same(table, i, "c", "e") for i in columns)
            key_list = ", ".join(f"e.{self._col(table, i)}" for i in key_indexes)
            for row in self._query(f"SELECT {key_list} FROM {temp} e LEFT JOIN {qualified(table.name)} c ON {on} "
                                   f"WHERE c.{self._col(table, key_indexes[0])} IS NULL"):
                conflicts.append(Conflict("missing", table.name, "the row the log says exists cannot be located",
                                          key=_key_text(row)))
            for row in self._query(f"SELECT {key_list} FROM {temp} e JOIN {qualified(table.name)} c ON {on} "
                                   f"WHERE NOT ({same})"):
                conflicts.append(Conflict("drift", table.name, "the current row differs from the log's latest image "
                                          "(a write the binlog never saw)", key=_key_text(row)))
            self._run(f"DROP TEMPORARY TABLE {temp}", record=False)
        for batch in _batches(expected_absent if not self.trust_absent else [], BATCH_ROWS):
            # exact: the row now holding 'E' is not the row the log deleted as 'e' (the first
            # condition is there for the index)
            where = f"{self._key_in(table, batch)} AND {self._key_in(table, batch, exact=True)}"
            key_list = ", ".join(self._col(table, i) for i in key_indexes)
            for row in self._query(f"SELECT {key_list} FROM {qualified(table.name)} WHERE {where}"):
                conflicts.append(Conflict("unexpected", table.name, "a row the log says is gone exists "
                                          "(a write the binlog never saw)", key=_key_text(row)))
        return conflicts

    def _multiset_drift(self, table: TableChanges) -> list[Conflict]:
        conflicts = []
        for image, count in table.deltas.items():
            if count <= 0:
                continue
            found = self._query(f"SELECT COUNT(*) FROM {qualified(table.name)} WHERE {self._match_image(table, image)}")
            if found[0][0] < count:
                conflicts.append(Conflict("missing", table.name, f"{count} copies of a row without primary key "
                                          f"expected, {found[0][0]} found"))
        return conflicts

    # -- writing ---------------------------------------------------------------------------------------
    def apply_table(self, table: TableChanges) -> dict[str, int]:
        """Delete the affected rows and insert the target images; returns the counts."""
        if table.has_key:
            fates = table.net_fates()
            # Delete every affected row first, then insert the targets: no target image can
            # collide with a row that has yet to move out of its way on a unique key. (An
            # upsert was measured 2x slower than delete + insert on InnoDB.)
            doomed = [key for key, (first, last) in fates.items() if last is not ABSENT or not self.trust_absent]
            self._run_all(f"DELETE FROM {qualified(table.name)} WHERE {self._key_in(table, batch)}"
                          for batch in _batches(doomed, BATCH_ROWS))
            try:
                self._insert(table, [first for first, last in fates.values() if first is not ABSENT])
            except pymysql.IntegrityError as exc:
                if exc.args and exc.args[0] == ER_DUP_ENTRY and self.trust_absent:
                    raise DuplicateRow(table.name) from exc
                raise
        else:
            for image, count in table.deltas.items():
                if count > 0:
                    self._run(f"DELETE FROM {qualified(table.name)} WHERE {self._match_image(table, image)} "
                              f"LIMIT {count}")
            self._insert(table, [image for image, count in table.deltas.items() if count < 0 for _ in range(-count)])
        return table.counts()

    def unexpected_rows(self, plan: Plan) -> list[Conflict]:
        """After a DuplicateRow: the rows the log says are gone but exist (outside any write)."""
        conflicts = []
        for table in plan.tables.values():
            if not table.has_key:
                continue
            gone = [key for key, (first, last) in table.net_fates().items() if last is ABSENT]
            key_list = ", ".join(self._col(table, i) for i in table.schema.primary_key)
            for batch in _batches(gone, BATCH_ROWS):
                where = f"{self._key_in(table, batch)} AND {self._key_in(table, batch, exact=True)}"
                for row in self._query(f"SELECT {key_list} FROM {qualified(table.name)} WHERE {where}"):
                    conflicts.append(Conflict("unexpected", table.name, "a row the log says is gone exists "
                                              "(a write the binlog never saw)", key=_key_text(row)))
        return conflicts

    def write_marker(self, backtrack_id: str) -> None:
        """A row in auroratrack's own schema: the streamer marks the transaction as a backtrack."""
        if not self.dry_run:
            self._run(f"INSERT INTO {MARKER_TABLE} (backtrack_id) VALUES ({_string(backtrack_id)})", record=False)

    def ensure_marker_table(self) -> None:
        """Create auroratrack's schema and marker table, only if missing (servers log every
        CREATE ... IF NOT EXISTS)."""
        exists = self._query("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                             f"{_string(ORIGIN_SCHEMA)} AND TABLE_NAME = 'backtrack_marker'")
        if exists[0][0]:
            return
        self._run(f"CREATE DATABASE IF NOT EXISTS {quote_name(ORIGIN_SCHEMA)}", record=False)
        self._run(f"CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                  "backtrack_id VARCHAR(64) NOT NULL, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
                  record=False)

    def _insert(self, table: TableChanges, images: list) -> None:
        if not images:
            return
        columns = self._write_columns(table)
        names = [self._col(table, i) for i in columns]
        head = f"INSERT INTO {qualified(table.name)} ({', '.join(names)}) VALUES "
        self._run_all(self._values_statements(head, table, columns, images))

    def _run_all(self, statements: Iterable[str], record: bool = True) -> None:
        """Run statements in order while the next ones are being built: the server executes
        one while Python writes the literals of the next (the wait releases the GIL)."""
        pending: queue.Queue = queue.Queue(maxsize=2)
        failure: list[BaseException] = []

        def execute() -> None:
            while (statement := pending.get()) is not None:
                if not failure:
                    try:
                        self._run(statement, record=record)
                    except BaseException as exc:  # handed to the caller below
                        failure.append(exc)

        worker = threading.Thread(target=execute, name="auroratrack-apply", daemon=True)
        worker.start()
        try:
            for statement in statements:
                if failure:
                    break
                pending.put(statement)
        finally:
            pending.put(None)
            worker.join()
        if failure:
            raise failure[0]

    def _values_statements(self, head: str, table: TableChanges, columns: list[int], images: list) -> Iterable[str]:
        writers = [(i, literal_writer(table.schema.columns[i])) for i in columns]
        batch, size = [], 0
        for image in images:
            row = "(" + ", ".join([write(image[i]) for i, write in writers]) + ")"
            batch.append(row)
            size += len(row)
            if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
                yield head + ", ".join(batch)
                batch, size = [], 0
        if batch:
            yield head + ", ".join(batch)

    # -- SQL pieces ---------------------------------------------------------------------------------------
    def _write_columns(self, table: TableChanges) -> list[int]:
        return [i for i in range(len(table.schema.columns)) if not table.schema.is_generated(i)]

    def _col(self, table: TableChanges, index: int) -> str:
        name = table.schema.columns[index].name
        if name is None:
            raise ValueError(f"{table.name}: column {index} has no name (binlog_row_metadata was not FULL)")
        return quote_name(name)

    def _same(self, table: TableChanges, index: int, left: str, right: str) -> str:
        col = self._col(table, index)
        return f"({left}.{col} <=> {right}.{col} AND CAST({left}.{col} AS BINARY) <=> CAST({right}.{col} AS BINARY))"

    def _key_in(self, table: TableChanges, keys: list[tuple], exact: bool = False) -> str:
        """``key IN (...)``. ``exact``: text key parts compare byte for byte. To a collation 'e',
        'E' and 'e ' are one key; the log holds them as distinct keys (a key update may change
        nothing but case, accent or trailing spaces)."""
        indexes = table.schema.primary_key
        defs = table.schema.columns
        binary = [exact and isinstance(keys[0][p], bytes) and defs[i].charset is not None and not defs[i].is_binary
                  for p, i in enumerate(indexes)]

        def column(p: int, i: int) -> str:
            return f"BINARY {self._col(table, i)}" if binary[p] else self._col(table, i)

        def literal(value, p: int, i: int) -> str:
            return f"BINARY {sql_literal(value, defs[i])}" if binary[p] else sql_literal(value, defs[i])

        if len(indexes) == 1:
            literals = ", ".join(literal(key[0], 0, indexes[0]) for key in keys)
            return f"{column(0, indexes[0])} IN ({literals})"
        columns = ", ".join(column(p, i) for p, i in enumerate(indexes))
        tuples = ", ".join("(" + ", ".join(literal(v, p, i) for p, (v, i) in enumerate(zip(key, indexes, strict=True)))
                           + ")" for key in keys)
        return f"({columns}) IN ({tuples})"

    def _match_image(self, table: TableChanges, image: tuple) -> str:
        defs = table.schema.columns
        parts = []
        for i in self._write_columns(table):
            literal = sql_literal(image[i], defs[i])
            col = self._col(table, i)
            # Text compares byte for byte ('a' = 'A ' to a collation). Not ENUM/SET: their
            # literal is the member number, which a BINARY comparison would take as text.
            if defs[i].charset is not None and isinstance(image[i], bytes) and not defs[i].is_binary:
                parts.append(f"(BINARY {col} <=> BINARY {literal})")
            else:
                parts.append(f"{col} <=> {literal}")
        return " AND ".join(parts) or "1"

    def _temp_table(self, table: TableChanges, columns: list[int], images: list) -> str:
        self._temp_tables += 1
        temp = f"{quote_name(ORIGIN_SCHEMA)}.{quote_name(f'expected_{self._temp_tables}')}"
        column_list = ", ".join(self._col(table, i) for i in columns)
        self._run(f"CREATE TEMPORARY TABLE {temp} AS SELECT {column_list} FROM {qualified(table.name)} LIMIT 0",
                  record=False)
        key_list = ", ".join(self._col(table, i) for i in table.schema.primary_key)
        try:
            self._run(f"ALTER TABLE {temp} ADD INDEX (  {key_list})", record=False)
        except pymysql.MySQLError:
            pass  # e.g. a TEXT key: the join is slower, not wrong
        head = f"INSERT INTO {temp} ({column_list}) VALUES "
        self._run_all(self._values_statements(head, table, columns, images), record=False)
        return temp

    def _run(self, sql: str, record: bool = True) -> int:
        if record and self.emit is not None:
            self.emit(sql)
        if record and self.dry_run:
            return 0
        with self.conn.cursor() as cur:
            return cur.execute(self.tag + sql)

    def _query(self, sql: str) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(self.tag + sql)
            return list(cur.fetchall())


ER_DUP_ENTRY = 1062


class DuplicateRow(Exception):
    """A target row collided with a row the log says is gone: a write the binlog never saw."""


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key_text(row: tuple) -> str:
    return ", ".join(repr(v) for v in row)


def _string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


ROWS_EVENT_TYPES = bl.ROWS_EVENTS
