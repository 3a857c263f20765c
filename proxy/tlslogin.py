"""A relayed session's login over TLS: acts on what ``authrelay.LoginRelay`` decides.

The relay hands a session's bytes here until its login ends (``ClientSession.login`` is set),
then takes the session back with its tracker set up for the command phase. This module writes
to the session's two transports, upgrades either to TLS in place (``tlspump``), bounds each
TLS handshake by a timeout, and ends that one session on anything malformed; the listener and
other sessions go on. It also holds the start-up probe that makes ``serve`` refuse a server
whose certificate fails verification, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from proxy import tlspump, wire
from proxy.authrelay import CR_SSL_CONNECTION_ERROR, LoginRelay, LoginResult, LoginStep, ssl_request
from proxy.tls import TlsPolicy, upstream_requires_tls
from proxy.tracker import AUTH, CLOSING, COMMAND

if TYPE_CHECKING:
    from proxy.relay import ClientSession

log = logging.getLogger(__name__)


class SessionLogin:
    """One session's login; owned by its ``ClientSession`` until the server's OK or ERR."""

    def __init__(self, session: ClientSession, policy: TlsPolicy):
        self.session = session
        self.policy = policy
        client = policy.client
        self.relay = LoginRelay(client.offered, client.required, policy.upstream_mode)
        self._handshakes: set[asyncio.Task] = set()

    def from_server(self, data: bytes) -> None:
        try:
            step = self.relay.feed_server(data)
        except (wire.ProtocolError, ValueError, IndexError) as exc:
            self._fail(f"server broke the login protocol: {exc}")
            return
        self._act(step)

    def from_client(self, data: bytes) -> None:
        try:
            step = self.relay.feed_client(data)
        except wire.ProtocolError as exc:
            self._fail(str(exc), exc.errno, exc.sqlstate)
            return
        except (ValueError, IndexError) as exc:
            self._fail(f"malformed login packet: {exc}")
            return
        self._act(step)

    def _act(self, step: LoginStep) -> None:
        session = self.session
        if step.ssl_request:
            session.upstream.write(step.ssl_request)
        if step.start_upstream_tls:
            self._start_upstream_tls()
        if step.to_server:  # queued by the TLS transport until its handshake is done
            session.upstream.write(step.to_server)
        if step.to_client:
            session.transport.write(step.to_client)
        if step.start_client_tls:
            self._start_client_tls(step.read_ahead)
        if step.result is not None:
            self._finish(step.result)
        if step.close:
            session.close()

    # -- TLS on either leg ---------------------------------------------------------------------------
    def _start_client_tls(self, read_ahead: bytes) -> None:
        session = self.session
        session.transport, done = tlspump.upgrade(
            session.transport, session, self.policy.client.context, server_side=True,
            read_ahead=read_ahead, handshake_timeout=self.policy.handshake_timeout,
        )
        self._watch(done, "client")

    def _start_upstream_tls(self) -> None:
        session = self.session
        raw = session.upstream
        session.upstream, done = tlspump.upgrade(
            raw, raw.get_protocol(), self.policy.upstream_context, server_side=False,
            server_hostname=session.proxy.upstream_host, handshake_timeout=self.policy.handshake_timeout,
        )
        self._watch(done, "server")

    def _watch(self, done: asyncio.Future, leg: str) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(done, leg))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, done: asyncio.Future, leg: str) -> None:
        try:
            await done
        except Exception as exc:  # ssl.SSLError, the handshake timeout, a reset: this session ends
            session = self.session
            reason = str(exc) or type(exc).__name__
            log.warning("session %d (%s): TLS handshake with the %s failed: %s",
                        session.session_id, session.peer, leg, reason)
            if leg == "server":
                session.proxy.protocol_errors += 1
                self._err(CR_SSL_CONNECTION_ERROR, "HY000", f"auroratrack: TLS to the server failed: {reason}")
            session.close()

    # -- the end of the login ------------------------------------------------------------------------
    def _finish(self, result: LoginResult) -> None:
        """Hand the session to its tracker, as if it had followed the login itself."""
        session = self.session
        tracker = session.tracker
        tracker.connection_id = result.connection_id
        tracker.server_version = result.server_version
        tracker.adopt_capabilities(result.capabilities)
        tracker.user = result.user
        tracker.database = result.database
        tracker.status_flags = result.status_flags
        tracker.phase = COMMAND if result.ok else CLOSING
        session.login = None
        if result.ok and self.relay.client_tls != self.relay.upstream_tls:
            ChangeUserRelay.watch(session, self.relay)

    def _fail(self, message: str, errno: int = wire.ER_HANDSHAKE_ERROR, sqlstate: str = "08S01") -> None:
        session = self.session
        log.warning("session %d (%s) ended during the login: %s", session.session_id, session.peer, message)
        session.proxy.protocol_errors += 1
        self._err(errno, sqlstate, f"auroratrack: {message}")
        session.close()

    def _err(self, errno: int, sqlstate: str, message: str) -> None:
        transport = self.session.transport
        if transport is not None and not transport.is_closing():
            transport.write(wire.make_err_packet(self.relay.client_seq, errno, sqlstate, message))

    def close(self) -> None:
        for task in list(self._handshakes):
            task.cancel()


class ChangeUserRelay:
    """A COM_CHANGE_USER in a session whose legs differ (one TLS, one not): its authentication
    goes through the login's ``LoginRelay`` again, for caching_sha2's key exchange (a password
    the client sends over TLS must not cross a plaintext leg as is), while the tracker follows
    the exchange as the client sees it. Sessions whose legs agree never get here: their
    COM_CHANGE_USER is relayed by the tracker alone."""

    def __init__(self, session: ClientSession, relay: LoginRelay):
        self.session = session
        self.relay = relay

    @classmethod
    def watch(cls, session: ClientSession, relay: LoginRelay) -> None:
        """From now on, notice each COM_CHANGE_USER of ``session`` once it has gone to the server.
        Only such sessions pay for it: a wrapper on their ``data_received``, which the transport
        is told to read again (uvloop keeps the bound method it was given)."""
        relayed = session.data_received

        def data_received(data: bytes) -> None:
            relayed(data)
            tracker = session.tracker
            if session.login is None and tracker.phase == AUTH and not session.closed:
                head = tracker.pending[0] if tracker.pending else None
                if head is not None and head.command == wire.Command.COM_CHANGE_USER:
                    # The packet, when this read holds it whole from its start (it normally does).
                    whole = len(data) > 4 and data[3] == 0 and data[4] == wire.Command.COM_CHANGE_USER
                    relay.restart_for_change_user(bytes(data[4:]) if whole else b"", tracker.capabilities)
                    session.login = cls(session, relay)

        session.data_received = data_received
        session.transport.set_protocol(session)

    def from_client(self, data: bytes) -> None:
        session = self.session
        try:
            out = session.tracker.feed_client(data)  # the client's view, checked as usual
            step = self.relay.feed_client(out) if out else None
        except wire.ProtocolError as exc:
            session._fail(exc, from_client=True)
            return
        if step is not None:
            self._act(step)

    def from_server(self, data: bytes) -> None:
        try:
            step = self.relay.feed_server(data)
        except wire.ProtocolError as exc:
            self.session._fail(exc, from_client=False)
            return
        self._act(step)

    def _act(self, step: LoginStep) -> None:
        session = self.session
        if step.to_server:
            session.upstream.write(step.to_server)
        if step.to_client:
            try:
                out = session.tracker.feed_server(step.to_client)  # completes the tracker's exchange
            except wire.ProtocolError as exc:
                session._fail(exc, from_client=False)
                return
            session.transport.write(out)
        if step.result is not None:
            session.login = None

    def close(self) -> None:
        pass


def probe_upstream_tls(host: str, port: int, policy: TlsPolicy, timeout: float = 10.0) -> str | None:
    """Open one TLS session to the server as the relay would; returns the cipher, or None when
    there is nothing to check (disabled or preferred). Raises ``RuntimeError`` saying why
    when the policy cannot be met: no TLS offered where it is required, or a certificate that
    fails verification. Blocking: run it in a thread at start."""
    mode = policy.upstream_mode
    if policy.upstream_context is None or mode == "preferred":
        # Nothing to verify, and no connection opened for nothing (the server counts a
        # connection that never logs in against the host's max_connect_errors).
        return None
    where = f"{host}:{port}"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        greeting = _read_packet(sock)
        if greeting[:1] == b"\xff":
            _, _, message = wire.parse_err_packet(greeting)
            raise RuntimeError(f"the server {where} refused a connection: {message}")
        caps = wire.parse_initial_handshake(greeting).capabilities
        if not caps & wire.Capability.CLIENT_SSL:
            if upstream_requires_tls(mode):
                raise RuntimeError(f"the server {where} does not offer TLS, and --upstream-tls is {mode}: "
                                   "configure ssl_cert/ssl_key on the server, or lower --upstream-tls")
            return None
        sock.sendall(wire.make_packets(ssl_request(caps), 1))
        try:
            with policy.upstream_context.wrap_socket(sock, server_hostname=host) as tls:
                return tls.cipher()[0]
        except ssl.SSLCertVerificationError as exc:
            ca = f", --upstream-ca {policy.upstream_ca}" if policy.upstream_ca else " (system CAs)"
            raise RuntimeError(f"the certificate of the server {where} failed verification "
                               f"(--upstream-tls {mode}{ca}): {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise RuntimeError(f"TLS to the server {where} failed: {exc}") from None


def _read_packet(sock: socket.socket) -> bytes:
    header = _read_exactly(sock, 4)
    length, _ = wire.read_header(header)
    return _read_exactly(sock, length)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise RuntimeError("the server closed the connection during its greeting")
        out += chunk
    return bytes(out)
