"""MySQL client/server protocol: constants and codecs, as pure functions over bytes.

Nothing here does I/O or keeps state between calls; the relay and the tracker build on it.
Names follow the protocol documentation (dev.mysql.com "Client/Server Protocol" and MariaDB's
"Clients & Connectors > Client/Server Protocol") so a field can be grepped by its documented name.

Framing: every packet is ``payload_length`` (3 bytes, little-endian), ``sequence_id`` (1 byte),
then the payload. A payload of 2^24-1 bytes or more is split into chunks of exactly 0xFFFFFF
bytes followed by a shorter (possibly empty) chunk; together they make one logical packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

HEADER_SIZE = 4
MAX_CHUNK = 0xFFFFFF  # a chunk of exactly this size is continued by the next one


class Capability(IntFlag):
    """Client/server capability flags (``CLIENT_*``). MariaDB's extended flags live above bit 31."""

    CLIENT_LONG_PASSWORD = 1 << 0  # on MariaDB servers, *unset* means "MariaDB extended caps"
    CLIENT_FOUND_ROWS = 1 << 1
    CLIENT_LONG_FLAG = 1 << 2
    CLIENT_CONNECT_WITH_DB = 1 << 3
    CLIENT_NO_SCHEMA = 1 << 4
    CLIENT_COMPRESS = 1 << 5
    CLIENT_ODBC = 1 << 6
    CLIENT_LOCAL_FILES = 1 << 7
    CLIENT_IGNORE_SPACE = 1 << 8
    CLIENT_PROTOCOL_41 = 1 << 9
    CLIENT_INTERACTIVE = 1 << 10
    CLIENT_SSL = 1 << 11
    CLIENT_IGNORE_SIGPIPE = 1 << 12
    CLIENT_TRANSACTIONS = 1 << 13
    CLIENT_RESERVED = 1 << 14
    CLIENT_SECURE_CONNECTION = 1 << 15
    CLIENT_MULTI_STATEMENTS = 1 << 16
    CLIENT_MULTI_RESULTS = 1 << 17
    CLIENT_PS_MULTI_RESULTS = 1 << 18
    CLIENT_PLUGIN_AUTH = 1 << 19
    CLIENT_CONNECT_ATTRS = 1 << 20
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    CLIENT_SESSION_TRACK = 1 << 23
    CLIENT_DEPRECATE_EOF = 1 << 24
    CLIENT_OPTIONAL_RESULTSET_METADATA = 1 << 25
    CLIENT_ZSTD_COMPRESSION_ALGORITHM = 1 << 26
    CLIENT_QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTHENTICATION = 1 << 28
    CLIENT_CAPABILITY_EXTENSION = 1 << 29
    CLIENT_SSL_VERIFY_SERVER_CERT = 1 << 30
    CLIENT_REMEMBER_OPTIONS = 1 << 31
    MARIADB_CLIENT_PROGRESS = 1 << 32
    MARIADB_CLIENT_COM_MULTI = 1 << 33
    MARIADB_CLIENT_STMT_BULK_OPERATIONS = 1 << 34
    MARIADB_CLIENT_EXTENDED_METADATA = 1 << 35
    MARIADB_CLIENT_CACHE_METADATA = 1 << 36
    MARIADB_CLIENT_BULK_UNIT_RESULTS = 1 << 37


