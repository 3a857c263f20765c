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

Foreign keys (``ForeignKey``): a child's ``id`` references a parent's indexed ``id``, made with
the child or by ALTER TABLE ... ADD CONSTRAINT (foreign_key_checks off: the model knows no rows),
taken off by DROP FOREIGN KEY. DML may break them (1451/1452, refused with the checks on) or run
with the checks off; DROP/TRUNCATE of a referenced parent runs with the checks off (its children
keep naming it, as the server leaves them) or on, where the step expects the server's 1451/1701
(``Step.refused``) and the model drops only what MariaDB drops, in statement order. CONVERT TO
CHARACTER SET utf8mb4 (a whole-table save of proxy.ddlsave) is drawn often on referenced parents.

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
    _error_code,
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
# Foreign keys: every one is ``CONSTRAINT fkN FOREIGN KEY (id) REFERENCES parent (id)`` (a
# child's id, which no ALTER drops, on a parent's indexed id); names are unique in a database.
FOREIGN_KEY_NAMES = tuple(f"fk{n}" for n in range(6))
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
class ForeignKey:
    name: str
    parent: str  # the table whose id it references; missing after a DROP with foreign_key_checks = 0

    def sql(self) -> str:
        return f"CONSTRAINT `{self.name}` FOREIGN KEY (`id`) REFERENCES `{self.parent}` (`id`)"


@dataclass(frozen=True)
class TableModel:
    name: str
    columns: tuple[Column, ...]  # the key column first, at creation; ADD COLUMN may put one before it
    keyed: bool
    indexed: bool = False  # a keyless table's index on id: KEY (id), or the one a foreign key made
    foreign_keys: tuple[ForeignKey, ...] = ()

    @property
    def referable(self) -> bool:
        """Whether a foreign key may reference its id (InnoDB needs an index that starts with it)."""
        return self.keyed or self.indexed

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

    def table(self, name: str) -> TableModel:
        return next(t for t in self.tables if t.name == name)

    def referenced(self) -> set[str]:
        """The names foreign keys reference, present or not."""
        return {k.parent for t in self.tables for k in t.foreign_keys}

    def rename_targets(self) -> list[str]:
        """Free names no foreign key references: the server refuses to RENAME a table to a
        name a dangling key references unless the table has an index on id (errno 150)."""
        referenced = self.referenced()
        return [n for n in self.free_names() if n not in referenced]

    def free_foreign_key_names(self) -> list[str]:
        taken = {k.name for t in self.tables for k in t.foreign_keys}
        return [n for n in FOREIGN_KEY_NAMES if n not in taken]

    def referenced_from_others(self, name: str) -> bool:
        return any(t.name != name and any(k.parent == name for k in t.foreign_keys) for t in self.tables)

    def renamed(self, old: str, new: str) -> SchemaModel:
        """RENAME TABLE old TO new: the keys that reference it follow it (InnoDB renames them)."""
        def follow(table: TableModel) -> TableModel:
            keys = tuple(replace(k, parent=new) if k.parent == old else k for k in table.foreign_keys)
            return replace(table, name=new if table.name == old else table.name, foreign_keys=keys)
        return SchemaModel(tuple(follow(t) for t in self.tables))


