"""Backfill against a real MariaDB: history written while no auroratrack ran is captured from the
server's binlogs, beside the live stream, and a backtrack reaches back into it exactly once it is
all read; live changes are captured, browsed and backtracked while it is read; a restart in its
middle resumes it with no duplicate and no hole; ``serve --backfill`` shows its progress in
status and /metrics; history that cannot be inverted (a session's statement-format DML) is a
conflict; a binlog purged before it could be read is recorded as a gap."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from proxy import clioutput
from proxy.adminclient import AdminClient
from proxy.backtrack import BacktrackRefused, BacktrackRequest
from proxy.changelog import backfill
from proxy.changelog.store import ChangeStore, Checkpoint
from proxy.changelog.streamer import current_binlog_position
from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER
from proxy.serveradmin import UpstreamCredentials
from proxy.service import BackgroundService, ServeConfig
from tests.integration.backtrack_support import backtrack, fingerprint, wait_captured
from tests.integration.streamer_support import StreamerProcess, wait_caught_up

PROBE_SERVER_ID = 4242  # the non-blocking dump that reads a file's creation time


def settings_of(server) -> dict:
    """Replication settings for the session's server or a ``PrivateServer`` (own_server)."""
    return {"host": getattr(server, "host", "127.0.0.1"), "port": server.port,
            "user": getattr(server, "user", ADMIN_USER), "passwd": getattr(server, "password", ADMIN_PASSWORD)}


def run(server, database: str | None, *statements: str) -> None:
    with server.connect(database) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        conn.commit()


def test_history_from_before_auroratrack_is_backtracked_exactly(make_proxy, mysql_server, database, tmp_path):
    with mysql_server.connect() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        first_file, _ = current_binlog_position(conn)
    # Written with no auroratrack running at all.
    run(mysql_server, database,
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2), note TEXT)",
        "INSERT INTO orders SELECT seq, CONCAT('customer ', seq), seq * 1.25, REPEAT('x', seq % 50) "
        "FROM seq_1_to_500")
    time.sleep(1.1)  # catch-up commit times are whole seconds: keep the point off the changes' second
    before = fingerprint(mysql_server, database)
    moment = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.1)
    run(mysql_server, database, "UPDATE orders SET total = 0 WHERE id <= 250", "DELETE FROM orders WHERE id > 400")
    assert fingerprint(mysql_server, database) != before

    # The first start's backfill position: the file the window starts in.
    created = backfill.file_created_s(settings_of(mysql_server), PROBE_SERVER_ID, first_file)
    with mysql_server.connect() as conn:
        start = backfill.start_position(conn, settings_of(mysql_server), PROBE_SERVER_ID,
                                        window_s=time.time() - created)
    assert (start.log_file, start.log_pos, start.since_us) == (first_file, 4, created * 1_000_000)
    store = ChangeStore(tmp_path / "changes.db")
    store.start_capture(start.log_file, start.log_pos, start.since_us)
    store.close()

    svc = make_proxy(capture=True, data_dir=tmp_path, backtrack_window_s=3600)
    wait_captured(svc, mysql_server)
    record = backtrack(svc, moment)

    assert record.status == "completed", record.error
    assert fingerprint(mysql_server, database) == before


def backfill_state(store_path: Path) -> dict | None:
    store = ChangeStore(store_path, readonly=True)
    try:
        return backfill.progress(store)
    finally:
        store.close()


