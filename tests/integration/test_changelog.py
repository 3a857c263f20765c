"""The changelog against a real server: capture, crash safety, restarts, purged binlogs,
retention and bounded memory.

These tests restart and purge their server, so they use a private server of their own (module
scope), not the session's shared one. They need server binaries on PATH.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from proxy.changelog.store import ChangeStore
from proxy.sandbox import PrivateServer
from tests.integration.streamer_support import (
    StreamerProcess,
    gtid_seqs,
    server_gtid_seq,
    wait_caught_up,
)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "changes.db"


@pytest.fixture
def scratch_db(own_server: PrivateServer, request) -> str:
    name = "cl_" + request.node.name[:40].replace("[", "_").replace("]", "_").replace("-", "_")
    with own_server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}`")
    return name


def wait_no_dump_threads(cur, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")
        if cur.fetchone()[0] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("a binlog dump thread is still running")


def purge_until_gone(cur, newest: str, timeout: float = 20.0) -> None:
    """PURGE BINARY LOGS TO ``newest``; MariaDB keeps a binlog until its binlog checkpoint has
    passed (InnoDB flushed), so retry until only ``newest`` is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
        cur.execute("SHOW BINARY LOGS")
        if [row[0] for row in cur.fetchall()] == [newest]:
            return
        time.sleep(0.2)
    raise AssertionError("the server did not purge its old binlogs")


def execute(server: PrivateServer, *statements: str, database: str | None = None) -> None:
    with server.connect(database) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def test_transactions_are_grouped_and_ordered(own_server, store_path, scratch_db):
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
        db = scratch_db
        execute(own_server,
                f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20))",
                f"INSERT INTO {db}.t VALUES (1,'a'),(2,'b')",
                "BEGIN", f"UPDATE {db}.t SET v='x' WHERE id=1", f"DELETE FROM {db}.t WHERE id=2", "COMMIT",
                "BEGIN", f"INSERT INTO {db}.t VALUES (3,'rolled back')", "ROLLBACK",
                f"CREATE TABLE {db}.m (id INT PRIMARY KEY) ENGINE=MyISAM",
                f"INSERT INTO {db}.m VALUES (1)")
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    store = ChangeStore(store_path, readonly=True)
    txns = [t for t in store.transactions() if any(db in name for name in t.tables)]
    assert [t.statements[0].split()[0].upper() for t in txns] == ["CREATE", "INSERT", "UPDATE", "CREATE", "INSERT"]
    assert "ddl" in txns[0].flags and txns[0].n_changes == 1
    assert txns[2].n_changes == 2 and txns[2].statements[1].startswith("DELETE")  # one transaction
    lsns = [(t.first_lsn, t.last_lsn) for t in store.transactions()]
    assert all(a[1] < b[0] for a, b in zip(lsns, lsns[1:], strict=False))  # LSN ranges ascend
    times = [t.commit_time_us for t in store.transactions()]
    assert times == sorted(times)
    assert all(t.time_precision in ("refined", "s", "us") for t in txns)
    changes = list(store.changes(txns[2].first_lsn, txns[2].last_lsn))
    assert [c.kind for c in changes] == ["rows", "rows"] and all(c.table_map_id for c in changes)
    schema, table, body, generated = store.table_map(changes[0].table_map_id)
    assert (schema, table) == (db, "t") and body and generated == []
    store.close()


