"""Whole-table saves: the ALTERs and CREATE OR REPLACE that proxy.ddlrecord cannot undo by key.

Some statements lose data that no key can find again: a destructive ALTER (DROP COLUMN, a
narrowing MODIFY/CHANGE, RENAME COLUMN) of a table without a primary key or touching a key
column, CONVERT TO CHARACTER SET, DROP/TRUNCATE/REORGANIZE PARTITION (and the other partition
changes, which an ALTER built from two SHOW CREATE TABLE texts cannot express), an ALTER that
also renames the table. For those, before the statement runs:

  ``save_whole``: the whole table is copied into ``auroratrack_hold`` (CREATE TABLE ... LIKE,
  INSERT ... SELECT of every stored column, the AUTO_INCREMENT counter), out of the binlog, on
  auroratrack's connection after the client's session committed (the implicit commit the
  statement makes anyway). Its name goes into ``op.change["saved"]`` with ``"whole": True``, its
  triggers and foreign keys into ``op.defs`` (as for a held DROP).

The undo is exact by construction: once the newer stretches of the backtrack are undone, the
table is what the statement made of it, so ``swap_back`` runs one held op of proxy.ddlops that
renames it out into the hold schema and the saved copy in under the name it had, atomically,
journalled and settled after a crash as a held TRUNCATE is. That op's own undo (the forward
backtrack) is the same swap the other way, run by proxy.ddlundo's held-table path.

``hold_replaced``: CREATE OR REPLACE TABLE of an existing table holds it first, as DROP TABLE
does (one held op, its own RENAME in the binlog), then the create runs as a recorded create.

A table other tables' foreign keys reference is saved the same way: those keys follow the live
table into the hold schema at the swap (InnoDB moves a child's reference with a renamed parent),
and the swap's step 4 points them at the restored table again (``Op.repoint_children``, proxy.ddlops).

Not saved (the statement runs as sent; a backtrack across it is a DDL conflict): a referenced
table that the statement also renames, a system-versioned table (its history is not copied by a
SELECT), a copy the server refuses.
Cost: a full copy per statement, and its space until the op leaves the backtrack window
(proxy.ddlretention counts and drops it).

Reads and writes the server through the executors it is given (copies: auroratrack's own
connection); writes the journal.
"""

from __future__ import annotations

import logging
import re

from proxy import ddlops
from proxy.ddllink import Executor, Result
from proxy.ddlops import HOLD_SCHEMA, Journal, Op, Swap, qname, quote, sql_string, tag

log = logging.getLogger(__name__)
# How long a save waits for a lock on the table. The client waiting for its ALTER's answer may
# hold the table itself (LOCK TABLES ... WRITE): the save then fails after this, and the
# statement runs unrecorded, instead of both waiting for the server's default of a day.
SAVE_LOCK_WAIT_S = 10
_AUTO_INCREMENT = re.compile(r"\) .*\bAUTO_INCREMENT=(\d+)")


def copyable(ex: Executor, db: str, name: str, create: str) -> bool:
    """Whether ``db.name`` can be held by a swap: no other table's foreign key references it
    (InnoDB points those at a renamed parent), and it keeps no system-versioned history."""
    return "WITH SYSTEM VERSIONING" not in create and referencing_tables(ex, db, name) == 0


def referencing_tables(ex: Executor, db: str, name: str) -> int | None:
    """How many foreign keys of other tables reference ``db.name``; None when unknown."""
    found = ex.run("/* auroratrack ddl */ SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE WHERE "
                   f"REFERENCED_TABLE_SCHEMA = {sql_string(db)} AND REFERENCED_TABLE_NAME = {sql_string(name)} "
                   f"AND NOT (TABLE_SCHEMA = {sql_string(db)} AND TABLE_NAME = {sql_string(name)})")
    return int(found.rows[0][0]) if found.ok and found.rows else None


def run_saving(ex: Executor, op_id: str, statements: list[str]) -> Result:
    """Run the statements of a save, tagged ``step=save``, out of the binlog (a copy is
    auroratrack's: neither replicated nor captured) and with a short lock wait
    (``SAVE_LOCK_WAIT_S``); returns the first failing answer, or the last one."""
    prior = ex.run("/* auroratrack ddl */ SELECT @@SESSION.lock_wait_timeout, @@SESSION.innodb_lock_wait_timeout")
    made = ex.run(f"/* auroratrack ddl */ SET SESSION sql_log_bin = 0, lock_wait_timeout = {SAVE_LOCK_WAIT_S}, "
                  f"innodb_lock_wait_timeout = {SAVE_LOCK_WAIT_S}")
    if not prior.ok or not made.ok:
        return made if not made.ok else prior
    try:
        for statement in statements:
            made = ex.run(tag(op_id, "save") + statement)
            if not made.ok:
                break
    finally:
        ex.run(f"/* auroratrack ddl */ SET SESSION sql_log_bin = 1, lock_wait_timeout = {int(prior.rows[0][0])}, "
               f"innodb_lock_wait_timeout = {int(prior.rows[0][1])}")
    return made