# Capabilities the relay cannot follow, so it never advertises them:
#  - ZSTD compression (MySQL 8.0.18+ only): the relay inflates zlib only (proxy/compression.py);
#    clients fall back to zlib (CLIENT_COMPRESS, which is relayed) or, zstd alone, to none;
#  - SSL: a relayed TLS stream cannot be framed; the proxy offers TLS of its own instead
#    (proxy/authrelay.py sets CLIENT_SSL on each leg by that leg's policy);
#  - MySQL's OPTIONAL_RESULTSET_METADATA: result sets without column definitions, announced in
#    a way the relay does not read (MariaDB's CACHE_METADATA it does: proxy.tracker);
#  - MariaDB COM_MULTI: a command of commands, never used by a released client.
# MariaDB's PROGRESS, STMT_BULK_OPERATIONS, CACHE_METADATA and BULK_UNIT_RESULTS are relayed:
# the tracker frames what they change (see its module docstring).
MASKED_CAPABILITIES = (
    Capability.CLIENT_ZSTD_COMPRESSION_ALGORITHM
    | Capability.CLIENT_SSL
    | Capability.CLIENT_OPTIONAL_RESULTSET_METADATA
    | Capability.MARIADB_CLIENT_COM_MULTI
)


class ServerStatus(IntFlag):
    """``SERVER_STATUS_*`` flags carried by OK and EOF packets."""

    SERVER_STATUS_IN_TRANS = 0x0001
    SERVER_STATUS_AUTOCOMMIT = 0x0002
    SERVER_MORE_RESULTS_EXISTS = 0x0008
    SERVER_STATUS_NO_GOOD_INDEX_USED = 0x0010
    SERVER_STATUS_NO_INDEX_USED = 0x0020
    SERVER_STATUS_CURSOR_EXISTS = 0x0040
    SERVER_STATUS_LAST_ROW_SENT = 0x0080
    SERVER_STATUS_DB_DROPPED = 0x0100
    SERVER_STATUS_NO_BACKSLASH_ESCAPES = 0x0200
    SERVER_STATUS_METADATA_CHANGED = 0x0400
    SERVER_QUERY_WAS_SLOW = 0x0800
    SERVER_PS_OUT_PARAMS = 0x1000
    SERVER_STATUS_IN_TRANS_READONLY = 0x2000
    SERVER_SESSION_STATE_CHANGED = 0x4000


class Command(IntEnum):
    """Command bytes (``COM_*``): the first payload byte of every command packet."""

    COM_SLEEP = 0x00
    COM_QUIT = 0x01
    COM_INIT_DB = 0x02
    COM_QUERY = 0x03
    COM_FIELD_LIST = 0x04
    COM_CREATE_DB = 0x05
    COM_DROP_DB = 0x06
    COM_REFRESH = 0x07
    COM_SHUTDOWN = 0x08
    COM_STATISTICS = 0x09
    COM_PROCESS_INFO = 0x0A
    COM_CONNECT = 0x0B
    COM_PROCESS_KILL = 0x0C
    COM_DEBUG = 0x0D
    COM_PING = 0x0E
    COM_TIME = 0x0F
    COM_DELAYED_INSERT = 0x10
    COM_CHANGE_USER = 0x11
    COM_BINLOG_DUMP = 0x12
    COM_TABLE_DUMP = 0x13
    COM_CONNECT_OUT = 0x14
    COM_REGISTER_SLAVE = 0x15
    COM_STMT_PREPARE = 0x16
    COM_STMT_EXECUTE = 0x17
    COM_STMT_SEND_LONG_DATA = 0x18
    COM_STMT_CLOSE = 0x19
    COM_STMT_RESET = 0x1A
    COM_SET_OPTION = 0x1B
    COM_STMT_FETCH = 0x1C
    COM_DAEMON = 0x1D
    COM_BINLOG_DUMP_GTID = 0x1E
    COM_RESET_CONNECTION = 0x1F
    COM_CLONE = 0x20
    COM_STMT_BULK_EXECUTE = 0xFA


# First payload bytes that identify a server response packet.
OK_HEADER = 0x00
AUTH_MORE_DATA_HEADER = 0x01
LOCAL_INFILE_HEADER = 0xFB
EOF_HEADER = 0xFE  # also the auth-switch request during authentication
ERR_HEADER = 0xFF

# Error numbers the proxy sends on its own behalf.
ER_NET_PACKET_TOO_LARGE = 1153
ER_NET_PACKETS_OUT_OF_ORDER = 1156
ER_UNKNOWN_COM_ERROR = 1047
ER_OPTION_PREVENTS_STATEMENT = 1290
ER_HANDSHAKE_ERROR = 1043
CR_SERVER_LOST = 2013


