#!/usr/bin/env python3
"""Undo benchmark: ``auroratrack backtrack`` against ``mariadb-binlog --flashback | mariadb``.

Requirement: undo a 1,000,000-row DELETE and a 1,000,000-row UPDATE on a sysbench table. Time
``auroratrack backtrack`` (and how long clients were paused) against ``mariadb-binlog
--flashback ... | mariadb`` over the same range, in the same run, with checksums verified for
both. Targets: faster than the MariaDB tool, and no slower than the mistake itself took to run.
A one-row backtrack must pause clients for under one second.

Method (everything on 127.0.0.1 and unix sockets, in a temp dir that is removed at the end):

* A private MariaDB (``proxy.sandbox.PrivateServer``; ROW binlog, FULL image, FULL metadata,
  ``--innodb-buffer-pool-size=1G --max-allowed-packet=1G``). The table ``undobench.sbtest1`` is
  sysbench's (id INT PK, k INT, c CHAR(120), pad CHAR(60), KEY(k)), with ``--rows`` rows of
  sysbench-like content: k random in [1, rows], c and pad groups of 11 random digits joined by
  '-'. The server generates the rows (INSERT ... SELECT from the seq engine). The load and the
  template copy ``undobench_tpl.sbtest1`` are written with ``sql_log_bin=0``: they are not part
  of any measured range. The baseline checksum is ``CHECKSUM TABLE`` together with
  ``COUNT(*), SUM(CRC32(CONCAT_WS(0x1f, id, k, c, pad)))``.
* auroratrack runs in this process (``BackgroundService``, capture on, proxy and admin API on
  free ports), exactly as ``auroratrack serve`` would run it.
* One trial is one mistake and one tool undoing it, on a settled server: before each trial the
  bench waits until InnoDB has flushed its dirty pages and purged old row versions (at most
  2 minutes; the wait is recorded as ``settled_s``), so no trial pays for the one before it.
    1. wait until the change store has everything the server logged, then ``FLUSH BINARY
       LOGS``, so the mistake starts a binlog file of its own (position P);
    2. note the time T, wait 1.05 s (so no second-resolution timestamp of the mistake can
       fall at or before T), then run the mistake through the proxy as a client would, and time
       it ("forward"). Read the end position E, then ``FLUSH BINARY LOGS`` again;
    3. wait until the change store has the mistake (a backtrack never starts before capture
       has caught up in practice; the capture time is recorded, not counted);
    4. undo with one tool:
       - ``auroratrack``: ``Backtracker.request(BacktrackRequest(to=T))`` and ``wait``, the code
         behind ``auroratrack backtrack --to T``. "total" is request to completed record, "paused"
         is ``record.durations['paused_s']``: from closing the gate to reopening it. The planned
         row counts must equal the mistake (the right transaction, and only it, was undone);
       - ``flashback``: ``mariadb-binlog --no-defaults --flashback --start-position=P
         --stop-position=E <datadir>/<file> | mariadb --no-defaults -S <socket> -u root
         --max-allowed-packet=1G``, timed from start until both processes exit;
       - ``auroratrack-in-pause``: the same, with the early writes turned off (``write_early``
         refuses, so the pause writes the whole undo, as before issue 16): the baseline that the
         pause and the total of the early writes are compared with, in the same run, under the
         conditions the figures before early writes were measured in (no writer);
       During the ``auroratrack`` undo a second client of the proxy (``ClientWriter``) inserts a
       row of its own (an id above the table's) every 20 ms until the pause drops it: rows after
       the point, so undone as well (the plan must hold exactly the mistake's rows and the
       writer's). Its longest INSERT among those that overlapped the early writes is "writer
       wait": the undo never touches those rows, so it should not wait at all. Its longest
       INSERT between the plan and the early writes is the machine's noise to compare it with;
    5. verify the checksum equals the baseline. If it does not, the table is rebuilt from the
       template (so the following trials start from the baseline) and the trial is marked failed.
  A client of the proxy runs ``SELECT 1`` every 20 ms during every trial. "client stall" is the
  longest gap it saw between two answers while the undo ran (reconnections included: a backtrack
  drops every client connection). It shows the pause as a client lives it.
* Each round runs every case with both tools. The order of the tools alternates between
  rounds: the table's physical state and the server's caches favour neither tool.
* When auroratrack misses a target on a case, or with ``--profile on``, an extra trial runs that
  case with the apply profiled. It is not in the table. It reports the wall time of each phase
  of ``Backtracker._plan_and_apply`` and the time spent in each kind of SQL statement (measured
  around ``cursor.execute``, so it includes the round trip and the server's work). It also runs
  cProfile over the apply thread. Statements in the apply's writer thread overlap with the
  Python work that builds the next one.

How to read the numbers:

* Medians over the rounds. The ratios are paired within each round: auroratrack/flashback uses
  the two undos of the same round, auroratrack/forward uses the mistake that auroratrack undid.
  Below 1 means auroratrack is faster.
* "paused" is what every client of the proxy waits for: commands and connections are held while
  the gate is closed. The flashback does not pause anyone. It replays the inverse rows while
  clients keep writing, and it has no conflict check, so it is not a like-for-like safety level.
* The machine is shared: the load average at the start, at the end and at each trial is
  printed and saved. Wall times on a loaded 2-core machine vary by tens of percent, so compare
  the tools within a round.

Usage: ``.venv/bin/python bench/undo_bench.py [--rows 1000000] [--rounds 2]
[--cases delete_all,update_all,delete_one] [--profile auto|on|off]``. Targets checked: faster than
flashback, no slower than the mistake, and (issue 16) clients paused under 1 s in every case with
a total no slower than the in-pause apply. Raw results are written to
``bench/results/undo_bench-<time>.json`` after every trial; ``--report FILE`` prints the report of
a saved file again. A quick check: ``--rows 20000 --rounds 1`` (about a minute). The full run
(1M rows, 2 rounds, profiles) takes 10-20 minutes, longer on a busy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import logging
import os
import platform
import pstats
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

import pymysql  # noqa: E402

from proxy import backtrack as backtrack_module  # noqa: E402
from proxy import rewind  # noqa: E402
from proxy.backtrack import BacktrackRecord, BacktrackRequest  # noqa: E402
from proxy.changelog.store import wait_for_checkpoint  # noqa: E402
from proxy.changelog.streamer import current_binlog_position  # noqa: E402
from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer  # noqa: E402
from proxy.serveradmin import UpstreamCredentials  # noqa: E402
from proxy.service import BackgroundService, ServeConfig  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
SERVER_ARGS = ("--innodb-buffer-pool-size=1G", "--max-allowed-packet=1G")
SCHEMA = "undobench"
TEMPLATE = "undobench_tpl"
TABLE = f"{SCHEMA}.sbtest1"
# auroratrack-in-pause: the same backtrack with its early writes turned off (the whole undo written
# in the pause, as before issue 16): the baseline of the pause and total, measured in the same run.
TOOLS = ("auroratrack", "flashback", "auroratrack-in-pause")
AURORATRACK_TOOLS = ("auroratrack", "auroratrack-in-pause")
BULK_CASES = ("delete_all", "update_all")  # the speed targets apply to these; delete_one has the pause target
TARGET_ONE_ROW_PAUSE_S = 1.0
TARGET_PAUSE_S = 1.0  # every case, with early writes
PROBE_INTERVAL_S = 0.02
UNDO_TIMEOUT_S = 3600.0
CAPTURE_TIMEOUT_S = 1800.0
SETTLE_TIMEOUT_S = 120.0  # before each trial: dirty pages flushed and old versions purged, or this long
SETTLED_DIRTY_PAGES = 200
SETTLED_HISTORY = 1000
Position = tuple[str, int]


def progress(message: str) -> None:
    print(f"[undo-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One mistake: its SQL and the net row counts a correct backtrack of it plans."""

    name: str
    label: str
    sql: str
    rows: int
    expected_plan: dict[str, int]


