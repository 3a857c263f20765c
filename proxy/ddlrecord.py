"""Recorded DDL: CREATE TABLE, RENAME TABLE and ALTER TABLE from clients, made invertible.

DESIGN.md decision 12, the DDL that is not a DROP/TRUNCATE. proxy.ddlhold claims these statements as it
claims DROP/TRUNCATE (the same relay hook, session link and journal); this module runs them as
*recorded ops* (proxy.ddlops.Op, kind ``create`` | ``rename`` | ``alter``):

  1. the definition before (``SHOW CREATE TABLE`` on the client's own session) goes into the
     journal with the op, state ``started``;
  2. the client's statement runs on its own session, unchanged but for the op's tag in front
     (``/* auroratrack ddl op=ID */``): its binlog event is the op's, and the planner finds it
     there as it finds a held DROP's RENAME (proxy.ddlundo splits the backtrack at it);
  3. the definition after goes into the journal, state ``done`` (an error: ``failed``, and the
     server's own answer goes to the client).

Inverting (``undo``, run by proxy.ddlundo between the row steps of a backtrack, newest first):
  * ``create``: the created table is moved aside into ``auroratrack_hold`` (a held op of
    proxy.ddlops, never destroyed), so a forward backtrack renames it back;
  * ``rename``: the pairs renamed back, last first, as a new ``rename`` op;
  * ``alter``: one ALTER TABLE from the definition now to the one before (``inverse_alter``: the
    columns the ALTER added dropped, changed column definitions, indexes, foreign keys, checks
    and the COMMENT put back), as a new ``alter`` op whose own inverse is the forward.

Row images logged before a recorded DDL are decoded with the table map they were logged with
(the store keeps one per layout, with the column names under binlog_row_metadata=FULL), and the
steps of proxy.ddlundo apply them only once the table is back in that layout.

Recorded ALTERs: ADD COLUMN/INDEX/KEY/CONSTRAINT, DROP INDEX/KEY/FOREIGN KEY/CONSTRAINT/CHECK,
ALTER COLUMN ... DEFAULT, COMMENT and the like; and the ones that may lose data, DROP COLUMN,
MODIFY, CHANGE (a narrowing or a type change): the primary key and the columns they name are
saved first (``_save``: CREATE TABLE ... SELECT into ``auroratrack_hold``, out of the binlog,
on auroratrack's connection after a COMMIT of the client's session, the implicit commit the
ALTER makes anyway), and the undo writes them back over the rows with the same key after the
inverse ALTER (``_restore``, an UPDATE ... JOIN, logged: a forward backtrack undoes it). An undo
that drops or changes columns saves them too, so the forward gets them back. The saved table is
held data of the op (proxy.ddlretention: listed, and dropped when the op leaves the window).

Not recorded (runs as sent; a backtrack across it is a DDL conflict, as before): a destructive
ALTER of a table without a primary key or touching a key column, CONVERT TO CHARACTER SET,
RENAME, anything about partitions, ORDER BY, DISCARD/IMPORT, IF [NOT] EXISTS clauses; CREATE
TABLE ... SELECT, CREATE OR REPLACE, CREATE TEMPORARY TABLE; statements with comments inside.
Limits: a write by another session between the save and the ALTER is not in the saved data (the
undo then meets it as drift); the restore UPDATE fires the table's UPDATE triggers.

Reads and writes the server through the executors it is given; reads and writes the journal.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from proxy import ddlops
from proxy.ddllink import Executor, Result
from proxy.ddlops import HOLD_SCHEMA, Journal, Op, Swap, qname, quote, tag

log = logging.getLogger(__name__)

KINDS = frozenset({"create", "rename", "alter", "noop"})
_NAME = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_QNAME = rf"({_NAME})(?:\s*\.\s*({_NAME}))?"
PREFIX = re.compile(rb"\s*(?:/\*.*?\*/\s*)*(?:create\s+table|rename\s+tables?|alter\s+(?:online\s+)?table)\b",
                    re.IGNORECASE | re.DOTALL)
_CREATE = re.compile(rf"\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_QNAME}", re.IGNORECASE)
_RENAME = re.compile(r"\s*RENAME\s+TABLES?\s+", re.IGNORECASE)
_RENAME_PAIR = re.compile(rf"\s*{_QNAME}\s+TO\s+{_QNAME}\s*(,|$)", re.IGNORECASE)
_ALTER = re.compile(rf"\s*ALTER\s+(?:ONLINE\s+)?TABLE\s+{_QNAME}\s+", re.IGNORECASE)
# In an ALTER: clauses not recorded (the statement runs as sent: a conflict at backtrack). Matched
# anywhere, strings included: a false match only means the statement is not recorded, never a
# wrong undo.
_UNSUPPORTED_ALTER = re.compile(
    r"\b(?:CONVERT|RENAME|PARTITION|PARTITIONING|TRUNCATE|DISCARD|IMPORT|ORDER\s+BY|SYSTEM\s+VERSIONING|"
    r"IF\s+EXISTS|IF\s+NOT\s+EXISTS)\b", re.IGNORECASE)
# Clauses that may lose or change a column's data: the columns they name are saved first.
_DESTRUCTIVE = re.compile(rf"\b(?:DROP|MODIFY|CHANGE)\s+(?:COLUMN\s+)?"
                          rf"(?!(?:INDEX|KEY|PRIMARY|FOREIGN|CONSTRAINT|CHECK|DEFAULT)\b)({_NAME})", re.IGNORECASE)
_SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys", HOLD_SCHEMA, "auroratrack"})


@dataclass(frozen=True)
class Recorded:
    """A statement this module records (same shape as proxy.ddlhold.Statement)."""

    kind: str  # create | rename | alter
    text: str
    tables: list[tuple[str | None, str]]  # create/alter: the table; rename: from, to, from, to...
    if_exists: bool = False  # (CREATE ... IF NOT EXISTS)
    columns: tuple[str, ...] = ()  # ALTER: the columns a DROP/MODIFY/CHANGE names (saved first)


def _unquote(name: str | None) -> str | None:
    if name is None:
        return None
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _pair(first: str, second: str | None) -> tuple[str | None, str]:
    return (_unquote(first), _unquote(second)) if second is not None else (None, _unquote(first))


def _strip_comments(text: str) -> str:
    return re.sub(r"^\s*(?:/\*.*?\*/\s*)*", "", text, flags=re.DOTALL)


def parse(query: bytes) -> Recorded | None:
    """The CREATE TABLE / RENAME TABLE / non-destructive ALTER TABLE this module records, or None."""
    if not PREFIX.match(query, 0, 200) or not query.isascii():
        return None
    text = query.decode("ascii")
    body = _strip_comments(text).rstrip().rstrip(";")
    if ";" in body or "/*" in body or "--" in body or "#" in body:
        return None  # several statements, or comments (possibly executable) we do not read
    found = _CREATE.match(body)
    if found:
        rest = body[found.end():]
        if re.search(r"\b(SELECT|IGNORE|REPLACE)\b", rest, re.IGNORECASE):
            return None  # CREATE ... SELECT writes rows in the DDL's own transaction
        return _checked(Recorded("create", text, [_pair(found.group(2), found.group(3))], bool(found.group(1))))
    found = _RENAME.match(body)
    if found:
        tables, pos = [], found.end()
        while pos < len(body):
            pair = _RENAME_PAIR.match(body, pos)
            if pair is None:
                return None
            tables += [_pair(pair.group(1), pair.group(2)), _pair(pair.group(3), pair.group(4))]
            pos = pair.end()
        return _checked(Recorded("rename", text, tables)) if tables else None
    found = _ALTER.match(body)
    if found and not _UNSUPPORTED_ALTER.search(body, found.end()):
        columns = tuple(dict.fromkeys(_unquote(m.group(1)) for m in _DESTRUCTIVE.finditer(body, found.end())))
        return _checked(Recorded("alter", text, [_pair(found.group(1), found.group(2))], columns=columns))
    return None


def _checked(statement: Recorded) -> Recorded | None:
    if any(db is not None and db.lower() in _SYSTEM_SCHEMAS for db, _ in statement.tables):
        return None
    return statement


# -- recording (the client's session) ------------------------------------------------------------------


def record(session: Executor, control: Executor, journal: Journal, statement: Recorded,
           current_db: str | None) -> Result:
    """Run the client's statement as a recorded op (steps 1-3 of the module docstring); an ALTER
    that may lose data has that data saved first (``_save``), or is run as sent (not recorded)
    when it cannot be (no primary key, a key column touched, the save refused)."""
    names = [(db or current_db, name) for db, name in statement.tables]
    op = Op(ddlops.new_op_id(), statement.kind, statement.text, [], created_us=ddlops.now_us(),
            change={"tables": [list(n) for n in names]})
    if statement.kind == "alter":
        op.change["before"] = _show_create(session, *names[0])
        if statement.columns and op.change["before"] is not None:
            # The DDL commits the client's open transaction anyway: committed first, so that
            # the save (auroratrack's connection) reads what the ALTER will change.
            ddlops._must(session.run("/* auroratrack ddl */ COMMIT"))
            journal.save(op)
            if not _save(control, op, *names[0], op.change["before"], statement.columns):
                op.state = "failed"
                journal.save(op)
                return session.run(statement.text)
    elif statement.kind == "create":
        if _show_create(session, *names[0]) is not None:
            op.kind = "noop"  # IF NOT EXISTS of a table that exists (a Note; logged all the same)
        op.swaps.append(Swap(names[0][0], names[0][1], None, f"{op.op_id}_0_{names[0][1]}"[:64]))
    journal.save(op)
    ddlops._test_pause("before_recorded")
    result = session.run(tag(op.op_id) + statement.text)
    if not result.ok:
        op.state = "failed"
        if op.change.get("saved"):
            control.run(f"{tag(op.op_id, 'unsave')}DROP TABLE IF EXISTS {qname(HOLD_SCHEMA, op.change['saved'])}")
    elif statement.kind == "alter":
        op.change["after"] = _show_create(session, *names[0])
    if op.state != "failed":
        op.state = "done"
    journal.save(op)
    return result


def _save(ex: Executor, op: Op, db: str, name: str, create: str, columns) -> bool:
    """Copy the primary key and ``columns`` of ``db.name`` into a table of the hold schema, out
    of the binlog (``sql_log_bin = 0``: a copy of a column need not be replicated nor captured);
    its name goes into ``op.change["saved"]``. False when there is no primary key, a key column
    is among ``columns`` (the rows could not be found again) or a statement fails."""
    key = _primary_key(create)
    present = {c.lower(): c for c in (_unquote(q) for q in _parts(create)[1])}
    wanted = [present[c.lower()] for c in columns if c.lower() in present]
    if not key or not wanted or {c.lower() for c in key} & {c.lower() for c in wanted}:
        return False
    saved = f"{op.op_id}_s_{name}"[:64]
    listed = ", ".join(quote(c) for c in key + wanted)
    if not ex.run("/* auroratrack ddl */ SET SESSION sql_log_bin = 0").ok:
        return False
    try:
        made = ex.run(f"{tag(op.op_id, 'save')}CREATE TABLE {qname(HOLD_SCHEMA, saved)} "
                      f"(PRIMARY KEY ({', '.join(quote(c) for c in key)})) ENGINE=InnoDB "
                      f"SELECT {listed} FROM {qname(db, name)}")
    finally:
        ex.run("/* auroratrack ddl */ SET SESSION sql_log_bin = 1")
    if not made.ok:
        log.warning("ALTER of %s.%s not recorded: its data could not be saved (%s %s)", db, name,
                    made.errno, made.message)
        return False
    op.change.update(saved=saved, key=key, columns=wanted)
    return True


def _restore(ex: Executor, op_id: str, db: str, name: str, change: dict) -> None:
    """Write the saved columns back over the rows with the same key (logged: captured as any
    change, so a backtrack forward undoes it)."""
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in change["key"])
    sets = ", ".join(f"t.{quote(c)} = s.{quote(c)}" for c in change["columns"])
    # A column with ON UPDATE CURRENT_TIMESTAMP would take the time of the restore: assigned to
    # itself, it keeps its value (the server updates it only when it is not assigned).
    restored = {c.lower() for c in change["columns"]}
    for column, definition in _parts(_show_create(ex, db, name) or "")[0].items():
        if " ON UPDATE " in definition.upper() and _unquote(column).lower() not in restored:
            sets += f", t.{column} = t.{column}"
    # Only the rows that differ: a narrowing MODIFY changed few values as a rule, and every row
    # written is a row image in the binlog and the store (1M rows: ~40 s on a loaded machine).
    differ = " OR ".join(f"NOT (t.{quote(c)} <=> s.{quote(c)})" for c in change["columns"])
    ddlops._must(ex.run(f"{tag(op_id, 'restore')}UPDATE {qname(db, name)} AS t JOIN "
                        f"{qname(HOLD_SCHEMA, change['saved'])} AS s ON {on} SET {sets} WHERE {differ}"))


def _primary_key(create: str) -> list[str]:
    found = re.search(r"^  PRIMARY KEY \(((?:`(?:[^`]|``)+`(?:,)?)+)\)", create, re.MULTILINE)
    return [_unquote(q) for q in re.findall(r"`(?:[^`]|``)+`", found.group(1))] if found else []


def _lost_columns(current: str, target: str) -> list[str]:
    """Columns of ``current`` that going to ``target`` drops or changes."""
    cur, _, _, _ = _parts(current)
    tgt, _, _, _ = _parts(target)
    return [_unquote(c) for c, definition in cur.items() if tgt.get(c) != definition]


def _show_create(ex: Executor, db: str, name: str) -> str | None:
    shown = ex.run(f"/* auroratrack ddl */ SHOW CREATE TABLE {qname(db, name)}")
    return shown.rows[0][1] if shown.ok and shown.rows and len(shown.rows[0]) == 2 else None


def recover(journal: Journal, control: Executor) -> list[str]:
    """Settle recorded ops a crash left ``started``: done if the server shows the change, else failed."""
    outcomes = []
    for op in journal.ops("started"):
        if op.kind not in KINDS:
            continue
        (db, name), *_ = [tuple(n) for n in op.change["tables"]]
        now = _show_create(control, db, name)
        if op.kind == "rename":
            happened = now is None
        elif op.kind == "create":
            happened = now is not None
        else:
            happened = now is not None and now != op.change.get("before")
            op.change["after"] = now
        op.state = "done" if happened or op.kind == "noop" else "failed"
        journal.save(op)
        outcomes.append(f"op {op.op_id} ({op.kind}) {op.state}")
    return outcomes


# -- inverting (the backtrack's connection) ---------------------------------------------------------------


def describe_undo(op: Op) -> str | None:
    """The statement that undoes ``op`` (for --dry-run); None when nothing needs undoing."""
    if op.kind == "noop":
        return None
    names = [tuple(n) for n in op.change["tables"]]
    if op.kind == "create":
        return f"RENAME TABLE {qname(*names[0])} TO {qname(HOLD_SCHEMA, op.swaps[0].into)}"
    if op.kind == "rename":
        return _rename_back(names)
    return f"ALTER TABLE {qname(*names[0])} back to: {op.change.get('before', '')[:200]}"


def _rename_back(names: list[tuple[str, str]]) -> str:
    pairs = list(zip(names[0::2], names[1::2], strict=True))
    return "RENAME TABLE " + ", ".join(f"{qname(*new)} TO {qname(*old)}" for old, new in reversed(pairs))


def undo(ex: Executor, journal: Journal, op: Op) -> str | None:
    """Run the inverse of recorded op ``op`` as a new op; returns its id (None: nothing to do).
    A ``create`` is undone by proxy.ddlundo's held-table path (its swap), not here."""
    if op.kind == "noop":
        return None
    names = [tuple(n) for n in op.change["tables"]]
    inverse = Op(ddlops.new_op_id(), op.kind, op.statement, [], undoes=op.op_id, created_us=ddlops.now_us())
    if op.kind == "rename":
        flipped = []
        for old, new in reversed(list(zip(names[0::2], names[1::2], strict=True))):
            flipped += [list(new), list(old)]
        inverse.change = {"tables": flipped}
        statement = _rename_back(names)
    else:
        current = _show_create(ex, *names[0])
        clauses = inverse_alter(current, op.change["before"])
        if not clauses and not op.change.get("saved"):
            return None  # the ALTER changed nothing SHOW CREATE TABLE shows (FORCE, ENGINE=same...)
        if not clauses:  # a column dropped and added again as it was: only its values to write back
            _restore(ex, op.op_id, *names[0], op.change)
            return None
        statement = f"ALTER TABLE {qname(*names[0])} {clauses}"
        inverse.change = {"tables": [list(names[0])], "before": current}
        lost = _lost_columns(current, op.change["before"])
        journal.save(inverse)
        if lost and not _save(ex, inverse, *names[0], current, lost):
            # (a table without a primary key: the columns an undone ADD COLUMN filled come
            # back from the rows a forward backtrack re-applies)
            log.warning("undo of ALTER op %s: columns %s of %s.%s not saved", op.op_id, lost, *names[0])
    journal.save(inverse)
    result = ex.run(tag(inverse.op_id) + statement)
    if not result.ok:
        inverse.state = "failed"
        journal.save(inverse)
        raise ddlops.DdlError(result)
    if op.kind == "alter":
        if op.change.get("saved"):
            _restore(ex, inverse.op_id, *names[0], op.change)
        inverse.change["after"] = _show_create(ex, *names[0])
        if inverse.change["after"] != op.change["before"]:
            log.warning("undo of ALTER op %s: the definition differs from the one before it:\n%s\n%s",
                        op.op_id, inverse.change["after"], op.change["before"])
    inverse.state = "done"
    journal.save(inverse)
    return inverse.op_id


