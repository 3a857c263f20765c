"""The correctness oracle: random workloads through the proxy, then backtracks to random points,
and the database must equal, byte for byte, the snapshot taken at the chosen point.

One example (hypothesis draws it; see ``oracle_workload`` for the statements):

1. A fresh database: ``wide`` (every column type the decoder was verified on, at its edge
   values: integers at their limits, DECIMAL(65,30), FLOAT/DOUBLE incl. -0, BIT(1..64), zero,
   partial and negative temporal values with fractions, YEAR, utf8mb4/latin1/utf16 text with the
   bytes 0x81 0x8D 0x8F 0x90 0x9D, binary strings with trailing zero bytes, JSON, ENUM/SET incl.
   invalid and empty values, virtual and stored generated columns, COMPRESSED columns, INET6,
   UUID, geometry) and ``heap`` (the same columns, no primary key: rows are found by their whole
   image); ``bag`` (no primary key, many duplicate rows, shared by all clients); ``cpk`` (a
   composite key whose text part ignores case, accents and trailing spaces); ``prefixed`` (a
   PRIMARY KEY (k(4))); ``parent``/``child`` (a RESTRICT foreign key). A seed transaction puts
   every edge value of every column into rows of every table.
2. Rounds of random transactions written THROUGH the proxy in a permissive '+02:00' session:
   inserts (INSERT, INSERT IGNORE, REPLACE, ON DUPLICATE KEY UPDATE), updates including primary
   key updates, shifts and swaps, deletes, several tables per transaction, some rolled back, some
   partly undone with a savepoint. In the concurrent variant 2-4 clients run each round at once.
3. After every round (every commit, when there is one client): wait until capture has the commit,
   take a snapshot (``oracle_workload.snapshot``: the server's own bytes), then note the moment.
   Taking the moment only after capture reached the commit makes it fall strictly between this
   commit and the next one, at MariaDB's 1-second commit timestamps refined by receive time.
4. Backtrack to a random point: the database must equal that point's snapshot. Then backtrack
   *forward* to a later point recorded before the first backtrack, and compare again. Then write
   a few more rounds and backtrack to any point recorded so far (one before, between or after the
   backtracks): the undo goes through the binlog, so backtracks are history like any other write.

Not generated, on purpose (conflicts by design, or documented limits): cascading foreign keys,
DDL after a point, AUTO_INCREMENT counters (nothing here uses AUTO_INCREMENT).

CI runs a fixed, derandomized set of examples (about 1.5 minutes on 2 cores); ``AURORATRACK_NIGHTLY=1``
runs many more, bigger and random ones (about 20 minutes). A failure prints the scenario (its SQL),
every point and backtrack as notes, and a ``@reproduce_failure`` blob; hypothesis then shrinks it
(``AURORATRACK_ORACLE_SHRINK=0`` skips that). The plain tests at the end are what the oracle found.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import dataclass
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from proxy import rewind
from proxy.service import BackgroundService
from tests.integration.backtrack_support import (
    backtrack,
    now_iso,
    wait_captured,
)
from tests.integration.oracle_workload import (
    KEY_RANGE,
    Round,
    Schema,
    Snapshot,
    Tally,
    Txn,
    describe_difference,
    oracle_schema,
    rows_in,
    run_round,
    seed_statements,
    snapshot,
    transactions,
    writer,
)

NIGHTLY = os.environ.get("AURORATRACK_NIGHTLY") == "1"
# Shrinking a failure re-runs whole examples (seconds each) for up to about 5 minutes; set
# AURORATRACK_ORACLE_SHRINK=0 to get the first failing example at once.
SHRINK = os.environ.get("AURORATRACK_ORACLE_SHRINK", "1") != "0"


@dataclass(frozen=True)
class Budget:
    examples: int
    rounds: tuple[int, int]  # rounds before the first backtrack
    after: tuple[int, int]  # rounds between the forward backtrack and the last one
    ops: int  # operations per transaction, at most
    per_client: tuple[int, int]  # transactions per client per round


SEQUENTIAL = Budget(200, (8, 40), (0, 6), 8, (1, 1)) if NIGHTLY else Budget(32, (4, 12), (0, 2), 4, (1, 1))
CONCURRENT = Budget(60, (4, 12), (0, 4), 6, (1, 4)) if NIGHTLY else Budget(10, (2, 5), (0, 1), 3, (1, 2))


def oracle_settings(budget: Budget) -> settings:
    """Derandomized in CI (the same examples every run); random in nightly mode."""
    return settings(
        max_examples=budget.examples,
        deadline=None,
        derandomize=not NIGHTLY,
        database=None,
        print_blob=True,
        phases=tuple(Phase) if SHRINK else tuple(p for p in Phase if p is not Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                               HealthCheck.function_scoped_fixture],
    )


# -- the scenario -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """Rounds, backtracks and more rounds; targets are indexes into the points recorded so far.

    Points: 0 is the empty tables, 1 the seed rows, 1+k the state after round k of ``before``;
    then one point after each backtrack and after each round of ``after``."""

    clients: int
    before: tuple[Round, ...]
    back: int
    forward: int | None  # > back, a point recorded before the first backtrack
    after: tuple[Round, ...]
    last: int  # any point


@st.composite
def scenarios(draw: st.DrawFn, schema: Schema, clients: tuple[int, int], budget: Budget) -> Scenario:
    n_clients = draw(st.integers(*clients))
    lo, hi = budget.per_client
    round_ = st.tuples(*[
        st.lists(transactions(schema, base=c * KEY_RANGE, max_ops=budget.ops), min_size=lo, max_size=hi).map(tuple)
        for c in range(n_clients)])
    before = tuple(draw(st.lists(round_, min_size=budget.rounds[0], max_size=budget.rounds[1])))
    recorded = 2 + len(before)
    back = draw(st.integers(0, recorded - 1))
    forward = draw(st.integers(back + 1, recorded - 1)) if back < recorded - 1 else None
    after = tuple(draw(st.lists(round_, min_size=budget.after[0], max_size=budget.after[1])))
    points = recorded + 1 + (forward is not None) + len(after)
    last = draw(st.integers(0, points - 1))
    return Scenario(n_clients, before, back, forward, after, last)


@dataclass(frozen=True)
class Point:
    label: str
    moment: str  # ISO time, taken after capture reached the state
    state: Snapshot


class OracleRun:
    """One example on its own database: runs rounds, records points, backtracks and compares."""

    def __init__(self, svc: BackgroundService, server, schema: Schema, tally: Tally):
        self.svc = svc
        self.server = server
        self.schema = schema
        self.tally = tally
        self.database = f"oracle_{uuid.uuid4().hex[:12]}"
        self.points: list[Point] = []

    def __enter__(self) -> OracleRun:
        self.server.query(f"CREATE DATABASE `{self.database}`")
        with self.server.connect(self.database) as conn, conn.cursor() as cur:
            for table in self.schema.tables:
                cur.execute(table.create_sql())
        self.record("empty tables")
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.query(f"DROP DATABASE IF EXISTS `{self.database}`")

    def record(self, label: str) -> Point:
        wait_captured(self.svc, self.server)
        state = snapshot(self.server, self.database)
        point = Point(label, now_iso(), state)
        self.points.append(point)
        note(f"point {len(self.points) - 1}: {label} at {point.moment} ({rows_in(state)} rows)")
        return point

    def rounds(self, rounds: tuple[Round, ...], clients: int, label: str, counted: bool = True) -> None:
        connections = [writer(self.svc, self.server, self.database) for _ in range(clients)]
        try:
            for number, round_ in enumerate(rounds, 1):
                tally = run_round(connections, round_)
                if counted:
                    self.tally.add(tally)
                self.record(f"{label} round {number}")
        finally:
            for conn in connections:
                conn.close()

    def backtrack_to(self, index: int, how: str) -> None:
        target = self.points[index]
        record = backtrack(self.svc, target.moment)
        note(f"backtrack {how} to point {index} ({target.label}): {record.status}, rows {record.rows}")
        assert record.status == "completed", f"backtrack to point {index} failed: {record.error}"
        self.tally.backtracked(record.rows)
        actual = snapshot(self.server, self.database)
        assert actual == target.state, (f"after the backtrack {how} to point {index} ({target.label}) the "
                                        f"database differs from its snapshot:\n"
                                        + describe_difference(actual, target.state))
        self.record(f"after the backtrack {how} to point {index}")


def run_scenario(svc: BackgroundService, server, schema: Schema, scenario: Scenario, tally: Tally) -> None:
    with OracleRun(svc, server, schema, tally) as run:
        seed: Round = ((Txn(seed_statements(schema, scenario.clients), "commit"),),)
        run.rounds((seed,), 1, "seed", counted=False)
        run.rounds(scenario.before, scenario.clients, "workload")
        run.backtrack_to(scenario.back, "back")
        if scenario.forward is not None:
            run.backtrack_to(scenario.forward, "forward")
        run.rounds(scenario.after, scenario.clients, "after the backtracks")
        run.backtrack_to(scenario.last, "once more")


# -- the tests ----------------------------------------------------------------------------------------



def check_oracle(svc: BackgroundService, server, budget: Budget, clients: tuple[int, int]) -> Tally:
    schema = oracle_schema(server.flavor)
    tally = Tally()
    write_paths: Counter = Counter()

    @oracle_settings(budget)
    @given(data=st.data())
    def example(data: st.DataObject) -> None:
        scenario = data.draw(scenarios(schema, clients, budget), label="scenario")
        # The applier's bulk writes: LOAD DATA for every one of them, or INSERTs for every one.
        path = data.draw(st.sampled_from(["load_data", "insert"]), label="bulk writes")
        write_paths[path] += 1
        with mock.patch.object(rewind, "LOAD_DATA_MIN_ROWS", 1 if path == "load_data" else 1 << 62):
            run_scenario(svc, server, schema, scenario, tally)

    example()
    print(f"oracle workload: {tally}, bulk writes {dict(write_paths)}")  # shown with -s, or with a failure
    assert len(write_paths) == 2, f"both write paths must be exercised: {dict(write_paths)}"
    # The workload must really write, and the backtracks really undo: a generator whose statements
    # all fail, or whose backtracks never have anything to do, would prove nothing.
    assert tally.committed > budget.examples and tally.rows > 10 * budget.examples, tally
    assert sum(tally.undone.values()) > 10 * budget.examples, tally
    return tally


@pytest.mark.timeout(0 if NIGHTLY else 1200)
def test_oracle_one_client(svc, mysql_server):
    check_oracle(svc, mysql_server, SEQUENTIAL, clients=(1, 1))


@pytest.mark.timeout(0 if NIGHTLY else 1200)
def test_oracle_concurrent_clients(svc, mysql_server):
    tally = check_oracle(svc, mysql_server, CONCURRENT, clients=(2, 4))
    assert tally.committed > 2 * CONCURRENT.examples


# -- what the oracle found, kept as plain regression tests ---------------------------------------------


def write(svc: BackgroundService, server, database: str, *statements: str) -> None:
    conn = writer(svc, server, database)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def moment_after_capture(svc: BackgroundService, server, database: str) -> tuple[str, Snapshot]:
    wait_captured(svc, server)
    state = snapshot(server, database)
    return now_iso(), state


def assert_backtrack_restores(svc: BackgroundService, server, database: str, moment: str, state: Snapshot) -> None:
    record = backtrack(svc, moment)
    assert record.status == "completed", record.error
    actual = snapshot(server, database)
    assert actual == state, describe_difference(actual, state)


def test_enum_and_set_rows_of_a_table_without_key_are_found(svc, mysql_server, database):
    """Rows without a primary key are located by their whole image; ENUM/SET values were compared
    as BINARY text against their member numbers, so no such row was ever found ('missing')."""
    write(svc, mysql_server, database,
          "CREATE TABLE bag (a INT, e ENUM('x','y',''), s SET('p','q'))",
          "INSERT INTO bag VALUES (1, 'x', 'p,q'), (1, 'bad', ''), (2, '', 'q'), (2, '', 'q')")
    moment, state = moment_after_capture(svc, mysql_server, database)
    write(svc, mysql_server, database, "DELETE FROM bag WHERE a = 1", "UPDATE bag SET e = 'y' LIMIT 1",
          "INSERT INTO bag VALUES (3, 'x', 'p')")
    assert_backtrack_restores(svc, mysql_server, database, moment, state)


def test_key_update_that_only_changes_case_accent_or_trailing_spaces(svc, mysql_server, database):
    """'e' -> 'E' (or 'x' -> 'x ') is a new key to the log but the same key to the collation. The
    check for rows the log says are gone looked the old key up through the collation, found the
    renamed row under it and refused the backtrack ('unexpected'): it now compares key bytes."""
    write(svc, mysql_server, database,
          "CREATE TABLE cpk (a INT NOT NULL, b VARCHAR(20) CHARACTER SET utf8mb4 NOT NULL, v INT, PRIMARY KEY (a, b))",
          "INSERT INTO cpk VALUES (1, 'e', 1), (2, 'x', 2), (3, 'é', 3)")
    moment, state = moment_after_capture(svc, mysql_server, database)
    write(svc, mysql_server, database, "UPDATE cpk SET b = 'E' WHERE a = 1", "UPDATE cpk SET b = 'x ' WHERE a = 2",
          "DELETE FROM cpk WHERE a = 3", "INSERT INTO cpk VALUES (3, 'e', 4)")
    assert_backtrack_restores(svc, mysql_server, database, moment, state)
