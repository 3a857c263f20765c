"""Early writes (DESIGN.md decision 14): the bulk of the undo is written before the pause, in the
backtrack's open transaction, while clients go on writing through the proxy; the pause writes
only what changed since, checks, and commits. Real server, real clients, real binlog.

Several tests freeze the early writes on purpose: a direct connection (a "blocker") holds the
lock of the last row the early UPDATE ... JOIN restores (SELECT ... FOR UPDATE, nothing logged),
so the early writes are seen waiting on it (InnoDB's lock tables), with every row before it
already written and locked by the backtrack's transaction."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import signal
import threading
import time
from collections.abc import Iterator

import pymysql
import pytest

from proxy.backtrack import BacktrackRecord, BacktrackRequest
from tests.integration.backtrack_support import backtrack, connect_via, fingerprint, now_iso, wait_captured
from tests.integration.streamer_support import wait_caught_up_dir
from tests.integration.test_backtrack_crash import admin_client, start_serve

DROPPED = (2006, 2013, 1290, 1927, 2003)  # the session was dropped at the pause or held too long


def execute(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def early_writes(record: BacktrackRecord | dict) -> dict:
    steps = record.steps if isinstance(record, BacktrackRecord) else record["steps"]
    return next(s for s in steps if s["name"] == "prepare").get("early_writes", {})


def assert_early_path(record: BacktrackRecord) -> None:
    """The undo was written early and completed in the pause, with no fallback."""
    early = early_writes(record)
    assert early and "rolled_back" not in early, early
    apply = next(s for s in record.steps if s["name"] == "apply")
    assert "early_writes_rolled_back" not in apply, apply


def make_table(server, database: str, rows: int) -> None:
    with server.connect(database) as conn:
        execute(conn, "CREATE TABLE t (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(60) NOT NULL)",
                f"INSERT INTO t SELECT seq, seq, SHA2(seq, 224) FROM seq_1_to_{rows}")


# The server refreshes its information_schema copy of InnoDB's transactions and lock waits only
# when the last read of it is 0.1 s old or more: a poll every 0.02 s keeps it stale forever.
POLL_S = 0.25


def early_lock_wait(server, timeout: float = 60.0) -> int:
    """Until the backtrack's early writes wait for a row lock; their connection id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.query("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX "
                            "WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%auroratrack backtrack%'")
        if rows:
            return int(rows[0][0])
        time.sleep(POLL_S)
    raise AssertionError("the early writes never waited on the blocker's lock")