# -- the inverse ALTER ----------------------------------------------------------------------------------------

_COLUMN = re.compile(r"^  (`(?:[^`]|``)+`) (.*?),?$")
_KEY = re.compile(r"^  ((?:PRIMARY KEY|(?:UNIQUE |FULLTEXT |SPATIAL )?KEY (`(?:[^`]|``)+`)|"
                  r"CONSTRAINT (`(?:[^`]|``)+`) (FOREIGN KEY|CHECK)).*?),?$")
_COMMENT = re.compile(r" COMMENT='((?:[^']|'')*)'")


def _parts(create: str) -> tuple[dict[str, str], list[str], dict[str, tuple[str, str]], str]:
    """(column name -> definition, column order, key line -> (kind, name), table options)."""
    lines = create.splitlines()
    columns: dict[str, str] = {}
    keys: dict[str, tuple[str, str]] = {}
    for line in lines[1:-1]:
        key = _KEY.match(line)
        if key:
            if key.group(1).startswith("PRIMARY KEY"):
                keys[key.group(1)] = ("PRIMARY", "")
            elif key.group(2):
                keys[key.group(1)] = ("INDEX", key.group(2))
            else:
                keys[key.group(1)] = ("FOREIGN KEY" if key.group(4) == "FOREIGN KEY" else "CONSTRAINT",
                                      key.group(3))
            continue
        column = _COLUMN.match(line)
        if column:
            columns[column.group(1)] = column.group(2)
    return columns, list(columns), keys, lines[-1]


