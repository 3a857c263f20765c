"""The login of one session, relayed leg by leg: greeting, TLS upgrades, authentication.

Pure and synchronous, like the tracker: ``LoginRelay`` is fed the bytes each side sends until
the server's final OK or ERR, and says what to send where and when to start TLS on which leg.
It never touches a socket; the relay acts on each ``LoginStep``. After the login the session's
two legs carry the same packets with the same sequence ids, and the tracker takes over.

Why the login is not relayed byte for byte (DESIGN.md decision 13): the proxy terminates TLS on
each leg on its own, so the legs differ.
  * Capabilities: the client is offered ``CLIENT_SSL`` by the proxy's own policy, the server is
    asked for it by the upstream policy. The greeting (with the server's nonce, so every auth
    plugin still works end to end) and the HandshakeResponse are re-encoded per leg.
  * Sequence ids: a TLS client sends SSLRequest as packet 1 and its response as packet 2; a leg
    without TLS has the response as packet 1. Each leg keeps its own counter and every packet
    relayed during the login is renumbered for the leg it goes out on.
  * caching_sha2_password full authentication (the server answers 0x01 0x04), as MySQL Router
    does it (its classic_auth_caching_sha2_forwarder):
      - both legs TLS, or neither: relayed untouched (over TLS the client sends its password;
        in plaintext it asks the server for its RSA key and encrypts).
      - client TLS, server plaintext: the client sends its password over TLS; the proxy asks the
        server for its public key (0x02) and sends RSA-OAEP(password XOR nonce) instead.
      - client plaintext, server TLS: the client asks for a public key (0x02); the proxy answers
        with its own, decrypts what the client sends and passes the password on over TLS.
    A password lives only in a local variable of the step that forwards it (and, client TLS to a
    plaintext server, until the server's key arrives); it is never logged or stored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from proxy import wire
from proxy.wire import Capability, ProtocolError

CACHING_SHA2 = "caching_sha2_password"
# Plugins whose client sends the password itself over TLS (sha256_password puts it in the
# HandshakeResponse): never relayed from a TLS client onto a plaintext server leg.
CLEARTEXT_OVER_TLS_PLUGINS = frozenset({"sha256_password", "mysql_clear_password"})
FULL_AUTH = b"\x01\x04"  # AuthMoreData: perform full authentication
REQUEST_PUBLIC_KEY = b"\x02"
ER_SECURE_TRANSPORT_REQUIRED = 3159
ER_ACCESS_DENIED = 1045
CR_SSL_CONNECTION_ERROR = 2026

SECURE_TRANSPORT_MESSAGE = (
    "Connections using insecure transport are prohibited while --require_secure_transport=ON. "
    "(auroratrack --client-tls required: connect with TLS)"
)
X509_HINT = (
    " (auroratrack terminates TLS, so a client certificate never reaches the server: accounts that "
    "REQUIRE X509, SUBJECT or ISSUER cannot log in through auroratrack)"
)

# Phases.
GREETING = "greeting"  # waiting for the server's HandshakeV10
CLIENT_FIRST = "client-first"  # waiting for SSLRequest or HandshakeResponse
RESPONSE = "response"  # TLS started on the client leg; waiting for the HandshakeResponse
AUTH = "auth"
DONE = "done"


@dataclass
class LoginStep:
    """What the relay must do after one feed."""

    to_client: bytes = b""
    ssl_request: bytes = b""  # to the server in plaintext, then TLS starts on that leg
    start_upstream_tls: bool = False
    to_server: bytes = b""  # after TLS started, if it does: through it
    start_client_tls: bool = False  # the client sent SSLRequest; ``read_ahead`` is its TLS start
    read_ahead: bytes = b""
    close: bool = False  # end the session once ``to_client`` is written
    result: LoginResult | None = None  # the login is over (OK or ERR relayed)


@dataclass(frozen=True)
class LoginResult:
    """The session as the tracker must know it once the login ends."""

    ok: bool
    capabilities: int  # what the client asked for of what the proxy offered
    user: str
    database: str | None
    status_flags: int
    connection_id: int
    server_version: str


@dataclass
class _Keys:
    """RSA key exchange state of a caching_sha2 full authentication in progress."""

    full_auth: bool = False  # the server asked for it; the client's next packet answers
    answered_client: bool = False  # client plaintext: we sent the client our public key
    pending_password: bytes = field(default=b"", repr=False)  # client TLS: until the server key


def greeting_nonce(payload: bytes) -> bytes:
    """The 20-byte auth-plugin-data (scramble) of a HandshakeV10: part 1 (8) + part 2 (12)."""
    version_end = payload.index(b"\x00", 1)
    part1 = payload[version_end + 5 : version_end + 13]
    caps2 = version_end + 14 + 2 + 1 + 2
    data_len = payload[caps2 + 2] if len(payload) > caps2 + 2 else 0
    part2_pos = caps2 + 2 + 1 + 10
    # part 2 is max(13, data_len - 8) bytes, its last one a NUL that is not part of the nonce
    return part1 + payload[part2_pos : part2_pos + max(12, data_len - 9)]


def greeting_for_client(payload: bytes, offer_ssl: bool) -> bytes:
    """The server's greeting with what the relay cannot follow masked, and CLIENT_SSL offered
    by the proxy's own policy (not the server's)."""
    out = bytearray(wire.mask_initial_handshake(payload))
    if offer_ssl:
        caps1 = out.index(b"\x00", 1) + 14
        struct.pack_into("<H", out, caps1, struct.unpack_from("<H", out, caps1)[0] | Capability.CLIENT_SSL)
    return bytes(out)


def ssl_request(server_capabilities: int, charset: int = 0x21) -> bytes:
    """An SSLRequest payload of the proxy's own (the start-up probe's): the capabilities the
    server offered that the relay can follow, plus CLIENT_SSL. Relayed sessions send the
    client's own capabilities instead (``response_for_server`` of its first 32 bytes)."""
    caps = server_capabilities & ~wire.MASKED_CAPABILITIES | Capability.CLIENT_SSL
    caps |= Capability.CLIENT_PROTOCOL_41 | Capability.CLIENT_SECURE_CONNECTION
    ext = (caps >> 32) & 0xFFFFFFFF if not caps & Capability.CLIENT_LONG_PASSWORD else 0
    return struct.pack("<IIB19sI", caps & 0xFFFFFFFF, wire.MAX_CHUNK, charset, b"", ext)


