"""The login relayed leg by leg (proxy/authrelay.py), over constructed exchanges.

caching_sha2_password full authentication for the four combinations of client and server legs
(TLS or not), with real RSA-OAEP: the test plays a MySQL 8 server (its own RSA key) and a client.
No MySQL 8 server runs here (the suite's server is MariaDB, which has no caching_sha2), so the
end-to-end version of these exchanges is not run; these are the exchanges MySQL 8 and its
clients make (sql_authentication.cc / classic_auth_caching_sha2_forwarder.cc).
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy import authrelay
from proxy.authrelay import LoginRelay, greeting_nonce, rsa_encrypt_password, split_packets, xor_nonce
from proxy.wire import Capability, make_packets

NONCE = bytes(range(1, 21))
PASSWORD = b"s3cret-pw"

CLIENT_CAPS = (Capability.CLIENT_LONG_PASSWORD | Capability.CLIENT_PROTOCOL_41
               | Capability.CLIENT_SECURE_CONNECTION | Capability.CLIENT_PLUGIN_AUTH
               | Capability.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | Capability.CLIENT_TRANSACTIONS
               | Capability.CLIENT_DEPRECATE_EOF | Capability.CLIENT_CONNECT_WITH_DB)


def greeting(ssl: bool, plugin: bytes = b"caching_sha2_password") -> bytes:
    caps = int(CLIENT_CAPS | Capability.CLIENT_CONNECT_ATTRS) | (Capability.CLIENT_SSL if ssl else 0)
    return (b"\x0a" + b"8.4.3\x00" + struct.pack("<I", 77) + NONCE[:8] + b"\x00"
            + struct.pack("<H", caps & 0xFFFF) + b"\xff" + struct.pack("<H", 2)
            + struct.pack("<H", caps >> 16) + bytes((21,)) + bytes(10) + NONCE[8:] + b"\x00" + plugin + b"\x00")


def client_caps(ssl: bool) -> int:
    return int(CLIENT_CAPS) | (Capability.CLIENT_SSL if ssl else 0)


def ssl_request() -> bytes:
    return struct.pack("<IIB23s", client_caps(True), 1 << 24, 0xFF, b"")


def handshake_response(ssl: bool, plugin: bytes = b"caching_sha2_password") -> bytes:
    scramble = bytes(32)
    return (struct.pack("<IIB23s", client_caps(ssl), 1 << 24, 0xFF, b"") + b"app\x00"
            + bytes((len(scramble),)) + scramble + b"shop\x00" + plugin + b"\x00")


def packets(data: bytes) -> list[tuple[int, bytes]]:
    found, rest = split_packets(data)
    assert rest == b""
    return found


def one(data: bytes) -> tuple[int, bytes]:
    found = packets(data)
    assert len(found) == 1, found
    return found[0]


class FakeServerKey:
    """The RSA key a MySQL 8 server sends on request (0x02) and decrypts with."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def decrypt(self, data: bytes, nonce: bytes) -> bytes:
        plain = self.key.decrypt(data, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),
                                                    label=None))
        return xor_nonce(plain, nonce)


@pytest.fixture(scope="module")
def server_key() -> FakeServerKey:
    return FakeServerKey()