def inverse_alter(current: str, target: str) -> str:
    """The ALTER TABLE clauses that take a table from ``current`` (SHOW CREATE TABLE) to
    ``target``: drops first (foreign keys, keys, columns), then adds (columns in place, changed
    column definitions, keys, foreign keys), then the COMMENT. Columns are told apart by name:
    an added column dropped, a missing one added after its predecessor in ``target``."""
    cur_cols, cur_order, cur_keys, cur_opts = _parts(current)
    tgt_cols, tgt_order, tgt_keys, tgt_opts = _parts(target)
    clauses = []
    for line, (kind, name) in cur_keys.items():
        if line not in tgt_keys and kind == "FOREIGN KEY":
            clauses.append(f"DROP FOREIGN KEY {name}")
    for line, (kind, name) in cur_keys.items():
        if line not in tgt_keys and kind != "FOREIGN KEY":
            clauses.append({"PRIMARY": "DROP PRIMARY KEY", "INDEX": f"DROP INDEX {name}"}.get(
                kind, f"DROP CONSTRAINT {name}"))
    clauses += [f"DROP COLUMN {name}" for name in cur_cols if name not in tgt_cols]
    # A column that moved (MODIFY ... FIRST, or dropped and added again elsewhere) is not undone
    # by the drops and adds: then every column is placed, in ``target``'s order (the server
    # places positioned columns one by one, in the order of the clauses).
    placed = [name for name in cur_order if name in tgt_cols]
    for n, name in enumerate(tgt_order):
        if name not in cur_cols:
            placed.insert(placed.index(tgt_order[n - 1]) + 1 if n else 0, name)
    reorder = placed != tgt_order
    for n, name in enumerate(tgt_order):
        where = f"AFTER {tgt_order[n - 1]}" if n else "FIRST"
        if name not in cur_cols:
            clauses.append(f"ADD COLUMN {name} {tgt_cols[name]} {where}")
        elif reorder:
            clauses.append(f"MODIFY COLUMN {name} {tgt_cols[name]} {where}")
        elif cur_cols[name] != tgt_cols[name]:
            clauses.append(f"MODIFY COLUMN {name} {tgt_cols[name]}")
    for line, (kind, _) in tgt_keys.items():
        if line not in cur_keys and kind != "FOREIGN KEY":
            clauses.append(f"ADD {line}")
    for line, (kind, _) in tgt_keys.items():
        if line not in cur_keys and kind == "FOREIGN KEY":
            clauses.append(f"ADD {line}")
    cur_comment, tgt_comment = _COMMENT.search(cur_opts), _COMMENT.search(tgt_opts)
    if (cur_comment and cur_comment.group(1)) != (tgt_comment and tgt_comment.group(1)):
        clauses.append(f"COMMENT='{tgt_comment.group(1) if tgt_comment else ''}'")
    return ", ".join(clauses)


__all__ = ["KINDS", "PREFIX", "Recorded", "describe_undo", "inverse_alter", "parse", "quote", "record", "recover",
           "undo"]