class ProtocolError(Exception):
    """A peer broke the protocol. Ends that one session; carries the ERR to send, if any."""

    def __init__(self, message: str, errno: int = ER_HANDSHAKE_ERROR, sqlstate: str = "08S01"):
        super().__init__(message)
        self.errno = errno
        self.sqlstate = sqlstate


# -- framing ------------------------------------------------------------------------------------


def packet_header(payload_length: int, sequence_id: int) -> bytes:
    """The 4-byte header of one chunk."""
    return struct.pack("<I", payload_length)[:3] + bytes((sequence_id & 0xFF,))


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(payload_length, sequence_id) of the header starting at ``pos``."""
    return buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16, buf[pos + 3]


def make_packets(payload: bytes, sequence_id: int) -> bytes:
    """Frame one logical packet, splitting it into 0xFFFFFF chunks as the protocol demands."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_CHUNK]
        out += packet_header(len(chunk), sequence_id)
        out += chunk
        sequence_id = (sequence_id + 1) & 0xFF
        pos += len(chunk)
        if len(chunk) < MAX_CHUNK:
            return bytes(out)


# -- basic types ----------------------------------------------------------------------------------


def read_length_encoded_integer(buf: bytes | memoryview, pos: int) -> tuple[int | None, int]:
    """(value, next position) of a ``int<lenenc>``; value None for the NULL marker 0xFB.

    Raises ``ProtocolError`` for the invalid prefix 0xFF and when ``buf`` ends too soon."""
    if pos >= len(buf):
        raise ProtocolError(f"length-encoded integer missing at offset {pos}")
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    size = _LENENC_SIZES.get(first)
    if size is None:
        raise ProtocolError(f"invalid length-encoded integer prefix 0xFF at offset {pos}")
    end = pos + 1 + size
    if end > len(buf):
        raise ProtocolError(f"length-encoded integer at offset {pos} cut short")
    return int.from_bytes(buf[pos + 1 : end], "little"), end


_LENENC_SIZES = {0xFC: 2, 0xFD: 3, 0xFE: 8}


