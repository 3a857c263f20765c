"""The one place that talks to mysql-replication: a binlog event source over the replication protocol.

Reads the server's binlog from a file:pos and yields ``RawEvent``s: the event header fields plus
the raw event body (no common header, no checksum), and the library's parsed event object for
the control events it understands (GTID, QUERY, XID, ROTATE, ...). Row images are never decoded
here: the store keeps the raw bodies (DESIGN.md decision 4).

mysql-replication 1.0.17 is used for what it does well (connecting, checksum negotiation,
registering, the dump command, reading and framing events). It is wrapped because of measured
defects (shared/research/capture-feasibility.md):
  * B1/B2: ``is_mariadb=True`` ignores file:pos and sends a malformed dump packet, so file:pos
    mode is used for every flavour; but in that mode the library never asks MariaDB for
    Annotate_rows events (the statement text). ``_DumpConnection`` adds the
    BINLOG_SEND_ANNOTATE_ROWS_EVENT flag to the dump packet it writes.
  * B2: on a lost connection the library silently reconnects from the last *event*, in the
    middle of a transaction, and may replay. ``_DumpConnection`` turns a lost connection into
    ``StreamLost``, which the library does not catch; the streamer resumes from its own last
    complete transaction instead.
  * B3/B6: events it cannot handle (compressed events, rows events whose table map it did not
    see) are dropped silently. Every event type is requested and positions are checked to be
    contiguous, so a dropped event raises ``EventsMissing`` instead of vanishing.
  * Speed: its rows-event classes parse column metadata for every event (about 30 us each,
    a quarter of capture's CPU) although we keep the raw bytes; ``RawRowsEvent`` replaces them.
    Its ``TableMapEvent`` parses every column's type, metadata and (with FULL row metadata)
    names and charsets, for every table map, i.e. once per statement: about 80 us, more than
    half of capture's CPU in small transactions; ``RawTableMapEvent`` replaces it (the streamer
    reads the names itself). PyMySQL reads the socket through an 8 KiB buffer; the dump connection
    uses 1 MiB.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pymysql
from pymysql.constants.COMMAND import COM_BINLOG_DUMP
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import BinLogEvent, NotImplementedEvent
from pymysqlreplication.packet import BinLogPacketWrapper

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

ROWS_EVENTS = frozenset(
    {WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1, WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2}
)
# Events whose content cannot be captured faithfully: the inspector refuses the settings that
# produce them, and the streamer stops if one shows up anyway.
UNSUPPORTED_EVENTS = frozenset(
    {
        PARTIAL_UPDATE_ROWS_EVENT,
        TRANSACTION_PAYLOAD_EVENT,
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


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One binlog event as it was on the server."""

    type: int
    timestamp: int  # seconds, from the common header
    server_id: int
    log_file: str
    end_pos: int  # position right after this event (``log_pos`` in the header)
    body: bytes  # after the 19-byte common header, without the CRC32 checksum
    parsed: object | None  # the library's event object for control events, else None
    flags: int = 0


class RawRowsEvent(BinLogEvent):
    """A rows event left undecoded: the streamer takes its raw body from the packet."""

    def __init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs):
        super().__init__(from_packet, event_size, table_map, ctl_connection, **kwargs)


class RawTableMapEvent(BinLogEvent):
    """A table map left unparsed: the streamer takes its raw body from the packet. Only the table
    id is read, because the library files every table map under it (``get_table``); nothing
    reads that entry, since no rows event is decoded by the library."""

    def __init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs):
        super().__init__(from_packet, event_size, table_map, ctl_connection, **kwargs)
        self.table_id = self._read_table_id()

    def get_table(self) -> None:
        return None


_RAW_ROWS_TYPES = (WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1, WRITE_ROWS_V2, UPDATE_ROWS_V2,
                   DELETE_ROWS_V2, PARTIAL_UPDATE_ROWS_EVENT)


