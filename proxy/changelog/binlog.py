"""The one place that talks to mysql-replication: a binlog event source over the replication protocol.

Reads the server's binlog from a file:pos and yields ``RawEvent``s: the event header fields plus
the raw event body (no common header, no checksum). Nothing is decoded here: the store keeps the
raw bodies (DESIGN.md decision 4), and the streamer parses the few control events it needs
(events.py).

mysql-replication 1.0.17 is used for what it does right: connecting, checksum negotiation, the
heartbeat period, MariaDB's slave capability, registering and sending the dump command. It is
wrapped because of measured defects (shared/research/capture-feasibility.md):
  * B1/B2: ``is_mariadb=True`` ignores file:pos and sends a malformed dump packet, so file:pos
    mode is used for every flavour; but in that mode the library never asks MariaDB for
    Annotate_rows events (the statement text). ``_DumpConnection`` adds the
    BINLOG_SEND_ANNOTATE_ROWS_EVENT flag to the dump packet it writes.
  * B2: on a lost connection the library silently reconnects from the last *event*, in the
    middle of a transaction, and may replay. Here a lost connection raises ``StreamLost``; the
    streamer resumes from its own last complete transaction instead.
  * B3/B6: events it cannot handle (compressed events, rows events whose table map it did not
    see) are dropped silently. Here every event is passed on and positions are checked to be
    contiguous, so a dropped event raises ``EventsMissing`` instead of vanishing.
  * Speed: once the dump command is sent, the events are framed here, straight off the dump
    connection's socket, and the library's ``fetchone`` is never called. Measured under sysbench
    oltp_write_only (14 events per transaction): its per-event path (PyMySQL packet object,
    packet wrapper, event object, filters) cost about 10 us per event, 140 us per transaction,
    the largest part of capture's CPU; framing here (one ``recv`` per chunk, one ``struct``
    unpack per event, one slice for the body) costs about 2 us.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pymysql
from pymysql.constants.COMMAND import COM_BINLOG_DUMP
from pymysqlreplication import BinLogStreamReader

from proxy.changelog.events import parse_rotate
from proxy.serveradmin import open_connection

# Binlog event type codes (MySQL's and MariaDB's Log_event_type).
QUERY_EVENT = 2
STOP_EVENT = 3
ROTATE_EVENT = 4
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
TABLE_MAP_EVENT = 19
WRITE_ROWS_V1 = 23
UPDATE_ROWS_V1 = 24
DELETE_ROWS_V1 = 25
HEARTBEAT_EVENT = 27
HEARTBEAT_EVENT_V2 = 41  # MySQL 8.0.26+
ROWS_QUERY_EVENT = 29
WRITE_ROWS_V2 = 30
UPDATE_ROWS_V2 = 31
DELETE_ROWS_V2 = 32
GTID_EVENT = 33
ANONYMOUS_GTID_EVENT = 34
PREVIOUS_GTIDS_EVENT = 35
XA_PREPARE_EVENT = 38
PARTIAL_UPDATE_ROWS_EVENT = 39
TRANSACTION_PAYLOAD_EVENT = 40
GTID_TAGGED_LOG_EVENT = 42  # MySQL 8.4+: a GTID with a tag (uuid:tag:gno)
MARIADB_ANNOTATE_ROWS_EVENT = 160
MARIADB_BINLOG_CHECKPOINT_EVENT = 161
MARIADB_GTID_EVENT = 162
MARIADB_GTID_LIST_EVENT = 163
MARIADB_START_ENCRYPTION_EVENT = 164
MARIADB_QUERY_COMPRESSED_EVENT = 165
MARIADB_WRITE_ROWS_COMPRESSED_V1 = 169
MARIADB_UPDATE_ROWS_COMPRESSED_V1 = 170
MARIADB_DELETE_ROWS_COMPRESSED_V1 = 171
MARIADB_WRITE_ROWS_COMPRESSED = 166
MARIADB_UPDATE_ROWS_COMPRESSED = 167
MARIADB_DELETE_ROWS_COMPRESSED = 168

# PARTIAL_UPDATE_ROWS (binlog_row_value_options=PARTIAL_JSON) is stored as it came: the decoder
# applies its JSON diffs to the full before-image, so every decoded after-image is full.
ROWS_EVENTS = frozenset(
    {WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1, WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2,
     PARTIAL_UPDATE_ROWS_EVENT}
)
# Events whose content cannot be captured faithfully: the inspector refuses the settings that
# produce them, and the streamer stops if one shows up anyway. (MySQL's TRANSACTION_PAYLOAD is
# not among them: ``events`` hands out the events it holds, see binlogfile.payload_events.)
UNSUPPORTED_EVENTS = frozenset(
    {
        MARIADB_QUERY_COMPRESSED_EVENT,
        MARIADB_WRITE_ROWS_COMPRESSED,
        MARIADB_UPDATE_ROWS_COMPRESSED,
        MARIADB_DELETE_ROWS_COMPRESSED,
        MARIADB_WRITE_ROWS_COMPRESSED_V1,
        MARIADB_UPDATE_ROWS_COMPRESSED_V1,
        MARIADB_DELETE_ROWS_COMPRESSED_V1,
    }
)

BINLOG_DUMP_NON_BLOCK = 0x01
BINLOG_SEND_ANNOTATE_ROWS_EVENT = 0x02
_LOST_CONNECTION_ERRORS = (2006, 2013, 2055)

# A replication packet: the 4-byte packet header (3-byte length, sequence id), then the payload:
# the status byte (0x00 before an event) and the event's 19-byte common header: timestamp, type,
# server_id, event size, log_pos (end of the event), flags.
_EVENT_HEADER = struct.Struct("<BIBIIIH")
_MAX_PACKET = 0xFFFFFF  # a payload this long continues in the next packet
_RECV_BYTES = 1 << 20
_PACED_READ_BYTES = 64 * 1024  # a read this short means capture is keeping up: pace the next one
_HEARTBEATS = frozenset({HEARTBEAT_EVENT, HEARTBEAT_EVENT_V2})


class StreamLost(ConnectionError):
    """The replication connection broke; resume from the last complete transaction."""


class EventsMissing(RuntimeError):
    """An event between two positions never reached us (the library dropped it)."""


@dataclass(frozen=True, slots=True)
class BinlogPosition:
    """A binlog coordinate: the file and the byte offset of the next event to read."""

    file: str
    pos: int

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


class RawEvent:
    """One binlog event as it was on the server. A plain class with slots: one is made per event,
    and a frozen dataclass costs several times more to construct."""

    __slots__ = ("type", "timestamp", "server_id", "log_file", "end_pos", "body", "flags", "size")

    def __init__(self, type: int, timestamp: int, server_id: int, log_file: str, end_pos: int,  # noqa: A002
                 body: bytes, flags: int = 0, size: int | None = None):
        self.type = type
        self.timestamp = timestamp  # seconds, from the common header
        self.server_id = server_id
        self.log_file = log_file
        self.end_pos = end_pos  # position right after this event (``log_pos`` in the header)
        self.body = body  # after the 19-byte common header, without the CRC32 checksum
        self.flags = flags
        # The whole event on the server (header, body and checksum, if the server writes one).
        self.size = 19 + len(body) + 4 if size is None else size

    @property
    def start_pos(self) -> int:
        """Position of this event's first byte in its binlog file."""
        return self.end_pos - self.size

    def __repr__(self) -> str:
        return (f"RawEvent(type={self.type}, {self.log_file}:{self.end_pos}, "
                f"{len(self.body)} bytes)")


