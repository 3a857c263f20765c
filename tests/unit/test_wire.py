"""Literal-bytes tests of proxy.wire: framing, basic types, generic packets, connection phase.

The initial handshake below was captured from MariaDB 10.11.19 (the test suite's private
server); the other packets are written out field by field from the protocol documentation, so
the expected bytes are the protocol's, not a re-derivation of the code under test.
"""

from __future__ import annotations

import pytest

from proxy import wire
from proxy.wire import Capability, ProtocolError

# HandshakeV10 from MariaDB 10.11.19, payload only (the packet header was 68 00 00 00).
MARIADB_HANDSHAKE = bytes.fromhex(
    "0a"  # protocol_version 10
    "352e352e352d31302e31312e31392d4d6172696144422d302b646562313275312d6c6f6700"  # version
    "07000000"  # connection id 7
    "37312f3661655b76"  # auth-plugin-data-part-1
    "00"  # filler
    "fef7"  # capability_flags_1: no CLIENT_LONG_PASSWORD bit: MariaDB extended caps follow
    "2d"  # character_set 45 (utf8mb4_general_ci)
    "0200"  # status_flags: SERVER_STATUS_AUTOCOMMIT
    "ff81"  # capability_flags_2
    "15"  # auth_plugin_data_len 21
    "000000000000"  # reserved
    "1d000000"  # MariaDB extended capabilities: PROGRESS, STMT_BULK, EXT_METADATA, CACHE_META
    "5f5924415e34296f75213e5400"  # auth-plugin-data-part-2 (12 bytes + NUL)
    "6d7973716c5f6e61746976655f70617373776f726400"  # mysql_native_password
)


# -- framing ------------------------------------------------------------------------------------


def test_packet_header_and_read_header():
    assert wire.packet_header(0x0A0B0C, 7) == b"\x0c\x0b\x0a\x07"
    assert wire.packet_header(0, 256) == b"\x00\x00\x00\x00"  # sequence ids wrap
    assert wire.read_header(b"xx\x0c\x0b\x0a\x07", 2) == (0x0A0B0C, 7)


def test_make_packets_small_and_empty():
    assert wire.make_packets(b"\x0e", 0) == b"\x01\x00\x00\x00\x0e"
    assert wire.make_packets(b"", 3) == b"\x00\x00\x00\x03"


def test_make_packets_just_below_the_chunk_size_is_one_chunk():
    out = wire.make_packets(b"a" * 0xFFFFFE, 0)
    assert out[:4] == b"\xfe\xff\xff\x00" and len(out) == 4 + 0xFFFFFE


def test_make_packets_exactly_one_chunk_is_followed_by_an_empty_chunk():
    out = wire.make_packets(b"a" * 0xFFFFFF, 0)
    assert out[:4] == b"\xff\xff\xff\x00"
    assert out[4 + 0xFFFFFF :] == b"\x00\x00\x00\x01"


def test_make_packets_splits_at_0xffffff_and_numbers_the_chunks():
    payload = b"a" * 0xFFFFFF + b"b" * 0xFFFFFF + b"cde"
    out = wire.make_packets(payload, 254)
    assert out[:4] == b"\xff\xff\xff\xfe"
    second = 4 + 0xFFFFFF
    assert out[second : second + 4] == b"\xff\xff\xff\xff"
    third = 2 * second
    assert out[third:] == b"\x03\x00\x00\x00cde"  # sequence id wrapped from 255 to 0
    assert len(out) == len(payload) + 12


# -- basic types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfc\xfb\x00"),
        (0xFFFF, b"\xfc\xff\xff"),
        (0x10000, b"\xfd\x00\x00\x01"),
        (0xFFFFFF, b"\xfd\xff\xff\xff"),
        (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
        (2**64 - 1, b"\xfe" + b"\xff" * 8),
    ],
)
def test_length_encoded_integer(value, encoded):
    assert wire.length_encoded_integer(value) == encoded
    assert wire.read_length_encoded_integer(b"!" + encoded + b"?", 1) == (value, 1 + len(encoded))


def test_length_encoded_integer_null_and_invalid():
    assert wire.read_length_encoded_integer(b"\xfb", 0) == (None, 1)
    with pytest.raises(ProtocolError):
        wire.read_length_encoded_integer(b"\xff", 0)


