#!/usr/bin/env python3
"""Binlog file reader benchmark: decoding binlog files from disk, against ``mariadb-binlog -v``.

A private MariaDB (``proxy.sandbox.PrivateServer``) writes capture_bench's workload (``--rows``
row changes of ``capbench.sbtest1``, 50% INSERT, 30% UPDATE, 20% DELETE, in transactions of
``--txn-rows``) into binlog files of their own (FLUSH BINARY LOGS before and after). Then, over
the same local files, ``--repeat`` times in an order that rotates:

* ``frame``: ``binlogfile.BinlogFile.events()`` over every file (magic, format description,
  CRC32 of every event checked): the framing alone;
* ``decode``: the same plus every table map parsed and every rows event decoded to values
  (``decoder.decode_rows``), in this process: what a backfill or an inspection decodes;
* ``inspect-binlog``: the ``auroratrack inspect-binlog`` command (no ``--rows``; it stores the
  events in a scratch change store and decodes every row to count it), a process of its own;
* ``mariadb-binlog -v``: ``--base64-output=decode-rows -v`` to /dev/null, the C reader that
  decodes every row to pseudo-SQL.

CPU time: ``time.process_time`` for the in-process readers, the reaped child's rusage for the
commands. The figure to compare is row changes per CPU-second (the machine is shared, wall
times move with its load); the ratio against ``mariadb-binlog -v`` measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import capture_bench as cb  # noqa: E402

from proxy.changelog import binlog as bl  # noqa: E402
from proxy.changelog.binlogfile import BinlogFile  # noqa: E402
from proxy.changelog.decoder import decode_rows, parse_table_map, rows_event_table_id  # noqa: E402
from proxy.sandbox import PrivateServer  # noqa: E402

READERS = ("frame", "decode", "inspect-binlog", "mariadb-binlog -v")


def frame(files: list[Path]) -> int:
    return sum(1 for path in files for _ in BinlogFile(path).events())


def decode(files: list[Path]) -> int:
    rows = 0
    for path in files:
        binlog = BinlogFile(path)
        maps = {}
        for event in binlog.events():
            if event.type == bl.TABLE_MAP_EVENT:
                table = parse_table_map(event.body, binlog.format.flavor)
                maps[table.table_id] = table
            elif event.type in bl.ROWS_EVENTS:
                rows += len(decode_rows(event.type, event.body, maps[rows_event_table_id(event.body)]))
    return rows


def run_command(cmd: list[str]) -> float:
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    code, cpu = cb.wait4_cpu(proc)
    if code != 0:
        raise RuntimeError(f"{cmd[0]} failed ({code}): {proc.stderr.read().decode(errors='replace')[-2000:]}")
    proc.stderr.close()
    return cpu


def run(reader: str, files: list[Path]) -> tuple[float, float]:
    """(wall s, CPU s) of one reader over the files."""
    t0, c0 = time.monotonic(), time.process_time()
    if reader == "frame":
        frame(files)
        cpu = time.process_time() - c0
    elif reader == "decode":
        decode(files)
        cpu = time.process_time() - c0
    elif reader == "inspect-binlog":
        cpu = run_command([sys.executable, "-m", "proxy.cli", "inspect-binlog", "--output", "json", *map(str, files)])
    else:
        cpu = run_command([cb.mariadb_binlog_program(), "--no-defaults", "--base64-output=decode-rows", "-v",
                           *map(str, files)])
    return time.monotonic() - t0, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="binlog file reader vs mariadb-binlog -v")
    parser.add_argument("--rows", type=int, default=1_000_000, help="row changes [1000000]")
    parser.add_argument("--txn-rows", type=int, default=100_000, help="row changes per transaction [100000]")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each reader [3]")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="auroratrack-binlogfile-bench-"))
    server = PrivateServer(work / "server", extra_args=cb.SERVER_ARGS)
    try:
        server.start()
        config = cb.BenchConfig(args.rows, args.txn_rows, args.repeat, 0, 0, 0, 0, 0, None, True, False, work)
        rng = cb.load_range(server, config)
        conn = server.connect()
        with conn, conn.cursor() as cur:
            cur.execute("/* auroratrack bench */ SELECT @@log_bin_basename")
            base = Path(cur.fetchone()[0])
        files = [base.parent / name for name in rng.files]
        decoded = decode(files)
        print(f"{rng.row_changes} row changes ({decoded} decoded), {rng.bytes / 1e6:.1f} MB of binlog "
              f"in {len(files)} file(s); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        if decoded != rng.row_changes:
            raise RuntimeError("the decoder and the server disagree on the row changes")
        results: dict[str, list[tuple[float, float]]] = {reader: [] for reader in READERS}
        for round_no in range(args.repeat):
            for reader in READERS[round_no % len(READERS):] + READERS[:round_no % len(READERS)]:
                results[reader].append(run(reader, files))
        baseline = statistics.median(cpu for _, cpu in results["mariadb-binlog -v"])
        print(f"{'reader':<20} {'wall s':>8} {'CPU s':>8} {'rows/CPU-s':>12} {'CPU vs mariadb-binlog -v':>26}")
        for reader, runs in results.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"{reader:<20} {wall:>8.2f} {cpu:>8.2f} {rng.row_changes / cpu:>12,.0f} {cpu / baseline:>25.2f}x")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