def make_cases(rows: int, one_row_id: int) -> dict[str, Case]:
    return {c.name: c for c in (
        Case("delete_all", "DELETE all rows", f"DELETE FROM {TABLE}", rows,
             {"delete": 0, "reinsert": rows, "restore": 0}),
        Case("update_all", "UPDATE all rows (k=k+1, c=REVERSE(c))",
             f"UPDATE {TABLE} SET k = k + 1, c = REVERSE(c)", rows,
             {"delete": 0, "reinsert": 0, "restore": rows}),
        Case("delete_one", "DELETE one row", f"DELETE FROM {TABLE} WHERE id = {one_row_id}", 1,
             {"delete": 0, "reinsert": 1, "restore": 0}),
    )}


@dataclass(frozen=True)
class BenchConfig:
    rows: int
    rounds: int
    cases: tuple[str, ...]
    profile: str  # auto | on | off
    results_dir: Path
    report: Path | None = None  # print the report of this saved result file, run nothing
    writer: bool = True  # a client writing rows of its own during the early-write undo


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the table [1000000]")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; tool order alternates [2]")
    parser.add_argument("--cases", default="delete_all,update_all,delete_one",
                        help="comma-separated: delete_all, update_all, delete_one [all three]")
    parser.add_argument("--no-writer", action="store_true",
                        help="no client writing during the undo (what the writer itself costs the undo)")
    parser.add_argument("--profile", choices=("auto", "on", "off"), default="auto",
                        help="profiled extra trial: when a target is missed (auto), always, never [auto]")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report", type=Path, metavar="JSON", help="only print the report of a saved result file")
    args = parser.parse_args(argv)
    cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    unknown = set(cases) - set(make_cases(1, 1))
    if unknown or not cases:
        parser.error(f"unknown case(s) {sorted(unknown)}; use delete_all, update_all, delete_one")
    if args.rows < 2 or args.rounds < 1:
        parser.error("--rows must be at least 2 and --rounds at least 1")
    return BenchConfig(args.rows, args.rounds, cases, args.profile, args.results_dir, args.report,
                       writer=not args.no_writer)


# -- the server and its data -------------------------------------------------------------------------------


def root_connect(server: PrivateServer) -> pymysql.Connection:
    return pymysql.connect(unix_socket=str(server.socket_path), user="root", autocommit=True)


def execute(conn: pymysql.Connection, sql: str) -> int:
    with conn.cursor() as cur:
        return cur.execute(f"/* undo bench */ {sql}")


def query_one(conn: pymysql.Connection, sql: str) -> tuple:
    with conn.cursor() as cur:
        cur.execute(f"/* undo bench */ {sql}")
        return cur.fetchone()


def random_digits_sql(groups: int) -> str:
    """sysbench's c/pad pattern (groups of 11 random digits joined by '-'), made by the server."""
    group = "LPAD(FLOOR(RAND() * 100000000000), 11, '0')"
    return "CONCAT_WS('-', " + ", ".join([group] * groups) + ")"


def load_table(server: PrivateServer, rows: int) -> None:
    """The sysbench-like table and its template copy, neither of them binlogged."""
    with root_connect(server) as conn:
        execute(conn, "SET SESSION sql_log_bin = 0")
        for schema in (SCHEMA, TEMPLATE):
            execute(conn, f"DROP DATABASE IF EXISTS {schema}")
            execute(conn, f"CREATE DATABASE {schema}")
        execute(conn, f"CREATE TABLE {TABLE} (id INT NOT NULL PRIMARY KEY, k INT NOT NULL DEFAULT 0, "
                      "c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB")
        execute(conn, f"INSERT INTO {TABLE} (id, k, c, pad) SELECT seq, 1 + FLOOR(RAND() * {rows}), "
                      f"{random_digits_sql(10)}, {random_digits_sql(5)} FROM {SCHEMA}.seq_1_to_{rows}")
        execute(conn, f"CREATE TABLE {TEMPLATE}.sbtest1 LIKE {TABLE}")
        execute(conn, f"INSERT INTO {TEMPLATE}.sbtest1 SELECT * FROM {TABLE}")


