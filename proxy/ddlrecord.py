"""Recorded DDL: CREATE/RENAME/ALTER TABLE, indexes, views and stored programs from clients, made invertible.

DESIGN.md decision 12, the DDL that is not a DROP/TRUNCATE. proxy.ddlhold claims these statements as it
claims DROP/TRUNCATE (the same relay hook, session link and journal); this module runs them as
*recorded ops* (proxy.ddlops.Op, kind ``create`` | ``rename`` | ``alter`` | ``view`` | ``routine``):

  1. the definition before (``SHOW CREATE TABLE`` on the client's own session) goes into the
     journal with the op, state ``started``;
  2. the client's statement runs on its own session, unchanged but for the op's tag in front
     (``/* auroratrack ddl op=ID */``): its binlog event is the op's, and the planner finds it
     there as it finds a held DROP's RENAME (proxy.ddlundo splits the backtrack at it). The
     server logs CREATE TABLE ... SELECT, view DDL and CREATE TRIGGER/PROCEDURE/FUNCTION/EVENT
     rebuilt, without the tag: those ops are known by the GTID the server gave them
     (``ddlops.note_gtid``);
  3. the definition after goes into the journal, state ``done`` (an error: ``failed``, and the
     server's own answer goes to the client).

Inverting (``undo``, run by proxy.ddlundo between the row steps of a backtrack, newest first):
  * ``create`` (also ``... LIKE`` and ``... SELECT``, whose rows are logged with it and go with
    the table): the created table is moved aside into ``auroratrack_hold`` (a held op of
    proxy.ddlops, never destroyed), so a forward backtrack renames it back. CREATE OR REPLACE
    TABLE of an existing table holds that table first, as DROP TABLE does (proxy.ddlsave);
  * ``rename`` (RENAME TABLE, or ALTER TABLE ... RENAME alone): the pairs renamed back, last
    first, as a new ``rename`` op;
  * ``alter`` (CREATE/DROP INDEX too): one ALTER TABLE from the definition now to the one before
    (``inverse_alter`` of proxy.ddldefs: the columns the ALTER added dropped, changed column
    definitions, indexes, foreign keys, checks, COMMENT, ENGINE and ROW_FORMAT put back), as a
    new ``alter`` op whose own inverse is the forward; or, for what was saved first (below), a
    swap or a re-insert;
  * ``view``: proxy.ddlviews (the definition before put back, or the view dropped);
  * ``routine`` (CREATE/ALTER/DROP TRIGGER, PROCEDURE, FUNCTION, EVENT; ``parse_routine``, a
    plain query only): proxy.ddlroutines (the definition before put back with the session
    settings it was made with and a trigger's place in its table's order, or the object dropped).

Row images logged before a recorded DDL are decoded with the table map they were logged with
(the store keeps one per layout, with the column names under binlog_row_metadata=FULL), and the
steps of proxy.ddlundo apply them only once the table is back in that layout.

Recorded ALTERs: ADD COLUMN/INDEX/KEY/CONSTRAINT, DROP INDEX/KEY/FOREIGN KEY/CONSTRAINT/CHECK,
ALTER COLUMN ... DEFAULT, RENAME INDEX, COMMENT, ENGINE, ROW_FORMAT, IF [NOT] EXISTS and the like;
and the ones that may lose data, saved first on auroratrack's connection, out of the binlog,
after a COMMIT of the client's session (the implicit commit the ALTER makes anyway):
  * DROP COLUMN, MODIFY, CHANGE (a narrowing or a type change) of a table with a primary key
    they leave alone: the key and the columns they name (``_save``: CREATE TABLE ... SELECT into
    ``auroratrack_hold``); the undo writes them back over the rows with the same key after the
    inverse ALTER (``_restore``, an UPDATE ... JOIN, logged: a forward backtrack undoes it). An
    undo that drops or changes columns saves them too, so the forward gets them back;
  * DROP/TRUNCATE PARTITION of a RANGE or LIST table: the rows of those partitions
    (proxy.ddlpartitions; the undo re-adds the partitions and re-inserts the rows);
  * the rest, which no key or ALTER built from two definitions undoes (a destructive ALTER of a
    table without a primary key or of a key column, RENAME COLUMN, CONVERT TO CHARACTER SET, a
    new default character set or collation, other partition changes, ORDER BY, ALTER ... RENAME
    with other clauses): the whole table (proxy.ddlsave; the undo swaps the saved table back
    in, one RENAME).
Saved tables are held data of the op (proxy.ddlretention: listed, and dropped when the op leaves
the window).

ALTER TABLE ... EXCHANGE PARTITION alone is its own inverse: the undo exchanges again (a crash
between the statement and its journal entry leaves the op failed: a conflict, never a guess).

Not recorded (runs as sent; a backtrack across it is a DDL conflict, as before): DISCARD/IMPORT
TABLESPACE, EXCHANGE PARTITION with other clauses, SYSTEM VERSIONING; a save that cannot be made (a table other
tables' foreign keys reference that the ALTER also renames, a system-versioned table, the server
refuses the copy); CREATE TEMPORARY TABLE; statements with comments inside; on a server without
@@last_gtid (MySQL), CREATE TABLE ... SELECT, CREATE/ALTER VIEW and CREATE TRIGGER/
PROCEDURE/FUNCTION/EVENT stay conflicts. Stored programs (proxy.ddlroutines): a definition the
client's session may not read; from a session with CLIENT_MULTI_STATEMENTS, a text that is not
exactly one statement (proxy.ddlscript reads the body's BEGIN ... END blocks); prepared
(COM_STMT_PREPARE, SQL PREPARE) or inside a multi-statement script; CREATE FUNCTION ... SONAME
and DROP FUNCTION of no stored function (UDFs).
Saves wait at most ``ddlsave.SAVE_LOCK_WAIT_S`` for a lock (the client may hold the table with
LOCK TABLES while it waits for its ALTER): then the ALTER runs as sent, unrecorded.
Limits: a write by another session between the save and the ALTER is not in the saved data (the
undo then meets it as drift); the restore UPDATE/INSERT fires the table's triggers; a trigger an
ALTER broke (it names a dropped column) cannot be re-created by the forward of a swap; a crash
in the middle of an undo's several statements leaves that op as the server shows it.

Reads and writes the server through the executors it is given; reads and writes the journal.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from proxy import ddlops, ddlpartitions, ddlroutines, ddlsave, ddlschemas, ddlscript, ddlviews, execcomments
from proxy.ddldefs import auto_updated_columns, column_names, inverse_alter, lost_columns, primary_key
from proxy.ddllink import Executor, Result
from proxy.ddlops import HOLD_SCHEMA, Journal, Op, Swap, qname, quote, tag

log = logging.getLogger(__name__)

KINDS = frozenset({"create", "rename", "alter", "noop", "view", "routine", "schema", "exchange"})
_NAME = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_QNAME = rf"({_NAME})(?:\s*\.\s*({_NAME}))?"
PREFIX = re.compile(rb"\s*(?:/\*.*?\*/\s*)*(?:create\s+(?:or\s+replace\s+)?table|rename\s+tables?|"
                    rb"alter\s+(?:online\s+)?table|create\s+(?:(?:unique|fulltext|spatial)\s+)?index|drop\s+index|"
                    rb"(?:create(?:\s+or\s+replace)?|alter)\s+(?:algorithm|definer|sql\s+security|view|database|schema)|"
                    rb"drop\s+view)\b",
                    re.IGNORECASE | re.DOTALL)
_CREATE = re.compile(rf"\s*CREATE\s+(OR\s+REPLACE\s+)?TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{_QNAME}", re.IGNORECASE)
_RENAME = re.compile(r"\s*RENAME\s+TABLES?\s+", re.IGNORECASE)
_RENAME_PAIR = re.compile(rf"\s*{_QNAME}\s+TO\s+{_QNAME}\s*(,|$)", re.IGNORECASE)
_ALTER = re.compile(rf"\s*ALTER\s+(?:ONLINE\s+)?TABLE\s+{_QNAME}\s+", re.IGNORECASE)
# CREATE INDEX / DROP INDEX: recorded as the ALTER TABLE they are.
_INDEX = re.compile(rf"\s*(?:CREATE|DROP)\s+(?:(?:UNIQUE|FULLTEXT|SPATIAL)\s+)?INDEX\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
                    rf"{_NAME}\s+(?:USING\s+\w+\s+)?ON\s+{_QNAME}", re.IGNORECASE)
_VIEW = re.compile(rf"\s*(?:CREATE(?:\s+OR\s+REPLACE)?|ALTER)\s+(?:ALGORITHM\s*=\s*\w+\s+)?(?:DEFINER\s*=\s*\S+\s+)?"
                   rf"(?:SQL\s+SECURITY\s+\w+\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?{_QNAME}(?=[\s(])", re.IGNORECASE)
_DROP_VIEW = re.compile(rf"\s*DROP\s+VIEW\s+(?:IF\s+EXISTS\s+)?({_NAME}(?:\s*\.\s*{_NAME})?(?:\s*,\s*{_NAME}"
                        rf"(?:\s*\.\s*{_NAME})?)*)\s*(?:RESTRICT|CASCADE)?\s*$", re.IGNORECASE)
# ALTER TABLE t DROP|TRUNCATE PARTITION p, ...: the partitions' rows saved (proxy.ddlpartitions).
_PARTITIONS = re.compile(rf"(?:DROP|TRUNCATE)\s+PARTITION\s+({_NAME}(?:\s*,\s*{_NAME})*)\s*$", re.IGNORECASE)
# ALTER TABLE t EXCHANGE PARTITION p WITH TABLE u, alone: its own inverse.
_EXCHANGE = re.compile(rf"EXCHANGE\s+PARTITION\s+({_NAME})\s+WITH\s+TABLE\s+{_QNAME}"
                       r"(\s+(?:WITH|WITHOUT)\s+VALIDATION)?\s*$", re.IGNORECASE)
# ALTER TABLE t RENAME [TO|AS] u, alone: a rename.
_ALTER_RENAME_ONLY = re.compile(rf"RENAME\s+(?:TO\s+|AS\s+)?{_QNAME}\s*$", re.IGNORECASE)
_ALTER_RENAME = re.compile(rf"\bRENAME\s+(?!(?:INDEX|KEY|COLUMN)\b)(?:TO\s+|AS\s+)?{_QNAME}", re.IGNORECASE)
# In an ALTER: clauses not recorded (the statement runs as sent: a conflict at backtrack). Matched
# anywhere, strings included: a false match only means the statement is not recorded, never a
# wrong undo.
_UNSUPPORTED_ALTER = re.compile(r"\b(?:DISCARD|IMPORT|EXCHANGE|SYSTEM\s+VERSIONING)\b", re.IGNORECASE)
# Clauses no ALTER built from two SHOW CREATE TABLE texts undoes: the whole table is saved first
# (proxy.ddlsave). A false match (in a string) costs a copy, never a wrong undo.
_WHOLE = re.compile(r"\b(?:CONVERT|PARTITION|PARTITIONING|PARTITIONS|TRUNCATE|ORDER\s+BY|RENAME\s+COLUMN)\b",
                    re.IGNORECASE)
# A table's default character set or collation changed (a clause of its own, not a column's): the
# columns keep theirs and show them, and no MODIFY from their definitions tells them apart.
_TABLE_CHARSET = re.compile(r"(?:^|,)\s*(?:DEFAULT\s+)?(?:CHARSET|CHARACTER\s+SET|COLLATE)\b", re.IGNORECASE)
# Clauses that may lose or change a column's data: the columns they name are saved first.
_DESTRUCTIVE = re.compile(rf"\b(?:DROP|MODIFY|CHANGE)\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?"
                          rf"(?!(?:INDEX|KEY|PRIMARY|FOREIGN|CONSTRAINT|CHECK|DEFAULT|PARTITION)\b)({_NAME})",
                          re.IGNORECASE)
_SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys", HOLD_SCHEMA, "auroratrack"})


@dataclass(frozen=True)
class Recorded:
    """A statement this module records (same shape as proxy.ddlhold.Statement)."""

    kind: str  # create | rename | alter | view
    text: str
    # create/alter/view: the table (an ALTER that renames: then the new name); rename: from, to...
    tables: list[tuple[str | None, str]]
    if_exists: bool = False  # (CREATE ... IF NOT EXISTS)
    columns: tuple[str, ...] = ()  # ALTER: the columns a DROP/MODIFY/CHANGE names (saved first)
    whole: bool = False  # ALTER: the whole table is saved first (proxy.ddlsave)
    partitions: tuple[str, ...] = ()  # ALTER ... DROP|TRUNCATE PARTITION: their rows saved instead
    replace: bool = False  # CREATE OR REPLACE TABLE: an existing table is held first
    # The server logs the statement rebuilt, without the op's tag (CREATE ... SELECT, views):
    # the op is found in the log by its GTID instead.
    by_gtid: bool = False
    routine: ddlroutines.Routine | None = None  # kind routine: what proxy.ddlroutines parsed
    validation: str = ""  # kind exchange: its WITH|WITHOUT VALIDATION clause, said again by the undo


def _unquote(name: str | None) -> str | None:
    if name is None:
        return None
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _pair(first: str, second: str | None) -> tuple[str | None, str]:
    return (_unquote(first), _unquote(second)) if second is not None else (None, _unquote(first))


def _strip_comments(text: str) -> str:
    return re.sub(r"^\s*(?:/\*.*?\*/\s*)*", "", text, flags=re.DOTALL)


def parse(query: bytes) -> Recorded | None:
    """The CREATE/RENAME/ALTER TABLE, CREATE/DROP INDEX or view DDL this module records, or None."""
    if not PREFIX.match(query, 0, 200) or not query.isascii() or execcomments.present(query):
        return None
    text = query.decode("ascii")
    body = _strip_comments(text).rstrip().rstrip(";")
    if (";" in body or "/*" in body or "--" in body or "#" in body) and not ddlscript.is_plain_statement(body):
        return None  # several statements, or comments (possibly executable) we do not read
    found = _CREATE.match(body)
    if found:
        # CREATE ... SELECT: logged as a CREATE the server writes (untagged), its rows after it
        ctas = re.search(r"\bSELECT\b", body[found.end():], re.IGNORECASE) is not None
        return _checked(Recorded("create", text, [_pair(found.group(3), found.group(4))], bool(found.group(2)),
                                 replace=bool(found.group(1)), by_gtid=ctas))
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
    found = _ALTER.match(body) or _INDEX.match(body)
    if found and found.re is _INDEX:
        return _checked(Recorded("alter", text, [_pair(found.group(1), found.group(2))]))
    exchange = _EXCHANGE.match(body, found.end()) if found else None
    if exchange:
        return _checked(Recorded("exchange", text, [_pair(found.group(1), found.group(2)),
                                                    _pair(exchange.group(2), exchange.group(3))],
                                 partitions=(_unquote(exchange.group(1)),), validation=exchange.group(4) or ""))
    if found and not _UNSUPPORTED_ALTER.search(body, found.end()):
        return _checked(_alter(text, body, found))
    found = _VIEW.match(body)
    if found:
        return _checked(Recorded("view", text, [_pair(found.group(1), found.group(2))], by_gtid=True))
    found = _DROP_VIEW.match(body)
    if found:
        views = [_pair(m.group(1), m.group(2)) for m in re.finditer(_QNAME, found.group(1))]
        return _checked(Recorded("view", text, views, by_gtid=True))
    schema = ddlschemas.parse(body)
    if schema:
        return _checked(Recorded("schema", text, [(schema[1], "")], replace=schema[2], by_gtid=True))
    return None


def parse_routine(query: bytes, multi_statements: bool) -> Recorded | None:
    """The trigger, procedure, function or event DDL proxy.ddlroutines records, or None
    (``multi_statements``: the session's CLIENT_MULTI_STATEMENTS)."""
    if not ddlroutines.PREFIX.match(query, 0, 200) or not query.isascii() or execcomments.present(query):
        return None
    text = query.decode("ascii")
    routine = ddlroutines.parse(_strip_comments(text).rstrip().rstrip(";").rstrip(), multi_statements)
    if routine is None:
        return None
    return _checked(Recorded("routine", text, routine.names, by_gtid=True, routine=routine))


def _alter(text: str, body: str, found: re.Match) -> Recorded:
    table = _pair(found.group(1), found.group(2))
    alone = _ALTER_RENAME_ONLY.match(body, found.end())
    if alone:
        return Recorded("rename", text, [table, _pair(alone.group(1), alone.group(2))])
    renamed = _ALTER_RENAME.search(body, found.end())
    if renamed:  # with other clauses: the table saved, the undo swaps it back under its old name
        return Recorded("alter", text, [table, _pair(renamed.group(1), renamed.group(2))], whole=True)
    partitions = _PARTITIONS.match(body, found.end())
    if partitions:
        names = tuple(_unquote(n) for n in re.findall(_NAME, partitions.group(1)))
        return Recorded("alter", text, [table], whole=True, partitions=names)
    columns = tuple(dict.fromkeys(_unquote(m.group(1)) for m in _DESTRUCTIVE.finditer(body, found.end())))
    rest = body[found.end():]
    whole = bool(_WHOLE.search(rest) or _TABLE_CHARSET.search(rest))
    return Recorded("alter", text, [table], columns=columns, whole=whole)


def _checked(statement: Recorded) -> Recorded | None:
    if any(db is not None and db.lower() in _SYSTEM_SCHEMAS for db, _ in statement.tables):
        return None
    return statement


# -- recording (the client's session) ------------------------------------------------------------------


def record(session: Executor, control: Executor, journal: Journal, statement: Recorded,
           current_db: str | None) -> Result:
    """Run the client's statement as a recorded op (steps 1-3 of the module docstring); an ALTER
    that may lose data has that data saved first (``_save``, else the whole table:
    proxy.ddlsave), or is run as sent (not recorded) when it cannot be."""
    names = [(db or current_db, name) for db, name in statement.tables]
    if statement.kind == "view":
        return ddlviews.record(session, journal, statement.text, names)
    if statement.kind == "routine":
        return ddlroutines.record(session, journal, statement.text, names, statement.routine)
    if statement.kind == "schema":
        if statement.replace and ddlschemas.exists(control, names[0][0]):
            return session.run(statement.text)  # CREATE OR REPLACE DATABASE drops its tables: not recorded
        return ddlschemas.record(session, control, journal, statement.text, names[0][0])
    op = Op(ddlops.new_op_id(), statement.kind, statement.text, [], created_us=ddlops.now_us(),
            change={"tables": [list(n) for n in names]})
    held = None  # CREATE OR REPLACE: the replaced table's held op
    if statement.kind == "alter":
        op.change["before"] = _show_create(session, *names[0])
        if (statement.columns or statement.whole) and op.change["before"] is not None:
            # The DDL commits the client's open transaction anyway: committed first, so that
            # the save (auroratrack's connection) reads what the ALTER will change.
            ddlops._must(session.run("/* auroratrack ddl */ COMMIT"))
            journal.save(op)
            if not _save_before(control, op, names[0], statement):
                op.state = "failed"
                journal.save(op)
                return session.run(statement.text)
    elif statement.kind == "exchange":
        op.change.update(partition=statement.partitions[0], validation=statement.validation.strip())
    elif statement.kind == "create":
        existing = _show_create(session, *names[0])
        if existing is not None and statement.replace:
            held = ddlsave.hold_replaced(session, control, journal, *names[0], existing, statement.text) \
                if existing.startswith("CREATE TABLE") else None
            if held is None:
                return session.run(statement.text)  # not recorded: a conflict at backtrack
        elif existing is not None:
            op.kind = "noop"  # IF NOT EXISTS of a table that exists (a Note; logged all the same)
        op.swaps.append(Swap(names[0][0], names[0][1], None, f"{op.op_id}_0_{names[0][1]}"[:64]))
    journal.save(op)
    ddlops._test_pause("before_recorded")
    prior = ddlops.last_gtid(session) if statement.by_gtid else None
    result = session.run(tag(op.op_id) + statement.text)
    if not result.ok:
        op.state = "failed"
        if op.change.get("saved"):
            control.run(f"{tag(op.op_id, 'unsave')}DROP TABLE IF EXISTS {qname(HOLD_SCHEMA, op.change['saved'])}")
        if held is not None:
            ddlsave.unhold(control, journal, held)
    elif statement.kind == "alter":
        op.change["after"] = _show_create(session, *names[-1])
    if result.ok and statement.by_gtid:
        ddlops.note_gtid(session, op, prior)
    if op.state != "failed":
        op.state = "done"
    journal.save(op)
    return result


def _save_before(control: Executor, op: Op, name: tuple[str, str], statement: Recorded) -> bool:
    """Save what the ALTER may lose: the key and the columns it names when the rows can be found
    again by key, else the whole table."""
    before = op.change["before"]
    if statement.partitions and ddlpartitions.save_rows(control, op, *name, before, list(statement.partitions)):
        return True
    if not statement.whole and _save(control, op, *name, before, statement.columns):
        return True
    return ddlsave.save_whole(control, op, *name, before)


def _save(ex: Executor, op: Op, db: str, name: str, create: str, columns) -> bool:
    """Copy the primary key and ``columns`` of ``db.name`` into a table of the hold schema, out
    of the binlog (``sql_log_bin = 0``: a copy of a column need not be replicated nor captured);
    its name goes into ``op.change["saved"]``. False when there is no primary key, a key column
    is among ``columns`` (the rows could not be found again) or a statement fails."""
    key = primary_key(create)
    present = {c.lower(): c for c in column_names(create)}
    wanted = [present[c.lower()] for c in columns if c.lower() in present]
    if not key or not wanted or {c.lower() for c in key} & {c.lower() for c in wanted}:
        return False
    saved = f"{op.op_id}_s_{name}"[:64]
    listed = ", ".join(quote(c) for c in key + wanted)
    made = ddlsave.run_saving(ex, op.op_id, [
        f"CREATE TABLE {qname(HOLD_SCHEMA, saved)} (PRIMARY KEY ({', '.join(quote(c) for c in key)})) "
        f"ENGINE=InnoDB SELECT {listed} FROM {qname(db, name)}"])
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
    for column in auto_updated_columns(_show_create(ex, db, name) or ""):
        if column.lower() not in restored:
            sets += f", t.{quote(column)} = t.{quote(column)}"
    # Only the rows that differ: a narrowing MODIFY changed few values as a rule, and every row
    # written is a row image in the binlog and the store (1M rows: ~40 s on a loaded machine).
    differ = " OR ".join(f"NOT (t.{quote(c)} <=> s.{quote(c)})" for c in change["columns"])
    ddlops._must(ex.run(f"{tag(op_id, 'restore')}UPDATE {qname(db, name)} AS t JOIN "
                        f"{qname(HOLD_SCHEMA, change['saved'])} AS s ON {on} SET {sets} WHERE {differ}"))


def _show_create(ex: Executor, db: str, name: str) -> str | None:
    shown = ex.run(f"/* auroratrack ddl */ SHOW CREATE TABLE {qname(db, name)}")
    return shown.rows[0][1] if shown.ok and shown.rows and len(shown.rows[0]) == 2 else None


def recover(journal: Journal, control: Executor) -> list[str]:
    """Settle recorded ops a crash left ``started``: done if the server shows the change, else failed."""
    outcomes = []
    for op in journal.ops("started"):
        if op.kind not in KINDS:
            continue
        names = [tuple(n) for n in op.change["tables"]]
        now = None if op.kind in ("view", "routine", "schema") else _show_create(
            control, *names[-1 if op.kind == "alter" else 0])
        if op.kind == "view":
            happened = ddlviews.happened(control, op)
        elif op.kind == "routine":
            happened = ddlroutines.happened(control, op)
        elif op.kind == "schema":
            happened = ddlschemas.settle(control, op)
        elif op.kind == "exchange":  # the same definitions either way: not known, so failed (a conflict)
            happened = False
        elif op.kind == "rename":
            happened = now is None
        elif op.kind == "create":
            happened = now is not None
        else:
            happened = now is not None and (len(names) > 1 or now != op.change.get("before"))
            op.change["after"] = now
        op.state = "done" if happened or op.kind == "noop" else "failed"
        if op.state == "failed" and op.change.get("saved"):  # saved for a statement that never ran
            control.run(f"{tag(op.op_id, 'unsave')}DROP TABLE IF EXISTS {qname(HOLD_SCHEMA, op.change['saved'])}")
        journal.save(op)
        outcomes.append(f"op {op.op_id} ({op.kind}) {op.state}")
    return outcomes


# -- inverting (the backtrack's connection) ---------------------------------------------------------------


def describe_undo(op: Op) -> str | None:
    """The statement that undoes ``op`` (for --dry-run); None when nothing needs undoing."""
    if op.kind == "noop":
        return None
    if op.kind == "view":
        return ddlviews.describe_undo(op)
    if op.kind == "routine":
        return ddlroutines.describe_undo(op)
    if op.kind == "schema":
        return ddlschemas.describe_undo(op)
    if op.kind == "exchange":
        return _exchange_statement(op)
    if op.change.get("whole"):
        return ddlsave.describe_swap_back(op)
    names = [tuple(n) for n in op.change["tables"]]
    if op.kind == "create":
        return f"RENAME TABLE {qname(*names[0])} TO {qname(HOLD_SCHEMA, op.swaps[0].into)}"
    if op.kind == "rename":
        return _rename_back(names)
    return f"ALTER TABLE {qname(*names[0])} back to: {op.change.get('before', '')[:200]}"


def _exchange_statement(op: Op) -> str:
    """The EXCHANGE PARTITION again: it is its own inverse."""
    (db, table), (other_db, other) = op.change["tables"]
    validation = f" {op.change['validation']}" if op.change.get("validation") else ""
    return (f"ALTER TABLE {qname(db, table)} EXCHANGE PARTITION {quote(op.change['partition'])} "
            f"WITH TABLE {qname(other_db, other)}{validation}")


def _exchange_back(ex: Executor, journal: Journal, op: Op) -> str:
    """Exchange the partition and the table again, as a new op (its own undo is the forward)."""
    inverse = Op(ddlops.new_op_id(), "exchange", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us(),
                 change=dict(op.change))
    journal.save(inverse)
    result = ex.run(tag(inverse.op_id) + _exchange_statement(op))
    inverse.state = "done" if result.ok else "failed"
    journal.save(inverse)
    if not result.ok:
        raise ddlops.DdlError(result)
    return inverse.op_id


def _rename_back(names: list[tuple[str, str]]) -> str:
    pairs = list(zip(names[0::2], names[1::2], strict=True))
    return "RENAME TABLE " + ", ".join(f"{qname(*new)} TO {qname(*old)}" for old, new in reversed(pairs))


def undo(ex: Executor, journal: Journal, op: Op) -> str | None:
    """Run the inverse of recorded op ``op`` as a new op; returns its id (None: nothing to do).
    A ``create`` is undone by proxy.ddlundo's held-table path (its swap), not here."""
    if op.kind == "noop":
        return None
    if op.kind == "view":
        return ddlviews.undo(ex, journal, op)
    if op.kind == "routine":
        return ddlroutines.undo(ex, journal, op)
    if op.kind == "schema":
        return ddlschemas.undo(ex, journal, op)
    if op.kind == "exchange":
        return _exchange_back(ex, journal, op)
    if op.change.get("whole"):  # the saved table swapped back in (proxy.ddlsave)
        return ddlsave.swap_back(ex, journal, op)
    if op.change.get("partitions") is not None:
        return ddlpartitions.undo(ex, journal, op)
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
        lost = lost_columns(current, op.change["before"])
        journal.save(inverse)
        if lost and not _save(ex, inverse, *names[0], current, lost) and \
                not ddlsave.save_whole(ex, inverse, *names[0], current):
            # (the columns an undone ADD COLUMN filled come back from the rows a forward
            # backtrack re-applies)
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


__all__ = ["KINDS", "PREFIX", "Recorded", "describe_undo", "inverse_alter", "parse", "parse_routine", "quote", "record",
           "recover", "undo"]
