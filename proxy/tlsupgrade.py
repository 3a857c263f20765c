"""Upgrade a live connection to TLS in place, without losing bytes already read.

Why not ``loop.start_tls``: a MySQL client sends its TLS ClientHello right behind the SSLRequest
packet, without waiting for an answer, so one read often brings both. By the time the relay has
seen the SSLRequest, the ClientHello is already out of the socket, and ``start_tls`` (asyncio's,
cpython gh-142352, and uvloop's alike) starts its TLS object on an empty buffer: the handshake
then waits forever for bytes it was never given. Here the loop's own TLS protocol (uvloop's C
one where uvloop runs; asyncio's otherwise) is wired up synchronously, the bytes read ahead are
fed to it first, and only then does the socket read again. The relay's hot path then runs on
that protocol exactly as ``start_tls`` would have set it up.
"""

from __future__ import annotations

import asyncio
import ssl


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> type:
    if type(loop).__module__.startswith("uvloop"):
        from uvloop.loop import SSLProtocol  # the C implementation uvloop's start_tls uses

        return SSLProtocol
    from asyncio.sslproto import SSLProtocol

    return SSLProtocol


def upgrade(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    read_ahead: bytes = b"",
    handshake_timeout: float = 10.0,
) -> tuple[asyncio.Transport, asyncio.Future]:
    """Start TLS on ``transport`` now; returns (the TLS transport, a future done when the
    handshake is). ``protocol`` keeps receiving the decrypted bytes; its ``connection_made`` is
    not called again. Writes to the returned transport before the handshake ends are queued
    and sent once it is done. The future fails (and the connection is closed) on a handshake
    error or when ``handshake_timeout`` passes first."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    tls = _ssl_protocol_class(loop)(
        loop, protocol, context, waiter, server_side, server_hostname,
        call_connection_made=False, ssl_handshake_timeout=handshake_timeout,
    )
    transport.pause_reading()
    transport.set_protocol(tls)
    tls_transport = tls._get_app_transport()
    tls.connection_made(transport)
    view = memoryview(read_ahead)
    while view:  # what the relay read past the SSLRequest: the start of the ClientHello
        buf = tls.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        tls.buffer_updated(n)
        view = view[n:]
    transport.resume_reading()
    return tls_transport, waiter
