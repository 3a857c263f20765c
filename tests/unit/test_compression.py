"""proxy/compression.py: the compressed packet framing and the relay's codec, on literal bytes."""

from __future__ import annotations

import zlib

import pytest

from proxy import wire
from proxy.compression import (
    MAX_COMPRESSED_PAYLOAD,
    CompressedPacketReader,
    CompressedSession,
    compressed_header,
    inflate,
    make_compressed_packet,
    make_compressed_packets,
    read_compressed_header,
)
from proxy.wire import ProtocolError

# COM_QUERY "SELECT 1" as a plain packet: 9 bytes of payload, sequence id 0.
SELECT_1 = bytes.fromhex("09000000" "03" "53454c4543542031")
# The same in a compressed packet: 13 bytes, compressed sequence id 0, stored (uncompressed
# length 0: under 50 bytes, MySQL does not deflate).
SELECT_1_COMPRESSED = bytes.fromhex("0d0000" "00" "000000") + SELECT_1
# A row packet of 64 'a' (sequence id 1), deflated by zlib at level 6: 68 bytes become 15.
ROW_A64 = bytes.fromhex("40000001") + b"a" * 64
ROW_A64_DEFLATED = bytes.fromhex("789c736060604ca410000025d21882")
ROW_A64_COMPRESSED = bytes.fromhex("0f0000" "01" "440000") + ROW_A64_DEFLATED
OK_PACKET = bytes.fromhex("07000002" "00000002000000")  # OK, autocommit, sequence id 2


def test_header_fields():
    assert compressed_header(0x0F, 1, 0x44) == bytes.fromhex("0f000001440000")
    assert read_compressed_header(ROW_A64_COMPRESSED) == (15, 1, 68)
    assert read_compressed_header(b"\xff\xff\xff\x07\xfe\xff\xff") == (0xFFFFFF, 7, 0xFFFFFE)


def test_small_payload_is_stored():
    assert make_compressed_packet(SELECT_1, 0) == SELECT_1_COMPRESSED
    assert inflate(SELECT_1, 0) == SELECT_1


def test_payload_of_50_bytes_or_more_is_deflated():
    assert make_compressed_packet(ROW_A64, 1) == ROW_A64_COMPRESSED
    assert inflate(ROW_A64_DEFLATED, 68) == ROW_A64


def test_payload_that_does_not_shrink_is_stored():
    noise = bytes(range(7, 256, 4))  # 63 bytes, none repeated: zlib cannot shrink them
    assert len(zlib.compress(noise)) >= len(noise)
    assert make_compressed_packet(noise, 5) == compressed_header(len(noise), 5, 0) + noise


def test_reader_splits_packets_and_keeps_a_partial_one():
    stream = SELECT_1_COMPRESSED + ROW_A64_COMPRESSED
    reader = CompressedPacketReader()
    assert reader.feed(stream[:5]) == [] and reader.partial
    packets = reader.feed(stream[5:25])
    assert packets == [(SELECT_1_COMPRESSED, SELECT_1)] and reader.partial
    assert reader.feed(stream[25:]) == [(ROW_A64_COMPRESSED, ROW_A64)]
    assert not reader.partial and reader.last_sequence_id == 1


def test_several_plain_packets_in_one_compressed_packet():
    # A result's last row and its OK in one deflated packet, as servers send them.
    plain = ROW_A64 + OK_PACKET
    packet = make_compressed_packet(plain, 1)
    assert read_compressed_header(packet) == (len(packet) - 7, 1, 79)
    assert CompressedPacketReader().feed(packet) == [(packet, plain)]


