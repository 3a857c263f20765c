"""500 clients through the real proxy, then a full pause / drain / drop / resume cycle.

Each client is a thread with its own PyMySQL connection that loops: insert one row of its own,
then read back how many rows it has. Mid-load the gate is closed: every client ends up held;
``drain`` lets the commands in flight finish (it kills none), ``drop_all`` ends all 500
sessions, the clients see a lost connection, reconnect (waiting at the door), and go on after
``resume``.

What it proves: no error other than the one expected lost connection per client; no committed
write lost and no held write run (each client's row count on the server equals the inserts the
server acknowledged); and nothing leaks: the proxy's sessions, the tasks on its event loop and
the server's connections (information_schema.PROCESSLIST) return to where they started.

The client threads live in a child process: in this process they would share one GIL with the
proxy's event loop thread, and 500 runnable threads starve it for seconds at a time, which
tests the GIL rather than the proxy (in production the clients are other processes too).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import multiprocessing
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pymysql
import pytest

from proxy.service import BackgroundService
from tests.integration.waiting import wait_for as _wait_for

T = TypeVar("T")
N_CLIENTS = 500
WARM_ROUNDS = 2  # rounds each client runs before the gate closes
THINK_TIME_S = 0.2  # a client's pause between rounds: steady load, not a CPU burner on 2 cores
LOST_CONNECTION_ERRNOS = (2006, 2013)  # CR_SERVER_GONE_ERROR, CR_SERVER_LOST
PROCESSLIST_COUNT = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND <> 'Daemon'"

pytestmark = pytest.mark.slow



# 500 clients on two cores settle slowly: a longer deadline, a gentler poll.
wait_for = functools.partial(_wait_for, timeout=60.0, interval=0.05)


# -- the client process ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where the clients connect: the proxy, with the server's credentials."""

    port: int
    user: str
    password: str
    database: str

    def connect(self) -> pymysql.Connection:
        # ssl_disabled: PyMySQL 1.2 otherwise builds a TLS context per connection (~65 ms of
        # CPU here, loading the CA store) only to find that the proxy offers no TLS.
        return pymysql.connect(host="127.0.0.1", port=self.port, user=self.user,
                               password=self.password, database=self.database, autocommit=True,
                               ssl_disabled=True)


@dataclass
class Board:
    """What the test and the client process share: a stop signal, per-client counters (each
    written by its own client only) and the clients' unexpected errors."""

    n: int
    stop: multiprocessing.synchronize.Event
    rounds: ctypes.Array[ctypes.c_int]  # completed insert + read-back rounds
    acknowledged: ctypes.Array[ctypes.c_int]  # inserts the server confirmed
    drops: ctypes.Array[ctypes.c_int]  # lost connections seen
    rounds_after_drop: ctypes.Array[ctypes.c_int]
    errors: multiprocessing.queues.Queue

    @classmethod
    def create(cls, ctx: multiprocessing.context.BaseContext, n: int) -> Board:
        def counters() -> ctypes.Array[ctypes.c_int]:
            return ctx.Array("i", n, lock=False)  # shared memory, no lock: one writer each

        return cls(n, ctx.Event(), counters(), counters(), counters(), counters(), ctx.Queue())

    def count(self, predicate: Callable[[int], bool]) -> int:
        return sum(1 for i in range(self.n) if predicate(i))

    def take_errors(self) -> list[str]:
        errors = []
        while True:
            try:
                errors.append(self.errors.get_nowait())
            except queue.Empty:
                return errors


