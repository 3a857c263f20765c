"""The backtrack flow: from ``backtrack --to TIME`` to a rewound database, every step recorded.

``Backtracker.request`` validates the request and resolves the point before anything is paused
(a bad ``--to`` is refused with the earliest and latest possible times), then runs the flow as a
task on the service's event loop:

  choose the point -> plan and prepare the apply (clients still run) -> early writes: open the
  undo's transaction and write the bulk of it (clients still run; proxy.earlywrite) -> close
  the gate -> drain (dropping clients whose statements wait on the early writes' locks) -> drop
  every client connection -> fence writers that bypass the proxy (read_only) -> let the
  streamer catch up with the server -> fold in what arrived since the plan -> check conflicts
  -> apply what the early writes did not cover -> commit -> lift the fence -> reopen the gate.

Whatever happens, the fence is lifted and the gate reopens. The undo is one server transaction
(rewind.Applier), committed only inside the pause: a failure rolls it back and the data stays
as it was. When the early writes fail (a deadlock, a lock wait timeout, a duplicate key, their
connection killed) or cannot be completed in the pause, they are rolled back and the pause
applies the whole undo, as before early writes existed; forced backtracks always do.

Every backtrack has a record in ``history.db`` that survives restarts; a record left ``pending``
or ``applying`` by a killed process is marked ``failed`` on the next start (the server rolled the
open transaction back when the connection died). A fence left by a killed process is lifted at
the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pymysql
from pymysql.constants import CLIENT

from proxy.changelog import backfill
from proxy.changelog.store import ChangeStore, now_us, wait_for_checkpoint
from proxy.changelog.streamer import current_binlog_position
from proxy.ddlundo import run_backtrack
from proxy.earlywrite import EarlyWrites, EarlyWritesUnusable, write_delta, write_early
from proxy.gate import Gate
from proxy.loaddata import refuse_uploads
from proxy.lockwatch import LockWatch
from proxy.rewind import (
    ER_DUP_ENTRY,
    MAX_PLAN_SQL,
    Applier,
    Conflict,
    Drifted,
    DuplicateRow,
    Plan,
    build_plan,
    extend_plan,
)
from proxy.serveradmin import UpstreamCredentials
from proxy.timeparse import Target, format_time_us, parse_target

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed")
T = TypeVar("T")


class BacktrackRefused(Exception):
    """The request cannot be carried out as asked; nothing was paused or written."""

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details or {}


@dataclass(frozen=True)
class BacktrackRequest:
    to: str
    force: bool = False
    use_earliest: bool = False
    dry_run: bool = False
    with_sql: bool = False
    drain_timeout: float = 10.0


@dataclass(frozen=True)
class Point:
    """The chosen consistent point: the state right after transaction ``txn_id``."""

    txn_id: int
    time_us: int | None
    lsn: int
    gtid: str | None

    def to_json(self) -> dict:
        return {"txn_id": self.txn_id, "time": format_time_us(self.time_us), "time_us": self.time_us,
                "lsn": self.lsn, "gtid": self.gtid}


@dataclass
class BacktrackRecord:
    """What is known of one backtrack; ``to_json`` is the admin API's and the CLI's view."""

    id: str
    requested_to: str
    target: str
    status: str  # pending | applying | completed | failed
    created_us: int
    dry_run: bool = False
    force: bool = False
    point: dict | None = None
    backtracked_from_us: int | None = None
    rows: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)
    durations: dict = field(default_factory=dict)
    conflicts: list = field(default_factory=list)
    forced: list = field(default_factory=list)
    fence: str | None = None
    error: str | None = None
    plan: dict | None = None
    finished_us: int | None = None

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["created"] = format_time_us(self.created_us)
        data["backtracked_from"] = format_time_us(self.backtracked_from_us)
        return data


class BacktrackHistory:
    """Backtrack records in ``history.db`` (SQLite), one JSON document each."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS backtracks (id TEXT PRIMARY KEY, created_us INTEGER, doc TEXT)")

    def save(self, record: BacktrackRecord) -> None:
        self.db.execute("INSERT INTO backtracks VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                        (record.id, record.created_us, json.dumps(dataclasses.asdict(record))))

    def all(self) -> list[BacktrackRecord]:
        return [BacktrackRecord(**json.loads(doc)) for (doc,) in
                self.db.execute("SELECT doc FROM backtracks ORDER BY created_us")]

    def fail_unfinished(self) -> list[str]:
        """After a restart: records a dead process left behind become ``failed``."""
        failed = []
        for record in self.all():
            if record.status not in TERMINAL:
                record.status = "failed"
                record.error = "auroratrack stopped during the backtrack; the server rolled back its transaction"
                record.finished_us = now_us()
                self.save(record)
                failed.append(record.id)
        return failed

    def close(self) -> None:
        self.db.close()


class Backtracker:
    """Runs backtracks for the service; one at a time. Lives on the service's event loop."""

    def __init__(self, upstream: UpstreamCredentials, gate: Gate, store_path: Path, data_dir: Path,
                 flavor: str | None = None, catch_up_timeout: float = 120.0,
                 capture_health: Callable[[], Any] | None = None):
        self.upstream = upstream
        # supervisor.CaptureHealth or None: while capture is down the store cannot catch up
        self.capture_health = capture_health
        self.gate = gate
        self.store_path = store_path
        self.data_dir = data_dir
        self.flavor = flavor
        self.catch_up_timeout = catch_up_timeout
        self.history = BacktrackHistory(data_dir / "history.db")
        self.records: dict[str, BacktrackRecord] = {r.id: r for r in self.history.all()}
        self.running: BacktrackRecord | None = None
        self._task: asyncio.Task | None = None
        self.fence_path = data_dir / "fence.json"
        self.ddl_undo = None  # proxy.ddlundo.DdlUndo when DROP/TRUNCATE are held (set by the service)
        self._applier_conn: pymysql.Connection | None = None  # the running backtrack's writer

    def startup_recovery(self) -> None:
        """Mark what a killed process left unfinished as failed, and lift its fence."""
        for record_id in self.history.fail_unfinished():
            log.warning("backtrack %s was interrupted by a restart: marked failed", record_id)
        self.records = {r.id: r for r in self.history.all()}
        if self.fence_path.exists():
            with contextlib.suppress(Exception):
                previous = json.loads(self.fence_path.read_text()).get("previous_read_only", 0)
                self._set_read_only(int(previous))
                log.warning("lifted the read_only fence a killed backtrack left on the server")
            self.fence_path.unlink(missing_ok=True)

    def finish_resumed(self, record_id: str, status: str, note: str | None) -> None:
        """A backtrack a restart interrupted was finished at start (proxy.ddlundo)."""
        record = self.records.get(record_id)
        if record is not None:
            record.status = status
            record.error = note
            self.history.save(record)

    def apply_connection(self) -> pymysql.Connection:
        return self._apply_connection()

    def catch_up(self) -> None:
        self._catch_up()

    # -- the API ----------------------------------------------------------------------------------------
    def get(self, record_id: str) -> BacktrackRecord | None:
        return self.records.get(record_id)

    def list(self) -> list[BacktrackRecord]:
        return sorted(self.records.values(), key=lambda r: r.created_us)

    def last(self) -> BacktrackRecord | None:
        finished = [r for r in self.list() if not r.dry_run]
        return finished[-1] if finished else None

    async def request(self, req: BacktrackRequest) -> BacktrackRecord:
        """Validate and start a backtrack; returns its record at once (``pending``)."""
        if self.running is not None:
            raise BacktrackRefused(f"backtrack {self.running.id} is running; wait for it to finish",
                                   {"running": self.running.id})
        self._refuse_while_capture_is_down()
        try:
            target = parse_target(req.to)
        except ValueError as exc:
            raise BacktrackRefused(str(exc)) from None
        point = await asyncio.to_thread(self._resolve, target, req.use_earliest)
        record = BacktrackRecord(
            id=str(uuid.uuid4()), requested_to=req.to, target=target.describe(), status="pending",
            created_us=now_us(), dry_run=req.dry_run, force=req.force, point=point.to_json(),
        )
        self.records[record.id] = record
        self.running = record
        if not req.dry_run:
            self.history.save(record)
        self._task = asyncio.get_running_loop().create_task(self._run(record, req, point))
        return record

    def _refuse_while_capture_is_down(self) -> None:
        """Refuse before anything is paused: a backtrack must first catch up with everything the
        server has logged, which cannot happen while capture is down."""
        health = self.capture_health() if self.capture_health is not None else None
        if health is not None and health.down_since is not None:
            since = dt.datetime.fromtimestamp(health.down_since, dt.UTC).isoformat(timespec="seconds")
            raise BacktrackRefused(f"capture is down since {since} ({health.state}: {health.last_error or '-'}); "
                                   "the change log is not complete until it is back: try again then",
                                   {"capture": health.to_json()})

    async def wait(self, record_id: str, timeout: float = 600.0) -> BacktrackRecord:
        """For tests and the CLI-less callers: the record once it is finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.records[record_id]
            if record.status in TERMINAL and self.running is not record:
                return record
            await asyncio.sleep(0.02)
        raise TimeoutError(f"backtrack {record_id} still {self.records[record_id].status}")

    # -- choosing the point ----------------------------------------------------------------------------------
    def _resolve(self, target: Target, use_earliest: bool) -> Point:
        store = ChangeStore(self.store_path, readonly=True)
        try:
            return resolve_point(store, target, use_earliest)
        finally:
            store.close()

    # -- the flow -------------------------------------------------------------------------------------------------
    async def _run(self, record: BacktrackRecord, req: BacktrackRequest, point: Point) -> None:
        started = time.monotonic()
        try:
            if req.dry_run:
                await self._dry_run(record, req, point)
            else:
                await self._backtrack(record, req, point)
        except Exception as exc:  # recorded, never raised into the loop
            log.exception("backtrack %s failed", record.id)
            record.status = "failed"
            record.error = record.error or f"{type(exc).__name__}: {exc}"
        finally:
            record.durations["total_s"] = round(time.monotonic() - started, 6)
            record.finished_us = now_us()
            if not req.dry_run:
                self.history.save(record)
            self.running = None
            log.info("backtrack %s %s in %.3f s", record.id, record.status, record.durations["total_s"])

    async def _backtrack(self, record: BacktrackRecord, req: BacktrackRequest, point: Point) -> None:
        record.status = "applying"
        record.backtracked_from_us = now_us()
        self.history.save(record)
        # Plan while clients still run: decoding is the slow part, and after the pause only
        # what arrived since has to be folded in.
        plan = await self._step(record, "plan", lambda: asyncio.to_thread(self._build_plan, point))
        applier = await asyncio.to_thread(self._applier, record, req)
        early: EarlyWrites | None = None
        watch: LockWatch | None = None
        paused_at = None
        fenced = False
        outcome = "failed"
        try:
            # Forced, every row is checked in the pause anyway; across held DDL (proxy.ddlundo)
            # the tables may not exist before the undo brings them back.
            if not req.force and not (self.ddl_undo is not None and self.ddl_undo.crosses(plan)):
                applier, early, watch = await self._step(record, "prepare", lambda: self._prepare(
                    record, req, applier, plan))
            paused_at = time.monotonic()
            await self._step(record, "pause", self._pause)
            drain = await self._step(record, "drain", lambda: self._drain(record, req, watch))
            if drain.killed:
                record.forced.append({"kind": "killed_queries", "connections": drain.killed})
            await self._step(record, "drop", self.gate.drop_all)
            fenced = await self._step(record, "fence", lambda: asyncio.to_thread(self._fence, record))
            await self._step(record, "catch_up", lambda: asyncio.to_thread(self._catch_up))
            applied_at = time.monotonic()
            outcome = await self._step(record, "apply", lambda: asyncio.to_thread(
                self._plan_and_apply, applier, record, req, plan, early))
            record.durations["applying_s"] = round(time.monotonic() - applied_at, 6)
        finally:
            if watch is not None:
                await asyncio.to_thread(watch.close)
            with contextlib.suppress(Exception):
                self._close_applier()  # the server rolls back whatever is still open
            if fenced:
                await self._step(record, "unfence", lambda: asyncio.to_thread(self._unfence))
            if paused_at is not None:
                self.gate.resume()
                record.durations["paused_s"] = round(time.monotonic() - paused_at, 6)
        # Terminal only now: the fence is lifted and the gate open again.
        record.status = outcome

    async def _pause(self) -> None:
        self.gate.pause()

    # -- the early writes (proxy.earlywrite) ----------------------------------------------------------
    async def _prepare(self, record: BacktrackRecord, req: BacktrackRequest, applier: Applier, plan: Plan
                       ) -> tuple[Applier, EarlyWrites | None, LockWatch | None]:
        """Load the temporary tables, then write the bulk of the undo in the backtrack's open
        transaction, clients still running. Whatever goes wrong in the early writes rolls them
        back (on a fresh connection if ours died, the temporary tables loaded again) and the
        pause applies without them. Both are the "prepare" step; its ``early_writes`` says how
        long they took, what they wrote and how many client statements were seen waiting."""
        await asyncio.to_thread(applier.prepare, plan)
        step = record.steps[-1]
        watch = LockWatch(self.upstream.connect, applier.conn.thread_id())
        await asyncio.to_thread(watch.start)
        before = dict(applier.timings)
        started = format_time_us(now_us())
        began = time.monotonic()
        try:
            early = await asyncio.to_thread(write_early, applier, plan, req.drain_timeout)
        except Exception as exc:  # recorded; the pause applies as it did before early writes
            step["early_writes"] = {"started": started, "duration_s": round(time.monotonic() - began, 6),
                                    **watch.stop(), "timings": _take_timings(applier, before),
                                    "rolled_back": _reason(exc)}
            log.info("backtrack %s: no early writes (%s)", record.id, _reason(exc))
            await asyncio.to_thread(watch.close)
            return await asyncio.to_thread(self._after_early_failure, applier, record, req, plan), None, None
        step["early_writes"] = {"started": started, "duration_s": round(time.monotonic() - began, 6),
                                **watch.stop(), "timings": _take_timings(applier, before),
                                "rows_written": early.rows_written()}
        # Fold in what clients committed during the early writes while they still run: the
        # pause then folds only what committed since.
        began = time.monotonic()
        await asyncio.to_thread(self._extend_plan, plan)
        step["early_writes"]["fold_s"] = round(time.monotonic() - began, 6)
        log.info("backtrack %s: early writes took %.3f s", record.id, step["early_writes"]["duration_s"])
        return applier, early, watch

    def _after_early_failure(self, applier: Applier, record: BacktrackRecord, req: BacktrackRequest,
                             plan: Plan) -> Applier:
        try:
            applier.end_early()
            return applier
        except pymysql.MySQLError:  # the connection is gone (killed): the server rolled back
            pass
        self._close_applier()
        fresh = self._applier(record, req)
        fresh.prepare(plan)
        return fresh

    async def _drain(self, record: BacktrackRecord, req: BacktrackRequest, watch: LockWatch | None):
        """The gate's drain; with early writes open, client statements waiting on their locks
        cannot finish before the commit: those clients are dropped at once (their connections
        killed), not after the drain timeout; every other client is dropped right after."""
        if watch is None:
            return await self.gate.drain(req.drain_timeout)
        drain = asyncio.ensure_future(self.gate.drain(req.drain_timeout))
        released: set[int] = set()
        while not drain.done():
            released.update(await asyncio.to_thread(watch.kill_waiters))
            await asyncio.wait({drain}, timeout=0.05)
        record.steps[-1]["waiters_killed"] = sorted(released)
        return drain.result()

    async def _step(self, record: BacktrackRecord, name: str, action):
        step = {"name": name, "started": format_time_us(now_us()), "duration_s": None}
        record.steps.append(step)
        began = time.monotonic()
        try:
            return await action()
        finally:
            step["duration_s"] = round(time.monotonic() - began, 6)
            log.info("backtrack %s: %s took %.3f s", record.id, name, step["duration_s"])

    def _extend_plan(self, plan: Plan) -> None:
        store = ChangeStore(self.store_path, readonly=True)
        try:
            extend_plan(plan, store)
        finally:
            store.close()

    def _build_plan(self, point: Point) -> Plan:
        store = ChangeStore(self.store_path, readonly=True)
        try:
            return build_plan(store, point.txn_id, self.flavor)
        finally:
            store.close()

    def _plan_and_apply(self, applier: Applier, record: BacktrackRecord, req: BacktrackRequest,
                        plan: Plan, early: EarlyWrites | None = None) -> str:
        """Check and apply in one transaction; returns the outcome ("completed" or "failed")."""
        store = ChangeStore(self.store_path, readonly=True)
        try:
            timed(record, "extend_plan_s", lambda: extend_plan(plan, store))  # committed since planning
        finally:
            store.close()
        if early is not None:
            if self._finish_early(record, plan, early):
                return "completed"
            applier = self._applier_after_rollback(record, req, applier)
        applier.discard_stale(plan)
        applier.configure_session()  # the checks load images too
        applier.ensure_marker_table()
        if self.ddl_undo is not None and self.ddl_undo.crosses(plan):  # held DDL in the window
            return run_backtrack(self.ddl_undo, applier, record, req.force, plan, self.store_path)
        try:
            if req.force:
                self._apply_forced(applier, record, plan)
            else:
                self._apply_checked(applier, record, plan)
            timed(record, "write_marker_s", lambda: applier.write_marker(record.id))
            timed(record, "commit_s", applier.commit)
            return "completed"
        except BacktrackConflicts as exc:
            applier.rollback()
            record.error = str(exc)
            return "failed"
        except DuplicateRow:
            applier.rollback()
            conflicts = applier.unexpected_rows(plan)
            record.conflicts = [c.to_json() for c in conflicts]
            record.error = str(BacktrackConflicts(conflicts))
            return "failed"
        except Exception:
            applier.rollback()
            raise
        finally:
            record.durations.update({f"apply_{name}": round(sec, 6) for name, sec in applier.timings.items()})

    def _finish_early(self, record: BacktrackRecord, plan: Plan, early: EarlyWrites) -> bool:
        """Complete the early writes' transaction in the pause and commit it: True. False: it
        was rolled back and the plain apply must run."""
        applier = early.applier
        try:
            rows = timed(record, "delta_s", lambda: write_delta(early, plan))
        except (EarlyWritesUnusable, pymysql.MySQLError) as exc:
            log.info("backtrack %s: early writes rolled back in the pause (%s)", record.id, _reason(exc))
            record.steps[-1]["early_writes_rolled_back"] = _reason(exc)
            timed(record, "early_rollback_s", lambda: _suppress_mysql(applier.end_early))
            return False
        record.rows.update(rows)
        try:
            timed(record, "write_marker_s", lambda: applier.write_marker(record.id))
            timed(record, "commit_s", applier.commit)
        except Exception:
            applier.rollback()
            raise
        finally:
            record.durations.update({f"apply_{name}": round(sec, 6) for name, sec in applier.timings.items()})
        return True

    def _applier_after_rollback(self, record: BacktrackRecord, req: BacktrackRequest, applier: Applier) -> Applier:
        """The applier for the plain apply after early writes were rolled back in the pause:
        the same one, or one on a fresh connection if ours died."""
        try:
            applier.conn.ping(reconnect=False)
            return applier
        except pymysql.MySQLError:
            self._close_applier()
            return self._applier(record, req)

    def _apply_checked(self, applier: Applier, record: BacktrackRecord, plan: Plan) -> None:
        """Not forced: the drift check rides on the writes themselves (rewind.apply_table_checked).
        Only when a write matches fewer rows than planned (or an in-place update collides on a
        unique key) is the transaction rolled back and the detailed check run: it either names
        the conflicts, or finds none and the rows are rewritten by delete + insert.

        Temporary tables are never created or dropped inside a transaction that writes: MariaDB
        then treats it as non-transactional and logs its rolled-back row events (with a
        ROLLBACK), which capture would take for real changes."""
        timed(record, "prepare_missing_s", lambda: applier.prepare(plan, only_missing=True))
        conflicts = plan.conflicts + timed(record, "check_s", lambda: applier.conflicts_before_writing(plan))
        if conflicts:
            self._refuse(applier, record, plan, plan.conflicts + applier.server_conflicts(plan))
        applier.begin()
        try:
            for name, table in sorted(plan.tables.items()):
                record.rows[name] = timed(record, "write_s", lambda t=table: applier.apply_table_checked(t))
        except (Drifted, pymysql.IntegrityError) as exc:
            if isinstance(exc, pymysql.IntegrityError) and exc.args[0] != ER_DUP_ENTRY:
                raise
            log.info("backtrack %s: checked apply stopped (%s); running the detailed check", record.id, exc)
            applier.rollback()
            conflicts = timed(record, "detailed_check_s", lambda: applier.server_conflicts(plan))
            if conflicts:
                self._refuse(applier, record, plan, conflicts)
            applier.begin()
            for name, table in sorted(plan.tables.items()):
                record.rows[name] = timed(record, "write_s", lambda t=table: applier.apply_table(t))

    def _apply_forced(self, applier: Applier, record: BacktrackRecord, plan: Plan) -> None:
        """--force: every conflict is recorded, drifted rows are set to their targets."""
        conflicts = plan.conflicts + timed(record, "check_s", lambda: applier.server_conflicts(plan))
        record.conflicts = [c.to_json() for c in conflicts]
        record.forced.extend(c.to_json() for c in conflicts)
        applier.begin()
        for name, table in sorted(plan.tables.items()):
            record.rows[name] = timed(record, "write_s", lambda t=table: applier.apply_table(t))

    def _refuse(self, applier: Applier, record: BacktrackRecord, plan: Plan, conflicts: list[Conflict]) -> None:
        """A refusal lists every conflict: ``conflicts`` and the rows the log says are gone
        that exist (the checked apply finds those only when an insert collides)."""
        conflicts = conflicts + applier.unexpected_rows(plan)
        record.conflicts = [c.to_json() for c in conflicts]
        raise BacktrackConflicts(conflicts)

    async def _dry_run(self, record: BacktrackRecord, req: BacktrackRequest, point: Point) -> None:
        record.status = "applying"
        sql: list[str] = []

        def run() -> Plan:
            self._catch_up()  # plan on everything the server has logged, as a real backtrack does
            store = ChangeStore(self.store_path, readonly=True)
            try:
                plan = build_plan(store, point.txn_id, self.flavor)
            finally:
                store.close()
            if self.ddl_undo is not None and self.ddl_undo.crosses(plan):  # rows in several layouts
                plan.conflicts = self.ddl_undo.plan_conflicts(self.store_path, plan)
                return plan
            conn = self._apply_connection()
            try:
                applier = Applier(conn, f"dry-run {record.id}", emit=sql.append if req.with_sql else None,
                                  dry_run=True)
                applier.begin()
                try:
                    conflicts = plan.conflicts + applier.server_conflicts(plan)
                    for table in plan.tables.values():
                        applier.apply_table(table)
                finally:
                    applier.rollback()
            finally:
                conn.close()
            plan.conflicts = conflicts
            return plan

        plan = await asyncio.to_thread(run)
        record.plan = plan.summary()
        record.plan["point"] = point.to_json()
        if self.ddl_undo is not None and self.ddl_undo.crosses(plan):  # held DDL: its undo steps
            record.plan["ddl_steps"] = self.ddl_undo.describe(plan)
        if req.with_sql:
            record.plan["sql"] = sql[:MAX_PLAN_SQL]
            record.plan["sql_total"] = len(sql)
        record.conflicts = record.plan["conflicts"]
        record.status = "completed"

    # -- the server -------------------------------------------------------------------------------------------------
    def _applier(self, record: BacktrackRecord, req: BacktrackRequest) -> Applier:
        """The backtrack's writer on a connection of its own (closed by ``_close_applier``)."""
        self._applier_conn = self._apply_connection()
        return Applier(self._applier_conn, f"backtrack {record.id}", trust_absent=not req.force)

    def _close_applier(self) -> None:
        conn, self._applier_conn = self._applier_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _apply_connection(self) -> pymysql.Connection:
        # FOUND_ROWS: an UPDATE reports the rows it matched, which the checked apply compares
        # with the plan (rows it changed would miss a row already equal to its target).
        # local_infile: bulk writes stream rows with LOAD DATA LOCAL (proxy.loaddata), which
        # answers the server's request for a local file only during its own statements.
        conn = self.upstream.connect(role="apply", autocommit=False, max_allowed_packet=64 * 1024 * 1024,
                                     read_timeout=3600, client_flag=CLIENT.FOUND_ROWS, local_infile=True)
        return refuse_uploads(conn)

    def _fence(self, record: BacktrackRecord) -> bool:
        """read_only on the server, so writers that bypass the proxy cannot interfere."""
        try:
            with self.upstream.connect(role="fence") as conn, conn.cursor() as cur:
                cur.execute("/* auroratrack fence */ SELECT @@GLOBAL.read_only")
                previous = int(cur.fetchone()[0])
                self.fence_path.write_text(json.dumps({"previous_read_only": previous, "backtrack": record.id}))
                cur.execute("/* auroratrack fence */ SET GLOBAL read_only = 1")
        except pymysql.MySQLError as exc:
            self.fence_path.unlink(missing_ok=True)
            record.fence = f"direct writers were not fenced: {exc.args[-1] if exc.args else exc}"
            return False
        record.fence = "read_only"
        return True

    def _unfence(self) -> None:
        previous = json.loads(self.fence_path.read_text()).get("previous_read_only", 0)
        self._set_read_only(int(previous))
        self.fence_path.unlink(missing_ok=True)

    def _set_read_only(self, value: int) -> None:
        with self.upstream.connect(role="fence") as conn, conn.cursor() as cur:
            cur.execute(f"/* auroratrack fence */ SET GLOBAL read_only = {int(value)}")

    def _catch_up(self) -> None:
        """Wait until the streamer has stored everything the server has logged."""
        with self.upstream.connect(role="fence") as conn:
            target = current_binlog_position(conn)
        wait_for_checkpoint(self.store_path, target, self.catch_up_timeout)


def timed(record: BacktrackRecord, name: str, action: Callable[[], T]) -> T:
    """Run ``action``, adding its wall time to ``record.durations[name]`` (the finer split of
    the apply step)."""
    began = time.monotonic()
    try:
        return action()
    finally:
        record.durations[name] = round(record.durations.get(name, 0.0) + time.monotonic() - began, 6)


def _take_timings(applier: Applier, before: dict[str, float]) -> dict[str, float]:
    """The applier's timings since ``before``, taken out of it (the apply's own stay)."""
    taken = {name: round(sec - before.get(name, 0.0), 6) for name, sec in applier.timings.items()
             if sec != before.get(name)}
    applier.timings.clear()
    applier.timings.update(before)
    return taken


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _suppress_mysql(action: Callable[[], None]) -> None:
    with contextlib.suppress(pymysql.MySQLError):  # a dead connection: the server rolled back
        action()


class BacktrackConflicts(Exception):
    def __init__(self, conflicts: list[Conflict]):
        lines = [f"{len(conflicts)} binlog conflict(s); nothing was written (use --force to go ahead):"]
        lines += [f"  - [{c.kind}] {c.table or '*'}{' key ' + c.key if c.key else ''}: {c.reason}"
                  for c in conflicts[:50]]
        if len(conflicts) > 50:
            lines.append(f"  ... and {len(conflicts) - 50} more")
        super().__init__("\n".join(lines))
        self.conflicts = conflicts


def resolve_point(store: ChangeStore, target: Target, use_earliest: bool, now: int | None = None) -> Point:
    """The last transaction to keep for ``target``; raises BacktrackRefused when impossible."""
    now = now or now_us()
    earliest = store.earliest_backtrack_time_us()
    first = store.db.execute("SELECT MIN(txn_id) FROM transactions").fetchone()[0]
    last = store.db.execute("SELECT MAX(txn_id) FROM transactions").fetchone()[0]
    window = f"earliest possible {format_time_us(earliest)}, latest {format_time_us(now)}"
    if earliest is None:
        raise BacktrackRefused("no changelog yet: auroratrack has not started capturing")
    if target.kind == "time":
        t = target.time_us
        if t > now + 1_000_000:
            raise BacktrackRefused(f"{target.describe()} is in the future ({window})",
                                   {"earliest": earliest, "latest": now})
        if t < earliest:
            if not use_earliest:
                raise BacktrackRefused(
                    f"{target.describe()} is before the earliest backtrack time ({window}){_backfill_note(store)}; "
                    "use --use-earliest-time-on-point-in-time-unavailable to go there instead",
                    {"earliest": earliest, "latest": now})
            t = earliest
        keep = store.db.execute("SELECT MAX(txn_id) FROM transactions WHERE commit_time_us <= ?", (t,)).fetchone()[0]
        if keep is None:
            keep = (first - 1) if first is not None else _last_txn_id(store)
        return _point(store, max(keep, _history_being_read(store)), earliest)
    txn_id = _exact_txn(store, target)
    if txn_id is None:
        raise BacktrackRefused(f"{target.text} is not in the changelog (it holds transactions "
                               f"{first}..{last}; {window})", {"earliest": earliest, "latest": now})
    if txn_id <= _history_being_read(store):
        raise BacktrackRefused(f"{target.text} is in the history from before capture started, which is still "
                               f"being read{_backfill_note(store)}", {"earliest": earliest, "latest": now})
    return _point(store, txn_id - 1, earliest)


def _history_being_read(store: ChangeStore) -> int:
    """The top of the txn ids reserved for a backfill that is still reading (0 when none is):
    all of that history lies before the earliest backtrack time and is kept, read yet or not
    (backfill.py); a plan must never count transactions the backfill adds meanwhile."""
    history = store.history_range()
    return history.txn[1] - 1 if history is not None and not history.done else 0


def _backfill_note(store: ChangeStore) -> str:
    history = backfill.progress(store)
    if history is None or history["state"] not in ("starting", "reading"):
        return ""
    read = (f" ({history['bytes_read'] / history['bytes_total']:.0%} of {history['bytes_total']:,} binlog bytes)"
            if history["bytes_total"] else "")
    since = format_time_us(history["history_since_us"]) if history["history_since_us"] else "its start"
    return (f"; history from before capture started is still being read{read}: the earliest backtrack time "
            f"moves back to {since} once it is all in")


def _exact_txn(store: ChangeStore, target: Target) -> int | None:
    db = store.db
    if target.kind == "lsn":
        row = db.execute("SELECT txn_id FROM transactions WHERE first_lsn <= ? AND last_lsn >= ?",
                         (target.lsn, target.lsn)).fetchone()
    elif target.kind == "gtid":
        row = db.execute("SELECT txn_id FROM transactions WHERE gtid = ?", (target.gtid,)).fetchone()
    else:
        file, pos = target.position
        row = db.execute("SELECT txn_id FROM transactions WHERE (end_file > ? OR (end_file = ? AND end_pos > ?)) "
                         "ORDER BY txn_id LIMIT 1", (file, file, pos)).fetchone()
    return row[0] if row else None


def _last_txn_id(store: ChangeStore) -> int:
    row = store.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'transactions'").fetchone()
    return row[0] if row else 0


def _point(store: ChangeStore, keep_txn_id: int, earliest: int) -> Point:
    txn = store.transaction(keep_txn_id)
    if txn is not None:
        return Point(keep_txn_id, txn.commit_time_us, txn.last_lsn, txn.gtid)
    following = store.db.execute("SELECT MIN(first_lsn) FROM transactions WHERE txn_id > ?", (keep_txn_id,)).fetchone()
    return Point(keep_txn_id, earliest, (following[0] or 1) - 1, None)
