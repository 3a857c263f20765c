"""The change store's write side without a server: group commit, batches, aborts, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.changelog import store as store_module
from proxy.changelog.store import ChangeStore, TransactionHeader

WRITE_ROWS = 30


def header(n: int) -> TransactionHeader:
    return TransactionHeader(gtid=f"0-1-{n}", start_file="binlog.000001", start_pos=100 * n,
                             end_file="binlog.000001", end_pos=100 * n + 100, commit_time_us=n,
                             time_precision="s", server_time=n, tables=["db.t"], statements=[f"stmt {n}"])


def write(store: ChangeStore, n: int, records: int = 2, defer: bool = True) -> None:
    for i in range(records):
        store.append_change("rows", WRITE_ROWS, f"txn {n} record {i}".encode(), 1)
    store.commit_transaction(header(n), defer=defer)


def committed(path: Path) -> tuple[tuple[str, int] | None, list[str | None], list[bytes]]:
    """What another process sees: checkpoint, GTIDs, record bodies."""
    reader = ChangeStore(path, readonly=True)
    try:
        ck = reader.checkpoint()
        txns = reader.transactions()
        bodies = [c.body for t in txns if t.n_changes for c in reader.changes(t.first_lsn, t.last_lsn)]
        return ((ck.log_file, ck.log_pos) if ck else None), [t.gtid for t in txns], bodies
    finally:
        reader.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    seed = ChangeStore(tmp_path / "changes.db")
    seed.start_capture("binlog.000001", 4, 0)
    seed.close()
    return tmp_path / "changes.db"


def test_deferred_transactions_are_invisible_until_the_group_commits(path):
    store = ChangeStore(path)
    write(store, 1)
    write(store, 2)
    assert committed(path)[:2] == (("binlog.000001", 4), [])
    store.commit_pending()
    position, gtids, bodies = committed(path)
    assert position == ("binlog.000001", 300) and gtids == ["0-1-1", "0-1-2"]
    assert bodies == [b"txn 1 record 0", b"txn 1 record 1", b"txn 2 record 0", b"txn 2 record 1"]
    store.close()


def test_abort_keeps_complete_transactions_and_drops_the_open_one(path):
    store = ChangeStore(path)
    write(store, 1)
    store.append_change("rows", WRITE_ROWS, b"half of txn 2", 1)
    store.abort_transaction()  # the stream broke in the middle of txn 2
    write(store, 2, defer=False)  # read again from the checkpoint
    position, gtids, bodies = committed(path)
    assert position == ("binlog.000001", 300) and gtids == ["0-1-1", "0-1-2"]
    assert b"half of txn 2" not in bodies and len(bodies) == 4
    lsns = [t.first_lsn for t in ChangeStore(path, readonly=True).transactions()]
    assert lsns == [1, 3], "LSNs go on without a hole"
    store.close()


def test_a_big_transaction_streams_in_batches_after_the_group_before_it(path, monkeypatch):
    monkeypatch.setattr(store_module, "ROW_BATCH", 3)
    store = ChangeStore(path)
    write(store, 1)  # deferred
    for i in range(7):  # more than two batches: the group before is committed first
        store.append_change("rows", WRITE_ROWS, f"big {i}".encode(), 1)
    assert committed(path)[1] == ["0-1-1"]
    store.commit_pending()  # no-op while the big one streams in: nothing of it may commit alone
    assert committed(path)[1] == ["0-1-1"]
    store.abort_transaction()  # and an abort rolls it back
    position, gtids, bodies = committed(path)
    assert position == ("binlog.000001", 200) and gtids == ["0-1-1"] and len(bodies) == 2
    write(store, 2, records=7, defer=False)
    assert committed(path)[1] == ["0-1-1", "0-1-2"] and len(committed(path)[2]) == 9
    store.close()


def test_group_bounds_commit_without_being_asked(path, monkeypatch):
    monkeypatch.setattr(store_module, "GROUP_MAX_TRANSACTIONS", 3)
    store = ChangeStore(path)
    for n in range(1, 8):
        write(store, n)
    assert committed(path)[1] == [f"0-1-{n}" for n in range(1, 7)]
    store.close()  # closing commits the rest
    assert committed(path)[1] == [f"0-1-{n}" for n in range(1, 8)]


def test_a_killed_writer_leaves_the_last_group_to_be_read_again(path):
    store = ChangeStore(path)
    write(store, 1, defer=False)
    write(store, 2)  # deferred, never committed: as if the process died here
    store.segments.flush()
    store.db.close()  # no COMMIT
    reopened = ChangeStore(path)
    assert reopened.checkpoint().log_pos == 200
    write(reopened, 2, defer=False)
    position, gtids, bodies = committed(path)
    assert position == ("binlog.000001", 300) and gtids == ["0-1-1", "0-1-2"]
    assert bodies == [b"txn 1 record 0", b"txn 1 record 1", b"txn 2 record 0", b"txn 2 record 1"]
    assert int(reopened.get_meta("stored_bytes")) == sum(len(b) for b in bodies)
    reopened.close()


def test_compact_rows_read_back_whole_from_any_lsn(path):
    store = ChangeStore(path)
    written = [("rows", 30, 1, None), ("rows", 30, 1, None), ("rows", 31, 2, None), ("ddl", 2, None, "db"),
               ("rows", 31, 2, None), ("rows", 32, 1, None)]
    for n in (1, 2):
        for i, (kind, event_type, map_id, schema) in enumerate(written):
            store.append_change(kind, event_type, f"{n}.{i}".encode(), map_id, schema)
        store.commit_transaction(header(n), defer=n == 1)
    raw = store.db.execute("SELECT txn_id, kind, event_type, table_map_id FROM changes WHERE lsn <= 6").fetchall()
    assert raw == [(1, "", 30, 1), (0, "", 0, 0), (0, "", 31, 2), (0, "ddl", 2, None), (0, "", 31, 0),
                   (0, "", 32, 1)], "0 stands for the value before, within a transaction"
    store.close()
    reader = ChangeStore(path, readonly=True)
    expected = [(lsn, 1 + (lsn - 1) // 6, *written[(lsn - 1) % 6][:3]) for lsn in range(1, 13)]
    for first in range(1, 13):
        got = [(c.lsn, c.txn_id, c.kind, c.event_type, c.table_map_id) for c in reader.changes(first, 12)]
        assert got == expected[first - 1 :], f"read from LSN {first}"
    reader.close()


def test_held_tables_count_toward_the_size_cap_and_leave_with_their_transaction(path):
    """proxy.ddlretention writes held.json: a held table held at time 3 makes the store over its
    cap; the oldest transactions leave, up to and including the one that held it, no further."""
    import json

    store = ChangeStore(path)
    try:
        for n in range(1, 7):
            write(store, n, defer=False)
        per_txn = store.transactions()[0].n_bytes
        cap = 6 * per_txn  # the transactions alone fit
        assert store.evict(None, cap).transactions == 0
        (path.parent / store_module.HELD_FILE).write_text(json.dumps({"ops": [[3, 10 * per_txn]]}))
        result = store.evict(None, cap)
        assert result.transactions == 3  # 1, 2 and 3 (the hold's): then the held bytes are gone too
        assert [t.commit_time_us for t in store.transactions()] == [4, 5, 6]
    finally:
        store.close()


def test_history_is_written_beside_the_live_stream_below_its_numbers(tmp_path: Path):
    """Two writers, as the streamer and the history reader are: the history's LSNs, txn ids
    and segment files lie below the live stream's, each writer resumes in its own range, and
    reading in txn id order gives binlog order."""
    path = tmp_path / "changes.db"
    live = ChangeStore(path, segment_bytes=64)
    live.start_capture("binlog.000002", 504, 50, history_bytes=1504)
    history = ChangeStore(path, segment_bytes=64, history_writer=True)
    reserved = live.history_range()
    write(live, 20, defer=False)  # live first: the history comes in beside it
    history.advance_checkpoint("binlog.000001", 4)
    write(history, 1, defer=False)
    write(history, 2, defer=False)
    write(live, 21, defer=False)
    history.append_change("rows", WRITE_ROWS, b"open, never committed", 1)
    history.close()  # a crash would leave these bytes; the next open trims them
    live.close()

    live, history = ChangeStore(path, segment_bytes=64), ChangeStore(path, segment_bytes=64, history_writer=True)
    write(history, 3, defer=False)
    write(live, 22, defer=False)
    assert history.checkpoint().log_pos == 400 and live.checkpoint().log_pos == 2300
    txns = live.transactions()
    assert [t.gtid for t in txns] == ["0-1-1", "0-1-2", "0-1-3", "0-1-20", "0-1-21", "0-1-22"]
    assert [t.txn_id for t in txns[:3]] == [reserved.txn[0], reserved.txn[0] + 1, reserved.txn[0] + 2]
    assert txns[2].last_lsn < reserved.lsn[1] <= txns[3].first_lsn == reserved.lsn[1]
    assert txns[3].txn_id == reserved.txn[1]
    placed = live.db.execute("SELECT lsn, segment FROM changes ORDER BY lsn").fetchall()
    assert [segment for _, segment in placed] == sorted(segment for _, segment in placed)  # retention relies on it
    assert all((reserved.segments[0] <= segment < reserved.segments[1]) == (lsn < reserved.lsn[1])
               for lsn, segment in placed)
    _, gtids, bodies = committed(path)
    assert b"open, never committed" not in bodies and len(bodies) == 12

    # Retention while history is read never deletes the segment the history writer appends to.
    live.evict(window_us=1, max_bytes=None, now=10**9)
    assert live.transactions() == []
    write(history, 4, defer=False)
    assert [c.body for c in live.changes(0, 1 << 62)] == [b"txn 4 record 0", b"txn 4 record 1"]
    assert live.earliest_backtrack_time_us() == 50  # the start of capture until the history is in
    assert history.finish_history(1) == 22  # then back, but never over what retention evicted
    history.close()
    live.close()


def test_a_big_history_transaction_never_holds_the_write_lock_from_the_live_stream(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(store_module, "ROW_BATCH", 3)
    path = tmp_path / "changes.db"
    live = ChangeStore(path)
    live.start_capture("binlog.000002", 504, 50, history_bytes=1504)
    history = ChangeStore(path, history_writer=True)
    live.db.execute("PRAGMA busy_timeout = 100")  # a held lock fails the live commit at once
    for i in range(10):  # batches of 3 written, each committed on its own
        history.append_change("rows", WRITE_ROWS, f"history record {i}".encode(), 1)
    write(live, 20, defer=False)
    assert committed(path)[1] == ["0-1-20"]  # the batches are no transaction to any reader
    history.abort_transaction()  # the stream broke: its batches go
    assert history.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 2

    for i in range(7):
        history.append_change("rows", WRITE_ROWS, f"crashed record {i}".encode(), 1)
    history.segments.flush()
    history.db.close()  # a crash in the middle: batches committed, the transaction never was
    history = ChangeStore(path, history_writer=True)
    assert history.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 2
    write(history, 1, records=5, defer=False)
    write(live, 21, defer=False)
    _, gtids, bodies = committed(path)
    assert gtids == ["0-1-1", "0-1-20", "0-1-21"]
    assert [b for b in bodies if b.startswith(b"txn 1 ")] == [f"txn 1 record {i}".encode() for i in range(5)]
    history.close()
    live.close()


def test_a_history_group_is_written_in_one_burst_and_an_abort_keeps_its_complete_transactions(tmp_path: Path):
    path = tmp_path / "changes.db"
    live = ChangeStore(path)
    live.start_capture("binlog.000002", 504, 50, history_bytes=1504)
    history = ChangeStore(path, history_writer=True)
    live.db.execute("PRAGMA busy_timeout = 100")  # a held lock fails the live commit at once
    write(history, 1)
    write(history, 2)  # a deferred group: held in memory, no lock taken
    history.append_change("rows", WRITE_ROWS, b"open, broken off", 1)
    write(live, 20, defer=False)
    assert committed(path)[1] == ["0-1-20"]
    history.abort_transaction()  # the stream broke: the complete ones stay, the open one goes
    _, gtids, bodies = committed(path)
    assert gtids == ["0-1-1", "0-1-2", "0-1-20"] and b"open, broken off" not in bodies
    assert history.checkpoint().log_pos == 300
    history.close()
    live.close()
