"""The DDL oracle's workload (test_oracle_ddl.py): random sequences of DDL and DML over the
oracle's full type list, drawn against a model of the schema, and snapshots of schema and data.

A sequence is a list of steps, each one statement of DDL sent through the proxy on its own or
one DML transaction: CREATE TABLE (with or without a primary key, columns drawn from the
oracle's type list), DROP TABLE of one or two tables, TRUNCATE, RENAME TABLE (chains of pairs,
or a swap through a free name), ALTER TABLE with 1-3 clauses ADD COLUMN (first, after a column,
or last) and DROP COLUMN (a dropped column often added back), and INSERT/UPDATE/DELETE
transactions (committed, rolled back, or one autocommitted statement) over the tables that
exist at that step; a DDL step may follow DML left open in the session, which it commits. The model
(``SchemaModel``: table names, their columns, whether they have a key) is what the strategies
draw against, so every DDL statement is one the server accepts; DML may still fail on purpose
(duplicate keys, as in the DML oracle), which the server rolls back on its own.

DDL is spelled in ASCII (``ascii_ddl``): the proxy records only ASCII DDL (proxy.ddlrecord),
and non-ASCII members of ENUM and SET columns are written as hex literals in the column's
character set, which the server shows in SHOW CREATE TABLE exactly as the quoted text.

A snapshot (``schema_snapshot``) is SHOW CREATE TABLE of every table of the database, exact
(no AUTO_INCREMENT is used), and every row as the server's own bytes (oracle_workload.snapshot).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass, field, replace

import pymysql
from hypothesis import strategies as st

from tests.integration.oracle_workload import (
    KEY,
    WIDE_COLUMNS,
    Column,
    Table,
    Txn,
    _assignments,
    _insert,
    describe_difference,
    run_transaction,
    snapshot,
)

# DROP COLUMN of a table without a primary key: recorded since the whole-table save
# (proxy.ddlsave); set to False to draw it only on keyed tables (before that it was a conflict).
KEYLESS_DROP_COLUMN = True

TABLE_NAMES = ("t0", "t1", "t2", "t3", "t4")
MAX_TABLES = 3
KEYS = st.integers(1, 6)  # the id values every row uses: few, so statements meet rows
# Generated columns and the column each is computed from (never dropped while it is used).
GENERATED_FROM = {"gv": "ti", "gs": "vcs"}


# ADD COLUMN of a column whose value the server computes at the ALTER (DEFAULT CURRENT_TIMESTAMP)
# to a table without a primary key: before the whole-table save its undo could not keep the
# values it drops, and a forward backtrack got new times (test_keyless_add_column_of_current_
# timestamp_then_back_and_forward). False leaves it out.
KEYLESS_ADD_COMPUTED_COLUMN = True
COMPUTED_DEFAULTS = frozenset({"tsu"})
# Columns drawn more often than the rest: the one whose value the server computes (and updates on
# every row change), and the generated ones with the columns they are computed from.
FAVOURED = ("tsu", "tsu", "tsu", "gv", "ti", "gs", "vcs")


def type_list(flavor: str) -> tuple[Column, ...]:
    """The DML oracle's columns (every type the decoder is checked on) but the key column, the
    ``FAVOURED`` ones more than once."""
    columns = tuple(c for c in WIDE_COLUMNS[1:] if flavor == "mariadb" or not c.mariadb_only)
    return columns + tuple(next(c for c in columns if c.name == name) for name in FAVOURED)


KEY_COLUMN = WIDE_COLUMNS[0]  # id INT NOT NULL: the primary key, or an indexed column of a keyless table


# -- DDL text ---------------------------------------------------------------------------------------------

_STRING = re.compile(r"'((?:[^'\\]|\\.|'')*)'")


def ascii_ddl(ddl: str) -> str:
    """``ddl`` with each quoted string that is not ASCII written as a hex literal of its bytes in
    the column's character set (latin1 or utf8mb4, the ones the type list uses)."""
    charset = "latin1" if "CHARACTER SET latin1" in ddl else "utf-8"

    def hexed(found: re.Match) -> str:
        text = found.group(1)
        return found.group(0) if text.isascii() else f"X'{text.encode(charset).hex().upper()}'"

    return _STRING.sub(hexed, ddl)


def column_sql(column: Column) -> str:
    return f"`{column.name}` {ascii_ddl(column.ddl)}"


