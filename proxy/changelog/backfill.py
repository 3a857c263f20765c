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

Progress: when backfill starts, ``record_plan`` writes what it is to read into the store's
meta ('backfill': the files and their sizes from the start position up to the server's position
at that moment); ``progress`` compares the checkpoint with it (no server needed), for
``auroratrack status`` and /metrics.

Only on an empty store, never "after a gap": the store is LSN-ordered and LSN order is binlog
order, so history older than what the store holds would need LSNs below ones already given (and
below a gap already recorded). After a gap nothing is left to backfill anyway: the streamer
resumes at the oldest binlog file the server still has (``Streamer._record_gap``), which is all
the history there is.

Reads the server (SHOW BINARY LOGS, and the format description at the start of each file it
considers, over a short non-blocking binlog dump); writes only the store's meta.

Limit: the history is read before the live stream, on the same connection, so while it is read
capture lags by the time it takes; the earliest backtrack time is the start file's creation time
from the first moment (the store's LSN order is binlog order: nothing can be written below the
live stream's LSNs), and a backtrack waits (or is refused) until capture has caught up with the
server. Measured (bench/backfill_bench.py, 2 loaded cores): the same reading cost per row change
as live capture; 1,000,000 row changes in bulk transactions take ~1.5 s (live lag up to that),
in 10-row transactions ~200,000 row changes per CPU-second, i.e. ~5 s of lag per million.
Reading history beside the live stream (a second replication connection bounded by the live
start, into an LSN and txn-id range reserved below the live one, per file newest first so the
earliest time moves back file by file) is the way to lift it; it is not built.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pymysql

from proxy.changelog import binlog as bl
from proxy.changelog.store import ChangeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillStart:
    log_file: str
    log_pos: int
    since_us: int  # the file's creation time: the earliest exact backtrack time


def binary_log_sizes(conn: pymysql.Connection) -> list[tuple[str, int]]:
    with conn.cursor() as cur:
        cur.execute("/* auroratrack backfill */ SHOW BINARY LOGS")
        return [(row[0], int(row[1])) for row in cur.fetchall()]


def binary_logs(conn: pymysql.Connection) -> list[str]:
    return [name for name, _ in binary_log_sizes(conn)]


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


META_KEY = "backfill"


def record_plan(store: ChangeStore, conn: pymysql.Connection, start: BackfillStart,
                until: tuple[str, int]) -> None:
    """Remember what this backfill reads: from ``start`` up to ``until`` (the server's position
    when it began), with each file's size, so ``progress`` can say how far it got."""
    files = [[name, size] for name, size in binary_log_sizes(conn) if start.log_file <= name < until[0]]
    files.append([until[0], until[1]])
    store.set_meta(META_KEY, json.dumps({"from": [start.log_file, start.log_pos], "until": list(until),
                                         "files": files, "since_us": start.since_us,
                                         "started_at": time.time()}))


def progress(store: ChangeStore) -> dict | None:
    """How far the backfill got: state 'reading' until the checkpoint reaches the position the
    server had when it began, then 'done'; None when this store never backfilled."""
    raw = store.get_meta(META_KEY)
    if not raw:
        return None
    plan = json.loads(raw)
    checkpoint = store.checkpoint()
    until = tuple(plan["until"])
    at = (checkpoint.log_file, checkpoint.log_pos) if checkpoint else tuple(plan["from"])
    total = sum(size for _, size in plan["files"]) - plan["from"][1]
    done_bytes = sum(size for name, size in plan["files"] if name < at[0]) + (at[1] if at[0] <= until[0] else 0)
    done_bytes = max(0, min(total, done_bytes - plan["from"][1]))
    finished = at >= until
    return {
        "state": "done" if finished else "reading",
        "from": f"{plan['from'][0]}:{plan['from'][1]}", "until": f"{until[0]}:{until[1]}",
        "position": f"{at[0]}:{at[1]}",
        "bytes_read": total if finished else done_bytes, "bytes_total": total,
        # The newest commit read so far: the history from the earliest backtrack time up to here is in.
        "reached_time_us": checkpoint.last_commit_time_us if checkpoint else None,
        "history_since_us": plan["since_us"],
    }
