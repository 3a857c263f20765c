"""A minimal MySQL protocol client over a plain socket, for the commands no driver exposes.

Test helper only (integration tests of the proxy): it frames packets, logs in with
``mysql_native_password`` (following an auth switch to it), sends any command byte with any
sequence id, and reads responses with its own small parser, written independently of
``proxy.tracker`` so that the two can check each other. Nothing here is a mock: it talks to the
real server through the real proxy (or directly).
"""

from __future__ import annotations

import hashlib
import socket
import struct
from dataclasses import dataclass, field

# Capability flags (protocol documentation names).
CLIENT_LONG_PASSWORD = 1 << 0
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_SSL = 1 << 11
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
CLIENT_DEPRECATE_EOF = 1 << 24

BASE_CAPABILITIES = (
    CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_LOCAL_FILES | CLIENT_PROTOCOL_41
    | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS | CLIENT_PS_MULTI_RESULTS | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)

SERVER_STATUS_IN_TRANS = 0x0001
SERVER_MORE_RESULTS_EXISTS = 0x0008
SERVER_STATUS_CURSOR_EXISTS = 0x0040
SERVER_STATUS_LAST_ROW_SENT = 0x0080

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_FIELD_LIST = 0x04
COM_STATISTICS = 0x09
COM_PROCESS_KILL = 0x0C
COM_PING = 0x0E
COM_CHANGE_USER = 0x11
COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17
COM_STMT_SEND_LONG_DATA = 0x18
COM_STMT_CLOSE = 0x19
COM_STMT_RESET = 0x1A
COM_SET_OPTION = 0x1B
COM_STMT_FETCH = 0x1C
COM_RESET_CONNECTION = 0x1F

CURSOR_TYPE_READ_ONLY = 0x01


class ServerError(Exception):
    """The server (or the proxy in its place) answered with an ERR packet."""

    def __init__(self, errno: int, sqlstate: str, message: str):
        super().__init__(f"({errno}, {sqlstate}) {message}")
        self.errno = errno
        self.sqlstate = sqlstate
        self.message = message


class ConnectionClosed(Exception):
    """The peer closed the socket."""


@dataclass
class Result:
    """One result of a command: an OK (``columns == 0``) or a result set."""

    status: int
    columns: int = 0
    rows: list[bytes] = field(default_factory=list)  # raw row payloads
    affected_rows: int = 0
    info: bytes = b""


def native_password_scramble(password: str, nonce: bytes) -> bytes:
    """``mysql_native_password``: SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password.encode()).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mix = hashlib.sha1(nonce[:20] + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


def lenenc(value: int) -> bytes:
    """Encode ``int<lenenc>``."""
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + value.to_bytes(2, "little")
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


def read_lenenc(buf: bytes, pos: int) -> tuple[int | None, int]:
    """Decode ``int<lenenc>`` at ``pos``; None for the NULL marker."""
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}[first]
    return int.from_bytes(buf[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def frame(payload: bytes, seq: int) -> bytes:
    """Frame a logical packet, split into 0xFFFFFF chunks."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos : pos + 0xFFFFFF]
        out += len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,)) + chunk
        seq += 1
        pos += len(chunk)
        if len(chunk) < 0xFFFFFF:
            return bytes(out)


def text_row_values(payload: bytes, columns: int) -> list[bytes | None]:
    """The column values of a text-protocol row."""
    values: list[bytes | None] = []
    pos = 0
    for _ in range(columns):
        size, pos = read_lenenc(payload, pos)
        if size is None:
            values.append(None)
        else:
            values.append(payload[pos : pos + size])
            pos += size
    return values