# -- the model --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableModel:
    name: str
    columns: tuple[Column, ...]  # the key column first, at creation; ADD COLUMN may put one before it
    keyed: bool
    indexed: bool = False  # a keyless table's KEY (id)

    def table(self) -> Table:
        """As oracle_workload's Table, for its DML strategies."""
        clauses = "PRIMARY KEY (id)" if self.keyed else "KEY (id)" if self.indexed else ""
        return Table(self.name, self.columns, clauses)

    def names(self) -> set[str]:
        return {c.name for c in self.columns}


@dataclass(frozen=True)
class SchemaModel:
    tables: tuple[TableModel, ...] = ()

    def free_names(self) -> list[str]:
        taken = {t.name for t in self.tables}
        return [n for n in TABLE_NAMES if n not in taken]

    def without(self, name: str) -> SchemaModel:
        return SchemaModel(tuple(t for t in self.tables if t.name != name))

    def with_table(self, table: TableModel) -> SchemaModel:
        return SchemaModel(tuple(t for t in self.tables if t.name != table.name) + (table,))


@dataclass(frozen=True)
class Step:
    """One step of a sequence: a DDL statement (``kind`` its verb) or a DML transaction."""

    kind: str  # create | drop | truncate | rename | add_column | drop_column | dml
    txn: Txn

    def describe(self) -> str:
        return f"{self.kind}: {' ; '.join(self.txn.statements)[:400]} ({self.txn.ending})"


def _usable(column: Column, present: set[str]) -> bool:
    base = GENERATED_FROM.get(column.name)
    return base is None or base in present


def _droppable(table: TableModel) -> list[Column]:
    used = {GENERATED_FROM[c.name] for c in table.columns if c.name in GENERATED_FROM}
    return [c for c in table.columns if c.name != KEY_COLUMN.name and c.name not in used]


@st.composite
def _create(draw: st.DrawFn, model: SchemaModel, types: tuple[Column, ...]) -> tuple[Step, TableModel]:
    name = draw(st.sampled_from(model.free_names()))
    chosen = draw(st.lists(st.sampled_from(types), min_size=1, max_size=6, unique_by=lambda c: c.name))
    present = {c.name for c in chosen}
    columns = (KEY_COLUMN,) + tuple(c for c in chosen if _usable(c, present))
    keyed = draw(st.integers(0, 2)) > 0  # two in three: the ALTERs that save data need a key
    table = TableModel(name, columns, keyed, indexed=not keyed and draw(st.booleans()))
    clauses = table.table().clauses
    sql = (f"CREATE TABLE `{name}` ({', '.join(column_sql(c) for c in columns)}"
           f"{', ' + clauses if clauses else ''}) DEFAULT CHARSET=utf8mb4")
    return Step("create", Txn((sql,), "autocommit")), table


def _addable(table: TableModel, types: tuple[Column, ...], present: set[str]) -> list[Column]:
    return [c for c in types if c.name not in present and _usable(c, present)
            and (table.keyed or KEYLESS_ADD_COMPUTED_COLUMN or c.name not in COMPUTED_DEFAULTS)]


@st.composite
def _alter(draw: st.DrawFn, table: TableModel, types: tuple[Column, ...], drops: bool) -> tuple[Step, TableModel]:
    """ALTER TABLE with 1-3 clauses: ADD COLUMN (last, FIRST or AFTER a column) and, when
    ``drops``, DROP COLUMN, in any order (the server drops from the old columns, then adds)."""
    kept, added, anchors, clauses = list(table.columns), [], set(), []
    for _ in range(draw(st.integers(1, 3))):
        droppable = [c for c in _droppable(replace(table, columns=tuple(kept + added)))
                     if c in kept and c.name not in anchors]
        if drops and droppable and draw(st.integers(0, 2)) > 0:
            column = draw(st.sampled_from(droppable))
            kept.remove(column)
            clauses.append(("drop", f"DROP COLUMN `{column.name}`"))
            continue
        # A column dropped earlier in the statement may come back (in place or elsewhere): often.
        addable = _addable(table, types, {c.name for c in kept + added})
        again = [c for c in addable if c in table.columns]
        column = draw(st.sampled_from(again if again and draw(st.booleans()) else addable))
        where = draw(st.sampled_from(("", "FIRST", "AFTER")))
        if where == "AFTER":  # a column that stays, or one added before in this statement
            anchor = draw(st.sampled_from(kept + added))
            anchors.add(anchor.name)
            where = f"AFTER `{anchor.name}`"
        added.append(column)
        clauses.append(("add", f"ADD COLUMN {column_sql(column)}{' ' + where if where else ''}"))
    verbs = {verb for verb, _ in clauses}
    kind = "alter" if len(verbs) > 1 else f"{verbs.pop()}_column"
    sql = f"ALTER TABLE `{table.name}` " + ", ".join(clause for _, clause in clauses)
    return Step(kind, Txn((sql,), "autocommit")), replace(table, columns=tuple(kept + added))


