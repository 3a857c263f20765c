"""The changelog streamer: the server's binlog -> committed transactions in the change store.

Reads the binlog from the store's checkpoint (``binlog.BinlogSource``), groups events into
committed transactions (GTID/BEGIN ... XID or COMMIT; standalone DDL; XA prepare + XA COMMIT),
gives every change record the next LSN, and hands each transaction to the store together with
the binlog position after it, in one SQLite transaction. Never writes to the server.

Robustness:
  * a lost connection or a server restart aborts the open (incomplete) transaction and resumes
    from the checkpoint with backoff: no gap, no duplicate;
  * a checkpoint whose binlog was purged is recorded as a gap, and capture goes on from the
    oldest binlog the server still has;
  * a transaction of any size streams into the store (no rows are held in memory), except a
    prepared XA transaction, which is kept until its outcome is known;
  * capture never stops on content: every group the server can write is stored as a
    transaction of its own with its position, or flagged so the planner names a conflict for the
    tables it touches (``FLAG_UNCAPTURED``: compressed events or partial JSON images, whose rows
    are not stored; ``FLAG_UNTERMINATED``: a group the server never ended; ``FLAG_INCIDENT``: the
    server logged that it lost changes; LOAD DATA logged as a statement). Rows the server logs
    outside BEGIN/COMMIT (non-transactional writes: ``CREATE TABLE ... SELECT``, Aria/MyISAM
    tables) end at the group's COMMIT/XID or at the next group, whichever comes first;
  * a group that ends in ROLLBACK, or holds ROLLBACK TO a savepoint (logged when a transaction
    touched something non-transactional), keeps only the non-transactional tables' rows: the
    rest never happened (``TransactionAssembler._rolled_back``).

Commit times: MySQL's GTID events carry microseconds ('us'). MariaDB's carry whole seconds;
while the streamer is live it refines them with its own receive time, clamped to that second
('refined'); when catching up it uses the start of the second ('s'). Never decreasing along LSNs.

It runs in a process of its own under ``auroratrack serve`` (``run_streamer_process``): row
capture is CPU work in Python, and a thread would take the GIL from the proxy's event loop.
With backfill, a first start begins live at the server's position, leaves room below for the
history, and starts the history reader beside itself (backfill.py, historyreader.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from proxy.changelog import backfill, stopsignal
from proxy.changelog import binlog as bl
from proxy.changelog.events import (
    classify_query,
    parse_mariadb_gtid,
    parse_mysql_gtid,
    parse_query,
    parse_rotate,
    parse_xa_prepare_xid,
    parse_xa_statement,
    rows_table_id,
    savepoint_name,
    table_map_names,
)
from proxy.changelog.positionclock import PositionClock
from proxy.changelog.store import ChangeRecord, ChangeStore, TransactionHeader, now_us
from proxy.serveradmin import UpstreamCredentials

log = logging.getLogger(__name__)

ORIGIN_SCHEMA = "auroratrack"  # a transaction writing here was made by a backtrack
ER_MASTER_FATAL_READING_BINLOG = 1236
MARIADB_FL_STANDALONE = 0x01
MARIADB_FL_PREPARED_XA = 0x40
MARIADB_FL_COMPLETED_XA = 0x80
MAX_STATEMENT_TEXT = 4096
MAX_STATEMENTS_PER_TXN = 32
# Flags of a transaction whose group carried changes the server rolled back (see
# ``TransactionAssembler._drop_rolled_back``). UNRESOLVED: some of them could not be told apart
# from committed ones; they are kept, and the planner reports the transaction as a conflict.
FLAG_ROLLED_BACK = "rolled_back"
FLAG_SAVEPOINT_ROLLBACK = "savepoint_rollback"
FLAG_ROLLBACK_UNRESOLVED = "rollback_unresolved"
# Flags of a group capture could not take whole (the planner names a conflict for each):
# UNCAPTURED: an event whose rows cannot be stored faithfully (compressed, partial JSON);
# UNTERMINATED: the next group began before this one's COMMIT/XID (it may have rolled back);
# IMPLICIT: rows the server logged without a GTID/BEGIN before them (kept, no conflict: the
# images are whole, only the group's start was not marked).
FLAG_UNCAPTURED = "uncaptured"
FLAG_UNTERMINATED = "unterminated"
FLAG_IMPLICIT = "implicit_group"
# Group commit waits this long for the next transaction before it commits the ones received:
# under a steady load (sysbench, 8 writers) commits then cover several transactions each, and
# capture spends less CPU per transaction, for at most this much more lag.
GROUP_LINGER_S = 0.002
# Capture reads the replication socket at most this often. Woken for every event (as a
# blocking read is), the streamer paid a wake-up, a read and a pass through the loop per event
# on the same two cores as the proxy, the server and its clients; reading what gathered in the
# kernel's buffer every 50 ms takes the same events in hundreds of times fewer reads, in one
# warm pass and one SQLite commit. Measured under sysbench oltp_read_write through haproxy, 8
# threads: streamer 18.9 -> 10.4 CPU us per query at 10 ms, 248 -> 167 CPU us per transaction
# from 10 to 50 ms. When a read finds nothing more waiting, the group commits before the pause:
# capture lags by at most 50 ms more, no more than the position clock's interval already allows
# a MariaDB commit time to be late (positionclock.py).
READ_PACE_S = 0.05
# Events the binlog module does not name (binlog.py stays the other capture's to extend).
EXECUTE_LOAD_QUERY_EVENT = 18  # LOAD DATA logged as a statement (a session's binlog_format)
INCIDENT_EVENT = 26  # the server could not log something: changes may be missing
_EXECUTE_LOAD_EXTRA = 13  # file_id, start_pos, end_pos, dup_handling after the query post-header
_LOAD_INTO = re.compile(rb"\bINTO\s+TABLE\s+((?:`[^`]+`|[\w$]+)(?:\s*\.\s*(?:`[^`]+`|[\w$]+))?)", re.IGNORECASE)
FLAG_INCIDENT = "incident"
# Unsupported events that are rows events underneath: their post-header names the table map.
_UNSUPPORTED_ROWS = frozenset({
    bl.MARIADB_WRITE_ROWS_COMPRESSED, bl.MARIADB_UPDATE_ROWS_COMPRESSED,
    bl.MARIADB_DELETE_ROWS_COMPRESSED, bl.MARIADB_WRITE_ROWS_COMPRESSED_V1, bl.MARIADB_UPDATE_ROWS_COMPRESSED_V1,
    bl.MARIADB_DELETE_ROWS_COMPRESSED_V1,
})


@dataclass(frozen=True)
class StreamerConfig:
    """What the streamer needs: where to read, where to write, how long to keep."""

    upstream: UpstreamCredentials
    store_path: Path
    server_id: int = 0  # 0: pick one from the store path (stable across restarts)
    window_s: float | None = 24 * 3600
    max_store_bytes: int | None = None
    heartbeat_s: float = 1.0  # an idle server's sign of life; each also wakes the position clock
    status_path: Path | None = None
    retention_every_s: float = 1.0
    backfill: bool = False  # first start: read the server's binlogs back to the window's start (backfill.py)
    backfill_pause_s: float = 0.0  # the history reader rests this long after each transaction


@dataclass
class _OpenTransaction:
    start_file: str
    start_pos: int
    gtid: str | None = None
    standalone: bool = False
    # The group ends with its own COMMIT/XID event, even after DDL: MariaDB's GTID without
    # FL_STANDALONE (``CREATE TABLE ... SELECT``: the CREATE, its rows, then XID or COMMIT),
    # MySQL's atomic ``CREATE TABLE ... START TRANSACTION``.
    explicit_end: bool = False
    xa_prepared: bool = False
    mysql_commit_us: int | None = None
    origin: str = "client"
    flags: set[str] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)
    statements: list[str] = field(default_factory=list)
    xa_records: list[ChangeRecord] = field(default_factory=list)
    n_records: int = 0
    # savepoint name -> where it was set: the store's next LSN (the index in ``xa_records`` for a
    # prepared XA transaction). Only logged savepoints: the server logs them (and ROLLBACK TO)
    # when the transaction touched something non-transactional.
    savepoints: dict[str, int] = field(default_factory=dict)


class TransactionAssembler:
    """Feeds on ``RawEvent``s in binlog order and writes committed transactions to the store.

    ``generated_columns(schema, table)`` tells which columns are generated (the binlog does not
    say); it is asked once per distinct table map. ``transactional(schema, table)`` tells whether
    a table's engine is transactional (None: cannot tell, e.g. the table is gone); it is asked
    only for a group that carries rolled-back changes, and cached until DDL touches the table.
    ``group_commit``: the caller calls
    ``store.commit_pending()`` whenever it would wait for the server, so each transaction's
    SQLite commit may be deferred while more are already received (see store.py)."""

    def __init__(self, store: ChangeStore, generated_columns: Callable[[str, str], list[str]],
                 clock_us: Callable[[], int] = now_us, position_clock: PositionClock | None = None,
                 group_commit: bool = False,
                 transactional: Callable[[str, str], bool | None] | None = None):
        self.store = store
        self.generated_columns = generated_columns
        self.transactional = transactional or (lambda schema, table: None)
        self._engine_cache: dict[str, bool | None] = {}  # "db.table" folded -> transactional?
        self.clock_us = clock_us
        self.group_commit = group_commit
        self.txn: _OpenTransaction | None = None
        self.table_maps: dict[int, tuple[int, str]] = {}  # binlog table id -> (store id, "db.t")
        self._generated_cache: dict[bytes, list[str]] = {}
        # Table map body (without the table id) -> (store id, "db.t"): every statement brings its
        # table map again, and parsing it each time is a measurable part of a small transaction.
        self._map_cache: dict[bytes, tuple[int, str]] = {}
        self._handlers: dict[int, Callable[[bl.RawEvent], None]] = {
            **dict.fromkeys(bl.ROWS_EVENTS, self._rows),
            bl.TABLE_MAP_EVENT: self._table_map,
            bl.XID_EVENT: self._commit,
            bl.QUERY_EVENT: self._query,
            bl.MARIADB_GTID_EVENT: self._mariadb_gtid,
            bl.GTID_EVENT: self._mysql_gtid,
            bl.ANONYMOUS_GTID_EVENT: self._mysql_gtid,
            bl.GTID_TAGGED_LOG_EVENT: self._mysql_gtid,
            bl.MARIADB_ANNOTATE_ROWS_EVENT: self._annotate_rows,
            bl.ROWS_QUERY_EVENT: self._rows_query,
            bl.XA_PREPARE_EVENT: self._xa_prepare,
            bl.ROTATE_EVENT: self._rotate,
            EXECUTE_LOAD_QUERY_EVENT: self._execute_load_query,
            INCIDENT_EVENT: self._incident,
            **dict.fromkeys(bl.UNSUPPORTED_EVENTS, self._unsupported),
        }
        checkpoint = store.checkpoint()
        self.last_commit_us = (checkpoint.last_commit_time_us or 0) if checkpoint else 0
        self.committed = 0
        self.position: tuple[str, int] | None = (checkpoint.log_file, checkpoint.log_pos) if checkpoint else None
        self.last_event_time = 0
        self.position_clock = position_clock

    def reset_stream(self) -> None:
        """The connection broke: forget the incomplete transaction (it will be read again)."""
        self.txn = None
        self.table_maps.clear()
        self._abort_open()

    def _abort_open(self) -> None:
        self.store.abort_transaction()
        self._map_cache.clear()  # store ids of table maps written in a rolled-back transaction

    def feed(self, event: bl.RawEvent) -> None:
        """Take the next event of the binlog, in order."""
        if event.timestamp:
            self.last_event_time = event.timestamp
        handler = self._handlers.get(event.type)
        if handler is not None:
            handler(event)
        elif self.txn is None and event.end_pos:
            # Format descriptions, GTID lists, binlog checkpoints, ...: no data. Outside a
            # transaction they still move the checkpoint on, so that "caught up with the
            # server's position" is reachable (they come at the start of every binlog file).
            self.position = (event.log_file, event.end_pos)
            self.store.advance_checkpoint(event.log_file, event.end_pos)

    def _unsupported(self, event: bl.RawEvent) -> None:
        """An event whose content cannot be stored faithfully (MariaDB's compressed events; MySQL's
        compressed transactions and partial JSON are captured, see binlog.py): its group is kept and
        flagged, and the table it touches (when a table map names it) becomes a
        conflict for the planner. The inspector refuses the settings that produce these at start;
        one that shows up anyway (settings changed while running) must not stop capture."""
        txn = self._open_implicit(event)
        txn.flags.add(FLAG_UNCAPTURED)
        mapped = self.table_maps.get(rows_table_id(event.body)) if event.type in _UNSUPPORTED_ROWS else None
        if mapped is not None:
            txn.tables.add(mapped[1])
        self._statement_text(
            f"/* auroratrack: binlog event type {event.type} at {event.log_file}:{event.end_pos} not captured "
            "(MariaDB compressed events): SET GLOBAL log_bin_compress=OFF */".encode())
        log.error("binlog event type %d at %s:%d cannot be captured faithfully (MariaDB compressed event); "
                  "its transaction is kept as a conflict for a backtrack", event.type, event.log_file, event.end_pos)

    def _execute_load_query(self, event: bl.RawEvent) -> None:
        """``LOAD DATA`` logged as a statement (a session set binlog_format=STATEMENT): its rows
        are not in the binlog. Flagged "statement" for the table it names, like any DML logged
        as a statement: the planner refuses to rewind over it."""
        body = event.body
        query = parse_query(body[:13] + body[13 + _EXECUTE_LOAD_EXTRA:])
        txn = self._open_implicit(event)
        txn.flags.add("statement")
        found = _LOAD_INTO.search(query.query)
        if found:
            schema, _, table = found.group(1).decode("utf-8", "replace").replace(" ", "").rpartition(".")
            txn.tables.add(f"{schema.strip('`') or query.default_schema}.{table.strip('`')}")
        self._statement_text(query.query)
        self._record(ChangeRecord("statement", event.type, query.query, None, query.default_schema or None))

    def _incident(self, event: bl.RawEvent) -> None:
        """The server logged that it could not log something (``LOST_EVENTS``): changes may be
        missing from here on. Kept as a transaction of its own, flagged; the planner refuses to
        rewind over it, as over a gap."""
        if self.txn is not None:
            self._close_unended(event)
        length = event.body[2] if len(event.body) > 2 else 0
        message = bytes(event.body[3:3 + length]).decode("utf-8", "replace")
        self.txn = _OpenTransaction(event.log_file, event.start_pos, standalone=True)
        self.txn.flags.add(FLAG_INCIDENT)
        self._statement_text(f"/* auroratrack: the server logged an incident at {event.log_file}:{event.end_pos}: "
                             f"{message or 'changes may be missing from the binlog'} */".encode())
        log.error("the server logged an incident at %s:%d (%s): changes may be missing from the binlog; "
                  "a backtrack across it is refused", event.log_file, event.end_pos, message or "-")
        self._commit(event)

    def _open_implicit(self, event: bl.RawEvent) -> _OpenTransaction:
        """The open group, or a new one starting at ``event`` when the server logged changes
        without a GTID/BEGIN before them."""
        if self.txn is None:
            self.txn = _OpenTransaction(event.log_file, event.start_pos, explicit_end=True)
            self.txn.flags.add(FLAG_IMPLICIT)
        return self.txn

    def _close_unended(self, event: bl.RawEvent) -> None:
        """A new group starts at ``event`` while one is open: store the open one as it is, ending
        where ``event`` starts (flagged unless it was an implicit group, whose end is its next
        boundary anyway)."""
        txn = self.txn
        if txn is None:
            return
        if not txn.n_records and not txn.flags - {FLAG_IMPLICIT}:
            self._abort_open()  # nothing in it (a GTID whose group carried nothing we keep)
            self.txn = None
            return
        if FLAG_IMPLICIT not in txn.flags:
            txn.flags.add(FLAG_UNTERMINATED)
            log.warning("transaction %s at %s:%d never ended before the group at %s:%d; kept, flagged %s",
                        txn.gtid, txn.start_file, txn.start_pos, event.log_file, event.start_pos, FLAG_UNTERMINATED)
        boundary = bl.RawEvent(0, event.timestamp, event.server_id, event.log_file, max(event.start_pos, 4), b"",
                               size=0)
        if txn.xa_prepared:
            txn.xa_prepared = False  # stored now, as it is: its outcome never came in this group
            for record in txn.xa_records:
                self.store.add_change(record)
            txn.xa_records = []
        self._commit(boundary)

    def _mariadb_gtid(self, event: bl.RawEvent) -> None:
        gtid = parse_mariadb_gtid(event.body, event.server_id)
        self._begin(event, gtid=gtid.gtid, mariadb_flags=gtid.flags)

    def _mysql_gtid(self, event: bl.RawEvent) -> None:
        mysql = parse_mysql_gtid(event.body, anonymous=event.type == bl.ANONYMOUS_GTID_EVENT,
                                 tagged=event.type == bl.GTID_TAGGED_LOG_EVENT)
        self._begin(event, gtid=mysql.gtid, mysql_commit_us=mysql.commit_time_us)

    def _annotate_rows(self, event: bl.RawEvent) -> None:
        self._statement_text(event.body)

    def _rows_query(self, event: bl.RawEvent) -> None:
        self._statement_text(event.body[1:])

    # -- transaction boundaries --------------------------------------------------------------------
    def _begin(self, event: bl.RawEvent, gtid: str | None, mariadb_flags: int = 0,
               mysql_commit_us: int | None = None) -> None:
        if self.txn is not None:
            self._close_unended(event)
        # The event's own size, not one assumed: with binlog_checksum=NONE there is no CRC32.
        self.txn = _OpenTransaction(event.log_file, max(event.start_pos, 4), gtid=gtid,
                                    mysql_commit_us=mysql_commit_us)
        if mariadb_flags & MARIADB_FL_STANDALONE:
            self.txn.standalone = True
        elif event.type == bl.MARIADB_GTID_EVENT:
            self.txn.explicit_end = True
        if mariadb_flags & MARIADB_FL_PREPARED_XA:
            self.txn.xa_prepared = True
        if mariadb_flags & MARIADB_FL_COMPLETED_XA:
            self.txn.flags.add("xa_outcome")

    def _query(self, event: bl.RawEvent) -> None:
        query = parse_query(event.body)
        kind = classify_query(query.query)
        if kind == "begin":
            if self.txn is not None and FLAG_IMPLICIT in self.txn.flags:
                self._close_unended(event)
            if self.txn is None:
                self.txn = _OpenTransaction(event.log_file, event.start_pos, explicit_end=True)
            return
        if kind == "commit":
            # Non-transactional engines end their group with COMMIT.
            if self.txn is not None:
                self._commit(event)
            return
        if kind == "rollback":
            if self.txn is not None:
                self._rolled_back(event)
            return
        if kind == "xa":
            self._xa_query(event, query.query)
            return
        if kind == "savepoint":
            self._savepoint(query.query)
            return
        if kind == "rollback_to":
            self._rollback_to_savepoint(query.query)
            return
        if self.txn is not None and FLAG_IMPLICIT in self.txn.flags:
            self._close_unended(event)  # rows logged without a group, then a statement: two groups
        if self.txn is None:
            self.txn = _OpenTransaction(event.log_file, event.start_pos, standalone=True)
        self.txn.flags.add(kind)
        named = ddl_tables(query.query, query.default_schema)
        self.txn.tables.update(named)
        if kind == "ddl":
            self._forget_engines(named)
            if _starts_transaction(query.query):
                self.txn.explicit_end = True
        self._statement_text(query.query)
        self._record(ChangeRecord(kind, event.type, query.query, None, query.default_schema or None))
        # DDL ends its group unless the group says its end comes later (CREATE ... SELECT: its
        # rows follow the CREATE, then XID or COMMIT).
        if self.txn.standalone or (kind == "ddl" and not self.txn.explicit_end):
            self._commit(event)

    # -- changes the server rolled back (rare) -------------------------------------------------------------
    # MariaDB logs a transaction that rolled back when it touched something non-transactional
    # (a temporary table, a MyISAM/Aria table): BEGIN, its rows events (the transactional
    # tables' too), ROLLBACK; and it logs SAVEPOINT / ROLLBACK TO inside a group for the same
    # reason. The transactional tables' rows never happened (a replica rolls them back too);
    # the non-transactional ones stayed written. The binlog does not say which table is which,
    # so the server is asked, here only: the hot path never pays for it.
    def _rolled_back(self, event: bl.RawEvent) -> None:
        txn = self.txn
        if txn.xa_prepared:
            self._commit(event)  # refuses, as before: a prepared XA transaction ends otherwise
            return
        txn.flags.update(("non_transactional", FLAG_ROLLED_BACK))
        if txn.n_records:
            self._drop_rolled_back(txn, None)
        if txn.n_records:
            self._commit(event)
            return
        # Nothing the server kept: store nothing (as for a rolled-back transaction the server
        # never logs), just move the checkpoint past the group.
        self.store.advance_checkpoint(event.log_file, event.end_pos)
        self.txn = None
        self.position = (event.log_file, event.end_pos)

    def _savepoint(self, query: bytes) -> None:
        txn, name = self.txn, savepoint_name(query)
        if txn is not None and name is not None:
            txn.savepoints[name] = len(txn.xa_records) if txn.xa_prepared else self.store.open_lsn_mark()

    def _rollback_to_savepoint(self, query: bytes) -> None:
        txn = self.txn
        if txn is None:
            return
        name = savepoint_name(query)
        mark = txn.savepoints.get(name) if name is not None else None
        if mark is None:
            # A savepoint we never saw: which changes went back is unknown. Keep them all and
            # let the planner refuse to rewind over this transaction without --force.
            txn.flags.add(FLAG_ROLLBACK_UNRESOLVED)
            return
        txn.flags.add(FLAG_SAVEPOINT_ROLLBACK)
        self._drop_rolled_back(txn, mark)

    def _drop_rolled_back(self, txn: _OpenTransaction, mark: int | None) -> None:
        """Remove the open transaction's rows of transactional tables (after ``mark``, a
        savepoint's place): the server rolled them back. Rows of tables whose engine cannot be
        told any more are kept, and the transaction is flagged for the planner to refuse."""
        start = mark or 0
        if txn.xa_prepared:
            names = {r.table_map_id: self.store.table_map(r.table_map_id)[:2]
                     for r in txn.xa_records[start:] if r.kind == "rows" and r.table_map_id}
        else:
            names = self.store.open_rows_table_maps(mark)
        drop: set[int] = set()
        for map_id, (schema, table) in names.items():
            transactional = self._is_transactional(schema, table)
            if transactional is None:
                txn.flags.add(FLAG_ROLLBACK_UNRESOLVED)
            elif transactional:
                drop.add(map_id)
        if not drop:
            return
        if txn.xa_prepared:
            kept = txn.xa_records[:start] + [r for r in txn.xa_records[start:] if r.table_map_id not in drop]
            dropped = len(txn.xa_records) - len(kept)
            txn.xa_records = kept
            remaining = {self.store.table_map(r.table_map_id)[:2] for r in kept if r.kind == "rows"
                         and r.table_map_id}
        else:
            dropped = self.store.drop_open_changes(drop, mark)
            remaining = set(self.store.open_rows_table_maps().values())
        txn.n_records -= dropped
        # A table whose rows all went back was not changed by this transaction.
        gone = {f"{names[map_id][0]}.{names[map_id][1]}" for map_id in drop}
        gone -= {f"{schema}.{table}" for schema, table in remaining}
        txn.tables -= gone

    def _is_transactional(self, schema: str, table: str) -> bool | None:
        # The engine as the server has it now: a table altered to another engine between the
        # rolled-back transaction and this question (capture lagging) is misjudged; the cache
        # entry is dropped when capture reaches such DDL.
        key = f"{schema}.{table}".casefold()
        if key not in self._engine_cache:
            self._engine_cache[key] = self.transactional(schema, table)
        return self._engine_cache[key]

    def _forget_engines(self, names: set[str]) -> None:
        """DDL touched these tables ("db.t", "db.*"); their engine may have changed. When the
        statement names none we could parse, forget all (DDL is rare, the cache cheap to refill)."""
        if not self._engine_cache:
            return
        if not names:
            self._engine_cache.clear()
            return
        for name in names:
            folded = name.casefold()
            if folded.endswith(".*"):
                for key in [k for k in self._engine_cache if k.startswith(folded[:-1])]:
                    del self._engine_cache[key]
            else:
                self._engine_cache.pop(folded, None)

    def _commit(self, event: bl.RawEvent) -> None:
        txn = self.txn
        if txn is None:
            self.position = (event.log_file, event.end_pos)
            return
        if txn.xa_prepared:
            # A group marked prepared XA that ends with a plain commit: not what servers write.
            # Keep its changes (as the commit says) and let the planner name it.
            log.warning("prepared XA transaction %s ended without XA PREPARE at %s:%d; kept, flagged %s",
                        txn.gtid, event.log_file, event.end_pos, FLAG_UNTERMINATED)
            txn.xa_prepared = False
            txn.flags.add(FLAG_UNTERMINATED)
            for record in txn.xa_records:
                self.store.add_change(record)
            txn.xa_records = []
        commit_us, precision = self._commit_time(event, txn)
        header = self._header(txn, event, commit_us, precision)
        self.store.commit_transaction(header, defer=self.group_commit)
        self.last_commit_us = commit_us
        self.committed += 1
        self.txn = None
        self.position = (event.log_file, event.end_pos)

    def _header(self, txn: _OpenTransaction, event: bl.RawEvent, commit_us: int, precision: str,
                xa_xid: str | None = None) -> TransactionHeader:
        return TransactionHeader(
            gtid=txn.gtid, start_file=txn.start_file, start_pos=txn.start_pos,
            end_file=event.log_file, end_pos=event.end_pos, commit_time_us=commit_us,
            time_precision=precision, server_time=event.timestamp, origin=txn.origin,
            flags=sorted(txn.flags), tables=sorted(txn.tables), statements=txn.statements,
            xa_xid=xa_xid,
        )

    def _commit_time(self, event: bl.RawEvent, txn: _OpenTransaction) -> tuple[int, str]:
        """Commit time in microseconds, and its precision.

        MySQL's GTID events carry it ('us'). MariaDB stamps whole seconds, and the second of the
        statement's *start*. The commit happened by the time we received the event, and by the
        time the position clock (positionclock.py) first saw the log past it, which holds even
        when capture lags: the earlier of the two, never before the stamped second ('refined',
        late by at most about 50 ms). Events written before the clock's first sample (read while
        catching up after a restart) have only their second ('s'). Never decreasing along LSNs."""
        if txn.mysql_commit_us:
            t, precision = txn.mysql_commit_us, "us"
        else:
            second_start = event.timestamp * 1_000_000
            position = (event.log_file, event.end_pos)
            clock = self.position_clock
            if clock is None or clock.sampled_beyond(position):
                t, precision = second_start, "s"  # written before we could watch: its second only
            else:
                seen = clock.written_by(position)
                t = self.clock_us() if seen is None else min(self.clock_us(), seen)
                t, precision = max(t, second_start), "refined"
        return max(t, self.last_commit_us), precision

    def _rotate(self, event: bl.RawEvent) -> None:
        if self.txn is None and event.timestamp:
            # A real rotate: the next file starts at 4. (An artificial rotate, timestamp 0,
            # only names the file we asked for.)
            position, next_file = parse_rotate(event.body)
            self.position = (next_file, position)
            self.store.advance_checkpoint(next_file, position)

    # -- row changes ------------------------------------------------------------------------------------------
    def _table_map(self, event: bl.RawEvent) -> None:
        if self.txn is None:
            self._open_implicit(event)  # a table map always comes first in its group
        body = event.body
        key = body[6:]
        mapped = self._map_cache.get(key)
        if mapped is None:
            _, schema, table = table_map_names(body)
            generated = self._generated_cache.get(key)
            if generated is None:
                generated = self.generated_columns(schema, table)
                self._generated_cache[key] = generated
            mapped = (self.store.table_map_id(schema, table, body, generated), f"{schema}.{table}")
            self._map_cache[key] = mapped
        self.table_maps[rows_table_id(body)] = mapped

    def _rows(self, event: bl.RawEvent) -> None:
        txn = self.txn or self._open_implicit(event)
        mapped = self.table_maps.get(rows_table_id(event.body))
        if mapped is None:
            # Cannot be decoded without its table map (never seen from a real server): keep the
            # group, flagged, rather than stop.
            txn.flags.add(FLAG_UNCAPTURED)
            self._statement_text(f"/* auroratrack: rows event without its table map at "
                                 f"{event.log_file}:{event.end_pos} not captured */".encode())
            return
        store_id, name = mapped
        if name not in txn.tables:
            txn.tables.add(name)
            if name.startswith(ORIGIN_SCHEMA + "."):
                txn.origin = "backtrack"
        txn.n_records += 1
        if txn.xa_prepared:
            txn.xa_records.append(ChangeRecord("rows", event.type, event.body, store_id))
        else:
            self.store.append_change("rows", event.type, event.body, store_id)

    def _record(self, record: ChangeRecord) -> None:
        txn = self.txn
        txn.n_records += 1
        if txn.xa_prepared:
            txn.xa_records.append(record)
        else:
            self.store.add_change(record)

    def _statement_text(self, text: bytes) -> None:
        if self.txn is not None and len(self.txn.statements) < MAX_STATEMENTS_PER_TXN:
            decoded = bytes(text[:MAX_STATEMENT_TEXT]).decode("utf-8", "replace")
            if not self.txn.statements or self.txn.statements[-1] != decoded:
                self.txn.statements.append(decoded)

    # -- XA ------------------------------------------------------------------------------------------------------
    def _xa_query(self, event: bl.RawEvent, query: bytes) -> None:
        verb, xid = parse_xa_statement(query)
        if verb == "XA START" and self.txn is not None and not self.txn.n_records:
            self.txn.xa_prepared = True  # MySQL: its GTID event does not say so
            return
        if verb not in ("XA COMMIT", "XA ROLLBACK"):
            return
        txn = self.txn
        if txn is not None and txn.n_records and not txn.xa_prepared:
            self._commit(event)  # XA COMMIT ... ONE PHASE: an ordinary group ending here
            return
        prepared = self.store.take_xa_prepared(xid) if xid else None
        self.txn = None
        self.position = (event.log_file, event.end_pos)
        if prepared is None or verb == "XA ROLLBACK":
            # Nothing to keep: just move the checkpoint past this group.
            self.store.advance_checkpoint(event.log_file, event.end_pos)
            return
        header, records = prepared
        for record in records:
            self.store.add_change(record)
        commit_us, precision = self._commit_time(event, txn or _OpenTransaction("", 0))
        header.end_file, header.end_pos = event.log_file, event.end_pos
        header.commit_time_us, header.time_precision = commit_us, precision
        header.server_time, header.xa_xid = event.timestamp, xid
        if txn is not None and txn.gtid:
            header.gtid = txn.gtid
        self.store.commit_transaction(header)
        self.last_commit_us = commit_us
        self.committed += 1

    def _xa_prepare(self, event: bl.RawEvent) -> None:
        txn = self.txn
        if txn is None:
            return
        xid = parse_xa_prepare_xid(event.body)
        commit_us, precision = self._commit_time(event, txn)
        header = self._header(txn, event, commit_us, precision, xa_xid=xid)
        header.flags = sorted(set(header.flags) | {"xa"})
        self.store.save_xa_prepared(xid, header, txn.xa_records, event.log_file, event.end_pos)
        self.txn = None
        self.position = (event.log_file, event.end_pos)


class CaptureRefused(RuntimeError):
    """Capture cannot go on (the server has no binlog, the binlog cannot be read); the message
    says why and how to fix it. Never raised for binlog content."""


def _starts_transaction(query: bytes) -> bool:
    """MySQL logs an atomic ``CREATE TABLE ... SELECT`` as ``CREATE TABLE ... START TRANSACTION``
    followed by its rows and XID."""
    return query.rstrip().rstrip(b";").rstrip().upper().endswith(b"START TRANSACTION")


def ddl_tables(query: bytes, default_schema: str) -> set[str]:
    """Tables a DDL (or statement-format DML) names, as "db.table". Uses sqlglot, off the hot
    path (DDL is rare); falls back to nothing rather than guessing."""
    import sqlglot
    from sqlglot import exp

    text = query.decode("utf-8", "replace")
    words = text.split()
    if len(words) >= 3 and words[1].upper() in ("DATABASE", "SCHEMA"):
        names = [w for w in words[2:] if w.upper() not in ("IF", "NOT", "EXISTS")]
        return {f"{names[0].strip('`;')}.*"} if names else set()
    if len(words) >= 3 and words[0].upper() in _MAINTENANCE_VERBS and words[1].upper() in ("TABLE", "TABLES"):
        return _maintenance_tables(words[2:], default_schema)
    try:
        trees = sqlglot.parse(text, read="mysql")
    except Exception:  # sqlglot raises several error types on dialect gaps
        return set()
    tables = set()
    for tree in trees:
        if tree is None:
            continue
        for table in tree.find_all(exp.Table):
            if table.name:
                tables.add(f"{table.db or default_schema}.{table.name}")
    return tables


# ``ANALYZE|OPTIMIZE|CHECK|REPAIR [NO_WRITE_TO_BINLOG|LOCAL] TABLE a, b [options]``: sqlglot
# returns these as a bare Command, so the names are read here (the planner then names the table).
_MAINTENANCE_VERBS = frozenset({"ANALYZE", "OPTIMIZE", "CHECK", "REPAIR"})
_MAINTENANCE_OPTIONS = frozenset({"PERSISTENT", "QUICK", "EXTENDED", "USE_FRM", "FAST", "MEDIUM", "CHANGED",
                                  "FOR", "UPGRADE", "WAIT", "NOWAIT"})


def _maintenance_tables(words: list[str], default_schema: str) -> set[str]:
    tables = set()
    for word in " ".join(words).replace(",", " , ").split():
        if word.upper() in _MAINTENANCE_OPTIONS:
            break
        name = word.strip(";")
        if name and name != ",":
            schema, _, table = name.rpartition(".")
            tables.add(f"{schema.strip('`') or default_schema}.{table.strip('`')}")
    return tables


class Streamer:
    """Runs capture until ``stop`` is set: connect, stream, and reconnect with backoff.

    ``request_stop`` (from a signal handler or another thread) also wakes a reader waiting on
    the server; setting ``stop`` alone is noticed at the next transaction or reconnection."""

    def __init__(self, config: StreamerConfig, stop: threading.Event | None = None,
                 log_level: str = "INFO", log_format: str = "text"):
        self.config = config
        self.stop = stop or threading.Event()
        self.store = self._open_store()
        self.server_id = config.server_id or stable_server_id(config.store_path)
        self._control: pymysql.Connection | None = None
        self._sampler_conn: pymysql.Connection | None = None
        self._source: bl.BinlogSource | None = None
        self.position_clock = PositionClock(self._sample_position, now_us, wake_on_activity=True)
        self.assembler = TransactionAssembler(self.store, self._generated_columns,
                                              position_clock=self.position_clock, group_commit=True,
                                              transactional=self._transactional)
        self.connected = False
        self.last_error: str | None = None
        self.down_since: float | None = None  # epoch seconds the stream broke; None while it flows
        self.reconnects = 0
        self._last_retention = 0.0
        self._last_status = 0.0
        self._last_position_log = time.monotonic()
        self._backfill = backfill.BackfillProcess(config, log_level, log_format) if config.backfill else None
        self._backfill_thread: threading.Thread | None = None
        self._wal_thread: threading.Thread | None = None
        self._wal_written = threading.Event()  # set when the store commits: a checkpoint is due
        self.store.on_commit = self._wal_written.set

    def request_stop(self) -> None:
        """Stop capture soon: sets the stop flags and shuts the stream's socket down. Sets Events,
        so never from a signal handler directly (proxy.changelog.stopsignal relays signals)."""
        self.stop.set()
        self._wal_written.set()  # wakes the WAL thread, which then sees ``stop``
        source = self._source
        if source is not None:
            source.interrupt()

    def _open_store(self) -> ChangeStore:
        return ChangeStore(self.config.store_path)

    def run(self) -> None:
        backoff = 0.1
        self._ensure_start_position()
        self._start_backfill()
        self.position_clock.start()
        # Opened here, before capture appends anything: opening a writable store trims the
        # segment files to their committed end, which must never race the writer's appends.
        wal_store = self._open_store()
        self._wal_thread = threading.Thread(target=self._checkpoint_wal, args=(wal_store,),
                                            name="auroratrack-wal-checkpoint", daemon=True)
        self._wal_thread.start()
        while not self.stop.is_set():
            try:
                self._stream_once()
                backoff = 0.1
            except (bl.StreamLost, pymysql.MySQLError, OSError, bl.EventsMissing) as exc:
                if self._is_purged(exc):
                    self._record_gap(str(exc))
                    continue
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.reconnects += 1
                self.down_since = self.down_since or time.time()
                log.error("capture is DOWN: binlog stream interrupted (%s); the backtrack window is not growing; "
                          "resuming from the checkpoint in %.1f s", self.last_error, backoff,
                          extra={"capture_up": False})
            finally:
                self.connected = False
                self.assembler.reset_stream()
            self._write_status(force=True)
            self.stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        self._write_status(force=True)

    def _stream_once(self) -> None:
        checkpoint = self.store.checkpoint()
        # Group commit: the store commits whenever the reader runs out of received events
        # (``on_idle``), so a backlog is stored many transactions per SQLite commit.
        source = bl.BinlogSource(self._connection_settings(), self.server_id,
                                 bl.BinlogPosition(checkpoint.log_file, checkpoint.log_pos),
                                 heartbeat_s=self.config.heartbeat_s, on_idle=self.store.commit_pending,
                                 idle_linger_s=GROUP_LINGER_S, read_pace_s=READ_PACE_S,
                                 on_data=self.position_clock.note_activity)
        self._source = source
        if self.stop.is_set():  # ``request_stop`` ran before it could see this source
            return
        assembler, feed, stop = self.assembler, self.assembler.feed, self.stop
        events = 0
        try:
            for event in source.events():
                feed(event)
                events += 1
                # Housekeeping between transactions, and now and then inside a big one (status).
                if assembler.txn is None or not events & 1023:
                    if not self.connected:
                        self._now_connected()
                    self._housekeeping()
                    if stop.is_set():
                        return
        except Exception:
            if self.stop.is_set():
                return  # ``request_stop`` shut the socket down under the reader
            raise
        finally:
            with contextlib.suppress(Exception):
                source.close()

    def _now_connected(self) -> None:
        self.connected = True
        if self.down_since is not None:
            log.warning("capture is back: streaming from the checkpoint again after %.1f s down",
                        time.time() - self.down_since, extra={"capture_up": True})
            self.down_since = None
        self._write_status(force=True)  # the supervisor and status see it at once, idle or not

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_retention >= self.config.retention_every_s and self.assembler.txn is None:
            self._last_retention = now
            window_us = int(self.config.window_s * 1e6) if self.config.window_s else None
            result = self.store.evict(window_us, self.config.max_store_bytes)
            if result.transactions:
                log.info("retention: evicted %d transactions (%d bytes); earliest backtrack time now %s",
                         result.transactions, result.bytes, result.earliest_backtrack_time_us)
            self._check_window_alert()
        self._write_status()
        if now - self._last_position_log >= 60:
            self._last_position_log = now
            position = self.assembler.position
            log.info("streamer at %s:%s, %d transactions captured since start",
                     *(position or ("-", "-")), self.assembler.committed,
                     extra={"position": f"{position[0]}:{position[1]}" if position else None,
                            "committed": self.assembler.committed})

    def _start_backfill(self) -> None:
        """Start the history reader beside the live stream when history is still to be read."""
        history = self.store.history_range()
        if self._backfill is not None and history is not None and not history.done:
            self._backfill.start()
            self._backfill_thread = threading.Thread(target=self._watch_backfill, name="auroratrack-backfill-watch",
                                                     daemon=True)
            self._backfill_thread.start()

    def _watch_backfill(self) -> None:
        """Once a second, in a thread of its own (an idle server brings no events to do it
        between): start the history reader again if it died before the history was in."""
        reader = ChangeStore(self.config.store_path, readonly=True)
        try:
            while not self.stop.wait(1.0):
                history = reader.history_range()
                if not self._backfill.watch(history is not None and history.done):
                    return
        except Exception:  # a bug here must not end capture; the next streamer start tries again
            log.exception("backfill: watching the history reader failed")
        finally:
            reader.close()

    def _check_window_alert(self) -> None:
        if not self.config.window_s:
            return
        earliest = self.store.earliest_backtrack_time_us() or 0
        started = int(self.store.get_meta("capture_started_us") or 0)
        actual_s = (now_us() - earliest) / 1e6
        alert = earliest > started and actual_s < self.config.window_s
        if alert != (self.store.get_meta("window_alert") == "1"):
            self.store.set_meta("window_alert", "1" if alert else "0")
            if alert:
                log.warning("window alert: the actual backtrack window (%.0f s) is shorter than the "
                            "target (%.0f s); raise --max-store-bytes or shorten --backtrack-window",
                            actual_s, self.config.window_s)
            else:
                log.info("window alert cleared: the actual window reaches the target again")

    def _write_status(self, force: bool = False) -> None:
        path = self.config.status_path
        now = time.monotonic()
        if path is None or (not force and now - self._last_status < 0.5):
            return
        self._last_status = now
        position = self.assembler.position
        status = {
            "pid": os.getpid(), "connected": self.connected, "last_error": self.last_error,
            "down_since": self.down_since, "reconnects": self.reconnects,
            "position": f"{position[0]}:{position[1]}" if position else None,
            "last_event_time": self.assembler.last_event_time, "committed": self.assembler.committed,
            "updated_at": time.time(),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(path)

    # -- positions and gaps -----------------------------------------------------------------------------------
    def _ensure_start_position(self) -> None:
        """First start: live from the server's position now; with backfill, room below it for
        the history the history reader then reads beside it (backfill.py)."""
        if self.store.checkpoint() is None:
            live = current_binlog_position(self._control_conn())
            history = backfill.history_bytes(self._control_conn(), live) if self.config.backfill else None
            self.store.start_capture(*live, now_us(), history_bytes=history)
            log.info("capture starts at %s:%d%s", *live,
                     f"; backfill reads the {history:,} binlog bytes before it beside the live stream"
                     if history else "")

    def _is_purged(self, exc: Exception) -> bool:
        return (isinstance(exc, pymysql.OperationalError) and bool(exc.args)
                and exc.args[0] == ER_MASTER_FATAL_READING_BINLOG)

    def _record_gap(self, reason: str) -> None:
        self.assembler.reset_stream()  # complete transactions are kept, the open one is read again
        checkpoint = self.store.checkpoint()
        oldest = oldest_binlog(self._control_conn())
        if oldest is None or (checkpoint and oldest == checkpoint.log_file):
            raise CaptureRefused(f"cannot read the binlog from {checkpoint}: {reason}")
        lost = f"{checkpoint.log_file}:{checkpoint.log_pos}"
        self.store.record_gap(lost, f"{oldest}:4", reason, oldest, 4)
        log.warning("gap: binlog from %s is gone (%s); capture resumes at %s:4", lost, reason, oldest)

    # -- the control connection ---------------------------------------------------------------------------------
    def _connection_settings(self) -> dict:
        up = self.config.upstream
        return {"host": up.host, "port": up.port, "user": up.user, "password": up.password, **up.tls_kwargs()}

    def _control_conn(self) -> pymysql.Connection:
        if self._control is None or not self._control.open:
            self._control = self.config.upstream.connect(role="capture_control")
        return self._control

    def _generated_columns(self, schema: str, table: str) -> list[str]:
        try:
            with self._control_conn().cursor() as cur:
                cur.execute(
                    "/* auroratrack streamer */ SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND GENERATION_EXPRESSION IS NOT NULL "
                    "AND GENERATION_EXPRESSION <> '' ORDER BY ORDINAL_POSITION", (schema, table))
                return [row[0] for row in cur.fetchall()]
        except pymysql.MySQLError as exc:
            log.warning("cannot read generated columns of %s.%s: %s", schema, table, exc)
            self._control = None
            return []

    def _transactional(self, schema: str, table: str) -> bool | None:
        """Whether the table's engine is transactional (ENGINES.TRANSACTIONS), None if the
        server does not know the table (dropped since) or its engine. Asked only for a group
        that carries rolled-back changes (``TransactionAssembler._drop_rolled_back``)."""
        try:
            with self._control_conn().cursor() as cur:
                cur.execute(
                    "/* auroratrack streamer */ SELECT e.TRANSACTIONS FROM information_schema.TABLES t "
                    "JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
                    "WHERE t.TABLE_SCHEMA = %s AND t.TABLE_NAME = %s", (schema, table))
                row = cur.fetchone()
        except pymysql.MySQLError as exc:
            # Not a guess either way: the stream resumes from the checkpoint and asks again.
            self._control = None
            raise bl.StreamLost(f"cannot read the engine of {schema}.{table}: {exc}") from exc
        if row is None or row[0] not in ("YES", "NO"):
            return None
        return row[0] == "YES"

    def _checkpoint_wal(self, store: ChangeStore) -> None:
        """WAL checkpoints (and their fsyncs) off the capture path, on a connection of their own:
        at most one a second, and none while nothing is written (no wake-ups when idle)."""
        try:
            while True:
                self._wal_written.wait()
                if self.stop.wait(1.0):
                    return
                self._wal_written.clear()  # before the checkpoint: later commits earn another
                try:
                    store.checkpoint_wal()
                except sqlite3.Error as exc:
                    log.debug("WAL checkpoint: %s", exc)
        finally:
            store.close()

    def _sample_position(self) -> tuple[str, int]:
        """For the position clock, on a connection of its own (it runs in its own thread)."""
        try:
            if self._sampler_conn is None or not self._sampler_conn.open:
                self._sampler_conn = self.config.upstream.connect(role="position_clock")
            return current_binlog_position(self._sampler_conn)
        except pymysql.MySQLError:
            self._sampler_conn = None
            raise

    def close(self) -> None:
        self.request_stop()
        if self._backfill is not None:
            self._backfill.stop()
        if self._backfill_thread is not None:
            self._backfill_thread.join(5)
        if self._wal_thread is not None:
            # Its connection closes first: the store's own close is then the last one, which
            # folds the WAL into the database and deletes it (else it stays on disk, counted).
            self._wal_thread.join(5)
        self.position_clock.stop()
        if self._sampler_conn is not None:
            with contextlib.suppress(Exception):
                self._sampler_conn.close()
        if self._control is not None:
            with contextlib.suppress(Exception):
                self._control.close()
        self.store.close()


def current_binlog_position(conn: pymysql.Connection) -> tuple[str, int]:
    """The server's current binlog file and position (MySQL 8.4 renamed the statement)."""
    with conn.cursor() as cur:
        try:
            cur.execute("/* auroratrack */ SHOW BINARY LOG STATUS")
        except pymysql.err.ProgrammingError:
            cur.execute("/* auroratrack */ SHOW MASTER STATUS")
        row = cur.fetchone()
    if row is None:
        raise CaptureRefused("the server has no binary log: start it with log_bin enabled")
    return row[0], int(row[1])


