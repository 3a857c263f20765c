"""Retention of held tables: they leave with the transaction that held them.

A table held by an op (proxy.ddlops) can be brought back by a backtrack to before that op, so it
is kept exactly as long as the op's moment is inside the backtrack window: once the change store's
earliest backtrack time passes the op (its transaction evicted by age or by the size cap), the
table is dropped for real (``DROP TABLE`` tagged ``step=evict``) and the op marked ``evicted``.
A hold table brought back and held again later belongs to the newer op.

Size: the bytes of the held tables count toward the store's size cap. ``sweep`` writes them,
with each op's time, to ``held.json`` beside the change store; the store's eviction
(store.evict) reads it, so the oldest transactions, and with them the oldest held tables, leave
first when the sum is over the cap.

Status and metrics read ``held_tables``: each held table, its size, when it was held and whether
a backtrack can still bring it back (the op is inside the window).

Reads the journal and the store; drops tables in ``auroratrack_hold`` on auroratrack's own
connection. Runs in the service process (``DdlHolder.sweep_forever``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from proxy import ddlops
from proxy.changelog.store import HELD_FILE, ChangeStore
from proxy.ddllink import Executor
from proxy.ddlops import HOLD_SCHEMA, Journal, Op, qname, sql_string

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class HeldTable:
    table: str  # "db.name" it had
    hold_name: str
    op_id: str
    kind: str  # drop | truncate | undo
    held_at_us: int
    bytes: int
    restorable: bool  # a backtrack to before held_at_us is inside the window

    def to_json(self) -> dict:
        return asdict(self)


def current_holders(journal: Journal) -> dict[str, tuple[Op, ddlops.Swap]]:
    """hold name -> the newest op that moved a table out under it."""
    holders: dict[str, tuple[Op, ddlops.Swap]] = {}
    for op in journal.ops():
        if op.state != "done":
            continue
        for swap in op.swaps:
            if swap.out is not None:
                holders[swap.out] = (op, swap)
        saved = (op.change or {}).get("saved")  # the data a destructive ALTER lost (proxy.ddlrecord)
        if saved:
            db, name = op.change["tables"][0]
            holders[saved] = (op, ddlops.Swap(db, name, saved, None))
    return holders


def held_tables(journal: Journal, control: Executor, earliest_us: int | None) -> list[HeldTable]:
    """The tables in the hold schema now, with what the journal says of them."""
    sizes = {r[0]: int(r[1]) for r in control.run(
        "/* auroratrack ddl */ SELECT TABLE_NAME, COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) "
        f"FROM information_schema.TABLES WHERE TABLE_SCHEMA = {sql_string(HOLD_SCHEMA)}").rows}
    out = []
    for name, (op, swap) in current_holders(journal).items():
        if name in sizes:
            out.append(HeldTable(f"{swap.db}.{swap.name}", name, op.op_id, op.kind, op.created_us, sizes[name],
                                 earliest_us is None or op.created_us > earliest_us))
    return sorted(out, key=lambda h: h.held_at_us)


def sweep(journal: Journal, control: Executor, store_path: Path) -> list[HeldTable]:
    """Drop the held tables whose op left the window; write ``held.json``; returns what stays."""
    earliest = _earliest(store_path)
    held = held_tables(journal, control, earliest)
    gone = [h for h in held if not h.restorable]
    for item in gone:
        control.run(f"{ddlops.tag(item.op_id, 'evict')}DROP TABLE IF EXISTS {qname(HOLD_SCHEMA, item.hold_name)}")
        log.info("held table %s (%s, op %s) left the backtrack window: dropped", item.table, item.hold_name,
                 item.op_id)
    for op_id in {h.op_id for h in gone}:
        op = journal.get(op_id)
        if op is not None:
            op.state = "evicted"
            journal.save(op)
    kept = [h for h in held if h.restorable]
    write_held_file(store_path.parent / HELD_FILE, kept)
    return kept


def write_held_file(path: Path, held: list[HeldTable]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"ops": [[h.held_at_us, h.bytes] for h in held]}))
    tmp.replace(path)


def _earliest(store_path: Path) -> int | None:
    if not store_path.exists():
        return None
    store = ChangeStore(store_path, readonly=True)
    try:
        return store.earliest_backtrack_time_us()
    finally:
        store.close()
