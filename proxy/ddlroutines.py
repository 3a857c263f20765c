"""Recorded stored-program DDL: triggers, procedures, functions and events, made invertible.

CREATE [OR REPLACE] [DEFINER=...] TRIGGER | PROCEDURE | [AGGREGATE] FUNCTION | EVENT [IF NOT
EXISTS], ALTER PROCEDURE | FUNCTION | EVENT (also ALTER EVENT ... RENAME TO) and DROP ... [IF
EXISTS] from clients. proxy.ddlhold claims them (``PREFIX``, a plain COM_QUERY only: the server
prepares none of them) and proxy.ddlrecord hands them here. A stored program holds no data: its
definition is all there is to keep. The op (proxy.ddlops.Op, kind ``routine``) carries in
``change`` the object kind (``object``), the names it touches (``tables``: [schema, name]; an
ALTER EVENT ... RENAME: the old and the new name) and each one's definition before and after the
statement (None: not there), as the server shows it: SHOW CREATE ... with the sql_mode,
character_set_client and collation_connection (and an event's time_zone) it was made with; a
trigger also keeps its table, timing and event and the ACTION_ORDER of the triggers sharing them.
The client's statement runs on its own session, tagged.

The server logs CREATE TRIGGER / PROCEDURE / FUNCTION / EVENT rebuilt (a DEFINER clause added),
without the tag: every op is also known in the log by the GTID the server gave it (MariaDB's
``@@last_gtid``, proxy.ddlops ``note_gtid``); ALTER and DROP keep the tag. On a server without
@@last_gtid (MySQL) a CREATE stays a DDL conflict at backtrack time.

Undo (a new ``routine`` op, the definitions swapped, so its own undo is the forward): what was
not there before dropped; each other re-made with CREATE OR REPLACE from its definition, in its
schema, under the session settings it was made with (set on auroratrack's connection, then put
back). A trigger comes back at its place among its table's triggers of the same timing and event
(FOLLOWS the nearest one before it that is there, else PRECEDES the nearest after it; the
server's SHOW CREATE TRIGGER leaves those clauses out). Of several statements only the last
carries the op's bare tag and GTID: the op is found once in the log.

Not recorded (runs as sent, a DDL conflict as before): a statement whose definition the client's
session cannot read (SHOW CREATE needs privileges) or that is neither ASCII nor made in UTF-8; a
body with a semicolon from a session with CLIENT_MULTI_STATEMENTS (the mariadb CLI's default) unless
it is one BEGIN ... END that ends the text (proxy.ddlscript: anything else could hold a second
statement); DROP FUNCTION of no stored function (maybe a UDF); CREATE FUNCTION ...
SONAME (a UDF); comments inside the text; prepared or in a multi-statement script.
Limits: the re-created program gets a new created/modified time; its DEFINER must be one
auroratrack's user may name; an event's schedule is put back as written (a one-time event whose
time has passed is dropped by the server at once).

Reads and writes the server through the executors it is given; writes the journal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy import ddlops, ddlscript
from proxy.ddllink import Executor, Result
from proxy.ddlops import Journal, Op, qname, quote, sql_string, tag

_NAME = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_QNAME = rf"({_NAME})(?:\s*\.\s*({_NAME}))?"
_ACCOUNT_PART = r"(?:`(?:[^`]|``)*`|'(?:[^'\\]|\\.|'')*'|\"[^\"]*\"|[^\s@]+)"
_DEFINER = rf"(?:DEFINER\s*=\s*{_ACCOUNT_PART}(?:\s*@\s*{_ACCOUNT_PART})?\s+)?"
_OBJECTS = r"(TRIGGER|PROCEDURE|FUNCTION|EVENT)"
# What proxy.ddlhold sends here (the first words only; ``parse`` reads the rest).
PREFIX = re.compile(rf"\s*(?:/\*.*?\*/\s*)*(?:(?:create(?:\s+or\s+replace)?|alter)\s+{_DEFINER}(?:aggregate\s+)?|"
                    rf"drop\s+)(?:trigger|procedure|function|event)\b".encode(), re.IGNORECASE | re.DOTALL)
_CREATE = re.compile(rf"\s*CREATE\s+(?:OR\s+REPLACE\s+)?{_DEFINER}(?:AGGREGATE\s+)?{_OBJECTS}\s+"
                     rf"(?:IF\s+NOT\s+EXISTS\s+)?{_QNAME}", re.IGNORECASE)
_ALTER = re.compile(rf"\s*ALTER\s+{_DEFINER}(PROCEDURE|FUNCTION|EVENT)\s+{_QNAME}", re.IGNORECASE)
_DROP = re.compile(rf"\s*DROP\s+{_OBJECTS}\s+(?:IF\s+EXISTS\s+)?{_QNAME}\s*$", re.IGNORECASE)
_EVENT_RENAME = re.compile(rf"\bRENAME\s+TO\s+{_QNAME}", re.IGNORECASE)
# The head of a SHOW CREATE text, re-written as CREATE OR REPLACE (which refuses IF NOT EXISTS).
_HEAD = re.compile(rf"^CREATE\s+(?:OR\s+REPLACE\s+)?({_DEFINER}(?:AGGREGATE\s+)?{_OBJECTS}\s+)"
                   r"(?:IF\s+NOT\s+EXISTS\s+)?", re.IGNORECASE)
_FOR_EACH_ROW = re.compile(r"\bFOR\s+EACH\s+ROW\s+", re.IGNORECASE)
# SHOW CREATE of a missing object (procedure/function, trigger, event) or schema.
_ABSENT = frozenset({1305, 1360, 1539, 1049})


@dataclass(frozen=True)
class Routine:
    """A stored-program statement: the kind of object and the names it touches."""

    object: str  # TRIGGER | PROCEDURE | FUNCTION | EVENT
    verb: str  # CREATE | ALTER | DROP
    names: list[tuple[str | None, str]]


class Unreadable(Exception):
    """The session cannot read a definition (privileges): the statement is not recorded."""


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def _pair(first: str, second: str | None) -> tuple[str | None, str]:
    return (_unquote(first), _unquote(second)) if second is not None else (None, _unquote(first))


def parse(body: str, multi_statements: bool) -> Routine | None:
    """The stored-program DDL ``body`` is (comments before it stripped, no trailing ';'), or None.
    ``multi_statements``: the session may send several statements in one query (then the text
    must be one statement by proxy.ddlscript's reading of its BEGIN ... END blocks)."""
    if ("/*" in body or "--" in body or "#" in body) and ddlscript.has_comments(body):
        return None  # comments (the head's regexes would read through them); a '#' in a string is fine
    if multi_statements and ";" in body and len(ddlscript.split_statements(body.encode("ascii")) or ()) != 1:
        return None  # a second statement after the body, or a body only the server's parser can read
    found = _CREATE.match(body)
    if found:
        obj = found.group(1).upper()
        if obj in ("PROCEDURE", "FUNCTION") and not re.match(r"\s*\(", body[found.end():]):
            return None  # CREATE FUNCTION f RETURNS ... SONAME: a UDF
        return Routine(obj, "CREATE", [_pair(found.group(2), found.group(3))])
    found = _ALTER.match(body)
    if found:
        names = [_pair(found.group(2), found.group(3))]
        renamed = _EVENT_RENAME.search(body, found.end()) if found.group(1).upper() == "EVENT" else None
        if renamed:
            names.append(_pair(renamed.group(1), renamed.group(2)))
        return Routine(found.group(1).upper(), "ALTER", names)
    found = _DROP.match(body)
    if found:
        return Routine(found.group(1).upper(), "DROP", [_pair(found.group(2), found.group(3))])
    return None


# -- definitions ------------------------------------------------------------------------------------------


def show(ex: Executor, obj: str, db: str, name: str) -> dict | None:
    """The definition of ``obj`` ``db.name`` as the server shows it, None when there is none;
    raises Unreadable when the session may not read it."""
    shown = ex.run(f"/* auroratrack ddl */ SHOW CREATE {obj} {qname(db, name)}")
    if not shown.ok:
        if shown.errno in _ABSENT:
            return None
        raise Unreadable(f"{shown.errno} {shown.message}")
    row = shown.rows[0]
    if obj == "EVENT":  # Event, sql_mode, time_zone, Create Event, charset, collation, db collation
        definition = {"create": row[3], "sql_mode": row[1], "time_zone": row[2], "charset": row[4],
                      "collation": row[5]}
    else:  # Name, sql_mode, Create / SQL Original Statement, charset, collation, ...
        definition = {"create": row[2], "sql_mode": row[1], "charset": row[3], "collation": row[4]}
    if definition["create"] is None:  # shown without the body: no privilege on it
        raise Unreadable(f"SHOW CREATE {obj} {db}.{name} gives no definition")
    if obj == "TRIGGER":
        definition["group"], definition["order"] = _trigger_place(ex, db, name)
    return definition


def _triggers(ex: Executor, db: str) -> list[tuple[str, list[str]]]:
    """(trigger, [table, timing, event]) of schema ``db``, in ACTION_ORDER."""
    listed = ex.run("/* auroratrack ddl */ SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION "
                    f"FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {sql_string(db)} ORDER BY ACTION_ORDER")
    if not listed.ok:
        raise Unreadable(f"{listed.errno} {listed.message}")
    return [(row[0], [row[1], row[2], row[3]]) for row in listed.rows]


def _trigger_place(ex: Executor, db: str, name: str) -> tuple[list[str], list[str]]:
    """The trigger's [table, timing, event] and the triggers sharing them, in ACTION_ORDER."""
    listed = _triggers(ex, db)
    group = next((g for n, g in listed if n == name), None)
    if group is None:  # (not listed to this session)
        raise Unreadable(f"trigger {db}.{name} is not in information_schema.TRIGGERS")
    return group, [n for n, g in listed if g == group]


def _position(ex: Executor, db: str, name: str, definition: dict) -> str:
    """FOLLOWS / PRECEDES putting trigger ``name`` back at its place among those there now."""
    order = definition["order"]
    there = {n for n, g in _triggers(ex, db) if g == definition["group"] and n != name}
    at = order.index(name)
    before = [n for n in reversed(order[:at]) if n in there]
    if before:
        return f"FOLLOWS {quote(before[0])} "
    after = [n for n in order[at + 1:] if n in there]
    return f"PRECEDES {quote(after[0])} " if after else ""


# -- recording (the client's session) ------------------------------------------------------------------


def record(session: Executor, journal: Journal, statement: str, names: list[tuple[str, str]],
           routine: Routine) -> Result:
    """Run the client's statement as a recorded op; unrecorded (as sent) when a definition
    cannot be read or a DROP FUNCTION finds no stored function (it may drop a UDF)."""
    obj = routine.object
    try:
        before = [_faithful(show(session, obj, *n)) for n in names]
    except Unreadable:
        return session.run(statement)
    if obj == "FUNCTION" and routine.verb == "DROP" and before[0] is None:
        return session.run(statement)
    op = Op(ddlops.new_op_id(), "routine", statement, [], created_us=ddlops.now_us(),
            change={"object": obj, "tables": [list(n) for n in names], "before": before})
    # (made with a DEFINER the session cannot read: Unreadable, the op failed, a conflict at backtrack)
    return ddlops.run_recorded(session, journal, op, statement,
                               lambda: [_faithful(show(session, obj, *n)) for n in names], (Unreadable,))


def _faithful(definition: dict | None) -> dict | None:
    """``definition``, if it can be made again as it is: the session link reads text as UTF-8
    (a byte it cannot decode comes back as U+FFFD) and auroratrack's connection sends UTF-8, so
    a definition made in another character set must be ASCII."""
    if definition is not None and not definition["create"].isascii() and (
            "\ufffd" in definition["create"] or not definition["charset"].startswith("utf8")):
        raise Unreadable(f"definition in {definition['charset']} with non-ASCII text")
    return definition


def happened(ex: Executor, op: Op) -> bool:
    """(after a crash) Whether the objects are no longer what they were before the statement."""
    try:
        return [show(ex, op.change["object"], *n) for n in op.change["tables"]] != op.change["before"]
    except Unreadable:
        return False


# -- inverting (the backtrack's connection) ---------------------------------------------------------------


def _statements(obj: str, names: list[list[str]], current: list,
                target: list) -> list[tuple[str, dict | None, str, str]]:
    """(statement, the definition it makes or None, its schema, its name) taking the objects from
    ``current`` to ``target``: a DROP of those that were not there, then a CREATE OR REPLACE of
    each other that differs."""
    out: list[tuple[str, dict | None, str, str]] = []
    for (db, name), now, want in zip(names, current, target, strict=True):
        if want is None and now is not None:
            out.append((f"DROP {obj} {qname(db, name)}", None, db, name))
    for (db, name), now, want in zip(names, current, target, strict=True):
        if want is not None and now != want:
            made = _HEAD.sub(lambda m: "CREATE OR REPLACE " + m.group(1), want["create"], count=1)
            out.append((made, want, db, name))
    return out


def describe_undo(op: Op) -> str | None:
    """The statements the undo runs (for --dry-run)."""
    after = op.change.get("after") or op.change["before"]
    made = _statements(op.change["object"], op.change["tables"], after, op.change["before"])
    return "; ".join(statement[0] for statement in made) or None


def undo(ex: Executor, journal: Journal, op: Op) -> str | None:
    """Put the objects back as they were before ``op``; returns the new op's id (None: nothing to do)."""
    obj, names = op.change["object"], op.change["tables"]
    current = [show(ex, obj, *n) for n in names]
    made = _statements(obj, names, current, op.change["before"])
    if not made:
        return None
    inverse = Op(ddlops.new_op_id(), "routine", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us(),
                 change={"object": obj, "tables": names, "before": current})
    journal.save(inverse)
    for n, (statement, definition, db, name) in enumerate(made):
        # The op's bare tag on its last statement only, and its GTID the last one's: the op is
        # found once in the log (the server drops the tag of a CREATE anyway).
        step = None if n == len(made) - 1 else "routine"
        prior = ddlops.last_gtid(ex)
        result = _run(ex, tag(inverse.op_id, step), statement, obj, definition, db, name)
        if not result.ok:
            inverse.state = "failed"
            journal.save(inverse)
            raise ddlops.DdlError(result)
        ddlops.note_gtid(ex, inverse, prior)
    inverse.change["after"] = [show(ex, obj, *n) for n in names]
    inverse.state = "done"
    journal.save(inverse)
    return inverse.op_id


def _run(ex: Executor, tagged: str, statement: str, obj: str, definition: dict | None, db: str,
         name: str) -> Result:
    if definition is None:
        return ex.run(tagged + statement)
    if obj == "TRIGGER":
        place = _position(ex, db, name, definition)
        statement = _FOR_EACH_ROW.sub(lambda m: m.group(0) + place, statement, count=1)
    # SHOW CREATE names the object and what it uses unqualified: its schema is the session's;
    # the server stores sql_mode, the character set (and an event's time zone) with the
    # definition and shows them: the same ones are set to make it again.
    saved = ddlops._must(ex.run("/* auroratrack ddl */ SELECT @@session.sql_mode, @@session.character_set_client, "
                                "@@session.collation_connection, @@session.time_zone, DATABASE()")).rows[0]
    ddlops._must(ex.run(f"/* auroratrack ddl */ USE {quote(db)}"))
    settings = (f"sql_mode = {sql_string(definition['sql_mode'])}, character_set_client = "
                f"{sql_string(definition['charset'])}, collation_connection = {sql_string(definition['collation'])}")
    if definition.get("time_zone"):
        settings += f", time_zone = {sql_string(definition['time_zone'])}"
    ddlops._must(ex.run(f"/* auroratrack ddl */ SET SESSION {settings}"))
    try:
        return ex.run(tagged + statement)
    finally:
        ex.run(f"/* auroratrack ddl */ SET SESSION sql_mode = {sql_string(saved[0])}, character_set_client = "
               f"{sql_string(saved[1])}, collation_connection = {sql_string(saved[2])}, "
               f"time_zone = {sql_string(saved[3])}")
        if saved[4] is not None:
            ex.run(f"/* auroratrack ddl */ USE {quote(saved[4])}")
