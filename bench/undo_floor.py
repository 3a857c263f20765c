#!/usr/bin/env python3
"""The server's own floor for an undo written as SQL, against the mistake, in one run.

Question: can any tool that undoes a mistake with SQL statements (auroratrack, flashback's
``BINLOG`` statements, binlog2sql) be as fast as the mistake itself? This script gives the
undo every advantage no real tool has: the rows to put back are already in a table on the same
server (no client, no parsing, no network), and the undo is one server-side statement.

Method, on a private MariaDB/MySQL (ROW binlog, FULL images, the undo benchmark's settings):
the sysbench-like table of ``--rows`` rows (``undo_bench.load_table``) and its template copy.
Each round, in one transaction each, with the binlog on as in production:

* ``DELETE FROM t`` (the mistake), timed; then ``INSERT INTO t SELECT * FROM template``, timed
  (the floor of undoing it), and the checksum checked;
* ``UPDATE t SET k = k + 1, c = REVERSE(c)`` (the mistake), timed; then ``UPDATE t
  STRAIGHT_JOIN template ... SET t.k = template.k, t.c = template.c`` (the floor), timed and
  checked.

Medians over ``--rounds``. A floor above 1.0x the mistake means no SQL undo can meet "no
slower than the mistake" on this server: the mistake's DELETE only marks rows (InnoDB purges
them later, in the background), while the undo must write every row back. A floor near 1.0x
(the UPDATE) leaves no room for the undo's own work: finding the images and loading them.

Usage: ``.venv/bin/python bench/undo_floor.py [--rows 1000000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from undo_bench import (  # noqa: E402
    SERVER_ARGS,
    TABLE,
    TEMPLATE,
    checksum,
    execute,
    load_table,
    root_connect,
)

from proxy.sandbox import PrivateServer  # noqa: E402

CASES = (
    ("DELETE all", f"DELETE FROM {TABLE}", f"INSERT INTO {TABLE} SELECT * FROM {TEMPLATE}.sbtest1"),
    ("UPDATE all", f"UPDATE {TABLE} SET k = k + 1, c = REVERSE(c)",
     # Driven from the table being updated (each row looked up in the copy by key): in place.
     f"UPDATE {TABLE} AS t STRAIGHT_JOIN {TEMPLATE}.sbtest1 AS s ON s.id = t.id SET t.k = s.k, t.c = s.c"),
)


def timed_transaction(server: PrivateServer, sql: str) -> tuple[float, float]:
    """The transaction's whole time and its COMMIT's alone (seconds)."""
    with root_connect(server) as conn:
        execute(conn, "SET SESSION foreign_key_checks = 0")
        began = time.perf_counter()
        execute(conn, "START TRANSACTION")
        execute(conn, sql)
        committing = time.perf_counter()
        execute(conn, "COMMIT")
        ended = time.perf_counter()
        return ended - began, ended - committing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="auroratrack-floor-") as work:
        server = PrivateServer(Path(work) / "server", extra_args=SERVER_ARGS)
        server.start()
        try:
            load_table(server, args.rows)
            baseline = checksum(server)
            times: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in CASES}
            for round_no in range(1, args.rounds + 1):
                for name, mistake, undo in CASES:
                    forward, _ = timed_transaction(server, mistake)
                    floor, commit = timed_transaction(server, undo)
                    if checksum(server) != baseline:
                        raise RuntimeError(f"{name}: the floor's undo did not restore the table")
                    times[name].append((forward, floor, commit))
                    print(f"round {round_no} {name}: mistake {forward:.2f} s, floor {floor:.2f} s "
                          f"(its COMMIT {commit:.2f} s)", flush=True)
        finally:
            server.destroy()
    print(f"\n{args.rows:,} rows, medians of {args.rounds} rounds:\n")
    # The COMMIT alone is the floor of what an undo written before the pause still pays inside
    # it: the server writes the transaction's binlog cache into the binlog at commit.
    print("| case | mistake s | server floor of the undo s | its COMMIT alone s | floor / mistake |")
    print("|---|---|---|---|---|")
    for name, runs in times.items():
        forward = statistics.median(f for f, _, _ in runs)
        floor = statistics.median(u for _, u, _ in runs)
        commit = statistics.median(c for _, _, c in runs)
        ratio = statistics.median(u / f for f, u, _ in runs)
        print(f"| {name} | {forward:.2f} | {floor:.2f} | {commit:.2f} | {ratio:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