def test_xa_is_stored_at_commit_and_dropped_on_rollback(own_server, store_path, scratch_db):
    db = scratch_db
    execute(own_server, f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
        with own_server.connect() as xa, own_server.connect() as other:
            xa.cursor().execute("XA START 'x1'")
            xa.cursor().execute(f"INSERT INTO {db}.t VALUES (1)")
            xa.cursor().execute("XA END 'x1'")
            xa.cursor().execute("XA PREPARE 'x1'")
            other.cursor().execute(f"INSERT INTO {db}.t VALUES (2)")
            wait_caught_up(own_server, store_path, process=streamer)
            streamer.kill()  # the prepared transaction must survive a crash of the streamer
            streamer.start()
            xa.cursor().execute("XA COMMIT 'x1'")
            for statement in ("XA START 'x2'", f"INSERT INTO {db}.t VALUES (3)", "XA END 'x2'",
                              "XA PREPARE 'x2'", "XA ROLLBACK 'x2'"):
                xa.cursor().execute(statement)
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    store = ChangeStore(store_path, readonly=True)
    mine = [t for t in store.transactions() if f"{db}.t" in t.tables]
    assert [t.statements for t in mine] == [(f"INSERT INTO {db}.t VALUES (2)",), (f"INSERT INTO {db}.t VALUES (1)",)]
    assert mine[1].xa_xid == "X'7831',X'',1" and "xa" in mine[1].flags
    store.close()


class WriteLoad:
    """Autocommitted single-row inserts and small transactions in a thread until stopped."""

    def __init__(self, server: PrivateServer, database: str):
        self.server = server
        self.database = database
        self.stop = threading.Event()
        self.count = 0
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WriteLoad:
        execute(self.server, "CREATE TABLE IF NOT EXISTS load_t (id INT PRIMARY KEY, v INT)",
                database=self.database)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self) -> None:
        try:
            with self.server.connect(self.database) as conn, conn.cursor() as cur:
                while not self.stop.is_set():
                    self.count += 1
                    if self.count % 3:
                        cur.execute("INSERT INTO load_t VALUES (%s, 0)", (self.count,))
                    else:
                        cur.execute("BEGIN")
                        cur.execute("INSERT INTO load_t VALUES (%s, 1)", (self.count,))
                        cur.execute("UPDATE load_t SET v = v + 1 WHERE id = %s", (self.count - 1,))
                        cur.execute("COMMIT")
        except Exception as exc:  # reported by the test
            self.error = exc


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(own_server, store_path, scratch_db):
    rng = random.Random(20261122)
    streamer = StreamerProcess(own_server, store_path).start()
    wait_caught_up(own_server, store_path, process=streamer)
    first_seq = server_gtid_seq(own_server) + 1
    with WriteLoad(own_server, scratch_db) as load:
        for _ in range(20):
            time.sleep(rng.uniform(0.05, 0.6))
            streamer.kill()
            streamer.start()
        time.sleep(0.3)
    assert load.error is None and load.count > 100
    wait_caught_up(own_server, store_path, process=streamer)
    streamer.stop()
    seqs = [s for s in gtid_seqs(store_path) if s >= first_seq]
    last_seq = server_gtid_seq(own_server)
    assert seqs == list(range(first_seq, last_seq + 1)), "every transaction exactly once, in order"


def test_sigterm_stops_an_idle_streamer_at_once(own_server, store_path):
    streamer = StreamerProcess(own_server, store_path).start()
    wait_caught_up(own_server, store_path, process=streamer)
    time.sleep(0.3)  # idle: the reader waits on the server for the next event or heartbeat
    process = streamer.process
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert time.monotonic() - started < 1.0  # not the next heartbeat, let alone the read timeout
    with own_server.connect() as conn, conn.cursor() as cur:
        wait_no_dump_threads(cur)


