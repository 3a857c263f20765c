#!/usr/bin/env python3
"""Backfill benchmark: how fast history from before auroratrack is captured, and what it costs
the live stream's lag.

Against a private MariaDB (capture_bench's server settings and helpers), in one run:

1. History: ``--rows`` row changes (1,000,000 by default) in transactions of ``--txn-rows``
   (capture_bench's sysbench-like table and mix: 50% INSERT, 30% UPDATE, 20% DELETE), written
   with no auroratrack running, bracketed by FLUSH BINARY LOGS.
2. Baseline, the live capture's throughput: capture_bench's ``run_streamer`` (the streamer on a
   store pre-seeded at the start of the range, i.e. the path that reads a backlog) over the same
   range. Row changes per steady CPU-second (start-up CPU subtracted).
3. Backfill: ``python -m proxy.changelog.streamer --backfill`` on an empty store, window 1 day:
   the live stream starts at the server's position at once, and its history reader (a process
   of its own, historyreader.py) finds the first binlog file and reads the whole history beside
   it. As soon as the store has a checkpoint (the moment ``serve`` lets clients in), a live
   writer commits one single-row INSERT every ``--live-ms`` on a direct connection; each write's
   lag is the time from just before it was sent until the store's (live) checkpoint reaches the
   server's position after its commit (polled every ~5 ms). Throughput: the history's row
   changes per CPU-second of the history reader while it read (its own figure, kept in the
   store's backfill plan: start-up and finding the start file excluded). Lag: over the writes
   made while the backfill ran (until its progress says done), and over those after it.

Targets: backfill throughput comparable to the live capture's (the same code reads both); the
live capture's lag under 1 s (issue 3) while a backfill of 1,000,000 row changes runs.

Usage: ``.venv/bin/python bench/backfill_bench.py [--rows 1000000 --txn-rows 100000 --live-ms 50]``.
Raw results go to ``bench/results/`` (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # capture_bench and common, run from anywhere

import capture_bench as cb  # noqa: E402

from proxy.changelog import backfill  # noqa: E402
from proxy.changelog.store import ChangeStore  # noqa: E402
from proxy.changelog.streamer import current_binlog_position  # noqa: E402

LIVE_TABLE = "capbench.live"


def progress(message: str) -> None:
    print(f"[backfill-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_history(server, rows: int, txn_rows: int) -> cb.BinlogRange:
    config = cb.parse_args(["--rows", str(rows), "--txn-rows", str(txn_rows), "--skip-lag"])
    rng = cb.load_range(server, config)  # (re)creates the schema
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"/* auroratrack bench */ CREATE TABLE {LIVE_TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, at DOUBLE)")
    return rng


def spawn_backfill(server, store_path: Path) -> subprocess.Popen:
    store_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, AURORATRACK_UPSTREAM_PASSWORD=cb.ADMIN_PASSWORD)
    log = open(store_path.with_name("streamer.log"), "wb")  # noqa: SIM115 - the child keeps it
    return subprocess.Popen([*cb.streamer_command(server, store_path), "--backfill", "--window-s", "86400"],
                            cwd=cb.REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_first_checkpoint(proc: subprocess.Popen, store_path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the streamer exited with {proc.returncode}")
        if store_path.exists():
            with contextlib.suppress(sqlite3.OperationalError), \
                    contextlib.closing(ChangeStore(store_path, readonly=True)) as store:
                if store.checkpoint() is not None:  # raises while the streamer creates the schema
                    return
        time.sleep(0.01)
    raise RuntimeError("the streamer never fixed its start position")


class LiveWriter:
    """One single-row write every ``interval_s``; each write's lag once the store has it."""

    def __init__(self, server, interval_s: float):
        self.conn = server.connect()
        self.conn.autocommit(True)
        self.interval_s = interval_s
        self.next_write = 0.0
        self.pending: list[tuple[tuple[str, int], float, bool]] = []
        self.lags: list[tuple[float, float, bool]] = []  # (written at, lag, during backfill)

    def write_if_due(self, now: float, during_backfill: bool) -> None:
        if now < self.next_write:
            return
        self.next_write = max(self.next_write + self.interval_s, now)
        with self.conn.cursor() as cur:
            cur.execute(f"/* auroratrack bench */ INSERT INTO {LIVE_TABLE} (at) VALUES (%s)", (time.time(),))
        self.pending.append((current_binlog_position(self.conn), now, during_backfill))

    def resolve(self, checkpoint: tuple[str, int] | None, t0: float) -> None:
        now = time.monotonic()
        while self.pending and checkpoint is not None and self.pending[0][0] <= checkpoint:
            _, written, during = self.pending.pop(0)
            self.lags.append((round(written - t0, 3), now - written, during))


def child_pids(pid: int) -> set[int]:
    with contextlib.suppress(OSError):
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    return set()


def backfill_done(reader: ChangeStore) -> bool:
    history = backfill.progress(reader)
    return history is not None and history["state"] == "done"


