"""Recorded view DDL: CREATE [OR REPLACE] VIEW, ALTER VIEW and DROP VIEW, made invertible.

proxy.ddlrecord parses these (one view per statement) and hands them here. A view holds no
data: its definition is all there is to keep. The op (proxy.ddlops.Op, kind ``view``) carries
in ``change`` the view's ``SHOW CREATE VIEW`` before and after the statement (None: no view),
with the character set the server shows with it; the client's statement runs on its own
session, tagged.

The server logs CREATE and ALTER VIEW rebuilt from the definition, without the tag: the op is
known in the log by the GTID the server gave it (MariaDB's ``@@last_gtid``, proxy.ddlops
``note_gtid``); on a server without one the statement stays a DDL conflict at backtrack time.

Undo (a new ``view`` op, the definitions swapped, so its own undo is the forward): no view
before: ``DROP VIEW``; else the view before re-made with ``CREATE OR REPLACE`` from its
``SHOW CREATE VIEW`` (its algorithm, definer and security as they were), in its schema, with the
character set it was made with.

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


def record(session: Executor, journal: Journal, statement: str, name: tuple[str, str]) -> Result:
    """Run the client's view statement as a recorded op."""
    op = Op(ddlops.new_op_id(), "view", statement, [], created_us=ddlops.now_us(),
            change={"tables": [list(name)], "before": show(session, *name)})
    journal.save(op)
    prior = ddlops.last_gtid(session)
    result = session.run(tag(op.op_id) + statement)
    if result.ok:
        op.change["after"] = show(session, *name)
        ddlops.note_gtid(session, op, prior)
        op.state = "done"
    else:
        op.state = "failed"
    journal.save(op)
    return result


def happened(ex: Executor, op: Op) -> bool:
    """(after a crash) Whether the view is no longer what it was before the statement."""
    return show(ex, *op.change["tables"][0]) != op.change["before"]


def describe_undo(op: Op) -> str | None:
    """The statement the undo runs (for --dry-run)."""
    before, after = op.change["before"], op.change.get("after")
    if before == after:
        return None
    if before is None:
        return f"DROP VIEW {qname(*op.change['tables'][0])}"
    return _replacing(before[0])


def _replacing(create: str) -> str:
    return "CREATE OR REPLACE " + create.removeprefix("CREATE ")


def undo(ex: Executor, journal: Journal, op: Op) -> str | None:
    """Put the view back as it was before ``op``; returns the new op's id (None: nothing to do)."""
    db, name = op.change["tables"][0]
    current = show(ex, db, name)
    target = op.change["before"]
    if current == target:
        return None
    inverse = Op(ddlops.new_op_id(), "view", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us(),
                 change={"tables": [[db, name]], "before": current})
    journal.save(inverse)
    prior = ddlops.last_gtid(ex)
    if target is None:
        result = ex.run(f"{tag(inverse.op_id)}DROP VIEW {qname(db, name)}")
    else:
        # SHOW CREATE VIEW names the view and its tables unqualified, in the client's character set
        ddlops._must(ex.run(f"/* auroratrack ddl */ USE {quote(db)}"))
        ddlops._must(ex.run(f"/* auroratrack ddl */ SET SESSION character_set_client = {sql_string(target[1])}, "
                            f"collation_connection = {sql_string(target[2])}"))
        try:
            result = ex.run(tag(inverse.op_id) + _replacing(target[0]))
        finally:
            ex.run("/* auroratrack ddl */ SET SESSION character_set_client = 'utf8mb4', "
                   "collation_connection = 'utf8mb4_general_ci'")
    if not result.ok:
        inverse.state = "failed"
        journal.save(inverse)
        raise ddlops.DdlError(result)
    ddlops.note_gtid(ex, inverse, prior)
    inverse.change["after"] = show(ex, db, name)
    inverse.state = "done"
    journal.save(inverse)
    return inverse.op_id
