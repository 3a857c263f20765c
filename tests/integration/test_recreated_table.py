"""A table dropped and created again the same way gets a new table id from the server, with a
table map otherwise byte-identical to the old one. The change store used to file both under one
map, and every rows event of the new table then failed to decode ("decoded with the table map of
id ..."): `auroratrack changes` and the backtrack planner both broke. Found by running the
README's walk-through twice on one server."""

from __future__ import annotations

from proxy.changelog.store import ChangeStore
from proxy.changes import ChangeFilter, list_changes, transaction_rows
from tests.integration.backtrack_support import backtrack, connect_via, fingerprint, wait_captured

CREATE = "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40))"


def test_table_created_again_decodes_and_backtracks(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    with client.cursor() as cur:
        cur.execute(CREATE)
        cur.execute("INSERT INTO orders VALUES (1, 'ada'), (2, 'grace')")
        cur.execute("DROP TABLE orders")
        cur.execute(CREATE)
        cur.execute("INSERT INTO orders VALUES (3, 'linus'), (4, 'barbara')")
    wait_captured(svc, mysql_server)
    before = fingerprint(mysql_server, database)
    with client.cursor() as cur:
        cur.execute("DELETE FROM orders")
    wait_captured(svc, mysql_server)

    store = ChangeStore(svc.service.config.store_path, readonly=True)
    try:
        found = list_changes(store, ChangeFilter(table=f"{database}.orders", limit=10))
        assert [t["operations"] for t in found][:2] == [["delete"], ["insert"]]
        deleted = transaction_rows(store, found[0]["txn_id"])["changes"]
        assert sorted(row["before"]["customer"] for row in deleted) == ["barbara", "linus"]
    finally:
        store.close()

    record = backtrack(svc, f"lsn:{found[0]['first_lsn']}")
    assert record.status == "completed", record.error
    assert fingerprint(mysql_server, database) == before
