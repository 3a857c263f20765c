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
keys, triggers), writes the target images in bulk statements, writes the backtrack marker, and
commits. Any failure rolls the transaction back: the database stays as it was. The session makes
every value writable exactly: UTC time zone, permissive sql_mode, foreign key checks off,
generated columns skipped.

Two ways to write, both checked:

* checked (not forced, ``prepare`` + ``apply_table_checked``): the latest images (and targets)
  are loaded into temporary tables before clients are paused; in the pause, one
  ``DELETE ... JOIN`` removes rows added after the point and one ``UPDATE ... JOIN`` sets
  changed rows back in place, each only where the row still holds its latest image byte for
  byte, and the rows matched must equal the plan's; re-inserted rows fail on their key if the
  row exists after all. A mismatch rolls back and falls to the detailed check.
* detailed (forced, or after a mismatch, ``server_conflicts`` + ``apply_table``): every drifted,
  missing or unexpected row is named; then the affected rows are deleted and the targets
  inserted.

Not forced, the checked writes normally run before the pause (``begin_early``, ``write_early``),
in the transaction that the pause completes with ``write_rows_checked`` and commits; what is
written early and what is left to the pause is decided by ``proxy.earlywrite``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import itertools
import logging
import operator
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pymysql

from proxy.changelog import binlog as bl
from proxy.changelog.decoder import (
    MISSING,
    RowField,
    TableSchema,
    decode_images,
    parse_table_map,
    rows_event_table_id,
    rows_literal_writer,
    sql_literal,
)
from proxy.changelog.store import ChangeStore, StoredTransaction
from proxy.ddlops import HOLD_SCHEMA, is_op_statement
from proxy.loaddata import LoadIncomplete, load_available, load_rows, load_spec

log = logging.getLogger(__name__)

ABSENT = None  # a row image that does not exist (before an insert, after a delete)
ORIGIN_SCHEMA = "auroratrack"
MARKER_TABLE = f"`{ORIGIN_SCHEMA}`.`backtrack_marker`"
BATCH_ROWS = 1000
BATCH_BYTES = 4 * 1024 * 1024
DELTA_BATCH_ROWS = 100  # rows per DELETE of the pause's literal writes after early writes
MAX_PLAN_SQL = 200  # statements shown by a dry run with --sql
LOAD_DATA_MIN_ROWS = 1000  # fewer rows go as INSERTs: a LOAD's FIFO and thread cost more than it saves
JOIN_BUFFER_BYTES = 1024 * 1024 * 1024  # in-memory limit of the server's internal temporary tables


@dataclass(frozen=True)
class Conflict:
    """Something that means the log cannot faithfully invert history for ``table``."""

    # gap | ddl | statement | rollback | drift | missing | unexpected | cascade | trigger | partial_image
    # | non_transactional | uncaptured | unterminated | incident
    kind: str
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
    _counts: dict | None = field(default=None, repr=False)

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
        """Rows to delete, re-insert and restore (update back); computed once per ``net_fates``
        (summary, apply and record each ask, and a pass over a million fates takes a while)."""
        if not self.has_key:
            return {"delete": sum(n for n in self.deltas.values() if n > 0),
                    "reinsert": sum(-n for n in self.deltas.values() if n < 0), "restore": 0}
        if self._counts is None or self._net is None:
            fates = self.net_fates().values()
            delete = sum(1 for first, last in fates if first is ABSENT)
            reinsert = sum(1 for first, last in fates if last is ABSENT)
            self._counts = {"delete": delete, "reinsert": reinsert, "restore": len(fates) - delete - reinsert}
        return dict(self._counts)


@dataclass
class Plan:
    """What a backtrack to a point will do, before it does it."""

    after_txn_id: int  # keep transactions up to and including this one
    undone: list[StoredTransaction]
    tables: dict[str, TableChanges]
    conflicts: list[Conflict]
    flavor: str | None = None
    last_txn_id: int = 0  # the newest transaction folded in so far
    # tables a fold changed since the last clear (prepared temporary tables of those are stale)
    touched: set = field(default_factory=set, repr=False)
    # table name -> keys of every row a fold touched, once ``track_keys`` has started it (the
    # early writes need to know which rows changed after they were planned; proxy.earlywrite)
    changed_keys: dict | None = field(default=None, repr=False)
    _schemas: dict = field(default_factory=dict, repr=False)
    _skipped: set = field(default_factory=set, repr=False)

    def track_keys(self) -> None:
        """From now on, record in ``changed_keys`` the key of every row a fold touches."""
        if self.changed_keys is None:
            self.changed_keys = {}

    def summary(self) -> dict:
        return {
            "transactions_undone": len(self.undone),
            "tables": {name: t.counts() for name, t in sorted(self.tables.items())},
            "conflicts": [c.to_json() for c in self.conflicts],
        }


