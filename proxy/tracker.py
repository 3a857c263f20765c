"""Per-session protocol state machine: where each command's response ends, and what the session is.

Pure and synchronous: it is fed the bytes each side sends and says what may be forwarded; it
never touches a socket. The relay owns one tracker per client session.

What it knows at every moment: the phase (handshake, authentication, commands), which commands
are waiting for a response (clients may pipeline), whether the session is idle or busy, the
server's status flags (so: inside a transaction or not), the server connection id, user and
current database. It frames packets (including 16 MiB+ logical packets), checks sequence ids,
enforces ``max_allowed_packet`` on client packets, and raises ``ProtocolError`` on anything
malformed, which ends that one session.

Direction rules:
  * server -> client: every byte is forwarded as soon as it arrives (``feed_server`` returns the
    same object it was given); the tracker only keeps a copy of a packet it must read whole.
  * client -> server: a new command is forwarded only once ``may_start_command()`` allows it; a
    command that arrives while the gate is closed is held whole, and ``release()`` hands it back.
    Commands with no response (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT) are never
    held: the client does not wait for them, so an ERR sent in their place after the hold
    timeout would be read as the answer to the client's next command.

What the session's capabilities change (MariaDB's extended ones are relayed, not masked):
  * MARIADB_CLIENT_PROGRESS: ERR-shaped progress reports (error code 0xFFFF) may come before a
    command's answer, any number of them; each takes a sequence id, none ends the response.
  * MARIADB_CLIENT_CACHE_METADATA: every column count is followed by a metadata-follows byte;
    when it is 0 the column definitions are skipped (the client has them from the prepare).
  * MARIADB_CLIENT_STMT_BULK_OPERATIONS: COM_STMT_BULK_EXECUTE is answered like
    COM_STMT_EXECUTE (OK, ERR, or a result set for RETURNING and unit results).
COM_STMT_EXECUTE with a cursor flag: the response ends after the column definitions when the
server opened a cursor (CURSOR_EXISTS without MORE_RESULTS_EXISTS); rows then come through
COM_STMT_FETCH. COM_BINLOG_DUMP(_GTID) turns the session into phase STREAM: a plain byte
stream both ways, unread, until either side closes.

Hot path: no SQL is parsed. The only look inside a query is a cheap check whether it starts
with ``USE`` (to keep the current database without asking the server). This module is also
compiled with mypyc when the package is built (see ``setup.py`` and ``_load_native`` at the
end): the same code, run as C, costs a fraction of the interpreter's time per packet. So keep
it plain and fully annotated: typed attributes and ``Final`` constants are what mypyc makes
fast; untyped code still compiles but runs as generic object operations.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mypy_extensions import i64

from proxy.wire import (
    ER_NET_PACKET_TOO_LARGE,
    ER_NET_PACKETS_OUT_OF_ORDER,
    ER_UNKNOWN_COM_ERROR,
    MASKED_CAPABILITIES,
    MAX_CHUNK,
    Capability,
    Command,
    ProtocolError,
    ServerStatus,
    mask_handshake_response,
    mask_initial_handshake,
    parse_change_user,
    parse_handshake_response,
    parse_initial_handshake,
    read_length_encoded_integer,
)

# Session phases.
HANDSHAKE: Final = "handshake"  # waiting for the server's initial handshake
AUTH: Final = "auth"  # authentication exchange (also after COM_CHANGE_USER)
COMMAND: Final = "command"
CLOSING: Final = "closing"  # the server sent a final ERR; nothing more is expected
# A replication stream (COM_BINLOG_DUMP, COM_BINLOG_DUMP_GTID): from the command on, both
# directions are relayed as plain bytes, unread, until either side closes. The server sends
# events for as long as the client stays (a replica, ``mariadb-binlog --stop-never``); the
# session never returns to commands, so there is nothing left to track.
STREAM: Final = "stream"

# Response parsing states. A command's response is a small program over these states.
S_FIRST: Final = 0  # first packet of a result: OK | ERR | LOCAL INFILE | column count
S_COLDEFS: Final = 1  # `remaining` column definitions to go
S_COLEOF: Final = 2  # the EOF after column definitions (no CLIENT_DEPRECATE_EOF)
S_ROWS: Final = 3  # rows until EOF/OK (0xFE) or ERR
S_PREPARE: Final = 4  # COM_STMT_PREPARE_OK or ERR
S_SKIP: Final = 5  # `remaining` packets to pass over (param/column definitions of a prepare)
S_SINGLE: Final = 6  # exactly one packet (OK / ERR / EOF / COM_STATISTICS string)
S_FIELDS: Final = 7  # COM_FIELD_LIST: column definitions until EOF or ERR
S_AUTH: Final = 8  # authentication exchange until OK or ERR

# Plain ints on the hot path: ``int & IntFlag`` builds a new IntFlag through Flag.__rand__
# (about 1 us), and reading an enum member is an attribute lookup through the enum class;
# together that was a third of the tracker's time on point selects. ``Final`` lets the
# compiled build (see ``_load_native`` below) read them from C variables, not a module dict.
_IN_TRANS: Final = int(ServerStatus.SERVER_STATUS_IN_TRANS)
_MORE_RESULTS: Final = int(ServerStatus.SERVER_MORE_RESULTS_EXISTS)
_CURSOR_EXISTS: Final = int(ServerStatus.SERVER_STATUS_CURSOR_EXISTS)
_DEPRECATE_EOF: Final = int(Capability.CLIENT_DEPRECATE_EOF)
_PROGRESS: Final = int(Capability.MARIADB_CLIENT_PROGRESS)
_CACHE_METADATA: Final = int(Capability.MARIADB_CLIENT_CACHE_METADATA)
_COM_QUERY: Final = int(Command.COM_QUERY)
_COM_INIT_DB: Final = int(Command.COM_INIT_DB)
_COM_CHANGE_USER: Final = int(Command.COM_CHANGE_USER)
_COM_STMT_FETCH: Final = int(Command.COM_STMT_FETCH)
_COM_STMT_EXECUTE: Final = int(Command.COM_STMT_EXECUTE)
_COM_STATISTICS: Final = int(Command.COM_STATISTICS)
_MAX_CHUNK: Final = int(MAX_CHUNK)
# COM_STMT_EXECUTE's flags byte: CURSOR_TYPE_READ_ONLY | FOR_UPDATE | SCROLLABLE. The byte
# ends at offset 10 of the packet (header included), which is read before it is forwarded.
_CURSOR_TYPES: Final = 0x07
_EXECUTE_FLAGS_END: Final = 10

# Which state a command's response starts in; None = the command has no response.
_RESPONSE_START: Final[dict[int, int | None]] = {
    int(Command.COM_QUERY): S_FIRST,
    int(Command.COM_STMT_EXECUTE): S_FIRST,
    int(Command.COM_STMT_BULK_EXECUTE): S_FIRST,  # OK, or a result set (RETURNING, unit results)
    int(Command.COM_STMT_PREPARE): S_PREPARE,
    int(Command.COM_STMT_FETCH): S_ROWS,
    int(Command.COM_FIELD_LIST): S_FIELDS,
    int(Command.COM_PROCESS_INFO): S_FIRST,  # a result set, like SHOW PROCESSLIST
    int(Command.COM_CHANGE_USER): S_AUTH,
    int(Command.COM_STMT_SEND_LONG_DATA): None,
    int(Command.COM_STMT_CLOSE): None,
    int(Command.COM_QUIT): None,
}
# Commands that turn the session into a replication stream (phase STREAM).
_STREAM_COMMANDS: Final = frozenset(
    int(c) for c in (Command.COM_BINLOG_DUMP, Command.COM_BINLOG_DUMP_GTID))
# Commands that would turn the connection into something the relay cannot follow (MySQL's
# clone protocol, long-gone internals); they end the session with an ERR.
_REFUSED_COMMANDS: Final = frozenset(int(c) for c in
    {
        Command.COM_TABLE_DUMP,
        Command.COM_CONNECT_OUT,
        Command.COM_CLONE,
    }
)
# The tables above as one byte per command byte, read on every command: indexing bytes
# is one C call where a dict or frozenset lookup hashes a boxed int.
_STREAM_START: Final = 0xFD
_NO_RESPONSE: Final = 0xFE
_REFUSED: Final = 0xFF


def _command_entry(command: int) -> int:
    if command in _STREAM_COMMANDS:
        return _STREAM_START
    if command in _REFUSED_COMMANDS:
        return _REFUSED
    start = _RESPONSE_START.get(command, S_SINGLE)
    return _NO_RESPONSE if start is None else start


_COMMAND_TABLE: Final = bytes(_command_entry(c) for c in range(256))


def _ends_response(entry: PendingResponse, first: int, length: int) -> bool:
    """Whether a packet in a streaming state (rows, definitions) may end the response: an EOF
    or OK (0xFE, shorter than a chunk), an ERR, or the last definition of a prepare. All small."""
    state = entry.state
    if state in (S_ROWS, S_FIELDS):
        return (first == 0xFE or first == 0xFF) and length < _MAX_CHUNK
    return state == S_SKIP and entry.remaining == 1


def _is_progress_report(buf: bytes, start: int, length: int) -> bool:
    """MARIADB_CLIENT_PROGRESS: a progress report is ERR-shaped (0xFF) with error code 0xFFFF,
    then 1, stage, max_stage, progress (3 bytes), a lenenc status string. The server sends any
    number of them before a long command's answer (ALTER TABLE, LOAD DATA, ...); each takes a
    sequence id; none ends the response."""
    return (length >= 3 and start + 2 < len(buf)  # a partial packet in a streaming state
            and buf[start + 1] == 0xFF and buf[start + 2] == 0xFF)


def _skip_length_encoded_integer(buf: bytes, pos: int) -> int:
    """Where the ``int<lenenc>`` at ``pos`` ends (the value is not needed). Same checks and
    errors as ``wire.read_length_encoded_integer``, without building a tuple: it runs twice
    on every OK packet."""
    n = len(buf)
    if pos >= n:
        raise ProtocolError(f"length-encoded integer missing at offset {pos}")
    first = buf[pos]
    if first < 0xFC:  # a 1-byte value, or the NULL marker 0xFB
        return pos + 1
    if first == 0xFF:
        raise ProtocolError(f"invalid length-encoded integer prefix 0xFF at offset {pos}")
    end = pos + (3 if first == 0xFC else 4 if first == 0xFD else 9)
    if end > n:
        raise ProtocolError(f"length-encoded integer at offset {pos} cut short")
    return end


class PendingResponse:
    """One command waiting for (the rest of) its response."""

    __slots__ = ("command", "state", "remaining", "next_seq", "new_database", "new_login",
                 "cursor")

    def __init__(self, command: int, state: int, next_seq: int):
        self.command = command
        self.state = state
        self.remaining = 0
        self.next_seq = next_seq  # sequence id the next packet of this exchange must carry
        self.new_database: str | None = None  # set by COM_INIT_DB / USE, applied on OK
        # COM_CHANGE_USER: (user, database) applied on its OK only; after an ERR the server
        # keeps the session as it was.
        self.new_login: tuple[str, str | None] | None = None
        # COM_STMT_EXECUTE with a cursor flag: the server may open a cursor and send no rows.
        self.cursor = False


class SessionTracker:
    """Protocol state of one client session; see the module docstring."""

    def __init__(self, max_allowed_packet: int = 1 << 30):
        self.max_allowed_packet = max_allowed_packet
        self.phase = HANDSHAKE
        self.status_flags = 0
        self.connection_id: int | None = None
        self.server_version = ""
        self.user = ""
        self.database: str | None = None
        self.capabilities = 0  # effective: what the client asked for of what we advertised
        self.deprecate_eof = False
        self.progress_reports = False  # MARIADB_CLIENT_PROGRESS: see _server_packet
        self.cache_metadata = False  # MARIADB_CLIENT_CACHE_METADATA: see _first_result_packet
        # Responses owed: the oldest in ``_head``, any later ones (pipelining clients) queued
        # behind it. Not a deque: compiled by mypyc, every test and read of a deque goes
        # through the generic object protocol, and a list shrinks and regrows its storage for
        # every command; a field is one load. callgrind, point select: 14,300 -> 12,350 user
        # instructions per query (a bare uvloop byte relay: 8,430).
        self._head: PendingResponse | None = None
        self._queued: list[PendingResponse] = []
        self.commands_started = 0
        # server -> client framing
        self._s_buf = b""  # a partial header or a partial packet that must be read whole
        self._s_skip = 0  # payload bytes of the current chunk still to pass over
        self._s_cont = False  # the current logical packet continues in another chunk
        # client -> server framing
        self._c_buf = b""  # bytes not yet forwarded: an undecided packet start, or held
        self._c_skip = 0
        self._c_cont: PendingResponse | None = None  # exchange of a chunk still continuing
        self._c_total = 0  # size of the client's current logical packet so far
        self._c_infile: PendingResponse | None = None  # LOCAL INFILE upload in progress
        self.held_by_gate = False
        self._server_capabilities = 0
        # Off in a compressed session (proxy/compression.py): there the peers number and check
        # the compressed packets; the plain sequence ids inside jump when a side flushes, and
        # neither peer checks them. Read only when a sequence id is out of order.
        self.check_sequence_ids = True

    # -- what the session is ------------------------------------------------------------------
    @property
    def pending(self) -> list[PendingResponse]:
        """The responses the server still owes, oldest first."""
        return [] if self._head is None else [self._head, *self._queued]

    @property
    def in_transaction(self) -> bool:
        return bool(self.status_flags & _IN_TRANS)

    @property
    def busy(self) -> bool:
        """A command is in flight: sent (or being sent) and its response not complete.

        The response is complete only once the last byte of its last packet has arrived: the
        packet that ends it is recognised by its first byte, and the rest may still be on the
        way (``_s_skip``, ``_s_buf``, ``_s_cont``).

        A replication stream is never busy: it runs no statement, and it would never end; a
        backtrack's drain does not wait for it (its ``drop_all`` closes it like any other)."""
        if self.phase == STREAM:
            return False
        return bool(
            self._head is not None or self._c_infile or self._c_skip or self._c_cont
            or (self._c_buf and not self.held_by_gate)
            or self._s_skip or self._s_buf or self._s_cont
        )

    @property
    def expected_server_seq(self) -> int | None:
        """Sequence id for an ERR the proxy injects in place of the server's next packet,
        or None when the client is not waiting at a packet boundary. During authentication or
        a LOCAL INFILE upload it may be the client's turn: it reads only after sending its own
        packet, then rejects the ERR's sequence id, so a plain lost connection is the answer."""
        head = self._head
        if (head is not None and self.phase != AUTH and self.phase != STREAM and not self._c_infile
                and not self._s_skip and not self._s_cont and not self._s_buf):
            return head.next_seq
        return None

    # -- server -> client -----------------------------------------------------------------------
    def feed_server(self, data: bytes) -> bytes:
        """Scan bytes from the server; returns the bytes to send to the client (normally
        ``data`` itself; the initial handshake comes back with capabilities masked)."""
        phase = self.phase
        if phase == HANDSHAKE:
            return self._feed_server_handshake(data)
        if phase == STREAM:
            return data
        pos = 0
        n = len(data)
        skip = self._s_skip
        if skip:
            if skip >= n:
                self._s_skip = skip - n
                return data
            pos = skip
            self._s_skip = 0
        if self._s_buf:
            buf = self._s_buf + data[pos:]
            self._s_buf = b""
            pos = 0
            n = len(buf)
        else:
            buf = data
        while pos < n:
            cont = self._s_cont
            head = self._head  # read again each turn: a packet may complete it
            if head is not None and not cont:
                state = head.state
                if (state == S_ROWS and n - pos > 64) or (
                    state in (S_COLDEFS, S_SKIP) and head.remaining > 1
                ):
                    pos = self._pass_plain_packets(head, buf, pos, n)
                    if pos >= n:
                        break
            if n - pos < 4:
                self._s_buf = buf[pos:]
                break
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            end = pos + 4 + length
            if cont:  # continuation chunk of a big packet: framing only
                entry = head
                if entry is None:  # cannot happen: only a pending response's packet continues
                    raise ProtocolError("server continued a packet of no response")
                if seq != entry.next_seq and self.check_sequence_ids:
                    raise ProtocolError(
                        f"server sent sequence id {seq}, expected {entry.next_seq}",
                        ER_NET_PACKETS_OUT_OF_ORDER,
                    )
                entry.next_seq = (seq + 1) & 0xFF
                self._s_cont = length == _MAX_CHUNK
            else:
                entry = head
                if entry is None:
                    self._unsolicited_server_packet(buf, pos, length)
                    if end > n:
                        self._s_skip = end - n
                        break
                    pos = end
                    continue
                if seq != entry.next_seq and self.check_sequence_ids:
                    raise ProtocolError(
                        f"server sent sequence id {seq}, expected {entry.next_seq}",
                        ER_NET_PACKETS_OUT_OF_ORDER,
                    )
                entry.next_seq = (seq + 1) & 0xFF
                if length:
                    if end > n:
                        state = entry.state
                        if (
                            state in (S_FIRST, S_COLEOF, S_PREPARE, S_SINGLE, S_AUTH)
                            or n - pos == 4
                            or _ends_response(entry, buf[pos + 4], length)
                        ):
                            # Must read it whole (or cannot even see its first byte): keep a
                            # copy and undo the sequence bookkeeping until the rest arrives.
                            # A packet that ends the response is read whole too, so that the
                            # response is complete exactly when its last byte has arrived.
                            entry.next_seq = seq
                            self._s_buf = buf[pos:]
                            break
                    self._server_packet(entry, buf, pos + 4, length)
                self._s_cont = length == _MAX_CHUNK
                if self._s_cont and self._head is not entry:
                    # Only rows (and LOCAL INFILE names) are that big, never a last packet.
                    raise ProtocolError("server ended a response with a packet of 16 MiB or more")
            if end > n:
                self._s_skip = end - n
                break
            pos = end
        return data

    def _pass_plain_packets(self, entry: PendingResponse, buf: bytes, pos: int, n: int) -> int:
        """Fast path: pass over whole rows, column definitions and prepare definitions that
        neither end nor change the response; returns where the general path takes over (at the
        first packet that is partial, big, out of sequence, terminal, or the last of a count).
        A header and one byte test per row: rows are most of the packets relayed.

        Its counters are ``i64`` for mypyc: plain C integers instead of tagged Python ints
        (user-space instructions per sysbench read_write query through the relay, callgrind:
        16,600 -> 14,900). Pure Python ignores the annotations."""
        at: i64 = pos
        size: i64 = n
        seq: i64 = entry.next_seq
        counting = entry.state != S_ROWS
        remaining: i64 = entry.remaining
        while size - at >= 5:
            length: i64 = buf[at] | buf[at + 1] << 8 | buf[at + 2] << 16
            end: i64 = at + 4 + length
            if end > size or length == _MAX_CHUNK or not length or buf[at + 3] != seq:
                break
            if counting:
                if remaining <= 1:
                    break
                remaining -= 1
            elif buf[at + 4] >= 0xFE:  # EOF/OK (0xFE) or ERR (0xFF) may end the rows
                break
            seq = (seq + 1) & 0xFF
            at = end
        entry.next_seq = int(seq)
        entry.remaining = int(remaining)
        return int(at)

    def _server_packet(self, entry: PendingResponse, buf: bytes, start: int, length: int) -> None:
        """Advance ``entry`` by one server packet whose payload starts at ``buf[start]``."""
        state = entry.state
        first = buf[start]
        if first == 0xFF and self.progress_reports and _is_progress_report(buf, start, length):
            return  # the response goes on; the report took a sequence id, nothing else
        if state == S_ROWS:
            if first == 0xFE and length < _MAX_CHUNK:
                flags = self._terminator_flags(buf, start, length)
                if flags & _MORE_RESULTS and entry.command != _COM_STMT_FETCH:
                    entry.state = S_FIRST
                else:
                    self._complete(entry)
            elif first == 0xFF:
                self._complete(entry)
        elif state == S_FIELDS:
            if first == 0xFE and length < _MAX_CHUNK:
                self._terminator_flags(buf, start, length)
                self._complete(entry)
            elif first == 0xFF:
                self._complete(entry)
        elif state == S_COLDEFS:
            entry.remaining -= 1
            if not entry.remaining:
                entry.state = S_ROWS if self.deprecate_eof else S_COLEOF
        elif state == S_FIRST:
            self._first_result_packet(entry, buf, start, length, first)
        elif state == S_COLEOF:
            if first == 0xFF:
                self._complete(entry)
            elif first == 0xFE:
                flags = self._terminator_flags(buf, start, length)
                entry.state = S_ROWS
                # A cursor was opened: rows come later through COM_STMT_FETCH. Only when the
                # client asked for one, and never with more results to come: inside a CALL or
                # a BEGIN NOT ATOMIC block, a cursor the stored program itself opened sets
                # CURSOR_EXISTS on its result sets too, and their rows follow at once.
                if entry.cursor and flags & _CURSOR_EXISTS and not flags & _MORE_RESULTS:
                    self._complete(entry)
            else:
                raise ProtocolError(f"expected EOF after column definitions, got 0x{first:02x}")
        elif state == S_SKIP:
            entry.remaining -= 1
            if not entry.remaining:
                self._complete(entry)
        elif state == S_PREPARE:
            self._prepare_response(entry, buf, start, length, first)
        elif state == S_SINGLE:
            if first == 0x00:
                self._ok(entry, buf, start, length)
            elif first == 0xFE and entry.command != _COM_STATISTICS:
                # COM_SET_OPTION / COM_DEBUG: an EOF, or with CLIENT_DEPRECATE_EOF an OK
                # packet with the 0xFE header (whose status is not always at offset 3).
                self._terminator_flags(buf, start, length)
            self._complete(entry)
        elif state == S_AUTH:
            if first == 0x00:
                self._ok(entry, buf, start, length)
                if entry.new_login is not None:
                    self.user, self.database = entry.new_login
                self.phase = COMMAND
                self._complete(entry)
            elif first == 0xFF:
                # A failed login ends the connection; a failed COM_CHANGE_USER does not.
                self.phase = CLOSING if entry.command == -1 else COMMAND
                self._complete(entry)
            # 0x01 auth-more-data and 0xFE auth-switch: the client answers; keep going.

    def _first_result_packet(self, entry: PendingResponse, buf: bytes, start: int, length: int,
                             first: int) -> None:
        if first == 0x00:
            flags = self._ok(entry, buf, start, length)
            if not flags & _MORE_RESULTS:
                self._complete(entry)
        elif first == 0xFF:
            self._complete(entry)
        elif first == 0xFB:
            self._c_infile = entry  # the client now uploads the file, then the server answers
        elif first == 0xFE:
            # COM_SET_OPTION / COM_DEBUG answer with an EOF packet.
            if length >= 5:
                self._set_status(buf[start + 3] | buf[start + 4] << 8)
            self._complete(entry)
        else:
            if first < 0xFB:  # a 1-byte column count: nearly always
                count, end = first, start + 1
            else:
                value, end = read_length_encoded_integer(buf, start)
                count = value or 0
            if end > start + length:
                raise ProtocolError("column count cut short")
            if not count:
                raise ProtocolError("result set with no columns")
            if self.cache_metadata:
                # MARIADB_CLIENT_CACHE_METADATA: a "metadata follows" byte after the count; 0
                # when the client has the column definitions of this prepared statement
                # already: none are sent (the EOF after them still is, without DEPRECATE_EOF).
                if end >= start + length:
                    raise ProtocolError("metadata-follows flag missing")
                if not buf[end]:
                    entry.state = S_ROWS if self.deprecate_eof else S_COLEOF
                    return
            entry.remaining = count
            entry.state = S_COLDEFS

    def _prepare_response(self, entry: PendingResponse, buf: bytes, start: int, length: int,
                          first: int) -> None:
        if first == 0xFF:
            self._complete(entry)
            return
        if first != 0x00 or length < 12:
            raise ProtocolError(f"malformed COM_STMT_PREPARE response (0x{first:02x}, {length} bytes)")
        num_columns = buf[start + 5] | buf[start + 6] << 8
        num_params = buf[start + 7] | buf[start + 8] << 8
        follow = num_params + num_columns
        if not self.deprecate_eof:
            follow += (num_params > 0) + (num_columns > 0)
        if follow:
            entry.state = S_SKIP
            entry.remaining = follow
        else:
            self._complete(entry)

    def _terminator_flags(self, buf: bytes, start: int, length: int) -> int:
        if self.deprecate_eof:
            pos = _skip_length_encoded_integer(buf, start + 1)
            pos = _skip_length_encoded_integer(buf, pos)
            if pos + 2 > start + length:
                raise ProtocolError("OK packet too short")
            return self._set_status(buf[pos] | buf[pos + 1] << 8)
        if length < 5:
            raise ProtocolError("EOF packet too short")
        return self._set_status(buf[start + 3] | buf[start + 4] << 8)

    def _ok(self, entry: PendingResponse, buf: bytes, start: int, length: int) -> int:
        pos = _skip_length_encoded_integer(buf, start + 1)  # affected_rows
        pos = _skip_length_encoded_integer(buf, pos)  # last_insert_id
        if pos + 2 > start + length:  # bounded by this packet, not by what follows it
            raise ProtocolError("OK packet too short")
        if entry.new_database is not None:
            self.database = entry.new_database
            entry.new_database = None
        return self._set_status(buf[pos] | buf[pos + 1] << 8)

    def _set_status(self, flags: int) -> int:
        self.status_flags = flags
        return flags

    def _owe(self, entry: PendingResponse) -> None:
        """The server will answer ``entry`` after every response already owed."""
        if self._head is None:
            self._head = entry
        else:
            self._queued.append(entry)

    def _complete(self, entry: PendingResponse) -> None:
        if self._head is entry:
            queued = self._queued
            self._head = queued.pop(0) if queued else None
        if self._c_infile is entry:
            self._c_infile = None

    def _unsolicited_server_packet(self, buf: bytes, pos: int, length: int) -> None:
        # Servers announce a kill or a timeout with an ERR nobody asked for, then close.
        if length and pos + 4 < len(buf) and buf[pos + 4] == 0xFF:
            self.phase = CLOSING
            return
        raise ProtocolError("server sent a packet while no command was waiting for one")

    def _feed_server_handshake(self, data: bytes) -> bytes:
        buf = self._s_buf + data
        if len(buf) < 4:
            self._s_buf = buf
            return b""
        length = buf[0] | buf[1] << 8 | buf[2] << 16
        if len(buf) < 4 + length:
            self._s_buf = buf
            return b""
        self._s_buf = b""
        payload = buf[4 : 4 + length]
        if len(buf) > 4 + length:
            raise ProtocolError("server sent more than its handshake before the client answered")
        if payload[:1] == b"\xff":  # e.g. "Too many connections": pass it on, then close
            self.phase = CLOSING
            return buf
        handshake = parse_initial_handshake(payload)
        self.connection_id = handshake.connection_id
        self.server_version = handshake.server_version
        self._server_capabilities = handshake.capabilities & ~MASKED_CAPABILITIES
        self.phase = AUTH
        self._owe(PendingResponse(-1, S_AUTH, (buf[3] + 1) & 0xFF))
        masked = mask_initial_handshake(payload)
        return buf[:4] + masked

    # -- client -> server ---------------------------------------------------------------------------
    def adopt_capabilities(self, capabilities: int) -> None:
        """The session's negotiated capabilities and the framing rules that follow from them;
        also called by the TLS login (proxy/tlslogin.py), which follows the login instead."""
        self.capabilities = capabilities
        self.deprecate_eof = bool(capabilities & _DEPRECATE_EOF)
        self.progress_reports = bool(capabilities & _PROGRESS)
        self.cache_metadata = bool(capabilities & _CACHE_METADATA)

    def feed_client(self, data: bytes, may_start_command: Callable[[], bool] | None = None) -> bytes:
        """Scan bytes from the client; returns the bytes that may go to the server now.

        Anything not returned is kept: the start of a packet not yet decidable, or a command held
        because ``may_start_command()`` said no (then ``held_by_gate`` is set)."""
        phase = self.phase
        if phase == HANDSHAKE:
            raise ProtocolError("client spoke before the server's handshake")
        if phase == STREAM:
            return data
        buf = self._c_buf + data if self._c_buf else data
        self._c_buf = b""
        n = len(buf)
        pos = 0
        skip = self._c_skip
        if skip:
            if skip >= n:
                self._c_skip = skip - n
                return buf
            pos = skip
            self._c_skip = 0
        while pos < n:
            # Wait for a header, and for the first payload byte unless the packet is empty.
            if n - pos < 5 and (n - pos < 4 or buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16):
                self._c_buf = buf[pos:]
                return buf[:pos]
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            end = pos + 4 + length
            entry = self._c_cont or self._c_infile
            if entry is not None or self.phase == AUTH:
                if entry is None:
                    entry = self._head
                    if entry is None:
                        raise ProtocolError("client sent data during authentication unasked")
                    if self._needs_whole_auth_packet(entry) and end > n:
                        self._c_buf = buf[pos:]
                        return buf[:pos]
                    buf = self._client_auth_packet(entry, buf, pos, length, seq)
                else:
                    self._client_follow_up(entry, length, seq)
            else:
                if (may_start_command is not None and not may_start_command()
                        and expects_response(buf, pos, length)):
                    self.held_by_gate = True
                    self._c_buf = buf[pos:]
                    return buf[:pos]
                if self._new_command(buf, pos, length, seq, end > n):
                    self._c_buf = buf[pos:]  # must see this command whole first
                    return buf[:pos]
            if end > n:
                self._c_skip = end - n
                return buf
            pos = end
            if self.phase == STREAM:  # what follows a dump command is relayed unread
                return buf
        return buf

    def release(self) -> bytes:
        """After the gate reopens: the held bytes, scanned again with the gate open."""
        self.held_by_gate = False
        held, self._c_buf = self._c_buf, b""
        return self.feed_client(held) if held else b""

    def take_held_command(self) -> bool:
        """Drop a held command that waited too long; True if it was whole (the session can go
        on after an ERR), False if part of it is still to come (the session must end)."""
        held = self._c_buf
        self.held_by_gate = False
        if len(held) < 4:
            return False
        length = held[0] | held[1] << 8 | held[2] << 16
        if length >= _MAX_CHUNK or len(held) < 4 + length:
            return False
        self._c_buf = b""
        rest = held[4 + length :]
        if rest:
            self._c_buf = rest
            self.held_by_gate = True
        return True

    def _new_command(self, buf: bytes, pos: int, length: int, seq: int, partial: bool) -> bool:
        """Start a command; returns True if it must be seen whole before it is forwarded."""
        if seq != 0:
            raise ProtocolError(f"command packet with sequence id {seq}, expected 0",
                                ER_NET_PACKETS_OUT_OF_ORDER)
        if not length:
            raise ProtocolError("empty command packet", ER_UNKNOWN_COM_ERROR)
        command = buf[pos + 4]
        start_state = _COMMAND_TABLE[command]
        if start_state == _REFUSED:
            raise ProtocolError(
                f"auroratrack does not relay command 0x{command:02x}", ER_UNKNOWN_COM_ERROR
            )
        # Checked before anything is held: a declared length is refused at once.
        self._check_size(length, first_chunk=True)
        # Small commands whose content we read are seen whole before they go on.
        if partial and (
            command in (_COM_INIT_DB, _COM_CHANGE_USER)
            or (command == _COM_QUERY and length <= 512)
            or (command == _COM_STMT_EXECUTE and len(buf) - pos < _EXECUTE_FLAGS_END)
        ):
            return True
        is_use = command == _COM_QUERY and length <= 512 and starts_with_use(
            buf, pos + 5, length - 1
        )
        if start_state == _STREAM_START:
            self._start_stream()
            return False
        entry = PendingResponse(command, S_SINGLE if start_state == _NO_RESPONSE else start_state, 1)
        if start_state != _NO_RESPONSE:
            self._owe(entry)
        self.commands_started += 1
        if command == _COM_STMT_EXECUTE:
            # flags: command(1) statement_id(4) flags(1); any CURSOR_TYPE_* bit asks for one.
            entry.cursor = length >= 6 and buf[pos + 9] & _CURSOR_TYPES != 0
        elif command == _COM_INIT_DB:
            entry.new_database = bytes(buf[pos + 5 : pos + 4 + length]).decode("utf-8", "replace")
        elif is_use:
            entry.new_database = parse_use_statement(buf[pos + 5 : pos + 4 + length])
        elif command == _COM_CHANGE_USER:
            entry.new_login = parse_change_user(
                bytes(buf[pos + 4 : pos + 4 + length]), self.capabilities
            )
            self.phase = AUTH
        self._c_cont = entry if length == _MAX_CHUNK else None
        return False

    def _start_stream(self) -> None:
        """COM_BINLOG_DUMP(_GTID): the rest of the session is a plain byte stream. Responses
        still owed to earlier (pipelined) commands come first in it and are relayed unread."""
        self.phase = STREAM
        self.commands_started += 1
        self._head = None
        self._queued = []
        self._c_cont = None
        self._c_infile = None
        self._s_buf = b""
        self._s_skip = 0
        self._s_cont = False

    def _client_follow_up(self, entry: PendingResponse, length: int, seq: int) -> None:
        """A continuation chunk, or a LOCAL INFILE data packet."""
        if seq != entry.next_seq and self.check_sequence_ids:
            raise ProtocolError(f"client sent sequence id {seq}, expected {entry.next_seq}",
                                ER_NET_PACKETS_OUT_OF_ORDER)
        entry.next_seq = (seq + 1) & 0xFF
        if self._c_cont is entry:
            self._check_size(length, first_chunk=False)
            if length < _MAX_CHUNK:
                self._c_cont = None
        elif length == 0:  # the empty packet that ends a LOCAL INFILE upload
            self._c_infile = None
            # The server's answer continues the same exchange; the entry stays pending.
            self._c_infile_done(entry)

    def _c_infile_done(self, entry: PendingResponse) -> None:
        entry.state = S_FIRST

    def _check_size(self, length: int, first_chunk: bool) -> None:
        self._c_total = length if first_chunk else self._c_total + length
        if self._c_total > self.max_allowed_packet:
            raise ProtocolError(
                f"client packet of {self._c_total}+ bytes exceeds max_allowed_packet "
                f"({self.max_allowed_packet})",
                ER_NET_PACKET_TOO_LARGE,
            )

    def _needs_whole_auth_packet(self, entry: PendingResponse) -> bool:
        return entry.command == -1 and self.capabilities == 0

    def _client_auth_packet(self, entry: PendingResponse, buf: bytes, pos: int, length: int,
                            seq: int) -> bytes:
        """A client packet during authentication; the first is the handshake response."""
        if seq != entry.next_seq and self.check_sequence_ids:
            raise ProtocolError(f"client sent sequence id {seq}, expected {entry.next_seq}",
                                ER_NET_PACKETS_OUT_OF_ORDER)
        entry.next_seq = (seq + 1) & 0xFF
        if entry.command == -1 and self.capabilities == 0:
            payload = bytes(buf[pos + 4 : pos + 4 + length])
            response = parse_handshake_response(payload)
            if response.is_ssl_request:
                raise ProtocolError(
                    "auroratrack offers no TLS here (--client-tls disabled): connect without SSL "
                    "(e.g. --ssl-mode=DISABLED / ssl_disabled=True)", 2026, "HY000",
                )
            self.adopt_capabilities(response.capabilities & self._server_capabilities)
            self.user = response.user
            self.database = response.database
            masked = mask_handshake_response(payload)
            if masked != payload:
                buf = buf[: pos + 4] + masked + buf[pos + 4 + length :]
        return buf


