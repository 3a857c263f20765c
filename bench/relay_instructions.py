#!/usr/bin/env python3
"""User-space instructions per query: haproxy, a bare uvloop relay and auroratrack's relay.

Why: on this 2-core VM a 10 s throughput cell moves +-15% from run to run (proxy_bench.py), so a
change worth a few percent of the relay's cost cannot be seen there. callgrind counts the
instructions a process executes in user space, and the count is the same on every run for the
same binaries and inputs, whatever else the machine is doing. What it cannot see is the kernel
(about 80% of a relay's time here, and the same system calls for all three relays), nor how
fast the instructions run. So this script answers "how much work does the relay do per query
in user space, against a C relay and against the Python floor", not "how many queries a second".

What it does, on 127.0.0.1:

1. Starts a private MariaDB/MySQL and loads one sysbench table.
2. For each target, starts the relay under ``valgrind --tool=callgrind --instr-atstart=no``:
   * ``haproxy``: Debian's haproxy, TCP mode, as in proxy_bench.py;
   * ``pyrelay``: a bare uvloop byte relay, no framing, no state (proxy_bench.py's);
   * ``auroratrack``: ``auroratrack serve --no-capture``, the relay as shipped (the streamer is
     another process and is not on this path).
3. Runs sysbench once to warm the connection path, switches instrumentation on
   (``callgrind_control -i on``), runs ``--events`` queries of each workload on one connection,
   switches it off, and reads the count valgrind reports when the relay exits.

Usage: ``make relay-instructions`` or ``.venv/bin/python bench/relay_instructions.py
[--events 3000 --workloads point_select,read_write]``. Needs valgrind, sysbench and haproxy
(``scripts/ensure-system-packages.sh bench``). Takes about a minute.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb  # noqa: E402  (bench/ is on sys.path when a script runs)
from common import stop_process  # noqa: E402

TARGETS = ("haproxy", pb.BARE_RELAY, "auroratrack")
WARM_UP_EVENTS = 200
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


@dataclass(frozen=True)
class Count:
    target: str
    workload: str
    queries: int
    instructions: int

    @property
    def per_query(self) -> float:
        return self.instructions / self.queries


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000, help="sysbench events per workload [3000]")
    parser.add_argument("--workloads", type=lambda s: tuple(s.split(",")), default=pb.WORKLOADS,
                        help="[point_select,read_write]")
    return parser.parse_args(argv)


def relay_command(lab: pb.Lab, target: str, port: int) -> list[str]:
    if target != "auroratrack":
        return lab.command(target, port)
    command = lab.command("auroratrack-nocapture", port)  # the streamer is not on this path
    # The interpreter itself under valgrind, with the console script as its argument.
    return [sys.executable, *command] if command[0].endswith("auroratrack") else command


def sysbench_events(config: pb.BenchConfig, workload: str, port: int, events: int) -> list[str]:
    command = pb.sysbench_command(config, workload, port, 1, 0)
    return [a for a in command if not a.startswith("--time=")] + ["--time=0", f"--events={events}"]


def measure(lab: pb.Lab, config: pb.BenchConfig, target: str, workloads: Sequence[str],
            events: int) -> list[Count]:
    """One relay under callgrind: one count per workload (instrumented only while it runs)."""
    counts = []
    for workload in workloads:
        port = pb.find_free_port()
        log_path = lab.work / f"{target}-{workload}.callgrind.log"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={lab.work / f'{target}-{workload}.callgrind'}",
                   *relay_command(lab, target, port)]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            pb.wait_for_port(pb.Target(target, port, proc))
            run(sysbench_events(config, workload, port, WARM_UP_EVENTS), target)
            control(proc.pid, "on")
            output = run(sysbench_events(config, workload, port, events), target)
            control(proc.pid, "off")
        finally:
            stop_process(proc)
        queries = int(re.search(r"queries:\s+(\d+)", output).group(1))
        found = COLLECTED.search(log_path.read_text())
        if found is None:
            raise RuntimeError(f"callgrind reported no count for {target}; see {log_path}")
        counts.append(Count(target, workload, queries, int(found.group(1))))
        pb.progress(f"{target:<12} {workload:<12} {counts[-1].per_query:>9,.0f} instructions per query")
    return counts


def run(command: list[str], target: str) -> str:
    code, output = pb.run_sysbench(command)
    if code != 0:
        raise RuntimeError(f"sysbench through {target} failed:\n{output[-2000:]}")
    return output


def control(pid: int, state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(pid)], check=True, capture_output=True)
    time.sleep(0.2)  # the tool applies it at its next scheduling point


def report(counts: list[Count], workloads: Sequence[str]) -> str:
    by = {(c.target, c.workload): c.per_query for c in counts}
    head = ["workload", *[f"{t} instr/query" for t in TARGETS], "auroratrack / haproxy",
            f"auroratrack / {pb.BARE_RELAY}"]
    rows = []
    for w in workloads:
        ours = by[("auroratrack", w)]
        rows.append([w, *[f"{by[(t, w)]:,.0f}" for t in TARGETS], f"{ours / by[('haproxy', w)]:.2f}",
                     f"{ours / by[(pb.BARE_RELAY, w)]:.2f}"])
    return pb.markdown_table(head, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for program in ("valgrind", "callgrind_control"):
        pb.find_program(program)
    config = pb.parse_args(["--tables", "1", "--table-size", "10000"])
    work = Path(tempfile.mkdtemp(prefix="auroratrack-instructions-"))
    lab = pb.Lab(work)
    try:
        lab.server.start()
        pb.prepare_tables(lab.server, config)
        counts = [c for t in TARGETS for c in measure(lab, config, t, args.workloads, args.events)]
    finally:
        lab.close()
    print(f"\nsysbench, 1 thread, {args.events} events per workload, server-side prepared "
          "statements; user-space instructions of the relay process while it ran (callgrind).\n")
    print(report(counts, args.workloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