# -- planning -------------------------------------------------------------------------------------------

_gc_lock = threading.Lock()
_gc_pausers = 0  # threads inside gc_paused()
_gc_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector while a plan or its temporary tables are built.

    Why: folding a million rows makes millions of tuples and lists; every 700 of them start a
    young-generation collection, and the older generations' collections walk the whole growing
    plan again and again. Measured: 60% of the plan's time (200k updates: 0.80 s with the
    collector, 0.31 s without). Nothing built here is cyclic garbage, and reference counting
    frees everything else as usual; the collector resumes when the last thread leaves."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()



def build_plan(store: ChangeStore, after_txn_id: int, flavor: str | None = None) -> Plan:
    """The net inverse of every transaction after ``after_txn_id`` that the store holds."""
    plan = Plan(after_txn_id, [], {}, [], flavor=flavor, last_txn_id=after_txn_id)
    return extend_plan(plan, store)


def extend_plan(plan: Plan, store: ChangeStore) -> Plan:
    """Fold in the transactions stored since the plan was last built or extended. A backtrack
    plans while clients still run, and after pausing them folds in only what arrived since
    (decoding a million row images takes seconds; the pause should not)."""
    plan.conflicts = [c for c in plan.conflicts if c.kind != "gap"] + _gap_conflicts(store, plan.after_txn_id)
    _fold_transactions(plan, store, store.transactions(after_txn_id=plan.last_txn_id))
    for name in plan.touched & plan.tables.keys():
        table = plan.tables[name]
        table._net = table._counts = None  # recomputed on next use; untouched tables keep theirs
    return plan


def plan_between(store: ChangeStore, after_txn_id: int, upto_txn_id: int, flavor: str | None = None) -> Plan:
    """The net inverse of the transactions after ``after_txn_id`` up to ``upto_txn_id``: one
    stretch of rows between two held DDL ops (proxy.ddlundo undoes those in between)."""
    plan = Plan(after_txn_id, [], {}, [], flavor=flavor, last_txn_id=after_txn_id)
    stretch = itertools.takewhile(lambda txn: txn.txn_id <= upto_txn_id,
                                  store.transactions(after_txn_id=after_txn_id))
    _fold_transactions(plan, store, stretch)
    return plan


def _fold_transactions(plan: Plan, store: ChangeStore, transactions: Iterable[StoredTransaction]) -> None:
    """Fold ``transactions`` (in txn-id order) into ``plan``: each is undone, its log conflicts
    noted and its row changes folded; then the tables the plan cannot write are dropped from it."""
    with gc_paused():
        for txn in transactions:
            plan.undone.append(txn)
            plan.last_txn_id = txn.txn_id
            plan.conflicts.extend(_log_conflicts(txn))
            if txn.n_changes:
                _fold_transaction(plan, store, txn)
    for name in plan._skipped:
        plan.tables.pop(name, None)


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
        plan.touched.add(name)
        table_id = rows_event_table_id(change.body)
        if table_id != schema.table_id:
            # The store keeps one table map per layout whatever the table id (store.table_map_id);
            # the server gives a table a new id after DDL (a held DROP's RENAME) or a cache
            # eviction, and the decoder checks the id.
            schema = dataclasses.replace(schema, table_id=table_id)
        kind, images = decode_images(change.event_type, change.body, schema)
        if not _apply_row_changes(table, kind, images, plan):
            plan._skipped.add(name)


def _schema_for(store: ChangeStore, table_map_id: int, cache: dict, flavor: str | None) -> tuple[str, TableSchema]:
    found = cache.get(table_map_id)
    if found is None:
        schema_name, table_name, body, generated = store.table_map(table_map_id)
        schema = parse_table_map(body, flavor).with_generated(frozenset(generated))
        found = cache[table_map_id] = (f"{schema_name}.{table_name}", schema)
    return found