class RawConnection:
    """One MySQL session over a raw socket; every method does exactly one protocol step."""

    def __init__(self, host: str, port: int, timeout: float = 20.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.seq = 0
        self.capabilities = 0
        self.server_capabilities = 0
        self.status = 0
        self.connection_id = 0
        self.handshake_payload = b""
        self._buf = bytearray()

    # -- framing ----------------------------------------------------------------------------
    def _recv_exact(self, size: int) -> bytes:
        while len(self._buf) < size:
            chunk = self.sock.recv(max(65536, size - len(self._buf)))
            if not chunk:
                raise ConnectionClosed(f"peer closed after {len(self._buf)} of {size} bytes")
            self._buf += chunk
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def read_packet(self) -> bytes:
        """One logical packet (chunks joined); ``self.seq`` becomes the next expected id."""
        payload = b""
        while True:
            header = self._recv_exact(4)
            length = int.from_bytes(header[:3], "little")
            self.seq = (header[3] + 1) & 0xFF
            payload += self._recv_exact(length)
            if length < 0xFFFFFF:
                return payload

    def send_packet(self, payload: bytes, seq: int | None = None) -> None:
        """Send one logical packet with ``seq`` (default: the next id of this exchange)."""
        seq = self.seq if seq is None else seq
        self.sock.sendall(frame(payload, seq))
        self.seq = (seq + (len(payload) // 0xFFFFFF) + 1) & 0xFF

    def send_command(self, command: int, body: bytes = b"") -> None:
        self.send_packet(bytes((command,)) + body, seq=0)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the peer closes the socket (after any bytes still in flight)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection phase -----------------------------------------------------------------------
    def read_handshake(self) -> bytes:
        """Read the server's HandshakeV10; returns the 20-byte nonce."""
        payload = self.read_packet()
        if payload[:1] == b"\xff":
            raise ServerError(*parse_err(payload))
        self.handshake_payload = payload
        pos = payload.index(b"\x00", 1) + 1
        self.connection_id = struct.unpack_from("<I", payload, pos)[0]
        nonce = payload[pos + 4 : pos + 12]
        pos += 4 + 8 + 1
        caps = struct.unpack_from("<H", payload, pos)[0]
        pos += 2 + 1 + 2
        caps |= struct.unpack_from("<H", payload, pos)[0] << 16
        self.server_capabilities = caps
        data_len = payload[pos + 2]
        pos += 2 + 1 + 10
        nonce += payload[pos : pos + max(13, data_len - 8) - 1]
        return nonce

    def handshake_response(self, user: str, auth: bytes, database: str | None,
                           capabilities: int) -> bytes:
        """A HandshakeResponse41 payload."""
        if database:
            capabilities |= CLIENT_CONNECT_WITH_DB
        out = struct.pack("<IIB23s", capabilities, 1 << 24, 45, b"") + user.encode() + b"\x00"
        out += lenenc(len(auth)) + auth
        if database:
            out += database.encode() + b"\x00"
        return out + b"mysql_native_password\x00"

    def login(self, user: str, password: str, database: str | None = None,
              deprecate_eof: bool = True, capabilities: int = BASE_CAPABILITIES) -> None:
        """Handshake and authenticate with mysql_native_password; raises ServerError on ERR."""
        nonce = self.read_handshake()
        if deprecate_eof:
            capabilities |= CLIENT_DEPRECATE_EOF
        self.capabilities = capabilities & (self.server_capabilities | CLIENT_CONNECT_WITH_DB)
        self.send_packet(self.handshake_response(
            user, native_password_scramble(password, nonce), database, capabilities))
        self.finish_auth(password)

    def finish_auth(self, password: str) -> None:
        """Follow the authentication exchange until OK (or raise on ERR)."""
        while True:
            payload = self.read_packet()
            if payload[0] == 0x00:
                self.parse_ok(payload)
                return
            if payload[0] == 0xFF:
                raise ServerError(*parse_err(payload))
            if payload[0] == 0xFE:  # auth switch request
                end = payload.index(b"\x00", 1)
                plugin = payload[1:end]
                if plugin != b"mysql_native_password":
                    raise AssertionError(f"raw client cannot do {plugin!r}")
                self.send_packet(native_password_scramble(password, payload[end + 1 :]))
            else:
                raise AssertionError(f"unexpected auth packet {payload[:20]!r}")

    @property
    def deprecate_eof(self) -> bool:
        return bool(self.capabilities & CLIENT_DEPRECATE_EOF)

    # -- responses ---------------------------------------------------------------------------------
    def parse_ok(self, payload: bytes) -> Result:
        affected, pos = read_lenenc(payload, 1)
        _, pos = read_lenenc(payload, pos)
        self.status = struct.unpack_from("<H", payload, pos)[0]
        return Result(self.status, affected_rows=affected or 0, info=payload[pos + 4 :])

    def read_ok(self) -> Result:
        """Read an OK packet; raises ServerError on ERR."""
        payload = self.read_packet()
        if payload[0] == 0xFF:
            raise ServerError(*parse_err(payload))
        assert payload[0] == 0x00, f"expected OK, got {payload[:16]!r}"
        return self.parse_ok(payload)

    def read_rows(self, columns: int) -> Result:
        """Rows until the result set's terminator."""
        rows: list[bytes] = []
        while True:
            payload = self.read_packet()
            if payload[0] == 0xFF:
                raise ServerError(*parse_err(payload))
            if payload[0] == 0xFE and len(payload) < 0xFFFFFF:
                if self.deprecate_eof:
                    self.parse_ok(payload)
                else:
                    self.status = struct.unpack_from("<H", payload, 3)[0]
                return Result(self.status, columns, rows)
            rows.append(payload)

    def read_column_definitions(self, count: int) -> list[bytes]:
        """``count`` column definitions, and the EOF after them when DEPRECATE_EOF is off."""
        defs = [self.read_packet() for _ in range(count)]
        if not self.deprecate_eof:
            eof = self.read_packet()
            assert eof[0] == 0xFE, eof
            self.status = struct.unpack_from("<H", eof, 3)[0]
        return defs

    def read_result(self, local_file: bytes | None = None) -> Result:
        """One result: OK, a result set, or a LOCAL INFILE exchange (uploading ``local_file``)."""
        payload = self.read_packet()
        if payload[0] == 0xFF:
            raise ServerError(*parse_err(payload))
        if payload[0] == 0x00:
            return self.parse_ok(payload)
        if payload[0] == 0xFB:
            data = local_file or b""
            for pos in range(0, len(data), 16384):
                self.send_packet(data[pos : pos + 16384])
            self.send_packet(b"")
            return self.read_ok()
        columns, _ = read_lenenc(payload, 0)
        self.read_column_definitions(columns)
        if self.status & SERVER_STATUS_CURSOR_EXISTS:
            return Result(self.status, columns)
        return self.read_rows(columns)

    def read_results(self) -> list[Result]:
        """Every result of a command, following SERVER_MORE_RESULTS_EXISTS."""
        results = [self.read_result()]
        while results[-1].status & SERVER_MORE_RESULTS_EXISTS:
            results.append(self.read_result())
        return results

    def query(self, sql: str | bytes) -> list[Result]:
        """COM_QUERY and all its results."""
        self.send_command(COM_QUERY, sql.encode() if isinstance(sql, str) else sql)
        return self.read_results()

    # -- prepared statements ------------------------------------------------------------------------
    def prepare(self, sql: str) -> tuple[int, int, int]:
        """COM_STMT_PREPARE; returns (statement_id, num_columns, num_params)."""
        self.send_command(COM_STMT_PREPARE, sql.encode())
        payload = self.read_packet()
        if payload[0] == 0xFF:
            raise ServerError(*parse_err(payload))
        stmt_id, columns, params = struct.unpack_from("<IHH", payload, 1)
        for count in (params, columns):
            if count:
                self.read_column_definitions(count)
        return stmt_id, columns, params

    def execute(self, stmt_id: int, flags: int = 0, params: list[bytes | None] | None = None,
                long_data_params: int = 0) -> Result:
        """COM_STMT_EXECUTE with string parameters (or parameters sent as long data)."""
        body = struct.pack("<IBI", stmt_id, flags, 1)
        count = len(params) if params is not None else long_data_params
        if count:
            values = params or [None] * count
            null_bitmap = bytearray((count + 7) // 8)
            for i, value in enumerate(values):
                if value is None and i >= long_data_params:
                    null_bitmap[i // 8] |= 1 << (i % 8)
            body += bytes(null_bitmap) + b"\x01" + b"\xfe\x00" * count
            for value in values:
                if value is not None:
                    body += lenenc(len(value)) + value
        self.send_command(COM_STMT_EXECUTE, body)
        payload = self.read_packet()
        if payload[0] == 0xFF:
            raise ServerError(*parse_err(payload))
        if payload[0] == 0x00:
            return self.parse_ok(payload)
        columns, _ = read_lenenc(payload, 0)
        self.read_column_definitions(columns)
        if self.deprecate_eof and flags & CURSOR_TYPE_READ_ONLY:
            # With DEPRECATE_EOF, an opened cursor is announced by an OK (0xFE) packet.
            rest = self.read_rows(columns)
            assert not rest.rows
            return Result(self.status, columns)
        if self.status & SERVER_STATUS_CURSOR_EXISTS:
            return Result(self.status, columns)
        return self.read_rows(columns)

    def fetch(self, stmt_id: int, rows: int) -> Result:
        """COM_STMT_FETCH of up to ``rows`` rows from an open cursor."""
        self.send_command(COM_STMT_FETCH, struct.pack("<II", stmt_id, rows))
        return self.read_rows(0)


def parse_err(payload: bytes) -> tuple[int, str, str]:
    """(errno, sqlstate, message) of an ERR payload."""
    errno = struct.unpack_from("<H", payload, 1)[0]
    if payload[3:4] == b"#":
        return errno, payload[4:9].decode(), payload[9:].decode("utf-8", "replace")
    return errno, "HY000", payload[3:].decode("utf-8", "replace")