def restore_from_template(server: PrivateServer) -> None:
    with root_connect(server) as conn:
        execute(conn, "SET SESSION sql_log_bin = 0")
        execute(conn, f"TRUNCATE TABLE {TABLE}")
        execute(conn, f"INSERT INTO {TABLE} SELECT * FROM {TEMPLATE}.sbtest1")


def checksum(server: PrivateServer) -> list:
    """CHECKSUM TABLE, row count and the sum of every row's CRC32."""
    with root_connect(server) as conn:
        table_sum = query_one(conn, f"CHECKSUM TABLE {TABLE}")[1]
        count, crc = query_one(conn, f"SELECT COUNT(*), SUM(CRC32(CONCAT_WS(0x1f, id, k, c, pad))) FROM {TABLE}")
    return [int(table_sum), int(count), int(crc or 0)]


def wait_captured(server: PrivateServer, store_path: Path, timeout: float = CAPTURE_TIMEOUT_S) -> float:
    """Until the change store has everything the server has logged; returns the seconds waited."""
    started = time.perf_counter()
    with root_connect(server) as conn:
        target = current_binlog_position(conn)
    wait_for_checkpoint(store_path, target, timeout, poll_s=0.02)
    return time.perf_counter() - started


# -- a client of the proxy ----------------------------------------------------------------------------------


class ClientProbe:
    """A proxy client that runs ``SELECT 1`` every 20 ms and reconnects when dropped. Between
    ``open_window`` and ``close_window`` it keeps the longest gap between two answers."""

    def __init__(self, port: int):
        self.port = port
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_ok: float | None = None
        self._gap: float | None = None  # None: no window open
        self.reconnects = 0
        self._thread = threading.Thread(target=self._loop, name="undo-bench-client", daemon=True)

    def start(self) -> ClientProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=150)

    def open_window(self) -> None:
        with self._lock:
            self._gap = 0.0
            self.reconnects = 0

    def close_window(self, timeout: float = 120.0) -> float | None:
        """The longest gap, once the client has had an answer after this call (None: no answer)."""
        closed = time.perf_counter()
        deadline = closed + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                if self._last_ok is not None and self._last_ok > closed:
                    gap, self._gap = self._gap, None
                    return gap
            time.sleep(0.005)
        with self._lock:
            self._gap = None
        return None

    def _loop(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = pymysql.connect(host="127.0.0.1", port=self.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                           autocommit=True, connect_timeout=120, read_timeout=120)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                    cur.fetchall()
            except (pymysql.MySQLError, OSError):
                conn = self._discard(conn)
                self._stop.wait(0.005)
                continue
            self._answered(time.perf_counter())
            self._stop.wait(PROBE_INTERVAL_S)
        self._discard(conn)

    def _answered(self, now: float) -> None:
        with self._lock:
            if self._gap is not None and self._last_ok is not None:
                self._gap = max(self._gap, now - self._last_ok)
            self._last_ok = now

    def _discard(self, conn: pymysql.Connection | None) -> None:
        if conn is not None:
            self.reconnects += 1
            with contextlib.suppress(Exception):
                conn.close()
        return None


class ClientWriter:
    """A proxy client that inserts a new row (an id above the table's) every 20 ms while an
    auroratrack undo runs, and times each INSERT. Those rows are not the undo's (it never
    touches them), so with early writes on it must never wait for them; they are committed after
    the point, so the backtrack undoes them too. It stops at its first error: the pause drops it
    (written after the pause, a row would not be undone, and the checksum would differ)."""

    def __init__(self, port: int, first_id: int):
        self.port = port
        self.next_id = first_id
        self.acknowledged = 0
        self.statements: list[tuple[float, float]] = []  # (wall time sent, seconds to its answer)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="undo-bench-writer", daemon=True)

    def start(self) -> ClientWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=150)

    def longest_wait(self, began: float, ended: float) -> float | None:
        """The longest INSERT that overlapped the wall-time window [began, ended]."""
        waits = [sec for sent, sec in self.statements if sent <= ended and sent + sec >= began]
        return max(waits) if waits else None

    def _loop(self) -> None:
        try:
            conn = pymysql.connect(host="127.0.0.1", port=self.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                   autocommit=True, connect_timeout=120, read_timeout=120)
        except (pymysql.MySQLError, OSError):
            return
        try:
            while not self._stop.is_set():
                sent, began = time.time(), time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO {TABLE} (id, k, c, pad) VALUES (%s, 1, 'written during the undo', '')",
                                (self.next_id,))
                self.statements.append((sent, time.perf_counter() - began))
                self.next_id += 1
                self.acknowledged += 1
                self._stop.wait(PROBE_INTERVAL_S)
        except (pymysql.MySQLError, OSError):
            pass  # dropped by the pause: done
        finally:
            with contextlib.suppress(Exception):
                conn.close()


@contextlib.contextmanager
def early_writes_off() -> Iterator[None]:
    """The backtrack as it ran before early writes: ``write_early`` refuses, so the pause applies
    the whole undo (the fallback every failure of the early writes takes)."""
    def refuse(*_args, **_kwargs):
        raise backtrack_module.EarlyWritesUnusable("turned off by the benchmark (the in-pause baseline)")

    original = backtrack_module.write_early
    backtrack_module.write_early = refuse
    try:
        yield
    finally:
        backtrack_module.write_early = original


# -- the rig ---------------------------------------------------------------------------------------------------


