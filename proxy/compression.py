"""MySQL protocol compression (``CLIENT_COMPRESS``, zlib): its framing, and the relay's codec.

Framing (pure functions). After authentication a compressed session sends every byte inside
compressed packets: a 7-byte header, ``compressed_payload_length`` (3 bytes, little-endian),
``compressed_sequence_id`` (1 byte), ``uncompressed_payload_length`` (3 bytes; 0 means the payload
is stored as it is), then the payload, zlib-deflated unless stored. What the payloads carry, put
end to end, is the ordinary stream of plain MySQL packets: one compressed packet may hold several
plain packets, or a piece of one (a plain packet of 16 MiB does not fit in one). Senders store
payloads under ``MIN_COMPRESS_LENGTH`` bytes (MySQL's rule: deflating them gains nothing), and
any payload that deflating would not shrink.

Sequence ids: the compressed sequence id is one counter per connection (per leg), shared by both
directions and reset to 0 at each command, like the plain one. The sequence ids of the plain
packets inside do not run on as in a plain session (the sender resynchronises its plain counter
to the compressed one when it flushes: after a LOAD DATA LOCAL upload of several packets, the
server's OK carries the compressed counter's next id), and the receivers do not check them; so
the tracker does not check them either in a compressed session (``check_sequence_ids``).

The relay's codec (``CompressedSession``): a pass-through, not a re-encoder. Both legs of a
compressed session are compressed (the client asked; the proxy relays its capability upstream),
so the compressed packets each side sends are forwarded to the other side byte for byte, with
their own sequence ids; the proxy only inflates a copy of each for the tracker, which sees plain
packets as in any session. Why not decompress and compress again: deflating costs several
times what inflating does, and the server's packets are already deflated once. Packets the
proxy makes itself (an ERR in place of the server's answer) take the next sequence id of the
leg. A client packet is forwarded once the tracker has let every plain byte in it go (the gate
holds commands at command boundaries: the packet that carries a held command is held whole).
A command the DDL holder answers (proxy.ddlhold) is never forwarded: its packets are dropped
(``carries_only``, ``drop_held``), the holder talks to the server over its own compressed
link (proxy.ddllink) and its answer goes to the client through ``to_client``.

Failure rule: a malformed compressed packet (bad zlib data, a length that does not match) raises
``ProtocolError``, which ends that one session. zstd (``CLIENT_ZSTD_COMPRESSION_ALGORITHM``,
MySQL 8.0.18+ only) is not supported: ``proxy.wire`` masks it, so a client that also permits zlib
gets zlib, and one that permits zstd alone gets an uncompressed session (MySQL's own fallback
when client and server share no algorithm).
"""

from __future__ import annotations

import zlib
from collections import deque

from proxy.wire import ProtocolError

COMPRESSED_HEADER_SIZE = 7
MAX_COMPRESSED_PAYLOAD = 0xFFFFFF  # the 3-byte length fields: more goes into the next packet
MIN_COMPRESS_LENGTH = 50  # MySQL's MIN_COMPRESS_LENGTH: shorter payloads are stored
COMPRESSION_LEVEL = 6  # zlib's default, what MySQL and MariaDB use


# -- framing -----------------------------------------------------------------------------------------


def compressed_header(compressed_length: int, sequence_id: int, uncompressed_length: int) -> bytes:
    """The 7-byte header of a compressed packet."""
    return (compressed_length.to_bytes(3, "little") + bytes((sequence_id & 0xFF,))
            + uncompressed_length.to_bytes(3, "little"))


def read_compressed_header(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int, int]:
    """(compressed_payload_length, compressed_sequence_id, uncompressed_payload_length)."""
    return (buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16, buf[pos + 3],
            buf[pos + 4] | buf[pos + 5] << 8 | buf[pos + 6] << 16)


def make_compressed_packet(payload: bytes, sequence_id: int, level: int = COMPRESSION_LEVEL) -> bytes:
    """One compressed packet carrying ``payload`` (at most 16 MiB - 1 bytes): deflated, or
    stored when it is short or deflating does not shrink it."""
    if len(payload) > MAX_COMPRESSED_PAYLOAD:
        raise ValueError(f"{len(payload)} bytes do not fit in one compressed packet")
    if len(payload) >= MIN_COMPRESS_LENGTH:
        deflated = zlib.compress(payload, level)
        if len(deflated) < len(payload):
            return compressed_header(len(deflated), sequence_id, len(payload)) + deflated
    return compressed_header(len(payload), sequence_id, 0) + payload


def make_compressed_packets(data: bytes, sequence_id: int,
                            level: int = COMPRESSION_LEVEL) -> tuple[bytes, int]:
    """``data`` (plain packets) in as many compressed packets as it needs; returns them and the
    sequence id that follows."""
    out = []
    for start in range(0, max(len(data), 1), MAX_COMPRESSED_PAYLOAD):
        out.append(make_compressed_packet(data[start:start + MAX_COMPRESSED_PAYLOAD], sequence_id, level))
        sequence_id = (sequence_id + 1) & 0xFF
    return b"".join(out), sequence_id


