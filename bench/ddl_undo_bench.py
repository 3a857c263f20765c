#!/usr/bin/env python3
"""DDL undo benchmark: a held DROP TABLE / TRUNCATE / destructive ALTER of a sysbench table, and its backtrack.

Targets (issue 15): undo a DROP TABLE and a TRUNCATE of the sysbench table with clients paused
under 1 s and the whole backtrack under 2 s; the held DROP TABLE through the proxy costs the
client no more than twice a plain DROP TABLE of the same table.

Method (a private MariaDB in a temp dir, removed at the end; auroratrack in this process with
capture on, as ``auroratrack serve`` runs it; the table and its helpers from bench/undo_bench.py):

* drop cost, per round: two copies of the table (``CREATE TABLE ... LIKE`` + ``INSERT ...
  SELECT``, not binlogged, not timed). One is dropped directly on the server ("plain"), the other
  through the proxy, where it is held ("held"); both timed at the client from sending the
  statement to its answer. Their ratio is paired within the round. The held copy is then dropped
  from the hold schema (not timed).
* undo, per round and per statement (DROP TABLE, TRUNCATE TABLE): wait until capture has
  everything, note the time T, wait 1.05 s, run the statement through the proxy, wait until
  capture has it, then ``backtrack --to T`` (``Backtracker.request`` + ``wait``). "total" is
  request to completed record, "paused" is ``record.durations['paused_s']``. The table's checksum
  (CHECKSUM TABLE, COUNT, SUM(CRC32) of every row) must equal the baseline afterwards. A proxy
  client runs ``SELECT 1`` every 20 ms; "stall" is the longest gap it saw while the undo ran.

* destructive ALTER cost, per round and per statement (DROP COLUMN pad, a narrowing MODIFY of c
  CHAR(120) to CHAR(60)): two copies again, one altered directly ("plain": the ALTER's own time),
  one through the proxy ("saved": the key and the column saved into the hold schema first, then
  the same ALTER, proxy.ddlrecord). The undo of the same ALTER on the table itself is timed as
  above (the inverse ALTER plus the saved column written back), checksum checked.

Medians over the rounds. The machine is shared: the load average is printed with the results.
Usage: ``.venv/bin/python bench/ddl_undo_bench.py [--rows 1000000] [--rounds 3]``; results go
to ``bench/results/ddl_undo_bench-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import pymysql  # noqa: E402
from undo_bench import (  # noqa: E402
    SCHEMA,
    SERVER_ARGS,
    TABLE,
    TEMPLATE,
    ClientProbe,
    checksum,
    execute,
    load_table,
    root_connect,
    start_service,
    wait_captured,
)

from proxy.backtrack import BacktrackRequest  # noqa: E402
from proxy.ddlops import HOLD_SCHEMA  # noqa: E402
from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed_statement(conn: pymysql.Connection, sql: str) -> float:
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
    return time.perf_counter() - started


def proxy_connect(port: int) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                           autocommit=True, read_timeout=600)


def make_copy(server: PrivateServer, name: str) -> None:
    with root_connect(server) as conn:
        execute(conn, "SET SESSION sql_log_bin = 0")
        execute(conn, f"DROP TABLE IF EXISTS {SCHEMA}.{name}")
        execute(conn, f"CREATE TABLE {SCHEMA}.{name} LIKE {TEMPLATE}.sbtest1")
        execute(conn, f"INSERT INTO {SCHEMA}.{name} SELECT * FROM {TEMPLATE}.sbtest1")


def drop_cost(server: PrivateServer, port: int) -> dict:
    make_copy(server, "plain_copy")
    make_copy(server, "held_copy")
    with root_connect(server) as conn:
        execute(conn, "FLUSH TABLES")
        plain = timed_statement(conn, f"DROP TABLE {SCHEMA}.plain_copy")
    with proxy_connect(port) as conn:
        held = timed_statement(conn, f"DROP TABLE {SCHEMA}.held_copy")
    with root_connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_NAME LIKE %s", (HOLD_SCHEMA, "%\\_held\\_copy"))
        for (name,) in cur.fetchall():
            cur.execute(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")
    return {"plain_s": plain, "held_s": held, "ratio": held / plain}


ALTERS = {"DROP COLUMN": "ALTER TABLE {table} DROP COLUMN pad",
          "narrowing MODIFY": "ALTER TABLE {table} MODIFY c CHAR(60) NOT NULL DEFAULT ''"}


def alter_cost(server: PrivateServer, port: int, statement: str) -> dict:
    make_copy(server, "plain_copy")
    make_copy(server, "saved_copy")
    with root_connect(server) as conn:
        execute(conn, "FLUSH TABLES")
        execute(conn, "SET SESSION sql_mode = ''")
        plain = timed_statement(conn, ALTERS[statement].format(table=f"{SCHEMA}.plain_copy"))
        execute(conn, f"DROP TABLE {SCHEMA}.plain_copy")
    with proxy_connect(port) as conn:
        execute(conn, "SET SESSION sql_mode = ''")
        saved = timed_statement(conn, ALTERS[statement].format(table=f"{SCHEMA}.saved_copy"))
        execute(conn, f"DROP TABLE {SCHEMA}.saved_copy")  # (held; dropped from the hold schema below)
    with root_connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_NAME LIKE %s", (HOLD_SCHEMA, "%\\_saved\\_copy"))
        for (name,) in cur.fetchall():
            cur.execute(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")
    return {"statement": statement, "plain_s": plain, "saved_s": saved, "ratio": saved / plain}


def undo(server: PrivateServer, service, probe: ClientProbe, baseline: list, statement: str) -> dict:
    store_path = service.service.config.store_path
    wait_captured(server, store_path)
    moment = dt.datetime.now(dt.UTC).isoformat()
    time.sleep(1.05)
    with proxy_connect(service.port) as conn:
        execute(conn, "SET SESSION sql_mode = ''")
        sql = ALTERS[statement].format(table=TABLE) if statement in ALTERS else f"{statement} {TABLE}"
        forward = timed_statement(conn, sql)
    wait_captured(server, store_path)
    backtracker = service.service.backtracker
    probe.open_window()
    started = time.perf_counter()
    record = service.call(lambda: backtracker.request(BacktrackRequest(to=moment)))
    record = service.call(lambda: backtracker.wait(record.id, 600), timeout=620)
    total = time.perf_counter() - started
    stall = probe.close_window()
    ok = record.status == "completed" and checksum(server) == baseline
    if not ok:
        progress(f"{statement}: {record.status} {record.error}; checksum equal: {checksum(server) == baseline}")
    return {"statement": statement, "forward_s": forward, "total_s": total,
            "paused_s": record.durations.get("paused_s"),
            "stall_s": stall, "ok": ok, "steps": {s["name"]: s["duration_s"] for s in record.steps}}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict) -> str:
    lines = [f"rows {results['rows']}, rounds {results['rounds']}, load {results['load']}"]
    costs = results["drop_cost"]
    lines.append(f"DROP TABLE at the client: plain {median([c['plain_s'] for c in costs]) * 1000:.1f} ms, "
                 f"held through the proxy {median([c['held_s'] for c in costs]) * 1000:.1f} ms, "
                 f"ratio {median([c['ratio'] for c in costs]):.2f} (target <= 2)")
    for statement in ALTERS:
        costs = [c for c in results["alter_cost"] if c["statement"] == statement]
        lines.append(f"ALTER TABLE {statement} at the client: plain {median([c['plain_s'] for c in costs]):.3f} s, "
                     f"through the proxy with its data saved first {median([c['saved_s'] for c in costs]):.3f} s, "
                     f"ratio {median([c['ratio'] for c in costs]):.2f}")
    for statement in ("DROP TABLE", "TRUNCATE TABLE", *ALTERS):
        trials = [t for t in results["undo"] if t["statement"] == statement]
        lines.append(f"undo {statement}: total {median([t['total_s'] for t in trials]):.3f} s (target < 2), "
                     f"paused {median([t['paused_s'] for t in trials]):.3f} s (target < 1), "
                     f"client stall {median([t['stall_s'] or 0 for t in trials]):.3f} s, "
                     f"the statement itself {median([t['forward_s'] for t in trials]) * 1000:.1f} ms, "
                     f"checksums {'all equal' if all(t['ok'] for t in trials) else 'NOT all equal'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="ddl-undo-bench-"))
    server = PrivateServer(work / "server", extra_args=SERVER_ARGS)
    results: dict = {"rows": args.rows, "rounds": args.rounds, "load": os.getloadavg(), "drop_cost": [],
                     "alter_cost": [], "undo": []}
    service = probe = None
    try:
        server.start()
        progress(f"loading {args.rows} rows")
        load_table(server, args.rows)
        baseline = checksum(server)
        service = start_service(server, work)
        probe = ClientProbe(service.port).start()
        for round_no in range(args.rounds):
            progress(f"round {round_no + 1}")
            results["drop_cost"].append(drop_cost(server, service.port))
            for statement in ALTERS:
                results["alter_cost"].append(alter_cost(server, service.port, statement))
            for statement in ("DROP TABLE", "TRUNCATE TABLE", *ALTERS):
                results["undo"].append(undo(server, service, probe, baseline, statement))
        results["load_end"] = os.getloadavg()
    finally:
        if probe is not None:
            probe.stop()
        if service is not None:
            service.stop()
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ddl_undo_bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=1))
    print(report(results))
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