def run_clients(target: Target, board: Board) -> None:
    """The child process: one thread per client, all started before any connects."""
    go = threading.Event()
    threads = [threading.Thread(target=run_client, args=(target, board, i, go))
               for i in range(board.n)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join()


def run_client(target: Target, board: Board, i: int, go: threading.Event) -> None:
    """Rounds until told to stop; a lost connection is expected once (the drop), then the
    client reconnects, which waits at the proxy's door until the gate reopens."""
    go.wait()
    try:
        conn = target.connect()
        while not board.stop.wait(THINK_TIME_S):
            try:
                client_round(conn, board, i)
            except pymysql.OperationalError as exc:
                if exc.args[0] not in LOST_CONNECTION_ERRNOS:
                    raise
                board.drops[i] += 1
                conn = target.connect()
        conn.close()
    except Exception:  # anything but the one lost connection is a failure
        board.errors.put(f"client {i} after {board.rounds[i]} rounds, {board.drops[i]} drops: "
                         f"{traceback.format_exc(limit=-4)}")


def client_round(conn: pymysql.Connection, board: Board, i: int) -> None:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t (client) VALUES (%s)", (i,))
        board.acknowledged[i] += 1
        cur.execute("SELECT COUNT(*) FROM t WHERE client = %s", (i,))
        seen = cur.fetchone()[0]
    if seen != board.acknowledged[i]:
        raise AssertionError(f"sees {seen} rows, server acknowledged {board.acknowledged[i]}")
    board.rounds[i] += 1
    if board.drops[i]:
        board.rounds_after_drop[i] += 1


# -- what the test watches ------------------------------------------------------------------------
def loop_task_count(svc: BackgroundService) -> int:
    return svc.call_soon(lambda: len(asyncio.all_tasks()))


def session_states(svc: BackgroundService) -> dict[str, int]:
    states: dict[str, int] = {}
    for info in svc.call_soon(svc.service.proxy.session_infos):
        states[info.state] = states.get(info.state, 0) + 1
    return states


def server_ids(svc: BackgroundService) -> set[int]:
    infos = svc.call_soon(svc.service.proxy.session_infos)
    return {s.server_connection_id for s in infos if s.server_connection_id is not None}


def processlist_count(server) -> int:
    return int(server.query(PROCESSLIST_COUNT)[0][0]) - 1  # not counting the asking connection


def alive(server, ids: set[int]) -> set[int]:
    rows = server.query("SELECT ID FROM information_schema.PROCESSLIST")
    return ids & {int(r[0]) for r in rows}


def all_clients(board: Board, done: Callable[[int], bool], errors: list[str]) -> bool:
    """Whether every client is done; stops the wait early when a client has failed."""
    errors.extend(board.take_errors())
    return bool(errors) or board.count(done) == board.n


# -- the test -------------------------------------------------------------------------------------
@pytest.fixture
def patient_server(mysql_server):
    """The server waits longer for clients to answer its greeting: 500 client threads on a busy
    2-core machine can take more than the default 10 s, and the server would drop them."""
    before = int(mysql_server.query("SELECT @@GLOBAL.connect_timeout")[0][0])
    mysql_server.query("SET GLOBAL connect_timeout = 60")
    yield mysql_server
    mysql_server.query(f"SET GLOBAL connect_timeout = {before}")


def test_500_clients_through_pause_drop_resume(make_proxy, patient_server, database):
    server = patient_server
    svc = make_proxy(hold_timeout=60)
    server.query("CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, client INT NOT NULL, "
                 "KEY (client))", database=database)
    base_tasks, base_connections = loop_task_count(svc), processlist_count(server)
    ctx = multiprocessing.get_context("spawn")  # no fork: this process runs the proxy's thread
    board = Board.create(ctx, N_CLIENTS)
    target = Target(svc.port, server.user, server.password, database)
    clients = ctx.Process(target=run_clients, args=(target, board), name="clients")
    clients.start()
    errors: list[str] = []
    try:
        wait_for(lambda: all_clients(board, lambda i: board.rounds[i] >= WARM_ROUNDS, errors),
                 what="every client to warm up")
        assert errors == []
        first_ids = server_ids(svc)
        assert len(first_ids) == N_CLIENTS and alive(server, first_ids) == first_ids
        # Waited for, not read once: a connection of an earlier test may still be closing.
        wait_for(lambda: processlist_count(server) == base_connections + N_CLIENTS,
                 what="exactly the clients' server connections")
        pause_drain_drop_resume(svc, server, first_ids)
        wait_for(lambda: all_clients(board, lambda i: board.rounds_after_drop[i] > 0, errors),
                 what="every client to run again after resume")
        assert errors == []
        second_ids = server_ids(svc)
        assert len(second_ids) == N_CLIENTS and not second_ids & first_ids
    finally:
        board.stop.set()
        clients.join(timeout=30)
        if clients.is_alive():
            clients.kill()
    errors.extend(board.take_errors())

    assert errors == [] and clients.exitcode == 0
    assert board.count(lambda i: board.drops[i] == 1) == N_CLIENTS
    rows = dict(server.query("SELECT client, COUNT(*) FROM t GROUP BY client", database=database))
    assert rows == {i: board.acknowledged[i] for i in range(N_CLIENTS)}
    assert_back_to_baseline(svc, server, base_tasks, base_connections, second_ids)


def pause_drain_drop_resume(svc: BackgroundService, server, ids: set[int]) -> None:
    """The backtrack's sequence: every client ends up held, nothing is in flight to drain, all
    sessions are dropped and their server connections gone, the clients come back and wait at
    the door, then the gate opens."""
    svc.call_soon(svc.gate.pause)
    wait_for(lambda: session_states(svc) == {"held": len(ids)}, what="every client held")
    drained = svc.call(lambda: svc.gate.drain(5))
    assert drained.killed == [] and drained.still_busy == []
    assert set(svc.call(svc.gate.drop_all)) == ids
    assert alive(server, ids) == set()
    wait_for(lambda: session_states(svc) == {"connecting": len(ids)},
             what="every client to reconnect and wait at the door")
    svc.call_soon(svc.gate.resume)


def assert_back_to_baseline(svc: BackgroundService, server, base_tasks: int,
                            base_connections: int, last_ids: set[int]) -> None:
    """No session, event-loop task or server connection outlives its client."""
    wait_for(lambda: svc.call_soon(lambda: not svc.service.proxy.sessions),
             what="the proxy's sessions to close")
    wait_for(lambda: loop_task_count(svc) == base_tasks, what="the event loop's tasks")
    wait_for(lambda: alive(server, last_ids) == set(), what="server connections to end")
    wait_for(lambda: processlist_count(server) == base_connections,
             what="the server's connections back to the baseline")