def oldest_binlog(conn: pymysql.Connection) -> str | None:
    with conn.cursor() as cur:
        cur.execute("/* auroratrack */ SHOW BINARY LOGS")
        row = cur.fetchone()
    return row[0] if row else None


def stable_server_id(store_path: Path) -> int:
    """A replica server_id derived from the store's path: stable across restarts, unlikely to
    collide with a real replica's small ids."""
    import zlib

    return 0x40000000 | (zlib.crc32(str(Path(store_path).resolve()).encode()) & 0x3FFFFFFF)


def _stop_with_parent(stop_now: Callable[[], None], parent: int) -> None:
    """A serve process killed with SIGKILL cannot stop its streamer: the kernel sends the
    streamer SIGTERM when its parent dies (PR_SET_PDEATHSIG, Linux). Elsewhere a thread checks
    twice a second whether the streamer was re-parented."""
    if _set_parent_death_signal(signal.SIGTERM):
        if os.getppid() != parent:  # the parent died before the request: no signal will come
            stop_now()
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        stop_now()  # ``run_streamer_process`` says why on the way out

    threading.Thread(target=watch, name="auroratrack-orphan-watch", daemon=True).start()


def _set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel for ``signum`` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(pr_set_pdeathsig, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def run_streamer_process(config: StreamerConfig, log_level: str = "INFO", log_format: str = "text") -> None:
    """Entry point of the streamer's own process; stops cleanly on SIGTERM, and when its parent
    dies."""
    import multiprocessing

    from proxy.logs import configure_logging

    spawner = multiprocessing.parent_process()  # serve's process; None under ``python -m``
    parent = spawner.pid if spawner is not None and spawner.pid else os.getppid()
    configure_logging(log_level, log_format)
    # A session of its own: the kernel's autogroup scheduling then gives capture its own share
    # of the CPU beside the relay's, instead of one share for both (measured: capture lag grew
    # without bound on a saturated machine while the relay took the group's time).
    with contextlib.suppress(OSError):
        os.setsid()
    streamer = Streamer(config, log_level=log_level, log_format=log_format)
    stopsignal.install(streamer.request_stop)  # SIGTERM, SIGINT and the parent-death SIGTERM
    _stop_with_parent(streamer.request_stop, parent)
    try:
        streamer.run()
    finally:
        streamer.close()
    if os.getppid() != parent:
        log.warning("the serve process is gone; the streamer stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m proxy.changelog.streamer``: capture alone, without the proxy (tests,
    benchmarks, and operators who want the changelog before they move clients over)."""
    import argparse

    parser = argparse.ArgumentParser(description="auroratrack changelog streamer")
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", default=os.environ.get("AURORATRACK_UPSTREAM_PASSWORD", ""))
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--window-s", type=float, default=24 * 3600)
    parser.add_argument("--max-store-bytes", type=int, default=None)
    parser.add_argument("--server-id", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--backfill", action="store_true", help="first start: capture the history within the window")
    parser.add_argument("--backfill-pause-s", type=float, default=0.0,
                        help="the history reader rests this long after each transaction")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    config = StreamerConfig(
        upstream=UpstreamCredentials(host or "127.0.0.1", int(port), args.user, args.password),
        store_path=args.store, server_id=args.server_id, window_s=args.window_s,
        max_store_bytes=args.max_store_bytes, status_path=args.store.with_suffix(".status.json"),
        backfill=args.backfill, backfill_pause_s=args.backfill_pause_s,
    )
    run_streamer_process(config, args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