@dataclass(frozen=True)
class Step:
    """One step of a sequence: a DDL statement (``kind`` its verb) or a DML transaction."""

    kind: str  # create | drop | truncate | rename | add_column | drop_column | alter | convert |
    #            add_foreign_key | drop_foreign_key | dml
    txn: Txn
    checks: bool = True  # the session's foreign_key_checks for the step (0: mysqldump-style)
    refused: int | None = None  # the error the server must answer the DDL with (nothing changes)

    def describe(self) -> str:
        checks = "" if self.checks else "SET foreign_key_checks = 0 ; "
        refused = f", refused {self.refused}" if self.refused else ""
        return f"{self.kind}: {checks}{' ; '.join(self.txn.statements)[:400]} ({self.txn.ending}{refused})"


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
    # A name keys still reference (their parent dropped with the checks off) needs an index on
    # id: InnoDB links those keys to the new table (errno 150 without one).
    indexed = not keyed and (name in model.referenced() or draw(st.booleans()))
    table = TableModel(name, columns, keyed, indexed=indexed)
    clauses = [table.table().clauses] if table.table().clauses else []
    parents = [t.name for t in model.tables if t.referable]
    if parents and model.free_foreign_key_names() and draw(st.integers(0, 3)) > 0:  # a child (checks on)
        chosen_parents = draw(st.lists(st.sampled_from(parents), min_size=1, max_size=2))
        keys = tuple(ForeignKey(n, p) for n, p in zip(model.free_foreign_key_names(), chosen_parents, strict=False))
        clauses += [k.sql() for k in keys]
        table = replace(table, foreign_keys=keys, indexed=not keyed)  # the key makes its index
    sql = (f"CREATE TABLE `{name}` ({', '.join(column_sql(c) for c in columns)}"
           f"{''.join(', ' + c for c in clauses)}) DEFAULT CHARSET=utf8mb4")
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
    if len(model.tables) >= 2 and model.rename_targets() and draw(st.booleans()):
        two = st.lists(st.sampled_from(model.tables), min_size=2, max_size=2, unique_by=lambda t: t.name)
        first, second = draw(two)
        spare = draw(st.sampled_from(model.rename_targets()))
        pairs = [(first.name, spare), (second.name, first.name), (spare, second.name)]
        for old, new in pairs:
            model = model.renamed(old, new)
    for _ in range(0 if pairs else draw(st.integers(1, 3))):
        source = draw(st.sampled_from(model.tables))
        target = draw(st.sampled_from(model.rename_targets()))
        pairs.append((source.name, target))
        model = model.renamed(source.name, target)
        if not model.rename_targets():
            break
    sql = "RENAME TABLE " + ", ".join(f"`{old}` TO `{new}`" for old, new in pairs)
    return Step("rename", Txn((sql,), "autocommit")), model


def _checks(draw: st.DrawFn, model: SchemaModel, names: list[str]) -> bool:
    """foreign_key_checks for a DROP/TRUNCATE of ``names``: off in two of three steps that meet a
    referenced parent (a mysqldump script's ``SET foreign_key_checks=0; DROP TABLE ...``)."""
    return not (any(model.referenced_from_others(n) for n in names) and draw(st.integers(0, 2)) < 2)


@st.composite
def _drop(draw: st.DrawFn, model: SchemaModel) -> tuple[Step, SchemaModel]:
    """DROP TABLE of one or two tables. With foreign_key_checks on, MariaDB drops them in order
    and refuses (1451, after dropping the others) each still referenced by another table then;
    with the checks off every one goes, its children's keys left naming it."""
    parents = [t for t in model.tables if model.referenced_from_others(t.name)]
    tables = draw(st.lists(st.sampled_from(model.tables), min_size=1, max_size=2, unique_by=lambda t: t.name))
    if parents and draw(st.integers(0, 3)) > 0:  # a referenced parent, often: first or second
        tables = [t for t in tables if t not in parents] + [draw(st.sampled_from(parents))]
        tables = tables[-2:] if draw(st.booleans()) else tables[-1:] + tables[:-1][-1:]
    checks = _checks(draw, model, [t.name for t in tables])
    refused = None
    for table in tables:
        if checks and model.referenced_from_others(table.name):
            refused = 1451
            continue
        model = model.without(table.name)
    sql = f"DROP TABLE {', '.join(f'`{t.name}`' for t in tables)}"
    return Step("drop", Txn((sql,), "autocommit"), checks, refused), model


@st.composite
def _foreign_key(draw: st.DrawFn, model: SchemaModel) -> tuple[Step, SchemaModel]:
    """ALTER TABLE ... ADD CONSTRAINT ... FOREIGN KEY (with foreign_key_checks off: rows the
    model does not know may not match) or ... DROP FOREIGN KEY (its index stays)."""
    children = [t for t in model.tables if t.foreign_keys]
    parents = [t.name for t in model.tables if t.referable]
    addable = [t for t in model.tables if any(p != t.name for p in parents)] if model.free_foreign_key_names() else []
    if children and (not addable or draw(st.integers(0, 2)) > 0):
        child = draw(st.sampled_from(children))
        key = draw(st.sampled_from(child.foreign_keys))
        altered = replace(child, foreign_keys=tuple(k for k in child.foreign_keys if k != key))
        sql = f"ALTER TABLE `{child.name}` DROP FOREIGN KEY `{key.name}`"
        return Step("drop_foreign_key", Txn((sql,), "autocommit")), model.with_table(altered)
    child = draw(st.sampled_from(addable))
    key = ForeignKey(model.free_foreign_key_names()[0], draw(st.sampled_from([p for p in parents if p != child.name])))
    altered = replace(child, foreign_keys=child.foreign_keys + (key,), indexed=not child.keyed)
    sql = f"ALTER TABLE `{child.name}` ADD {key.sql()}"
    return Step("add_foreign_key", Txn((sql,), "autocommit"), checks=False), model.with_table(altered)


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
    # Rows that break a key (1451/1452) are refused, with the checks on; sometimes they are off.
    checks = not (model.referenced() and draw(st.integers(0, 4)) == 0)
    return Step("dml", Txn(tuple(draw(ops) for _ in range(count)), ending), checks)


