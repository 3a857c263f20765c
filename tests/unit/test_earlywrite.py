"""What the pause must still write after the early writes (proxy.earlywrite._delta): pure logic
over the plan's fates before and after folding in the transactions committed since."""

from __future__ import annotations

import pytest

from proxy.earlywrite import EarlyWrites, EarlyWritesUnusable, _delta
from proxy.rewind import ABSENT, Plan, TableChanges

NAME = "db.t"


def plan_with(fates: dict, changed: set) -> Plan:
    table = TableChanges(NAME, schema=None, fates={key: list(fate) for key, fate in fates.items()})
    plan = Plan(0, [], {NAME: table}, [])
    plan.changed_keys = {NAME: set(changed)}
    return plan


def early(before: dict, matched: dict) -> EarlyWrites:
    planned = {"delete": 0, "reinsert": 0, "restore": 0}
    for first, last in before.values():
        planned["delete" if first is ABSENT else "reinsert" if last is ABSENT else "restore"] += 1
    return EarlyWrites(applier=None, fates={NAME: dict(before)}, planned={NAME: planned},
                       matched={NAME: {"delete": 0, "reinsert": 0, "restore": 0, **matched}})


BEFORE = {(1,): ((1, "a"), (1, "a1")), (2,): ((2, "b"), (2, "b1")), (3,): (ABSENT, (3, "c")),
          (4,): ((4, "d"), ABSENT)}


def test_nothing_changed_since_the_early_writes_leaves_nothing_for_the_pause():
    delta, counts = _delta(early(BEFORE, {"restore": 2, "delete": 1, "reinsert": 1}), plan_with(BEFORE, set()), NAME)
    assert delta == {} and counts == {"delete": 1, "reinsert": 1, "restore": 2}


def test_rows_changed_or_added_since_are_left_for_the_pause_and_the_rest_must_have_been_written():
    after = {**BEFORE, (2,): ((2, "b"), (2, "b2")),  # a client changed it before the early UPDATE got there
             (3,): (ABSENT, ABSENT),  # a client deleted the row the early DELETE would have deleted
             (5,): (ABSENT, (5, "e"))}  # a client added it
    delta, counts = _delta(early(BEFORE, {"restore": 1, "delete": 0, "reinsert": 1}),
                           plan_with(after, {(2,), (3,), (5,)}), NAME)
    assert delta == {(2,): ((2, "b"), (2, "b2")), (5,): (ABSENT, (5, "e"))}
    assert counts == {"delete": 1, "reinsert": 1, "restore": 2}


def test_a_row_the_early_writes_skipped_whose_fate_did_not_change_falls_back():
    """Row 1 was skipped (it had drifted through a write the log never saw, or a client changed
    it and changed it back): the counts tell, and the pause falls back to the detailed check."""
    with pytest.raises(EarlyWritesUnusable):
        _delta(early(BEFORE, {"restore": 1, "delete": 1, "reinsert": 1}), plan_with(BEFORE, set()), NAME)


def test_a_table_new_since_the_early_writes_is_written_whole_in_the_pause():
    after = {(9,): ((9, "x"), (9, "y"))}
    plan = plan_with(after, {(9,)})
    delta, counts = _delta(EarlyWrites(applier=None), plan, NAME)
    assert delta == {(9,): ((9, "x"), (9, "y"))} and counts == {"delete": 0, "reinsert": 0, "restore": 1}