def stored_columns(ex: Executor, db: str, name: str) -> str | None:
    """The columns of ``db.name`` a copy writes (generated ones are computed), quoted, in order;
    None when they cannot be read."""
    found = ex.run(
        "/* auroratrack ddl */ SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE "
        f"TABLE_SCHEMA = {sql_string(db)} AND TABLE_NAME = {sql_string(name)} AND EXTRA NOT LIKE '%VIRTUAL GENERATED%' "
        "AND EXTRA NOT LIKE '%STORED GENERATED%' ORDER BY ORDINAL_POSITION")
    return ", ".join(quote(r[0]) for r in found.rows) if found.ok and found.rows else None


def save_whole(control: Executor, op: Op, db: str, name: str, create: str) -> bool:
    """Copy all of ``db.name`` (as ``create`` shows it) into the hold schema, out of the binlog;
    False (nothing left behind) when it cannot be held or a statement fails."""
    if "WITH SYSTEM VERSIONING" in create:
        return False
    children = referencing_tables(control, db, name)
    # A referenced table is swapped back in place and its children's keys pointed at it again
    # (proxy.ddlops step 4); under a new name (ALTER ... RENAME) they would have to follow it.
    if children is None or children and len(op.change.get("tables") or [(db, name)]) > 1:
        return False
    saved = f"{op.op_id}_w_{name}"[:64]
    listed = stored_columns(control, db, name)
    if listed is None:
        return False
    target, source = qname(HOLD_SCHEMA, saved), qname(db, name)
    steps = [f"CREATE TABLE {target} LIKE {source}", f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {source}"]
    counter = _AUTO_INCREMENT.search(create)
    if counter:  # the copy's counter would be max + 1: the table's own may be ahead (deleted rows)
        steps.append(f"ALTER TABLE {target} AUTO_INCREMENT = {counter.group(1)}")
    made = run_saving(control, op.op_id, steps)
    if not made.ok:
        control.run(f"{tag(op.op_id, 'unsave')}DROP TABLE IF EXISTS {target}")
        log.warning("statement on %s.%s not recorded: the table could not be saved (%s %s)", db, name,
                    made.errno, made.message)
        return False
    op.change.update(saved=saved, whole=True, referenced=bool(children))
    op.defs[saved] = ddlops.read_defs(control, db, name, create, size=False)
    return True


def _live_and_original(op: Op) -> tuple[tuple[str, str], tuple[str, str]]:
    """(the name the table has after the statement, the name it had before it)."""
    names = [tuple(n) for n in op.change["tables"]]
    return names[-1], names[0]


def describe_swap_back(op: Op) -> str:
    """The RENAME ``swap_back`` runs (for --dry-run)."""
    live, original = _live_and_original(op)
    return (f"RENAME TABLE {qname(*live)} TO {qname(HOLD_SCHEMA, '<held>')}, "
            f"{qname(HOLD_SCHEMA, op.change['saved'])} TO {qname(*original)}")


def swap_back(ex: Executor, journal: Journal, op: Op) -> str:
    """Undo ``op`` (a whole-table save): the table as it is now out, the saved copy in under
    its old name, as one held op; returns that op's id."""
    live, original = _live_and_original(op)
    inverse = Op(ddlops.new_op_id(), "undo", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us(),
                 repoint_children=bool(op.change.get("referenced")))
    out = f"{inverse.op_id}_0_{live[1]}"[:64]
    inverse.defs[out] = ddlops.read_defs(ex, *live)
    saved = op.change["saved"]
    inverse.defs[saved] = op.defs.get(saved) or journal.defs_of(saved)
    if live == original:
        inverse.swaps.append(Swap(*live, out, saved))
    else:  # ALTER TABLE ... RENAME TO: the new name is left empty, the old one filled
        inverse.swaps += [Swap(*live, out, None), Swap(*original, None, saved)]
    result = ddlops.run_op(inverse, ex, ex, journal)
    if inverse.state != "done":
        raise ddlops.DdlError(result)
    return inverse.op_id


def hold_replaced(session: Executor, control: Executor, journal: Journal, db: str, name: str,
                  create: str, statement: str) -> Op | None:
    """CREATE OR REPLACE TABLE of an existing table: hold it first as DROP TABLE would (one
    held op on the client's session); None when it cannot be held (then nothing was done)."""
    if not copyable(control, db, name, create):
        return None
    op = Op(ddlops.new_op_id(), "drop", statement, [], created_us=ddlops.now_us())
    hold_name = f"{op.op_id}_0_{name}"[:64]
    op.swaps.append(Swap(db, name, hold_name, None))
    op.defs[hold_name] = ddlops.read_defs(control, db, name, create, size=False)
    renamed = ddlops.run_op(op, session, control, journal)
    if op.state != "done":
        log.warning("CREATE OR REPLACE of %s.%s not held (%s %s)", db, name, renamed.errno, renamed.message)
        return None
    return op


def unhold(control: Executor, journal: Journal, held: Op) -> None:
    """Put back a table ``hold_replaced`` held when the create that followed failed."""
    ddlops.run_op(held.inverse(ddlops.new_op_id(), held.defs), control, control, journal)
