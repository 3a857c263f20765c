"""Changes the server rolled back never reach the change store.

MariaDB logs a transaction that rolled back when it touched something non-transactional (a
temporary table, a MyISAM/Aria table): BEGIN, the rows events of its transactional tables, then
ROLLBACK; and it logs SAVEPOINT / ROLLBACK TO inside a group for the same reason. The store must
hold only what was committed: a backtrack would otherwise "undo" changes that never happened.

A private server of its own (module scope), like test_changelog.py; needs server binaries.
"""

from __future__ import annotations

import pytest

from proxy.changelog import binlog as bl
from proxy.changelog.decoder import decode_rows, parse_table_map
from proxy.changelog.events import classify_query, parse_query, table_map_names
from proxy.changelog.store import ROW_BATCH, ChangeStore
from proxy.changelog.streamer import (
    FLAG_ROLLBACK_UNRESOLVED,
    TransactionAssembler,
    current_binlog_position,
)
from proxy.rewind import build_plan
from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer
from tests.integration.streamer_support import StreamerProcess, wait_caught_up


@pytest.fixture
def db(own_server: PrivateServer, request) -> str:
    name = "rb_" + request.node.name[:40]
    with own_server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}`")
        for table, engine in (("i", "InnoDB"), ("m", "MyISAM"), ("a", "Aria")):
            cur.execute(f"CREATE TABLE `{name}`.{table} (id INT PRIMARY KEY, v INT) ENGINE={engine}")
    return name


def run(server: PrivateServer, *statements: str) -> None:
    """One session, in order (temporary tables and transactions need the same session)."""
    with server.connect() as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def stored_rows(store: ChangeStore, db: str) -> list[tuple[int, str, str, tuple | None, tuple | None]]:
    """(txn_id, table, operation, before, after) of every stored row change in ``db``."""
    found = []
    for txn in store.transactions():
        for change in store.changes(txn.first_lsn, txn.last_lsn) if txn.n_changes else ():
            assert change.txn_id == txn.txn_id
            if change.kind != "rows":
                continue
            schema, table, body, generated = store.table_map(change.table_map_id)
            if schema != db:
                continue
            parsed = parse_table_map(body, "mariadb").with_generated(frozenset(generated))
            for row in decode_rows(change.event_type, change.body, parsed):
                found.append((txn.txn_id, table, row.kind, row.before, row.after))
    return found


def images(rows: list, table: str) -> list[tuple]:
    return [(kind, before, after) for _, name, kind, before, after in rows if name == table]


def test_rolled_back_changes_are_not_stored(own_server, db, tmp_path):
    store_path = tmp_path / "changes.db"
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
        run(own_server,
            # mixed, rolled back: the MyISAM and Aria rows stay, the InnoDB ones never happened
            "BEGIN", f"INSERT INTO {db}.i VALUES (1, 1)", f"INSERT INTO {db}.m VALUES (1, 1)",
            f"INSERT INTO {db}.i VALUES (2, 1)", f"INSERT INTO {db}.a VALUES (1, 1)", "ROLLBACK",
            # a temporary table makes the server log the rolled-back InnoDB rows, then ROLLBACK
            "BEGIN", f"INSERT INTO {db}.i VALUES (3, 1)", f"CREATE TEMPORARY TABLE {db}.tt (x INT)",
            f"INSERT INTO {db}.i VALUES (4, 1)", f"DROP TEMPORARY TABLE {db}.tt", "ROLLBACK",
            # committed, mixed: everything stays
            "BEGIN", f"INSERT INTO {db}.i VALUES (5, 1)", f"INSERT INTO {db}.m VALUES (5, 1)", "COMMIT",
            # ROLLBACK TO SAVEPOINT inside a logged group: what came after the savepoint went back
            "BEGIN", f"INSERT INTO {db}.i VALUES (6, 1)", f"CREATE TEMPORARY TABLE {db}.t2 (x INT)",
            "SAVEPOINT `s``1`", f"INSERT INTO {db}.i VALUES (7, 1)", f"UPDATE {db}.i SET v = 2 WHERE id = 6",
            f"INSERT INTO {db}.m VALUES (7, 1)", "ROLLBACK TO SAVEPOINT `S``1`",
            f"UPDATE {db}.i SET v = 3 WHERE id = 6", "COMMIT")
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    with own_server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id, v FROM {db}.i ORDER BY id")
        assert cur.fetchall() == ((5, 1), (6, 3))
    store = ChangeStore(store_path, readonly=True)
    try:
        rows = stored_rows(store, db)
        assert images(rows, "i") == [("insert", None, (5, 1)), ("insert", None, (6, 1)),
                                     ("update", (6, 1), (6, 3))]
        assert sorted(images(rows, "m")) == [("insert", None, (1, 1)), ("insert", None, (5, 1)),
                                             ("insert", None, (7, 1))]
        assert images(rows, "a") == [("insert", None, (1, 1))]
        ours = [t for t in store.transactions() if any(name.startswith(db + ".") for name in t.tables)]
        assert all(FLAG_ROLLBACK_UNRESOLVED not in t.flags for t in ours)
        assert all(t.n_changes == len(list(store.changes(t.first_lsn, t.last_lsn))) for t in ours)
        savepoint_txn = next(t for t in ours if "savepoint_rollback" in t.flags)
        assert savepoint_txn.tables == (f"{db}.i",)
        # nothing of the fully rolled-back group is stored, not even an empty transaction
        assert not any("rolled_back" in t.flags for t in ours)
    finally:
        store.close()


def test_rollback_of_a_table_dropped_since_is_a_conflict(own_server, db, tmp_path):
    """The engine of a table dropped before capture reads the group cannot be asked: the rows
    are kept and the planner refuses to rewind over them without --force."""
    store_path = tmp_path / "changes.db"
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    run(own_server, f"CREATE TABLE {db}.gone (id INT PRIMARY KEY) ENGINE=InnoDB",
        "BEGIN", f"INSERT INTO {db}.gone VALUES (1)", f"CREATE TEMPORARY TABLE {db}.tt (x INT)", "ROLLBACK",
        f"DROP TABLE {db}.gone")
    streamer = StreamerProcess(own_server, store_path).start()
    try:
        wait_caught_up(own_server, store_path, process=streamer)
    finally:
        streamer.stop()
    store = ChangeStore(store_path, readonly=True)
    try:
        txn = next(t for t in store.transactions() if FLAG_ROLLBACK_UNRESOLVED in t.flags)
        assert txn.tables == (f"{db}.gone",) and txn.n_changes == 1
        plan = build_plan(store, txn.txn_id - 1, flavor="mariadb")
        assert any(c.kind == "rollback" and c.table == f"{db}.gone" for c in plan.conflicts)
    finally:
        store.close()


# -- the assembler fed real events, spliced into groups the server may write -------------------------


def _events(server: PrivateServer, start: tuple[str, int]) -> list[bl.RawEvent]:
    source = bl.BinlogSource({"host": "127.0.0.1", "port": server.port, "user": ADMIN_USER,
                              "passwd": ADMIN_PASSWORD}, 0x7F00_0001, bl.BinlogPosition(*start),
                             blocking=False)
    try:
        return list(source.events())
    finally:
        source.close()


def _pieces(server: PrivateServer, db: str) -> dict[str, list[bl.RawEvent]]:
    """Real events to splice: a GTID event, table map + rows events per table, and the queries."""
    with server.connect() as conn:
        start = current_binlog_position(conn)
    run(server, "BEGIN", f"INSERT INTO {db}.i VALUES (1, 1)", f"CREATE TEMPORARY TABLE {db}.tt (x INT)",
        "SAVEPOINT s", f"UPDATE {db}.i SET v = 2 WHERE id = 1", "ROLLBACK TO SAVEPOINT s", "ROLLBACK")
    run(server, f"INSERT INTO {db}.m VALUES (1, 1)", f"INSERT INTO {db}.i VALUES (9, 9)")
    events = _events(server, start)
    pieces: dict[str, list[bl.RawEvent]] = {}
    table = None
    for event in events:
        if event.type == bl.MARIADB_GTID_EVENT:
            pieces.setdefault("gtid", [event])
        elif event.type == bl.TABLE_MAP_EVENT:
            table = event
        elif event.type in bl.ROWS_EVENTS:
            name = {bl.WRITE_ROWS_V1: "write", bl.UPDATE_ROWS_V1: "update", bl.WRITE_ROWS_V2: "write",
                    bl.UPDATE_ROWS_V2: "update"}.get(event.type, "other")
            pieces.setdefault(f"{table_map_names(table.body)[2]}_{name}", [table, event])
        elif event.type == bl.QUERY_EVENT:
            pieces.setdefault(classify_query(parse_query(event.body).query), [event])
        elif event.type == bl.XID_EVENT:
            pieces.setdefault("xid", [event])
    assert {"gtid", "i_write", "i_update", "m_write", "savepoint", "rollback_to", "rollback",
            "xid"} <= pieces.keys()
    return pieces


@pytest.mark.parametrize("repeat", [1, ROW_BATCH + 7], ids=["small", "spilled"])
def test_mixed_rolled_back_group_keeps_non_transactional_rows(own_server, db, tmp_path, repeat):
    """A group with InnoDB and MyISAM rows that ends in ROLLBACK (older servers and other
    settings write them): only the MyISAM rows are stored, readable on their own (compact rows
    rewritten), whether the records were still in memory or already written to SQLite."""
    p = _pieces(own_server, db)
    store = ChangeStore(tmp_path / "changes.db")
    with own_server.connect() as conn:
        store.start_capture(*current_binlog_position(conn), 0)
    asked = []

    def transactional(schema: str, table: str) -> bool | None:
        asked.append(table)
        return {"i": True, "m": False}.get(table)

    assembler = TransactionAssembler(store, lambda s, t: [], transactional=transactional)
    sequence = p["gtid"] + (p["i_write"] + p["m_write"] + p["i_update"]) * repeat + p["rollback"]
    # then a committed group with a savepoint rolled back between MyISAM rows
    sequence += (p["gtid"] + p["m_write"] + p["savepoint"] + p["i_update"] + p["i_write"]
                 + p["rollback_to"] + p["i_update"] + p["m_write"] + p["xid"])
    for event in sequence:
        assembler.feed(event)
    store.commit_pending()
    assert sorted(asked) == ["i", "m"]  # once per table: cached
    first, second = store.transactions()
    assert first.tables == (f"{db}.m",) and "rolled_back" in first.flags
    assert second.tables == (f"{db}.i", f"{db}.m",) and "savepoint_rollback" in second.flags
    rows = stored_rows(store, db)
    assert [(txn, table, kind) for txn, table, kind, _, _ in rows] == (
        [(first.txn_id, "m", "insert")] * repeat
        + [(second.txn_id, "m", "insert"), (second.txn_id, "i", "update"), (second.txn_id, "m", "insert")])
    assert first.n_changes == repeat and second.n_changes == 3
    store.close()
    reopened = ChangeStore(tmp_path / "changes.db", readonly=True)
    try:
        assert stored_rows(reopened, db) == rows
    finally:
        reopened.close()


def test_savepoint_never_seen_is_unresolved(own_server, db, tmp_path):
    p = _pieces(own_server, db)
    store = ChangeStore(tmp_path / "changes.db")
    with own_server.connect() as conn:
        store.start_capture(*current_binlog_position(conn), 0)
    assembler = TransactionAssembler(store, lambda s, t: [], transactional=lambda s, t: True)
    for event in p["gtid"] + p["i_write"] + p["rollback_to"] + p["i_update"] + p["xid"]:
        assembler.feed(event)
    store.commit_pending()
    (txn,) = store.transactions()
    assert FLAG_ROLLBACK_UNRESOLVED in txn.flags and txn.n_changes == 2
    store.close()