def start(client_tls: bool, server_tls: bool) -> tuple[LoginRelay, int, int]:
    """Greeting and HandshakeResponse relayed; returns the relay and the next sequence id on the
    client leg and on the server leg."""
    relay = LoginRelay(offer_client_tls=True, require_client_tls=False,
                       upstream_tls_mode="preferred" if server_tls else "disabled")
    step = relay.feed_server(make_packets(greeting(ssl=server_tls), 0))
    seq, payload = one(step.to_client)
    assert seq == 0 and greeting_nonce(payload) == NONCE  # the server's nonce reaches the client
    caps = struct.unpack_from("<H", payload, payload.index(b"\x00", 1) + 14)[0]
    assert caps & Capability.CLIENT_SSL  # the proxy's own offer, whatever the server offers
    c_seq = 1
    upstream_ssl_request = b""
    if client_tls:  # the server's TLS starts at once, beside the client's
        step = relay.feed_client(make_packets(ssl_request(), 1))
        assert step.start_client_tls and step.read_ahead == b""
        assert step.start_upstream_tls == server_tls
        upstream_ssl_request = step.ssl_request
        c_seq = 2
    step = relay.feed_client(make_packets(handshake_response(ssl=client_tls), c_seq))
    if not client_tls:
        assert step.start_upstream_tls == server_tls
        upstream_ssl_request = step.ssl_request
    s_seq = 2 if server_tls else 1
    if server_tls:
        seq, payload = one(upstream_ssl_request)
        assert seq == 1 and len(payload) == 32 and struct.unpack_from("<I", payload)[0] & Capability.CLIENT_SSL
    seq, payload = one(step.to_server)
    assert seq == s_seq
    assert bool(struct.unpack_from("<I", payload)[0] & Capability.CLIENT_SSL) == server_tls
    assert payload[36:] == handshake_response(ssl=client_tls)[36:]  # user, scramble, db, plugin untouched
    # The server asks for full authentication; the client sees it on its own leg's numbering.
    step = relay.feed_server(make_packets(authrelay.FULL_AUTH, s_seq + 1))
    assert one(step.to_client) == (c_seq + 1, authrelay.FULL_AUTH)
    return relay, c_seq + 2, s_seq + 2


def finish(relay: LoginRelay, s_seq: int, c_seq: int) -> None:
    step = relay.feed_server(make_packets(b"\x00\x00\x00\x02\x00\x00\x00", s_seq))
    assert one(step.to_client) == (c_seq, b"\x00\x00\x00\x02\x00\x00\x00")
    assert step.result is not None and step.result.ok
    assert step.result.user == "app" and step.result.database == "shop" and step.result.status_flags == 2
    assert step.result.capabilities & Capability.CLIENT_DEPRECATE_EOF
    assert not step.result.capabilities & Capability.CLIENT_SSL


def test_both_legs_tls_cleartext_password_goes_on():
    relay, c, s = start(client_tls=True, server_tls=True)
    step = relay.feed_client(make_packets(PASSWORD + b"\x00", c))
    assert one(step.to_server) == (s, PASSWORD + b"\x00") and step.to_client == b""
    finish(relay, s + 1, c + 1)


def test_client_tls_server_plaintext_proxy_encrypts_with_the_servers_key(server_key):
    relay, c, s = start(client_tls=True, server_tls=False)
    step = relay.feed_client(make_packets(PASSWORD + b"\x00", c))
    assert one(step.to_server) == (s, authrelay.REQUEST_PUBLIC_KEY)  # never the cleartext
    step = relay.feed_server(make_packets(b"\x01" + server_key.pem, s + 1))
    assert step.to_client == b""  # the key is for the proxy
    seq, encrypted = one(step.to_server)
    assert seq == s + 2 and PASSWORD not in encrypted
    assert server_key.decrypt(encrypted, NONCE) == PASSWORD + b"\x00"
    finish(relay, s + 3, c + 1)


def test_client_plaintext_server_tls_proxy_answers_with_its_own_key():
    relay, c, s = start(client_tls=False, server_tls=True)
    step = relay.feed_client(make_packets(authrelay.REQUEST_PUBLIC_KEY, c))
    assert step.to_server == b""
    seq, key_packet = one(step.to_client)
    assert seq == c + 1 and key_packet.startswith(b"\x01-----BEGIN PUBLIC KEY-----")
    encrypted = rsa_encrypt_password(PASSWORD + b"\x00", NONCE, key_packet[1:])  # what the client does
    step = relay.feed_client(make_packets(encrypted, c + 2))
    assert one(step.to_server) == (s, PASSWORD + b"\x00")  # over the server's TLS leg
    finish(relay, s + 1, c + 3)


def test_both_legs_plaintext_relayed_untouched(server_key):
    relay, c, s = start(client_tls=False, server_tls=False)
    step = relay.feed_client(make_packets(authrelay.REQUEST_PUBLIC_KEY, c))
    assert one(step.to_server) == (s, authrelay.REQUEST_PUBLIC_KEY)
    step = relay.feed_server(make_packets(b"\x01" + server_key.pem, s + 1))
    assert one(step.to_client) == (c + 1, b"\x01" + server_key.pem)
    encrypted = rsa_encrypt_password(PASSWORD + b"\x00", NONCE, server_key.pem)
    step = relay.feed_client(make_packets(encrypted, c + 2))
    assert one(step.to_server) == (s + 2, encrypted)
    finish(relay, s + 3, c + 3)