def expects_response(buf: bytes, pos: int, length: int) -> bool:
    """Whether the server answers the command packet at ``buf[pos]`` (header included)."""
    return not length or _COMMAND_TABLE[buf[pos + 4]] != _NO_RESPONSE


def starts_with_use(buf: bytes, start: int, size: int) -> bool:
    """Whether a query starts with the keyword USE (cheap: three bytes and a separator)."""
    if size < 5:
        return False
    return buf[start] | 0x20 == 0x75 and bytes(buf[start : start + 3]).lower() == b"use" and (
        buf[start + 3] in b" \t\r\n`"
    )


def parse_use_statement(query: bytes) -> str | None:
    """The database named by ``USE db`` / ``USE `db` ``, or None if it is not that simple."""
    text = bytes(query).decode("utf-8", "replace").strip().rstrip(";").strip()
    parts = text.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "use":
        return None
    name = parts[1].strip()
    if name.startswith("`") and name.endswith("`") and len(name) >= 2:
        return name[1:-1].replace("``", "`")
    return name if name and " " not in name else None


# -- the compiled build -------------------------------------------------------------------------

log = logging.getLogger(__name__)
# What the compiled module replaces: everything the relay and the tests use on the hot path.
_NATIVE_NAMES: Final = ("PendingResponse", "SessionTracker", "expects_response",
                        "starts_with_use", "parse_use_statement")