def length_encoded_integer(value: int) -> bytes:
    """Encode ``int<lenenc>``."""
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def read_null_terminated(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise ProtocolError("string<NUL> without terminator")
    return bytes(buf[pos:end]), end + 1


# -- generic response packets -----------------------------------------------------------------------


def make_err_packet(sequence_id: int, errno: int, sqlstate: str, message: str) -> bytes:
    """A whole ERR packet (header included), protocol 4.1 form with SQLSTATE."""
    payload = (
        bytes((ERR_HEADER,))
        + struct.pack("<H", errno)
        + b"#"
        + sqlstate.encode("ascii")[:5].ljust(5, b"0")
        + message.encode("utf-8")
    )
    return make_packets(payload, sequence_id)


def make_ok_packet(sequence_id: int, status: int = ServerStatus.SERVER_STATUS_AUTOCOMMIT) -> bytes:
    payload = b"\x00\x00\x00" + struct.pack("<HH", status, 0)
    return make_packets(payload, sequence_id)


def parse_err_packet(payload: bytes) -> tuple[int, str, str]:
    """(errno, sqlstate, message) of an ERR payload."""
    if not payload or payload[0] != ERR_HEADER or len(payload) < 3:
        raise ProtocolError("not an ERR packet")
    errno = payload[1] | payload[2] << 8
    if len(payload) >= 9 and payload[3:4] == b"#":
        return errno, payload[4:9].decode("ascii", "replace"), payload[9:].decode("utf-8", "replace")
    return errno, "HY000", payload[3:].decode("utf-8", "replace")


def ok_status_flags(payload: bytes | memoryview) -> int:
    """``status_flags`` of an OK packet (header 0x00, or 0xFE when it ends a result set)."""
    _, pos = read_length_encoded_integer(payload, 1)  # affected_rows
    _, pos = read_length_encoded_integer(payload, pos)  # last_insert_id
    if pos + 2 > len(payload):
        raise ProtocolError("OK packet too short for status_flags")
    return payload[pos] | payload[pos + 1] << 8


def eof_status_flags(payload: bytes | memoryview) -> int:
    """``status_flags`` of a (pre-DEPRECATE_EOF) EOF packet: 0xFE, warnings(2), status(2)."""
    if len(payload) < 5:
        raise ProtocolError("EOF packet too short")
    return payload[3] | payload[4] << 8


# -- connection phase ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitialHandshake:
    """The fields of a server's Protocol::HandshakeV10 that the proxy needs."""

    protocol_version: int
    server_version: str
    connection_id: int
    capabilities: int  # including MariaDB's extended flags above bit 31
    auth_plugin_name: str


def _handshake_layout(payload: bytes) -> tuple[int, int]:
    """Offsets of (capability_flags_1, capability_flags_2) in a HandshakeV10 payload."""
    if not payload or payload[0] != 10:
        raise ProtocolError(f"unsupported handshake protocol version {payload[:1].hex() or 'none'}")
    version_end = payload.find(b"\x00", 1)
    if version_end < 0:
        raise ProtocolError("handshake: server_version without terminator")
    caps1 = version_end + 1 + 4 + 8 + 1  # thread id, auth-plugin-data-part-1, filler
    if len(payload) < caps1 + 2:
        raise ProtocolError("handshake too short")
    caps2 = caps1 + 2 + 1 + 2  # character_set, status_flags
    return caps1, caps2


def parse_initial_handshake(payload: bytes) -> InitialHandshake:
    """Parse Protocol::HandshakeV10 (MySQL and MariaDB)."""
    caps1, caps2 = _handshake_layout(payload)
    version_end = caps1 - 14
    connection_id = struct.unpack_from("<I", payload, version_end + 1)[0]
    capabilities = struct.unpack_from("<H", payload, caps1)[0]
    plugin = ""
    if len(payload) >= caps2 + 2:
        capabilities |= struct.unpack_from("<H", payload, caps2)[0] << 16
        # auth_plugin_data_len(1), reserved(6), MariaDB extended capabilities(4)
        ext_pos = caps2 + 2 + 1 + 6
        if not capabilities & Capability.CLIENT_LONG_PASSWORD and len(payload) >= ext_pos + 4:
            capabilities |= struct.unpack_from("<I", payload, ext_pos)[0] << 32
        if capabilities & Capability.CLIENT_PLUGIN_AUTH:
            if len(payload) <= caps2 + 2:
                raise ProtocolError("handshake: auth_plugin_data_len missing")
            data_len = payload[caps2 + 2]
            part2 = max(13, data_len - 8)
            name_pos = ext_pos + 4 + part2
            end = payload.find(b"\x00", name_pos)
            plugin = payload[name_pos : end if end >= 0 else len(payload)].decode("ascii", "replace")
    return InitialHandshake(
        protocol_version=payload[0],
        server_version=payload[1:version_end].decode("utf-8", "replace"),
        connection_id=connection_id,
        capabilities=capabilities,
        auth_plugin_name=plugin,
    )


def mask_initial_handshake(payload: bytes, masked: int = MASKED_CAPABILITIES) -> bytes:
    """The HandshakeV10 payload with the ``masked`` capabilities cleared; nothing else changes."""
    caps1, caps2 = _handshake_layout(payload)
    out = bytearray(payload)
    struct.pack_into("<H", out, caps1, struct.unpack_from("<H", out, caps1)[0] & ~masked & 0xFFFF)
    if len(out) >= caps2 + 2:
        upper = struct.unpack_from("<H", out, caps2)[0]
        struct.pack_into("<H", out, caps2, upper & ~(masked >> 16) & 0xFFFF)
        ext_pos = caps2 + 2 + 1 + 6
        lower = struct.unpack_from("<H", out, caps1)[0]
        if not lower & Capability.CLIENT_LONG_PASSWORD and len(out) >= ext_pos + 4:
            ext = struct.unpack_from("<I", out, ext_pos)[0]
            struct.pack_into("<I", out, ext_pos, ext & ~(masked >> 32) & 0xFFFFFFFF)
    return bytes(out)


@dataclass(frozen=True)
class HandshakeResponse:
    """What the proxy reads from a client's Protocol::HandshakeResponse41."""

    capabilities: int
    user: str
    database: str | None
    is_ssl_request: bool


def parse_handshake_response(payload: bytes) -> HandshakeResponse:
    """Parse HandshakeResponse41 (or the 32-byte SSLRequest that precedes a TLS upgrade)."""
    if len(payload) < 32:
        raise ProtocolError("handshake response too short")
    capabilities = struct.unpack_from("<I", payload, 0)[0]
    if not capabilities & Capability.CLIENT_PROTOCOL_41:
        raise ProtocolError("clients older than protocol 4.1 are not supported")
    if not capabilities & Capability.CLIENT_LONG_PASSWORD:
        capabilities |= struct.unpack_from("<I", payload, 28)[0] << 32
    if len(payload) == 32:
        return HandshakeResponse(capabilities, "", None, bool(capabilities & Capability.CLIENT_SSL))
    user_raw, pos = read_null_terminated(payload, 32)
    if capabilities & Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth_len, pos = read_length_encoded_integer(payload, pos)
        pos += auth_len or 0
    elif capabilities & Capability.CLIENT_SECURE_CONNECTION:
        if pos >= len(payload):
            raise ProtocolError("handshake response: auth response length missing")
        pos += 1 + payload[pos]
    else:
        _, pos = read_null_terminated(payload, pos)
    database = None
    if capabilities & Capability.CLIENT_CONNECT_WITH_DB and pos < len(payload):
        db_raw, pos = read_null_terminated(payload, pos)
        database = db_raw.decode("utf-8", "replace")
    return HandshakeResponse(capabilities, user_raw.decode("utf-8", "replace"), database, False)


def parse_change_user(payload: bytes, capabilities: int) -> tuple[str, str | None]:
    """(user, database) of a COM_CHANGE_USER payload (command byte included); database None
    when the client names none. ``capabilities`` are the session's: the auth response has a
    1-byte length with CLIENT_SECURE_CONNECTION (never lenenc here), else it ends with a NUL."""
    if payload[:1] != bytes((Command.COM_CHANGE_USER,)):
        raise ProtocolError("not a COM_CHANGE_USER packet")
    user_raw, pos = read_null_terminated(payload, 1)
    if capabilities & Capability.CLIENT_SECURE_CONNECTION:
        if pos >= len(payload):
            raise ProtocolError("COM_CHANGE_USER: auth response missing")
        pos += 1 + payload[pos]
    else:
        _, pos = read_null_terminated(payload, pos)
    database = None
    if pos < len(payload):
        db_raw, pos = read_null_terminated(payload, pos)
        database = db_raw.decode("utf-8", "replace") or None
    return user_raw.decode("utf-8", "replace"), database


def mask_handshake_response(payload: bytes, masked: int = MASKED_CAPABILITIES) -> bytes:
    """A HandshakeResponse41 with ``masked`` capabilities cleared (belt and braces for clients
    that ask for capabilities the server never offered them)."""
    out = bytearray(payload)
    caps = struct.unpack_from("<I", out, 0)[0]
    struct.pack_into("<I", out, 0, caps & ~masked & 0xFFFFFFFF)
    if not caps & Capability.CLIENT_LONG_PASSWORD and len(out) >= 32:
        ext = struct.unpack_from("<I", out, 28)[0]
        struct.pack_into("<I", out, 28, ext & ~(masked >> 32) & 0xFFFFFFFF)
    return bytes(out)
