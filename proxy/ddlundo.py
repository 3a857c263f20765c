"""Backtrack across held and recorded DDL: inverse rows and inverse ops, newest first.

A backtrack whose window holds ops of proxy.ddlops (their RENAME is a DDL transaction in the
change store, tagged with the op id) cannot be one server transaction: DDL commits. So it runs,
under the backtrack's fence and paused gate, as steps newest first:

  rows after the newest op (one transaction)  ->  undo that op (its inverse op, journalled)
  ->  rows between it and the op before (one transaction)  ->  ...  ->  rows after the point.

The same holds for the recorded DDL of proxy.ddlrecord (CREATE/RENAME/ALTER TABLE, indexes,
views, stored programs: the client's statement tagged with its op id, or known by its GTID when
the server logs it rebuilt): its undo is ``ddlrecord.undo`` (rename back, ALTER back plus the
saved columns or partition rows, the saved table swapped back in, the view, trigger, routine or
event put back), or for a CREATE the
held-table path below (the table moved aside). An op's own transaction is in no stretch (the
rows of a CREATE ... SELECT go and come back with its table). Rows of each stretch are decoded
with the table maps they were logged with, and applied while the table has that layout.

Each rows step is the ordinary net inverse (rewind.plan_between + Applier.apply_table), written
with the backtrack marker, so capture records it as the backtrack's; each undo is an op of its
own (ddlops.Op.inverse): its RENAME is captured and tagged too, so a later backtrack (forward)
undoes the undo the same way. A table created under a held name since the drop is moved aside
into the hold schema, not destroyed.

What is checked before the first step: the log's own conflicts of every stretch (DDL the proxy
did not hold, gaps, statement-format DML...) and the ops the journal does not know; and the
server's checks (drift) of the newest stretch. Without --force any of those refuses the
backtrack before anything is written. The server checks of older stretches can only run once the
newer steps are done; a conflict found there is applied as --force would and recorded.

Crash: each rows step is atomic and each op is journalled (ddlops.recover settles it at the
next start), so a crash leaves the database at a step boundary of the sequence; the next start
finishes the backtrack before clients get in (``resume_interrupted``) and its record says so.

Writes the server on the backtrack's connection; reads the change store and the ops journal.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from proxy import ddlops, ddlrecord
from proxy.changelog.store import ChangeStore, StoredTransaction
from proxy.ddllink import PyMySQLExecutor
from proxy.ddlops import Journal, Op, Swap
from proxy.rewind import Applier, Conflict, Plan, build_plan, plan_between
from proxy.timeparse import format_time_us

log = logging.getLogger(__name__)
RESUME_FILE = "ddl_backtrack.json"  # a DDL-crossing backtrack in progress (see run_backtrack)


@dataclass(frozen=True)
class Step:
    kind: str  # rows | op
    plan: Plan | None = None
    op_id: str | None = None


def held_ops(transactions: list[StoredTransaction], by_gtid: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """(txn id, op id) of every op RENAME among ``transactions``, oldest first; ``by_gtid``:
    the ops whose statement the server logged without the tag (ddlops.ops_by_gtid)."""
    found = []
    for txn in transactions:
        if "ddl" not in txn.flags:
            continue
        ids = [tagged[0] for tagged in map(ddlops.op_of_statement, txn.statements)
               if tagged is not None and tagged[1] is None]
        if not ids and by_gtid and txn.gtid in by_gtid:
            ids = [by_gtid[txn.gtid]]
        found += [(txn.txn_id, op_id) for op_id in dict.fromkeys(ids)]
    return found


class DdlUndo:
    """Runs the DDL-crossing part of a backtrack (see the module docstring)."""

    def __init__(self, journal: Journal, flavor: str | None = None):
        self.journal = journal
        self.flavor = flavor

    def crosses(self, plan: Plan) -> bool:
        """Whether the plan's window holds an op (then ``apply`` runs the backtrack)."""
        return bool(held_ops(plan.undone, ddlops.ops_by_gtid(self.journal)))

    def describe(self, plan: Plan) -> list[dict]:
        """The ops a backtrack over ``plan`` undoes, newest first, with the RENAME each undo runs
        (for --dry-run)."""
        out = []
        for txn_id, op_id in reversed(held_ops(plan.undone, ddlops.ops_by_gtid(self.journal))):
            op = self.journal.get(op_id)
            item = {"op": op_id, "txn_id": txn_id, "kind": op.kind if op else None,
                    "statement": op.statement[:200] if op else None, "undo": None}
            if op is not None and op.change is not None and op.kind != "create":
                item["undo"] = ddlrecord.describe_undo(op)
            elif op is not None:
                preview = Op("preview", "undo", op.statement, [Swap(s.db, s.name, s.into, s.out) for s in op.swaps])
                item["undo"] = ddlops.rename_statement(preview)
            out.append(item)
        return out

    def steps(self, store: ChangeStore, plan: Plan) -> list[Step]:
        """The steps, newest first."""
        steps = []
        upper = plan.last_txn_id
        for txn_id, op_id in reversed(held_ops(plan.undone, ddlops.ops_by_gtid(self.journal))):
            steps.append(Step("rows", plan=plan_between(store, txn_id, upper, self.flavor)))
            steps.append(Step("op", op_id=op_id))
            # The op's own transaction is in no stretch: the rows a CREATE ... SELECT logged
            # with it go and come back with the table.
            upper = txn_id - 1
        steps.append(Step("rows", plan=plan_between(store, plan.after_txn_id, upper, self.flavor)))
        return [s for s in steps if s.kind == "op" or s.plan.tables or s.plan.conflicts]

    def log_conflicts(self, steps: list[Step]) -> list[Conflict]:
        conflicts = [c for s in steps if s.kind == "rows" for c in s.plan.conflicts]
        for step in steps:
            op = self.journal.get(step.op_id) if step.kind == "op" else None
            if step.kind == "op" and (op is None or op.state != "done"):
                conflicts.append(Conflict("ddl", None, f"held DDL op {step.op_id} is not in the journal "
                                          "(ddl.db) as done: it cannot be undone"))
        return conflicts

    def plan_conflicts(self, store_path: Path, plan: Plan) -> list[Conflict]:
        """The log's conflicts of a backtrack across DDL, stretch by stretch (for --dry-run: the
        rows of an older stretch cannot be tried on the server before the newer steps ran)."""
        store = ChangeStore(store_path, readonly=True)
        try:
            return self.log_conflicts(self.steps(store, plan))
        finally:
            store.close()

    def apply(self, applier: Applier, record, force: bool, steps: list[Step]) -> list[Conflict]:
        """Run ``steps``; returns the conflicts met on the way (applied as forced)."""
        forced: list[Conflict] = []
        for n, step in enumerate(steps):
            began = time.monotonic()
            if step.kind == "rows":
                conflicts = applier.server_conflicts(step.plan)
                if conflicts and n == 0 and not force:
                    return conflicts  # nothing written yet: refused as a plain backtrack is
                forced.extend(conflicts)
                self._rows(applier, record, step.plan)
                name = f"ddl_rows_{n}"
            else:
                undo_id = self.undo_op(applier.conn, step.op_id)
                name = f"ddl_undo_op_{step.op_id}_by_{undo_id}"
            record.steps.append({"name": name, "started": format_time_us(time.time_ns() // 1000),
                                 "duration_s": round(time.monotonic() - began, 6)})
            ddlops._test_pause("between_steps")
        record.forced.extend(c.to_json() for c in forced)
        return []

    @staticmethod
    def _rows(applier: Applier, record, plan: Plan) -> None:
        if not plan.tables:
            return
        applier.begin()
        for name, table in sorted(plan.tables.items()):
            counts = applier.apply_table(table)
            total = record.rows.setdefault(name, {})
            for key, value in counts.items():
                total[key] = total.get(key, 0) + value
        applier.write_marker(record.id)
        applier.commit()

    def undo_op(self, conn, op_id: str) -> str:
        """Run the inverse of op ``op_id``; returns the new op's id."""
        op = self.journal.get(op_id)
        conn.autocommit(True)
        ex = PyMySQLExecutor(conn)
        if op.change is not None and op.kind != "create":  # a recorded RENAME/ALTER (proxy.ddlrecord)
            return ddlrecord.undo(ex, self.journal, op) or "nothing"
        inverse = Op(ddlops.new_op_id(), "undo", op.statement, [], undoes=op.op_id, created_us=ddlops.now_us())
        if op.schema_action == "drop":  # an undone DROP DATABASE: the schema comes back first
            inverse.schema_action, inverse.schema = "create", op.schema
        elif op.schema_action == "create":  # forward again: held and dropped as it is now
            inverse.schema_action, inverse.schema = "drop", ddlops.read_schema(ex, op.schema["db"])
        for i, swap in enumerate(op.swaps):
            out, into = swap.into, swap.out
            if out is None and into is not None and ddlops.table_exists(ex, swap.db, swap.name):
                # created under the held name since: moved aside, never destroyed
                out = f"{inverse.op_id}_{i}_{swap.name}"[:64]
            if out is not None:
                inverse.defs[out] = ddlops.read_defs(ex, swap.db, swap.name)
            if into is not None:
                defs = op.defs.get(into) or self.journal.defs_of(into)
                if defs is not None:
                    inverse.defs[into] = defs
            inverse.swaps.append(Swap(swap.db, swap.name, out, into))
        # A table going out may be referenced by tables the backtrack left live (a created table a
        # later one points at, a parent the forward holds again): their keys are pointed back.
        inverse.repoint_children = any(s.out is not None for s in inverse.swaps)
        result = ddlops.run_op(inverse, ex, ex, self.journal)
        if inverse.state != "done":
            raise RuntimeError(f"undo of held DDL op {op_id} failed: {result.errno} {result.message}")
        log.info("undid held DDL op %s (%s) with op %s", op_id, op.kind, inverse.op_id)
        return inverse.op_id


def run_backtrack(undo: DdlUndo, applier: Applier, record, force: bool, plan: Plan, store_path) -> str:
    """The backtrack's apply when its window holds ops: "completed" or "failed" (the
    conflicts in ``record``; nothing written when refused). While it runs, ``RESUME_FILE`` in
    the data directory says what it does: a process killed in the middle finishes it at the
    next start (``resume_interrupted``)."""
    store = ChangeStore(store_path, readonly=True)
    try:
        steps = undo.steps(store, plan)
    finally:
        store.close()
    conflicts = undo.log_conflicts(steps)
    if conflicts and not force:
        return _refused(record, conflicts)
    record.forced.extend(c.to_json() for c in conflicts)
    marker = Path(store_path).parent / RESUME_FILE
    marker.write_text(json.dumps({"backtrack": record.id, "after_txn_id": plan.after_txn_id}))
    try:
        conflicts = undo.apply(applier, record, force, steps)
    except Exception:
        applier.rollback()
        raise
    finally:
        marker.unlink(missing_ok=True)
    if conflicts:
        applier.rollback()
        return _refused(record, conflicts)
    return "completed"


def resume_interrupted(undo: DdlUndo, store_path: Path, connect: Callable[[], object],
                       catch_up: Callable[[], None], finished: Callable[[str, str, str | None], None]) -> str | None:
    """At start, before clients get in: finish a DDL-crossing backtrack a killed process left
    between its steps. The plan is made again from the same point over everything the store now
    holds (the steps already done included: each is a captured transaction or op, so the net
    inverse from here is the rest of the way), and applied as forced: the first steps already
    changed the database the checks would compare with. ``finished(id, status, note)`` updates
    the backtrack's record. Returns the record id, or None when nothing was interrupted."""
    marker = Path(store_path).parent / RESUME_FILE
    if not marker.exists():
        return None
    info = json.loads(marker.read_text())
    catch_up()
    store = ChangeStore(store_path, readonly=True)
    try:
        plan = build_plan(store, info["after_txn_id"], undo.flavor)
    finally:
        store.close()
    record = _ResumeRecord(info["backtrack"])
    conn = connect()
    try:
        applier = Applier(conn, f"backtrack {record.id} (resumed)")
        applier.configure_session()
        applier.ensure_marker_table()
        if undo.crosses(plan):
            outcome = run_backtrack(undo, applier, record, True, plan, store_path)
        else:  # the ops were all undone before the crash: the rest is rows, one transaction
            applier.begin()
            for table in plan.tables.values():
                applier.apply_table(table)
            applier.write_marker(record.id)
            applier.commit()
            outcome = "completed"
    finally:
        conn.close()
    marker.unlink(missing_ok=True)
    note = f"interrupted by a restart and finished at the next start ({len(record.steps)} steps then)"
    finished(record.id, outcome, note)
    log.warning("backtrack %s: %s: %s", record.id, note, outcome)
    return record.id


@dataclass
class _ResumeRecord:
    """The parts of a backtrack record the steps write, for a resumed run."""

    id: str
    steps: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)
    forced: list = field(default_factory=list)
    conflicts: list = field(default_factory=list)
    error: str | None = None


def _refused(record, conflicts: list[Conflict]) -> str:
    record.conflicts = [c.to_json() for c in conflicts]
    record.error = f"{len(conflicts)} conflict(s): " + "; ".join(
        f"{c.kind} {c.table or ''}: {c.reason}" for c in conflicts[:5])
    return "failed"
