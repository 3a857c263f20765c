"""The correctness oracle with DDL: random sequences of CREATE / DROP / TRUNCATE / RENAME TABLE,
ALTER TABLE ADD / DROP COLUMN, CONVERT TO CHARACTER SET, foreign keys and DML through the proxy,
then backtracks to random points, and the schema and the data must equal the snapshot taken at the chosen point.

One example (hypothesis draws it; see ``oracle_ddl_workload`` for the statements):

1. A fresh, empty database (point 0).
2. A sequence of steps written THROUGH the proxy in the DML oracle's permissive '+02:00'
   session, each one DDL statement or one DML transaction, drawn against a model of the schema:
   tables with and without a primary key, columns from the DML oracle's full type list; ALTERs
   of 1-3 ADD/DROP COLUMN clauses (a dropped column often added back in the same statement),
   DROP of one or two tables, RENAME chains and swaps, CONVERT TO CHARACTER SET (a whole-table
   save), and sometimes DML left open in the session for the DDL to commit. Foreign keys: children
   made with ``CONSTRAINT fkN FOREIGN KEY (id) REFERENCES parent (id)`` (no cascades: their rows
   never reach the binlog), ADD CONSTRAINT (checks off) / DROP FOREIGN KEY; DML and the DROP or
   TRUNCATE of a referenced parent sometimes with ``SET foreign_key_checks = 0`` in the session
   (the children's keys left dangling), and with the checks on the server's refusal (1451, 1701)
   is expected and nothing changes. After
   every step: wait until capture has it, snapshot (SHOW CREATE TABLE of every table, exact, and
   every row as the server's bytes), note the moment: one point per step.
3. Backtrack to a random point: schema and data must equal its snapshot. Then forward to a later
   point recorded before the first backtrack, and compare again.
4. A few more steps from there, then a backtrack to any point recorded so far (before, between
   or after the backtracks): undoing DDL is DDL history like any other.

Not generated, on purpose: MODIFY/CHANGE, indexes, cascading foreign keys, triggers, AUTO_INCREMENT.
(``oracle_ddl_workload.KEYLESS_DROP_COLUMN`` and ``KEYLESS_ADD_COMPUTED_COLUMN`` switch off the
two keyless shapes that needed the whole-table save.)

CI runs a fixed, derandomized set of examples (``BUDGET``; about 1.5 minutes on 2 cores);
``AURORATRACK_NIGHTLY=1`` runs many more and longer ones, random, and
``AURORATRACK_DDL_ORACLE_EXAMPLES=N`` sets the number of examples. A failure prints the scenario
(its SQL), every point and backtrack as notes, and a ``@reproduce_failure`` blob. The plain tests
at the end are what the oracle found.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from proxy.service import BackgroundService
from tests.integration.backtrack_support import backtrack, now_iso, wait_captured
from tests.integration.oracle_ddl_workload import (
    DdlSnapshot,
    DdlTally,
    SchemaModel,
    Step,
    describe_schema_difference,
    rows_in,
    run_step,
    schema_snapshot,
    sequences,
)
from tests.integration.oracle_workload import writer
from tests.integration.test_oracle import NIGHTLY, Budget, oracle_settings, write

EXAMPLES = int(os.environ.get("AURORATRACK_DDL_ORACLE_EXAMPLES", 100 if NIGHTLY else 24))
# rounds: steps before the first backtrack; after: steps before the last one; ops: statements
# per DML transaction, at most (per_client is the DML oracle's, unused here).
BUDGET = Budget(EXAMPLES, (6, 30), (0, 6), 4, (1, 1)) if NIGHTLY else Budget(EXAMPLES, (6, 16), (0, 3), 4, (1, 1))


@dataclass(frozen=True)
class Scenario:
    """Steps, backtracks and more steps; targets are indexes into the points recorded so far.

    Points: 0 is the empty database, k the state after step k of ``before``; then one point after
    each backtrack and after each step of ``after``."""

    before: tuple[Step, ...]
    back: int
    forward: int | None  # > back, a point recorded before the first backtrack
    after: tuple[Step, ...]
    last: int  # any point


@st.composite
def scenarios(draw: st.DrawFn, flavor: str, budget: Budget) -> Scenario:
    models = [SchemaModel()]
    before = []
    for _ in range(draw(st.integers(*budget.rounds))):
        steps, model = draw(sequences(flavor, (1, 1), budget.ops, models[-1]))
        before += steps
        models.append(model)
    recorded = 1 + len(before)
    back = draw(st.integers(0, recorded - 1))
    forward = draw(st.integers(back + 1, recorded - 1)) if back < recorded - 1 else None
    after, _ = draw(sequences(flavor, budget.after, budget.ops, models[back if forward is None else forward]))
    points = recorded + 1 + (forward is not None) + len(after)
    last = draw(st.integers(0, points - 1))
    return Scenario(tuple(before), back, forward, after, last)


@dataclass(frozen=True)
class Point:
    label: str
    moment: str  # ISO time, taken after capture reached the state
    state: DdlSnapshot


class DdlOracleRun:
    """One example on its own database: runs steps, records points, backtracks and compares."""

    def __init__(self, svc: BackgroundService, server, tally: DdlTally):
        self.svc = svc
        self.server = server
        self.tally = tally
        self.database = f"ddloracle_{uuid.uuid4().hex[:12]}"
        self.points: list[Point] = []

    def __enter__(self) -> DdlOracleRun:
        self.server.query(f"CREATE DATABASE `{self.database}`")
        self.record("empty database")
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.query(f"DROP DATABASE IF EXISTS `{self.database}`")

    def record(self, label: str) -> None:
        wait_captured(self.svc, self.server)
        state = schema_snapshot(self.server, self.database)
        point = Point(label, now_iso(), state)
        self.points.append(point)
        note(f"point {len(self.points) - 1}: {label} at {point.moment} ({len(state['create'])} tables, "
             f"{rows_in(state)} rows)")

    def steps(self, steps: tuple[Step, ...], label: str) -> None:
        conn = writer(self.svc, self.server, self.database)
        try:
            for number, step in enumerate(steps, 1):
                run_step(conn, step, self.tally)
                self.record(f"{label} step {number}: {step.describe()[:120]}")
        finally:
            conn.close()

    def backtrack_to(self, index: int, how: str) -> None:
        target = self.points[index]
        record = backtrack(self.svc, target.moment)
        undone = sum(1 for s in record.steps if s["name"].startswith("ddl_undo_op_"))
        note(f"backtrack {how} to point {index} ({target.label}): {record.status}, {undone} DDL ops undone, "
             f"rows {record.rows}")
        assert record.status == "completed", (f"backtrack {how} to point {index} failed: {record.error}",
                                              record.conflicts)
        self.tally.backtracks += 1
        self.tally.ddl_undone += undone
        actual = schema_snapshot(self.server, self.database)
        assert actual == target.state, (f"after the backtrack {how} to point {index} ({target.label}) the "
                                        "database differs from its snapshot:\n"
                                        + describe_schema_difference(actual, target.state))
        self.record(f"after the backtrack {how} to point {index}")


def run_scenario(svc: BackgroundService, server, scenario: Scenario, tally: DdlTally) -> None:
    with DdlOracleRun(svc, server, tally) as run:
        run.steps(scenario.before, "workload")
        run.backtrack_to(scenario.back, "back")
        if scenario.forward is not None:
            run.backtrack_to(scenario.forward, "forward")
        run.steps(scenario.after, "after the backtracks")
        run.backtrack_to(scenario.last, "once more")


# -- the test ------------------------------------------------------------------------------------------


@pytest.mark.timeout(0 if NIGHTLY else 1200)
def test_ddl_oracle(svc, mysql_server):
    flavor = mysql_server.flavor
    tally = DdlTally()

    @oracle_settings(BUDGET)
    @given(data=st.data())
    def example(data: st.DataObject) -> None:
        run_scenario(svc, mysql_server, data.draw(scenarios(flavor, BUDGET), label="scenario"), tally)

    example()
    print(f"DDL oracle workload: {tally}")  # shown with -s, or with a failure
    # The workload must really run every kind of statement, and the backtracks really undo DDL:
    # a generator whose statements never reach the proxy's DDL paths would prove nothing.
    kinds = {"create", "drop", "truncate", "rename", "add_column", "drop_column", "alter", "dml",
             "DML then DDL, uncommitted", "convert", "add_foreign_key", "drop_foreign_key",
             "dml, foreign_key_checks = 0", "drop, foreign_key_checks = 0"}
    assert kinds <= set(tally.statements), tally
    assert tally.ddl_undone >= BUDGET.examples and tally.dml_rows > 5 * BUDGET.examples, tally


# -- what the oracle found, kept as plain regression tests ---------------------------------------------


def point_after_capture(svc: BackgroundService, server, database: str) -> tuple[str, DdlSnapshot]:
    wait_captured(svc, server)
    return now_iso(), schema_snapshot(server, database)


def assert_backtrack_restores(svc: BackgroundService, server, database: str, moment: str,
                              state: DdlSnapshot) -> None:
    record = backtrack(svc, moment)
    assert record.status == "completed", (record.error, record.conflicts)
    actual = schema_snapshot(server, database)
    assert actual == state, describe_schema_difference(actual, state)
    wait_captured(svc, server)


def back_and_forth(svc: BackgroundService, server, database: str, setup: list[str], change: list[str],
                   again: bool = False) -> None:
    """``setup``, the point, ``change``, the point after it; back to the first, forward to the
    second (``again``: back to the first once more), each equal to its snapshot."""
    write(svc, server, database, *setup)
    before_at, before = point_after_capture(svc, server, database)
    write(svc, server, database, *change)
    after_at, after = point_after_capture(svc, server, database)
    assert_backtrack_restores(svc, server, database, before_at, before)
    assert_backtrack_restores(svc, server, database, after_at, after)
    if again:
        assert_backtrack_restores(svc, server, database, before_at, before)


AUTO_UPDATED = "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)"


def test_restored_column_keeps_the_on_update_timestamp_of_its_row(svc, mysql_server, database):
    """The undo of a DROP COLUMN adds the column back and writes its saved values over the rows
    with the same key (ddlrecord._restore, an UPDATE): a TIMESTAMP ... ON UPDATE CURRENT_TIMESTAMP
    column of the table took the time of that UPDATE. It is now assigned to itself there."""
    back_and_forth(svc, mysql_server, database, [
        f"CREATE TABLE t (id INT NOT NULL, x INT, tsu {AUTO_UPDATED}, PRIMARY KEY (id))",
        "INSERT INTO t VALUES (1, 1, '2010-10-10 10:10:10.101010'), (2, NULL, DEFAULT)",
    ], [
        "ALTER TABLE t DROP COLUMN x",
    ])


def test_keyless_add_column_of_current_timestamp_then_back_and_forward(svc, mysql_server, database):
    """The undo of an ADD COLUMN of a table without a primary key could not save the values it
    drops (saved by key), so the forward backtrack's ADD COLUMN filled DEFAULT CURRENT_TIMESTAMP
    with the time of the forward. Fixed by the whole-table save of the undo (proxy.ddlsave)."""
    back_and_forth(svc, mysql_server, database, [
        "CREATE TABLE t (id INT NOT NULL, x INT)",
        "INSERT INTO t VALUES (1, 1), (2, 2)",
    ], [
        f"ALTER TABLE t ADD COLUMN tsu {AUTO_UPDATED}",
    ])


def test_column_dropped_and_added_again_elsewhere_goes_back_to_its_place_with_its_values(svc, mysql_server,
                                                                                         database):
    """``DROP COLUMN x, ADD COLUMN x ... FIRST``: the inverse ALTER (ddlrecord.inverse_alter) told
    columns apart by name and definition only, found nothing to do, and the undo stopped there:
    x stayed first and its saved values were never written back. Moved columns are now placed."""
    back_and_forth(svc, mysql_server, database, [
        "CREATE TABLE t (id INT NOT NULL, a INT, x INT, b INT, PRIMARY KEY (id))",
        "INSERT INTO t VALUES (1, 1, 10, 100), (2, 2, 20, 200)",
    ], [
        "ALTER TABLE t DROP COLUMN x, ADD COLUMN x INT FIRST",
    ])


def test_column_dropped_and_added_again_in_place_gets_its_values_back(svc, mysql_server, database):
    """The same in place: SHOW CREATE TABLE is the same before and after, so there is no ALTER to
    undo, but the values the DROP lost are still written back (and a forward undoes that)."""
    back_and_forth(svc, mysql_server, database, [
        "CREATE TABLE t (id INT NOT NULL, a INT, x INT, b INT, PRIMARY KEY (id))",
        "INSERT INTO t VALUES (1, 1, 10, 100), (2, 2, 20, 200)",
    ], [
        "ALTER TABLE t DROP COLUMN x, ADD COLUMN x INT AFTER a",
        "UPDATE t SET x = 5 WHERE id = 1",
    ], again=True)


def test_column_moved_by_modify_goes_back_to_its_place(svc, mysql_server, database):
    """The same cause without a DROP: ``MODIFY COLUMN b INT FIRST`` moved b, and the undo left it
    first."""
    back_and_forth(svc, mysql_server, database, [
        "CREATE TABLE t (id INT NOT NULL, a INT, b INT, PRIMARY KEY (id))",
        "INSERT INTO t VALUES (1, 1, 100), (2, 2, 200)",
    ], [
        "ALTER TABLE t MODIFY COLUMN b INT FIRST, ADD COLUMN c INT AFTER id",
        "UPDATE t SET c = 5 WHERE id = 1",
    ])


def test_update_back_in_place_keeps_an_on_update_timestamp_that_did_not_change(svc, mysql_server, database):
    """No DDL: an UPDATE that changes a row but assigns its ON UPDATE CURRENT_TIMESTAMP column
    its own value (as the restore of a dropped column now does) leaves that column alone; the
    checked apply's UPDATE ... JOIN set only the columns that changed, and the server stamped the
    column with the backtrack's time. Such columns are now assigned to themselves there."""
    back_and_forth(svc, mysql_server, database, [
        f"CREATE TABLE t (id INT NOT NULL, x INT, tsu {AUTO_UPDATED}, PRIMARY KEY (id))",
        "INSERT INTO t VALUES (1, 1, '2010-10-10 10:10:10.101010'), (2, 2, '2011-10-10 10:10:10')",
    ], [
        "UPDATE t SET x = x + 5, tsu = tsu",
    ])
