"""Backfill: the server's binlogs from before capture started, read beside the live stream.

The server's binlogs usually hold days of row images already. At its first start (an empty
change store) the live stream starts at the server's current position at once, and reserves
below its own numbers a range of LSNs, txn ids and segment ids big enough for every binlog byte
before that position (``ChangeStore.start_capture(..., history_bytes=history_bytes(...))``,
store.py). The history reader (historyreader.py), a process of its own on a replication
connection of its own, then reads from the start of the newest binlog file created at or before
the start of the backtrack window (or the oldest file the server has) up to the live stream's
start position, and writes into that range: LSN order and txn id order stay binlog order, and
every reader of the store works unchanged.

The live stream never waits for it: its lag is what it is without a backfill. The earliest
backtrack time stays at the start of capture until the whole history is stored, then moves back
at once to the start file's creation time (history is read oldest first; a window that claimed
part of it would stand over a hole). A backtrack to a time in history not yet read is refused
with that said (backtrack.py). The reader has its own checkpoint (``meta``,
``ChangeStore.history_checkpoint``): a restart resumes it, no gap, no duplicate. The streamer
starts it (``BackfillProcess``) and starts it again when it dies; the streamer's supervisor
keeps the streamer itself running.

What cannot be inverted in that history is reported as the conflicts that already exist (DDL and
statement-format DML, images that are not FULL), by the planner. A file purged before the reader
got to it ends the backfill ('lost'): the earliest time stays where it is.

Progress: when the reader fixes its start, ``record_plan`` writes what it is to read into the
store's meta ('backfill': the files and their sizes from the start position up to the live
start); ``progress`` compares the reader's checkpoint with it (no server needed), for
``auroratrack status`` and /metrics.

Only at a first start: after a gap the streamer resumes at the oldest binlog file the server
still has (``Streamer._record_gap``), on the live connection, which is all the history there is.

Reads the server (SHOW BINARY LOGS, and the format description at the start of each file it
considers, over a short non-blocking binlog dump); writes only the store's meta.

Measured (bench/backfill_bench.py, 2 loaded cores, one live write every 50 ms): while 1,000,000
row changes of history are read, the live lag stays at p50 0.035 s, p99 0.16-0.38 s, max 0.2-0.5 s
(bulk or 10-row transactions), and the history costs the same CPU per row change as live capture
(ratio 0.8-1.03). docs/benchmarks.md has the table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

from proxy.changelog import binlog as bl
from proxy.changelog.store import HISTORY_CHECKPOINT_KEY, ChangeStore

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
        log.info("backfill: history starts at %s:4 (created %s), %d binlog file(s) of history",
                 chosen.log_file, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(chosen.since_us / 1e6)),
                 len(files) - files.index(chosen.log_file))
    return chosen


META_KEY = "backfill"
# The history reader's replication connection: a server_id of its own beside the live stream's
# (the server ends an older dump of the same server_id).
SERVER_ID_BIT = 0x20000000


def history_bytes(conn: pymysql.Connection, until: tuple[str, int]) -> int:
    """The binlog bytes before ``until`` on the server: the most history a backfill can read."""
    return sum(size for name, size in binary_log_sizes(conn) if name < until[0]) + until[1]


def record_plan(store: ChangeStore, conn: pymysql.Connection, start: BackfillStart,
                until: tuple[str, int]) -> None:
    """Remember what this backfill reads: from ``start`` up to ``until`` (the live stream's
    start), with each file's size, so ``progress`` can say how far it got; and put the history
    reader's checkpoint at ``start``, in the same SQLite transaction."""
    files = [[name, size] for name, size in binary_log_sizes(conn) if start.log_file <= name < until[0]]
    files.append([until[0], until[1]])
    store.db.execute("BEGIN IMMEDIATE")
    store.set_meta(META_KEY, json.dumps({"from": [start.log_file, start.log_pos], "until": list(until),
                                         "files": files, "since_us": start.since_us,
                                         "started_at": time.time()}))
    store.set_meta(HISTORY_CHECKPOINT_KEY, json.dumps([start.log_file, start.log_pos, None, None]))
    store.db.execute("COMMIT")


def record_lost(store: ChangeStore, reason: str) -> None:
    """The history cannot be read to its end (a file was purged first): say so in the plan."""
    plan = json.loads(store.get_meta(META_KEY) or "{}")
    plan["lost"] = reason
    store.set_meta(META_KEY, json.dumps(plan))


