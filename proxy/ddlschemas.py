"""Recorded schema DDL: CREATE DATABASE, ALTER DATABASE, and DROP DATABASE of a schema without tables.

proxy.ddlrecord parses CREATE/ALTER DATABASE (or SCHEMA) and hands them here; proxy.ddlhold
hands over a DROP DATABASE when the schema holds no base table (with tables it is a held op of
proxy.ddlops, which keeps the schema's other objects too). A schema's definition is its
``SHOW CREATE DATABASE`` (character set, collation, comment) and, for a drop, the views,
procedures, functions and events it holds (``ddlops.read_schema``). The op (proxy.ddlops.Op,
kind ``schema``) carries in ``change`` the schema (``tables``: [[db, ""]]) and its definition
before and after the statement (None: no schema). The server may log these statements rebuilt:
the op is also known by its GTID (``ddlops.note_gtid``); without one (MySQL) a CREATE DATABASE
stays a DDL conflict as before.

Undo (a new ``schema`` op, the definitions swapped, so its own undo is the forward): a schema
that was not there is dropped, only if no table is left in it by then (a backtrack undoes what
was made in it first; a table left is refused, never dropped; its views and programs are kept in
the undo's op); one that was there is created again from its
definition, its views and programs after; a changed one is altered back (character set,
collation, comment).

Not recorded (runs as sent; a backtrack across it is a DDL conflict): CREATE OR REPLACE DATABASE
of a schema that exists (it drops the schema's tables for real), ALTER DATABASE ... UPGRADE DATA
DIRECTORY NAME, READ ONLY or ENCRYPTION, the server's own schemas, a schema whose definition
auroratrack's connection cannot read.

Reads and writes the server through the executors it is given; writes the journal.
"""

from __future__ import annotations

import re

from proxy import ddlops
from proxy.ddllink import Executor, Result
from proxy.ddlops import Journal, Op, quote, sql_string, tag

_NAME = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
PREFIX = re.compile(rb"\s*(?:/\*.*?\*/\s*)*(?:create(?:\s+or\s+replace)?|alter)\s+(?:database|schema)\b",
                    re.IGNORECASE | re.DOTALL)
_CREATE = re.compile(rf"\s*CREATE\s+(OR\s+REPLACE\s+)?(?:DATABASE|SCHEMA)\s+(?:IF\s+NOT\s+EXISTS\s+)?({_NAME})",
                     re.IGNORECASE)
_OPTION_WORDS = r"(?:DEFAULT|CHARACTER|CHARSET|COLLATE|COMMENT|READ|ENCRYPTION)\b"  # no name: the session's
_ALTER = re.compile(rf"\s*ALTER\s+(?:DATABASE|SCHEMA)(?:\s+(?!{_OPTION_WORDS})({_NAME}))?(?=\s)", re.IGNORECASE)
# Not recorded: MariaDB's name upgrade, MySQL's READ ONLY and ENCRYPTION (not undone by an ALTER here).
_UNRECORDED = re.compile(r"\b(?:UPGRADE\s+DATA\s+DIRECTORY\s+NAME|READ\s+ONLY|ENCRYPTION)\b", re.IGNORECASE)
# SHOW CREATE DATABASE: CREATE DATABASE `d` /*!40100 DEFAULT CHARACTER SET x COLLATE y */ COMMENT '...'
_OPTIONS = re.compile(r"CREATE DATABASE `(?:[^`]|``)+` /\*!40100 (.*?) \*/")
_COMMENT = re.compile(r" (COMMENT '(?:[^'\\]|\\.|'')*')\s*$")


def parse(body: str) -> tuple[str, str | None, bool] | None:
    """(verb CREATE | ALTER, the schema or None for the session's, CREATE OR REPLACE) of a
    schema statement (comments before it stripped), or None."""
    found = _CREATE.match(body)
    if found:
        return "CREATE", _unquote(found.group(2)), bool(found.group(1))
    found = _ALTER.match(body)
    if found and not _UNRECORDED.search(body):
        return "ALTER", _unquote(found.group(1)) if found.group(1) else None, False
    return None


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def show(ex: Executor, db: str, objects: bool = False) -> dict | None:
    """The schema's definition (``ddlops.read_schema``; its objects only with ``objects``), or
    None when there is no such schema."""
    shown = ex.run(f"/* auroratrack ddl */ SHOW CREATE DATABASE {quote(db)}")
    if not shown.ok:
        if shown.errno == 1049:
            return None
        raise ddlops.DdlError(shown)
    if objects:
        return ddlops.read_schema(ex, db)
    return {"db": db, "create": shown.rows[0][1], "objects": []}


