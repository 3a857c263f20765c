"""Helpers for backtrack tests: a capturing service, exact table fingerprints, waiting for capture."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pymysql

from proxy.backtrack import BacktrackRecord, BacktrackRequest
from proxy.changelog.store import wait_for_checkpoint
from proxy.changelog.streamer import current_binlog_position
from proxy.service import BackgroundService


def connect_via(svc: BackgroundService, server, database: str | None = None, **kwargs) -> pymysql.Connection:
    """A client connection through the proxy."""
    kwargs.setdefault("autocommit", True)
    return pymysql.connect(host="127.0.0.1", port=svc.port, user=server.user, password=server.password,
                           database=database, **kwargs)


def fingerprint(server, database: str) -> dict[str, list[tuple]]:
    """Every table's rows as the server's own bytes (HEX of each column), sorted."""
    result = {}
    with server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME", (database,))
        for (table,) in cur.fetchall():
            cur.execute("SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                        "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (database, table))
            exprs = [f"CAST(`{c}` AS DOUBLE)" if t in ("float", "double") else f"HEX(CAST(`{c}` AS BINARY))"
                     for c, t in cur.fetchall()]
            cur.execute(f"SELECT {', '.join(exprs)} FROM `{table}`")
            result[table] = sorted(cur.fetchall(), key=repr)
    return result


def wait_captured(svc: BackgroundService, server, timeout: float = 60.0) -> None:
    """Until the service's change store has everything the server has logged."""
    with server.connect() as conn:
        target = current_binlog_position(conn)
    try:
        wait_for_checkpoint(svc.service.config.store_path, target, timeout, poll_s=0.02)
    except TimeoutError:
        raise AssertionError(f"capture did not reach {target}") from None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def backtrack(svc: BackgroundService, to: str, timeout: float = 300.0, **options) -> BacktrackRecord:
    """Request a backtrack on the service and wait for its outcome."""
    backtracker = svc.service.backtracker
    record = svc.call(lambda: backtracker.request(BacktrackRequest(to=to, **options)))
    return svc.call(lambda: backtracker.wait(record.id, timeout), timeout=timeout + 10)


def capturing_service(make_proxy, data_dir: Path, **overrides) -> BackgroundService:
    svc = make_proxy(capture=True, data_dir=data_dir, backtrack_window_s=3600, **overrides)
    return svc