def wait_backfilled(store_path: Path, timeout: float = 60.0) -> dict:
    """Until the history reader is done (its progress says so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = backfill_state(store_path) if store_path.exists() else None
        if history is not None and history["state"] in ("done", "lost"):
            return history
        time.sleep(0.05)
    raise AssertionError(f"the backfill did not finish: {history}")


def first_file_of_history(server) -> tuple[str, float]:
    """A new binlog file for the history a test writes, and how long a window reaches its start."""
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        first_file, _ = current_binlog_position(conn)
    created = backfill.file_created_s(settings_of(server), PROBE_SERVER_ID, first_file)
    return first_file, created


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_serve_backfills_by_default_and_status_shows_it(own_server, tmp_path):
    # A server of its own: serve reads all of it (the default 24 h window), nothing of other tests.
    run(own_server, None, "CREATE DATABASE IF NOT EXISTS bf_serve")
    run(own_server, "bf_serve", "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_300")
    time.sleep(1.1)  # catch-up commit times are whole seconds: keep the point off the changes' second
    before = fingerprint(own_server, "bf_serve")
    moment = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.1)
    run(own_server, "bf_serve", "DELETE FROM t WHERE id > 100", "UPDATE t SET v = 'gone'")
    with own_server.connect() as conn:
        oldest = backfill.binary_logs(conn)[0]
    oldest_created = backfill.file_created_s(settings_of(own_server), PROBE_SERVER_ID, oldest)

    config = ServeConfig(upstream=UpstreamCredentials("127.0.0.1", own_server.port, ADMIN_USER, ADMIN_PASSWORD),
                         listen_port=0, admin_port=0, data_dir=tmp_path / "data", capture=True)
    svc = BackgroundService(config).start()
    try:
        wait_captured(svc, own_server)
        wait_backfilled(config.store_path)
        admin = AdminClient.from_data_dir(config.data_dir)
        store = admin.get("/v1/status")["store"]
        history = store["backfill"]
        assert (history["state"], history["from"]) == ("done", f"{oldest}:4")
        assert history["bytes_read"] == history["bytes_total"] > 0
        assert history["history_since_us"] == store["earliest_backtrack_time_us"] == oldest_created * 1_000_000
        assert "done, 100% of" in clioutput.backfill_text(history)
        metrics = admin.get_text("/metrics")
        assert metric(metrics, "auroratrack_backfill_reading") == 0
        assert metric(metrics, "auroratrack_backfill_bytes_read") == history["bytes_total"]
        assert metric(metrics, "auroratrack_backtrack_earliest_time_seconds") == oldest_created

        record = backtrack(svc, moment)
        assert record.status == "completed", record.error
        assert fingerprint(own_server, "bf_serve") == before
    finally:
        svc.stop()


# What a session did before auroratrack ever ran, that the binlog cannot invert.
UNINVERTIBLE_HISTORY = {
    "statement": ("SET SESSION binlog_format = 'STATEMENT'", "UPDATE t SET v = v * 2 WHERE id <= 5"),
    "partial_image": ("SET SESSION binlog_row_image = 'MINIMAL'", "UPDATE t SET v = v * 2 WHERE id <= 5"),
    "ddl": ("ALTER TABLE t ADD COLUMN w INT NULL",),  # DDL that bypassed the proxy
}


@pytest.mark.parametrize("kind", sorted(UNINVERTIBLE_HISTORY))
def test_history_that_cannot_be_inverted_is_a_conflict(kind, make_proxy, mysql_server, database, tmp_path):
    _, created = first_file_of_history(mysql_server)
    run(mysql_server, database, "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO t SELECT seq, seq FROM seq_1_to_10")
    time.sleep(1.1)
    moment = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.1)
    run(mysql_server, database, *UNINVERTIBLE_HISTORY[kind])
    after = fingerprint(mysql_server, database)

    svc = make_proxy(capture=True, data_dir=tmp_path / "data", backfill=True,
                     backtrack_window_s=time.time() - created + 30)
    wait_captured(svc, mysql_server)
    wait_backfilled(tmp_path / "data" / "changes.db")
    record = backtrack(svc, moment)

    assert record.status == "failed"
    assert any(c["kind"] == kind and c["table"] == f"{database}.t" for c in record.conflicts), record.conflicts
    assert fingerprint(mysql_server, database) == after  # nothing written


def test_backfill_progress_follows_the_history_checkpoint(tmp_path: Path):
    """``progress`` against a store alone: what a status shows while history is read."""
    store = ChangeStore(tmp_path / "changes.db")
    store.start_capture("bin.000002", 504, 5_000_000, history_bytes=1504)
    history = ChangeStore(tmp_path / "changes.db", history_writer=True)
    try:
        assert backfill.progress(store)["state"] == "starting"  # the reader has not fixed its start
        store.set_meta(backfill.META_KEY, json.dumps({
            "from": ["bin.000001", 4], "until": ["bin.000002", 504],
            "files": [["bin.000001", 1004], ["bin.000002", 504]], "since_us": 1_000_000}))
        store.advance_checkpoint("bin.000002", 900)  # the live stream moves on: not the history's progress
        history.advance_checkpoint("bin.000001", 4)
        started = backfill.progress(store)
        assert (started["state"], started["bytes_read"], started["bytes_total"]) == ("reading", 0, 1504)
        history.advance_checkpoint("bin.000002", 4)
        reading = backfill.progress(store)
        assert (reading["state"], reading["bytes_read"], reading["bytes_total"]) == ("reading", 1004, 1504)
        assert reading["position"] == "bin.000002:4"
        line = clioutput.backfill_text(reading)
        assert "reading, 67% of" in line and "moves back when it is done" in line
        assert store.earliest_backtrack_time_us() == 5_000_000  # nothing claimed over a hole
        history.advance_checkpoint("bin.000002", 504)
        assert history.finish_history(1_000_000) == 1_000_000
        assert backfill.progress(store)["state"] == "done"
        assert backfill.progress(store)["bytes_read"] == 1504
        assert store.earliest_backtrack_time_us() == 1_000_000
    finally:
        history.close()
        store.close()


HISTORY_ROWS = 100
HISTORY_PAUSE_S = 0.1  # the reader rests after each transaction: >= 10 s of backfill to act in


def test_live_changes_are_captured_and_backtracked_while_history_is_read(own_server, tmp_path):
    run(own_server, None, "CREATE DATABASE IF NOT EXISTS bf_live")
    run(own_server, "bf_live", "CREATE TABLE old (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE live (id INT PRIMARY KEY, v INT)")
    for i in range(HISTORY_ROWS):  # one transaction each: a backfill slowed per transaction takes a while
        run(own_server, "bf_live", f"INSERT INTO old VALUES ({i}, {i})")
    time.sleep(1.1)  # history commit times are whole seconds: keep the point off the changes' second
    before_capture = fingerprint(own_server, "bf_live")
    history_moment = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.1)
    run(own_server, "bf_live", "UPDATE old SET v = v + 1000")

    config = ServeConfig(upstream=UpstreamCredentials("127.0.0.1", own_server.port, ADMIN_USER, ADMIN_PASSWORD),
                         listen_port=0, admin_port=0, data_dir=tmp_path / "data", capture=True,
                         backfill_pause_s=HISTORY_PAUSE_S)
    svc = BackgroundService(config).start()
    try:
        run(own_server, "bf_live", "INSERT INTO live VALUES (1, 1), (2, 2)")
        time.sleep(0.3)
        live_before = fingerprint(own_server, "bf_live")
        live_moment = dt.datetime.now(dt.UTC).isoformat()
        time.sleep(0.3)
        run(own_server, "bf_live", "UPDATE live SET v = 0", "DELETE FROM live WHERE id = 2")
        wait_captured(svc, own_server, timeout=10)
        assert backfill_state(config.store_path)["state"] in ("starting", "reading")

        # Browsable at once: the live changes are in the store beside the history being read.
        admin = AdminClient.from_data_dir(config.data_dir)
        listed = admin.get("/v1/changes?table=bf_live.live")
        assert {"insert", "update", "delete"} <= {op for txn in listed for op in txn["operations"]}, listed
        reader = ChangeStore(config.store_path, readonly=True)
        history = reader.history_range()
        reader.close()
        assert all(txn["txn_id"] >= history.txn[1] for txn in listed)  # numbered above the history

        # History not read yet: refused, and said why.
        backtracker = svc.service.backtracker
        with pytest.raises(BacktrackRefused) as refusal:
            svc.call(lambda: backtracker.request(BacktrackRequest(to=history_moment)))
        assert "still being read" in str(refusal.value)

        # A live point: exact while the backfill still runs.
        record = backtrack(svc, live_moment)
        assert record.status == "completed", record.error
        assert fingerprint(own_server, "bf_live") == live_before
        assert backfill_state(config.store_path)["state"] in ("starting", "reading")  # not done yet

        # Once history is in, a point from before auroratrack started is exact.
        done = wait_backfilled(config.store_path, timeout=120)
        assert done["state"] == "done"
        status = admin.get("/v1/status")["store"]
        assert status["earliest_backtrack_time_us"] == done["history_since_us"]
        record = backtrack(svc, history_moment)
        assert record.status == "completed", record.error
        assert fingerprint(own_server, "bf_live") == before_capture
    finally:
        svc.stop()


def history_checkpoint(store_path: Path) -> Checkpoint | None:
    try:
        store = ChangeStore(store_path, readonly=True)
        try:
            return store.history_checkpoint()
        finally:
            store.close()
    except sqlite3.OperationalError:  # the streamer is still creating the store
        return None


def gtid_seq(gtid: str) -> int:
    return int(gtid.rsplit("-", 1)[1])


def test_a_restart_in_the_middle_of_backfill_resumes_it_without_duplicates_or_holes(own_server, tmp_path):
    run(own_server, None, "CREATE DATABASE IF NOT EXISTS bf_restart")
    run(own_server, "bf_restart", "CREATE TABLE t (id INT PRIMARY KEY, v INT)")
    for i in range(HISTORY_ROWS):
        run(own_server, "bf_restart", f"INSERT INTO t VALUES ({i}, {i})")
    store_path = tmp_path / "changes.db"
    streamer = StreamerProcess(own_server, store_path, "--backfill", "--backfill-pause-s", "0.03").start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # some of the history is stored, not all of it
            checkpoint = history_checkpoint(store_path)
            if checkpoint and checkpoint.last_txn_id:
                break
            time.sleep(0.02)
        [reader_pid] = re.findall(r"history reader started \(pid (\d+)\)", streamer.log_text())
        # A crash of both processes in the middle of the history (SIGKILL: nothing is finished).
        os.kill(int(reader_pid), signal.SIGKILL)
        streamer.kill()
        assert backfill_state(store_path)["state"] == "reading"
        run(own_server, "bf_restart", "INSERT INTO t VALUES (1000, 1000)")  # while nothing runs
        streamer.start()
        wait_caught_up(own_server, store_path, process=streamer)
        done = wait_backfilled(store_path)
    finally:
        streamer.stop()
    assert done["state"] == "done"
    assert len(re.findall(r"history reader started", streamer.log_text())) == 2
    store = ChangeStore(store_path, readonly=True)
    try:
        txns = store.transactions()
        inserts = [txn for txn in txns if txn.tables == ("bf_restart.t",) and txn.statements[0].startswith("INSERT")]
        assert len(inserts) == HISTORY_ROWS + 1  # each history insert once, and the live one
        # txn id order (and LSN order) is binlog order, across the history and the live stream,
        # and every transaction of the server's binlog since the history's start is there once.
        positions = [(txn.end_file, txn.end_pos) for txn in txns]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert all(a.last_lsn < b.first_lsn for a, b in zip(txns, txns[1:], strict=False))
        seqs = [gtid_seq(txn.gtid) for txn in txns if txn.gtid]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert store.gaps() == []
    finally:
        store.close()


def test_first_start_with_backfill_captures_the_servers_history(own_server, tmp_path: Path):
    run(own_server, None, "CREATE DATABASE IF NOT EXISTS bf_history")
    run(own_server, "bf_history", "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO t SELECT seq, seq FROM seq_1_to_100")
    written_by = time.time()
    store_path = tmp_path / "changes.db"
    streamer = StreamerProcess(own_server, store_path, "--backfill").start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
        deadline = time.monotonic() + 10  # said at the next housekeeping (each second)
        while "backfill done" not in streamer.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        streamer.stop()
    assert "backfill done: history from" in streamer.log_path.read_text()
    store = ChangeStore(store_path, readonly=True)
    try:
        tables = {t for txn in store.transactions() for t in txn.tables}
        assert "bf_history.t" in tables
        assert store.earliest_backtrack_time_us() <= written_by * 1_000_000
        assert store.gaps() == []
    finally:
        store.close()


def test_a_binlog_purged_before_backfill_reads_it_is_a_gap(own_server, tmp_path: Path):
    with own_server.connect() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        lost_file, _ = current_binlog_position(conn)
    run(own_server, None, "CREATE DATABASE IF NOT EXISTS bf_gap")
    run(own_server, "bf_gap", "CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    store_path = tmp_path / "changes.db"
    store = ChangeStore(store_path)
    store.start_capture(lost_file, 4, int(time.time() * 1_000_000))  # where a backfill would begin
    store.close()
    with own_server.connect() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        newest, _ = current_binlog_position(conn)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # MariaDB keeps a file until its binlog checkpoint passed
            cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
            cur.execute("SHOW BINARY LOGS")
            if [row[0] for row in cur.fetchall()] == [newest]:
                break
            time.sleep(0.2)
    streamer = StreamerProcess(own_server, store_path, "--backfill").start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    store = ChangeStore(store_path, readonly=True)
    try:
        [gap] = store.gaps()
        assert gap.lost_from == f"{lost_file}:4"
    finally:
        store.close()


def purge_all_but_the_newest(server) -> str:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("FLUSH BINARY LOGS")
        newest, _ = current_binlog_position(conn)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # MariaDB keeps a file until its binlog checkpoint passed
            cur.execute(f"PURGE BINARY LOGS TO '{newest}'")
            cur.execute("SHOW BINARY LOGS")
            if [row[0] for row in cur.fetchall()] == [newest]:
                return newest
            time.sleep(0.2)
    raise AssertionError("the server kept its older binlogs")


def test_history_purged_while_it_is_read_is_lost_and_never_claimed(own_server, tmp_path: Path):
    run(own_server, None, "CREATE DATABASE IF NOT EXISTS bf_lost")
    run(own_server, "bf_lost", "CREATE TABLE t (id INT PRIMARY KEY)")
    for i in range(20):
        run(own_server, "bf_lost", f"INSERT INTO t VALUES ({i})")
    store_path = tmp_path / "changes.db"
    streamer = StreamerProcess(own_server, store_path, "--backfill", "--backfill-pause-s", "0.5").start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the reader is in the middle of the history
            checkpoint = history_checkpoint(store_path)
            if checkpoint and checkpoint.last_txn_id:
                break
            time.sleep(0.05)
        [reader_pid] = re.findall(r"history reader started \(pid (\d+)\)", streamer.log_text())
        os.kill(int(reader_pid), signal.SIGKILL)  # the streamer starts it again, after a second
        purge_all_but_the_newest(own_server)
        lost = wait_backfilled(store_path)
        run(own_server, "bf_lost", "INSERT INTO t VALUES (100)")
        wait_caught_up(own_server, store_path, process=streamer)  # the live stream goes on
    finally:
        streamer.stop()
    assert lost["state"] == "lost" and lost["lost"]  # the reason
    assert "history reader exited" in streamer.log_text()
    store = ChangeStore(store_path, readonly=True)
    try:
        # Nothing of the history is claimed: the window still starts when capture did.
        assert store.earliest_backtrack_time_us() == int(store.get_meta("capture_started_us"))
        assert store.history_range().done and store.gaps() == []
        assert any(t.statements and t.statements[0] == "INSERT INTO t VALUES (100)" for t in store.transactions())
    finally:
        store.close()