@pytest.mark.parametrize("truncated", [b"", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe\x01\x02\x03"])
def test_truncated_length_encoded_integer_is_a_protocol_error(truncated):
    with pytest.raises(ProtocolError):
        wire.read_length_encoded_integer(truncated, 0)


def test_read_null_terminated():
    assert wire.read_null_terminated(b"xroot\x00db", 1) == (b"root", 6)
    with pytest.raises(ProtocolError):
        wire.read_null_terminated(b"root", 0)


# -- generic response packets -------------------------------------------------------------------


def test_make_err_packet():
    assert wire.make_err_packet(1, 1153, "08S01", "too big") == (
        b"\x10\x00\x00\x01"  # length 16, sequence id 1
        b"\xff"  # ERR header
        b"\x81\x04"  # error code 1153
        b"#08S01"  # sql_state_marker, sql_state
        b"too big"
    )


def test_parse_err_packet_captured_and_pre_41():
    # MariaDB's answer to an unknown command byte, captured.
    assert wire.parse_err_packet(b"\xff\x17\x04#08S01Unknown command") == (
        1047, "08S01", "Unknown command")
    assert wire.parse_err_packet(b"\xff\x15\x04Access denied") == (1045, "HY000", "Access denied")
    with pytest.raises(ProtocolError):
        wire.parse_err_packet(b"\x00\x00\x00\x02\x00\x00\x00")


def test_make_ok_packet():
    assert wire.make_ok_packet(2) == b"\x07\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00"
    assert wire.make_ok_packet(1, status=0x0003)[4:] == b"\x00\x00\x00\x03\x00\x00\x00"


def test_ok_and_eof_status_flags():
    # OK: header, affected_rows 300 (lenenc), last_insert_id 5, status IN_TRANS|AUTOCOMMIT.
    assert wire.ok_status_flags(b"\x00\xfc\x2c\x01\x05\x03\x00\x00\x00") == 0x0003
    # The OK (0xFE header) that ends a result set with CLIENT_DEPRECATE_EOF, captured.
    assert wire.ok_status_flags(b"\xfe\x00\x00\x02\x00\x00\x00") == 0x0002
    # EOF: header, warnings 1, status MORE_RESULTS|AUTOCOMMIT.
    assert wire.eof_status_flags(b"\xfe\x01\x00\x0a\x00") == 0x000A
    with pytest.raises(ProtocolError):
        wire.ok_status_flags(b"\x00\x00\x00\x02")
    with pytest.raises(ProtocolError):
        wire.eof_status_flags(b"\xfe\x00")
    with pytest.raises(ProtocolError):
        wire.ok_status_flags(b"\x00\xfc\x01")  # affected_rows cut short


# -- connection phase ---------------------------------------------------------------------------


def test_parse_captured_mariadb_handshake():
    handshake = wire.parse_initial_handshake(MARIADB_HANDSHAKE)
    assert handshake.protocol_version == 10
    assert handshake.server_version == "5.5.5-10.11.19-MariaDB-0+deb12u1-log"
    assert handshake.connection_id == 7
    assert handshake.capabilities == 0x1D_81FF_F7FE
    assert handshake.capabilities & Capability.CLIENT_DEPRECATE_EOF
    assert handshake.capabilities & Capability.MARIADB_CLIENT_CACHE_METADATA
    assert handshake.auth_plugin_name == "mysql_native_password"


def test_mask_captured_mariadb_handshake():
    masked = wire.mask_initial_handshake(MARIADB_HANDSHAKE)
    # Nothing offered here is masked: CLIENT_SSL (0x0800) is not offered, CLIENT_COMPRESS (0x0020)
    # is relayed (proxy/compression.py), and MariaDB's extended flags (PROGRESS, STMT_BULK,
    # EXT_METADATA, CACHE_METADATA) are framed by the tracker; COM_MULTI would go, but is not offered.
    assert masked == MARIADB_HANDSHAKE
    assert wire.parse_initial_handshake(masked).capabilities == 0x1D_81FF_F7FE


def test_mysql_style_handshake_has_no_extended_capabilities():
    # A MySQL 8 greeting sets CLIENT_LONG_PASSWORD; the 4 bytes after the reserved 6 are then
    # part of the filler, not capabilities.
    mysql8 = bytearray(MARIADB_HANDSHAKE.replace(b"5.5.5-10.11.19-MariaDB-0+deb12u1-log",
                                                b"8.4.3"))
    caps1 = mysql8.index(b"\xfe\xf7")
    mysql8[caps1 : caps1 + 2] = b"\xff\xff"
    parsed = wire.parse_initial_handshake(bytes(mysql8))
    assert parsed.capabilities == 0x81FF_FFFF and parsed.server_version == "8.4.3"
    masked = wire.mask_initial_handshake(bytes(mysql8))
    assert masked[caps1 : caps1 + 2] == b"\xff\xf7"  # CLIENT_SSL masked, CLIENT_COMPRESS kept
    assert masked[caps1 + 2 :] == bytes(mysql8[caps1 + 2 :])


@pytest.mark.parametrize("cut", [0, 1, 20, 45, 47, 50, 53, 54, 60])
def test_truncated_handshake_is_a_protocol_error_or_parses(cut):
    try:
        wire.parse_initial_handshake(MARIADB_HANDSHAKE[:cut])
        wire.mask_initial_handshake(MARIADB_HANDSHAKE[:cut])
    except ProtocolError:
        pass


def test_handshake_with_other_protocol_version_is_refused():
    with pytest.raises(ProtocolError):
        wire.parse_initial_handshake(b"\x09" + MARIADB_HANDSHAKE[1:])


# HandshakeResponse41 as PyMySQL sends it to a MariaDB server.
HANDSHAKE_RESPONSE = (
    b"\x0d\xa2\x2a\x00"  # capabilities: LONG_PASSWORD|LONG_FLAG|CONNECT_WITH_DB|PROTOCOL_41|...
    b"\x00\x00\x00\x01"  # max_packet_size 16 MiB
    b"\x2d"  # character set 45
    + b"\x00" * 23  # filler
    + b"at_admin\x00"  # username
    + b"\x14" + bytes(range(20))  # auth response, lenenc length (PLUGIN_AUTH_LENENC_CLIENT_DATA)
    + b"shop\x00"  # database
    + b"mysql_native_password\x00"  # client_plugin_name
)


def test_parse_handshake_response():
    response = wire.parse_handshake_response(HANDSHAKE_RESPONSE)
    assert response.capabilities == 0x002AA20D
    assert response.user == "at_admin" and response.database == "shop"
    assert not response.is_ssl_request


def test_parse_handshake_response_secure_connection_and_mariadb_extended_caps():
    # No CLIENT_LONG_PASSWORD: a MariaDB client puts its extended flags in the last 4 filler
    # bytes; 1-byte auth length (CLIENT_SECURE_CONNECTION only); no database.
    payload = (b"\x04\x82\x08\x00" + b"\x00\x00\x00\x01\x2d" + b"\x00" * 19 + b"\x08\x00\x00\x00"
               + b"bob\x00" + b"\x03abc" + b"mysql_native_password\x00")
    response = wire.parse_handshake_response(payload)
    assert response.capabilities == 0x08_0008_8204
    assert response.user == "bob" and response.database is None


def test_ssl_request_is_recognised():
    ssl_request = b"\x04\xaa\x0a\x00" + b"\x00\x00\x00\x01\x2d" + b"\x00" * 23  # CLIENT_SSL set
    response = wire.parse_handshake_response(ssl_request)
    assert response.is_ssl_request and response.user == ""


@pytest.mark.parametrize(
    "payload",
    [
        HANDSHAKE_RESPONSE[:31],  # too short
        b"\x0d\xa0\x2a\x00" + HANDSHAKE_RESPONSE[4:],  # no CLIENT_PROTOCOL_41
        HANDSHAKE_RESPONSE[:36],  # user without terminator
        HANDSHAKE_RESPONSE[:41],  # ends right after the user: no auth response length
        HANDSHAKE_RESPONSE[:32] + b"u\x00\xfc",  # auth length cut short
    ],
)
def test_malformed_handshake_response_is_a_protocol_error(payload):
    with pytest.raises(ProtocolError):
        wire.parse_handshake_response(payload)


def test_mask_handshake_response():
    asks_compress_and_ssl = b"\x2d\xaa\x2a\x00" + HANDSHAKE_RESPONSE[4:]
    masked = wire.mask_handshake_response(asks_compress_and_ssl)
    # CLIENT_SSL is masked, CLIENT_COMPRESS relayed (proxy/compression.py).
    assert masked[:4] == b"\x2d\xa2\x2a\x00" and masked[4:] == asks_compress_and_ssl[4:]
    # MariaDB extended flags (no LONG_PASSWORD): COM_MULTI (bit 33) is masked, PROGRESS and
    # EXT_METADATA kept.
    mariadb = b"\x04\x82\x08\x00" + b"\x00" * 24 + b"\x0b\x00\x00\x00" + b"bob\x00\x00"
    assert wire.mask_handshake_response(mariadb)[28:32] == b"\x09\x00\x00\x00"


def test_parse_change_user():
    payload = (b"\x11" + b"app\x00" + b"\x14" + b"\x01" * 20 + b"shop\x00" + b"\x2d\x00"
               + b"mysql_native_password\x00")
    assert wire.parse_change_user(payload, Capability.CLIENT_SECURE_CONNECTION) == ("app", "shop")
    no_db = b"\x11app\x00\x00\x00\x2d\x00mysql_native_password\x00"
    assert wire.parse_change_user(no_db, Capability.CLIENT_SECURE_CONNECTION) == ("app", None)
    old_style = b"\x11app\x00scrambled\x00shop\x00"
    assert wire.parse_change_user(old_style, 0) == ("app", "shop")
    with pytest.raises(ProtocolError):
        wire.parse_change_user(b"\x11app", Capability.CLIENT_SECURE_CONNECTION)
    with pytest.raises(ProtocolError):
        wire.parse_change_user(b"\x11app\x00", Capability.CLIENT_SECURE_CONNECTION)
