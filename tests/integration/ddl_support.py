"""Helpers shared by the tests of DDL through the proxy: what a client sees of a scenario, and
which tables are held."""

from __future__ import annotations

from collections.abc import Callable

import mysql.connector

from proxy.ddlops import HOLD_SCHEMA


def held_tables(server) -> set[str]:
    """The table names in the hold schema now."""
    return {r[0] for r in server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                                       (HOLD_SCHEMA,))}


def connector_answers(conn, scenario: list[str], database: str,
                      special: dict[str, Callable[[], None]] | None = None) -> list[tuple]:
    """What a mysql-connector client sees of each statement of ``scenario``: its rows, affected
    rows and warnings, or its error; ``database``'s name replaced, so two databases built the
    same way compare equal. A statement named in ``special`` is not sent: its action runs instead
    (a connection reset, say) and the cursor is made again."""
    special = special or {}
    seen = []
    cur = conn.cursor()
    for sql in scenario:
        if sql in special:
            special[sql]()
            cur = conn.cursor()
            continue
        try:
            cur.execute(sql)
            rows = cur.fetchall() if cur.with_rows else None
            seen.append((sql, rows, cur.rowcount, cur.warnings))
        except mysql.connector.Error as exc:
            seen.append((sql, exc.errno, exc.sqlstate, exc.msg))
    cur.close()
    return [tuple(str(v).replace(database, "D") for v in row) for row in seen]