def exists(control: Executor, db: str) -> bool:
    found = control.run(f"/* auroratrack ddl */ SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE "
                        f"SCHEMA_NAME = {sql_string(db)}")
    return not found.ok or int(found.rows[0][0]) > 0  # (unknown: as if it did, so not recorded)


def record(session: Executor, control: Executor, journal: Journal, statement: str, db: str,
           objects: bool = False) -> Result:
    """Run the client's schema statement (on its session) as a recorded op, the definitions read
    on auroratrack's connection (``objects``: a DROP, which takes the schema's views and
    programs with it); when they cannot be read, the statement runs as sent, unrecorded."""
    try:
        before = show(control, db, objects)
    except ddlops.DdlError:
        return session.run(statement)
    op = Op(ddlops.new_op_id(), "schema", statement, [], created_us=ddlops.now_us(),
            change={"tables": [[db, ""]], "before": before})
    return ddlops.run_recorded(session, journal, op, statement, lambda: _shown_after(control, db))


def _shown_after(control: Executor, db: str) -> dict | None:
    try:
        return show(control, db)
    except ddlops.DdlError:  # (only --dry-run's description reads it)
        return None


def settle(ex: Executor, op: Op) -> bool:
    """(after a crash) Whether the schema is no longer what it was before the statement; an
    undo that made a dropped schema again gets the views and programs it had not made yet."""
    db = op.change["tables"][0][0]
    now = show(ex, db)
    before = op.change["before"]
    happened = (now is None) != (before is None) or now is not None and now["create"] != before["create"]
    if happened and now is not None and op.change.get("make_objects"):
        ddlops.create_objects(op.op_id, ex, db, op.change["make_objects"])
    return happened


def _statements(db: str, current: dict | None, target: dict | None) -> list[str]:
    """What takes the schema from ``current`` to ``target`` (the objects of a re-made schema
    are re-created after these: ``undo``)."""
    if target is None:
        return [] if current is None else [f"DROP DATABASE {quote(db)}"]
    if current is None:
        return [target["create"]]
    if current["create"] == target["create"]:
        return []
    options = _OPTIONS.match(target["create"])
    comment = _COMMENT.search(target["create"])
    # (a schema comment is MariaDB's: cleared only where the current one has one)
    cleared = "COMMENT ''" if _COMMENT.search(current["create"]) else ""
    clauses = [options.group(1) if options else "", comment.group(1) if comment else cleared]
    return [f"ALTER DATABASE {quote(db)} {' '.join(c for c in clauses if c)}"]


def describe_undo(op: Op) -> str | None:
    """The statements the undo runs (for --dry-run)."""
    db = op.change["tables"][0][0]
    made = _statements(db, op.change.get("after"), op.change["before"])
    return "; ".join(made) or None


def undo(ex: Executor, journal: Journal, op: Op) -> str | None:
    """Put the schema back as it was before ``op``; returns the new op's id (None: nothing to do)."""
    db = op.change["tables"][0][0]
    target = op.change["before"]
    current = show(ex, db, objects=target is None)
    made = _statements(db, current, target)
    if not made:
        return None
    if target is None:
        _refuse_unless_empty(ex, db)
    # A schema made again gets its objects after it: journalled first, a crash between the two
    # is finished by ``settle``.
    make_objects = target["objects"] if current is None else []
    inverse = Op(ddlops.new_op_id(), "schema", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us(),
                 change={"tables": [[db, ""]], "before": current, "make_objects": make_objects})
    journal.save(inverse)
    prior = ddlops.last_gtid(ex)
    result = ex.run(tag(inverse.op_id) + made[0])
    if not result.ok:
        inverse.state = "failed"
        journal.save(inverse)
        raise ddlops.DdlError(result)
    ddlops.note_gtid(ex, inverse, prior)
    if make_objects:  # views, routines, events of a dropped schema
        ddlops.create_objects(inverse.op_id, ex, db, make_objects)
    inverse.change["after"] = show(ex, db)
    inverse.state = "done"
    journal.save(inverse)
    return inverse.op_id


def _refuse_unless_empty(ex: Executor, db: str) -> None:
    """A schema is only dropped by an undo when no table is left in it (its views and programs
    are kept in the undo's op, which a forward backtrack re-makes)."""
    found = ddlops._must(ex.run(
        "/* auroratrack ddl */ SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
        f"{sql_string(db)} AND TABLE_TYPE <> 'VIEW'"))
    if int(found.rows[0][0]):
        raise ddlops.DdlError(Result("err", errno=0, message=f"schema {db} still holds tables: not dropped by the "
                                                              "undo of its CREATE DATABASE"))