def test_plain_packet_over_16_mib_spans_compressed_packets():
    # A 16 MiB + 10 byte COM_QUERY: two plain chunks (0xFFFFFF and 11 bytes), whose 16 MiB + 18
    # bytes need two compressed packets of at most 0xFFFFFF bytes each.
    query = b"\x03" + b"x" * (MAX_COMPRESSED_PAYLOAD + 9)
    plain = wire.make_packets(query, 0)
    assert len(plain) == MAX_COMPRESSED_PAYLOAD + 18
    stream, next_seq = make_compressed_packets(plain, 0)
    assert next_seq == 2
    first_length, first_seq, first_plain = read_compressed_header(stream)
    assert (first_seq, first_plain) == (0, MAX_COMPRESSED_PAYLOAD)
    second = stream[7 + first_length:]
    assert read_compressed_header(second) == (len(second) - 7, 1, 0)  # 19 bytes: stored
    assert second[7:] == plain[MAX_COMPRESSED_PAYLOAD:]
    reader = CompressedPacketReader()
    contents = [c for piece in range(0, len(stream), 1 << 20)
                for _, c in reader.feed(stream[piece:piece + (1 << 20)])]
    assert b"".join(contents) == plain and reader.last_sequence_id == 1


@pytest.mark.parametrize(
    "packet, reason",
    [
        (bytes.fromhex("0f0000" "01" "440000") + b"\x00" * 15, "does not inflate"),  # not zlib
        (bytes.fromhex("0f0000" "01" "450000") + ROW_A64_DEFLATED, "header says 69"),
        (bytes.fromhex("0f0000" "01" "430000") + ROW_A64_DEFLATED, "to 68 bytes, its header says 67"),
        (bytes.fromhex("110000" "01" "440000") + ROW_A64_DEFLATED + b"\x00\x00", "header says 68"),  # trailing bytes
    ],
)
def test_malformed_compressed_packet_is_a_protocol_error(packet, reason):
    reader = CompressedPacketReader()
    with pytest.raises(ProtocolError, match=reason):
        reader.feed(packet)
    assert reader.partial  # nothing may be sent after it


def test_zlib_bomb_is_refused_without_inflating_it():
    bomb = zlib.compress(b"\x00" * (64 << 20))
    with pytest.raises(ProtocolError, match="100"):
        inflate(bomb, 100)


def test_client_packets_go_on_once_the_tracker_lets_their_bytes_go():
    session = CompressedSession()
    two_queries = make_compressed_packet(SELECT_1 + SELECT_1, 0)
    assert session.from_client(two_queries) == SELECT_1 + SELECT_1
    assert session.forwarded(len(SELECT_1)) == b""  # half of its content: it waits
    assert session.forwarded(len(SELECT_1)) == two_queries
    assert session.from_client(SELECT_1_COMPRESSED[:3]) == b""
    assert session.from_client(SELECT_1_COMPRESSED[3:] + SELECT_1_COMPRESSED) == SELECT_1 + SELECT_1
    assert session.forwarded(2 * len(SELECT_1)) == SELECT_1_COMPRESSED * 2


def test_held_command_is_dropped_only_when_its_packets_carry_nothing_else():
    session = CompressedSession()
    session.from_client(SELECT_1_COMPRESSED)
    assert session.drop_held()
    assert session.forwarded(0) == b""  # gone: never forwarded
    session.from_client(make_compressed_packet(OK_PACKET + SELECT_1, 3))
    session.forwarded(len(OK_PACKET))  # the first part went on, the second is held
    assert not session.drop_held()


def test_packets_the_proxy_sends_take_the_legs_next_sequence_id():
    session = CompressedSession()
    session.from_client(SELECT_1_COMPRESSED)  # compressed sequence id 0
    err = wire.make_err_packet(1, 1290, "HY000", "held")
    assert session.to_client(err) == compressed_header(len(err), 1, 0) + err
    session.from_server(ROW_A64_COMPRESSED[:10])
    assert session.to_client(err) is None  # cannot go in the middle of a server packet
    session.from_server(ROW_A64_COMPRESSED[10:] + make_compressed_packet(OK_PACKET, 2))
    sent = session.to_client(err)
    assert read_compressed_header(sent)[1] == 3
