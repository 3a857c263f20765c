"""Helpers shared by the tests of DDL through the proxy: what a client sees of a scenario, and
which tables are held."""

from __future__ import annotations

from collections.abc import Callable

import mysql.connector

from proxy.ddlops import HOLD_SCHEMA
from tests.integration.rawmysql import ServerError


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


def raw_script_answers(conn, scripts: list[str], db: str) -> list[bytes]:
    """Every packet of each multi-statement script's answer, as a RawConnection reads it (the
    database's name replaced by as many D's, so two same-length databases compare equal)."""
    seen: list[bytes] = []
    read = conn.read_packet

    def recording() -> bytes:  # every packet the client reads, as it came
        packet = read()
        seen.append(packet)
        return packet

    conn.read_packet = recording
    out = []
    for script in scripts:
        seen.clear()
        try:
            conn.query(script)  # follows SERVER_MORE_RESULTS_EXISTS to the last result
        except ServerError:
            pass  # an ERR ends the answer; it is among the packets compared
        out.append(b"|".join(seen).replace(db.encode(), b"D" * len(db)))
    return out
