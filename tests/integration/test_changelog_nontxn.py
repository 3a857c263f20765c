"""Binlog content MariaDB writes outside BEGIN/COMMIT never stops capture.

Non-transactional writes reach the binlog in groups of their own: ``CREATE TABLE ... SELECT``
logs the CREATE, its rows and then XID (InnoDB) or COMMIT (Aria/MyISAM) under a GTID without
the standalone flag; Aria and MyISAM writes end with a COMMIT query; statistics tables
(``mysql.table_stats``, Aria) after ``ANALYZE TABLE ... PERSISTENT FOR ALL``; a temporary table
made by ``CREATE TEMPORARY ... SELECT`` (not logged in row format) feeding a real table. For
each shape, through the proxy with capture on: capture is still running afterwards (an INSERT
after it is captured), the shape's own changes are stored with their position, and a backtrack
across it is either exact or refused with a named conflict (and exact when forced, where the
images allow). ``LOAD DATA`` logged as a statement (Execute_load_query, no rows) is named too.

The second half feeds the assembler real events spliced into groups a server may write but
rarely does (a group that never ends, rows without a group, an event capture cannot store, an
incident): they are kept and flagged, and the planner names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from proxy.changelog import binlog as bl
from proxy.changelog.store import ChangeStore
from proxy.changelog.streamer import (
    FLAG_IMPLICIT,
    FLAG_INCIDENT,
    FLAG_UNCAPTURED,
    FLAG_UNTERMINATED,
    INCIDENT_EVENT,
    TransactionAssembler,
    current_binlog_position,
)
from proxy.rewind import build_plan
from tests.integration.backtrack_support import backtrack, connect_via, fingerprint, now_iso, wait_captured


@dataclass(frozen=True)
class Shape:
    setup: tuple[str, ...]  # before the backtrack point
    statements: tuple[str, ...]  # the shape itself, after the point, in one session
    stored_table: str  # a table whose change the shape must leave in the store
    conflict: tuple[str, str] | None  # (kind, table) a plain backtrack is refused with; None: exact
    forced_exact: bool = True  # with --force the database returns to the point exactly
    direct: bool = False  # the shape's statements go straight to the server, not through the proxy


SHAPES = {
    "create_table_select_innodb": Shape(
        # Recorded by the proxy's DDL hold (proxy.ddlrecord): undone exactly, the table moved aside.
        (), ("CREATE TABLE c ENGINE=InnoDB SELECT * FROM t",), "c", None),
    # The same sent past the proxy: DDL the proxy never saw is a named conflict.
    "create_table_select_direct": Shape(
        (), ("CREATE TABLE cd ENGINE=InnoDB SELECT * FROM t",), "cd", ("ddl", "cd"), forced_exact=False,
        direct=True),
    "create_table_select_aria": Shape(
        (), ("CREATE TABLE ca ENGINE=Aria SELECT * FROM t",), "ca", None),
    "create_or_replace_select": Shape(
        ("CREATE TABLE r (id INT PRIMARY KEY, v INT)",),
        ("CREATE OR REPLACE TABLE r ENGINE=InnoDB SELECT * FROM t",), "r", None),
    "create_temporary_select": Shape(
        (), ("CREATE TEMPORARY TABLE tt SELECT * FROM t", "INSERT INTO t SELECT id + 10, v FROM tt",
             "DROP TEMPORARY TABLE tt"), "t", None),
    "aria_table": Shape(
        ("CREATE TABLE a (id INT PRIMARY KEY, v INT) ENGINE=Aria", "INSERT INTO a VALUES (1, 1), (2, 2)"),
        ("INSERT INTO a VALUES (3, 3)", "UPDATE a SET v = 20 WHERE id = 2", "DELETE FROM a WHERE id = 1"),
        "a", ("non_transactional", "a")),
    "myisam_table": Shape(
        ("CREATE TABLE m (id INT PRIMARY KEY, v INT) ENGINE=MyISAM", "INSERT INTO m VALUES (1, 1), (2, 2)"),
        ("INSERT INTO m VALUES (3, 3)", "UPDATE m SET v = 20 WHERE id = 2", "DELETE FROM m WHERE id = 1"),
        "m", ("non_transactional", "m")),
    "statistics_tables": Shape(
        (), ("SET SESSION use_stat_tables = PREFERABLY", "ANALYZE TABLE t PERSISTENT FOR ALL",
             # the statistics tables are Aria: a write to them is logged as a group of its own
             "UPDATE mysql.table_stats SET cardinality = 1000 WHERE db_name = DATABASE() AND table_name = 't'"),
        "t", ("ddl", "t"), forced_exact=False),
}


def _stored(svc) -> list:
    store = ChangeStore(svc.service.config.store_path, readonly=True)
    try:
        return list(store.transactions())
    finally:
        store.close()


@pytest.mark.parametrize("name", list(SHAPES))
def test_capture_survives_and_backtrack_is_exact_or_named(svc, mysql_server, database, name):
    shape = SHAPES[name]
    client = connect_via(svc, mysql_server, database)
    with client.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
        cur.execute("INSERT INTO t VALUES (1, 1), (2, 2)")
        for statement in shape.setup:
            cur.execute(statement)
    wait_captured(svc, mysql_server)
    before = fingerprint(mysql_server, database)
    moment = now_iso()
    if shape.direct:
        with mysql_server.connect(database) as direct, direct.cursor() as cur:
            for statement in shape.statements:
                cur.execute(statement)
    else:
        with client.cursor() as cur:
            for statement in shape.statements:
                cur.execute(statement)
    with client.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (100, 100)")  # capture must still be running for this one
    wait_captured(svc, mysql_server)
    assert svc.service.streamer_process.is_alive()

    stored = _stored(svc)
    table = f"{database}.{shape.stored_table}"
    assert any(table in txn.tables and txn.n_changes for txn in stored), f"{table} not in the store"
    after_insert = [txn for txn in stored if any("VALUES (100, 100)" in s for s in txn.statements)]
    assert len(after_insert) == 1 and after_insert[0].n_changes == 1
    assert all(txn.end_file and txn.end_pos for txn in stored)  # every one carries its position
    after = fingerprint(mysql_server, database)

    record = backtrack(svc, moment)
    if shape.conflict is None:
        assert record.status == "completed", record.error
        assert fingerprint(mysql_server, database) == before
        return
    kind, conflict_table = shape.conflict
    assert record.status == "failed", record.error
    assert (kind, f"{database}.{conflict_table}") in {(c["kind"], c["table"]) for c in record.conflicts}
    assert fingerprint(mysql_server, database) == after  # nothing written
    forced = backtrack(svc, moment, force=True)
    assert forced.status == "completed", forced.error
    state = fingerprint(mysql_server, database)
    assert state["t"] == before["t"]  # the INSERT after the shape is undone either way
    if shape.forced_exact:
        assert state == before


def test_load_data_logged_as_a_statement_is_a_named_conflict(svc, mysql_server, database, tmp_path):
    """A session with binlog_format=STATEMENT logs LOAD DATA as Begin_load_query +
    Execute_load_query: no rows in the binlog. Capture goes on and names the table."""
    data = tmp_path / "rows.csv"
    data.write_text("1,1\n2,2\n")
    client = connect_via(svc, mysql_server, database, local_infile=True)
    with client.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB")
    wait_captured(svc, mysql_server)
    moment = now_iso()
    with client.cursor() as cur:
        cur.execute("SET SESSION binlog_format = STATEMENT")
        cur.execute(f"LOAD DATA LOCAL INFILE '{data}' INTO TABLE t FIELDS TERMINATED BY ','")
        cur.execute("SET SESSION binlog_format = ROW")
        cur.execute("INSERT INTO t VALUES (100, 100)")
    wait_captured(svc, mysql_server)
    stored = _stored(svc)
    load = [txn for txn in stored if "statement" in txn.flags]
    assert len(load) == 1 and load[0].tables == (f"{database}.t",)
    assert any("VALUES (100, 100)" in s for txn in stored for s in txn.statements)
    after = fingerprint(mysql_server, database)
    record = backtrack(svc, moment)
    assert record.status == "failed"
    assert ("statement", f"{database}.t") in {(c["kind"], c["table"]) for c in record.conflicts}
    assert fingerprint(mysql_server, database) == after


# -- groups a server may write but rarely does, made of real events ------------------------------------


def _events(server, start: tuple[str, int]) -> list[bl.RawEvent]:
    source = bl.BinlogSource({"host": server.host, "port": server.port, "user": server.user,
                              "password": server.password}, 0x7F00_0002, bl.BinlogPosition(*start), blocking=False)
    try:
        return list(source.events())
    finally:
        source.close()


def _group(events: list[bl.RawEvent], table: str) -> list[bl.RawEvent]:
    """The GTID group (GTID event to XID) whose table map names ``table``."""
    start = None
    for i, event in enumerate(events):
        if event.type == bl.MARIADB_GTID_EVENT:
            start = i
        elif event.type == bl.XID_EVENT and start is not None:
            group = events[start:i + 1]
            if any(e.type == bl.TABLE_MAP_EVENT and table.encode() in e.body for e in group):
                return group
    raise AssertionError(f"no group for {table}")


def test_odd_groups_are_kept_flagged_and_named_by_the_planner(mysql_server, database, tmp_path):
    with mysql_server.connect() as conn:
        start = current_binlog_position(conn)
    mysql_server.query(f"CREATE TABLE `{database}`.u (id INT PRIMARY KEY, v INT)")
    mysql_server.query(f"CREATE TABLE `{database}`.w (id INT PRIMARY KEY, v INT)")
    mysql_server.query(f"INSERT INTO `{database}`.u VALUES (1, 1)")
    mysql_server.query(f"INSERT INTO `{database}`.w VALUES (1, 1)")
    events = _events(mysql_server, start)
    u_group, w_group = _group(events, "u"), _group(events, "w")
    store = ChangeStore(tmp_path / "changes.db")
    store.start_capture(*start, 0)
    assembler = TransactionAssembler(store, lambda schema, table: [])
    rows_u = next(e for e in u_group if e.type in bl.ROWS_EVENTS)
    compressed = bl.RawEvent(bl.MARIADB_WRITE_ROWS_COMPRESSED, rows_u.timestamp, rows_u.server_id,
                             rows_u.log_file, rows_u.end_pos, rows_u.body, size=rows_u.size)
    # 1. u's group without its XID, then w's group: u is kept, flagged unterminated
    # 2. rows with no GTID before them (table map, rows, XID): a group of their own
    # 3. u's group with its rows event replaced by a compressed one: kept, flagged uncaptured
    # 4. an incident (what a server logs when it could not log a change): its own, flagged
    message = b"the server could not write a change to the binlog"
    last = u_group[-1]
    incident = bl.RawEvent(INCIDENT_EVENT, last.timestamp, last.server_id, last.log_file, last.end_pos + 100,
                           b"\x01\x00" + bytes([len(message)]) + message, size=100)
    sequence = (u_group[:-1] + w_group + [e for e in u_group if e.type != bl.MARIADB_GTID_EVENT]
                + [compressed if e is rows_u else e for e in u_group] + [incident])
    for event in sequence:
        assembler.feed(event)
    store.commit_pending()
    stored = list(store.transactions())
    assert [sorted(t.flags) for t in stored] == [[FLAG_UNTERMINATED], [], [FLAG_IMPLICIT], [FLAG_UNCAPTURED],
                                                 [FLAG_INCIDENT]]
    assert [t.tables for t in stored] == [(f"{database}.u",), (f"{database}.w",), (f"{database}.u",),
                                          (f"{database}.u",), ()]
    assert [t.n_changes for t in stored] == [1, 1, 1, 0, 0]
    assert message.decode() in stored[-1].statements[0]
    # the group that never ended stops where the next one begins: resuming there loses nothing
    assert (stored[0].end_file, stored[0].end_pos) == (stored[1].start_file, stored[1].start_pos)
    plan = build_plan(store, 0, flavor="mariadb")
    assert {(c.kind, c.table) for c in plan.conflicts} == {("unterminated", f"{database}.u"),
                                                           ("uncaptured", f"{database}.u"), ("incident", None)}
    store.close()
