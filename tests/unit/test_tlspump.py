"""The TLS pump (proxy/tlspump.py) on a real socket pair, under uvloop as the relay runs it.

The other end is an ``ssl.SSLObject`` driven by the test over memory BIOs, so each test decides
which bytes go out in which socket write: a record cut in pieces, several records in one write,
garbage after the handshake, nothing at all (the handshake timeout).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
from pathlib import Path

import pytest
import uvloop

from proxy import tlspump
from proxy.tls import ensure_self_signed


@pytest.fixture(scope="module")
def contexts(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    files = ensure_self_signed(Path(tmp_path_factory.mktemp("tlspump")))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(str(files.cert), str(files.key))
    client = ssl.create_default_context(cafile=str(files.cert))
    return server, client


class Collector(asyncio.Protocol):
    """The relay's side: records each data_received call, end of input, and the loss."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.eof = False
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()
        self.writing_paused: list[bool] = []  # each pause_writing (True) and resume_writing (False)

    def pause_writing(self) -> None:
        self.writing_paused.append(True)

    def resume_writing(self) -> None:
        self.writing_paused.append(False)

    def data_received(self, data: bytes) -> None:
        self.calls.append(bytes(data))
        self.arrived.set()

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    @property
    def received(self) -> bytes:
        return b"".join(self.calls)

    async def wait_for(self, total: int) -> None:
        while len(self.received) < total:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)


class Peer:
    """The far end of the leg: a TLS endpoint whose socket writes the test controls."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_side: bool):
        sock.setblocking(False)
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                    server_hostname=None if server_side else "localhost")

    async def handshake(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            if self.outgoing.pending:
                await loop.sock_sendall(self.sock, self.outgoing.read())
            if done:
                return
            self.incoming.write(await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 5))

    def records(self, plaintext: bytes) -> bytes:
        """``plaintext`` as TLS records (one per 16 KiB), not yet sent."""
        self.obj.write(plaintext)
        return self.outgoing.read()

    async def send(self, raw: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, raw)

    async def receive_to_end(self) -> bytes:
        """Everything until the socket closes, decrypted: b"" ends it when close_notify came
        (``SSLObject.read`` returns b"" on close_notify, raises ``SSLEOFError`` without one)."""
        loop = asyncio.get_running_loop()
        while data := await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 5):
            self.incoming.write(data)
        self.incoming.write_eof()
        return self.obj.read(65536)

    async def receive(self, total: int) -> bytes:
        loop = asyncio.get_running_loop()
        out = b""
        while len(out) < total:
            try:
                out += self.obj.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 5)
            if not data:
                raise ConnectionError(f"closed after {len(out)} of {total} bytes")
            self.incoming.write(data)
        return out


async def leg(context: ssl.SSLContext, peer_context: ssl.SSLContext, *, server_side: bool = True,
              handshake_timeout: float = 5.0, shake: bool = True):
    """A pump on one end of a socket pair, a ``Peer`` on the other; handshake done unless
    ``shake`` is false. Returns (TLS transport, handshake future, collector, peer)."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    raw, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    collector = Collector()
    tls, done = tlspump.upgrade(raw, collector, context, server_side=server_side,
                                server_hostname=None if server_side else "localhost",
                                handshake_timeout=handshake_timeout)
    peer = Peer(theirs, peer_context, server_side=not server_side)
    if shake:
        await asyncio.gather(peer.handshake(), asyncio.wait_for(done, 5))
    return tls, done, collector, peer


def test_a_record_cut_across_reads_arrives_whole(contexts):
    server, client = contexts

    async def scenario() -> None:
        tls, _, collector, peer = await leg(server, client)
        message = bytes(range(256)) * 40  # one record of 10 KiB
        raw = peer.records(message)
        for start in range(0, len(raw), 1000):  # in 1000-byte socket writes, a read each
            await peer.send(raw[start:start + 1000])
            await asyncio.sleep(0.002)
        await collector.wait_for(len(message))
        assert collector.received == message
        assert len(collector.calls) == 1  # nothing handed over before the record was whole
        tls.write(b"answer")
        assert await peer.receive(6) == b"answer"
        tls.close()

    uvloop.run(scenario())


def test_several_records_in_one_read_reach_the_relay_in_one_call(contexts):
    server, client = contexts

    async def scenario() -> None:
        _, _, collector, peer = await leg(server, client)
        parts = [b"first query", b"second", b"x" * 20000]  # the last one spans two records
        await peer.send(b"".join(peer.records(p) for p in parts))
        await collector.wait_for(sum(map(len, parts)))
        assert collector.calls == [b"".join(parts)]

    uvloop.run(scenario())


def test_a_slow_reader_pauses_the_writer_and_resumes_it(contexts):
    """The relay stops reading one leg while the other's socket buffer is full: the raw
    transport's pause_writing and resume_writing must reach the relay's protocol."""
    server, client = contexts

    async def scenario() -> None:
        tls, _, collector, peer = await leg(server, client)
        tls.set_write_buffer_limits(high=64 * 1024)
        block = b"r" * 16384
        written = 0
        while not collector.writing_paused and written < 64 << 20:
            tls.write(block)
            written += len(block)
        assert collector.writing_paused == [True]
        assert tls.get_write_buffer_size() > 0
        assert len(await peer.receive(written)) == written  # the peer reads it all: resumed
        await asyncio.sleep(0.01)
        assert collector.writing_paused == [True, False]

    uvloop.run(scenario())


