"""Who waits on the backtrack's row locks while its early writes are open (DESIGN.md decision 14).

Role: reads InnoDB's lock tables on the upstream server, on a connection of its own, about one
transaction (the backtrack's, found by its connection id). It writes nothing; its one action is
``KILL CONNECTION`` of a client waiting on that transaction once the gate is closed: its
statement cannot finish before the backtrack commits, so the drain would otherwise wait for it
until its timeout. The client is dropped a little earlier than the others, and its work rolled
back, as every client's open work is at the pause.

What it can tell is sampled: ``information_schema.INNODB_LOCK_WAITS`` joined with ``INNODB_TRX``
every ``interval`` seconds. A client statement that waited on us for less than an interval may
be missed; each one seen is counted once (by connection and wait start). The server's own
counter, ``Innodb_row_lock_waits``, is global: its delta counts every row lock wait on the
server over the same time, ours or not. Both are reported as what they are. Why 0.25 s and not
less: the server refreshes its information_schema copy of InnoDB's transactions only when the
last read of it is at least 0.1 s old, so a faster poll would read the same stale copy forever.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable

import pymysql

log = logging.getLogger(__name__)

TAG = "/* auroratrack lock watch */ "
WAITERS_SQL = (
    TAG + "SELECT r.trx_mysql_thread_id, r.trx_wait_started, TIMESTAMPDIFF(MICROSECOND, r.trx_wait_started, NOW(6)) "
    "FROM information_schema.INNODB_LOCK_WAITS w "
    "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id "
    "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id "
    "WHERE b.trx_mysql_thread_id = %s"
)


class LockWatch:
    """Samples the client statements waiting on connection ``thread_id``'s transaction."""

    def __init__(self, connect: Callable[[], pymysql.Connection], thread_id: int, interval: float = 0.25):
        self.connect = connect
        self.thread_id = thread_id
        self.interval = interval
        self.waits_seen: set[tuple[int, dt.datetime | None]] = set()
        self.longest_wait_s = 0.0
        self.error: str | None = None  # why the server could not tell (e.g. no PROCESS privilege)
        self._conn: pymysql.Connection | None = None
        self._row_lock_waits: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> LockWatch:
        """Begin sampling in a thread of its own (until ``stop``)."""
        try:
            self._conn = self.connect()
            self._row_lock_waits = self._status_row_lock_waits()
        except pymysql.MySQLError as exc:
            self.error = f"{exc.args[-1] if exc.args else exc}"
            return self
        self._thread = threading.Thread(target=self._sample_loop, name="auroratrack-lock-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        """Stop sampling; what was seen, for the backtrack's record."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        report: dict = {"client_waits_seen": len(self.waits_seen),
                        "longest_client_wait_seen_s": round(self.longest_wait_s, 3),
                        "waits_sampled_every_s": self.interval}
        if self._row_lock_waits is not None and self.error is None:
            with contextlib.suppress(pymysql.MySQLError):
                report["server_row_lock_waits_delta"] = self._status_row_lock_waits() - self._row_lock_waits
        if self.error:
            report["lock_watch_error"] = self.error
        return report

    def kill_waiters(self) -> list[int]:
        """``KILL CONNECTION`` every client waiting on our transaction; their connection ids."""
        if self._conn is None or self.error:
            return []
        killed = []
        for thread_id, _started, _waited_us in self._waiters():
            with contextlib.suppress(pymysql.MySQLError):  # it may have ended meanwhile
                with self._conn.cursor() as cur:
                    cur.execute(f"{TAG}KILL CONNECTION {int(thread_id)}")
                killed.append(int(thread_id))
        return killed

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                for thread_id, started, waited_us in self._waiters():
                    self.waits_seen.add((int(thread_id), started))
                    self.longest_wait_s = max(self.longest_wait_s, (waited_us or 0) / 1e6)
            except pymysql.MySQLError as exc:
                self.error = f"{exc.args[-1] if exc.args else exc}"
                log.warning("lock watch stopped: %s", self.error)
                return

    def _waiters(self) -> list[tuple]:
        with self._conn.cursor() as cur:
            cur.execute(WAITERS_SQL, (self.thread_id,))
            return list(cur.fetchall())

    def _status_row_lock_waits(self) -> int:
        with self._conn.cursor() as cur:
            cur.execute(TAG + "SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'")
            row = cur.fetchone()
        return int(row[1]) if row else 0
