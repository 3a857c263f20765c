"""Recorded view DDL: CREATE [OR REPLACE] VIEW, ALTER VIEW and DROP VIEW, made invertible.

proxy.ddlrecord parses these and hands them here. A view holds no data: its definition is all
there is to keep. The op (proxy.ddlops.Op, kind ``view``) carries in ``change`` each view's
``SHOW CREATE VIEW`` before and after the statement (None: no view; several views: DROP VIEW a,
b), with the character set the server shows with it; the client's statement runs on its own
session, tagged.

The server logs CREATE and ALTER VIEW rebuilt from the definition, without the tag: the op is
known in the log by the GTID the server gave it (MariaDB's ``@@last_gtid``, proxy.ddlops
``note_gtid``); on a server without one the statement stays a DDL conflict at backtrack time.

Undo (a new ``view`` op, the definitions swapped, so its own undo is the forward): the views
that were not there before dropped (one ``DROP VIEW``); each other re-made with ``CREATE OR
REPLACE`` from its ``SHOW CREATE VIEW`` (its algorithm, definer and security as they were), in
its schema, with the character set it was made with. Of several statements only the last
carries the op's bare tag and GTID: the op is found once in the log.

Reads and writes the server through the executors it is given; writes the journal.
"""

from __future__ import annotations

from proxy import ddlops
from proxy.ddllink import Executor, Result
from proxy.ddlops import Journal, Op, qname, quote, sql_string, tag


def show(ex: Executor, db: str, name: str) -> list[str] | None:
    """[SHOW CREATE VIEW, character_set_client, collation_connection], None when no view."""
    shown = ex.run(f"/* auroratrack ddl */ SHOW CREATE VIEW {qname(db, name)}")
    if not shown.ok or not shown.rows or len(shown.rows[0]) != 4:
        return None
    return [shown.rows[0][1], shown.rows[0][2], shown.rows[0][3]]


def record(session: Executor, journal: Journal, statement: str, names: list[tuple[str, str]]) -> Result:
    """Run the client's view statement (several views: DROP VIEW) as a recorded op."""
    op = Op(ddlops.new_op_id(), "view", statement, [], created_us=ddlops.now_us(),
            change={"tables": [list(n) for n in names], "before": [show(session, *n) for n in names]})
    return ddlops.run_recorded(session, journal, op, statement, lambda: [show(session, *n) for n in names])


def happened(ex: Executor, op: Op) -> bool:
    """(after a crash) Whether the views are no longer what they were before the statement."""
    return [show(ex, *n) for n in op.change["tables"]] != op.change["before"]


def _statements(names: list[list[str]], current: list, target: list) -> list[tuple[str, list[str] | None, str]]:
    """(statement, the view definition it makes or None, its schema) taking the views from
    ``current`` to ``target``: one DROP VIEW of those that were not there, a CREATE OR REPLACE
    of each other."""
    gone = [qname(*n) for n, now, want in zip(names, current, target, strict=True) if want is None and now is not None]
    out: list[tuple[str, list[str] | None, str]] = [(f"DROP VIEW {', '.join(gone)}", None, "")] if gone else []
    for (db, _), now, want in zip(names, current, target, strict=True):
        if want is not None and now != want:
            out.append(("CREATE OR REPLACE " + want[0].removeprefix("CREATE "), want, db))
    return out


def describe_undo(op: Op) -> str | None:
    """The statements the undo runs (for --dry-run)."""
    after = op.change.get("after") or op.change["before"]
    made = _statements(op.change["tables"], after, op.change["before"])
    return "; ".join(statement for statement, _, _ in made) or None


def undo(ex: Executor, journal: Journal, op: Op) -> str | None:
    """Put the views back as they were before ``op``; returns the new op's id (None: nothing to do)."""
    names = op.change["tables"]
    current = [show(ex, *n) for n in names]
    made = _statements(names, current, op.change["before"])
    if not made:
        return None
    inverse = Op(ddlops.new_op_id(), "view", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us(),
                 change={"tables": names, "before": current})
    journal.save(inverse)
    for n, (statement, view, db) in enumerate(made):
        # The op's bare tag on its last statement only, and its GTID the last one's: the op is
        # found once in the log (the server drops the tag of a CREATE VIEW anyway).
        step = None if n == len(made) - 1 else "view"
        prior = ddlops.last_gtid(ex)
        result = _run(ex, tag(inverse.op_id, step) + statement, view, db)
        if not result.ok:
            inverse.state = "failed"
            journal.save(inverse)
            raise ddlops.DdlError(result)
        ddlops.note_gtid(ex, inverse, prior)
    inverse.change["after"] = [show(ex, *n) for n in names]
    inverse.state = "done"
    journal.save(inverse)
    return inverse.op_id


def _run(ex: Executor, statement: str, view: list[str] | None, db: str) -> Result:
    if view is None:
        return ex.run(statement)
    # SHOW CREATE VIEW names the view and its tables unqualified, in the client's character set
    ddlops._must(ex.run(f"/* auroratrack ddl */ USE {quote(db)}"))
    ddlops._must(ex.run(f"/* auroratrack ddl */ SET SESSION character_set_client = {sql_string(view[1])}, "
                        f"collation_connection = {sql_string(view[2])}"))
    try:
        return ex.run(statement)
    finally:
        ex.run("/* auroratrack ddl */ SET SESSION character_set_client = 'utf8mb4', "
               "collation_connection = 'utf8mb4_general_ci'")
