"""Backfill against a real MariaDB: history written while no auroratrack ran is captured from the
server's binlogs, and a backtrack reaches back into it exactly; a binlog purged before it could be
read is recorded as a gap."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from proxy.changelog import backfill
from proxy.changelog.store import ChangeStore
from proxy.changelog.streamer import current_binlog_position
from tests.integration.backtrack_support import backtrack, fingerprint, wait_captured
from tests.integration.streamer_support import StreamerProcess, wait_caught_up

PROBE_SERVER_ID = 4242  # the non-blocking dump that reads a file's creation time


def settings_of(server) -> dict:
    return {"host": server.host, "port": server.port, "user": server.user, "passwd": server.password}


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


def test_first_start_with_backfill_captures_the_servers_history(own_server, tmp_path: Path):
    run(own_server, None, "CREATE DATABASE IF NOT EXISTS bf_history")
    run(own_server, "bf_history", "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO t SELECT seq, seq FROM seq_1_to_100")
    written_by = time.time()
    store_path = tmp_path / "changes.db"
    streamer = StreamerProcess(own_server, store_path, "--backfill").start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
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
