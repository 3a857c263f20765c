"""The early writes of a backtrack: the heavy part of the undo, written before clients are paused,
inside the backtrack's own transaction, which stays open until the pause (DESIGN.md decision 14).

Role: decides what the backtrack's transaction writes before the pause and what is left for the
pause; writes only through ``rewind.Applier`` on the backtrack's connection, and never commits
(``proxy.backtrack`` commits, inside the pause, or rolls back).

Before the pause (``write_early``), for every table with a primary key, the checked apply's
statements run as planned at that moment (plan P0): ``DELETE ... JOIN`` of rows added after the
point, ``UPDATE ... JOIN`` of rows changed after it, and the re-insert of rows deleted after it,
each only where the row still holds the log's latest image. A row a client changed since P0 is
skipped, not an error. Clients go on meanwhile; a row written is locked until the commit, so a
client touching it waits (and is dropped at the pause, its work rolled back).

In the pause (``write_delta``), the plan has folded in the transactions committed since P0 (plan
P1). Why what is written early needs no second look: once a row is written early it is locked,
so every logged change to it committed before that write, when it held P0's latest image again;
its fate (target, latest image) in P1 is therefore the same as in P0. Contrapositive: a row whose
fate changed between P0 and P1 was not written early, and holds what clients committed. So:

* rows whose fate changed, or that are new to P1, are written now with literal statements, each
  only where it still holds P1's latest image (the drift check of rows the early writes did not
  cover);
* every other row of P0 must have been written early: the rows the early writes matched must
  equal, kind by kind, P0's rows less those whose fate changed. Fewer means a row drifted through
  a write the log never saw (or a client changed a row and changed it back): the pause rolls the
  early writes back and applies as it always did, where the detailed check names any conflict.

Tables without a primary key (multisets of images) are left whole to the pause, as before.
Anything unexpected, early or in the pause, raises ``EarlyWritesUnusable`` or a server error;
the caller rolls back and falls back to the apply of ``proxy.backtrack`` without early writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.rewind import ABSENT, Applier, Plan

KINDS = ("delete", "reinsert", "restore")


class EarlyWritesUnusable(Exception):
    """The early writes cannot be used (or could not be made): fall back to the plain apply."""


@dataclass
class EarlyWrites:
    """What the early writes did, for the pause to complete: P0's net fates and counts per keyed
    table, and the rows each kind of write matched."""

    applier: Applier
    checked: frozenset[str] = frozenset()  # tables found free of cascades and triggers before writing
    fates: dict[str, dict] = field(default_factory=dict)
    planned: dict[str, dict[str, int]] = field(default_factory=dict)
    matched: dict[str, dict[str, int]] = field(default_factory=dict)

    def rows_written(self) -> int:
        return sum(sum(counts.values()) for counts in self.matched.values())


def write_early(applier: Applier, plan: Plan, lock_wait_s: float) -> EarlyWrites:
    """Open the backtrack's transaction and write the bulk of the inverse (see the module doc).
    Raises on anything that went wrong; the caller then rolls the transaction back."""
    applier.ensure_marker_table()  # DDL: inside the open transaction it would commit it
    if plan.conflicts:
        raise EarlyWritesUnusable("the log shows conflicts; the pause names them")
    if applier.conflicts_before_writing(plan):
        raise EarlyWritesUnusable("cascading foreign keys, triggers or drift of a table without a key; "
                                  "the pause names them")
    keyed = {name: table for name, table in sorted(plan.tables.items()) if table.has_key}
    if not keyed:
        raise EarlyWritesUnusable("no table with a primary key to write early")
    plan.track_keys()  # what the pause folds in is compared row by row with what was written here
    early = EarlyWrites(applier, checked=frozenset(plan.tables))
    applier.begin_early(lock_wait_s)
    for name, table in keyed.items():
        early.fates[name] = table.net_fates()  # a dict of its own: later folds do not change it
        early.planned[name] = table.counts()
        early.matched[name] = applier.write_early(table)
    return early


def write_delta(early: EarlyWrites, plan: Plan) -> dict[str, dict[str, int]]:
    """In the pause, after ``extend_plan``: write what the early writes did not cover, in the
    same transaction. Returns the rows per table (as the plain apply records them); raises
    ``EarlyWritesUnusable`` when the early writes cannot be completed this way."""
    applier = early.applier
    if plan.conflicts:
        raise EarlyWritesUnusable("the log shows conflicts")
    if applier.conflicts_before_writing(plan, known=early.checked):
        raise EarlyWritesUnusable("cascading foreign keys, triggers or drift of a table without a key")
    rows = {}
    for name, table in sorted(plan.tables.items()):
        if not table.has_key:
            rows[name] = applier.apply_table(table)  # its drift was checked just above
            continue
        delta, counts = _delta(early, plan, name)
        if not applier.write_rows_checked(table, delta):
            raise EarlyWritesUnusable(f"{name}: a row the early writes did not cover has drifted")
        rows[name] = counts
    return rows


def _delta(early: EarlyWrites, plan: Plan, name: str) -> tuple[dict[tuple, tuple], dict[str, int]]:
    """The fates of ``name`` that changed since the early writes, checked against what those
    matched (see the module doc); and the table's net counts, as P1's."""
    before = early.fates.get(name, {})
    unchanged = dict(early.planned.get(name, dict.fromkeys(KINDS, 0)))
    fates = plan.tables[name].fates
    delta = {}
    for key in (plan.changed_keys or {}).get(name, ()):
        old = before.get(key)
        fate = fates.get(key)
        new = (fate[0], fate[1]) if fate is not None and fate[0] != fate[1] else None
        if old == new:
            continue  # written early, or skipped by a change undone since: the counts tell
        if old is not None:
            unchanged[_kind(old)] -= 1
        if new is not None:
            delta[key] = new
    matched = early.matched.get(name, dict.fromkeys(KINDS, 0))
    if any(matched.get(kind, 0) != unchanged.get(kind, 0) for kind in KINDS):
        raise EarlyWritesUnusable(f"{name}: the early writes matched {matched}, expected {unchanged}")
    counts = dict(unchanged)
    for fate in delta.values():
        counts[_kind(fate)] += 1
    return delta, counts


def _kind(fate: tuple) -> str:
    first, last = fate
    if first is ABSENT:
        return "delete"
    return "reinsert" if last is ABSENT else "restore"