def response_for_server(payload: bytes, upstream_tls: bool) -> bytes:
    """The client's HandshakeResponse41 for the upstream leg: masked, CLIENT_SSL as that leg is."""
    out = bytearray(wire.mask_handshake_response(payload))
    caps = struct.unpack_from("<I", out, 0)[0]
    if upstream_tls:
        caps |= Capability.CLIENT_SSL
    struct.pack_into("<I", out, 0, caps)
    return bytes(out)


def response_plugin(payload: bytes, capabilities: int) -> str | None:
    """The auth plugin a HandshakeResponse41 names (None when it names none)."""
    if not capabilities & Capability.CLIENT_PLUGIN_AUTH:
        return None
    _, pos = wire.read_null_terminated(payload, 32)
    if capabilities & Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        n, pos = wire.read_length_encoded_integer(payload, pos)
        pos += n or 0
    elif capabilities & Capability.CLIENT_SECURE_CONNECTION:
        pos += 1 + payload[pos]
    else:
        _, pos = wire.read_null_terminated(payload, pos)
    if capabilities & Capability.CLIENT_CONNECT_WITH_DB:
        _, pos = wire.read_null_terminated(payload, pos)
    if pos >= len(payload):
        return None
    end = payload.find(b"\x00", pos)
    return payload[pos : end if end >= 0 else len(payload)].decode("ascii", "replace")


def change_user_plugin(payload: bytes, capabilities: int) -> str | None:
    """The auth plugin a COM_CHANGE_USER payload (command byte included) names, if any."""
    try:
        _, pos = wire.read_null_terminated(payload, 1)  # user
        if capabilities & Capability.CLIENT_SECURE_CONNECTION:
            pos += 1 + payload[pos]
        else:
            _, pos = wire.read_null_terminated(payload, pos)
        _, pos = wire.read_null_terminated(payload, pos)  # schema
        pos += 2  # character set
        if pos >= len(payload) or not capabilities & Capability.CLIENT_PLUGIN_AUTH:
            return None
        name, _ = wire.read_null_terminated(payload, pos)
    except (ProtocolError, IndexError):
        return None
    return name.decode("ascii", "replace")


