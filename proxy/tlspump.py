"""TLS on a relayed session's leg: a lean record pump over ``ssl.SSLObject`` and two memory BIOs.

Why our own and not the loop's TLS protocol (uvloop's ``SSLProtocol``, which ``start_tls``
uses): each relayed query costs the proxy four TLS record operations (decrypt the client's
request, encrypt it to the server, decrypt the answer, encrypt it to the client), and measured
(``bench/tls_relay_micro.py``: a bare relay, 100-byte requests, 200-byte answers) the library
path costs more than the records do. Per round trip uvloop's protocol spent 10-15 µs of user CPU
against 7-9 µs here (the records' own OpenSSL calls are most of those), and in some processes far
more: it reads each record's plaintext into a fresh 256 KiB buffer, and where glibc serves that
from memory it maps and unmaps again (which depends on the heap's history), every read costs two
page faults: 4 per round trip, and the relay's CPU went from ~28 to ~60 µs per round trip. Here
the plaintext is read a record at a time (at most 16 KiB, what one record holds), so no read
maps memory. Counted with callgrind (deterministic): 59.1 k user-space instructions per round
trip through uvloop's path, 51.5 k through this one, 8.5 k with no TLS; OpenSSL's own record
work (libcrypto + libssl, ~23 k) is most of what is left, and no Python code can remove it.

What this module does per socket read: the bytes go into the incoming BIO, then
``SSLObject.read`` is called while the BIO still holds bytes (as uvloop does too). Checking the
BIO first (~0.1 µs) spares the ``SSLWantReadError`` that asking once too often raises (~1 µs
with its handling); that error now only comes when a read ends inside a record, or with a record
that carries no application data (a TLS 1.3 session ticket). Parsing the 5-byte record headers
in Python to feed only whole records was measured too (~0.7 µs per read): the BIO check is
cheaper and needs no state. The C object under ``SSLObject`` is called directly, and the raw
transport's callbacks are bound methods of the TLS transport: one Python frame per read and
per write. The plaintext of one socket read reaches the relay in one ``data_received`` call.
A write is one ``SSLObject.write`` and one socket write; bytes OpenSSL writes on its own (its
answer to a key update) are sent after each read.

It also keeps what the former ``tlsupgrade`` module was written for: a MySQL client sends its
ClientHello right behind the SSLRequest, so one read often brings both, and ``loop.start_tls``
would start TLS on an empty buffer (cpython gh-142352; uvloop alike). ``upgrade`` feeds the
bytes read ahead to the handshake first, synchronously, before the socket is read again.

Limits, by choice: TLS 1.2 and later only, no renegotiation (a peer that asks for one ends its
session, logged); no half-close (end of input ends the session, as the relay does anyway);
``close`` sends close_notify and does not wait for the peer's. Any TLS error or garbage ends that
one session: its protocol's ``connection_lost`` gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

log = logging.getLogger(__name__)

_MAX_PLAINTEXT = 16384  # one record's plaintext (RFC 8446 5.1): one read of this size takes it whole


class TlsTransport(asyncio.Transport):
    """The relay's transport for a TLS leg: plaintext in and out, records on the raw transport.

    ``_RawSide`` is the protocol set on the raw transport; its callbacks are this object's
    ``_raw_*`` methods. The application protocol's ``data_received`` is looked up once, on
    ``set_protocol``, as the loop's own transports do (the relay rebinds it that way)."""

    def __init__(
        self,
        raw: asyncio.Transport,
        protocol: asyncio.BaseProtocol,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None,
        waiter: asyncio.Future,
    ):
        super().__init__()
        self._raw = raw
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                        server_hostname=server_hostname)
        self._context = context
        self._waiter = waiter
        self._handshaking = True
        self._queued: list[bytes] = []  # written before the handshake ended
        self._open = False  # handshake done and not closing: write encrypts at once
        self._peer_closed = False
        # The C object under ``ssl.SSLObject``: its read and write without the Python wrapper's
        # frame, on the hot path (the wrapper only forwards; both raise the same errors).
        c_obj = getattr(self._sslobj, "_sslobj", self._sslobj)
        self._read = c_obj.read
        self._write = c_obj.write
        self._closing = False
        self._lost = False
        self._error: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.set_protocol(protocol)

    # -- asyncio.Transport, as the relay uses it ------------------------------------------------------
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._app_data_received = protocol.data_received

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not (self._open and data):
            if data and self._handshaking and not self._closing:
                self._queued.append(bytes(data))
            return
        try:
            self._write(data)
        except ssl.SSLWantReadError:
            self._renegotiation()
            return
        except ssl.SSLError as exc:
            self._fatal(exc)
            return
        self._raw.write(self._outgoing.read())

    def writelines(self, list_of_data) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def close(self) -> None:
        """Send close_notify (best effort: the peer's is not awaited), then close the socket once
        what is buffered has gone."""
        if self._closing:
            return
        self._closing = True
        self._open = False
        self._cancel_timer()
        if not self._handshaking:
            try:
                self._sslobj.unwrap()
            except ssl.SSLError:
                pass  # SSLWantReadError: our close_notify is out, the peer's is not awaited
            self._flush()
        self._raw.close()

    def abort(self) -> None:
        self._closing = True
        self._open = False
        self._cancel_timer()
        self._raw.abort()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()  # the outgoing BIO is always emptied at once

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._sslobj
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return self._context
        if name == "peercert":
            return None if self._handshaking else sslobj.getpeercert()
        if name == "cipher":
            return None if self._handshaking else sslobj.cipher()
        if name == "compression":
            return None if self._handshaking else sslobj.compression()
        return self._raw.get_extra_info(name, default)

    # -- the raw transport's protocol callbacks ---------------------------------------------------------
    def _raw_data_received(self, data: bytes) -> None:
        incoming = self._incoming
        incoming.write(data)
        if self._handshaking:
            self._handshake()
            return
        try:
            plain = self._read(_MAX_PLAINTEXT)
            if incoming.pending and plain:  # more records in this read, or a record's start
                plain = self._read_more(plain)
        except ssl.SSLWantReadError:
            plain = None  # a record's start only, or a record without application data (a ticket)
        except ssl.SSLError as exc:
            self._fatal(exc)
            return
        if self._outgoing.pending:  # OpenSSL's own answer to a record (a key update)
            self._flush()
        if plain:
            self._app_data_received(plain)
        elif plain is not None or self._peer_closed:  # b"": the peer's close_notify
            self._peer_closed = True
            if not self._closing:
                self._protocol.eof_received()
                self.close()

    def _raw_eof_received(self) -> bool:
        if self._handshaking:
            self._fatal(ConnectionResetError("the peer closed the connection during the TLS handshake"))
        else:
            self._protocol.eof_received()  # no half-close over TLS: the connection ends
        return False

    def _raw_connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._open = False
        self._cancel_timer()
        exc = self._error or exc
        if self._handshaking and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionResetError("the connection closed during the TLS handshake"))
        self._protocol.connection_lost(exc)

    def _raw_pause_writing(self) -> None:
        self._protocol.pause_writing()

    def _raw_resume_writing(self) -> None:
        self._protocol.resume_writing()

    # -- records ------------------------------------------------------------------------------------------
    def start(self, read_ahead: bytes, handshake_timeout: float) -> None:
        """Begin the handshake with the bytes already read (the client's, on the server side)."""
        self._timer = asyncio.get_running_loop().call_later(handshake_timeout, self._handshake_timed_out,
                                                            handshake_timeout)
        if read_ahead:
            self._raw_data_received(read_ahead)
        else:
            self._handshake()  # the client side speaks first: its ClientHello goes out now

    def _handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ValueError) as exc:  # ValueError: e.g. a hostname check that cannot run
            self._fatal(exc)
            return
        self._handshaking = False
        self._open = not self._closing
        self._cancel_timer()
        self._flush()
        if not self._waiter.done():
            self._waiter.set_result(None)
        queued, self._queued = self._queued, []
        for data in queued:
            self.write(data)
        if self._incoming.pending:  # application data in the same read as the peer's Finished
            self._raw_data_received(b"")

    def _read_more(self, first: bytes) -> bytes:
        """The plaintext of every whole record left in the incoming BIO, after ``first``, joined:
        one ``data_received`` per socket read. Stops without asking OpenSSL again once the BIO
        is empty (asking would raise ``SSLWantReadError``, which costs more than the check)."""
        read = self._read
        incoming = self._incoming
        chunks = [first]
        try:
            while incoming.pending:
                chunk = read(_MAX_PLAINTEXT)
                if not chunk:  # close_notify: deliver what came before it first
                    self._peer_closed = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass  # the rest is a record's start, or a record without application data
        return b"".join(chunks)

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._raw.write(self._outgoing.read())

    # -- ending ---------------------------------------------------------------------------------------------
    def _fatal(self, exc: BaseException) -> None:
        """End this connection with ``exc``: the handshake's waiter fails with it, and the
        protocol's ``connection_lost`` receives it once the socket is closed."""
        if self._error is None:
            self._error = exc
        if self._handshaking and not self._waiter.done():
            self._waiter.set_exception(exc)
        self._closing = True
        self._open = False
        self._cancel_timer()
        self._flush()  # OpenSSL's alert, when it wrote one, tells the peer why
        self._raw.close()

    def _renegotiation(self) -> None:
        log.warning("TLS peer %s asked for a renegotiation, which the relay does not support: "
                    "closing the connection", self._raw.get_extra_info("peername"))
        self._fatal(ssl.SSLError("TLS renegotiation is not supported"))

    def _handshake_timed_out(self, timeout: float) -> None:
        self._timer = None
        if self._handshaking:
            self._fatal(TimeoutError(f"TLS handshake not done after {timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _RawSide(asyncio.Protocol):
    """The raw transport's protocol: its callbacks are the TLS transport's own, bound once."""

    def __init__(self, tls: TlsTransport):
        self.data_received = tls._raw_data_received
        self.eof_received = tls._raw_eof_received
        self.connection_lost = tls._raw_connection_lost
        self.pause_writing = tls._raw_pause_writing
        self.resume_writing = tls._raw_resume_writing


def upgrade(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    server_hostname: str | None = None,
    read_ahead: bytes = b"",
    handshake_timeout: float = 10.0,
) -> tuple[TlsTransport, asyncio.Future]:
    """Start TLS on ``transport`` now; returns (the TLS transport, a future done when the
    handshake is). ``protocol`` keeps receiving the decrypted bytes; its ``connection_made`` is
    not called again. Writes to the returned transport before the handshake ends are queued
    and sent once it is done. The future fails (and the connection is closed) on a handshake
    error or when ``handshake_timeout`` passes first."""
    waiter = asyncio.get_running_loop().create_future()
    tls = TlsTransport(transport, protocol, context, server_side, server_hostname, waiter)
    transport.set_protocol(_RawSide(tls))
    tls.start(read_ahead, handshake_timeout)
    return tls, waiter