def test_session_tickets_before_data_on_the_client_side(contexts):
    """As the proxy's leg to the server: a TLS 1.3 server sends its tickets after the handshake,
    records that carry no application data; the data after them still arrives, and so do the
    pump's own writes, queued before the handshake ended."""
    server, client = contexts

    async def scenario() -> None:
        tls, done, collector, peer = await leg(client, server, server_side=False, shake=False)
        tls.write(b"written before the handshake")
        await asyncio.gather(peer.handshake(), asyncio.wait_for(done, 5))
        assert tls.get_extra_info("ssl_object").version() == "TLSv1.3"
        assert tls.get_extra_info("cipher") is not None
        assert await peer.receive(28) == b"written before the handshake"
        await asyncio.sleep(0.01)  # the tickets have been read alone by now
        assert collector.calls == []
        await peer.send(peer.records(b"the server's answer"))
        await collector.wait_for(19)
        assert collector.received == b"the server's answer"

    uvloop.run(scenario())


def test_bytes_read_ahead_are_fed_first(contexts):
    """The ClientHello that came in the same read as the SSLRequest, given to ``upgrade``."""
    server, client = contexts

    async def scenario() -> None:
        ours, theirs = socket.socketpair()
        raw, _ = await asyncio.get_running_loop().create_connection(asyncio.Protocol, sock=ours)
        peer = Peer(theirs, client, server_side=False)
        with pytest.raises(ssl.SSLWantReadError):
            peer.obj.do_handshake()
        client_hello = peer.outgoing.read()  # never sent on the socket
        collector = Collector()
        tls, done = tlspump.upgrade(raw, collector, server, server_side=True, read_ahead=client_hello)
        await asyncio.gather(peer.handshake(), asyncio.wait_for(done, 5))
        await peer.send(peer.records(b"ping"))
        await collector.wait_for(4)
        assert collector.received == b"ping"

    uvloop.run(scenario())


def test_garbage_after_the_handshake_ends_only_that_session(contexts):
    server, client = contexts

    async def scenario() -> None:
        _, _, bad, bad_peer = await leg(server, client)
        good_tls, _, good, good_peer = await leg(server, client)
        await bad_peer.send(b"\x17\x03\x03\x00\x10" + b"not a sealed record")
        error = await asyncio.wait_for(bad.lost, 5)
        assert isinstance(error, ssl.SSLError)
        assert bad.calls == []
        await good_peer.send(good_peer.records(b"still here"))
        await good.wait_for(10)
        good_tls.write(b"and answering")
        assert await good_peer.receive(13) == b"and answering"

    uvloop.run(scenario())


def test_handshake_timeout_ends_the_session(contexts):
    server, client = contexts

    async def scenario() -> None:
        _, done, collector, peer = await leg(server, client, handshake_timeout=0.2, shake=False)
        with pytest.raises(TimeoutError, match="TLS handshake"):
            await asyncio.wait_for(done, 5)
        assert isinstance(await asyncio.wait_for(collector.lost, 5), TimeoutError)
        assert await asyncio.get_running_loop().sock_recv(peer.sock, 100) == b""  # closed

    uvloop.run(scenario())


def test_close_notify_both_ways(contexts):
    server, client = contexts

    async def scenario() -> None:
        tls, _, collector, peer = await leg(server, client)
        with pytest.raises(ssl.SSLWantReadError):
            peer.obj.unwrap()  # the peer's close_notify: the pump reports end of input, closes
        await peer.send(peer.outgoing.read())
        assert await asyncio.wait_for(collector.lost, 5) is None
        assert collector.eof
        assert tls.is_closing()

        tls, _, collector, peer = await leg(server, client)
        tls.close()  # ours: the peer reads a clean end, not a cut connection
        assert await peer.receive_to_end() == b""
        assert await asyncio.wait_for(collector.lost, 5) is None

    uvloop.run(scenario())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")
def test_key_update_requested_by_the_peer_is_answered(contexts, tmp_path):
    """Python cannot send a TLS 1.3 KeyUpdate; ``openssl s_server`` can ("K" on its input: update
    your keys too). The pump reads it between records and its OpenSSL answers with a KeyUpdate of
    its own, which must reach the server before the pump's next record, or that record could not
    be decrypted."""
    _, client = contexts
    files = ensure_self_signed(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        server = await asyncio.create_subprocess_exec(
            "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-tls1_3",
            "-cert", str(files.cert), "-key", str(files.key),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            await _key_update_exchange(server, port, ssl.create_default_context(cafile=str(files.cert)))
        finally:
            if server.returncode is None:
                server.kill()
            await server.wait()

    async def _key_update_exchange(server, port: int, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100):  # until s_server listens
            try:
                raw, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        collector = Collector()
        tls, done = tlspump.upgrade(raw, collector, context, server_side=False, server_hostname="localhost")
        await asyncio.wait_for(done, 5)
        output = b""

        async def server_says(text: bytes) -> None:
            nonlocal output
            while text not in output:
                chunk = await asyncio.wait_for(server.stdout.read(4096), 5)
                assert chunk, f"s_server ended: {output!r}"
                output += chunk

        tls.write(b"before the update\n")
        await server_says(b"before the update")
        server.stdin.write(b"K\n")  # KeyUpdate, update_requested
        await server.stdin.drain()
        # s_server's own report of it comes only with its next output (buffered): give it time.
        await asyncio.sleep(0.3)
        tls.write(b"after the update\n")
        await server_says(b"after the update")
        assert b"SSL_do_handshake -> 1" in output  # the KeyUpdate did go out before it
        server.stdin.write(b"from the server\n")
        await server.stdin.drain()
        await collector.wait_for(16)
        assert collector.received == b"from the server\n"
        tls.close()

    uvloop.run(scenario())
