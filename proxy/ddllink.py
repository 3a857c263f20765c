"""Borrow a relayed session's server connection to run auroratrack's own statements on it.

A held DROP/TRUNCATE must run where the client's statement would have run: on the client's own
server session, so that its temporary tables, its open transaction (which the DDL commits
implicitly), its locks and its privileges are the ones that count. ``SessionLink`` takes the
session's upstream transport over (``transport.set_protocol``), sends COM_QUERY packets, reads
each response whole and gives the transport back. The relay forwards nothing while it holds the
link: the client is waiting for the answer to the statement the link is running for it. On a
compressed session (CLIENT_COMPRESS) the link compresses what it sends, each statement a new
command (compressed sequence id 0), and inflates what it reads (proxy.compression).

``Executor`` is the small synchronous interface the DDL procedures (proxy.ddlops) are written
against; ``SessionExecutor`` runs it over a link from a worker thread, ``PyMySQLExecutor`` over
an ordinary connection (the control connection, the backtrack's connection). Both return
``Result`` values instead of raising on a server error: an error is an answer to relay.

Reads and writes: whatever the caller sends. Text protocol only; column values come back as
bytes decoded as UTF-8 (the procedures only read ASCII-safe values through a session link).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Protocol

import pymysql

from proxy import wire
from proxy.compression import CompressedPacketReader, make_compressed_packets

_MAX_CHUNK = 0xFFFFFF


@dataclass(frozen=True)
class Result:
    """One statement's answer: an OK, an ERR, or a result set (``rows``)."""

    kind: str  # ok | err | rows
    payload: bytes = b""  # the OK or ERR packet's payload, as the server sent it
    rows: list[tuple] = field(default_factory=list)
    errno: int = 0
    sqlstate: str = ""
    message: str = ""
    packets: list[bytes] = field(default_factory=list)  # every payload of the response, in order

    @property
    def ok(self) -> bool:
        return self.kind != "err"


class Executor(Protocol):
    """Runs one SQL statement and returns its ``Result`` (a server error is a result too)."""

    def run(self, sql: str) -> Result: ...


class LinkLost(Exception):
    """The server connection closed while the link held it."""


class SessionLink(asyncio.Protocol):
    """The protocol that stands in for the relay's while auroratrack uses the connection."""

    def __init__(self, transport: asyncio.Transport, deprecate_eof: bool, compressed: bool = False,
                 mariadb: bool = True):
        self.transport = transport
        self.deprecate_eof = deprecate_eof
        self.mariadb = mariadb  # (MariaDB-only reads, @@last_gtid, are not sent to MySQL)
        self._inflater = CompressedPacketReader() if compressed else None
        self._buf = bytearray()
        self._waiter: asyncio.Future | None = None
        self._lost = False
        self._previous = transport.get_protocol()
        transport.set_protocol(self)
        transport.resume_reading()

    def release(self) -> None:
        """Give the transport back to the relay."""
        if not self._lost:
            self.transport.set_protocol(self._previous)

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._inflater is None:
            self._buf += data
        else:
            for _, content in self._inflater.feed(data):
                self._buf += content
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake()
        self._previous.connection_lost(exc)  # the relay ends the session as it would have

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- packets ----------------------------------------------------------------------------------
    def _send_command(self, payload: bytes) -> None:
        packets = wire.make_packets(payload, 0)
        if self._inflater is not None:
            packets, _ = make_compressed_packets(packets, 0)
        self.transport.write(packets)

    async def _packet(self) -> bytes:
        """The next logical packet's payload (chunks of 16 MiB joined)."""
        payload = b""
        while True:
            while len(self._buf) < 4 or len(self._buf) < 4 + (self._buf[0] | self._buf[1] << 8 | self._buf[2] << 16):
                if self._lost:
                    raise LinkLost("the server closed the connection")
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            length = self._buf[0] | self._buf[1] << 8 | self._buf[2] << 16
            payload += bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            if length < _MAX_CHUNK:
                return payload

    async def query(self, sql: str) -> Result:
        """Send ``sql`` as COM_QUERY and read its whole response."""
        return await self.query_bytes(sql.encode("utf-8"))

    async def prepare_stand_in(self) -> bytes:
        """COM_STMT_PREPARE of ``DO 0`` (no parameters, no columns: its answer is one packet,
        the same as a DROP TABLE's prepare); returns that payload."""
        self._send_command(b"\x16DO 0")
        return await self._packet()

    async def query_bytes(self, sql: bytes) -> Result:
        """``query`` of a statement already encoded (the client's own bytes)."""
        if self._lost:
            raise LinkLost("the server closed the connection")
        self._send_command(b"\x03" + sql)
        first = await self._packet()
        if first[:1] == b"\x00":
            return Result("ok", first, packets=[first])
        if first[:1] == b"\xff":
            errno, sqlstate, message = wire.parse_err_packet(first)
            return Result("err", first, errno=errno, sqlstate=sqlstate, message=message, packets=[first])
        if first[:1] == b"\xfb":  # LOCAL INFILE: never asked for by our statements
            raise wire.ProtocolError("unexpected LOCAL INFILE request on a session link")
        packets = [first]
        count, _ = wire.read_length_encoded_integer(first, 0)
        for _ in range(count or 0):
            packets.append(await self._packet())
        if not self.deprecate_eof:
            packets.append(await self._packet())
        rows: list[tuple] = []
        while True:
            packet = await self._packet()
            packets.append(packet)
            if packet[:1] == b"\xff":
                errno, sqlstate, message = wire.parse_err_packet(packet)
                return Result("err", packet, errno=errno, sqlstate=sqlstate, message=message, packets=packets)
            if packet[:1] == b"\xfe" and len(packet) < 0xFFFFFF and (len(packet) < 9 or self.deprecate_eof):
                return Result("rows", rows=rows, packets=packets)
            rows.append(_text_row(packet, count or 0))