def run_backfill(server, rng: cb.BinlogRange, work: Path, live_ms: int) -> dict:
    store_path = work / "backfill" / "changes.db"
    t0 = time.monotonic()
    proc = spawn_backfill(server, store_path)
    writer = LiveWriter(server, live_ms / 1000)
    try:
        wait_first_checkpoint(proc, store_path)
        startup_cpu = cb.process_cpu_s(proc.pid)  # start-up and finding the start (probes every file)
        started = time.monotonic()
        reader = ChangeStore(store_path, readonly=True)
        done_at, done_cpu, meter = None, None, cb.LoadMeter({proc.pid, server.process.pid})
        history_pids: set[int] = set()
        while done_at is None or time.monotonic() < done_at + 3.0:
            if proc.poll() is not None:
                raise RuntimeError(f"the streamer exited with {proc.returncode}")
            now = time.monotonic()
            writer.write_if_due(now, done_at is None)
            checkpoint = cb.read_checkpoint(reader)
            history_pids |= child_pids(proc.pid)
            if done_at is None and backfill_done(reader):
                done_at, done_cpu = time.monotonic(), cb.process_cpu_s(proc.pid)
                load = meter.finish(also_ours=history_pids)
            writer.resolve(checkpoint, t0)
            time.sleep(0.005)
        last_run = json.loads(reader.get_meta(backfill.META_KEY))["last_run"]
        deadline = time.monotonic() + 30
        while writer.pending and time.monotonic() < deadline:
            writer.resolve(cb.read_checkpoint(reader), t0)
            time.sleep(0.005)
        reader.close()
    finally:
        cb.stop_process(proc)
        writer.conn.close()
    during = [lag for _, lag, d in writer.lags if d]
    after = [lag for _, lag, d in writer.lags if not d]
    return {
        "wall_s": round(done_at - started, 3), "reader_wall_s": last_run["wall_s"],
        "cpu_s": last_run["cpu_s"], "history_transactions": last_run["transactions"],
        "live_streamer_cpu_s": round(done_cpu - startup_cpu, 3),
        "row_changes_per_cpu_s": round(rng.row_changes / last_run["cpu_s"]),
        "live_writes_during": len(during), "lag_during_p50_s": round(cb.percentile(during, 0.5), 3),
        "lag_during_p99_s": round(cb.percentile(during, 0.99), 3),
        "lag_during_max_s": round(max(during, default=float("nan")), 3),
        "live_writes_after": len(after), "lag_after_p50_s": round(cb.percentile(after, 0.5), 3),
        "lag_after_max_s": round(max(after, default=float("nan")), 3),
        "lag_series": [(t, round(lag, 4), d) for t, lag, d in writer.lags],
        "other_processes_cpu_cores": load.others_cores, "loadavg_1m": load.loadavg_1m,
    }


def report(results: dict) -> str:
    live, back = results["live"], results["backfill"]
    ratio = back["row_changes_per_cpu_s"] / live["row_changes_per_cpu_s"]
    return "\n".join([
        f"history: {results['row_changes']:,} row changes, {results['binlog_bytes']:,} binlog bytes; "
        f"load average {results['loadavg_start']} -> {results['loadavg_end']} on {os.cpu_count()} CPUs",
        f"live capture (backlog path): {live['row_changes_per_cpu_s']:,} row changes per CPU-s "
        f"({live['cpu_s']:.2f} CPU-s steady, {live['wall_s']:.2f} s wall)",
        f"backfill:                    {back['row_changes_per_cpu_s']:,} row changes per CPU-s "
        f"({back['cpu_s']:.2f} CPU-s in the history reader, {back['reader_wall_s']:.2f} s wall; "
        f"{back['wall_s']:.2f} s from the live start to done)  ratio {ratio:.2f}; live streamer "
        f"{back['live_streamer_cpu_s']:.2f} CPU-s meanwhile; other processes used "
        f"{back['other_processes_cpu_cores']} cores",
        f"live lag while the backfill ran ({back['live_writes_during']} writes): p50 {back['lag_during_p50_s']} s, "
        f"p99 {back['lag_during_p99_s']} s, max {back['lag_during_max_s']} s",
        f"live lag after it finished ({back['live_writes_after']} writes): p50 {back['lag_after_p50_s']} s, "
        f"max {back['lag_after_max_s']} s",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--txn-rows", type=int, default=100_000)
    parser.add_argument("--live-ms", type=int, default=50)
    parser.add_argument("--results-dir", type=Path, default=cb.REPO / "bench" / "results")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="auroratrack-backfillbench-"))
    results: dict = {"loadavg_start": round(os.getloadavg()[0], 2)}
    try:
        with cb.private_server(work) as server:
            progress(f"writing {args.rows:,} row changes of history")
            rng = write_history(server, args.rows, args.txn_rows)
            results.update(row_changes=rng.row_changes, binlog_bytes=rng.bytes)
            progress("live capture over the same range (baseline)")
            run = cb.run_streamer(server, rng, work, 0)
            steady = run.cpu_s - run.startup_cpu_s
            results["live"] = {"wall_s": run.wall_s, "cpu_s": round(steady, 3),
                               "row_changes_per_cpu_s": round(rng.row_changes / steady)}
            progress("backfill with a live writer")
            results["backfill"] = run_backfill(server, rng, work, args.live_ms)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["loadavg_end"] = round(os.getloadavg()[0], 2)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"backfill_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(report(results))
    print(f"\nraw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
