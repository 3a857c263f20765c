"""Client compatibility: real clients run the same script through the proxy to a real server.

Each client (PyMySQL, mysql-connector-python pure and C extension, SQLAlchemy ORM, the mariadb
command-line client, Node's mysql2) runs the shared script of tests/clients/clientscript.py:
DDL, DML inside and outside transactions, a rollback, prepared statements, a 20 MiB BLOB written
and read back (over the 16 MiB packet boundary both ways), a multi-statement query with several
result sets, LOAD DATA LOCAL INFILE, and a failing query followed by a working one on the same
session. Every step's result must equal the script's expectation; afterwards a direct
connection to the server checks what was stored, and the proxy must have seen no protocol
error. For the in-process Python clients the test also checks, after every step, that the
proxy's tracker saw the session idle and inside a transaction exactly when it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.clients import external, mariadbcli
from tests.clients.clientscript import (
    BLOB_SIZE,
    ITEMS_AT_END,
    LOADED_SAMPLE,
    LOADED_SUMMARY,
    ClientRun,
    Kind,
    Step,
    blob,
    blob_digest,
    comparable_all,
    expected,
    infile_text,
    normalize_rows,
    steps_for,
    steps_in_transaction,
)
from tests.clients.pyclients import ADAPTERS, Target, orm_snapshot, run_script

pytestmark = pytest.mark.timeout(180)


@dataclass(frozen=True)
class ClientJob:
    """One client's run: where it connects, the script, and a scratch directory."""

    target: Target
    steps: list[Step]
    workdir: Path
    infile: Path


class SessionProbe:
    """After each step, what the proxy's tracker says about the sessions on the test's database:
    a list of (state, in_transaction) per session."""

    def __init__(self, proxy, database: str):
        self.proxy = proxy
        self.database = database
        self.seen: dict[str, list[tuple[str, bool]]] = {}

    def sessions(self) -> list[tuple[str, bool]]:
        infos = self.proxy.call_soon(self.proxy.service.proxy.session_infos)
        return [(i.state, i.in_transaction) for i in infos if i.database == self.database]

    def __call__(self, step: Step) -> None:
        self.seen[step.name] = self.sessions()


def in_process(name: str, probe: SessionProbe) -> Callable[[ClientJob], ClientRun]:
    """A runner for the Python adapter ``name`` in this process, probed after every step."""

    def run(job: ClientJob) -> ClientRun:
        return ClientRun(run_script(ADAPTERS[name](job.target), job.steps, probe))

    return run


def run_cli(job: ClientJob) -> ClientRun:
    """The mariadb command-line client, one process for the whole script."""
    if mariadbcli.client_binary() is None:
        pytest.skip("neither mariadb nor mysql (the command-line client) is on PATH")
    return mariadbcli.run_cli(job.target, job.steps)


def run_node(job: ClientJob) -> ClientRun:
    """Node's mysql2, one process for the whole script."""
    reason = external.node_missing()
    if reason:
        pytest.skip(reason)
    return external.run_node(job.target, job.steps, job.workdir, job.infile)


def run_connector_cext(job: ClientJob) -> ClientRun:
    """mysql-connector's C extension, in a fresh interpreter (see tests/clients/run_python.py)."""
    return external.run_python_process("connector-cext", job.target, job.steps, job.workdir)


OUT_OF_PROCESS = {
    "connector-cext": run_connector_cext,
    "mariadb-cli": run_cli,
    "node-mysql2": run_node,
}
IN_PROCESS = ("pymysql", "connector-pure", "sqlalchemy-orm")
# SQLAlchemy's session begins lazily: its BEGIN step sends nothing, the next statement does.
LAZY_BEGIN = {"sqlalchemy-orm"}


@pytest.fixture
def job(proxy, mysql_server, database, tmp_path) -> ClientJob:
    """The script aimed at the proxy and the test's database, with its LOCAL INFILE written."""
    infile = tmp_path / "infile.csv"
    infile.write_text(infile_text(), encoding="utf-8")
    target = Target("127.0.0.1", proxy.port, mysql_server.user, mysql_server.password, database)
    return ClientJob(target, steps_for(str(infile)), tmp_path, infile)


def proxy_counters(proxy) -> tuple[int, int]:
    """(sessions accepted, sessions ended by a protocol error) so far."""
    relay = proxy.service.proxy
    return proxy.call_soon(lambda: (relay.sessions_total, relay.protocol_errors))


def expected_probe(client: str, steps: list[Step]) -> dict[str, list[tuple[str, bool]]]:
    """One idle session after every step, inside a transaction exactly where the script is."""
    inside = steps_in_transaction(steps)
    if client in LAZY_BEGIN:
        inside -= {s.name for s in steps if s.kind == Kind.BEGIN}
    return {s.name: [("idle", s.name in inside)] for s in steps}


def assert_server_state(mysql_server, database: str) -> None:
    """What the script left on the server, read without the proxy."""
    def query(sql: str) -> list[tuple]:
        return normalize_rows(mysql_server.query(sql, database=database))

    assert query("SHOW TABLES") == [("blobs",), ("items",), ("loaded",)]
    assert query("SELECT id, name, qty FROM items ORDER BY id") == ITEMS_AT_END
    assert query("SELECT COUNT(*), COUNT(label), SUM(id) FROM loaded") == LOADED_SUMMARY
    assert query("SELECT id, label FROM loaded WHERE id IN (1, 999, 1000, 5000) ORDER BY id") == (
        LOADED_SAMPLE
    )
    digest = blob_digest(blob())
    assert query("SELECT id, LENGTH(data), SHA2(data, 256) FROM blobs") == [
        ("1", str(BLOB_SIZE), digest["sha256"])
    ]


def wait_sessions_closed(probe: SessionProbe, timeout: float = 5.0) -> list[tuple[str, bool]]:
    """The proxy sessions still open on the test's database once they had time to close."""
    deadline = time.monotonic() + timeout
    while (left := probe.sessions()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.mark.parametrize("client", [*IN_PROCESS, *OUT_OF_PROCESS])
def test_client_runs_the_script(client, job, proxy, mysql_server, database):
    probe = SessionProbe(proxy, database)
    sessions_before, errors_before = proxy_counters(proxy)
    runner = OUT_OF_PROCESS.get(client) or in_process(client, probe)

    run = runner(job)

    assert comparable_all(job.steps, run.observed) == expected(), run.log
    assert_server_state(mysql_server, database)
    sessions_after, errors_after = proxy_counters(proxy)
    assert sessions_after > sessions_before, "the client did not go through the proxy"
    assert errors_after == errors_before, "the proxy ended a session with a protocol error"
    if client in IN_PROCESS:
        assert probe.seen == expected_probe(client, job.steps)
    assert wait_sessions_closed(probe) == [], "the client left, its proxy session did not"
    if client == "sqlalchemy-orm":
        items, loaded = orm_snapshot(job.target)
        assert [tuple(map(str, item)) for item in items] == ITEMS_AT_END
        assert loaded == [(1, "label-1"), (1000, None)]