@st.composite
def _ddl(draw: st.DrawFn, model: SchemaModel, types: tuple[Column, ...]) -> tuple[Step, SchemaModel]:
    kinds = ["create"] if len(model.tables) < MAX_TABLES else []
    if len(model.tables) == 1:  # a second table, soon: foreign keys need two
        kinds += ["create", "create"]
    if model.tables:
        kinds += ["drop", "truncate", "alter", "alter", "alter", "alter", "convert"]
        if model.rename_targets():
            kinds.append("rename")
        referable = [t for t in model.tables if t.referable]
        if any(t.foreign_keys for t in model.tables) or (len(model.tables) >= 2 and referable):
            kinds += ["foreign_key", "foreign_key", "foreign_key"]
        if model.referenced() & {t.name for t in model.tables}:  # the DROP of a parent: refused, or checks off
            kinds.append("drop")
    kind = draw(st.sampled_from(kinds))
    if kind == "create":
        step, table = draw(_create(model, types))
        return step, model.with_table(table)
    if kind == "drop":
        return draw(_drop(model))
    if kind == "rename":
        return draw(_rename(model))
    if kind == "foreign_key":
        return draw(_foreign_key(model))
    parents = [t for t in model.tables if model.referenced_from_others(t.name)]
    # Referenced parents, often: a held TRUNCATE and the whole-table saves re-point their children.
    table = draw(st.sampled_from(parents if parents and draw(st.booleans()) else model.tables))
    if kind == "truncate":  # of a referenced parent with the checks on: the server's 1701
        checks = _checks(draw, model, [table.name])
        refused = 1701 if checks and model.referenced_from_others(table.name) else None
        return Step(kind, Txn((f"TRUNCATE TABLE `{table.name}`",), "autocommit"), checks, refused), model
    if kind == "convert":  # a whole-table save (proxy.ddlsave); latin1 columns become utf8mb4
        return Step(kind, Txn((f"ALTER TABLE `{table.name}` CONVERT TO CHARACTER SET utf8mb4",), "autocommit")), model
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
        step = replace(step, txn=Txn(opened + step.txn.statements, "open"))
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
    """Run one step on a writer connection (oracle_workload.writer); DDL must succeed, or fail
    with the error the model expects (``Step.refused``)."""
    tally.statements[step.kind] += 1
    if not step.checks:
        tally.statements[f"{step.kind}, foreign_key_checks = 0"] += 1
        with conn.cursor() as cur:
            cur.execute("SET foreign_key_checks = 0")
    try:
        _run_step(conn, step, tally)
    finally:
        if not step.checks:
            with conn.cursor() as cur:
                cur.execute("SET foreign_key_checks = 1")


def _run_step(conn: pymysql.Connection, step: Step, tally: DdlTally) -> None:
    if step.txn.ending == "open":
        tally.statements["DML then DDL, uncommitted"] += 1
        opened = run_transaction(conn, Txn(("BEGIN",) + step.txn.statements[:-1], "autocommit"))
        tally.dml_rows += opened.rows
        tally.failed.update(opened.failed)
    if step.kind != "dml":
        with conn.cursor() as cur:
            try:
                cur.execute(step.txn.statements[-1])
            except pymysql.MySQLError as exc:
                if step.refused is None or _error_code(exc) != step.refused:
                    raise
                tally.statements[f"{step.kind} refused {step.refused}"] += 1
                return
        assert step.refused is None, f"the server refuses this with {step.refused}, the proxy did not: {step}"
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
