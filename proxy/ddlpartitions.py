"""Partitions: ALTER TABLE ... DROP PARTITION / TRUNCATE PARTITION saved by their rows, undone by
putting the partitions and their rows back.

A whole-table save (proxy.ddlsave) would make dropping the oldest partition of a large table, a
routine and instant statement, cost a copy of the table. For a table partitioned by RANGE or LIST
(COLUMNS too) without subpartitions, only the named partitions' rows are saved before the
statement (``save_rows``: a table without partitioning in ``auroratrack_hold``, filled with
``SELECT ... FROM t PARTITION (...)``, out of the binlog); ``op.change["partitions"]`` names them.

Undo (``undo``, a new ``alter`` op): the partitions the table now lacks come back from the
definition before: a run of dropped partitions by ``REORGANIZE PARTITION`` of the partition after
it (the one that took their range, for RANGE; only it is rebuilt), the last ones by ``ADD
PARTITION``; then the saved rows are inserted (logged, tagged ``step=restore``: a forward
backtrack deletes them as rows first). Partitions the table has and the target lacks (the forward
of that undo) are saved the same way and dropped. An ALTER may take several statements (partition
changes cannot be combined): all but the last are tagged with ``step=partition``, so the op is
found once in the log, at its last. TRUNCATE PARTITION changes no definition: its undo is the
insert alone.

Anything else about partitions (ADD, REORGANIZE, COALESCE, PARTITION BY, REMOVE PARTITIONING,
TRUNCATE PARTITION ALL, subpartitions, HASH/KEY) is a whole-table save.

Reads and writes the server through the executors it is given; writes the journal.
"""

from __future__ import annotations

import logging
import re

from proxy import ddlops, ddlsave
from proxy.ddllink import Executor, Result
from proxy.ddlops import HOLD_SCHEMA, Journal, Op, qname, quote, tag

log = logging.getLogger(__name__)
_BY = re.compile(r"^ PARTITION BY (RANGE|LIST)\b.*$", re.MULTILINE)
_PARTITION = re.compile(r"^[( ](PARTITION (`(?:[^`]|``)+`) .*) ENGINE = \w+[,)]$")


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`")


def layout(create: str) -> tuple[str, dict[str, str]] | None:
    """(the PARTITION BY line, partition name -> its definition, in order) of a table
    partitioned by RANGE or LIST without subpartitions; None otherwise."""
    by = _BY.search(create)
    if by is None or "SUBPARTITION" in create:
        return None
    parts = {}
    for line in create[by.end():].splitlines()[1:]:
        found = _PARTITION.match(line)
        if found is None:
            return None
        parts[_unquote(found.group(2))] = found.group(1)
    return (by.group(0), parts) if parts else None


def save_rows(ex: Executor, op: Op, db: str, name: str, create: str, partitions: list[str]) -> bool:
    """Copy the rows of ``partitions`` of ``db.name`` into the hold schema, out of the binlog;
    False (nothing left behind) when the table's partitioning is not one this module undoes."""
    found = layout(create)
    if found is None or not partitions or any(p not in found[1] for p in partitions):
        return False
    saved = f"{op.op_id}_p_{name}"[:64]
    target, listed = qname(HOLD_SCHEMA, saved), ddlsave.stored_columns(ex, db, name)
    if listed is None:
        return False
    source = f"{qname(db, name)} PARTITION ({', '.join(quote(p) for p in partitions)})"
    made = ddlsave.run_saving(ex, op.op_id, [f"CREATE TABLE {target} LIKE {qname(db, name)}",
                                            f"ALTER TABLE {target} REMOVE PARTITIONING",
                                            f"INSERT INTO {target} ({listed}) SELECT {listed} FROM {source}"])
    if not made.ok:
        log.warning("partitions %s of %s.%s not saved (%s %s)", partitions, db, name, made.errno, made.message)
        ex.run(f"{tag(op.op_id, 'unsave')}DROP TABLE IF EXISTS {target}")
        return False
    op.change.update(saved=saved, partitions=list(partitions))
    return True


def transition(current: str, target: str) -> tuple[list[str], list[str]] | None:
    """(partitions to drop, clauses that add partitions) taking ``current`` to ``target``;
    None when that is not only dropping or only re-adding partitions of one layout."""
    now, want = layout(current), layout(target)
    if now is None or want is None or now[0] != want[0]:
        return None
    (_, have), (_, need) = now, want
    if any(need.get(name, definition) != definition for name, definition in have.items()):
        return None  # a kept partition changed: not ours to undo
    drop = [name for name in have if name not in need]
    adds, run = [], []
    for name, definition in need.items():
        if name not in have:
            run.append(definition)
        elif run:  # reorganized with the next partition: the range it took (RANGE), the order (LIST)
            adds.append(f"REORGANIZE PARTITION {quote(name)} INTO ({', '.join([*run, definition])})")
            run = []
    if run:
        adds.append(f"ADD PARTITION ({', '.join(run)})")
    if drop and adds:
        return None
    return drop, adds


def undo(ex: Executor, journal: Journal, op: Op) -> str | None:
    """Undo a partition op (module docstring); returns the new op's id (None: nothing to do)."""
    db, name = op.change["tables"][0]
    table = qname(db, name)
    current = ddlops._must(ex.run(f"/* auroratrack ddl */ SHOW CREATE TABLE {table}")).rows[0][1]
    plan = transition(current, op.change["before"])
    if plan is None:
        raise ddlops.DdlError(Result("err", errno=0, message=f"the partitions of {db}.{name} changed "
                                            "since: cannot undo the op"))
    drop, adds = plan
    if not drop and not adds and not op.change.get("saved"):
        return None
    inverse = Op(ddlops.new_op_id(), "alter", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us(),
                 change={"tables": [[db, name]], "before": current, "partitions": []})
    journal.save(inverse)
    if drop and not save_rows(ex, inverse, db, name, current, drop):
        raise ddlops.DdlError(Result("err", errno=0, message=f"partitions {drop} of {db}.{name} not saved"))
    clauses = ([f"DROP PARTITION {', '.join(quote(p) for p in drop)}"] if drop else []) + adds
    for n, clause in enumerate(clauses):
        # The op's bare tag on its last statement only: it is found once in the log.
        ddlops._must(ex.run(tag(inverse.op_id, None if n == len(clauses) - 1 else "partition")
                            + f"ALTER TABLE {table} {clause}"))
    if op.change.get("saved"):
        listed = ddlsave.stored_columns(ex, db, name)
        ddlops._must(ex.run(f"{tag(inverse.op_id, 'restore')}INSERT INTO {table} ({listed}) "
                            f"SELECT {listed} FROM {qname(HOLD_SCHEMA, op.change['saved'])}"))
    inverse.change["after"] = ddlops._must(ex.run(f"/* auroratrack ddl */ SHOW CREATE TABLE {table}")).rows[0][1]
    inverse.state = "done"
    journal.save(inverse)
    return inverse.op_id