def inflate(payload: bytes | memoryview, uncompressed_length: int) -> bytes:
    """The content of a compressed packet's payload; ``ProtocolError`` unless it is exactly
    ``uncompressed_length`` bytes of well-formed zlib data (0: the payload is stored)."""
    if not uncompressed_length:
        return bytes(payload)
    inflater = zlib.decompressobj()
    try:
        # Bounded: a few bytes of zlib may claim gigabytes.
        content = inflater.decompress(payload, uncompressed_length + 1)
    except zlib.error as exc:
        raise ProtocolError(f"compressed packet does not inflate: {exc}") from None
    if len(content) != uncompressed_length or not inflater.eof or inflater.unused_data:
        raise ProtocolError(f"compressed packet inflates to {len(content)}"
                            f"{'' if inflater.eof else '+'} bytes, its header says {uncompressed_length}")
    return content


class LegSequence:
    """The next compressed sequence id of one leg, as both its peers count it: each reads the
    other's id and goes on from it, so the two directions of a leg share the counter."""

    __slots__ = ("next_id",)

    def __init__(self) -> None:
        self.next_id = 0


class CompressedPacketReader:
    """Splits one direction's bytes into whole compressed packets (keeping a partial one)."""

    def __init__(self, sequence: LegSequence | None = None) -> None:
        self._buf = b""
        self.last_sequence_id: int | None = None  # of the last whole packet read
        self.sequence = sequence or LegSequence()

    @property
    def partial(self) -> bool:
        """A packet has begun and not ended."""
        return bool(self._buf)

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """(the packet as received, its inflated content) for each packet ``data`` completes."""
        buf = self._buf + data if self._buf else data
        packets = []
        pos, n = 0, len(buf)
        while n - pos >= COMPRESSED_HEADER_SIZE:
            length, seq, uncompressed = read_compressed_header(buf, pos)
            end = pos + COMPRESSED_HEADER_SIZE + length
            if end > n:
                break
            self.last_sequence_id = seq
            self.sequence.next_id = (seq + 1) & 0xFF  # even if it turns out malformed
            try:
                content = inflate(memoryview(buf)[pos + COMPRESSED_HEADER_SIZE:end], uncompressed)
            except ProtocolError:
                self._buf = buf[pos:]  # stays ``partial``: nothing may be sent after it
                raise
            packets.append((buf[pos:end], content))
            pos = end
        self._buf = buf[pos:]
        return packets


# -- the relay's codec ------------------------------------------------------------------------------


class CompressedSession:
    """Both directions of one compressed session (see the module docstring).

    Client -> server: ``from_client`` inflates what arrived for the tracker; once the tracker has
    let ``n`` more plain bytes go, ``forwarded(n)`` gives the client's packets that are now
    entirely forwarded. Server -> client: ``from_server`` inflates a copy for the tracker; the
    bytes themselves go to the client as they are."""

    def __init__(self) -> None:
        self._sequence = LegSequence()
        self._client = CompressedPacketReader(self._sequence)
        self._server = CompressedPacketReader(self._sequence)
        # Client packets not yet forwarded, with how many plain bytes each carries; the first
        # ``_covered`` plain bytes of them are already let go by the tracker.
        self._waiting: deque[tuple[bytes, int]] = deque()
        self._covered = 0

    def from_client(self, data: bytes) -> bytes:
        """The plain bytes inside the client packets ``data`` completes."""
        packets = self._client.feed(data)
        if not packets:
            return b""
        self._waiting.extend((raw, len(content)) for raw, content in packets)
        return packets[0][1] if len(packets) == 1 else b"".join(c for _, c in packets)

    def forwarded(self, plain_bytes: int) -> bytes:
        """The tracker let ``plain_bytes`` more plain bytes go: the client packets to forward."""
        covered = self._covered + plain_bytes
        waiting = self._waiting
        out = []
        while waiting and waiting[0][1] <= covered:
            raw, size = waiting.popleft()
            covered -= size
            out.append(raw)
        self._covered = covered
        return out[0] if len(out) == 1 else b"".join(out)

    def drop_held(self) -> bool:
        """The held command was answered with an ERR instead of being run: drop the packets that
        carry it. False when they carry more than it (then the session cannot go on)."""
        if self._covered or self._client.partial:
            return False
        self._waiting.clear()
        return True

    def carries_only(self, plain_bytes: int) -> bool:
        """The client packets waiting to go carry exactly the last ``plain_bytes`` read and
        nothing else: whole, none of it let go yet (then ``drop_held`` can take them back)."""
        return (not self._covered and not self._client.partial
                and sum(size for _, size in self._waiting) == plain_bytes)

    def from_server(self, data: bytes) -> bytes:
        """The plain bytes inside the server packets ``data`` completes."""
        packets = self._server.feed(data)
        if not packets:
            return b""
        return packets[0][1] if len(packets) == 1 else b"".join(c for _, c in packets)

    def to_client(self, plain: bytes) -> bytes | None:
        """Plain packets the proxy sends the client itself, compressed with the leg's next
        sequence id; None in the middle of a server packet (they cannot go there)."""
        if self._server.partial:
            return None
        out, self._sequence.next_id = make_compressed_packets(plain, self._sequence.next_id)
        return out