def waiting_on(server, thread_id: int, timeout: float = 30.0) -> set[int]:
    """Until some connection waits on ``thread_id``'s transaction; the waiting connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.query(
            "SELECT r.trx_mysql_thread_id FROM information_schema.INNODB_LOCK_WAITS w "
            "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id "
            "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id "
            "WHERE b.trx_mysql_thread_id = %s", (thread_id,))
        if rows:
            return {int(r[0]) for r in rows}
        time.sleep(POLL_S)
    raise AssertionError(f"nobody waited on connection {thread_id}")


@contextlib.contextmanager
def blocker_on(server, database: str, row_id: int) -> Iterator[pymysql.Connection]:
    """A direct connection holding row ``row_id`` locked, closed however the test ends (a lock
    left behind would hold the database's DROP at teardown)."""
    blocker = server.connect(database, autocommit=False)
    try:
        execute(blocker, f"SELECT * FROM t WHERE id = {row_id} FOR UPDATE")
        yield blocker
    finally:
        blocker.close()


def mistake_after_snapshot(svc, server, database: str, rows: int) -> tuple[str, dict, dict]:
    """A table of ``rows`` rows, the point, then every row updated; (point, at point, mistaken)."""
    make_table(server, database, rows)
    wait_captured(svc, server)
    snapshot = fingerprint(server, database)
    moment = now_iso()
    with server.connect(database) as conn:
        execute(conn, "UPDATE t SET k = k + 1, c = REVERSE(c)")
    wait_captured(svc, server)
    return moment, snapshot, fingerprint(server, database)


def request(svc, moment: str) -> BacktrackRecord:
    """A backtrack whose early writes may wait on a lock for up to a minute (the drain timeout
    bounds them): the tests below hold them on the blocker's lock meanwhile."""
    backtracker = svc.service.backtracker
    return svc.call(lambda: backtracker.request(BacktrackRequest(to=moment, drain_timeout=60)))


def wait_done(svc, record: BacktrackRecord) -> BacktrackRecord:
    backtracker = svc.service.backtracker
    return svc.call(lambda: backtracker.wait(record.id, 300), timeout=310)


def test_a_big_undo_is_written_early_and_the_pause_only_commits(svc, mysql_server, database):
    moment, snapshot, _ = mistake_after_snapshot(svc, mysql_server, database, 5000)
    record = backtrack(svc, moment)
    assert record.status == "completed", record.error
    assert fingerprint(mysql_server, database) == snapshot
    assert_early_path(record)
    assert early_writes(record)["rows_written"] == 5000
    assert record.rows[f"{database}.t"] == {"delete": 0, "reinsert": 0, "restore": 5000}


class Client(threading.Thread):
    """A client writing through the proxy: each transaction inserts a row of its own and bumps a
    random row of ``t`` (which the undo restores). It stops at its first drop (the pause)."""

    def __init__(self, svc, server, database: str, number: int, rows: int):
        super().__init__(daemon=True)
        self.svc, self.server, self.database, self.number, self.rows = svc, server, database, number, rows
        self.commits: list[float] = []  # wall time of each COMMIT that returned OK
        self.dropped = False
        self.errors: list[Exception] = []

    def run(self) -> None:
        pick = random.Random(self.number)
        try:
            conn = connect_via(self.svc, self.server, self.database, autocommit=False)
            sequence = 0
            while True:
                sequence += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO mine VALUES (%s, %s)", (self.number, sequence))
                    cur.execute("UPDATE t SET k = k + 1000000 WHERE id = %s", (pick.randint(1, self.rows),))
                conn.commit()
                self.commits.append(time.time())
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            if isinstance(exc, pymysql.err.InterfaceError) or exc.args[0] in DROPPED:
                self.dropped = True
            else:
                self.errors.append(exc)


def window(record: BacktrackRecord) -> tuple[float, float]:
    """When the early writes ran (wall time)."""
    early = early_writes(record)
    began = dt.datetime.fromisoformat(early["started"].replace("Z", "+00:00")).timestamp()
    return began, began + early["duration_s"]


def test_sixteen_clients_write_during_a_200k_row_undo(svc, mysql_server, database):
    rows = 200_000
    with mysql_server.connect(database) as conn:
        execute(conn, "CREATE TABLE mine (client INT, seq INT, PRIMARY KEY (client, seq))",
                "INSERT INTO mine SELECT seq, 0 FROM seq_0_to_15")  # committed before the point: kept
    moment, snapshot, _ = mistake_after_snapshot(svc, mysql_server, database, rows)
    clients = [Client(svc, mysql_server, database, n, rows) for n in range(16)]
    for client in clients:
        client.start()
    time.sleep(0.5)
    record = wait_done(svc, request(svc, moment))
    for client in clients:
        client.join(60)
    assert record.status == "completed", record.error
    assert not any(c.errors for c in clients), [c.errors[:1] for c in clients if c.errors]
    assert all(c.dropped for c in clients)
    assert fingerprint(mysql_server, database) == snapshot  # kept before the point, undone after it
    assert_early_path(record)
    began, ended = window(record)
    during = sum(1 for c in clients for t in c.commits if began <= t <= ended)
    assert during > 0, "no client committed while the early writes ran: the test proves nothing"
    assert record.rows[f"{database}.mine"]["delete"] == sum(len(c.commits) for c in clients)


def test_a_client_touching_a_row_being_restored_waits_and_is_dropped(svc, mysql_server, database):
    moment, snapshot, _ = mistake_after_snapshot(svc, mysql_server, database, 2000)
    client = connect_via(svc, mysql_server, database)
    outcome: list = []

    def update() -> None:
        try:
            execute(client, "UPDATE t SET c = 'the client was here' WHERE id = 7")
            outcome.append("committed")
        except pymysql.MySQLError as exc:
            outcome.append(exc)

    with blocker_on(mysql_server, database, 2000) as blocker:
        record = request(svc, moment)
        ours = early_lock_wait(mysql_server)  # rows 1..1999 are restored and locked by now
        updating = threading.Thread(target=update)
        updating.start()
        waiter = waiting_on(mysql_server, ours)
        assert waiter == {client.thread_id()}
        blocker.rollback()
        record = wait_done(svc, record)
    updating.join(30)
    assert record.status == "completed", record.error
    assert isinstance(outcome[0], pymysql.err.OperationalError) and outcome[0].args[0] in DROPPED, outcome
    assert fingerprint(mysql_server, database) == snapshot  # the client's update was rolled back
    assert_early_path(record)
    assert early_writes(record)["client_waits_seen"] >= 1
    assert next(s for s in record.steps if s["name"] == "drain")["waiters_killed"] == [client.thread_id()]


def test_the_early_transaction_killed_falls_back_and_a_new_backtrack_succeeds(svc, mysql_server, database):
    moment, snapshot, mistaken = mistake_after_snapshot(svc, mysql_server, database, 2000)
    with blocker_on(mysql_server, database, 2000) as blocker:
        record = request(svc, moment)
        ours = early_lock_wait(mysql_server)
        mysql_server.query(f"KILL CONNECTION {ours}")
        assert fingerprint(mysql_server, database) == mistaken  # nothing of the early writes is seen
        blocker.rollback()
        record = wait_done(svc, record)
    assert record.status == "completed", record.error
    assert "rolled_back" in early_writes(record), early_writes(record)
    assert fingerprint(mysql_server, database) == snapshot

    again = now_iso()
    with mysql_server.connect(database) as conn:
        execute(conn, "DELETE FROM t WHERE id > 1000")
    wait_captured(svc, mysql_server)
    second = backtrack(svc, again)
    assert second.status == "completed", second.error
    assert_early_path(second)
    assert fingerprint(mysql_server, database) == snapshot


def test_serve_killed_during_the_early_writes_leaves_data_unchanged(mysql_server, database, tmp_path):
    if mysql_server.private is None:
        pytest.skip("needs the server's binlog position helpers of a private server")
    data_dir = tmp_path / "data"
    serve = start_serve(mysql_server, data_dir)
    blocker = contextlib.ExitStack()
    try:
        client = admin_client(data_dir, serve)
        make_table(mysql_server, database, 2000)
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        snapshot = fingerprint(mysql_server, database)
        moment = now_iso()
        with mysql_server.connect(database) as conn:
            execute(conn, "UPDATE t SET k = k + 1, c = REVERSE(c)")
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        mistaken = fingerprint(mysql_server, database)

        held = blocker.enter_context(blocker_on(mysql_server, database, 2000))
        record = client.post("/v1/backtracks", {"to": moment, "drain_timeout": 60})
        early_lock_wait(mysql_server)
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        held.rollback()
        assert fingerprint(mysql_server, database) == mistaken  # the server rolled the early writes back

        serve = start_serve(mysql_server, data_dir)
        client = admin_client(data_dir, serve)
        after = client.get(f"/v1/backtracks/{record['id']}")
        assert after["status"] == "failed" and "stopped during the backtrack" in after["error"]
        assert mysql_server.query("SELECT @@GLOBAL.read_only")[0][0] == 0
        retry = client.post("/v1/backtracks", {"to": moment})
        deadline = time.monotonic() + 120
        while (done := client.get(f"/v1/backtracks/{retry['id']}"))["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        assert done["status"] == "completed", done["error"]
        assert "rolled_back" not in early_writes(done)
        assert fingerprint(mysql_server, database) == snapshot
    finally:
        blocker.close()
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