def test_a_streamer_stops_when_its_parent_is_killed(own_server, store_path):
    """A serve process killed with SIGKILL leaves no capture behind: its streamer stops too."""
    streamer = StreamerProcess(own_server, store_path)
    parent_script = ("import subprocess, sys, time; "
                     "child = subprocess.Popen(sys.argv[1:]); print(child.pid, flush=True); time.sleep(600)")
    with open(streamer.log_path, "ab") as log:  # the streamer inherits it as its stderr
        parent = subprocess.Popen([sys.executable, "-c", parent_script, *streamer.command()],
                                  env=streamer.environment(), stdout=subprocess.PIPE,
                                  stderr=log, text=True)
    child_pid = 0
    try:
        child_pid = int(parent.stdout.readline())
        wait_caught_up(own_server, store_path)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while process_alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_alive(child_pid), "the orphaned streamer is still running"
        assert "the serve process is gone" in streamer.log_text()
        with own_server.connect() as conn, conn.cursor() as cur:
            wait_no_dump_threads(cur)
    finally:
        parent.kill()
        parent.wait(10)
        if process_alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped by its new parent, is not)."""
    if pid <= 0:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_server_restart_during_capture_loses_nothing(own_server, store_path, scratch_db):
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
        first_seq = server_gtid_seq(own_server) + 1
        execute(own_server, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)", database=scratch_db)
        own_server.restart()
        execute(own_server, "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)", database=scratch_db)
        wait_caught_up(own_server, store_path, timeout=60, process=streamer)
    finally:
        streamer.stop()
    expected = list(range(first_seq, server_gtid_seq(own_server) + 1))
    assert [s for s in gtid_seqs(store_path) if s >= first_seq] == expected
    assert "interrupted" in streamer.log_text()


def test_purged_binlog_is_recorded_as_a_gap(own_server, store_path, scratch_db):
    streamer = StreamerProcess(own_server, store_path).start()
    wait_caught_up(own_server, store_path, process=streamer)
    streamer.stop()
    before = ChangeStore(store_path, readonly=True)
    earliest_before = before.earliest_backtrack_time_us()
    before.close()
    execute(own_server, "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)", database=scratch_db)
    with own_server.connect() as conn, conn.cursor() as cur:
        wait_no_dump_threads(cur)  # the server will not purge a binlog a dump thread still reads
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("SHOW MASTER STATUS")
        newest = cur.fetchone()[0]
        purge_until_gone(cur, newest)
    execute(own_server, "INSERT INTO t VALUES (2)", database=scratch_db)
    streamer.start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    store = ChangeStore(store_path, readonly=True)
    gaps = store.gaps()
    assert len(gaps) == 1 and gaps[0].resumed_at == f"{newest}:4"
    assert store.earliest_backtrack_time_us() >= gaps[0].detected_at_us > earliest_before
    statements = [t.statements for t in store.transactions() if f"{scratch_db}.t" in t.tables]
    assert statements[-1] == ("INSERT INTO t VALUES (2)",)  # capture went on after the gap
    assert ("INSERT INTO t VALUES (1)",) not in statements  # that one was lost with the binlog
    store.close()


def test_retention_evicts_whole_transactions_oldest_first(own_server, store_path, scratch_db):
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
        execute(own_server, "CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200))", database=scratch_db)
        for i in range(10):
            execute(own_server, "BEGIN", *(f"INSERT INTO t VALUES ({i * 10 + j}, REPEAT('x', 200))"
                                           for j in range(3)), "COMMIT", database=scratch_db)
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    store = ChangeStore(store_path)
    txns = store.transactions()
    total = store.stats()["stored_bytes"]
    # By size: keep at most half of the bytes.
    result = store.evict(window_us=None, max_bytes=total // 2)
    kept = store.transactions()
    assert result.transactions > 0 and kept == txns[result.transactions:]
    assert store.stats()["stored_bytes"] <= total // 2
    assert store.earliest_backtrack_time_us() == txns[result.transactions - 1].commit_time_us
    assert list(store.changes(txns[0].first_lsn, txns[result.transactions - 1].last_lsn)) == []
    # By window: everything older than the newest transaction's time leaves.
    newest = kept[-1].commit_time_us
    result = store.evict(window_us=1, max_bytes=None, now=newest + 1)
    remaining = store.transactions()
    assert all(t.commit_time_us >= newest for t in remaining) and remaining
    assert store.earliest_backtrack_time_us() == max(t.commit_time_us for t in kept if t.commit_time_us < newest)
    store.close()


def test_million_row_delete_is_captured_with_bounded_memory(own_server, store_path, scratch_db):
    if shutil.which("mariadbd") is None and own_server.binary.flavor != "mariadb":
        pytest.skip("uses MariaDB's sequence engine to fill the table")
    execute(own_server,
            "CREATE TABLE big (id INT PRIMARY KEY, k INT, c CHAR(60))",
            "INSERT INTO big SELECT seq, seq % 1000, 'some padding text' FROM seq_1_to_1000000",
            database=scratch_db)
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
        baseline = streamer.peak_rss_bytes()
        execute(own_server, "DELETE FROM big", database=scratch_db)
        wait_caught_up(own_server, store_path, timeout=240, process=streamer)
        peak = streamer.peak_rss_bytes()
    finally:
        streamer.stop()
    store = ChangeStore(store_path, readonly=True)
    txn = [t for t in store.transactions() if f"{scratch_db}.big" in t.tables][-1]
    assert txn.statements == ("DELETE FROM big",) and txn.n_changes > 1000
    store.close()
    assert peak - baseline < 64 * 1024 * 1024, f"memory grew by {(peak - baseline) / 2**20:.0f} MiB"