@st.composite
def _rename(draw: st.DrawFn, model: SchemaModel) -> tuple[Step, SchemaModel]:
    """RENAME TABLE of 1-3 pairs, run left to right by the server (chains), or a swap of two
    tables through a free name."""
    pairs = []
    if len(model.tables) >= 2 and draw(st.booleans()):
        two = st.lists(st.sampled_from(model.tables), min_size=2, max_size=2, unique_by=lambda t: t.name)
        first, second = draw(two)
        spare = draw(st.sampled_from(model.free_names()))
        pairs = [(first.name, spare), (second.name, first.name), (spare, second.name)]
        model = model.without(first.name).without(second.name).with_table(
            replace(first, name=second.name)).with_table(replace(second, name=first.name))
    for _ in range(0 if pairs else draw(st.integers(1, 3))):
        source = draw(st.sampled_from(model.tables))
        target = draw(st.sampled_from(model.free_names()))
        pairs.append((source.name, target))
        model = model.without(source.name).with_table(replace(source, name=target))
        if not model.free_names():
            break
    sql = "RENAME TABLE " + ", ".join(f"`{old}` TO `{new}`" for old, new in pairs)
    return Step("rename", Txn((sql,), "autocommit")), model


@st.composite
def _drop(draw: st.DrawFn, model: SchemaModel) -> tuple[Step, SchemaModel]:
    tables = draw(st.lists(st.sampled_from(model.tables), min_size=1, max_size=2, unique_by=lambda t: t.name))
    for table in tables:
        model = model.without(table.name)
    return Step("drop", Txn((f"DROP TABLE {', '.join(f'`{t.name}`' for t in tables)}",), "autocommit")), model


@st.composite
def _dml_op(draw: st.DrawFn, table: TableModel) -> str:
    keys = {KEY_COLUMN.name: KEYS}
    plain = table.table()
    settable = [c for c in plain.writable if c.pool != KEY]
    limit = "" if table.keyed else draw(st.sampled_from(("", " LIMIT 1")))
    kind = draw(st.sampled_from(("insert", "insert", "insert", "update", "update", "rekey", "delete")))
    if kind == "insert" and settable:
        return draw(_insert(plain, keys))
    if kind == "insert":  # only the key column left (_insert's ON DUPLICATE KEY UPDATE needs another)
        return f"INSERT INTO `{table.name}` (id) VALUES ({draw(KEYS)})"
    if kind == "update" and settable:
        assignments = draw(_assignments(plain, keys, 3))
        if "tsu" in table.names() and "`tsu` =" not in assignments and draw(st.booleans()):
            assignments += ", `tsu` = `tsu`"  # changes the row, keeps its ON UPDATE CURRENT_TIMESTAMP
        return f"UPDATE `{table.name}` SET {assignments} WHERE id = {draw(KEYS)}{limit}"
    if kind in ("update", "rekey"):
        return f"UPDATE `{table.name}` SET id = {draw(KEYS)} WHERE id = {draw(KEYS)}{limit}"
    return f"DELETE FROM `{table.name}` WHERE id = {draw(KEYS)}{limit}"


@st.composite
def _dml(draw: st.DrawFn, model: SchemaModel, max_ops: int) -> Step:
    ops = st.sampled_from(model.tables).flatmap(_dml_op)
    ending = draw(st.sampled_from(("commit", "commit", "commit", "autocommit", "rollback")))
    count = 1 if ending == "autocommit" else draw(st.integers(1, max_ops))
    return Step("dml", Txn(tuple(draw(ops) for _ in range(count)), ending))