@dataclass
class Rig:
    """The server, auroratrack in front of it, the baseline and the client probe."""

    server: PrivateServer
    service: BackgroundService
    baseline: list
    probe: ClientProbe
    undos: list = field(default_factory=list)  # cases undone by auroratrack so far (writer ids stay unique)
    writer: bool = True

    @property
    def store_path(self) -> Path:
        return self.service.service.config.store_path

    def wait_captured(self) -> float:
        return wait_captured(self.server, self.store_path)


def start_service(server: PrivateServer, work: Path) -> BackgroundService:
    config = ServeConfig(upstream=UpstreamCredentials("127.0.0.1", server.port, ADMIN_USER, ADMIN_PASSWORD),
                         listen_port=0, admin_port=0, data_dir=work / "auroratrack", capture=True,
                         log_level="WARNING")
    return BackgroundService(config).start()


# -- one trial ---------------------------------------------------------------------------------------------------


@dataclass
class Mistake:
    case: str
    file: str
    start: int
    end: int
    before: str  # ISO time just before the mistake: the backtrack's --to
    forward_s: float
    affected: int
    capture_s: float


def binlog_position(server: PrivateServer, flush: bool = False) -> Position:
    with root_connect(server) as conn:
        if flush:
            execute(conn, "FLUSH BINARY LOGS")
        return current_binlog_position(conn)


def run_mistake(rig: Rig, case: Case) -> Mistake:
    """The mistake through the proxy, alone in its binlog file, then captured."""
    rig.wait_captured()
    file, start = binlog_position(rig.server, flush=True)
    before = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.05)
    with pymysql.connect(host="127.0.0.1", port=rig.service.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                         autocommit=True) as conn:
        began = time.perf_counter()
        affected = execute(conn, case.sql)
        forward_s = time.perf_counter() - began
    end_file, end = binlog_position(rig.server)
    binlog_position(rig.server, flush=True)
    if end_file != file or affected != case.rows:
        raise RuntimeError(f"{case.name}: the mistake changed {affected} rows (expected {case.rows}) and ended in "
                           f"{end_file}:{end} (started in {file}:{start})")
    return Mistake(case.name, file, start, end, before, forward_s, affected, rig.wait_captured())


def undo_auroratrack(rig: Rig, mistake: Mistake, case: Case, early: bool = True) -> dict:
    """One auroratrack undo; with early writes, while a ``ClientWriter`` writes rows of its own
    through the proxy."""
    backtracker = rig.service.service.backtracker
    writer = ClientWriter(rig.service.port, case.rows + 1 + 1_000_000 * len(rig.undos))
    if early and rig.writer:
        writer.start()
    rig.undos.append(mistake.case)
    began = time.perf_counter()
    with contextlib.nullcontext() if early else early_writes_off():
        record: BacktrackRecord = rig.service.call(lambda: backtracker.request(BacktrackRequest(to=mistake.before)))
        record = rig.service.call(lambda: backtracker.wait(record.id, UNDO_TIMEOUT_S), timeout=UNDO_TIMEOUT_S + 10)
    total_s = time.perf_counter() - began
    writer.stop()
    planned = dict(record.rows.get(TABLE, {}))
    written_by_writer = planned.get("delete", 0)  # the writer's rows are the only rows added after the point
    planned["delete"] = 0
    prepare = next((s for s in record.steps if s["name"] == "prepare"), {})
    early_writes = prepare.get("early_writes", {})
    early_used = bool(early_writes) and "rolled_back" not in early_writes
    window = _early_window(prepare) if early_used else None
    return {
        "total_s": total_s, "paused_s": record.durations.get("paused_s"), "status": record.status,
        "error": record.error, "steps": {**{s["name"]: s["duration_s"] for s in record.steps},
                                         **({"  early_writes (in prepare)": early_writes["duration_s"]}
                                            if early_used else {}),
                                         **{f"  {name}": sec for name, sec in record.durations.items()
                                            if name not in ("total_s", "paused_s", "applying_s")}},
        "durations": record.durations, "planned": record.rows, "point": record.point,
        "plan_ok": planned == case.expected_plan and set(record.rows) == {TABLE}
        and writer.acknowledged <= written_by_writer <= writer.acknowledged + 1,
        "ok": record.status == "completed", "early_writes": early_writes, "early_used": early_used,
        "writer_rows": writer.acknowledged,
        "writer_wait_s": writer.longest_wait(*window) if window else None,
        "writer_wait_before_s": writer.longest_wait(_plan_start(record), window[0]) if window else None,
    }


def _plan_start(record: BacktrackRecord) -> float:
    plan = next(s for s in record.steps if s["name"] == "plan")
    return dt.datetime.fromisoformat(plan["started"].replace("Z", "+00:00")).timestamp()


def _early_window(prepare: dict) -> tuple[float, float]:
    """Wall time of the early writes."""
    early = prepare["early_writes"]
    began = dt.datetime.fromisoformat(early["started"].replace("Z", "+00:00")).timestamp()
    return began, began + early["duration_s"]


def flashback_commands(server: PrivateServer, mistake: Mistake) -> tuple[list[str], list[str]]:
    generate = [shutil.which("mariadb-binlog") or "mariadb-binlog", "--no-defaults", "--flashback",
                f"--start-position={mistake.start}", f"--stop-position={mistake.end}",
                str(server.data_dir / mistake.file)]
    apply = [shutil.which("mariadb") or "mariadb", "--no-defaults", "-S", str(server.socket_path), "-u", "root",
             "--max-allowed-packet=1G"]
    return generate, apply


