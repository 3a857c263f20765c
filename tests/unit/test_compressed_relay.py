"""The relay's compression hook (proxy/relay.py + proxy/compression.py) on literal bytes: which
handlers a session gets when its authentication ends, and what goes where afterwards."""

from __future__ import annotations

import asyncio

from proxy.compression import make_compressed_packet
from proxy.gate import Gate
from proxy.relay import ClientSession, CompressedClientSide, ProxyServer, UpstreamConnection
from tests.unit.test_tracker import GREETING, OK_SEQ1, packet

OK_AFTER_LOGIN = packet(b"\x00\x00\x00\x02\x00\x00\x00", 2)
SELECT_1 = packet(b"\x03SELECT 1", 0)
# Column count, definition, EOF, row "1", EOF: SELECT 1's answer, sequence ids 1-5.
SELECT_1_RESULT = b"".join([
    packet(b"\x01", 1),
    packet(b"\x03def\x00\x00\x00\x011\x00\x0c?\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00", 2),
    packet(b"\xfe\x00\x00\x02\x00", 3), packet(b"\x011", 4), packet(b"\xfe\x00\x00\x02\x00", 5),
])


class Transport:
    """Records writes and the protocol set on it, as an asyncio transport would."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.protocol = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def logged_in(compress: bool) -> tuple[ClientSession, Transport, Transport]:
    """A session through the greeting, a HandshakeResponse41 (asking for CLIENT_COMPRESS or
    not) and the server's OK. Call inside a running loop."""
    session = ClientSession(ProxyServer("127.0.0.1", 1, Gate(hold_timeout=60)), 1)
    client, upstream = Transport(), Transport()
    session.transport, session.upstream = client, upstream
    server_side = UpstreamConnection(session)
    server_side.data_received(GREETING)
    caps = b"\x2d\xa2\x2a\x00" if compress else b"\x0d\xa2\x2a\x00"  # 0x20: CLIENT_COMPRESS
    response = (caps + b"\x00\x00\x00\x01\x2d" + b"\x00" * 23 + b"app\x00" + b"\x14" + b"\x05" * 20
                + b"shop\x00" + b"mysql_native_password\x00")
    session.data_received(packet(response, 1))
    assert upstream.written[-1][4:8] == caps  # relayed as the client asked
    server_side.data_received(OK_AFTER_LOGIN)
    assert client.written[-1] == OK_AFTER_LOGIN  # the OK itself is never compressed
    return session, client, upstream


def test_plain_session_gets_the_plain_handlers_once_authenticated():
    async def scenario() -> None:
        session, client, upstream = logged_in(compress=False)
        assert session.compressed is None and client.protocol is None
        assert upstream.protocol.data_received == session.server_data
        session.data_received(SELECT_1)
        assert upstream.written[-1] == SELECT_1
        upstream.protocol.data_received(SELECT_1_RESULT)
        assert client.written[-1] == SELECT_1_RESULT and not session.busy
        session.close()

    asyncio.run(scenario())


def test_compressed_session_passes_packets_through_and_tracks_their_content():
    async def scenario() -> None:
        session, client, upstream = logged_in(compress=True)
        assert isinstance(client.protocol, CompressedClientSide)
        assert upstream.protocol.data_received == session.compressed_server_data
        query = make_compressed_packet(SELECT_1, 0)
        client.protocol.data_received(query[:5])
        assert not session.busy and upstream.written[-1] != query[:5]  # a part: it waits
        client.protocol.data_received(query[5:])
        assert upstream.written[-1] == query and session.busy
        answer = make_compressed_packet(SELECT_1_RESULT, 1)  # deflated: over 50 bytes
        assert len(answer) < 7 + len(SELECT_1_RESULT)
        upstream.protocol.data_received(answer[:20])
        assert client.written[-1] == answer[:20] and session.busy  # forwarded as it comes
        upstream.protocol.data_received(answer[20:])
        assert client.written[-1] == answer[20:] and not session.busy
        # A ping and its OK in one packet each: stored (under 50 bytes), the session goes on.
        ping = make_compressed_packet(packet(b"\x0e", 0), 0)
        client.protocol.data_received(ping)
        upstream.protocol.data_received(make_compressed_packet(OK_SEQ1, 1))
        assert upstream.written[-1] == ping and not session.busy
        session.close()

    asyncio.run(scenario())


class Holder:
    """Stands in for proxy.ddlhold.DdlHolder: claims every query it is asked about."""

    def __init__(self) -> None:
        self.asked: list[bytes] = []

    def claims(self, session, data: bytes) -> bool:
        self.asked.append(data)
        session.ddl_begin()
        return True


def test_compressed_ddl_goes_to_the_holder_and_its_answer_is_compressed():
    async def scenario() -> None:
        session, client, upstream = logged_in(compress=True)
        holder = session.proxy.ddl = Holder()
        sent = len(upstream.written)
        drop = packet(b"\x03DROP TABLE t", 0)
        client.protocol.data_received(make_compressed_packet(drop, 0))
        assert holder.asked == [drop]  # the inflated packet
        assert len(upstream.written) == sent  # never forwarded: the holder runs it
        ok = packet(b"\x00\x00\x00\x02\x00\x00\x00", 1)
        session.ddl_done(ok)
        assert client.written[-1] == make_compressed_packet(ok, 1)  # the leg's next sequence id
        # The next command starts over at 0 and is relayed as before (SELECT: not asked).
        query = make_compressed_packet(SELECT_1, 0)
        client.protocol.data_received(query)
        assert upstream.written[-1] == query and holder.asked == [drop]
        session.close()

    asyncio.run(scenario())


def test_session_link_compresses_what_it_sends_and_inflates_what_it_reads():
    from proxy.ddllink import SessionLink

    async def scenario() -> None:
        upstream = Transport()
        upstream.get_protocol = lambda: None
        link = SessionLink(upstream, deprecate_eof=False, compressed=True)
        task = asyncio.ensure_future(link.query_bytes(b"DROP TABLE t"))
        await asyncio.sleep(0)
        assert upstream.written == [make_compressed_packet(packet(b"\x03DROP TABLE t", 0), 0)]
        answer = make_compressed_packet(packet(b"\x00\x00\x00\x02\x00\x00\x00", 1), 1)
        link.data_received(answer[:4])
        link.data_received(answer[4:])
        result = await task
        assert result.kind == "ok" and result.payload == b"\x00\x00\x00\x02\x00\x00\x00"

    asyncio.run(scenario())
