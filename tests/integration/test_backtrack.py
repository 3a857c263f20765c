"""Backtrack against a real server, clients through the proxy: the story, big undos, conflicts,
refusals and backtracking back and forth."""

from __future__ import annotations

import time

import pymysql
import pytest

from proxy.backtrack import BacktrackRefused, BacktrackRequest
from tests.integration.backtrack_support import (
    backtrack,
    capturing_service,
    connect_via,
    fingerprint,
    now_iso,
    wait_captured,
)


@pytest.fixture
def svc(make_proxy, tmp_path):
    service = capturing_service(make_proxy, tmp_path / "data")
    time.sleep(0.3)  # let the streamer take its start position
    return service


def test_delete_without_where_is_undone(svc, mysql_server, database):
    client = connect_via(svc, mysql_server, database)
    with client.cursor() as cur:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2), "
                    "placed DATETIME(6), note TEXT)")
        cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, NOW(6), %s)",
                        [(i, f"customer {i}", i * 1.25, "x" * (i % 50)) for i in range(1, 1001)])
    wait_captured(svc, mysql_server)
    before = fingerprint(mysql_server, database)
    moment = now_iso()
    with client.cursor() as cur:
        cur.execute("DELETE FROM orders")
    assert fingerprint(mysql_server, database)["orders"] == []

    record = backtrack(svc, moment)

    assert record.status == "completed", record.error
    assert fingerprint(mysql_server, database) == before
    assert record.rows[f"{database}.orders"]["reinsert"] == 1000
    assert [s["name"] for s in record.steps][:3] == ["pause", "drain", "drop"]
    with pytest.raises(pymysql.err.OperationalError):  # the session was dropped
        client.cursor().execute("SELECT 1")
    client = connect_via(svc, mysql_server, database)  # what a driver's reconnect does
    with client.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM orders")
        assert cur.fetchone()[0] == 1000