def _apply_row_changes(table: TableChanges, kind: str, images: list, plan: Plan) -> bool:
    """Fold one rows event's images (``decode_images``: an update's before and after images
    alternate) into the table's net effect; False if an image is partial.

    Millions of rows pass through here. The bulk case (keys new to the plan, each once in the
    event) is one dict update; otherwise each kind has its own loop and a row costs one dict
    operation: ``setdefault`` inserts a new key's fate, and the assignment after it records
    the latest image either way (for a new key it writes what is already there)."""
    if images and MISSING in images[0] or len(images) > 1 and MISSING in images[1]:
        # The columns an image holds are set once per rows event: its first row tells for all.
        plan.conflicts.append(Conflict("partial_image", table.name,
                                       "a row image is not FULL (binlog_row_image was not FULL)"))
        return False
    key_indexes = table.schema.primary_key
    if not key_indexes:
        deltas = table.deltas  # event order kept: it is the order of the undo's statements
        step = -1 if kind == "delete" else 1
        for n, image in enumerate(images):
            deltas[image] += -1 if kind == "update" and not n % 2 else step
        return True
    # Keys are tuples of the key columns' values, made at C speed: itemgetter of several
    # indexes returns a tuple, and zip over one iterable makes 1-tuples.
    if len(key_indexes) == 1:
        keys = list(zip(map(operator.itemgetter(key_indexes[0]), images)))
    else:
        keys = list(map(operator.itemgetter(*key_indexes), images))
    if plan.changed_keys is not None:
        plan.changed_keys.setdefault(table.name, set()).update(keys)
    fates = table.fates
    fresh_keys = keys
    fresh: dict = {}
    if kind == "delete":
        fresh = dict(zip(keys, map(list, zip(images, itertools.repeat(ABSENT))), strict=True))
    elif kind == "insert":
        fresh = dict(zip(keys, map(list, zip(itertools.repeat(ABSENT), images)), strict=True))
    elif keys[0::2] == keys[1::2]:  # an update event in which no row's key changed
        fresh_keys = keys[0::2]
        fresh = dict(zip(fresh_keys, map(list, zip(images[0::2], images[1::2], strict=True)), strict=True))
    if fresh and len(fresh) == len(fresh_keys) and fates.keys().isdisjoint(fresh):
        # The bulk case (a big DELETE or UPDATE): every key is new to the plan and appears once
        # in the event, so each fate is simply [first image, last image], all added at C speed.
        fates.update(fresh)
        return True
    setdefault = fates.setdefault
    if kind == "delete":
        for key, before in zip(keys, images, strict=True):
            setdefault(key, [before, ABSENT])[1] = ABSENT
    elif kind == "insert":
        for key, after in zip(keys, images, strict=True):
            setdefault(key, [ABSENT, after])[1] = after
    else:
        for before_key, after_key, before, after in zip(keys[0::2], keys[1::2], images[0::2], images[1::2],
                                                        strict=True):
            if before_key == after_key:
                setdefault(before_key, [before, after])[1] = after
            else:  # a key-changing update: the old key is gone, the new one appears
                setdefault(before_key, [before, ABSENT])[1] = ABSENT
                setdefault(after_key, [ABSENT, after])[1] = after
    return True


def _gap_conflicts(store: ChangeStore, after_txn_id: int) -> list[Conflict]:
    return [Conflict("gap", None, f"changes were lost after the point (binlog {gap.lost_from} to "
                     f"{gap.resumed_at} was gone: {gap.reason})")
            for gap in store.gaps() if gap.after_txn_id is None or gap.after_txn_id >= after_txn_id]


_OWN_SCHEMA_PREFIXES = (ORIGIN_SCHEMA + ".", HOLD_SCHEMA + ".")


def _log_conflicts(txn: StoredTransaction) -> list[Conflict]:
    conflicts = []
    tables = [t for t in txn.tables if not t.startswith(_OWN_SCHEMA_PREFIXES)]
    if txn.tables and not tables:
        # auroratrack's own schemas (the backtrack marker; the hold schema, created at serve's
        # start): never part of an undo, so a point before serve started is not "before DDL".
        return []
    tables = tables or [None]
    statement = txn.statements[0][:200] if txn.statements else ""
    # DDL auroratrack sent for a held DROP/TRUNCATE (proxy.ddlops): undone by proxy.ddlundo.
    held_ddl = bool(txn.statements) and all(is_op_statement(s, txn.gtid) for s in txn.statements)
    if "ddl" in txn.flags and not held_ddl:
        for table in tables:
            conflicts.append(Conflict("ddl", table, f"DDL after the point (txn {txn.txn_id}, "
                                      f"GTID {txn.gtid}): {statement}"))
    if "statement" in txn.flags:
        for table in tables:
            conflicts.append(Conflict("statement", table, f"statement-format DML after the point cannot be "
                                      f"inverted (txn {txn.txn_id}): {statement}"))
    if "rollback_unresolved" in txn.flags:  # set by the streamer (streamer.FLAG_ROLLBACK_UNRESOLVED)
        for table in tables:
            conflicts.append(Conflict("rollback", table, f"the server rolled back part of txn {txn.txn_id} "
                                      f"(GTID {txn.gtid}) and capture could not tell which row changes "
                                      "(a table's engine is unknown, e.g. dropped since): they may never "
                                      "have happened"))
    if "uncaptured" in txn.flags:  # streamer.FLAG_UNCAPTURED: rows the store does not hold
        for table in tables:
            conflicts.append(Conflict("uncaptured", table, f"txn {txn.txn_id} (GTID {txn.gtid}) holds binlog "
                                      f"events capture could not store: {statement}"))
    if "incident" in txn.flags:  # streamer.FLAG_INCIDENT: the server could not log something
        conflicts.append(Conflict("incident", None, f"the server logged an incident in the binlog (txn "
                                  f"{txn.txn_id}): changes may be missing: {statement}"))
    if "unterminated" in txn.flags:  # streamer.FLAG_UNTERMINATED: the group never ended
        for table in tables:
            conflicts.append(Conflict("unterminated", table, f"txn {txn.txn_id} (GTID {txn.gtid}) never ended "
                                      "in the binlog (no COMMIT/XID before the next group): it may have "
                                      "rolled back"))
    return conflicts


