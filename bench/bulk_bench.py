#!/usr/bin/env python3
"""Bulk insert benchmark: MariaDB Connector/Python ``executemany`` of N rows (100,000 by default),
directly and through auroratrack, in the same run.

With MARIADB_CLIENT_STMT_BULK_OPERATIONS relayed, ``executemany`` sends the rows as a few
COM_STMT_BULK_EXECUTE packets of up to 16 MiB (one COM_STMT_EXECUTE per row without it); this
measures what the proxy's hop costs such a client.

Method: a private MariaDB (``proxy.sandbox.PrivateServer``) and ``auroratrack serve`` in front of
it (``--no-capture`` unless ``--capture``: the relay's own cost, not the binlog decoding of the
rows). Each run is a fresh child process (the connector holds the GIL while it reads) that
connects, empties the table, and times ``executemany`` + ``COMMIT``; rounds alternate which
target goes first. Reported: the median wall time per target, and the median with [min-max] of
the per-round ratios proxy/direct; plus auroratrack's CPU per run (utime+stime from /proc).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from proxy_bench import Lab, read_processes, tree_cpu_seconds  # noqa: E402

from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER  # noqa: E402

CHILD = """
import json, sys, time, mariadb
port, rows = int(sys.argv[1]), int(sys.argv[2])
conn = mariadb.connect(host="127.0.0.1", port=port, user=sys.argv[3], password=sys.argv[4],
                       database="bulk_bench", autocommit=False)
cur = conn.cursor()
cur.execute("TRUNCATE TABLE /* auroratrack bench */ t")
data = [(i, f"row {i} " + "x" * (i % 20), i / 7, f"2026-12-{i % 28 + 1:02d}") for i in range(rows)]
started = time.perf_counter()
cur.executemany("INSERT /* auroratrack bench */ INTO t VALUES (?, ?, ?, ?)", data)
conn.commit()
elapsed = time.perf_counter() - started
cur.execute("SELECT COUNT(*), SUM(id) FROM t")
count, total = cur.fetchone()
print(json.dumps({"seconds": elapsed, "rows": count, "sum": int(total)}))
"""


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its children so far (all threads)."""
    return tree_cpu_seconds(read_processes(), pid)


def one_run(port: int, rows: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(port), str(rows), ADMIN_USER,
                          ADMIN_PASSWORD], capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out.stdout)
    assert result["rows"] == rows and result["sum"] == rows * (rows - 1) // 2, result
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--capture", action="store_true", help="run auroratrack with capture on")
    args = parser.parse_args(argv)
    proxy_name = "auroratrack" if args.capture else "auroratrack-nocapture"
    lab = Lab(Path(tempfile.mkdtemp(prefix="auroratrack-bulk-bench-")))
    try:
        lab.server.start()
        with lab.server.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE bulk_bench")
            cur.execute("CREATE TABLE bulk_bench.t (id INT PRIMARY KEY, v VARCHAR(40), "
                        "n DOUBLE, d DATE) ENGINE=InnoDB")
        times: dict[str, list[float]] = {"direct": [], proxy_name: []}
        ratios, proxy_cpu = [], []
        with lab.running(proxy_name) as proxy:
            one_run(proxy.port, 1000)  # warm both paths up
            one_run(lab.server.port, 1000)
            for number in range(args.rounds):
                order = ["direct", proxy_name] if number % 2 else [proxy_name, "direct"]
                got = {}
                for name in order:
                    port = proxy.port if name == proxy_name else lab.server.port
                    cpu_before = cpu_seconds(proxy.proc.pid)
                    got[name] = one_run(port, args.rows)["seconds"]
                    if name == proxy_name:
                        proxy_cpu.append(cpu_seconds(proxy.proc.pid) - cpu_before)
                    times[name].append(got[name])
                ratios.append(got[proxy_name] / got["direct"])
                print(f"round {number + 1}: direct {got['direct']:.3f} s, "
                      f"{proxy_name} {got[proxy_name]:.3f} s", file=sys.stderr)
        print(f"executemany of {args.rows:,} rows (MariaDB Connector/Python, bulk), "
              f"{args.rounds} rounds:\n")
        print("| target | median s | rows/s |\n|---|---|---|")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {median:.3f} | {args.rows / median:,.0f} |")
        print(f"\n{proxy_name} / direct time: {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}-{max(ratios):.3f}]; auroratrack CPU per run: "
              f"{statistics.median(proxy_cpu):.3f} s (median)")
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
