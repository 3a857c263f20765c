"""The wire relay: each client session relayed to its own server connection.

``ProxyServer`` listens for clients; each accepted client gets a ``ClientSession`` that opens
one connection to the upstream server and relays bytes both ways, while its ``SessionTracker``
follows the protocol (DESIGN.md decision 1: authentication is relayed untouched, only the
capabilities the relay cannot follow are masked). The relay knows nothing of backtracks: it asks
the gate whether a command may start, and tells it when a session goes idle.

Protocol compression: when authentication ends, each session picks its steady-state handlers
once. A plain session gets the byte relay below; a session that negotiated CLIENT_COMPRESS gets
handlers that pass its compressed packets through ``proxy.compression.CompressedSession`` (the
tracker reads an inflated copy, and the DDL hook reads it too: a held DROP is held whatever the
session's framing). So compression costs a plain session nothing per read.

Why asyncio Protocols and not streams: a ``StreamReader`` relay costs a coroutine wake-up and a
buffer copy per read on each side; callbacks write the received ``bytes`` object straight to the
other transport. On this 2-core machine that difference is most of the gap to haproxy.

Failure rules: a ``ProtocolError`` or a lost peer ends that one session; the listener and other
sessions go on. A ``ProtocolError`` is told to the client with an ERR packet when it is waiting
at a packet boundary; a server that closes its side is mirrored by closing the client's side,
with nothing added (see ``server_lost``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy import wire
from proxy.compression import CompressedSession, make_compressed_packets
from proxy.ddlhold import FIRST_BYTES as DDL_FIRST_BYTES
from proxy.gate import BACKTRACKING_ERRNO, BACKTRACKING_SQLSTATE, Gate, backtracking_message
from proxy.tls import TlsPolicy
from proxy.tlslogin import SessionLogin
from proxy.tracker import AUTH, HANDSHAKE, STREAM, SessionTracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionInfo:
    """A snapshot of one session, for status output."""

    session_id: int
    client: str
    state: str  # "idle" / "busy" / "held" / "connecting" / "streaming" (a replication stream)
    in_transaction: bool
    server_connection_id: int | None
    user: str
    database: str | None
    started_at: float
    commands: int


class ClientSession(asyncio.Protocol):
    """The client side of one relayed session (and owner of its upstream connection)."""

    def __init__(self, proxy: ProxyServer, session_id: int):
        self.proxy = proxy
        self.gate = proxy.gate
        self.session_id = session_id
        self.tracker = SessionTracker(proxy.max_allowed_packet)
        self.started_at = time.time()
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.peer = "?"
        self.closed = False
        self._held_timer: asyncio.TimerHandle | None = None
        self._held_since = 0.0
        self._reading_paused_for = set()  # reasons: "gate", "flow"
        self._connect_task: asyncio.Task | None = None
        self.compressed: CompressedSession | None = None  # a CLIENT_COMPRESS session, once authenticated
        self.ddl_running = False  # proxy.ddlhold runs the client's statement (until ddl_done)
        self.ddl_statements: dict | None = None  # prepared statement id -> held DDL (proxy.ddlhold)
        # TLS: while set, the login is relayed leg by leg (proxy/tlslogin.py) instead of by the
        # tracker; it clears itself when the server's OK or ERR has gone to the client.
        self.login: SessionLogin | None = SessionLogin(self, proxy.tls) if proxy.tls is not None else None

    # -- what the gate and status see --------------------------------------------------------------
    @property
    def server_connection_id(self) -> int | None:
        return self.tracker.connection_id

    @property
    def busy(self) -> bool:
        return self.tracker.busy or self.ddl_running

    def info(self) -> SessionInfo:
        tracker = self.tracker
        if self.upstream is None:
            state = "connecting"
        elif tracker.held_by_gate:
            state = "held"
        elif tracker.phase == STREAM:
            state = "streaming"
        else:
            state = "busy" if tracker.busy else "idle"
        return SessionInfo(self.session_id, self.peer, state, tracker.in_transaction,
                           tracker.connection_id, tracker.user, tracker.database,
                           self.started_at, tracker.commands_started)

    # -- client transport callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.gate.register(self)
        self._connect_task = asyncio.get_running_loop().create_task(self._open_upstream())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.login is not None:  # TLS login
            self.login.from_client(data)
            return
        # DDL hold hook (proxy.ddlhold): a few byte tests per read, inline (``_ddl_candidate``
        # says the same for a compressed session). A query or prepare that may start with a DDL
        # keyword, or the execute of one prepared so, goes to the holder.
        # COM_RESET_CONNECTION and COM_CHANGE_USER go too while prepared DDL are known (the
        # server forgets them), tested only past the query's tests.
        ddl = self.proxy.ddl
        if ddl is not None:
            if len(data) > 5:
                command = data[4]
                if command == 3 or command == 0x16:
                    if data[5] in DDL_FIRST_BYTES and ddl.claims(self, data):
                        return
                elif (command == 0x17 or command == 0x11) and self.ddl_statements and ddl.claims(self, data):
                    return
            elif len(data) == 5 and data[4] == 0x1F and self.ddl_statements:
                ddl.claims(self, data)  # (never claimed: the reset is relayed)
        gate = self.gate
        try:
            # An open gate cannot close during this synchronous call: no need to ask it again
            # before each command (a Python call per command on the hot path).
            out = self.tracker.feed_client(data, None if gate.is_open else gate.may_start_command)
        except wire.ProtocolError as exc:
            self._fail(exc, from_client=True)
            return
        if out:
            self.upstream.write(out)
        if self.tracker.held_by_gate:
            self._start_holding()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def pause_writing(self) -> None:  # the client reads slower than the server sends
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and not self.closed:
            self.upstream.resume_reading()

    # -- upstream -------------------------------------------------------------------------------------
    async def _open_upstream(self) -> None:
        if not self.gate.is_open and not await self.gate.wait_open(self.gate.hold_timeout):
            self._refuse_at_door()
            return
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self), self.proxy.upstream_host, self.proxy.upstream_port
                ),
                self.proxy.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            self._send_err(0, 2003, "HY000",
                           f"auroratrack: cannot reach the server "
                           f"{self.proxy.upstream_host}:{self.proxy.upstream_port}: {exc}")
            self.close()
            return
        if self.closed:
            transport.abort()

    def server_data(self, data: bytes) -> None:
        if self.closed:
            return
        if self.login is not None:  # TLS login
            self.login.from_server(data)
            return
        try:
            out = self.tracker.feed_server(data)
        except wire.ProtocolError as exc:
            self._fail(exc, from_client=False)
            return
        if out:
            self.transport.write(out)
        if self.gate.draining:
            self.gate.notify_idle()

    def server_lost(self) -> None:
        """The server closed its side: close the client's too, and add nothing.

        A killed connection (``KILL`` of a session in ``LOCK TABLE ...; ALTER TABLE``) is closed
        by the server without a word; the client's own library then reports its lost-connection
        error (CR_SERVER_LOST, 2013), exactly as when it is connected directly. An ERR made up
        here could not say the same: 2013 is a client-side error number, and MariaDB
        Connector/C rejects an ERR packet carrying one as "Received malformed packet"."""
        if self.closed:
            return
        if self.tracker.busy:
            log.info("session %d (%s): the server closed the connection during a command",
                     self.session_id, self.peer)
        self.close()

    # -- a held DDL statement (proxy.ddlhold) --------------------------------------------------------------
    def _ddl_candidate(self, data: bytes) -> bool:
        """The byte tests of ``data_received``'s DDL hook, for a compressed session's
        inflated copy: whether the holder should be asked."""
        if len(data) <= 4:
            return False
        command = data[4]
        return bool((command == 3 or command == 0x16) and len(data) > 5 and data[5] in DDL_FIRST_BYTES
                    or (command == 0x17 or command == 0x1F or command == 0x11) and self.ddl_statements)

    def ddl_begin(self) -> None:
        """The holder answers the client's statement: read nothing more until it has (it sets
        ``ddl_running`` once the gate lets it start)."""
        self._reading_paused_for.add("ddl")
        self.transport.pause_reading()

    def ddl_done(self, answer: bytes | None, passed: bytes | None = None) -> None:
        """The holder's answer (already framed) goes to the client; the session goes on. Or the
        holder gives the command back (``passed``, its plain packets): it is relayed as the
        hook would have (it started before any gate closed: it is not held)."""
        self.ddl_running = False
        if self.closed:
            return
        if answer and self.compressed is not None:
            answer = self.compressed.to_client(answer)  # the client's command was the leg's last packet
        if answer:
            self.transport.write(answer)
        if passed:
            try:
                out = self.tracker.feed_client(passed)
            except wire.ProtocolError as exc:
                self._fail(exc, from_client=True)
                return
            if out and self.compressed is not None:  # its own packets were dropped: a new command's
                out, _ = make_compressed_packets(out, 0)
            self.upstream.write(out)
        self._reading_paused_for.discard("ddl")
        if not self._reading_paused_for:
            self.transport.resume_reading()
        if self.gate.draining:
            self.gate.notify_idle()

    # -- the gate ---------------------------------------------------------------------------------------
    def _start_holding(self) -> None:
        if "gate" in self._reading_paused_for:
            return
        self._reading_paused_for.add("gate")
        self.transport.pause_reading()
        self.gate.hold(self)
        self._held_since = time.monotonic()
        self._held_timer = asyncio.get_running_loop().call_later(
            self.gate.hold_timeout, self._hold_expired
        )

    def release(self) -> None:
        """The gate reopened: forward what was held and read again."""
        if self.closed:
            return
        self._stop_holding()
        try:
            out = self.tracker.release() if self.gate.is_open else b""
        except wire.ProtocolError as exc:
            self._fail(exc, from_client=True)
            return
        if out and self.compressed is not None:
            out = self.compressed.forwarded(len(out))
        if out:
            self.upstream.write(out)
        if self.tracker.held_by_gate:
            self._start_holding()

    def _stop_holding(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        self.gate.unhold(self)
        if "gate" in self._reading_paused_for:
            self._reading_paused_for.discard("gate")
            if not self._reading_paused_for:  # not while the server still pushes back ("flow")
                self.transport.resume_reading()

    def _hold_expired(self) -> None:
        """Held too long: answer the held command with an ERR instead of running it."""
        self._held_timer = None
        waited = time.monotonic() - self._held_since
        whole = self.tracker.take_held_command()
        if self.compressed is not None and whole and (
                self.tracker.held_by_gate or not self.compressed.drop_held()):
            whole = False  # the held packets carry more than the command: cannot drop just it
        self._send_err(1, BACKTRACKING_ERRNO, BACKTRACKING_SQLSTATE, backtracking_message(waited))
        if not whole:
            self.close()
            return
        self._stop_holding()
        if self.tracker.held_by_gate:  # a pipelined command was behind it
            self._start_holding()

    def _refuse_at_door(self) -> None:
        self._send_err(0, BACKTRACKING_ERRNO, BACKTRACKING_SQLSTATE,
                       backtracking_message(self.gate.hold_timeout))
        self.close()

    # -- compression (proxy/compression.py) ---------------------------------------------------------
    def server_data_during_auth(self, data: bytes) -> None:
        """Server bytes until authentication ends; then the steady-state handlers take over,
        chosen once, so that a plain session's hot path asks nothing more per read."""
        self.server_data(data)
        if self.closed or self.tracker.phase in (HANDSHAKE, AUTH):
            return
        if self.tracker.capabilities & wire.Capability.CLIENT_COMPRESS:
            # Both legs compress from the packet after the server's OK on.
            self.compressed = CompressedSession()
            self.proxy.compressed_sessions += 1
            self.tracker.check_sequence_ids = False
            self.transport.set_protocol(CompressedClientSide(self))
            self.upstream.set_protocol(UpstreamConnection(self, self.compressed_server_data))
        else:
            self.upstream.set_protocol(UpstreamConnection(self, self.server_data))

    def compressed_client_data(self, data: bytes) -> None:
        """``data_received`` of a compressed session: the tracker reads the inflated copy; the
        client's packets go upstream as they came, once the tracker lets all they carry go."""
        if self.closed:
            return
        gate = self.gate
        compressed = self.compressed
        try:
            plain = compressed.from_client(data)
            if not plain:  # a packet's first part: nothing for the tracker yet
                return
            # The DDL hook, as in data_received, when the packets read carry just one command
            # (the holder answers it: its packets are never forwarded).
            ddl = self.proxy.ddl
            if (ddl is not None and self._ddl_candidate(plain) and compressed.carries_only(len(plain))
                    and ddl.claims(self, plain)):
                compressed.drop_held()
                return
            out = self.tracker.feed_client(plain, None if gate.is_open else gate.may_start_command)
        except wire.ProtocolError as exc:
            self._fail(exc, from_client=True)
            return
        if out:
            out = compressed.forwarded(len(out))
            if out:
                self.upstream.write(out)
        if self.tracker.held_by_gate:
            self._start_holding()

    def compressed_server_data(self, data: bytes) -> None:
        """``server_data`` of a compressed session: the server's bytes go to the client as they
        came; the tracker reads the inflated copy first."""
        if self.closed:
            return
        try:
            plain = self.compressed.from_server(data)
            if plain:
                self.tracker.feed_server(plain)
        except wire.ProtocolError as exc:
            self._fail(exc, from_client=False)
            return
        self.transport.write(data)
        if self.gate.draining:
            self.gate.notify_idle()

    # -- ending -------------------------------------------------------------------------------------------
    def _fail(self, exc: wire.ProtocolError, from_client: bool) -> None:
        log.warning("session %d (%s) ended: %s", self.session_id, self.peer, exc)
        self.proxy.protocol_errors += 1
        if from_client:
            pending = self.tracker.pending
            seq = pending[-1].next_seq if pending else 1
            self._send_err(seq, exc.errno, exc.sqlstate, f"auroratrack: {exc}")
        else:
            seq = self.tracker.expected_server_seq
            if seq is not None:
                self._send_err(seq, exc.errno, exc.sqlstate, f"auroratrack: server protocol error: {exc}")
        self.close()

    def _send_err(self, seq: int, errno: int, sqlstate: str, message: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            packet = wire.make_err_packet(seq, errno, sqlstate, message)
            if self.compressed is not None:
                packet = self.compressed.to_client(packet)
                if packet is None:  # in the middle of a server packet: only closing is left
                    return
            self.transport.write(packet)

    def close(self) -> None:
        """End the session: both sockets closed, nothing left scheduled."""
        if self.closed:
            return
        self.closed = True
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        if self.login is not None:  # TLS login: its handshake watchers
            self.login.close()
        if self.transport is not None:
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()
        self.gate.unregister(self)
        self.proxy.session_closed(self)


class UpstreamConnection(asyncio.Protocol):
    """The server side of a session: hands everything to its ``ClientSession``."""

    def __init__(self, session: ClientSession, on_data: Callable[[bytes], None] | None = None):
        self.session = session
        # The event loop looks ``data_received`` up once, when the connection is made (and again
        # on ``set_protocol``): bound straight to the session, each server read costs one Python
        # call instead of two. Until authentication ends, the session's handler that then picks
        # the steady-state one (plain or compressed).
        self.data_received = on_data or session.server_data_during_auth

    def connection_made(self, transport: asyncio.Transport) -> None:
        # Set here, not after create_connection returns: the server may speak first.
        self.session.upstream = transport

    def data_received(self, data: bytes) -> None:
        self.session.server_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.server_lost()

    def pause_writing(self) -> None:  # the server reads slower than the client sends
        session = self.session
        if session.transport is not None and "flow" not in session._reading_paused_for:
            session._reading_paused_for.add("flow")
            session.transport.pause_reading()

    def resume_writing(self) -> None:
        session = self.session
        if "flow" in session._reading_paused_for:
            session._reading_paused_for.discard("flow")
            if not session._reading_paused_for and not session.closed:
                session.transport.resume_reading()


class CompressedClientSide(asyncio.Protocol):
    """The client transport's protocol once a compressed session is authenticated: the
    session's own callbacks, with the reads going through its codec."""

    def __init__(self, session: ClientSession):
        self.data_received = session.compressed_client_data
        self.eof_received = session.eof_received
        self.connection_lost = session.connection_lost
        self.pause_writing = session.pause_writing
        self.resume_writing = session.resume_writing


class ProxyServer:
    """Accepts clients on ``listen`` and relays each to ``upstream``."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        gate: Gate,
        max_allowed_packet: int = 1 << 30,
        connect_timeout: float = 10.0,
        tls: TlsPolicy | None = None,
    ):
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.gate = gate
        self.max_allowed_packet = max_allowed_packet
        self.connect_timeout = connect_timeout
        self.tls = tls if tls is not None and tls.active else None  # None: the tracker follows logins
        self.sessions: dict[int, ClientSession] = {}
        self.sessions_total = 0
        self.protocol_errors = 0
        self.compressed_sessions = 0  # sessions that negotiated CLIENT_COMPRESS
        self.commands_closed_sessions = 0
        self.ddl = None  # proxy.ddlhold.DdlHolder when DROP/TRUNCATE are held
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Start listening; returns the bound address (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_session, host, port, backlog=1024)
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def _new_session(self) -> ClientSession:
        self.sessions_total += 1
        session = ClientSession(self, self.sessions_total)
        self.sessions[session.session_id] = session
        return session

    def session_closed(self, session: ClientSession) -> None:
        if self.sessions.pop(session.session_id, None) is not None:
            self.commands_closed_sessions += session.tracker.commands_started

    @property
    def commands_relayed(self) -> int:
        return self.commands_closed_sessions + sum(
            s.tracker.commands_started for s in self.sessions.values()
        )

    def session_infos(self) -> list[SessionInfo]:
        return [s.info() for s in list(self.sessions.values())]

    async def close(self) -> None:
        """Stop listening and end every session."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions.values()):
            session.close()
        if self._server is not None:
            await self._server.wait_closed()
