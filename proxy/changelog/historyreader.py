"""The history reader: the backfill's own process, reading the server's older binlogs beside the
live stream into the range of the change store reserved for them (backfill.py says why).

From its checkpoint (``ChangeStore.history_checkpoint``) up to the live stream's start position
(``HistoryRange.until``) on a replication connection of its own (server_id with
``backfill.SERVER_ID_BIT``), with the streamer's own transaction assembly (``Streamer``,
``TransactionAssembler``): what the live stream stores for a transaction, this stores for an
older one, numbered in the reserved range and without the position clock (history's MariaDB
commit times are their second, as after a restart). At the end the earliest backtrack time moves
back (``ChangeStore.finish_history``) and the process exits 0. Its store writes in short bursts
of at most ``HISTORY_GROUP_MAX_S`` of reading (store.py), so the live stream's commits barely
wait for it; it runs at a lower CPU priority (``NICE``), so on a busy machine it takes longer
rather than take the live stream's or the relay's CPU.

Reads the server; writes only the change store's history range and its meta. Started by the
streamer (``backfill.BackfillProcess``) as ``python -m proxy.changelog.historyreader`` with its
configuration pickled on stdin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import pickle
import sys
import threading
import time

import pymysql

from proxy.changelog import backfill, stopsignal
from proxy.changelog import binlog as bl
from proxy.changelog.store import ChangeStore, now_us
from proxy.changelog.streamer import (
    Streamer,
    StreamerConfig,
    TransactionAssembler,
    _stop_with_parent,
    stable_server_id,
)

log = logging.getLogger(__name__)

HISTORY_GROUP_MAX_S = 0.02  # reading gathered into one burst of writes, at most
NICE = 10  # below the live stream and the relay on a busy machine
WAIT_FOR_RESERVATION_S = 60.0


class HistoryReader(Streamer):
    """Reads history from its checkpoint to the live start, resuming after a broken connection."""

    def __init__(self, config: StreamerConfig, stop: threading.Event | None = None):
        super().__init__(dataclasses.replace(config, status_path=None, backfill=False), stop)
        self.server_id = (config.server_id or stable_server_id(config.store_path)) ^ backfill.SERVER_ID_BIT
        self.store.group_max_s = HISTORY_GROUP_MAX_S

    def _open_store(self) -> ChangeStore:
        return ChangeStore(self.config.store_path, history_writer=True)

    def run(self) -> None:
        history = self.store.history_range()
        if history.done:
            return
        plan = backfill.progress(self.store)
        if plan["state"] == "starting" and not self._fix_start(history.until):
            return
        plan = backfill.progress(self.store)
        if plan["state"] == "lost":
            return
        # No position clock: a history commit's time is the one its events carry.
        self.assembler = TransactionAssembler(self.store, self._generated_columns, group_commit=True,
                                              transactional=self._transactional)
        self._wal_thread = threading.Thread(target=self._checkpoint_wal, args=(self._open_store(),),
                                            name="auroratrack-history-wal", daemon=True)
        self._wal_thread.start()
        self._began = (time.monotonic(), time.process_time())
        backoff = 0.1
        while not self.stop.is_set():
            try:
                if self._read_once(history.until):
                    self._finish(plan)
                    return
                backoff = 0.1
            except (bl.StreamLost, pymysql.MySQLError, OSError, bl.EventsMissing) as exc:
                if self._is_purged(exc):
                    backfill.record_lost(self.store, str(exc))
                    self.store.finish_history(None)
                    log.warning("backfill lost: the server purged history before it was read (%s); the "
                                "earliest backtrack time stays at the start of capture", exc)
                    return
                log.error("backfill: binlog stream interrupted (%s: %s); resuming in %.1f s",
                          type(exc).__name__, exc, backoff)
            finally:
                self.assembler.reset_stream()
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _fix_start(self, until: tuple[str, int]) -> bool:
        """Find where history starts and record the plan; False when there is none to read."""
        start = backfill.start_position(self._control_conn(), self._connection_settings(), self.server_id,
                                        self.config.window_s)
        if start is None or (start.log_file, start.log_pos) >= until:
            log.info("backfill: no history before %s:%d to read", *until)
            self.store.finish_history(None)
            return False
        backfill.record_plan(self.store, self._control_conn(), start, until)
        return True

    def _read_once(self, until: tuple[str, int]) -> bool:
        """Read from the checkpoint; True once everything up to ``until`` is stored."""
        checkpoint = self.store.checkpoint()
        if (checkpoint.log_file, checkpoint.log_pos) >= until:
            return True
        source = bl.BinlogSource(self._connection_settings(), self.server_id,
                                 bl.BinlogPosition(checkpoint.log_file, checkpoint.log_pos), blocking=False,
                                 on_idle=self.store.commit_pending)
        self._source = source
        assembler, feed, stop, store = self.assembler, self.assembler.feed, self.stop, self.store
        pause = self.config.backfill_pause_s
        try:
            for event in source.events():
                feed(event)
                if assembler.txn is None:
                    if assembler.position >= until:
                        store.commit_pending()
                        return True
                    if stop.is_set():
                        return False
                    if pause:
                        store.commit_pending()
                        time.sleep(pause)
        except Exception:
            if stop.is_set():
                return False
            raise
        finally:
            store.commit_pending()
            with contextlib.suppress(Exception):
                source.close()
        raise bl.StreamLost(f"the binlog ended before {until[0]}:{until[1]}")

    def _finish(self, plan: dict) -> None:
        wall_s, cpu_s = time.monotonic() - self._began[0], time.process_time() - self._began[1]
        backfill.record_finished(self.store, wall_s, cpu_s, self.assembler.committed)
        earliest = self.store.finish_history(plan["history_since_us"])
        log.info("backfill done: history from %s to %s read (%d binlog bytes, %d transactions, %.1f s, "
                 "%.1f CPU-s in this run); earliest backtrack time now %s",
                 plan["from"], plan["until"], plan["bytes_total"], self.assembler.committed, wall_s, cpu_s,
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((earliest or now_us()) / 1e6)))


def _lower_priority() -> None:
    """Give the live stream and the relay the CPU first: this session's autogroup (Linux) and
    this process both get a lower weight."""
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as autogroup:
        autogroup.write(str(NICE))
    with contextlib.suppress(OSError):
        os.nice(NICE)


def main() -> int:
    """Entry point: the streamer's configuration comes pickled on stdin (backfill.BackfillProcess)."""
    from proxy.logs import configure_logging

    config, log_level, log_format = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - our parent wrote it
    parent = os.getppid()
    configure_logging(log_level, log_format)
    _lower_priority()
    # One reader at a time: one started again after the streamer's restart waits for the one
    # its parent's death is stopping (opening the history range trims its segment files).
    lock = open(config.store_path.with_name(config.store_path.name + ".backfill.lock"), "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    reader = None
    deadline = time.monotonic() + WAIT_FOR_RESERVATION_S
    while reader is None:  # the streamer reserves the range as it starts: a restart may come first
        try:
            reader = HistoryReader(config)
        except ValueError:
            if time.monotonic() > deadline:
                log.error("backfill: no history range reserved in %s", config.store_path)
                return 1
            time.sleep(0.2)
    stopsignal.install(reader.request_stop)
    _stop_with_parent(reader.request_stop, parent)
    try:
        reader.run()
    finally:
        reader.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