NATIVE_MODULE: Final = "proxy._tracker_native"


def _load_native() -> str:
    """Swap in the mypyc-compiled build of this module (``setup.py`` makes it from a stamped
    copy of this file) when it exists and was built from exactly this source; returns which
    implementation runs. A build from another version of the file is ignored with a warning,
    so an edited tracker is never shadowed by a stale extension."""
    if __name__ != "proxy.tracker":
        return "compiled"  # this is the compiled copy itself
    if os.environ.get("AURORATRACK_PURE_PYTHON"):
        return "pure Python (AURORATRACK_PURE_PYTHON is set)"
    try:
        native = importlib.import_module(NATIVE_MODULE)
    except ImportError:
        return "pure Python (no compiled build)"
    with open(__file__, "rb") as source:
        digest = hashlib.sha256(source.read()).hexdigest()
    if getattr(native, "_SOURCE_DIGEST", None) != digest:
        log.warning("the compiled tracker (%s) was built from another version of %s and is "
                    "ignored; `pip install -e .` rebuilds it", getattr(native, "__file__", NATIVE_MODULE), __file__)
        return "pure Python (the compiled build is stale)"
    namespace = globals()
    for name in _NATIVE_NAMES:
        namespace[name] = getattr(native, name)
    return "compiled"


IMPLEMENTATION: Final = _load_native()