def _payload_events(event: RawEvent) -> list[RawEvent]:
    # Imported here: binlogfile builds on this module (RawEvent), and only MySQL servers with
    # binlog_transaction_compression=ON ever send this event.
    from proxy.changelog.binlogfile import payload_events

    return payload_events(event)


class _DumpConnection(pymysql.connections.Connection):
    """PyMySQL connection used for the replication stream (see the module docstring)."""

    send_annotate_rows = True

    def _write_bytes(self, data: bytes) -> None:
        if (
            self.send_annotate_rows
            and len(data) >= 15
            and data[4] == COM_BINLOG_DUMP
            and data[3] == 0
        ):
            flags = struct.unpack_from("<H", data, 9)[0] | BINLOG_SEND_ANNOTATE_ROWS_EVENT
            data = data[:9] + struct.pack("<H", flags) + data[11:]
        super()._write_bytes(data)

    def _read_packet(self, packet_type=pymysql.connections.MysqlPacket):
        try:
            return super()._read_packet(packet_type)
        except pymysql.OperationalError as exc:
            if exc.args and exc.args[0] in _LOST_CONNECTION_ERRORS:
                raise StreamLost(str(exc)) from exc
            raise


class BinlogSource:
    """Iterate the server's binlog from ``start``; one instance per connection attempt.

    ``on_idle`` is called whenever every byte received so far has been handed out and none
    arrives within ``idle_linger_s``, i.e. right before the reader would block for the server:
    the streamer commits its group of transactions there (group commit, see ``ChangeStore``).

    ``read_pace_s`` is the least time between two reads from the socket while capture keeps up
    (the last read was small): events that arrive meanwhile wait in the kernel's buffer and are
    taken in one read (see the streamer's ``READ_PACE_S`` for why). A backlog is read at full
    speed.

    ``on_data`` is called after every read that brought bytes (heartbeats too)."""

    def __init__(
        self,
        connection_settings: dict,
        server_id: int,
        start: BinlogPosition,
        blocking: bool = True,
        heartbeat_s: float = 1.0,
        read_timeout_s: float = 30.0,
        send_annotate_rows: bool = True,
        on_idle: Callable[[], None] | None = None,
        idle_linger_s: float = 0.0,
        read_pace_s: float = 0.0,
        on_data: Callable[[], None] | None = None,
    ):
        settings = dict(connection_settings)
        settings.setdefault("read_timeout", read_timeout_s)
        settings.setdefault("connect_timeout", 10)

        def connect(**kwargs) -> pymysql.Connection:
            conn_class = _DumpConnection if send_annotate_rows else pymysql.connections.Connection
            if "passwd" in kwargs:  # mysql-replication still passes PyMySQL's deprecated name
                kwargs["password"] = kwargs.pop("passwd")
            return open_connection("capture", conn_class, **kwargs)  # tells the server who it is

        self.start = start
        self.read_timeout_s = float(settings["read_timeout"])
        self.on_idle = on_idle
        self.idle_linger_s = idle_linger_s
        self.read_pace_s = read_pace_s
        self.on_data = on_data
        self._last_read = 0.0
        self._interrupted = False
        self._last_read_small = False
        self._sock: socket.socket | None = None
        self._reader = BinLogStreamReader(
            connection_settings=settings,
            server_id=server_id,
            log_file=start.file,
            log_pos=start.pos,
            resume_stream=True,
            blocking=blocking,
            is_mariadb=False,
            slave_heartbeat=heartbeat_s if blocking else None,
            pymysql_wrapper=connect,
            enable_logging=False,
        )

    def _connect(self) -> tuple[socket.socket, int]:
        """Connect, register and send the dump command (the library's job); the socket to read
        the events from, and the checksum length after each event."""
        # The library has no public way to start the stream without reading from it: its
        # ``fetchone`` connects on first use, then reads through its own (slow) event path.
        reader = self._reader
        reader._BinLogStreamReader__connect_to_stream()
        checksum = 4 if reader._BinLogStreamReader__use_checksum else 0
        sock = reader._stream_connection._sock
        # PyMySQL sets its read timeout around each of its own reads; ours come after its last.
        sock.settimeout(self.read_timeout_s)
        return sock, checksum

    def events(self) -> Iterator[RawEvent]:
        """Yield every event from the start position, in order; raise on any gap."""
        sock, checksum = self._connect()
        self._sock = sock
        if self._interrupted:  # ``interrupt`` ran while we connected, before there was a socket
            raise StreamLost("interrupted")
        unpack_event_header = _EVENT_HEADER.unpack_from
        log_file = self.start.file
        expected_start = self.start.pos
        buf, pos = b"", 0
        while True:
            avail = len(buf) - pos
            data = None
            if avail >= 4:
                length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
                if length < _MAX_PACKET and avail >= 4 + length:
                    data, start = buf, pos + 4
                    pos = end = start + length
                elif length == _MAX_PACKET:  # an event of 16 MiB or more spans several packets
                    data, buf, pos = self._long_payload(buf, pos)
                    start, end = 0, len(data)
            if data is None:
                buf, pos = buf[pos:] + self._recv(sock), 0
                continue
            if end - start < 20 or data[start] != 0:
                if self._control_packet(data[start:end]):
                    return  # end of a non-blocking dump
                continue
            _, timestamp, event_type, server_id, size, end_pos, flags = unpack_event_header(data, start)
            body = data[start + 20 : start + 1 + size - checksum]
            if event_type == ROTATE_EVENT:
                # Artificial rotates (timestamp 0) announce the file we are reading; real ones
                # close the current file. Either way what follows starts in the named file.
                yield RawEvent(event_type, timestamp, server_id, log_file, end_pos, body, flags, size)
                expected_start, log_file = parse_rotate(body)
                continue
            if event_type in _HEARTBEATS or end_pos == 0:
                continue  # heartbeats and artificial events occupy no position
            if end_pos - size != expected_start and event_type != FORMAT_DESCRIPTION_EVENT:
                raise EventsMissing(
                    f"binlog {log_file}: expected an event at {expected_start}, the next one "
                    f"we received starts at {end_pos - size} (type {event_type})"
                )
            expected_start = end_pos
            if event_type == TRANSACTION_PAYLOAD_EVENT:  # a compressed transaction: its events
                yield from _payload_events(
                    RawEvent(event_type, timestamp, server_id, log_file, end_pos, body, flags, size))
                continue
            yield RawEvent(event_type, timestamp, server_id, log_file, end_pos, body, flags, size)

    def _recv(self, sock: socket.socket) -> bytes:
        """The next bytes from the server; ``on_idle`` first when none are waiting."""
        try:
            idle_told = False
            if self._last_read_small:
                early = self._last_read + self.read_pace_s - time.monotonic()
                if early > 0:
                    if self.on_idle is not None and not select.select([sock], [], [], 0)[0]:
                        self.on_idle()  # caught up: the group commits now, not after the pause
                        idle_told = True
                    time.sleep(early)
            if (self.on_idle is not None and not idle_told
                    and not select.select([sock], [], [], self.idle_linger_s)[0]):
                self.on_idle()
            chunk = sock.recv(_RECV_BYTES)
            self._last_read = time.monotonic()
            self._last_read_small = len(chunk) < _PACED_READ_BYTES
            if self.on_data is not None:
                self.on_data()
        except TimeoutError as exc:
            raise StreamLost(f"no binlog event or heartbeat for {self.read_timeout_s:.0f} s") from exc
        except (OSError, ValueError) as exc:  # ValueError: select on a socket closed under us
            raise StreamLost(f"replication connection lost: {exc}") from exc
        if not chunk:
            raise StreamLost("the server closed the replication connection")
        return chunk

    def _take(self, buf: bytes, pos: int, n: int) -> tuple[bytes, bytes, int]:
        """Exactly ``n`` bytes from ``buf[pos:]`` and the socket; (them, new buf, new pos)."""
        pieces = [buf[pos : pos + n]]
        have = len(pieces[0])
        pos += have
        while have < n:
            buf = self._sock_recv_blocking()
            pos = min(len(buf), n - have)
            pieces.append(buf[:pos])
            have += pos
        return b"".join(pieces), buf, pos

    def _sock_recv_blocking(self) -> bytes:
        on_idle, self.on_idle = self.on_idle, None  # never inside a packet
        try:
            return self._recv(self._sock)
        finally:
            self.on_idle = on_idle

    def _long_payload(self, buf: bytes, pos: int) -> tuple[bytes, bytes, int]:
        """A payload split over packets of 16 MiB - 1 (the protocol's limit per packet)."""
        parts = []
        while True:
            header, buf, pos = self._take(buf, pos, 4)
            length = int.from_bytes(header[:3], "little")
            part, buf, pos = self._take(buf, pos, length)
            parts.append(part)
            if length < _MAX_PACKET:
                return b"".join(parts), buf, pos

    @staticmethod
    def _control_packet(payload: bytes) -> bool:
        """A packet that carries no event: raise the server's error, or True at the end of a
        non-blocking dump (EOF packet); anything else is skipped, as the library does."""
        if payload[:1] == b"\xff":
            pymysql.err.raise_mysql_exception(payload)
        if payload[:1] == b"\xfe" and len(payload) < 9:
            return True
        if payload[:1] == b"\x00":
            raise StreamLost(f"a truncated binlog event packet ({len(payload)} bytes)")
        return False

    def interrupt(self) -> None:
        """Make the reader give up: one blocked in ``recv`` (or about to connect) raises
        ``StreamLost``. Safe from another thread and from a signal handler (it only shuts the
        socket down; the reader's own ``close`` releases it)."""
        self._interrupted = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the stream; safe from another thread: a reader blocked in ``recv`` wakes up."""
        self.interrupt()
        self._reader.close()