# -- apply ------------------------------------------------------------------------------------------------


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def qualified(table_name: str) -> str:
    schema, _, table = table_name.partition(".")
    return f"{quote_name(schema)}.{quote_name(table)}"


@dataclass(frozen=True)
class _Prepared:
    """The temporary tables of one table's checked apply: latest images of the rows to delete;
    latest images and the ``changed`` columns' targets of the rows to restore."""

    delete_temp: str | None
    restore_temp: str | None
    changed: list[int]
    # Columns the server sets to the time of any UPDATE that does not assign them (TIMESTAMP ...
    # ON UPDATE CURRENT_TIMESTAMP) and that no restored row changes: assigned to themselves.
    auto_updated: list[int] = field(default_factory=list)


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
        self._can_load_data: bool | None = None  # LOAD DATA LOCAL allowed (asked once)
        self.timings: dict[str, float] = {}  # seconds per kind of work, for the backtrack record
        self._prepared: dict[str, _Prepared] = {}  # table name -> temporary tables loaded by prepare

    # -- the transaction ---------------------------------------------------------------------------
    def begin(self) -> None:
        self.configure_session()
        self._run("SET SESSION autocommit = 0", record=False)
        self._run("START TRANSACTION", record=False)

    def configure_session(self) -> None:
        """Every value writable exactly (see the module doc), here and in ``prepare``."""
        for statement in (
            "SET SESSION time_zone = '+00:00'",
            "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'",
            "SET SESSION foreign_key_checks = 0",
            # An UPDATE ... JOIN that does not drive from the updated table collects the new
            # rows in an internal temporary table first; kept in memory up to this size it
            # costs 1.2x a plain UPDATE, spilled to disk at the 16 MB default 2.4x (measured,
            # 200k rows). A session limit, not an allocation: only what is used is taken.
            f"SET SESSION tmp_table_size = {JOIN_BUFFER_BYTES}, max_heap_table_size = {JOIN_BUFFER_BYTES}",
        ):
            self._run(statement, record=False)

    def commit(self) -> None:
        self._run("COMMIT", record=False)

    def rollback(self) -> None:
        try:
            self._run("ROLLBACK", record=False)
        except pymysql.MySQLError:
            pass  # the connection is gone: the server rolls back on its own

    # -- checks the server must answer ----------------------------------------------------------------
    def server_conflicts(self, plan: Plan) -> list[Conflict]:
        """Drift, missing rows, unexpected rows, cascading foreign keys, triggers and
        non-transactional tables."""
        conflicts = self._table_conflicts(plan.tables)
        for table in plan.tables.values():
            if table.has_key:
                conflicts.extend(self._keyed_drift(table))
            else:
                conflicts.extend(self._multiset_drift(table))
        return conflicts

    def conflicts_before_writing(self, plan: Plan, known: frozenset[str] = frozenset()) -> list[Conflict]:
        """What the checked apply cannot fold into its writes: cascading foreign keys, triggers,
        non-transactional tables, and drift of tables without a key (checked image by image).
        Tables in ``known`` were found free of cascades, triggers and engines that do not roll
        back earlier in this backtrack (adding any of them since is DDL, which the log reports as
        a conflict)."""
        fresh = {name: table for name, table in plan.tables.items() if name not in known}
        conflicts = self._table_conflicts(fresh)
        for table in plan.tables.values():
            if not table.has_key:
                conflicts.extend(self._multiset_drift(table))
        return conflicts

    def _table_conflicts(self, tables: dict[str, TableChanges]) -> list[Conflict]:
        return (self._cascade_conflicts(tables) + self._trigger_conflicts(tables)
                + self._engine_conflicts(tables))

    def _engine_conflicts(self, tables: dict[str, TableChanges]) -> list[Conflict]:
        """Tables whose engine does not roll back (Aria, MyISAM, ...): the undo's writes to them
        stay if the backtrack fails halfway, so it could not leave the database as it was."""
        if not tables:
            return []
        schemas = sorted({name.split(".", 1)[0] for name in tables})
        with self.conn.cursor() as cur:
            cur.execute(self.tag + "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.ENGINE FROM information_schema.TABLES t "
                        "JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE WHERE e.TRANSACTIONS = 'NO' "
                        f"AND t.TABLE_SCHEMA IN ({','.join(['%s'] * len(schemas))})", schemas)
            rows = cur.fetchall()
        return [Conflict("non_transactional", f"{s}.{t}", f"engine {engine} does not roll back: if the backtrack "
                         "failed halfway, the undo's writes to this table would stay")
                for s, t, engine in rows if f"{s}.{t}" in tables]

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

    def apply_table_checked(self, table: TableChanges) -> dict[str, int]:
        """Apply one table's inverse with the drift check folded into the writes (not forced).

        Rows added after the point are deleted, and rows changed after it are updated in place,
        only where every column still holds the log's latest image, byte for byte; the number
        of rows each statement matched must equal the plan's. Raises ``Drifted`` otherwise (the
        caller rolls back to its savepoint and runs the detailed check, which names the rows).
        Re-inserted rows fail on their key if one exists after all (``DuplicateRow``). One
        UPDATE ... JOIN against a temporary table replaces a DELETE and an INSERT of every
        restored row plus the separate drift queries (measured: 29 s against 38 s, 1M rows)."""
        if not table.has_key:
            return self.apply_table(table)  # its drift is checked beforehand, image by image
        prepared = self._prepared[table.name]  # loaded by prepare, before the transaction
        fates = table.net_fates()
        added = sum(1 for first, last in fates.values() if first is ABSENT)
        restores = sum(1 for first, last in fates.values() if first is not ABSENT and last is not ABSENT)
        if added:
            self._expect(table, "delete", self._delete_exact(table, prepared.delete_temp), added)
        if restores:
            self._expect(table, "restore", self._restore(table, prepared), restores)
        try:
            with self._timing("insert_s"):
                self._insert(table, [first for first, last in fates.values() if last is ABSENT])
        except pymysql.IntegrityError as exc:
            if exc.args and exc.args[0] == ER_DUP_ENTRY:
                raise DuplicateRow(table.name) from exc
            raise
        return table.counts()

    # -- early writes (proxy.earlywrite) ---------------------------------------------------------------
    def begin_early(self, lock_wait_s: float) -> None:
        """Open the transaction the early writes go into, while clients still run.

        READ COMMITTED: the joins lock only the rows they write (a row they merely read is
        unlocked at once, and no gap is locked), so a client writing other rows never waits;
        and every read sees what clients committed. Our lock waits (row and metadata) are
        bounded by ``lock_wait_s``: a client holding a lock for longer makes the early writes give up
        (the pause then applies as it always did), never wait on and on."""
        self.configure_session()
        bound = max(1, int(lock_wait_s))
        for variable in ("innodb_lock_wait_timeout", "lock_wait_timeout"):  # row locks; metadata locks
            self._run(f"SET SESSION {variable} = LEAST(@@SESSION.{variable}, {bound})", record=False)
        self._run("SET SESSION autocommit = 0", record=False)
        self._run("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", record=False)  # this transaction only
        self._run("START TRANSACTION", record=False)

    def end_early(self) -> None:
        """Roll the early writes back and leave the session as ``prepare`` left it."""
        self.rollback()
        self._run("SET SESSION innodb_lock_wait_timeout = DEFAULT, lock_wait_timeout = DEFAULT", record=False)
        self._run("SET SESSION autocommit = 1", record=False)

    def write_early(self, table: TableChanges) -> dict[str, int]:
        """The early writes of one keyed table: the checked apply's DELETE ... JOIN, UPDATE ...
        JOIN and re-insert, before the pause. A row that no longer holds its latest image is
        skipped, not an error: a client may have changed it since the plan, and the pause
        writes it (proxy.earlywrite). Returns the rows each write matched. A re-inserted row
        that exists raises ``IntegrityError``; any error leaves the transaction to the caller."""
        prepared = self._prepared[table.name]  # loaded by prepare, before the transaction
        planned = table.counts()
        matched = dict.fromkeys(planned, 0)
        if planned["delete"]:
            matched["delete"] = self._delete_exact(table, prepared.delete_temp)
        if planned["restore"]:
            matched["restore"] = self._restore(table, prepared)
        if planned["reinsert"]:
            with self._timing("insert_s"):
                self._insert(table, [first for first, last in table.net_fates().values() if last is ABSENT])
            matched["reinsert"] = planned["reinsert"]
        return matched

    def write_rows_checked(self, table: TableChanges, fates: dict[tuple, tuple]) -> bool:
        """Write the fates (key -> (target, latest image)) of a keyed table with literal
        statements, each row only where it still holds its latest image: the pause's share
        once the early writes are done (a few rows, and no temporary table may be created in
        the open transaction). False as soon as a row does not match (the caller falls back
        to the detailed path); a re-inserted row that exists raises ``IntegrityError``."""
        name = qualified(table.name)
        added = [(key, last) for key, (first, last) in fates.items() if first is ABSENT]
        # Small batches: the server tries each row against the OR of the batch's images (1,000
        # rows a statement made a million comparisons: the bench's 2,155-row delta took 0.7 s).
        for batch in _batches(added, DELTA_BATCH_ROWS):
            images = " OR ".join(f"({self._match_image(table, last)})" for _, last in batch)
            where = f"{self._key_in(table, [key for key, _ in batch])} AND ({images})"
            if self._run(f"DELETE FROM {name} WHERE {where}") != len(batch):
                return False
        keys = set(table.schema.primary_key)
        defs = table.schema.columns
        columns = [i for i in self._write_columns(table) if i not in keys]
        for key, (first, last) in fates.items():
            if first is ABSENT or last is ABSENT:
                continue
            assign = ", ".join(f"{self._col(table, i)} = {sql_literal(first[i], defs[i])}" for i in columns)
            if not assign or self._run(f"UPDATE {name} SET {assign} WHERE {self._key_in(table, [key])} "
                                       f"AND {self._match_image(table, last)}") != 1:
                return False
        self._insert(table, [first for first, last in fates.values() if last is ABSENT])
        return True

    def prepare(self, plan: Plan, only_missing: bool = False) -> None:
        """Load the checked apply's temporary tables while clients still run: only the writes
        that must see the final state are left for the pause. Temporary tables are private to
        this connection and, under ROW binlogging, never logged. Tables that later changes
        touch are reloaded in the pause (``discard_stale``, then ``only_missing``), before the
        transaction begins: none is created or dropped inside it (see ``apply_table_checked``)."""
        if not only_missing:
            plan.touched.clear()
        self.configure_session()
        # autocommit: no transaction (and no metadata lock on a client's table) stays open
        # while the images load; ``begin`` turns it off again.
        self._run("SET SESSION autocommit = 1", record=False)
        for name, table in plan.tables.items():
            if table.has_key and name not in self._prepared:
                self._prepared[name] = self._load(table)
        if only_missing:
            return
        self.timings["prepare_load_temp_s"] = self.timings.pop("load_temp_s", 0.0)

    def discard_stale(self, plan: Plan) -> None:
        """After ``extend_plan``: drop what ``prepare`` loaded for tables changed since."""
        for name in plan.touched & self._prepared.keys():
            prepared = self._prepared.pop(name)
            for temp in (prepared.delete_temp, prepared.restore_temp):
                if temp is not None:
                    self._run(f"DROP TEMPORARY TABLE {temp}", record=False)

    def _load(self, table: TableChanges) -> _Prepared:
        """The temporary tables the checked apply of ``table`` joins against."""
        with gc_paused():  # a million (first, last) pairs: see gc_paused
            return self._load_table(table)

    def _load_table(self, table: TableChanges) -> _Prepared:
        fates = table.net_fates()
        added = [last for first, last in fates.values() if first is ABSENT]
        restores = [(first, last) for first, last in fates.values() if first is not ABSENT and last is not ABSENT]
        columns = self._write_columns(table)
        keys = set(table.schema.primary_key)
        # Only columns some row changes are set and loaded twice: an unchanged column equals
        # its target wherever it equals its latest image, which the WHERE checks.
        changed = [i for i in columns if i not in keys and any(first[i] != last[i] for first, last in restores)]
        with self._timing("load_temp_s"):
            delete_temp = self._temp_table(table, columns, added, index=False) if added else None
            restore_temp = self._restore_table(table, columns, changed, restores) if changed else None
        auto_updated = [i for i in self._auto_updated_columns(table) if i not in changed] if changed else []
        return _Prepared(delete_temp, restore_temp, changed, auto_updated)

    def _auto_updated_columns(self, table: TableChanges) -> list[int]:
        """Indexes of the columns with ON UPDATE CURRENT_TIMESTAMP (the log does not say)."""
        schema, _, name = table.name.partition(".")
        found = {row[0] for row in self._query(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = " + _string(schema)
            + " AND TABLE_NAME = " + _string(name) + " AND LOWER(EXTRA) LIKE '%on update%'")}
        return [i for i, column in enumerate(table.schema.columns) if column.name in found]

    def savepoint(self) -> None:
        self._run("SAVEPOINT auroratrack_checked", record=False)

    def rollback_to_savepoint(self) -> None:
        self._run("ROLLBACK TO SAVEPOINT auroratrack_checked", record=False)

    @contextlib.contextmanager
    def _timing(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - began

    def _expect(self, table: TableChanges, what: str, matched: int, expected: int) -> None:
        if matched != expected:
            raise Drifted(f"{table.name}: {what} matched {matched} of {expected} rows")

    def _delete_exact(self, table: TableChanges, temp: str) -> int:
        """Delete the rows added after the point that still hold their latest image (``temp``)."""
        # MariaDB resolves a multi-table DELETE's alias in the default database (error 1046
        # without one): the table is named in full instead.
        c = qualified(table.name)
        on = " AND ".join(f"{c}.{self._col(table, i)} = e.{self._col(table, i)}" for i in table.schema.primary_key)
        same = " AND ".join(self._same(table, i, c, "e") for i in self._write_columns(table))
        # The temporary table is left to the end of the connection: dropped here, inside the
        # transaction, it would make MariaDB log a rollback's row events.
        with self._timing("delete_s"):
            return self._run(f"DELETE {c} FROM {c} JOIN {temp} AS e ON {on} WHERE {same}")

    def _restore(self, table: TableChanges, prepared: _Prepared) -> int:
        """Update rows changed after the point back to their first image, in place, where they
        still hold their latest image; returns the rows matched (the connection reports matched,
        not changed, rows with CLIENT_FOUND_ROWS; without it a no-op row reads as drift and the
        caller takes the detailed path, which is slower but just as right)."""
        if prepared.restore_temp is None:
            raise Drifted(f"{table.name}: only generated columns changed")  # rare: the detailed path
        temp = prepared.restore_temp
        on = " AND ".join(f"c.{self._col(table, i)} = e.`e{i}`" for i in table.schema.primary_key)
        same = " AND ".join(self._same_as(table, i, f"e{i}") for i in self._write_columns(table))
        assign = ", ".join([f"c.{self._col(table, i)} = e.`t{i}`" for i in prepared.changed]
                           + [f"c.{self._col(table, i)} = c.{self._col(table, i)}" for i in prepared.auto_updated])
        with self._timing("update_s"):  # the temporary table is left to the connection's end
            return self._run(f"UPDATE {qualified(table.name)} AS c JOIN {temp} AS e ON {on} "
                             f"SET {assign} WHERE {same}")

    def _restore_table(self, table: TableChanges, columns: list[int], changed: list[int], restores: list) -> str:
        """A temporary table of latest images (``e<i>``) and, for changed columns, targets (``t<i>``)."""
        self._temp_tables += 1
        temp = f"{quote_name(ORIGIN_SCHEMA)}.{quote_name(f'restore_{self._temp_tables}')}"
        select = ", ".join([f"{self._col(table, i)} AS `e{i}`" for i in columns]
                           + [f"{self._col(table, i)} AS `t{i}`" for i in changed])
        self._run(f"CREATE TEMPORARY TABLE {temp} AS SELECT {select} FROM {qualified(table.name)} LIMIT 0",
                  record=False)
        # Keyed like the table (its rows' keys are unique there now, in the same collations):
        # the optimizer may then scan the table in key order and look each row up here, which
        # updates in place; driven from this table, MariaDB first collects every new row in an
        # internal temporary table. Measured, 1M of 1M sysbench rows: 14.7 s against 19.2 s.
        keyed = False
        with contextlib.suppress(pymysql.MySQLError):  # e.g. a TEXT key: the join is slower, not wrong
            key_list = ", ".join(f"`e{i}`" for i in table.schema.primary_key)
            self._run(f"ALTER TABLE {temp} ADD PRIMARY KEY ({key_list})", record=False)
            keyed = True
        names = [f"`e{i}`" for i in columns] + [f"`t{i}`" for i in changed]
        defs = table.schema.columns
        # Each row is the latest image followed by the changed columns' targets, written
        # straight from the (first, last) pairs.
        fields = tuple([((1, i), defs[i]) for i in columns] + [((0, i), defs[i]) for i in changed])
        try:
            self._bulk_insert(temp, names, fields, restores, record=False)
        except pymysql.IntegrityError as exc:
            if not keyed or exc.args[0] != ER_DUP_ENTRY:
                raise
            # Two rows the log keeps apart ('a', 'A') share a key in the table's collation: only
            # writes the binlog never saw make that, and the checked UPDATE then finds the drift.
            self._run(f"DELETE FROM {temp}", record=False)
            self._run(f"ALTER TABLE {temp} DROP PRIMARY KEY", record=False)
            self._bulk_insert(temp, names, fields, restores, record=False)
        return temp

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
        self._bulk_insert(qualified(table.name), names, self._fields(table, columns), images)

    def _bulk_insert(self, target: str, names: list[str], fields: tuple[RowField, ...], rows: list,
                     record: bool = True) -> None:
        """Insert ``rows`` (``fields`` says where each value is, as ``rows_literal_writer``
        takes them) into ``target``: one LOAD DATA LOCAL where it writes every value exactly
        (proxy.loaddata: 30-40% less server time), else multi-row INSERTs. A duplicate key
        raises ``IntegrityError`` ER_DUP_ENTRY either way."""
        spec = load_spec(fields, tuple(names)) if self._load_data_allowed(len(rows)) else None
        if spec is None:
            head = f"INSERT INTO {target} ({', '.join(names)}) VALUES "
            self._run_all(self._rows_statements(head, rows_literal_writer(fields), rows), record=record)
            return
        try:
            load_rows(self.conn, target, spec, rows, self.tag)
        except LoadIncomplete as exc:
            if exc.duplicate:
                raise pymysql.IntegrityError(ER_DUP_ENTRY, str(exc)) from exc
            raise

    def _load_data_allowed(self, n_rows: int) -> bool:
        """Writes are really sent, none is shown (a dry run's SQL stays readable INSERTs), the
        rows are many, and the connection and the server allow LOAD DATA LOCAL."""
        if self.dry_run or self.emit is not None or n_rows < LOAD_DATA_MIN_ROWS:
            return False
        if self._can_load_data is None:
            self._can_load_data = load_available(self.conn)
        return self._can_load_data

    def _fields(self, table: TableChanges, columns: list[int]) -> tuple[RowField, ...]:
        defs = table.schema.columns
        return tuple([(i, defs[i]) for i in columns])

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

    def _rows_statements(self, head: str, write_rows: Callable[[Iterable], list[str]],
                         rows: list) -> Iterator[str]:
        """``head`` followed by rows of literals, in statements of at most BATCH_ROWS rows or
        about BATCH_BYTES (the row that reaches it included); ``write_rows`` is a
        ``rows_literal_writer``. Rows are written a statement's worth at a time: one call per
        statement, not per row or value."""
        for start in range(0, len(rows), BATCH_ROWS):
            literals = write_rows(rows[start:start + BATCH_ROWS])
            if sum(map(len, literals)) < BATCH_BYTES:  # the common case: one statement
                yield head + ", ".join(literals)
                continue
            batch: list[str] = []
            size = 0
            for row in literals:
                batch.append(row)
                size += len(row)
                if size >= BATCH_BYTES:
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

    def _same_as(self, table: TableChanges, index: int, temp_column: str) -> str:
        """Column ``index`` of the table (``c``) equals ``temp_column`` of ``e``, byte for byte."""
        col = self._col(table, index)
        return (f"(c.{col} <=> e.`{temp_column}` AND "
                f"CAST(c.{col} AS BINARY) <=> CAST(e.`{temp_column}` AS BINARY))")

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

    def _temp_table(self, table: TableChanges, columns: list[int], images: list, index: bool = True) -> str:
        self._temp_tables += 1
        temp = f"{quote_name(ORIGIN_SCHEMA)}.{quote_name(f'expected_{self._temp_tables}')}"
        column_list = ", ".join(self._col(table, i) for i in columns)
        self._run(f"CREATE TEMPORARY TABLE {temp} AS SELECT {column_list} FROM {qualified(table.name)} LIMIT 0",
                  record=False)
        key_list = ", ".join(self._col(table, i) for i in table.schema.primary_key)
        try:
            if index:  # not needed where the join only looks rows up by the table's own key
                self._run(f"ALTER TABLE {temp} ADD INDEX (  {key_list})", record=False)
        except pymysql.MySQLError:
            pass  # e.g. a TEXT key: the join is slower, not wrong
        names = [self._col(table, i) for i in columns]
        self._bulk_insert(temp, names, self._fields(table, columns), images, record=False)
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


class Drifted(Exception):
    """A checked write matched fewer rows than the plan expects: some row is not what the log
    says (the detailed check names it)."""


def _batches(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key_text(row: tuple) -> str:
    return ", ".join(repr(v) for v in row)


def _string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


ROWS_EVENT_TYPES = bl.ROWS_EVENTS
