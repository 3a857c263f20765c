#!/usr/bin/env python3
"""Protocol compression through the proxy: the same query loop compressed and plain, direct and
through auroratrack, in one run.

sysbench compresses too (``bench/proxy_bench.py --compression``), but its answers are small
(a point select's row is ~150 bytes). This script adds a 100-row range (~8.6 KB per answer),
where compression saves bytes on the wire, and reports those bytes. Its clients are processes
of MariaDB Connector/Python (the C client library, the ``mariadb`` package: ``compress=True``
sets CLIENT_COMPRESS), each on one persistent connection, running text-protocol queries back to
back for ``--seconds``:

* ``point``: ``SELECT id, k, c FROM t WHERE id = ?`` over 10,000 rows (one ~130-byte row; the
  answer is over MySQL's 50-byte threshold, so the server deflates it);
* ``range100``: ``SELECT id, k, c FROM t WHERE id BETWEEN ? AND ?+99`` (100 rows, ~13 KB:
  where compression saves bytes on the wire).

Targets: ``direct`` (the server) and ``auroratrack`` (``auroratrack serve --no-capture``: the relay
alone, started fresh for each run; capture's cost is the proxy benchmark's business). Each cell
(workload, target, compressed or plain) runs once per round; the cells' order changes from round
to round; figures are medians over rounds. CPU comes from /proc/PID/stat of the proxy's and the
server's processes (bench/proxy_bench.py's accounting), per query; the clients' CPU from their
rusage. ``wire KB/query`` is the server's ``Bytes_sent`` per query: what compression saves.

Usage: ``python bench/compress_bench.py [--clients 4] [--seconds 8] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy_bench import CpuSnapshot, Lab, cpu_use, progress  # noqa: E402

from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER  # noqa: E402

ROWS = 10_000
WORKLOADS = {
    "point": "SELECT id, k, c FROM t WHERE id = {a}",
    "range100": "SELECT id, k, c FROM t WHERE id BETWEEN {a} AND {a} + 99",
}
PROXY = "auroratrack-nocapture"
TARGETS = ("direct", PROXY)
CLIENT_FLAG = "--client"


# -- one client process -------------------------------------------------------------------------------


def client_loop(port: int, compress: bool, workload: str, seconds: float) -> None:
    """Run ``workload`` on one connection for ``seconds``; print the number of queries and the
    CPU seconds the loop took (the interpreter's start-up is not the client's cost per query)."""
    import mariadb  # the C client library; imported here so the parent needs no libmariadb

    conn = mariadb.connect(host="127.0.0.1", port=port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                           database="bench", compress=compress, autocommit=True)
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
    state = cur.fetchone()[1]
    if state != ("ON" if compress else "OFF"):
        raise SystemExit(f"asked for compress={compress}, the server says Compression {state}")
    template = WORKLOADS[workload]
    rng = random.Random()
    queries = 0
    cpu_before = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(50):
            cur.execute(template.format(a=rng.randrange(1, ROWS - 100)))
            cur.fetchall()
        queries += 50
    cpu = time.process_time() - cpu_before
    conn.close()
    print(queries, cpu)


# -- the run ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    workload: str
    target: str
    compressed: bool
    queries: int
    seconds: float
    proxy_cpu: float
    server_cpu: float
    client_cpu: float
    wire_bytes: int

    def per_query_us(self, cpu: float) -> float:
        return cpu / self.queries * 1e6


def load_table(lab: Lab) -> None:
    conn = lab.server.connect()
    with conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS bench")
        cur.execute("USE bench")
        cur.execute("CREATE TABLE bench.t (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL)")
        # sysbench-like rows: a number and 120 characters of digit groups (they deflate ~2x).
        cur.execute("INSERT INTO bench.t SELECT seq, seq * 7919 % 100000, "
                    "CONCAT_WS('-', seq * 11, seq * 13, seq * 17, seq * 19, seq * 23, seq * 29, "
                    "seq * 31, seq * 37, seq * 41, seq * 43, seq * 47) FROM seq_1_to_10000")


def server_bytes_sent(lab: Lab) -> int:
    conn = lab.server.connect()
    with conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Bytes_sent'")
        return int(cur.fetchone()[1])


def measure(lab: Lab, workload: str, target_name: str, compressed: bool, clients: int,
            seconds: float) -> Run:
    with lab.running(target_name) as target:
        command = [sys.executable, __file__, CLIENT_FLAG, str(target.port), str(int(compressed)),
                   workload, str(seconds)]
        sent_before = server_bytes_sent(lab)
        before = CpuSnapshot.take()
        started = time.monotonic()
        procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
        outputs = [p.communicate()[0] for p in procs]
        elapsed = time.monotonic() - started
        after = CpuSnapshot.take()
        sent = server_bytes_sent(lab) - sent_before
        if any(p.returncode for p in procs):
            raise RuntimeError(f"a client failed on {target_name}: {outputs}")
        use = cpu_use(before, after, target.pid, lab.server.process.pid)
    queries = sum(int(o.split()[0]) for o in outputs)
    client_cpu = sum(float(o.split()[1]) for o in outputs)
    return Run(workload, target_name, compressed, queries, elapsed, use.proxy, use.server,
               client_cpu, sent)


def report(runs: list[Run], clients: int) -> str:
    head = ("| workload | target | protocol | QPS | proxy CPU us/query | server CPU us/query "
            "| client CPU us/query | wire KB/query |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for workload in WORKLOADS:
        for target in TARGETS:
            for compressed in (False, True):
                cell = [r for r in runs if (r.workload, r.target, r.compressed)
                        == (workload, target, compressed)]
                qps = statistics.median(r.queries / r.seconds for r in cell)
                proxy = statistics.median(r.per_query_us(r.proxy_cpu) for r in cell)
                server = statistics.median(r.per_query_us(r.server_cpu) for r in cell)
                client = statistics.median(r.per_query_us(r.client_cpu) for r in cell)
                wire = statistics.median(r.wire_bytes / r.queries / 1024 for r in cell)
                proxy_text = f"{proxy:.1f}" if target != "direct" else "-"
                lines.append(f"| {workload} | {'auroratrack' if target == PROXY else target} | "
                             f"{'compressed' if compressed else 'plain'} | {qps:,.0f} | "
                             f"{proxy_text} | {server:.1f} | {client:.1f} | {wire:.2f} |")
    return "\n".join(lines) + f"\n\n{clients} client processes, medians over rounds."


def ratios(runs: list[Run], rounds: int) -> str:
    """Per-round ratios of QPS and of CPU per query, median [min-max] over rounds."""
    def of(workload: str, target: str, compressed: bool, round_no: int) -> Run:
        cell = [r for r in runs if (r.workload, r.target, r.compressed)
                == (workload, target, compressed)]
        return cell[round_no]

    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"

    lines = ["| workload | QPS compressed/plain, direct | QPS compressed/plain, auroratrack "
             "| QPS auroratrack/direct, plain | QPS auroratrack/direct, compressed "
             "| proxy CPU/query compressed/plain |", "|---|---|---|---|---|---|"]
    for w in WORKLOADS:
        cols = []
        for num, den in [((w, "direct", True), (w, "direct", False)),
                         ((w, PROXY, True), (w, PROXY, False)),
                         ((w, PROXY, False), (w, "direct", False)),
                         ((w, PROXY, True), (w, "direct", True))]:
            cols.append(spread([(of(*num, i).queries / of(*num, i).seconds)
                                / (of(*den, i).queries / of(*den, i).seconds) for i in range(rounds)]))
        cols.append(spread([of(w, PROXY, True, i).per_query_us(of(w, PROXY, True, i).proxy_cpu)
                            / of(w, PROXY, False, i).per_query_us(of(w, PROXY, False, i).proxy_cpu)
                            for i in range(rounds)]))
        lines.append(f"| {w} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n\nper-round ratios: median [min-max] over rounds."


def bench(args: argparse.Namespace, lab: Lab) -> None:
    from proxy.tracker import IMPLEMENTATION

    if IMPLEMENTATION != "compiled":
        progress(f"warning: auroratrack runs the {IMPLEMENTATION} tracker: slower than the "
                 "product built with a C compiler (`.venv/bin/pip install -e .` builds it)")
    lab.server.start()
    load_table(lab)
    runs = []
    for round_no in range(args.rounds):
        # A workload's four cells back to back (in an order that changes), so that the ratios
        # within a round compare runs a few seconds apart.
        shuffle = random.Random(round_no).shuffle
        workloads = list(WORKLOADS)
        shuffle(workloads)
        order = []
        for workload in workloads:
            cells = [(workload, t, c) for t in TARGETS for c in (False, True)]
            shuffle(cells)
            order += cells
        for workload, target, compressed in order:
            run = measure(lab, workload, target, compressed, args.clients, args.seconds)
            progress(f"round {round_no + 1}: {workload} {target} "
                     f"{'compressed' if compressed else 'plain'}: {run.queries / run.seconds:,.0f} "
                     f"QPS, proxy {run.per_query_us(run.proxy_cpu):.1f} us/query")
            runs.append(run)
    print(report(runs, args.clients))
    print()
    print(ratios(runs, args.rounds))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [CLIENT_FLAG]:
        client_loop(int(argv[1]), argv[2] == "1", argv[3], float(argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="auroratrack-compress-bench-"))
    lab = Lab(work)
    try:
        bench(args, lab)
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