def test_fast_auth_needs_no_key_exchange():
    relay = LoginRelay(True, False, "disabled")
    relay.feed_server(make_packets(greeting(ssl=False), 0))
    relay.feed_client(make_packets(ssl_request(), 1))
    relay.feed_client(make_packets(handshake_response(ssl=True), 2))
    step = relay.feed_server(make_packets(b"\x01\x03", 2))  # fast auth success
    assert one(step.to_client) == (3, b"\x01\x03")
    step = relay.feed_server(make_packets(b"\x00\x00\x00\x02\x00\x00\x00", 3))
    assert one(step.to_client)[0] == 4 and step.result.ok


def test_auth_switch_is_renumbered_and_takes_the_new_nonce():
    relay = LoginRelay(True, False, "preferred")
    relay.feed_server(make_packets(greeting(ssl=True), 0))
    relay.feed_client(make_packets(handshake_response(ssl=False, plugin=b"mysql_native_password"), 1))
    new_nonce = bytes(range(100, 120))
    switch = b"\xfe" + b"mysql_native_password\x00" + new_nonce + b"\x00"
    step = relay.feed_server(make_packets(switch, 3))  # server leg: SSLRequest 1, response 2
    assert one(step.to_client) == (2, switch)
    assert relay._nonce == new_nonce
    step = relay.feed_client(make_packets(bytes(20), 3))
    assert one(step.to_server) == (4, bytes(20))
    step = relay.feed_server(make_packets(b"\x00\x00\x00\x02\x00\x00\x00", 5))
    assert one(step.to_client)[0] == 4 and step.result.ok


def test_access_denied_over_tls_names_the_client_certificate_limitation():
    relay = LoginRelay(True, False, "disabled")
    relay.feed_server(make_packets(greeting(ssl=False), 0))
    relay.feed_client(make_packets(ssl_request(), 1))
    relay.feed_client(make_packets(handshake_response(ssl=True), 2))
    denied = b"\xff\x15\x04#28000Access denied for user 'app'@'localhost'"
    step = relay.feed_server(make_packets(denied, 2))
    seq, payload = one(step.to_client)
    assert seq == 3 and payload.startswith(denied) and b"REQUIRE X509" in payload
    assert not step.result.ok


def test_plaintext_client_refused_when_tls_is_required():
    relay = LoginRelay(True, True, "preferred")
    relay.feed_server(make_packets(greeting(ssl=True), 0))
    step = relay.feed_client(make_packets(handshake_response(ssl=False), 1))
    seq, payload = one(step.to_client)
    assert step.close and seq == 2 and payload[1:3] == struct.pack("<H", 3159)
    assert step.to_server == b"" and step.ssl_request == b""  # nothing reached the server


def test_bytes_behind_the_ssl_request_are_handed_to_tls():
    relay = LoginRelay(True, False, "disabled")
    relay.feed_server(make_packets(greeting(ssl=False), 0))
    hello = b"\x16\x03\x01\x02\x00" + bytes(50)  # the start of a ClientHello
    step = relay.feed_client(make_packets(ssl_request(), 1) + hello)
    assert step.start_client_tls and step.read_ahead == hello


def test_upstream_tls_required_but_not_offered():
    relay = LoginRelay(True, False, "verify-identity")
    step = relay.feed_server(make_packets(greeting(ssl=False), 0))
    assert step.close and b"does not offer TLS" in one(step.to_client)[1]


def test_out_of_order_client_packet_is_a_protocol_error():
    relay = LoginRelay(True, False, "disabled")
    relay.feed_server(make_packets(greeting(ssl=False), 0))
    with pytest.raises(authrelay.ProtocolError):
        relay.feed_client(make_packets(handshake_response(ssl=False), 5))