def record_finished(store: ChangeStore, wall_s: float, cpu_s: float, transactions: int) -> None:
    """What the reader's last run took (the run that finished), kept in the plan."""
    plan = json.loads(store.get_meta(META_KEY) or "{}")
    plan["last_run"] = {"wall_s": round(wall_s, 3), "cpu_s": round(cpu_s, 3), "transactions": transactions}
    store.set_meta(META_KEY, json.dumps(plan))


def progress(store: ChangeStore) -> dict | None:
    """How far the backfill got: state 'starting' until the reader fixed its start, 'reading'
    until its checkpoint reaches the live stream's start, then 'done' ('lost' when a file was
    purged first); None when this store never backfilled."""
    history = store.history_range()
    raw = store.get_meta(META_KEY)
    if history is None and not raw:
        return None
    if not raw:  # reserved, the reader has not fixed its start yet
        until = f"{history.until[0]}:{history.until[1]}"
        return {"state": "done" if history.done else "starting", "from": None, "until": until,
                "position": None, "bytes_read": 0, "bytes_total": 0, "reached_time_us": None,
                "history_since_us": None}
    plan = json.loads(raw)
    # Stores from before the history reader: the history went through the live checkpoint.
    checkpoint = store.history_checkpoint() if history is not None else store.checkpoint()
    until = tuple(plan["until"])
    at = (checkpoint.log_file, checkpoint.log_pos) if checkpoint else tuple(plan["from"])
    total = sum(size for _, size in plan["files"]) - plan["from"][1]
    done_bytes = sum(size for name, size in plan["files"] if name < at[0]) + (at[1] if at[0] <= until[0] else 0)
    done_bytes = max(0, min(total, done_bytes - plan["from"][1]))
    finished = history.done if history is not None else at >= until
    state = "lost" if plan.get("lost") else "done" if finished else "reading"
    return {
        "state": state,
        "from": f"{plan['from'][0]}:{plan['from'][1]}", "until": f"{until[0]}:{until[1]}",
        "position": f"{at[0]}:{at[1]}",
        "bytes_read": total if state == "done" else done_bytes, "bytes_total": total,
        # The newest commit read so far: the history from its start up to here is in.
        "reached_time_us": checkpoint.last_commit_time_us if checkpoint else None,
        "history_since_us": plan["since_us"],
        **({"lost": plan["lost"]} if plan.get("lost") else {}),
    }


class BackfillProcess:
    """The history reader's process (historyreader.py), started by the streamer beside itself and
    started again (with backoff) when it dies before the history is in.

    A process, not a thread: reading history is CPU work in Python, and a thread would take the
    GIL from the live stream. Started as ``python -m proxy.changelog.historyreader`` with the
    streamer's configuration on its stdin (pickled: the password never shows in a process
    list), in a session of its own (its own CPU share, lowered: the live stream comes first)."""

    def __init__(self, config, log_level: str = "INFO", log_format: str = "text"):
        self.config = config
        self.log_level = log_level
        self.log_format = log_format
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._backoff = 1.0
        self._next_start = 0.0
        # ``watch`` runs in the streamer's watch thread, ``stop`` in its main one: no start after a stop.
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if not self._stopped:
                self._start()

    def _start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen([sys.executable, "-m", "proxy.changelog.historyreader"],
                                        stdin=subprocess.PIPE, env=env, start_new_session=True)
        with contextlib.suppress(OSError):
            self.process.stdin.write(pickle.dumps((self.config, self.log_level, self.log_format)))
            self.process.stdin.close()
        log.info("backfill: history reader started (pid %d)", self.process.pid)

    def watch(self, history_done: bool) -> bool:
        """Start the reader again if it died before the history was in; False once there is
        nothing more to watch (it finished)."""
        process = self.process
        if process is None or process.poll() is None:
            return True
        if history_done or process.returncode == 0:
            self.process = None
            return False
        now = time.monotonic()
        if not self._next_start:
            log.error("backfill: the history reader exited (code %d); starting it again in %.0f s",
                      process.returncode, self._backoff)
            self._next_start = now + self._backoff
            self._backoff = min(self._backoff * 2, 30.0)
        elif now >= self._next_start:
            self._next_start = 0.0
            self.restarts += 1
            self.start()
        return True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
