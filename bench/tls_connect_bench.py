#!/usr/bin/env python3
"""New TLS connections per second: straight to the server, and through auroratrack.

Each connection through auroratrack costs two TLS handshakes (the client's, terminated by the
proxy, and the proxy's own to the server) plus the relayed login. This script measures how many
connect + login + close cycles per second clients get, with TLS on every leg, against a
private server that requires TLS (``require_secure_transport=ON``), straight and through
``auroratrack serve --no-capture`` (the real command line, in its own process).

Clients: ``--clients`` worker processes (default 4), each looping MariaDB Connector/Python
(libmariadb, C) connects with ``ssl=True`` for ``--duration`` seconds. Targets alternate over
``--rounds`` rounds; the ratio is the median of the per-round ratios proxy/direct. The machine is
shared and noisy: compare the ratio, not the absolute rates.

Usage: ``.venv/bin/python bench/tls_connect_bench.py [--duration 5 --rounds 3 --clients 4]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import Lab, progress  # noqa: E402 - the same lab: server and auroratrack processes

from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER  # noqa: E402


def _connect_loop(port: int, seconds: float, counts) -> None:
    import mariadb

    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn = mariadb.connect(host="127.0.0.1", port=port, user=ADMIN_USER, password=ADMIN_PASSWORD, ssl=True)
        conn.close()
        done += 1
    counts.put(done)


def connections_per_second(port: int, seconds: float, clients: int) -> float:
    counts: multiprocessing.Queue = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_connect_loop, args=(port, seconds, counts)) for _ in range(clients)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    total = sum(counts.get(timeout=seconds + 60) for _ in workers)
    for worker in workers:
        worker.join()
    return total / (time.monotonic() - started)


def check_tls(port: int) -> str:
    import mariadb

    conn = mariadb.connect(host="127.0.0.1", port=port, user=ADMIN_USER, password=ADMIN_PASSWORD, ssl=True)
    try:
        cur = conn.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        return cur.fetchone()[1]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="auroratrack-tlsconn-"))
    lab = Lab(work, work / "tls")
    try:
        lab.server.start()
        rates: dict[str, list[float]] = {"direct": [], "auroratrack": []}
        for round_no in range(1, args.rounds + 1):
            order = ["direct", "auroratrack-nocapture"] if round_no % 2 else ["auroratrack-nocapture", "direct"]
            for name in order:
                with lab.running(name) as target:
                    cipher = check_tls(target.port)
                    rate = connections_per_second(target.port, args.duration, args.clients)
                key = "direct" if name == "direct" else "auroratrack"
                rates[key].append(rate)
                progress(f"round {round_no} {name:22} {rate:8.1f} connections/s (server leg {cipher})")
        ratios = [a / d for a, d in zip(rates["auroratrack"], rates["direct"], strict=True)]
        print(f"\nnew TLS connections/s, {args.clients} client processes, "
              f"{args.rounds} rounds x {args.duration:.0f} s:")
        print("| target | connections/s (median) |\n|---|---|")
        for key, values in rates.items():
            print(f"| {key} | {statistics.median(values):,.0f} |")
        print(f"\nauroratrack/direct: median {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}-{max(ratios):.2f}] (target: at least 0.5)")
    finally:
        lab.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