def _text_row(packet: bytes, count: int) -> tuple:
    values = []
    pos = 0
    for _ in range(count):
        if packet[pos] == 0xFB:
            values.append(None)
            pos += 1
            continue
        length, pos = wire.read_length_encoded_integer(packet, pos)
        values.append(packet[pos : pos + length].decode("utf-8", "replace"))
        pos += length
    return tuple(values)


class SessionExecutor:
    """``Executor`` over a ``SessionLink``, for code running in a worker thread."""

    def __init__(self, link: SessionLink, loop: asyncio.AbstractEventLoop, timeout: float = 3600.0):
        self.link = link
        self.loop = loop
        self.timeout = timeout
        self.mariadb = link.mariadb

    def run(self, sql: str) -> Result:
        return asyncio.run_coroutine_threadsafe(self.link.query(sql), self.loop).result(self.timeout)


class PyMySQLExecutor:
    """``Executor`` over a PyMySQL connection (autocommit expected)."""

    def __init__(self, conn: pymysql.Connection):
        self.conn = conn
        self.mariadb = "mariadb" in (conn.get_server_info() or "").lower()

    def run(self, sql: str) -> Result:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql)
                rows = [tuple(None if v is None else _text(v) for v in row) for row in cur.fetchall()]
                return Result("rows" if cur.description else "ok", rows=rows)
        except pymysql.err.MySQLError as exc:
            if not isinstance(exc, (pymysql.err.ProgrammingError, pymysql.err.OperationalError,
                                    pymysql.err.IntegrityError, pymysql.err.InternalError,
                                    pymysql.err.NotSupportedError)) or not exc.args or not isinstance(exc.args[0], int):
                raise
            if exc.args[0] in (2006, 2013, 2003):
                raise
            return Result("err", errno=exc.args[0], message=str(exc.args[1]) if len(exc.args) > 1 else "")


def _text(value) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def reframe(payload: bytes, sequence_id: int) -> bytes:
    """A payload as one or more packets starting at ``sequence_id`` (to relay an answer)."""
    return wire.make_packets(payload, sequence_id)


def ok_payload(status: int, warnings: int = 0, affected: int = 0) -> bytes:
    """A plain OK payload (no info text)."""
    return b"\x00" + wire.length_encoded_integer(affected) + b"\x00" + struct.pack("<HH", status, warnings)
