"""The change store: every committed transaction's raw change records, LSN-ordered, FIFO-retained.

SQLite in WAL mode, in the data directory. One writer (the streamer); any number of readers
(the planner, the admin API, ``auroratrack changes``), each with its own connection.

What it keeps (DESIGN.md decisions 4-6):
  * ``changes``: one record per binlog rows event (raw body, byte for byte) or per DDL /
    statement-format query, numbered by LSN = the next integer in binlog commit order; the
    bodies themselves live in append-only segment files next to the database (segments.py);
  * ``table_maps``: the raw TABLE_MAP bodies the rows events need to be decoded, deduplicated;
  * ``transactions``: per committed transaction its LSN range, GTID, binlog coordinates after
    it, commit time and its precision, origin (client write or backtrack), tables touched,
    statement texts, flags (DDL, statement-format DML, non-transactional engine);
  * ``checkpoint``: the binlog position right after the last stored transaction, written in the
    same SQLite transaction as that transaction: a restart resumes exactly there;
  * ``gaps``: positions lost while nobody was reading (binlog purged);
  * ``xa_prepared``: prepared XA transactions waiting for their XA COMMIT / ROLLBACK.
Group commit: when the streamer is behind (more of the binlog already received), several
complete transactions go into one SQLite transaction, with the checkpoint after the last of them
(``commit_transaction(..., defer=True)``, then ``commit_pending``). A crash loses only what the
binlog still has, and the checkpoint says where it starts: no gap, no duplicate. Measured: a
SQLite commit with its checkpoint and counters costs about 40 us, more than storing the four row
changes of a sysbench write transaction. A group ends after ``GROUP_MAX_TRANSACTIONS``,
``GROUP_MAX_BYTES`` or ``GROUP_MAX_S``, so the checkpoint moves on even under a steady backlog.
The change records of the open transaction are written in batches of ``ROW_BATCH`` (one
``executemany``); a transaction bigger than that streams into a SQLite transaction of its own.
Compact change rows: the index row is the store's only overhead on the binlog's bytes (a bulk
load stores about 25 bytes of it per ~8 KB rows event, against the 23 bytes of event header and
checksum it drops), so within a transaction a ``changes`` row stores 0 for a txn_id, event type or
table map id equal to the record's before, and kind '' for rows. The first record of every
transaction has them all, so a transaction (the unit of retention and of reading) decodes alone.
``changes`` gives the full values back; stores written before read the same.
Rolled-back changes: a binlog group may carry row changes the server rolled back (ROLLBACK, or
ROLLBACK TO a savepoint, after touching something non-transactional); the streamer removes them
from the open transaction (``drop_open_changes``) before it commits, so the store holds only
committed changes, and a transaction's LSN range may then have holes (``n_changes`` counts records).
Retention evicts whole transactions, oldest first, by age (the target window) or total size.
The earliest backtrack time is the commit time of the newest transaction evicted (or the start
of capture, or the last gap), whichever is latest.
History read beside the live stream (backfill.py): a first start that backfills reserves, below
the live stream's, a range of LSNs, of txn ids and of segment ids for the server's older
binlogs (``start_capture(..., history_bytes=...)``, ``HistoryRange``); the live stream's
numbers start above it. The backfill writes into that range from a process of its own, through
a ``ChangeStore(..., history_writer=True)``: its own checkpoint (in ``meta``), its own segment
files, the same tables (SQLite serialises the two writers' commits). So LSN order and txn id
order stay binlog order, and every reader works unchanged. The range is sized from the bytes of
binlog the history can hold at most (a change record or a transaction takes at least one event
of at least ``MIN_EVENT_BYTES``). The earliest backtrack time moves back only once the whole
history is in (``finish_history``): never over a hole. The history writer takes SQLite's write
lock only for short bursts (``_flush_history``: a group kept in memory, a big transaction's
batches committed as orphan rows that no transaction points at until it commits, deleted on an
abort or the next open), so the live stream's commits never queue behind it for long.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proxy.changelog.segments import ALL_IDS, DEFAULT_SEGMENT_BYTES, SegmentLog

SCHEMA_VERSION = 1
GROUP_MAX_TRANSACTIONS = 1000
GROUP_MAX_BYTES = 32 * 1024 * 1024  # record bodies: bounds what a crash makes capture read again
GROUP_MAX_S = 0.1  # readers see a backlog's progress at least this often
WAL_TRUNCATE_BYTES = 64 * 1024 * 1024
ROW_BATCH = 1000  # change records of the open transaction held before they are written
_INSERT_CHANGE = (
    "INSERT INTO changes (lsn, txn_id, kind, event_type, table_map_id, segment, offset, length,"
    " default_schema) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TRANSACTION = (
    "INSERT INTO transactions (txn_id, first_lsn, last_lsn, gtid, start_file, start_pos, end_file, end_pos,"
    " commit_time_us, time_precision, server_time, origin, flags, tables, statements, n_changes,"
    " n_bytes, xa_xid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
# One statement for both counters the writer keeps in ``meta`` ('last_lsn' is inserted on first use).
_UPDATE_COUNTERS = (
    "INSERT INTO meta (key, value) VALUES ('stored_bytes', '0'), ('last_lsn', ?2) ON CONFLICT(key) DO UPDATE SET"
    " value = CASE key WHEN 'stored_bytes' THEN CAST(CAST(value AS INTEGER) + ?1 AS TEXT) ELSE excluded.value END"
)
# History reserved below the live stream (module docstring): the smallest binlog event that can
# bring a change record or end a transaction is a bare header (19 bytes).
MIN_EVENT_BYTES = 19
HISTORY_KEY = "history_range"
HISTORY_CHECKPOINT_KEY = "backfill_checkpoint"
# History rows events go to their own segments; a small segment size must not run their range out.
MIN_SEGMENT_BYTES_FOR_RESERVE = 1024 * 1024
_ADD_STORED_BYTES = "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + ? AS TEXT) WHERE key = 'stored_bytes'"
HELD_FILE = "held.json"  # written by proxy.ddlretention: [held at (us), bytes] of each held table
_json = json.JSONEncoder().encode  # json.dumps with default settings, without its per-call setup

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    log_file TEXT NOT NULL, log_pos INTEGER NOT NULL,
    last_txn_id INTEGER, last_commit_time_us INTEGER, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    txn_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after eviction
    first_lsn INTEGER NOT NULL, last_lsn INTEGER NOT NULL,
    gtid TEXT, start_file TEXT NOT NULL, start_pos INTEGER NOT NULL,
    end_file TEXT NOT NULL, end_pos INTEGER NOT NULL,
    commit_time_us INTEGER NOT NULL, time_precision TEXT NOT NULL, server_time INTEGER NOT NULL,
    origin TEXT NOT NULL, flags TEXT NOT NULL, tables TEXT NOT NULL, statements TEXT NOT NULL,
    n_changes INTEGER NOT NULL, n_bytes INTEGER NOT NULL, xa_xid TEXT
);
CREATE INDEX IF NOT EXISTS transactions_by_time ON transactions (commit_time_us);
CREATE INDEX IF NOT EXISTS transactions_by_gtid ON transactions (gtid);
CREATE TABLE IF NOT EXISTS changes (
    lsn INTEGER PRIMARY KEY,
    txn_id INTEGER NOT NULL,         -- 0: as the record before (module docstring: compact rows)
    kind TEXT NOT NULL,              -- '' (rows) | ddl | statement; 'rows' in older stores
    event_type INTEGER NOT NULL,     -- 0: as the record before
    table_map_id INTEGER,            -- rows: the table map to decode with; 0: as the rows record before
    segment INTEGER NOT NULL,        -- where the body is: rows: raw event body;
    offset INTEGER NOT NULL,         --   ddl/statement: the query text
    length INTEGER NOT NULL,
    default_schema TEXT              -- ddl/statement: the session's database when it ran
);
CREATE TABLE IF NOT EXISTS table_maps (
    id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE,
    schema_name TEXT NOT NULL, table_name TEXT NOT NULL,
    body BLOB NOT NULL, generated TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS gaps (
    id INTEGER PRIMARY KEY, after_txn_id INTEGER, lost_from TEXT NOT NULL,
    resumed_at TEXT NOT NULL, detected_at_us INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS xa_prepared (
    xid TEXT PRIMARY KEY, header TEXT NOT NULL, records BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class HistoryRange:
    """What a first start reserved for the history read beside the live stream: [first, end) of
    LSNs, txn ids and segment ids, all below the live stream's; ``until``: the binlog position
    the live stream started at (history ends there); ``done`` once it is all stored."""

    lsn: tuple[int, int]
    txn: tuple[int, int]
    segments: tuple[int, int]
    until: tuple[str, int]
    done: bool = False

    def to_json(self) -> str:
        return json.dumps({"lsn": self.lsn, "txn": self.txn, "segments": self.segments,
                           "until": self.until, "done": self.done})

    @staticmethod
    def from_json(text: str) -> HistoryRange:
        raw = json.loads(text)
        return HistoryRange(tuple(raw["lsn"]), tuple(raw["txn"]), tuple(raw["segments"]),
                            (raw["until"][0], int(raw["until"][1])), bool(raw["done"]))


@dataclass(frozen=True)
class Checkpoint:
    """Where capture resumes: the binlog position right after the last stored transaction."""

    log_file: str
    log_pos: int
    last_txn_id: int | None
    last_commit_time_us: int | None


@dataclass
class ChangeRecord:
    """One change record before it gets its LSN."""

    kind: str  # rows | ddl | statement
    event_type: int
    body: bytes
    table_map_id: int | None = None
    default_schema: str | None = None


@dataclass
class TransactionHeader:
    """What the streamer knows about a transaction when it commits it."""

    gtid: str | None
    start_file: str
    start_pos: int
    end_file: str
    end_pos: int
    commit_time_us: int
    time_precision: str  # us | refined | s
    server_time: int
    origin: str = "client"
    flags: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    xa_xid: str | None = None


@dataclass(frozen=True)
class StoredTransaction:
    """A transaction as the store has it."""

    txn_id: int
    first_lsn: int
    last_lsn: int
    gtid: str | None
    start_file: str
    start_pos: int
    end_file: str
    end_pos: int
    commit_time_us: int
    time_precision: str
    server_time: int
    origin: str
    flags: tuple[str, ...]
    tables: tuple[str, ...]
    statements: tuple[str, ...]
    n_changes: int
    n_bytes: int
    xa_xid: str | None


@dataclass(frozen=True)
class StoredChange:
    lsn: int
    txn_id: int
    kind: str
    event_type: int
    table_map_id: int | None
    body: bytes
    default_schema: str | None


@dataclass(frozen=True)
class Gap:
    id: int
    after_txn_id: int | None
    lost_from: str
    resumed_at: str
    detected_at_us: int
    reason: str


@dataclass(frozen=True)
class EvictionResult:
    transactions: int
    bytes: int
    earliest_backtrack_time_us: int | None


def now_us() -> int:
    return time.time_ns() // 1000


class ChangeStore:
    """See the module docstring. Open one per thread/process; the streamer is the only writer."""

    def __init__(self, path: Path | str, readonly: bool = False, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 history_writer: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        # The backfill's writer: numbers, segments and checkpoint of the reserved history range.
        self.history_writer = history_writer
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        self.db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                                  timeout=30)
        self.db.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            # WAL: readers never block the writer. synchronous=NORMAL survives a killed process
            # (what the SIGKILL tests check); an OS crash may lose the last commits, which
            # capture then reads again from the binlog since the checkpoint goes with them.
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints (the only fsyncs in this mode) are run by ``checkpoint_wal`` from a
            # thread of the streamer, not inside the writer's commits: measured, COMMIT spent
            # 6.8 s of wall time for 2.1 s of CPU over 43k transactions, waiting on them.
            self.db.execute("PRAGMA wal_autocheckpoint = 0")
            self.db.executescript(_SCHEMA)
            self._init_meta()
        self._history = None if readonly else self.history_range()  # readers never append
        if history_writer and self._history is None:
            raise ValueError(f"{self.path}: no history range reserved to write into")
        self.segments = SegmentLog(self.path.with_name(self.path.name + ".segments"), segment_bytes,
                                   writable=not readonly, id_range=self._segment_range())
        if not readonly:
            if history_writer:
                self._drop_orphans()
            self.segments.resume(self._committed_segment_ends())
        self._table_map_ids: dict[tuple[bytes, tuple[str, ...]], int] = {}  # (body[6:], generated) -> id
        self._in_txn = False  # a SQLite transaction is open
        self._next_lsn: int | None = None
        self._next_txn_id: int | None = None
        # The open binlog transaction: its records not written yet, whether earlier ones were.
        self._rows: list[tuple] = []
        self._previous: tuple[int, int | None] | None = None  # (event type, table map id) of the last record
        self._spilled = False
        self._hold_open = False  # the open transaction must reach SQLite in one piece (a taken XA)
        self._open_from_lsn: int | None = None  # the open transaction's first LSN, dropped records too
        # History writer: the group's transaction rows, written with its records in one short burst.
        self._txn_rows: list[tuple] = []
        self._txn_bytes = 0
        self._txn_first_lsn: int | None = None
        self._txn_dropped = 0  # records of the open transaction removed (rolled back) after its first
        # Complete transactions written in the open SQLite transaction, not committed yet.
        self._group_txns = 0
        self._group_bytes = 0
        self._group_started = 0.0
        self._group_last_lsn: int | None = None
        self._pending_checkpoint: tuple[str, int, int | None, int | None] | None = None
        # Called after each COMMIT that wrote something (the streamer's WAL checkpointer waits on it).
        self.on_commit: Callable[[], None] | None = None
        self.group_max_s = GROUP_MAX_S  # the backfill's writer holds the write lock for less

    def _segment_range(self) -> tuple[int, int]:
        """The segment ids this writer appends to (segments.py): the history's range, or above it."""
        history = self._history
        if history is None:
            return ALL_IDS
        return history.segments if self.history_writer else (history.segments[1], ALL_IDS[1])

    def history_range(self) -> HistoryRange | None:
        raw = self.get_meta(HISTORY_KEY)
        return HistoryRange.from_json(raw) if raw else None

    # -- meta -------------------------------------------------------------------------------------
    def _init_meta(self) -> None:
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('created_us', ?)", (str(now_us()),))
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('stored_bytes', '0')")

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value))

    # -- the writer's side ----------------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint | None:
        """Where this writer resumes (the backfill's writer: its own, in ``meta``)."""
        if self.history_writer:
            return self.history_checkpoint()
        row = self.db.execute(
            "SELECT log_file, log_pos, last_txn_id, last_commit_time_us FROM checkpoint WHERE id = 1"
        ).fetchone()
        return Checkpoint(*row) if row else None

    def history_checkpoint(self) -> Checkpoint | None:
        """Where the backfill resumes (None before it fixed its start)."""
        raw = self.get_meta(HISTORY_CHECKPOINT_KEY)
        return Checkpoint(*json.loads(raw)) if raw else None

    def start_capture(self, position_file: str, position_pos: int, start_time_us: int,
                      history_bytes: int | None = None) -> None:
        """First start: remember where capture began (nothing before it can be rewound to).
        ``history_bytes``: the binlog bytes before that position the backfill may read; reserve
        LSNs, txn ids and segment ids for them below the live stream's (module docstring)."""
        self.db.execute("BEGIN IMMEDIATE")
        if self.checkpoint() is None:
            self.db.execute("INSERT INTO checkpoint VALUES (1, ?, ?, NULL, NULL, ?)",
                            (position_file, position_pos, time.time()))
            self.set_meta("capture_started_us", str(start_time_us))
            self._raise_earliest(start_time_us)
            if history_bytes and self.history_range() is None:
                self._reserve_history(history_bytes, (position_file, position_pos))
        self.db.execute("COMMIT")
        self._history = self.history_range()
        self.segments.id_range = self._segment_range()
        self._next_lsn = self._next_txn_id = None

    def _reserve_history(self, history_bytes: int, until: tuple[str, int]) -> None:
        """Number the live stream from above a range left for ``history_bytes`` of binlog."""
        most = history_bytes // MIN_EVENT_BYTES + 1
        lsn_first = self._allocate_lsn_peek()
        txn_first = self._allocate_txn_id()
        segment_ids = self.segments.segment_ids()
        segment_first = (segment_ids[-1] + 1) if segment_ids else 1
        segments = history_bytes // min(self.segments.max_bytes, MIN_SEGMENT_BYTES_FOR_RESERVE) + 2
        history = HistoryRange((lsn_first, lsn_first + most), (txn_first, txn_first + most),
                               (segment_first, segment_first + segments), until)
        self.set_meta(HISTORY_KEY, history.to_json())
        self.set_meta("last_lsn", str(history.lsn[1] - 1))
        # The live stream's txn ids come from AUTOINCREMENT's sequence: start it above the range.
        if self.db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'transactions'",
                           (history.txn[1] - 1,)).rowcount == 0:
            self.db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('transactions', ?)",
                            (history.txn[1] - 1,))

    def finish_history(self, since_us: int | None) -> int | None:
        """The backfill is over. When it stored everything up to the live start (``since_us``:
        where its history begins), the earliest backtrack time moves back to it, never before
        what retention evicted or a gap lost since; None: it could not (the history stays
        unclaimed). Returns the earliest backtrack time."""
        self._finish_group()
        self.db.execute("BEGIN IMMEDIATE")
        history = self.history_range()
        if since_us is not None:
            floor = max(since_us, int(self.get_meta("newest_evicted_us") or 0),
                        self.db.execute("SELECT COALESCE(MAX(detected_at_us), 0) FROM gaps").fetchone()[0])
            current = self.earliest_backtrack_time_us()
            if current is None or floor < current:
                self.set_meta("earliest_backtrack_time_us", str(floor))
        if history is not None:
            self.set_meta(HISTORY_KEY, HistoryRange(history.lsn, history.txn, history.segments,
                                                    history.until, done=True).to_json())
        self.db.execute("COMMIT")
        self._notify_commit()
        return self.earliest_backtrack_time_us()

    def table_map_id(self, schema: str, table: str, body: bytes, generated: list[str]) -> int:
        """The id of this table map (deduplicated; the 6-byte table id is not part of identity)."""
        # Every statement brings its table map again: the cache keeps the digest and the lookup
        # off that path.
        key = (bytes(body[6:]), tuple(generated))
        cached = self._table_map_ids.get(key)
        if cached is not None:
            return cached
        digest = hashlib.blake2b(key[0] + json.dumps(generated).encode(), digest_size=16).digest()
        row = self.db.execute("SELECT id FROM table_maps WHERE digest = ?", (digest,)).fetchone()
        if row is None:
            if not self.history_writer:  # the history writer's own: a short commit (``_flush_history``)
                self._begin_if_needed()
            cur = self.db.execute(
                "INSERT INTO table_maps (digest, schema_name, table_name, body, generated) VALUES (?,?,?,?,?)",
                (digest, schema, table, body, json.dumps(generated)),
            )
            row = (cur.lastrowid,)
        self._table_map_ids[key] = row[0]
        return row[0]

    def add_change(self, record: ChangeRecord) -> int:
        """Append one change record to the open transaction; returns its LSN."""
        return self.append_change(record.kind, record.event_type, record.body, record.table_map_id,
                                  record.default_schema)

    def append_change(self, kind: str, event_type: int, body: bytes, table_map_id: int | None = None,
                      default_schema: str | None = None) -> int:
        """``add_change`` without the record object (the streamer's per-event path). The body goes
        to the segment file at once and the index row in batches, so a huge transaction needs no
        memory."""
        lsn = self._next_lsn
        if lsn is None:
            lsn = self._allocate_lsn_peek()
        self._next_lsn = lsn + 1
        if self._txn_first_lsn is None:
            self._txn_first_lsn = lsn
            if self._open_from_lsn is None:
                self._open_from_lsn = lsn
        segment, offset = self.segments.append(body)
        size = len(body)
        # Compact change rows (module docstring): 0 for what the record before in this
        # transaction already says.
        txn_id = self._next_txn_id or self._allocate_txn_id()
        previous = self._previous
        if previous is None:
            self._previous = (event_type, table_map_id)
            stored = (txn_id, event_type, table_map_id)
        else:
            stored_map = table_map_id
            if table_map_id is not None:
                stored_map = 0 if table_map_id == previous[1] else table_map_id
                self._previous = (event_type, table_map_id)
            else:
                self._previous = (event_type, previous[1])
            stored = (0, 0 if event_type == previous[0] else event_type, stored_map)
        self._rows.append((lsn, stored[0], "" if kind == "rows" else kind, stored[1], stored[2],
                           segment, offset, size, default_schema))
        self._txn_bytes += size
        if len(self._rows) >= ROW_BATCH:
            self._spill()
        return lsn

    # -- rolled-back changes (rare: a group that ends in ROLLBACK or holds ROLLBACK TO SAVEPOINT) --
    def open_lsn_mark(self) -> int:
        """The LSN the open transaction's next record will get (a savepoint's place in it)."""
        return self._next_lsn if self._next_lsn is not None else self._allocate_lsn_peek()

    def open_rows_table_maps(self, from_lsn: int | None = None) -> dict[int, tuple[str, str]]:
        """Table map id -> (schema, table) of the open transaction's rows records (at or after
        ``from_lsn``). Writes the records held in memory to SQLite first (as a big transaction
        does), so that every record of the open transaction is in one place."""
        ids = {map_id for lsn, _, _, map_id, kind, _ in self._open_records()
               if not kind and map_id and (from_lsn is None or lsn >= from_lsn)}
        names = {}
        for map_id in ids:
            schema, table, _, _ = self.table_map(map_id)
            names[map_id] = (schema, table)
        return names

    def drop_open_changes(self, table_map_ids: set[int], from_lsn: int | None = None) -> int:
        """Remove the open transaction's rows records of ``table_map_ids`` (at or after
        ``from_lsn``): changes the server rolled back, which a binlog group still carries when
        the transaction also touched something non-transactional. Returns how many went.

        Removed rather than marked void: then every reader (``changes``, the planner, ``auroratrack
        changes``) sees only what was committed without knowing about this at all. The records
        are in the open SQLite transaction (``_spill``), so they leave in the same SQLite
        transaction as the checkpoint past the group. The kept records after the first removed
        one are rewritten with their full txn id, event type and table map id: a compact 0 means
        "as the record before", and the record before may be gone. Their bodies stay in the
        segment file as unreferenced bytes (not counted in ``n_bytes``), removed with it."""
        if not table_map_ids or self._txn_first_lsn is None:
            return 0
        dropped: list[tuple[int]] = []
        rewritten: list[tuple[int, int, int | None, int]] = []
        dropped_bytes = 0
        running_map: int | None = None  # the table map of the last kept rows record
        last_kept: tuple[int, int | None] | None = None
        first_kept: int | None = None
        kept = 0
        for lsn, txn_id, event_type, map_id, kind, length in self._open_records():
            if not kind and map_id in table_map_ids and (from_lsn is None or lsn >= from_lsn):
                dropped.append((lsn,))
                dropped_bytes += length
                continue
            if first_kept is None:
                first_kept = lsn
            kept += 1
            if dropped:
                rewritten.append((txn_id, event_type, map_id, lsn))
            if map_id is not None:
                running_map = map_id
            last_kept = (event_type, running_map)
        if not dropped:
            return 0
        self._begin_if_needed()  # the history writer commits its batches (``_spill``): join the next
        self.db.executemany("DELETE FROM changes WHERE lsn = ?", dropped)
        self.db.executemany("UPDATE changes SET txn_id = ?, event_type = ?, table_map_id = ? WHERE lsn = ?",
                            rewritten)
        self._txn_bytes -= dropped_bytes
        # The next record is written compact against the last one kept (or in full if none is).
        self._previous = last_kept
        self._txn_first_lsn = first_kept
        # The holes between the first record kept and the next LSN (n_changes leaves them out).
        self._txn_dropped = (self._next_lsn - first_kept) - kept if first_kept is not None else 0
        return len(dropped)

    def _open_records(self) -> Iterator[tuple[int, int, int, int | None, str, int]]:
        """The open transaction's records, in LSN order, with their txn id, event type and table
        map id resolved (compact rows): (lsn, txn_id, event_type, table_map_id, kind, length).
        Materialised: this runs only for a rolled-back group, and its caller rewrites rows."""
        if self._txn_first_lsn is None:
            return iter(())
        self._spill()
        rows = self.db.execute(
            "SELECT lsn, txn_id, event_type, table_map_id, kind, length FROM changes WHERE lsn >= ? "
            "ORDER BY lsn", (self._txn_first_lsn,)).fetchall()
        resolved = []
        txn_id = event_type = table_map = None
        for lsn, stored_txn, stored_type, stored_map, kind, length in rows:
            txn_id = stored_txn or txn_id
            event_type = stored_type or event_type
            if stored_map:
                table_map = stored_map
            map_id = table_map if stored_map == 0 else stored_map
            resolved.append((lsn, txn_id, event_type, map_id, kind, length))
        return iter(resolved)

    def commit_transaction(self, header: TransactionHeader, defer: bool = False) -> int:
        """Close the open transaction: its header, and the checkpoint after it, atomically; returns
        its txn_id. ``defer``: more transactions are coming right away (the caller is behind), so
        the SQLite commit may wait for them (group commit), up to the group bounds; the caller
        then calls ``commit_pending`` before it waits for anything. The history writer keeps the
        group in memory and writes it in one burst (``_flush_history``)."""
        in_memory = self.history_writer and not self._in_txn
        if not in_memory:
            self._begin_if_needed()
            if self._rows:
                self.db.executemany(_INSERT_CHANGE, self._rows)
                self._rows.clear()
        first_lsn = self._txn_first_lsn
        if first_lsn is None:  # a transaction with no change record (e.g. only a COMMIT)
            first_lsn = self._allocate_lsn_peek()
            last_lsn, n_changes = first_lsn - 1, 0
        else:
            last_lsn = self._next_lsn - 1
            n_changes = last_lsn - first_lsn + 1 - self._txn_dropped  # holes: rolled back records
        txn_id = self._next_txn_id or self._allocate_txn_id()
        flags, statements = header.flags, header.statements
        row = (
            txn_id, first_lsn, last_lsn, header.gtid, header.start_file, header.start_pos, header.end_file,
            header.end_pos, header.commit_time_us, header.time_precision, header.server_time, header.origin,
            _json(flags) if flags else "[]", _json(sorted(set(header.tables))),
            _json(statements) if statements else "[]", n_changes, self._txn_bytes, header.xa_xid,
        )
        if in_memory:
            self._txn_rows.append(row)
        else:
            self.db.execute(_INSERT_TRANSACTION, row)
        if not self._group_txns:
            self._group_started = time.monotonic()
        self._group_txns += 1
        self._group_bytes += self._txn_bytes
        self._group_last_lsn = last_lsn
        self._pending_checkpoint = (header.end_file, header.end_pos, txn_id, header.commit_time_us)
        self._next_txn_id = txn_id + 1
        self._reset_txn()
        # (The history writer holding a SQLite transaction open, rarely, commits at once.)
        if (not defer or self._group_txns >= GROUP_MAX_TRANSACTIONS or self._group_bytes >= GROUP_MAX_BYTES
                or time.monotonic() - self._group_started >= self.group_max_s
                or (self.history_writer and not in_memory)):
            self._finish_group()
        return txn_id

    def commit_pending(self) -> None:
        """Commit the complete transactions written so far (a deferred group), with the checkpoint
        after the last one. A no-op when there are none, or while a transaction too big for one
        batch streams in (the group before it was committed when it began)."""
        self._finish_group()

    def advance_checkpoint(self, log_file: str, log_pos: int) -> None:
        """Move the checkpoint past events that hold no transaction to keep (rotations, a rolled
        back XA). Callers make sure no binlog transaction is open; a SQLite transaction that is
        open (a deferred group, deleting a prepared XA entry) commits with it."""
        last_txn_id, last_commit_us = self._last_stored()
        self._begin_if_needed()
        self._pending_checkpoint = (log_file, log_pos, last_txn_id, last_commit_us)
        self._reset_txn()  # e.g. after ``take_xa_prepared`` for an XA ROLLBACK
        self._finish_group()

    def abort_transaction(self) -> None:
        """Forget the open transaction (the stream broke in its middle). Complete transactions of
        a deferred group are kept: they are committed with the checkpoint after them."""
        if self.history_writer and not self._hold_open:
            self._abort_history()
        else:
            self._rows.clear()
            if self._spilled:
                # Part of the open transaction is in SQLite: nothing else is (the group before it
                # was committed when it began), so rolling back loses no complete transaction.
                self.db.execute("ROLLBACK")
                self._in_txn = False
                self._spilled = False
            else:
                self._finish_group()
        self._reset_txn()
        self._next_lsn = None
        self._next_txn_id = None
        self._table_map_ids.clear()
        self.segments.close()
        self.segments.resume(self._committed_segment_ends())

    def record_gap(self, lost_from: str, resumed_at: str, reason: str, resumed_file: str,
                   resumed_pos: int) -> Gap:
        """Positions were lost: nothing before this moment can be rewound to any more."""
        self.abort_transaction()  # whatever was open is read again from the checkpoint
        detected = now_us()
        self.db.execute("BEGIN IMMEDIATE")
        ck = self.checkpoint()
        cur = self.db.execute(
            "INSERT INTO gaps (after_txn_id, lost_from, resumed_at, detected_at_us, reason) VALUES (?,?,?,?,?)",
            (ck.last_txn_id if ck else None, lost_from, resumed_at, detected, reason),
        )
        self._write_checkpoint(resumed_file, resumed_pos, ck.last_txn_id if ck else None,
                               ck.last_commit_time_us if ck else None)
        self._raise_earliest(detected)
        self.db.execute("COMMIT")
        return Gap(cur.lastrowid, ck.last_txn_id if ck else None, lost_from, resumed_at, detected, reason)

    # -- prepared XA transactions ------------------------------------------------------------------------
    def save_xa_prepared(self, xid: str, header: TransactionHeader, records: list[ChangeRecord],
                         log_file: str, log_pos: int) -> None:
        """Keep a prepared XA transaction's records until its outcome, with the checkpoint."""
        blob = json.dumps([[r.kind, r.event_type, r.table_map_id, r.body.hex(), r.default_schema]
                           for r in records]).encode()
        last_txn_id, last_commit_us = self._last_stored()
        self._begin_if_needed()
        self.db.execute("INSERT OR REPLACE INTO xa_prepared VALUES (?, ?, ?)",
                        (xid, json.dumps(header.__dict__), blob))
        self._pending_checkpoint = (log_file, log_pos, last_txn_id, last_commit_us)
        self._reset_txn()
        self._finish_group()

    def take_xa_prepared(self, xid: str) -> tuple[TransactionHeader, list[ChangeRecord]] | None:
        """The prepared transaction ``xid`` (removed when the caller's transaction commits)."""
        row = self.db.execute("SELECT header, records FROM xa_prepared WHERE xid = ?", (xid,)).fetchone()
        if row is None:
            return None
        # The entry leaves in the SQLite transaction that stores the transaction: commit any
        # group before it, and hold this one open however many records follow (as if spilled).
        self._finish_group()
        self._begin_if_needed()
        self._spilled = self._hold_open = True
        self.db.execute("DELETE FROM xa_prepared WHERE xid = ?", (xid,))
        header = TransactionHeader(**json.loads(row[0]))
        records = [ChangeRecord(k, t, bytes.fromhex(b), m, d) for k, t, m, b, d in json.loads(row[1])]
        return header, records

    # -- retention ------------------------------------------------------------------------------------------
    def evict(self, window_us: int | None, max_bytes: int | None, now: int | None = None) -> EvictionResult:
        """Drop whole transactions, oldest first, older than the window or beyond the size cap."""
        self._finish_group()
        if self._in_txn:  # a big transaction is streaming in: evict after it
            return EvictionResult(0, 0, self.earliest_backtrack_time_us())
        now = now or now_us()
        evicted = evicted_bytes = 0
        newest_evicted_time: int | None = None
        self.db.execute("BEGIN IMMEDIATE")
        stored = int(self.get_meta("stored_bytes") or 0)
        # Held tables (proxy.ddlretention) count toward the cap and leave with their transaction.
        held = _held_tables(self.path.parent / HELD_FILE) if max_bytes is not None else []
        held_bytes = sum(size for _, size in held)
        cutoff = now - window_us if window_us is not None else None
        for txn_id, first, last, t, size in self._oldest_transactions():
            while held and held[0][0] < t:
                held_bytes -= held.pop(0)[1]
            too_old = cutoff is not None and t < cutoff
            too_big = max_bytes is not None and stored + held_bytes > max_bytes
            if not (too_old or too_big):
                break
            self.db.execute("DELETE FROM changes WHERE lsn BETWEEN ? AND ?", (first, last))
            self.db.execute("DELETE FROM transactions WHERE txn_id = ?", (txn_id,))
            stored -= size
            evicted += 1
            evicted_bytes += size
            newest_evicted_time = t
        if evicted:
            self.set_meta("stored_bytes", str(stored))
            row = self.db.execute("SELECT segment FROM changes ORDER BY lsn LIMIT 1").fetchone()
            oldest = row[0] if row else None
            history = self.history_range()
            if history is not None and not history.done:  # never under the backfill's appends
                oldest = min(oldest if oldest is not None else 1 << 62, history.segments[0])
            self._raise_earliest(newest_evicted_time)
            if newest_evicted_time > int(self.get_meta("newest_evicted_us") or 0):
                self.set_meta("newest_evicted_us", str(newest_evicted_time))
            self.set_meta("evicted_transactions",
                          str(int(self.get_meta("evicted_transactions") or 0) + evicted))
        self.db.execute("COMMIT")
        if evicted:
            self._notify_commit()
            self.segments.delete_before(oldest if oldest is not None else 1 << 62)
        return EvictionResult(evicted, evicted_bytes, self.earliest_backtrack_time_us())

    def _oldest_transactions(self, batch: int = 256) -> Iterator[tuple[int, int, int, int, int]]:
        """Stored transactions, oldest first, read a batch at a time: eviction runs every second
        and stops at the first transaction it keeps, so reading them all (millions, in a full
        window) each time would cost more than capture itself."""
        after = -1
        while True:
            rows = self.db.execute(
                "SELECT txn_id, first_lsn, last_lsn, commit_time_us, n_bytes FROM transactions "
                "WHERE txn_id > ? ORDER BY txn_id LIMIT ?", (after, batch)
            ).fetchall()
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def earliest_backtrack_time_us(self) -> int | None:
        value = self.get_meta("earliest_backtrack_time_us")
        return int(value) if value is not None else None

    def _raise_earliest(self, t_us: int | None) -> None:
        if t_us is None:
            return
        current = self.earliest_backtrack_time_us()
        if current is None or t_us > current:
            self.set_meta("earliest_backtrack_time_us", str(t_us))

    # -- readers ------------------------------------------------------------------------------------------------
    def transactions(self, after_txn_id: int = 0, since_us: int | None = None,
                     until_us: int | None = None, newest_first: bool = False,
                     limit: int | None = None) -> list[StoredTransaction]:
        sql = "SELECT * FROM transactions WHERE txn_id > ?"
        args: list = [after_txn_id]
        if since_us is not None:
            sql += " AND commit_time_us >= ?"
            args.append(since_us)
        if until_us is not None:
            sql += " AND commit_time_us <= ?"
            args.append(until_us)
        sql += " ORDER BY txn_id" + (" DESC" if newest_first else "")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [self._txn_from_row(row) for row in self.db.execute(sql, args)]

    def transaction(self, txn_id: int) -> StoredTransaction | None:
        row = self.db.execute("SELECT * FROM transactions WHERE txn_id = ?", (txn_id,)).fetchone()
        return self._txn_from_row(row) if row else None

    def changes(self, first_lsn: int, last_lsn: int) -> Iterator[StoredChange]:
        rows = self.db.execute(
            "SELECT lsn, txn_id, kind, event_type, table_map_id, segment, offset, length, default_schema "
            "FROM changes WHERE lsn BETWEEN ? AND ? ORDER BY lsn", (first_lsn, last_lsn),
        )
        txn_id = event_type = table_map_id = None  # the values a 0 stands for (module docstring)
        for lsn, stored_txn, kind, stored_type, stored_map, segment, offset, length, default_schema in rows:
            if stored_txn:
                txn_id = stored_txn
            elif txn_id is None:
                txn_id = self._value_before("txn_id", lsn)
            if stored_type:
                event_type = stored_type
            elif event_type is None:
                event_type = self._value_before("event_type", lsn)
            map_id = stored_map
            if stored_map == 0:
                if table_map_id is None:
                    table_map_id = self._value_before("table_map_id", lsn)
                map_id = table_map_id
            elif stored_map is not None:
                table_map_id = stored_map
            body = self.segments.read(segment, offset, length)
            yield StoredChange(lsn, txn_id, kind or "rows", event_type, map_id, body, default_schema)

    def _value_before(self, column: str, lsn: int) -> int | None:
        """The last value written in full in ``column`` before ``lsn`` (a read that starts in the
        middle of a transaction; its first record has them all, so this scans back within it)."""
        row = self.db.execute(f"SELECT {column} FROM changes WHERE lsn < ? AND {column} > 0 "  # noqa: S608
                              "ORDER BY lsn DESC LIMIT 1", (lsn,)).fetchone()
        return row[0] if row else None

    def table_map(self, table_map_id: int) -> tuple[str, str, bytes, list[str]]:
        row = self.db.execute(
            "SELECT schema_name, table_name, body, generated FROM table_maps WHERE id = ?", (table_map_id,)
        ).fetchone()
        return row[0], row[1], row[2], json.loads(row[3])

    def gaps(self) -> list[Gap]:
        return [Gap(*row) for row in self.db.execute("SELECT * FROM gaps ORDER BY id")]

    def stats(self) -> dict:
        n_txn, n_first, n_last, oldest, newest = self.db.execute(
            "SELECT COUNT(*), MIN(first_lsn), MAX(last_lsn), MIN(commit_time_us), MAX(commit_time_us) FROM transactions"
        ).fetchone()
        n_changes = self.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
        return {
            "transactions": n_txn,
            "store_file_bytes": self.file_bytes(),
            "change_records": n_changes,
            "stored_bytes": int(self.get_meta("stored_bytes") or 0),
            "oldest_commit_time_us": oldest,
            "newest_commit_time_us": newest,
            "earliest_backtrack_time_us": self.earliest_backtrack_time_us(),
            "evicted_transactions": int(self.get_meta("evicted_transactions") or 0),
        }

    def checkpoint_wal(self, truncate_above_bytes: int = WAL_TRUNCATE_BYTES) -> None:
        """Copy the WAL into the database file (PASSIVE: never waits for the writer or readers).
        Called at most every second, after commits, from a thread with its own ``ChangeStore``.

        A WAL only starts over once a checkpoint has copied all of it before the writer's next
        commit, which a writer that never pauses (capture behind a steady load) does not allow:
        measured, it grew to 1.5 GB over 46k transactions. Past ``truncate_above_bytes`` a
        TRUNCATE checkpoint waits briefly for a gap between commits and empties it."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        wal = self.path.with_name(self.path.name + "-wal")
        with contextlib.suppress(OSError):
            if wal.stat().st_size > truncate_above_bytes:
                self.db.execute("PRAGMA busy_timeout = 200")  # never hold capture up for long
                try:
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    self.db.execute("PRAGMA busy_timeout = 30000")

    def file_bytes(self) -> int:
        """Bytes on disk: the database, its WAL and the segment files."""
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists()) + self.segments.total_bytes()

    def close(self) -> None:
        if not self.readonly:
            self._finish_group()
        self.segments.close()
        self.db.close()

    # -- internals -----------------------------------------------------------------------------------------------
    def _begin_if_needed(self) -> None:
        if not self._in_txn:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_txn = True

    def _allocate_txn_id(self) -> int:
        """The id the open transaction will get (known ahead, so its changes are written with
        it at once; AUTOINCREMENT's sequence makes it never reused)."""
        if self._next_txn_id is None:
            if self.history_writer:
                first, end = self._history.txn
                row = self.db.execute("SELECT MAX(txn_id) FROM transactions WHERE txn_id >= ? AND txn_id < ?",
                                      (first, end)).fetchone()
                self._next_txn_id = max(row[0] + 1 if row[0] else first, first)
            else:
                row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'transactions'").fetchone()
                self._next_txn_id = (row[0] if row else 0) + 1
        if self.history_writer and self._next_txn_id >= self._history.txn[1]:
            raise RuntimeError("the txn ids reserved for history are all used")
        return self._next_txn_id

    def _committed_segment_ends(self) -> dict[int, int]:
        """Segment -> committed end, for the newest segment in use. Segments fill in LSN order,
        so every older segment is whole and the last LSN marks the end of committed bytes."""
        first, end = self._own_lsns()
        row = self.db.execute("SELECT segment, offset + length FROM changes WHERE lsn >= ? AND lsn < ? "
                              "ORDER BY lsn DESC LIMIT 1", (first, end)).fetchone()
        return {row[0]: row[1]} if row else {}

    def _own_lsns(self) -> tuple[int, int]:
        """[first, end) of the LSNs this writer gives (the live stream's start above the history's)."""
        history = self._history
        if history is None:
            return (0, 1 << 62)
        return history.lsn if self.history_writer else (history.lsn[1], 1 << 62)

    def _allocate_lsn(self) -> int:
        lsn = self._allocate_lsn_peek()
        self._next_lsn = lsn + 1
        return lsn

    def _allocate_lsn_peek(self) -> int:
        if self._next_lsn is None and self.history_writer:
            first, end = self._history.lsn
            row = self.db.execute(
                "SELECT MAX(m) FROM (SELECT MAX(lsn) AS m FROM changes WHERE lsn >= ?1 AND lsn < ?2 UNION ALL "
                "SELECT MAX(last_lsn) FROM transactions WHERE txn_id >= ?3 AND txn_id < ?4)",
                (first, end, *self._history.txn)).fetchone()
            self._next_lsn = max((row[0] or 0) + 1, first)
        if self._next_lsn is None:
            row = self.db.execute(
                "SELECT MAX(m) FROM (SELECT MAX(lsn) AS m FROM changes UNION ALL "
                "SELECT MAX(last_lsn) FROM transactions)"
            ).fetchone()
            stored = self.get_meta("last_lsn")
            self._next_lsn = max(row[0] or 0, int(stored) if stored else 0) + 1
        return self._next_lsn

    def _write_checkpoint(self, log_file: str, log_pos: int, txn_id: int | None, t_us: int | None) -> None:
        if self.history_writer:
            self.set_meta(HISTORY_CHECKPOINT_KEY, json.dumps([log_file, log_pos, txn_id, t_us]))
            return
        self.db.execute(
            "INSERT INTO checkpoint VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "log_file = excluded.log_file, log_pos = excluded.log_pos, last_txn_id = excluded.last_txn_id, "
            "last_commit_time_us = excluded.last_commit_time_us, updated_at = excluded.updated_at",
            (log_file, log_pos, txn_id, t_us, time.time()),
        )

    def _last_stored(self) -> tuple[int | None, int | None]:
        """(txn_id, commit time) of the last stored transaction, committed or in the open group."""
        if self._pending_checkpoint is not None:
            return self._pending_checkpoint[2], self._pending_checkpoint[3]
        ck = self.checkpoint()
        return (ck.last_txn_id, ck.last_commit_time_us) if ck else (None, None)

    def _spill(self) -> None:
        """Write the open transaction's batch of records; the first time, commit the complete
        transactions before it, so that a failure in this one never takes them along."""
        if self.history_writer and not self._hold_open:
            # Never hold the write lock for a whole big transaction: the live stream commits
            # between its batches. They are orphans (no transaction row points at them, so no
            # reader sees them) until it commits; an abort or a restart deletes them.
            self._spilled = True
            self._flush_history()
            return
        if not self._spilled:
            self._finish_group()
            self._spilled = True
        self._begin_if_needed()
        self.db.executemany(_INSERT_CHANGE, self._rows)
        self._rows.clear()

    def _finish_group(self) -> None:
        """COMMIT the open SQLite transaction with the pending checkpoint and counters, unless a
        transaction is streaming in (then nothing but its own records is open)."""
        if self.history_writer:
            self._flush_history()
            return
        if not self._in_txn or self._spilled:
            return
        if self._pending_checkpoint is not None:
            self._write_checkpoint(*self._pending_checkpoint)
            if self._group_last_lsn:
                self.db.execute(_UPDATE_COUNTERS, (self._group_bytes, str(self._group_last_lsn)))
        self._commit_group()

    def _commit_group(self) -> None:
        """Commit the open group of transactions (live or history writer alike)."""
        self.segments.flush()  # the bodies reach the OS before the rows that point at them commit
        self.db.execute("COMMIT")
        self._in_txn = False
        self._group_txns = self._group_bytes = 0
        self._group_last_lsn = None
        self._pending_checkpoint = None
        self._notify_commit()

    def _notify_commit(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    def _reset_txn(self) -> None:
        """The open binlog transaction is done (stored or forgotten)."""
        self._previous = None
        self._txn_bytes = 0
        self._txn_first_lsn = None
        self._txn_dropped = 0
        self._spilled = False
        self._hold_open = False
        self._open_from_lsn = None

    def _abort_history(self) -> None:
        """History writer: keep the group's complete transactions, forget the open one (its
        records in memory; those already written, orphans, are deleted)."""
        if self._in_txn:  # only the open transaction's rows are in it (``commit_transaction``)
            self.db.execute("ROLLBACK")
            self._in_txn = False
        open_from = self._open_from_lsn
        if open_from is not None:
            self._rows = [row for row in self._rows if row[0] < open_from]
        self._spilled = False
        self._flush_history()
        self._drop_orphans()

    def _flush_history(self) -> None:
        """History writer: write what the group holds in memory (complete transactions with the
        checkpoint after them, and the open one's records so far, orphans until it commits) in
        one short SQLite transaction: the write lock is held for milliseconds, and the live
        stream's commits get in between (measured: holding it through a 20 ms group, the live
        stream's busy waits rarely found it free, and its lag grew to the backfill's length)."""
        if self._spilled and self._hold_open:
            return  # a taken XA transaction commits whole, with its entry's removal
        if not (self._in_txn or self._rows or self._txn_rows or self._pending_checkpoint):
            return
        self._begin_if_needed()
        if self._rows:
            self.db.executemany(_INSERT_CHANGE, self._rows)
            self._rows.clear()
        if self._txn_rows:
            self.db.executemany(_INSERT_TRANSACTION, self._txn_rows)
            self._txn_rows.clear()
        if self._pending_checkpoint is not None:
            self._write_checkpoint(*self._pending_checkpoint)
            self.db.execute(_ADD_STORED_BYTES, (self._group_bytes,))
        self._commit_group()

    def _drop_orphans(self) -> None:
        """History writer: delete the change rows of a transaction it never committed (past the
        last transaction stored in its range; all of them when retention took every one)."""
        first, end = self._history.lsn
        newest = self.db.execute("SELECT MAX(last_lsn) FROM transactions WHERE txn_id >= ? AND txn_id < ?",
                                 self._history.txn).fetchone()[0]
        self.db.execute("DELETE FROM changes WHERE lsn > ? AND lsn < ?", (max(newest or 0, first - 1), end))

    @staticmethod
    def _txn_from_row(row) -> StoredTransaction:
        values = list(row)
        for i in (12, 13, 14):  # flags, tables, statements
            values[i] = tuple(json.loads(values[i]))
        return StoredTransaction(*values)


def wait_for_checkpoint(store_path: Path, target: tuple[str, int], timeout: float,
                        poll_s: float = 0.01) -> None:
    """Block until the store at ``store_path`` holds everything up to the binlog position
    ``target`` (its checkpoint is at or past it); ``TimeoutError`` after ``timeout`` seconds.
    Opens the store read-only on each look, so the writer's progress is seen at once."""
    deadline = time.monotonic() + timeout
    while True:
        store = ChangeStore(store_path, readonly=True)
        try:
            checkpoint = store.checkpoint()
        finally:
            store.close()
        if checkpoint is not None and (checkpoint.log_file, checkpoint.log_pos) >= target:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the changelog did not catch up with the server ({checkpoint} < {target})")
        time.sleep(poll_s)


def _held_tables(path: Path) -> list[tuple[int, int]]:
    """(held at, bytes) of each held table, oldest first ([] without the file)."""
    try:
        return sorted((int(t), int(b)) for t, b in json.loads(path.read_text()).get("ops", []))
    except (OSError, ValueError, TypeError, AttributeError):
        return []