def xor_nonce(data: bytes, nonce: bytes) -> bytes:
    """``data`` XOR the nonce repeated (caching_sha2's obfuscation before RSA)."""
    return bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(data))


def rsa_encrypt_password(password_nul: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """What a client sends a plaintext caching_sha2 server: RSA-OAEP(SHA-1) of the
    NUL-terminated password XOR the nonce, with the server's public key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_public_key(public_key_pem)
    return key.encrypt(xor_nonce(password_nul, nonce),
                       padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))


class ProxyRsaKey:
    """The proxy's own RSA key pair, made once per process when a plaintext client first needs it."""

    _instance: ProxyRsaKey | None = None

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def get(cls) -> ProxyRsaKey:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def decrypt_password(self, ciphertext: bytes, nonce: bytes) -> bytes:
        """The NUL-terminated password a client encrypted with this key."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        plain = self._key.decrypt(ciphertext, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                           algorithm=hashes.SHA1(), label=None))
        return xor_nonce(plain, nonce)


def split_packets(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole packets in ``buf`` as (sequence id, payload), and the bytes left over. Login packets
    are small; a 16 MiB one here is a broken peer."""
    packets = []
    pos = 0
    while len(buf) - pos >= 4:
        length, seq = wire.read_header(buf, pos)
        if length >= wire.MAX_CHUNK:
            raise ProtocolError("a 16 MiB packet during the login")
        if len(buf) - pos < 4 + length:
            break
        packets.append((seq, bytes(buf[pos + 4 : pos + 4 + length])))
        pos += 4 + length
    return packets, bytes(buf[pos:])


class LoginRelay:
    """One session's login; see the module docstring. Feed it; act on each ``LoginStep``."""

    def __init__(self, offer_client_tls: bool, require_client_tls: bool, upstream_tls_mode: str,
                 rsa_key: ProxyRsaKey | None = None):
        self.offer_client_tls = offer_client_tls
        self.require_client_tls = require_client_tls
        self.upstream_tls_mode = upstream_tls_mode
        self._rsa_key = rsa_key
        self.phase = GREETING
        self.client_tls = False
        self.upstream_tls = False
        self._c_seq = 0  # next sequence id on the client leg (both directions share it)
        self._s_seq = 0  # next sequence id on the server leg
        self._c_buf = b""
        self._s_buf = b""
        self._server_caps = 0
        self._nonce = b""
        self._plugin = ""
        self._keys = _Keys()
        self._capabilities = 0
        self._user = ""
        self._database: str | None = None
        self._connection_id = 0
        self._server_version = ""

    # -- server -> proxy ---------------------------------------------------------------------------
    def feed_server(self, data: bytes) -> LoginStep:
        step = LoginStep()
        packets, self._s_buf = split_packets(self._s_buf + data)
        for seq, payload in packets:
            if self.phase == DONE:
                raise ProtocolError("server sent more than its answer to the login")
            if self.phase == GREETING:
                self._greeting(payload, step)
                continue
            if self.phase not in (AUTH,) or seq != self._s_seq:
                raise ProtocolError(f"server sent sequence id {seq}, expected {self._s_seq}",
                                    wire.ER_NET_PACKETS_OUT_OF_ORDER)
            self._s_seq = (seq + 1) & 0xFF
            self._server_auth_packet(payload, step)
        return step

    def _greeting(self, payload: bytes, step: LoginStep) -> None:
        if payload[:1] == b"\xff":  # e.g. "Too many connections": pass it on and end
            step.to_client += wire.make_packets(payload, 0)
            step.close = True
            self.phase = DONE
            return
        handshake = wire.parse_initial_handshake(payload)
        self._server_caps = handshake.capabilities
        self._connection_id = handshake.connection_id
        self._server_version = handshake.server_version
        self._plugin = handshake.auth_plugin_name
        self._nonce = greeting_nonce(payload)
        offered = bool(handshake.capabilities & Capability.CLIENT_SSL)
        mode = self.upstream_tls_mode
        if mode in ("required", "verify-ca", "verify-identity") and not offered:
            step.to_client += wire.make_err_packet(
                0, CR_SSL_CONNECTION_ERROR, "HY000",
                f"auroratrack: the server does not offer TLS, and --upstream-tls is {mode}")
            step.close = True
            self.phase = DONE
            return
        self.upstream_tls = offered and mode != "disabled"
        self._s_seq = 1
        step.to_client += wire.make_packets(greeting_for_client(payload, self.offer_client_tls), 0)
        self._c_seq = 1
        self.phase = CLIENT_FIRST

    def _server_auth_packet(self, payload: bytes, step: LoginStep) -> None:
        first = payload[:1]
        keys = self._keys
        if first == b"\x01" and keys.pending_password:
            # The server's public key we asked for: the client never sees it.
            password, keys.pending_password = keys.pending_password, b""
            step.to_server += self._to_server(rsa_encrypt_password(password, self._nonce, payload[1:]))
            keys.full_auth = False
            return
        if first == b"\x00":
            self._finish(payload, True, step)
            return
        if first == b"\xff":
            self._finish(payload, False, step)
            return
        if first == b"\xfe":  # auth switch: a new plugin, and its own nonce
            name, pos = wire.read_null_terminated(payload, 1)
            self._plugin = name.decode("ascii", "replace")
            nonce = payload[pos:]
            self._nonce = nonce[:-1] if nonce.endswith(b"\x00") else nonce
        elif payload == FULL_AUTH and self._plugin == CACHING_SHA2:
            keys.full_auth = True
        step.to_client += self._to_client(payload)

    def _finish(self, payload: bytes, ok: bool, step: LoginStep) -> None:
        status = 0
        if ok:
            status = wire.ok_status_flags(payload)
        elif self.client_tls:
            errno, _, _ = wire.parse_err_packet(payload)
            if errno == ER_ACCESS_DENIED:  # the one limitation TLS termination brings to logins
                payload = payload + X509_HINT.encode()
        step.to_client += self._to_client(payload)
        step.result = LoginResult(ok, self._capabilities, self._user, self._database, status,
                                  self._connection_id, self._server_version)
        self.phase = DONE

    # -- client -> proxy ---------------------------------------------------------------------------
    def feed_client(self, data: bytes) -> LoginStep:
        step = LoginStep()
        buf = self._c_buf + data
        self._c_buf = b""
        while buf and not step.close:
            packets, rest = split_packets(buf)
            if not packets:
                self._c_buf = rest
                break
            seq, payload = packets[0]
            buf = buf[4 + len(payload):]
            if self.phase == DONE or self.phase == GREETING:
                raise ProtocolError("client spoke out of turn during the login")
            if seq != self._c_seq:
                raise ProtocolError(f"client sent sequence id {seq}, expected {self._c_seq}",
                                    wire.ER_NET_PACKETS_OUT_OF_ORDER)
            self._c_seq = (seq + 1) & 0xFF
            if self.phase == CLIENT_FIRST:
                if self._client_first(payload, step):
                    step.read_ahead = buf  # the start of the TLS handshake, not packets
                    return step
            elif self.phase == RESPONSE:
                self._handshake_response(payload, step)
            else:
                self._client_auth_packet(payload, step)
        return step

    def _client_first(self, payload: bytes, step: LoginStep) -> bool:
        """The client's first packet; True if it asked for TLS."""
        response = wire.parse_handshake_response(payload)
        if self.upstream_tls and not (self.require_client_tls and not response.is_ssl_request):
            # The server's TLS starts now, with the client's own capabilities: MariaDB takes
            # them from the SSLRequest and never reads them again from the response.
            step.ssl_request = self._to_server(response_for_server(payload[:32], True))
            step.start_upstream_tls = True
        if response.is_ssl_request:
            if not self.offer_client_tls:
                raise ProtocolError("client asked for TLS, which auroratrack did not offer "
                                    "(--client-tls disabled)", CR_SSL_CONNECTION_ERROR, "HY000")
            self.client_tls = True
            step.start_client_tls = True
            self.phase = RESPONSE
            return True
        if self.require_client_tls:
            step.to_client += wire.make_err_packet(self._c_seq, ER_SECURE_TRANSPORT_REQUIRED, "HY000",
                                                   SECURE_TRANSPORT_MESSAGE)
            step.close = True
            self.phase = DONE
            return False
        self._handshake_response(payload, step)
        return False

    def _handshake_response(self, payload: bytes, step: LoginStep) -> None:
        response = wire.parse_handshake_response(payload)
        if response.is_ssl_request:
            raise ProtocolError("client sent a second SSLRequest")
        caps = response.capabilities
        self._capabilities = caps & self._server_caps & ~wire.MASKED_CAPABILITIES
        self._user = response.user
        self._database = response.database
        self._plugin = response_plugin(payload, caps) or self._plugin
        self._refuse_cleartext_downgrade()
        step.to_server += self._to_server(response_for_server(payload, self.upstream_tls))
        self.phase = AUTH

    def _refuse_cleartext_downgrade(self) -> None:
        if self.client_tls and not self.upstream_tls and self._plugin in CLEARTEXT_OVER_TLS_PLUGINS:
            raise ProtocolError(
                f"{self._plugin} sends the password as is over TLS, and auroratrack's connection to the "
                "server is not encrypted: give the server TLS (and --upstream-tls required), use "
                "caching_sha2_password, or connect without TLS", ER_ACCESS_DENIED, "28000")

    def _client_auth_packet(self, payload: bytes, step: LoginStep) -> None:
        self._refuse_cleartext_downgrade()  # after an auth switch to such a plugin
        keys = self._keys
        if keys.full_auth and self._plugin == CACHING_SHA2 and self.client_tls != self.upstream_tls:
            if self.client_tls:  # the password came over TLS; the server's leg is plaintext
                keys.pending_password = payload if payload.endswith(b"\x00") else payload + b"\x00"
                step.to_server += self._to_server(REQUEST_PUBLIC_KEY)
                return
            if payload == REQUEST_PUBLIC_KEY:  # plaintext client: it gets the proxy's key
                keys.answered_client = True
                step.to_client += self._to_client(b"\x01" + self._rsa().public_pem)
                return
            if keys.answered_client:
                try:
                    password = self._rsa().decrypt_password(payload, self._nonce)
                except ValueError:
                    raise ProtocolError("could not decrypt the password the client sent with "
                                        "auroratrack's public key", ER_ACCESS_DENIED, "28000") from None
                keys.full_auth = keys.answered_client = False
                step.to_server += self._to_server(password)
                return
        step.to_server += self._to_server(payload)

    # -- COM_CHANGE_USER ---------------------------------------------------------------------------
    def restart_for_change_user(self, command_payload: bytes, capabilities: int) -> None:
        """Follow the authentication of a COM_CHANGE_USER (already sent, packet 0 on both legs)
        as the login's, with this session's legs and nonce: a session whose legs differ needs the
        same caching_sha2 key exchange again."""
        self.phase = AUTH
        self._c_seq = self._s_seq = 1
        self._keys = _Keys()
        # Without a name (or the packet), caching_sha2 is assumed: only it asks b"\x01\x04".
        self._plugin = change_user_plugin(command_payload, capabilities) or CACHING_SHA2

    # -- helpers -----------------------------------------------------------------------------------
    def _rsa(self) -> ProxyRsaKey:
        if self._rsa_key is None:
            self._rsa_key = ProxyRsaKey.get()
        return self._rsa_key

    def _to_client(self, payload: bytes) -> bytes:
        packet = wire.make_packets(payload, self._c_seq)
        self._c_seq = (self._c_seq + 1) & 0xFF
        return packet

    def _to_server(self, payload: bytes) -> bytes:
        packet = wire.make_packets(payload, self._s_seq)
        self._s_seq = (self._s_seq + 1) & 0xFF
        return packet

    @property
    def client_seq(self) -> int:
        """Sequence id of the next packet on the client leg (for an ERR the relay injects)."""
        return self._c_seq
