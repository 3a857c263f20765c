"""Relay flow control: the two reasons to stop reading a client (a closed gate, a server that
reads slower than the client sends) are independent; lifting one must not lift the other.

Only the transports are stand-ins here (they record pause/resume calls); the session, its
tracker and the gate are the real objects. No server behaviour is involved.
"""

from __future__ import annotations

import asyncio

from proxy.gate import Gate
from proxy.relay import ClientSession, ProxyServer, UpstreamConnection


class RecordingTransport:
    """Records whether reading is paused, as a transport would."""

    def __init__(self) -> None:
        self.reading = True
        self.written: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def relayed_session() -> tuple[ClientSession, RecordingTransport, UpstreamConnection]:
    """A session of a real proxy and gate, wired to recording transports (call in a loop)."""
    session = ClientSession(ProxyServer("127.0.0.1", 1, Gate(hold_timeout=60)), 1)
    client = RecordingTransport()
    session.transport, session.upstream = client, RecordingTransport()
    return session, client, UpstreamConnection(session)


def test_reopened_gate_does_not_resume_reading_while_the_server_pushes_back():
    async def scenario() -> None:
        session, client, upstream = relayed_session()

        upstream.pause_writing()  # the server's socket buffer is full
        session._start_holding()  # and the gate holds the client
        assert not client.reading
        session._stop_holding()  # the gate reopens ...
        assert not client.reading  # ... but the server still pushes back
        upstream.resume_writing()
        assert client.reading
        session.close()

    asyncio.run(scenario())


def test_server_drained_while_held_keeps_the_client_held():
    async def scenario() -> None:
        session, client, upstream = relayed_session()

        session._start_holding()
        upstream.pause_writing()
        upstream.resume_writing()  # flow lifted, the gate still holds
        assert not client.reading
        session._stop_holding()
        assert client.reading
        session.close()

    asyncio.run(scenario())
