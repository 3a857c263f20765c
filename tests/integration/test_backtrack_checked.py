"""The checked apply (rewind.Applier.apply_table_checked): the drift check rides on the
DELETE ... JOIN and UPDATE ... JOIN themselves, and every way it can stop falls back to the
detailed check, which names the rows, or to delete + insert when nothing is wrong."""

from __future__ import annotations

import pytest

from proxy import rewind
from tests.integration.backtrack_support import (
    backtrack,
    connect_via,
    fingerprint,
    now_iso,
    wait_captured,
)


def execute(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def test_rows_added_after_the_point_that_drifted_or_vanished_are_named(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'a')")
    wait_captured(svc, mysql_server)
    target_state = fingerprint(mysql_server, database)
    moment = now_iso()
    execute(client, "INSERT INTO t VALUES (2, 'b'), (3, 'c'), (4, 'd')",
            "SET SESSION sql_log_bin = 0", "UPDATE t SET v = 'B' WHERE id = 2", "DELETE FROM t WHERE id = 3",
            "SET SESSION sql_log_bin = 1")
    drifted = fingerprint(mysql_server, database)

    refused = backtrack(svc, moment)
    assert refused.status == "failed" and "conflict" in refused.error
    assert {(c["kind"], c["key"]) for c in refused.conflicts} == {("drift", "2"), ("missing", "3")}
    assert fingerprint(mysql_server, database) == drifted  # the checked DELETE was rolled back

    forced = backtrack(svc, moment, force=True)
    assert forced.status == "completed", forced.error
    assert fingerprint(mysql_server, database) == target_state


def test_in_place_update_that_collides_on_a_unique_key_falls_back(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, u INT NOT NULL, UNIQUE KEY (u))",
            "INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)")
    wait_captured(svc, mysql_server)
    target_state = fingerprint(mysql_server, database)
    moment = now_iso()
    # Rows 1 and 2 swap their unique values: updated back one by one, the first collides.
    execute(client, "UPDATE t SET u = 99 WHERE id = 1", "UPDATE t SET u = 10 WHERE id = 2",
            "UPDATE t SET u = 20 WHERE id = 1")
    wait_captured(svc, mysql_server)

    record = backtrack(svc, moment)
    assert record.status == "completed", record.error
    assert fingerprint(mysql_server, database) == target_state
    assert record.rows[f"{database}.t"] == {"delete": 0, "reinsert": 0, "restore": 2}


def test_writes_while_the_apply_is_prepared_are_undone_too(svc, mysql_server, database, monkeypatch):
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    wait_captured(svc, mysql_server)
    target_state = fingerprint(mysql_server, database)
    moment = now_iso()
    execute(client, "UPDATE t SET v = CONCAT(v, '1')", "INSERT INTO t VALUES (4, 'd')")
    wait_captured(svc, mysql_server)
    prepare = rewind.Applier.prepare

    def prepare_then_write(self, plan, only_missing=False):
        prepare(self, plan, only_missing=only_missing)
        if only_missing:
            return  # in the pause: clients are held
        # A client writes after the temporary tables were loaded, before the pause: those
        # tables are stale, and the changes must be folded in and undone as well.
        with mysql_server.connect(database) as late, late.cursor() as cur:
            cur.execute("UPDATE t SET v = CONCAT(v, '2') WHERE id IN (1, 4)")
            cur.execute("DELETE FROM t WHERE id = 2")
            cur.execute("INSERT INTO t VALUES (5, 'e')")

    monkeypatch.setattr(rewind.Applier, "prepare", prepare_then_write)
    record = backtrack(svc, moment)
    assert record.status == "completed", record.error
    assert fingerprint(mysql_server, database) == target_state
    assert record.rows[f"{database}.t"] == {"delete": 2, "reinsert": 1, "restore": 2}


@pytest.fixture(params=["insert", "load_data"])
def bulk_writes(request, monkeypatch) -> str:
    """The applier's bulk writes, every one of them: multi-row INSERTs, or LOAD DATA LOCAL."""
    monkeypatch.setattr(rewind, "LOAD_DATA_MIN_ROWS", 1 if request.param == "load_data" else 1 << 62)
    return request.param


def test_a_row_the_log_says_is_gone_but_exists_is_named(svc, mysql_server, database, bulk_writes):
    """The checked apply re-inserts deleted rows without looking for them first: a row written
    back outside the binlog collides on its key, with INSERT (an error) and with LOAD DATA LOCAL
    (a skipped row and a warning) alike."""
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
            "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    wait_captured(svc, mysql_server)
    target_state = fingerprint(mysql_server, database)
    moment = now_iso()
    execute(client, "DELETE FROM t WHERE id IN (2, 3)",
            "SET SESSION sql_log_bin = 0", "INSERT INTO t VALUES (3, 'unlogged')", "SET SESSION sql_log_bin = 1")
    drifted = fingerprint(mysql_server, database)

    refused = backtrack(svc, moment)
    assert refused.status == "failed" and "conflict" in refused.error
    assert {(c["kind"], c["key"]) for c in refused.conflicts} == {("unexpected", "3")}
    assert fingerprint(mysql_server, database) == drifted  # row 2's re-insert was rolled back

    forced = backtrack(svc, moment, force=True)
    assert forced.status == "completed", forced.error
    assert fingerprint(mysql_server, database) == target_state


def test_restored_keys_that_collide_in_the_tables_collation_are_named(svc, mysql_server, database, bulk_writes):
    """Writes the binlog never saw can leave two restored rows whose keys the log keeps apart but
    the table's collation does not ('a' and 'A'): the keyed temporary table cannot hold both,
    and the backtrack still names the drift instead of failing on the duplicate."""
    client = connect_via(svc, mysql_server, database)
    execute(client, "CREATE TABLE t (k VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci PRIMARY KEY, "
                    "v INT)", "INSERT INTO t VALUES ('a', 1)")
    wait_captured(svc, mysql_server)
    moment = now_iso()
    execute(client, "UPDATE t SET v = 2 WHERE k = 'a'",
            "SET SESSION sql_log_bin = 0", "DELETE FROM t WHERE k = 'a'", "INSERT INTO t VALUES ('A', 3)",
            "SET SESSION sql_log_bin = 1", "UPDATE t SET v = 4 WHERE k = 'A'")
    drifted = fingerprint(mysql_server, database)

    refused = backtrack(svc, moment)
    assert refused.status == "failed" and "conflict" in refused.error, refused.error
    assert "drift" in {c["kind"] for c in refused.conflicts}
    assert fingerprint(mysql_server, database) == drifted