def undo_flashback(rig: Rig, mistake: Mistake) -> dict:
    generate_cmd, apply_cmd = flashback_commands(rig.server, mistake)
    began = time.perf_counter()
    generate = subprocess.Popen(generate_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        apply = subprocess.run(apply_cmd, stdin=generate.stdout, capture_output=True, text=True)
    finally:
        generate.stdout.close()
        generate_err = generate.stderr.read().decode(errors="replace")
        generate.wait()
    total_s = time.perf_counter() - began
    ok = generate.returncode == 0 and apply.returncode == 0
    generate_s = time_generation(generate_cmd) if ok else None
    error = None if ok else f"mariadb-binlog rc {generate.returncode}: {generate_err.strip()[-500:]}; " \
                            f"mariadb rc {apply.returncode}: {apply.stderr.strip()[-500:]}"
    return {"total_s": total_s, "paused_s": None, "status": "completed" if ok else "failed", "error": error,
            "ok": ok, "commands": [" ".join(generate_cmd), " ".join(apply_cmd)],
            "steps": {"generate (mariadb-binlog alone, after the trial)": generate_s,
                      "apply (total minus generate)": None if generate_s is None else total_s - generate_s}}


def time_generation(generate_cmd: list[str]) -> float:
    """mariadb-binlog alone, its output thrown away: flashback's own share of the undo. The tool
    reverses each transaction's events, so it holds a transaction's rows until its end before
    the client sees any: generation and apply run one after the other, not overlapped."""
    began = time.perf_counter()
    subprocess.run(generate_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def verify(rig: Rig) -> bool:
    """Is the table back at the baseline? If not, rebuild it from the template."""
    if checksum(rig.server) == rig.baseline:
        return True
    progress("checksum differs from the baseline: restoring the table from the template")
    restore_from_template(rig.server)
    if checksum(rig.server) != rig.baseline:
        raise RuntimeError("the table could not be restored to the baseline from the template")
    return False


def settle(server: PrivateServer, timeout: float = SETTLE_TIMEOUT_S) -> float:
    """Wait until InnoDB has flushed its dirty pages and purged old row versions, so no trial
    pays for the work the one before it (or the table's load) left behind. Without it, the first
    trial of a run took twice as long as the others, the mistake included. Returns the seconds
    waited."""
    began = time.perf_counter()
    with root_connect(server) as conn:
        previous = query_one(conn, "SELECT @@GLOBAL.innodb_max_dirty_pages_pct")[0]
        execute(conn, "SET GLOBAL innodb_max_dirty_pages_pct = 0")
        try:
            while time.perf_counter() - began < timeout:
                dirty = int(query_one(conn, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")[1])
                history = int(query_one(conn, "SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")[1])
                if dirty < SETTLED_DIRTY_PAGES and history < SETTLED_HISTORY:
                    break
                time.sleep(0.5)
        finally:
            execute(conn, f"SET GLOBAL innodb_max_dirty_pages_pct = {float(previous)}")
    return time.perf_counter() - began


def run_trial(rig: Rig, case: Case, tool: str, round_no: int) -> dict:
    settled_s = settle(rig.server)
    load_1m = os.getloadavg()[0]
    mistake = run_mistake(rig, case)
    rig.probe.open_window()
    try:
        if tool in AURORATRACK_TOOLS:
            undo = undo_auroratrack(rig, mistake, case, early=tool == "auroratrack")
        else:
            undo = undo_flashback(rig, mistake)
    finally:
        stall = rig.probe.close_window()
    undo["client_stall_s"] = stall
    undo["capture_after_s"] = rig.wait_captured()
    undo["checksum_ok"] = verify(rig)
    trial = {"round": round_no, "case": case.name, "tool": tool, "rows": case.rows, "loadavg_1m": round(load_1m, 2),
             "settled_s": round(settled_s, 2),
             "mistake": asdict(mistake), "binlog_bytes": mistake.end - mistake.start, **undo}
    progress(f"round {round_no} {case.name} {tool}: forward {mistake.forward_s:.2f} s, undo {undo['total_s']:.2f} s"
             + (f" (paused {undo['paused_s']:.2f} s)" if undo["paused_s"] is not None else "")
             + f", client stall {_fmt(stall)} s, {undo['status']}, checksum {'ok' if undo['checksum_ok'] else 'WRONG'}"
             + (f", error: {undo['error'][:300]}" if undo["error"] else ""))
    return trial


# -- profiling the apply -------------------------------------------------------------------------------------------


PLAN_PHASE = "build_plan (read the store, decode, fold)"
ALL_PHASE = "_plan_and_apply (all)"
APPLIER_PHASES = (  # Applier method -> label, in the order the backtrack runs them
    ("prepare", "prepare (before the pause: temporary tables loaded)"),
    ("_restore_table", "  of which _restore_table (latest images and targets)"),
    ("ensure_marker_table", "ensure_marker_table"), ("begin", "begin"),
    ("conflicts_before_writing", "conflicts_before_writing (cascades, triggers, keyless drift)"),
    ("server_conflicts", "server_conflicts (detailed drift checks)"),
    ("_temp_table", "  of which _temp_table (load expected images)"),
    ("apply_table_checked", "apply_table_checked (checked delete, update, insert)"),
    ("_delete_exact", "  of which DELETE ... JOIN"),
    ("_restore", "  of which UPDATE ... JOIN"),
    ("apply_table", "apply_table (delete + insert)"),
    ("_insert", "  of which _insert (target images)"),
    ("write_marker", "write_marker"), ("commit", "commit"),
)
PHASE_ORDER = (PLAN_PHASE, *(label for _, label in APPLIER_PHASES), ALL_PHASE)


@dataclass
class ApplyProfile:
    """Where one backtrack's apply step spends its time."""

    phases: dict[str, float] = field(default_factory=dict)
    statements: dict[str, list] = field(default_factory=dict)  # kind -> [count, seconds]
    profile: cProfile.Profile = field(default_factory=cProfile.Profile)
    plan_profile: cProfile.Profile = field(default_factory=cProfile.Profile)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_phase(self, name: str, seconds: float) -> None:
        with self.lock:
            self.phases[name] = self.phases.get(name, 0.0) + seconds

    def add_statement(self, sql: str, seconds: float) -> None:
        kind = statement_kind(sql)
        with self.lock:
            entry = self.statements.setdefault(kind, [0, 0.0])
            entry[0] += 1
            entry[1] += seconds

    def to_json(self, top: int = 30) -> dict:
        phases = {name: self.phases[name] for name in PHASE_ORDER if name in self.phases}
        return {"phases_s": phases, "statements": {k: {"count": n, "seconds": s}
                                                        for k, (n, s) in self.statements.items()},
                "cprofile": _listing(self.profile, top), "cprofile_plan": _listing(self.plan_profile, top)}


def _listing(profile: cProfile.Profile, top: int) -> str:
    text = io.StringIO()
    try:
        stats = pstats.Stats(profile, stream=text)
    except TypeError:  # never enabled
        return ""
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def statement_kind(sql: str) -> str:
    """A short name for an applier statement (its head only is looked at: INSERTs are megabytes)."""
    head = sql[:400]
    if head.startswith("SELECT"):
        if "LEFT JOIN" in head:
            return "SELECT missing rows (expected LEFT JOIN table)"
        if " JOIN " in head:
            return "SELECT drifted rows (expected JOIN table)"
        if " IN (" in head:
            return "SELECT unexpected rows (key IN list)"
        return "SELECT information_schema / other"
    if head.startswith("INSERT INTO `auroratrack`.`expected"):
        return "INSERT INTO temp expected images"
    if head.startswith("INSERT INTO `auroratrack`.`restore"):
        return "INSERT INTO temp restore images (latest and targets)"
    if head.startswith(("INSERT", "DELETE")):
        return " ".join(head.split()[:3])
    return " ".join(head.split()[:2])


@contextlib.contextmanager
def patched(owner: object, name: str, make: Callable[[Callable], Callable]) -> Iterator[None]:
    """Wrap ``owner.name`` while the block runs; a name the code no longer has is skipped."""
    original = getattr(owner, name, None)
    if original is None:
        progress(f"profile: {getattr(owner, '__name__', owner)}.{name} not found; that phase is not timed")
        yield
        return
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def timed_phase(profile: ApplyProfile, label: str) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                profile.add_phase(label, time.perf_counter() - began)
        return wrapper
    return make


def timed_statement(profile: ApplyProfile) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        def wrapper(self, sql: str, *args, **kwargs):
            began = time.perf_counter()
            try:
                return original(self, sql, *args, **kwargs)
            finally:
                profile.add_statement(sql, time.perf_counter() - began)
        return wrapper
    return make


def profiled_plan_and_apply(profile: ApplyProfile) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            profile.profile.enable()
            try:
                return original(*args, **kwargs)
            finally:
                profile.profile.disable()
                profile.add_phase(ALL_PHASE, time.perf_counter() - began)
        return wrapper
    return make


def profiled_plan(profile: ApplyProfile) -> Callable[[Callable], Callable]:
    def make(original: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            began = time.perf_counter()
            profile.plan_profile.enable()
            try:
                return original(*args, **kwargs)
            finally:
                profile.plan_profile.disable()
                profile.add_phase(PLAN_PHASE, time.perf_counter() - began)
        return wrapper
    return make


@contextlib.contextmanager
def profiling_apply() -> Iterator[ApplyProfile]:
    """Instrument the backtrack's apply (class attributes, restored on exit; proxy/ is untouched)."""
    profile = ApplyProfile()
    applier = rewind.Applier
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(backtrack_module.Backtracker, "_plan_and_apply", profiled_plan_and_apply(profile)))
        stack.enter_context(patched(backtrack_module, "build_plan", profiled_plan(profile)))
        for name, label in APPLIER_PHASES:
            stack.enter_context(patched(applier, name, timed_phase(profile, label)))
        stack.enter_context(patched(applier, "_run", timed_statement(profile)))
        stack.enter_context(patched(applier, "_query", timed_statement(profile)))
        yield profile


def profile_trial(rig: Rig, case: Case) -> dict:
    progress(f"profiled extra trial: {case.name} (not part of the table)")
    with profiling_apply() as profile:
        trial = run_trial(rig, case, "auroratrack", 0)
    return {**trial, "profile": profile.to_json()}


# -- the run --------------------------------------------------------------------------------------------------------


def tool_order(round_no: int) -> tuple[str, ...]:
    return TOOLS if round_no % 2 == 1 else TOOLS[::-1]


def run_rounds(rig: Rig, config: BenchConfig, cases: dict[str, Case], results: dict, save: Callable) -> None:
    for round_no in range(1, config.rounds + 1):
        for name in config.cases:
            for tool in tool_order(round_no):
                results["trials"].append(run_trial(rig, cases[name], tool, round_no))
                save()


def cases_to_profile(config: BenchConfig, summary: dict) -> list[str]:
    if config.profile == "off":
        return []
    if config.profile == "on":
        return [name for name in config.cases if name in BULK_CASES] or list(config.cases)
    return [name for name, s in summary.items() if not all(v for v in s["targets"].values())]


def bench(config: BenchConfig, work: Path, results: dict, save: Callable) -> None:
    cases = make_cases(config.rows, random.Random(7).randint(1, config.rows))
    server = PrivateServer(work / "server", extra_args=SERVER_ARGS)
    service = probe = None
    try:
        server.start()
        results["versions"] = versions(server)
        service = start_service(server, work)
        progress(f"loading {config.rows:,} rows (and the template copy)")
        load_table(server, config.rows)
        rig = Rig(server, service, checksum(server), ClientProbe(service.port).start(), writer=config.writer)
        probe = rig.probe
        results["baseline_checksum"] = rig.baseline
        run_rounds(rig, config, cases, results, save)
        results["summary"] = summarize(results["trials"])
        for name in cases_to_profile(config, results["summary"]):
            results["profiles"].append(profile_trial(rig, cases[name]))
            save()
    finally:
        if probe is not None:
            probe.stop()
        if service is not None:
            service.stop()
        server.destroy()


# -- summary and report ------------------------------------------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(trials: list[dict]) -> dict:
    summary = {}
    for name in dict.fromkeys(t["case"] for t in trials):
        runs = {tool: [t for t in trials if t["case"] == name and t["tool"] == tool] for tool in TOOLS}
        at, fb, base = runs["auroratrack"], runs["flashback"], runs["auroratrack-in-pause"]
        paired = [(a, f) for a in at for f in fb if a["round"] == f["round"]]
        paired_base = [(a, b) for a in at for b in base if a["round"] == b["round"]]
        ok = [a for a in at if a["ok"] and a["checksum_ok"] and a.get("plan_ok")]
        base_ok = [b for b in base if b["ok"] and b["checksum_ok"] and b.get("plan_ok")]
        entry = {
            "rows": (at or fb)[0]["rows"],
            "forward_s": median([t["mistake"]["forward_s"] for t in at + fb]),
            "auroratrack_s": median([a["total_s"] for a in ok]),
            "paused_s": median([a["paused_s"] for a in ok]),
            "paused_max_s": max((a["paused_s"] for a in ok), default=None),
            "client_stall_s": median([a["client_stall_s"] for a in ok]),
            "client_stall_max_s": max((a["client_stall_s"] or 0 for a in ok), default=None),
            "flashback_s": median([f["total_s"] for f in fb if f["ok"] and f["checksum_ok"]]),
            "at_over_fb": median([a["total_s"] / f["total_s"] for a, f in paired]),
            "at_over_forward": median([a["total_s"] / a["mistake"]["forward_s"] for a in at]),
            "in_pause_s": median([b["total_s"] for b in base_ok]),
            "in_pause_paused_s": median([b["paused_s"] for b in base_ok]),
            "at_over_in_pause": median([a["total_s"] / b["total_s"] for a, b in paired_base]),
            "early_used": f"{sum(bool(a.get('early_used')) for a in at)}/{len(at)}",
            "writer_wait_s": median([a.get("writer_wait_s") for a in ok]),
            "writer_wait_max_s": max((a.get("writer_wait_s") or 0 for a in ok), default=None),
            "writer_wait_before_s": median([a.get("writer_wait_before_s") for a in ok]),
            "checksums": {tool: f"{sum(t['checksum_ok'] for t in r)}/{len(r)}" for tool, r in runs.items() if r},
            "plan_ok": all(a.get("plan_ok") for a in at),
            "steps_s": {step: median([a["steps"].get(step) for a in at])
                        for step in dict.fromkeys(s for a in at for s in a["steps"])},
            "flashback_steps_s": {step: median([f.get("steps", {}).get(step) for f in fb])
                                  for step in dict.fromkeys(s for f in fb for s in f.get("steps", {}))},
        }
        entry["targets"] = targets(name, entry, len(ok) == len(at))
        summary[name] = entry
    return summary


def targets(name: str, s: dict, all_ok: bool) -> dict[str, bool]:
    if name not in BULK_CASES:
        return {"pause under 1 s": all_ok and (s["paused_max_s"] or 0) < TARGET_ONE_ROW_PAUSE_S
                and (s["client_stall_max_s"] or 0) < TARGET_ONE_ROW_PAUSE_S}
    return {"faster than flashback": all_ok and s["at_over_fb"] is not None and s["at_over_fb"] < 1.0,
            "no slower than the mistake": all_ok and s["at_over_forward"] is not None and s["at_over_forward"] <= 1.0,
            "pause under 1 s (early writes)": all_ok and (s["paused_max_s"] or 0) < TARGET_PAUSE_S,
            "total no slower than the in-pause apply": all_ok and s["at_over_in_pause"] is not None
            and s["at_over_in_pause"] <= 1.0}


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def results_table(summary: dict) -> list[str]:
    lines = ["| case | rows | forward s | auroratrack total s | auroratrack paused s | client stall s "
             "| longest writer wait during early writes s | (noise: before them) s "
             "| in-pause apply: total s | in-pause apply: paused s "
             "| flashback s | auroratrack / in-pause | auroratrack / flashback | auroratrack / forward "
             "| early writes used | checksum ok (auroratrack, flashback, in-pause) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        digits = 2 if name in BULK_CASES else 3
        per_forward = f"{_fmt(s['at_over_forward'])}×" if name in BULK_CASES else "–"
        checks = s["checksums"]
        lines.append(
            f"| {name} | {s['rows']:,} | {_fmt(s['forward_s'], digits)} | {_fmt(s['auroratrack_s'], digits)} "
            f"| {_fmt(s['paused_s'], digits)} | {_fmt(s['client_stall_s'], digits)} "
            f"| {_fmt(s.get('writer_wait_s'), 3)} | {_fmt(s.get('writer_wait_before_s'), 3)} "
            f"| {_fmt(s.get('in_pause_s'), digits)} | {_fmt(s.get('in_pause_paused_s'), digits)} "
            f"| {_fmt(s['flashback_s'], digits)} | {_fmt(s.get('at_over_in_pause'))}× | {_fmt(s['at_over_fb'])}× "
            f"| {per_forward} | {s.get('early_used', '–')} "
            f"| {', '.join(checks.get(tool, '–') for tool in TOOLS)} |")
    return lines


def steps_table(summary: dict, key: str = "steps_s", total: str = "auroratrack_s") -> list[str]:
    steps = list(dict.fromkeys(step for s in summary.values() for step in s.get(key, {})))
    lines = ["| case | " + " | ".join(f"{step} s" for step in steps) + " | paused s | total s |",
             "|---|" + "---|" * (len(steps) + 2)]
    for name, s in summary.items():
        cells = " | ".join(_fmt(s.get(key, {}).get(step), 3) for step in steps)
        paused = _fmt(s["paused_s"], 3) if total == "auroratrack_s" else "–"
        lines.append(f"| {name} | {cells} | {paused} | {_fmt(s[total], 3)} |")
    return lines


def trials_table(trials: list[dict]) -> list[str]:
    lines = ["| round | case | tool | forward s | undo s | paused s | client stall s | writer rows "
             "| writer's longest wait during early writes s | load 1m | checksum | plan |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in trials:
        lines.append(f"| {t['round']} | {t['case']} | {t['tool']} | {t['mistake']['forward_s']:.3f} "
                     f"| {t['total_s']:.3f} | {_fmt(t['paused_s'], 3)} | {_fmt(t['client_stall_s'], 3)} "
                     f"| {t.get('writer_rows', '–')} | {_fmt(t.get('writer_wait_s'), 3)} "
                     f"| {t['loadavg_1m']} | {'ok' if t['checksum_ok'] else 'WRONG'} | {_plan_text(t)} |")
    return lines


def _plan_text(trial: dict) -> str:
    """auroratrack only: did it plan exactly the mistake's rows (the right transaction, nothing else)?"""
    if "plan_ok" not in trial:
        return "–"
    return "ok" if trial["plan_ok"] else f"WRONG {trial.get('planned')}"


def profile_lines(profiles: list[dict]) -> list[str]:
    lines = []
    for p in profiles:
        prof = p["profile"]
        lines += [f"### Profile: {p['case']} ({p['rows']:,} rows), undo {p['total_s']:.2f} s, "
                  f"paused {_fmt(p['paused_s'])} s, forward {p['mistake']['forward_s']:.2f} s", "",
                  "| phase | wall s |", "|---|---|"]
        lines += [f"| {name} | {sec:.3f} |" for name, sec in prof["phases_s"].items()]
        lines += ["", "| statement kind | count | s (execute, incl. round trip) |", "|---|---|---|"]
        for kind, st in sorted(prof["statements"].items(), key=lambda kv: -kv[1]["seconds"]):
            lines.append(f"| {kind} | {st['count']:,} | {st['seconds']:.3f} |")
        lines += ["", "```", _trim_cprofile(prof["cprofile"]), "```", ""]
        if prof.get("cprofile_plan"):
            lines += ["Planning (before the pause):", "", "```", _trim_cprofile(prof["cprofile_plan"], 15), "```", ""]
    return lines


def _trim_cprofile(text: str, keep: int = 22) -> str:
    """The two pstats listings, each cut to its first ``keep`` rows."""
    out, rows = [], 0
    for line in text.splitlines():
        if "ncalls" in line:
            rows = 0
        elif line.strip() and line.lstrip()[0].isdigit():
            rows += 1
            if rows > keep:
                continue
        out.append(line)
    return "\n".join(line for line in out if line.strip())


def verdict_lines(summary: dict) -> list[str]:
    return [f"- {name}: {target}: {'MET' if met else 'MISSED'}"
            for name, s in summary.items() for target, met in s["targets"].items()]


LEGEND = ("Medians over the rounds. forward: the mistake itself, run through the proxy. auroratrack total: "
          "backtrack request to completed record. paused: gate closed to reopened (clients held). client stall: "
          "longest gap between answers seen by a client running SELECT 1 every 20 ms through the proxy. "
          "writer wait: the longest INSERT of a client adding rows of its own (not the undo's) every 20 ms through "
          "the proxy, among those that overlapped the early writes (noise: those between the plan and the early "
          "writes, the machine's own). in-pause apply: the same backtrack with its "
          "early writes turned off (the whole undo written in the pause, as before them; no writer). "
          "flashback: `mariadb-binlog --flashback | mariadb`, start to exit. Ratios are paired within a round; "
          "below 1 means auroratrack is faster.")


def report(results: dict) -> str:
    machine = results["machine"]
    lines = ["## Undo: auroratrack backtrack vs mariadb-binlog --flashback | mariadb", ""]
    lines += results_table(results["summary"]) + ["", LEGEND, "", "Targets:"] + verdict_lines(results["summary"])
    lines += ["", "auroratrack steps (medians):", ""] + steps_table(results["summary"])
    lines += ["", "flashback steps (medians):", ""] + steps_table(results["summary"], "flashback_steps_s",
                                                                      "flashback_s")
    lines += ["", "Every trial:", ""] + trials_table(results["trials"]) + [""]
    lines += profile_lines(results["profiles"])
    lines += [f"Machine: {machine['cpus']} CPUs; load average at start {machine['uptime_start']!r}, "
              f"at end {machine.get('uptime_end')!r}; per-trial 1-min load "
              f"{min(t['loadavg_1m'] for t in results['trials'])}–{max(t['loadavg_1m'] for t in results['trials'])}.",
              f"Versions: {results.get('versions')}"]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------------------


def uptime() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return out or "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def versions(server: PrivateServer) -> dict:
    tool = subprocess.run(["mariadb-binlog", "--version"], capture_output=True, text=True).stdout.strip()
    with root_connect(server) as conn:
        packet = query_one(conn, "SELECT @@GLOBAL.max_allowed_packet")[0]
    return {"python": platform.python_version(), "server": f"{server.binary.flavor} {server.binary.version}",
            "mariadb-binlog": tool, "server_max_allowed_packet": int(packet)}


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    if config.report is not None:
        print(report(json.loads(config.report.read_text())))
        return 0
    for program in ("mariadb-binlog", "mariadb"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is not on PATH (apt-get install mariadb-client)")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally blocks
    results: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                     "machine": {"cpus": os.cpu_count(), "uptime_start": uptime()}, "trials": [], "profiles": []}
    progress(f"start: {results['machine']['uptime_start']}")
    config.results_dir.mkdir(parents=True, exist_ok=True)
    path = config.results_dir / f"undo_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def save() -> None:
        path.write_text(json.dumps(results, indent=2, default=str))

    work = Path(tempfile.mkdtemp(prefix="auroratrack-undobench-"))
    try:
        bench(config, work, results, save)
    except KeyboardInterrupt:
        progress("interrupted; cleaning up")
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
        results["machine"]["uptime_end"] = uptime()
        save()
    print(report(results))
    print(f"\nraw results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