def _install_raw_rows_events() -> None:
    """Map rows event and table map types to our raw classes in the library's event table
    (idempotent)."""
    attribute = "_BinLogPacketWrapper__event_map"
    event_map = dict(getattr(BinLogPacketWrapper, attribute))
    for event_type in _RAW_ROWS_TYPES:
        event_map[event_type] = RawRowsEvent
    event_map[TABLE_MAP_EVENT] = RawTableMapEvent
    setattr(BinLogPacketWrapper, attribute, event_map)


def _allowed_events() -> set:
    """Every event class the library knows, plus ours: nothing may be filtered out silently."""
    known = set(BinLogPacketWrapper._BinLogPacketWrapper__event_map.values())
    return known | {RawRowsEvent, RawTableMapEvent, NotImplementedEvent}


class _DumpConnection(pymysql.connections.Connection):
    """PyMySQL connection used for the replication stream (see the module docstring)."""

    send_annotate_rows = True

    def connect(self, sock=None) -> None:
        super().connect(sock)
        self._rfile = self._sock.makefile("rb", buffering=1 << 20)

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
    """Iterate the server's binlog from ``start``; one instance per connection attempt."""

    def __init__(
        self,
        connection_settings: dict,
        server_id: int,
        start: BinlogPosition,
        blocking: bool = True,
        heartbeat_s: float = 1.0,
        read_timeout_s: float = 30.0,
        send_annotate_rows: bool = True,
    ):
        settings = dict(connection_settings)
        settings.setdefault("read_timeout", read_timeout_s)
        settings.setdefault("connect_timeout", 10)

        def connect(**kwargs) -> pymysql.Connection:
            conn_class = _DumpConnection if send_annotate_rows else pymysql.connections.Connection
            return conn_class(**kwargs)

        self.start = start
        _install_raw_rows_events()
        self._reader = BinLogStreamReader(
            connection_settings=settings,
            server_id=server_id,
            log_file=start.file,
            log_pos=start.pos,
            resume_stream=True,
            blocking=blocking,
            is_mariadb=False,
            slave_heartbeat=heartbeat_s if blocking else None,
            filter_non_implemented_events=False,
            pymysql_wrapper=connect,
            enable_logging=False,
            only_events=_allowed_events(),
        )

    def events(self) -> Iterator[RawEvent]:
        """Yield every event from the start position, in order; raise on any gap."""
        log_file = self.start.file
        expected_start = self.start.pos
        for event in iter(self._reader.fetchone, None):
            wrapper = event.packet
            raw = wrapper.packet._data  # 0x00 OK byte, 19-byte header, body, [CRC32]
            size = wrapper.event_size
            event_type = wrapper.event_type
            if event_type == ROTATE_EVENT:
                # Artificial rotates (timestamp 0) announce the file we are reading; real ones
                # close the current file. Either way what follows starts in the named file.
                yield self._raw(event, log_file, raw, size)
                log_file = event.next_binlog
                expected_start = event.position
                continue
            end_pos = wrapper.log_pos
            if event_type == HEARTBEAT_EVENT or end_pos == 0:
                continue  # heartbeats and artificial events occupy no position
            start_pos = end_pos - size
            if expected_start is not None and start_pos != expected_start and event_type != FORMAT_DESCRIPTION_EVENT:
                raise EventsMissing(
                    f"binlog {log_file}: expected an event at {expected_start}, the next one "
                    f"we received starts at {start_pos} (type {event_type})"
                )
            expected_start = end_pos
            yield self._raw(event, log_file, raw, size)

    def _raw(self, event, log_file: str, raw: bytes, size: int) -> RawEvent:
        wrapper = event.packet
        body = bytes(raw[20 : 1 + size - (4 if len(raw) >= 1 + size and self._has_checksum(raw, size) else 0)])
        return RawEvent(
            type=wrapper.event_type,
            timestamp=wrapper.timestamp,
            server_id=wrapper.server_id,
            log_file=log_file,
            end_pos=wrapper.log_pos,
            body=body,
            parsed=event,
            flags=wrapper.flags,
        )

    def _has_checksum(self, raw: bytes, size: int) -> bool:
        return bool(self._reader._BinLogStreamReader__use_checksum)

    def close(self) -> None:
        self._reader.close()
