"""Backfill: where capture starts on its first run, so that history from before auroratrack counts.

The server's binlogs usually hold days of row images already. At its first start (an empty
change store) the streamer asks ``start_position`` where to begin instead of the server's current
position: the start of the newest binlog file created at or before the start of the backtrack
window (or the oldest file the server has, when its history is shorter than the window). Capture
then reads from there exactly as it catches up after a restart, and the earliest backtrack time
is that file's creation time: every transaction committed after it is in the files read.

What cannot be inverted in that history is reported as the conflicts that already exist (DDL and
statement-format DML, images that are not FULL, a gap where a file is purged while it is read),
by the planner, so the earliest backtrack time says where the exact part begins.

Reads the server (SHOW BINARY LOGS, and the format description at the start of each file it
considers, over a short non-blocking binlog dump); writes nothing. Limit: the history is read
before the live stream, on the same connection, so while it is read capture lags by the time it
takes (about 1 s per 500,000 row changes, see bench/capture_bench.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pymysql

from proxy.changelog import binlog as bl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillStart:
    log_file: str
    log_pos: int
    since_us: int  # the file's creation time: the earliest exact backtrack time


def binary_logs(conn: pymysql.Connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("/* auroratrack backfill */ SHOW BINARY LOGS")
        return [row[0] for row in cur.fetchall()]


def file_created_s(connection_settings: dict, server_id: int, log_file: str) -> int | None:
    """When ``log_file`` was created: the timestamp of its format description event (None when
    the server cannot send it, e.g. the file was purged meanwhile)."""
    source = bl.BinlogSource(connection_settings, server_id, bl.BinlogPosition(log_file, 4),
                             blocking=False, send_annotate_rows=False)
    try:
        for event in source.events():
            if event.type == bl.FORMAT_DESCRIPTION_EVENT and event.timestamp:
                return event.timestamp
            if event.type not in (bl.ROTATE_EVENT, bl.FORMAT_DESCRIPTION_EVENT):
                return event.timestamp or None
    except (bl.StreamLost, pymysql.MySQLError) as exc:
        log.info("backfill: cannot read the start of %s (%s)", log_file, exc)
    finally:
        source.close()
    return None


def start_position(conn: pymysql.Connection, connection_settings: dict, server_id: int,
                   window_s: float | None, now_s: float | None = None) -> BackfillStart | None:
    """Where a first capture starts to take the server's history within ``window_s`` (all of it
    when None); None when the server has no binlog file to read."""
    files = binary_logs(conn)
    window_start = None if window_s is None else (now_s or time.time()) - window_s
    chosen: BackfillStart | None = None
    for log_file in reversed(files):  # newest first: stop at the first file old enough
        created = file_created_s(connection_settings, server_id, log_file)
        if created is None:
            break  # purged under us: what we have so far is the oldest readable
        chosen = BackfillStart(log_file, 4, created * 1_000_000)
        if window_start is not None and created <= window_start:
            break
    if chosen is not None:
        log.info("backfill: capture starts at %s:4 (created %s), %d binlog file(s) of history",
                 chosen.log_file, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(chosen.since_us / 1e6)),
                 len(files) - files.index(chosen.log_file))
    return chosen