@st.composite
def _ddl(draw: st.DrawFn, model: SchemaModel, types: tuple[Column, ...]) -> tuple[Step, SchemaModel]:
    kinds = ["create"] if len(model.tables) < MAX_TABLES else []
    if model.tables:
        kinds += ["drop", "truncate", "alter", "alter", "alter", "alter"]
        if model.free_names():
            kinds.append("rename")
    kind = draw(st.sampled_from(kinds))
    if kind == "create":
        step, table = draw(_create(model, types))
        return step, model.with_table(table)
    if kind == "drop":
        return draw(_drop(model))
    if kind == "rename":
        return draw(_rename(model))
    table = draw(st.sampled_from(model.tables))
    if kind == "truncate":
        return Step(kind, Txn((f"TRUNCATE TABLE `{table.name}`",), "autocommit")), model
    step, altered = draw(_alter(table, types, drops=table.keyed or KEYLESS_DROP_COLUMN))
    return step, model.with_table(altered)


@st.composite
def _step(draw: st.DrawFn, model: SchemaModel, types: tuple[Column, ...], max_ops: int) -> tuple[Step, SchemaModel]:
    if model.tables and draw(st.integers(0, 9)) < 5:  # DML first of all: rows for the DDL to meet
        return draw(_dml(model, max_ops)), model
    step, after = draw(_ddl(model, types))
    if model.tables and draw(st.integers(0, 4)) == 0:
        # DML left open in the session: the DDL commits it (implicitly, or the proxy's hold does)
        opened = draw(_dml(model, max_ops)).txn.statements
        step = Step(step.kind, Txn(opened + step.txn.statements, "open"))
    return step, after


@st.composite
def sequences(draw: st.DrawFn, flavor: str, length: tuple[int, int], max_ops: int,
              model: SchemaModel = SchemaModel()) -> tuple[tuple[Step, ...], SchemaModel]:
    """A sequence of steps from ``model`` (a fresh database: no tables), and the model after it."""
    types = type_list(flavor)
    steps = []
    for _ in range(draw(st.integers(*length))):
        step, model = draw(_step(model, types, max_ops))
        steps.append(step)
    return tuple(steps), model


# -- running and snapshots --------------------------------------------------------------------------------


@dataclass
class DdlTally:
    """What the workloads did: used to check that they do something."""

    statements: Counter = field(default_factory=Counter)  # step kind -> steps run
    dml_rows: int = 0
    failed: Counter = field(default_factory=Counter)  # error code -> DML statements refused on purpose
    backtracks: int = 0
    ddl_undone: int = 0  # DDL ops undone by backtracks

    def __str__(self) -> str:
        return (f"steps {dict(self.statements)}, DML rows {self.dml_rows}, refused {dict(self.failed)}, "
                f"backtracks {self.backtracks}, DDL ops undone {self.ddl_undone}")


def run_step(conn: pymysql.Connection, step: Step, tally: DdlTally) -> None:
    """Run one step on a writer connection (oracle_workload.writer); DDL must succeed."""
    tally.statements[step.kind] += 1
    if step.txn.ending == "open":
        tally.statements["DML then DDL, uncommitted"] += 1
        opened = run_transaction(conn, Txn(("BEGIN",) + step.txn.statements[:-1], "autocommit"))
        tally.dml_rows += opened.rows
        tally.failed.update(opened.failed)
    if step.kind != "dml":
        with conn.cursor() as cur:
            cur.execute(step.txn.statements[-1])
        return
    done = run_transaction(conn, step.txn)
    tally.dml_rows += done.rows
    tally.failed.update(done.failed)


DdlSnapshot = dict  # {"create": {table: SHOW CREATE TABLE}, "rows": oracle_workload.Snapshot}


def schema_snapshot(server, database: str) -> DdlSnapshot:
    """Every table's definition and rows, read on the server directly."""
    with server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "ORDER BY TABLE_NAME", (database,))
        creates = {}
        for (name,) in cur.fetchall():
            cur.execute(f"SHOW CREATE TABLE `{name}`")
            creates[name] = cur.fetchone()[1]
    return {"create": creates, "rows": snapshot(server, database)}


def describe_schema_difference(actual: DdlSnapshot, expected: DdlSnapshot) -> str:
    """The definitions that differ (a unified diff each), then the rows."""
    lines = []
    for name in sorted(set(actual["create"]) | set(expected["create"])):
        have, want = actual["create"].get(name), expected["create"].get(name)
        if have != want:
            lines.append(f"table {name}: " + ("missing" if have is None else "unexpected" if want is None
                                              else "definition differs"))
            if have is not None and want is not None:
                lines += difflib.unified_diff(want.splitlines(), have.splitlines(), "expected", "actual",
                                              lineterm="")
    return "\n".join(lines + [describe_difference(actual["rows"], expected["rows"])])


def rows_in(snap: DdlSnapshot) -> int:
    return sum(len(rows) for rows in snap["rows"].values())