def change_user_packet(plugin: bytes = b"caching_sha2_password") -> bytes:
    return b"\x11" + b"other\x00" + bytes((32,)) + bytes(32) + b"shop\x00" + b"\xff\x00" + plugin + b"\x00"


@pytest.mark.parametrize("client_tls", [True, False], ids=["client-tls", "server-tls"])
def test_change_user_with_legs_that_differ_repeats_the_key_exchange(client_tls, server_key):
    """After the login, COM_CHANGE_USER (packet 0 on both legs, already relayed) runs the same
    caching_sha2 matrix with the login's nonce."""
    relay, c, s = start(client_tls=client_tls, server_tls=not client_tls)
    if client_tls:
        relay.feed_client(make_packets(PASSWORD + b"\x00", c))
        relay.feed_server(make_packets(b"\x01" + server_key.pem, s + 1))
        relay.feed_server(make_packets(b"\x00\x00\x00\x02\x00\x00\x00", s + 3))
    else:
        step = relay.feed_client(make_packets(authrelay.REQUEST_PUBLIC_KEY, c))
        encrypted = rsa_encrypt_password(PASSWORD + b"\x00", NONCE, one(step.to_client)[1][1:])
        relay.feed_client(make_packets(encrypted, c + 2))
        relay.feed_server(make_packets(b"\x00\x00\x00\x02\x00\x00\x00", s + 1))
    assert relay.phase == authrelay.DONE
    relay.restart_for_change_user(change_user_packet(), int(CLIENT_CAPS))
    step = relay.feed_server(make_packets(authrelay.FULL_AUTH, 1))
    assert one(step.to_client) == (1, authrelay.FULL_AUTH)
    if client_tls:  # the password came over TLS: the plaintext server gets it encrypted
        step = relay.feed_client(make_packets(b"new-pw\x00", 2))
        assert one(step.to_server) == (2, authrelay.REQUEST_PUBLIC_KEY)
        step = relay.feed_server(make_packets(b"\x01" + server_key.pem, 3))
        seq, encrypted = one(step.to_server)
        assert seq == 4 and server_key.decrypt(encrypted, NONCE) == b"new-pw\x00"
        step = relay.feed_server(make_packets(b"\x00\x00\x00\x02\x00\x00\x00", 5))
        assert one(step.to_client)[0] == 3 and step.result.ok
    else:  # a plaintext client gets the proxy's key; the TLS server gets the password
        step = relay.feed_client(make_packets(authrelay.REQUEST_PUBLIC_KEY, 2))
        key_seq, key_packet = one(step.to_client)
        assert key_seq == 3
        step = relay.feed_client(make_packets(rsa_encrypt_password(b"new-pw\x00", NONCE, key_packet[1:]), 4))
        assert one(step.to_server) == (2, b"new-pw\x00")
        step = relay.feed_server(make_packets(b"\x00\x00\x00\x02\x00\x00\x00", 3))
        assert one(step.to_client)[0] == 5 and step.result.ok


def test_change_user_plugin_is_read_from_the_packet():
    assert authrelay.change_user_plugin(change_user_packet(b"mysql_native_password"), int(CLIENT_CAPS)) \
        == "mysql_native_password"
    assert authrelay.change_user_plugin(b"", int(CLIENT_CAPS)) is None


@pytest.mark.parametrize("switch", [False, True], ids=["in-response", "after-switch"])
def test_cleartext_plugins_never_cross_a_plaintext_server_leg(switch):
    relay = LoginRelay(True, False, "disabled")
    relay.feed_server(make_packets(greeting(ssl=False), 0))
    relay.feed_client(make_packets(ssl_request(), 1))
    if not switch:
        with pytest.raises(authrelay.ProtocolError, match="sha256_password sends the password"):
            relay.feed_client(make_packets(handshake_response(ssl=True, plugin=b"sha256_password"), 2))
        return
    relay.feed_client(make_packets(handshake_response(ssl=True), 2))
    relay.feed_server(make_packets(b"\xfemysql_clear_password\x00", 2))
    with pytest.raises(authrelay.ProtocolError, match="mysql_clear_password"):
        relay.feed_client(make_packets(PASSWORD + b"\x00", 4))
