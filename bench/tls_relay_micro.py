#!/usr/bin/env python3
"""The relay's cost per round trip over two TLS legs: uvloop's SSLProtocol against our pump.

A bare relay (no MySQL framing, no tracker: only what TLS costs) runs in this process on uvloop:
each client connection gets its own connection to an echo server, and the bytes go both ways
through each leg's TLS transport: uvloop's own TLS protocol ("uvloop": its ``SSLProtocol``,
wired up as ``loop.start_tls`` does; what the relay used before ``proxy.tlspump``), our pump
("pump": ``proxy.tlspump.upgrade``), or no TLS at all ("plain", the floor). The clients and the
echo server are child processes with blocking ``ssl`` sockets, so this process's CPU is the
relay's alone.

Each client sends ``--request``-byte messages and waits for a ``--response``-byte answer,
``--pairs`` times, after a warm-up; the CPU this process spends between the start and the end of
the timed part (user and system, from ``getrusage``) divided by the round trips is the figure
that matters: µs of relay CPU per round trip (4 TLS record operations with TLS). Wall-clock
µs per round trip is printed too; it moves with the machine's load.

Usage: ``.venv/bin/python bench/tls_relay_micro.py [--pairs 20000 --clients 4 --repeat 3]``

A deterministic count, for differences the CPU times cannot resolve on a loaded machine: run
one path twice under ``valgrind --tool=callgrind --callgrind-out-file=cg.%p`` with
``--clients 1 --repeat 1 --paths pump`` and ``--pairs 500``, then ``--pairs 2500``; the relay
process's (the lowest pid's) "totals" difference over 2000 is its user-space instructions per
round trip, set-up and handshakes cancelled out. Measured so (2026-12): plain 8.5 k, uvloop's
SSLProtocol 59.1 k, the pump 51.5 k; in both TLS paths libcrypto + libssl are ~23 k of it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop  # noqa: E402

from proxy import tlspump  # noqa: E402
from proxy.tls import ensure_self_signed  # noqa: E402

WARMUP = 200


def _contexts(cert: Path, key: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(cert), str(key))
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def _recv_exactly(sock, n: int) -> None:
    while n > 0:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("closed")
        n -= len(chunk)


# -- child processes ------------------------------------------------------------------------------
def _echo_server(listener: socket.socket, cert: Path, key: Path, tls: bool, request: int, response: int) -> None:
    """Answer each ``request``-byte message with ``response`` bytes, a thread per connection."""
    server_ctx, _ = _contexts(cert, key)
    answer = b"r" * response

    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = server_ctx.wrap_socket(conn, server_side=True) if tls else conn
        try:
            while True:
                _recv_exactly(sock, request)
                sock.sendall(answer)
        except (ConnectionError, OSError, ssl.SSLError):
            pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _client(port: int, cert: Path, key: Path, tls: bool, request: int, response: int, pairs: int,
            barrier, result) -> None:
    _, client_ctx = _contexts(cert, key)
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = client_ctx.wrap_socket(raw, server_hostname="localhost") if tls else raw
    message = b"q" * request
    for _ in range(WARMUP):
        sock.sendall(message)
        _recv_exactly(sock, response)
    barrier.wait()
    start = time.perf_counter()
    for _ in range(pairs):
        sock.sendall(message)
        _recv_exactly(sock, response)
    result.put(time.perf_counter() - start)
    barrier.wait()
    sock.close()


# -- the relay (this process) ---------------------------------------------------------------------
def _uvloop_upgrade(transport: asyncio.Transport, protocol: asyncio.BaseProtocol, context: ssl.SSLContext, *,
                    server_side: bool, server_hostname: str | None = None) -> tuple[asyncio.Transport, asyncio.Future]:
    """The library path: uvloop's C ``SSLProtocol`` set on the raw transport, as its
    ``start_tls`` does (the relay's former ``proxy/tlsupgrade.py``, without the read-ahead)."""
    from uvloop.loop import SSLProtocol

    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    tls = SSLProtocol(loop, protocol, context, waiter, server_side, server_hostname,
                      call_connection_made=False, ssl_handshake_timeout=10.0)
    transport.set_protocol(tls)
    app_transport = tls._get_app_transport()
    tls.connection_made(transport)
    return app_transport, waiter


class _Leg(asyncio.Protocol):
    def __init__(self) -> None:
        self.other: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        if self.other is None:
            self.early.append(data)
        else:
            self.other.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        pass


async def _relay(path: str, echo_port: int, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext):
    loop = asyncio.get_running_loop()
    upgrade = {"uvloop": _uvloop_upgrade, "pump": tlspump.upgrade}.get(path)
    pending: set[asyncio.Task] = set()

    async def join(front_raw: asyncio.Transport, front: _Leg, front_tls: asyncio.Future | None) -> None:
        back = _Leg()
        back_raw, _ = await loop.create_connection(lambda: back, "127.0.0.1", echo_port)
        back_raw.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back_t = back_raw
        if upgrade is not None:
            back_t, done = upgrade(back_raw, back, client_ctx, server_side=False, server_hostname="localhost")
            await done
            await front_tls
        front_t = front.transport
        back.other = front_t
        front.other = back_t
        for data in front.early:
            back_t.write(data)

    def accept() -> _Leg:
        leg = _Leg()

        def made(transport: asyncio.Transport) -> None:
            done = None
            leg.transport = transport
            if upgrade is not None:
                leg.transport, done = upgrade(transport, leg, server_ctx, server_side=True)
            task = loop.create_task(join(transport, leg, done))
            pending.add(task)
            task.add_done_callback(pending.discard)

        leg.connection_made = made
        return leg

    server = await loop.create_server(accept, "127.0.0.1", 0)
    return server, pending


@dataclass(frozen=True)
class Figures:
    """One run of one path, per round trip."""

    cpu_us: float  # the relay's CPU, user + system
    user_us: float
    page_faults: float  # minor faults: memory the relay maps and unmaps per read shows here
    wall_us: float


def run_once(path: str, args, cert: Path, key: Path) -> Figures:
    """One path's figures for one run of every client."""
    tls = path != "plain"
    ctx = multiprocessing.get_context("fork")
    listener = socket.create_server(("127.0.0.1", 0))
    echo = ctx.Process(target=_echo_server, args=(listener, cert, key, tls, args.request, args.response), daemon=True)
    echo.start()
    server_ctx, client_ctx = _contexts(cert, key)
    barrier = ctx.Barrier(args.clients + 1)
    results = ctx.Queue()

    async def main() -> Figures:
        loop = asyncio.get_running_loop()
        server, _ = await _relay(path, listener.getsockname()[1], server_ctx, client_ctx)
        port = server.sockets[0].getsockname()[1]
        clients = [ctx.Process(target=_client, args=(port, cert, key, tls, args.request, args.response,
                                                      args.pairs, barrier, results), daemon=True)
                   for _ in range(args.clients)]
        for c in clients:
            c.start()
        await loop.run_in_executor(None, barrier.wait)
        before = resource.getrusage(resource.RUSAGE_SELF)
        await loop.run_in_executor(None, barrier.wait)
        after = resource.getrusage(resource.RUSAGE_SELF)
        user = after.ru_utime - before.ru_utime
        system = after.ru_stime - before.ru_stime
        faults = after.ru_minflt - before.ru_minflt
        walls = [results.get() for _ in clients]
        for c in clients:
            c.join()
        server.close()
        trips = args.pairs * args.clients
        return Figures((user + system) / trips * 1e6, user / trips * 1e6, faults / trips,
                       statistics.mean(walls) / args.pairs * 1e6)

    try:
        return uvloop.run(main())
    finally:
        echo.kill()
        echo.join()
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20000, help="round trips per client")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--request", type=int, default=100, help="bytes per request")
    parser.add_argument("--response", type=int, default=200, help="bytes per response")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path, alternated")
    parser.add_argument("--paths", default="plain,uvloop,pump")
    args = parser.parse_args()
    paths = args.paths.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        files = ensure_self_signed(Path(tmp))
        figures: dict[str, list[Figures]] = {p: [] for p in paths}
        for _ in range(args.repeat):
            for path in paths:
                f = run_once(path, args, files.cert, files.key)
                figures[path].append(f)
                print(f"  {path:7s} relay CPU {f.cpu_us:6.1f} µs/round trip (user {f.user_us:5.1f}), "
                      f"{f.page_faults:5.2f} page faults/round trip, wall {f.wall_us:6.1f} µs", flush=True)
    print(f"\n{args.clients} clients x {args.pairs} round trips ({args.request} B -> {args.response} B), "
          f"median of {args.repeat} runs (min-max):")
    print("| path | relay CPU µs / round trip | of which user | page faults / round trip | wall µs / round trip |")
    print("| --- | --- | --- | --- | --- |")
    for path in paths:
        runs = figures[path]
        print(f"| {path} | {_spread([f.cpu_us for f in runs])} | {_spread([f.user_us for f in runs])} "
              f"| {_spread([f.page_faults for f in runs], 2)} | {statistics.median(f.wall_us for f in runs):.0f} |")


def _spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


if __name__ == "__main__":
    main()
