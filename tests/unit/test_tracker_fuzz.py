"""Hypothesis fuzz of proxy.tracker: framing and response tracking over generated conversations.

Valid conversations are built here from the protocol documentation, independently of the
tracker: a command and its server response of every kind (OK, ERR, result sets with and without
CLIENT_DEPRECATE_EOF, multi-results, LOCAL INFILE, prepared statements, cursors, COM_FIELD_LIST,
COM_STATISTICS, COM_CHANGE_USER with an auth switch, packets of 16 MiB and more), and fed to the
tracker cut into random pieces. Properties:

* the tracker forwards every byte unchanged, and is busy exactly until the last byte of each
  response (cut one byte before every response end to see the edge), then idle, with the
  transaction flag of the last status it saw;
* pipelined commands: the number of pending responses drops exactly at each response end;
* random and mutated bytes only ever raise ``ProtocolError`` (never another exception).

Bounded example counts keep the whole file well under 30 s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.tracker import COMMAND, SessionTracker
from proxy.wire import ProtocolError
from proxy.wire import length_encoded_integer as lenenc

MAX_CHUNK = 0xFFFFFF
DEPRECATE_EOF = 1 << 24
IN_TRANS = 0x0001
AUTOCOMMIT = 0x0002
MORE_RESULTS = 0x0008
CURSOR_EXISTS = 0x0040
LAST_ROW_SENT = 0x0080

# Captured MariaDB 10.11 HandshakeV10 (see tests/unit/test_wire.py), as a whole packet.
HANDSHAKE_PAYLOAD = bytes.fromhex(
    "0a352e352e352d31302e31312e31392d4d6172696144422d302b646562313275312d6c6f6700070000003731"
    "2f3661655b7600fef72d0200ff81150000000000001d0000005f5924415e34296f75213e54006d7973716c5f"
    "6e61746976655f70617373776f726400"
)
CLIENT_CAPS = 0x002AA20D | (1 << 16) | (1 << 7)  # PyMySQL's, plus MULTI_STATEMENTS, LOCAL_FILES



def fuzz_settings(examples: int) -> settings:
    """Bounded, reproducible runs: the fuzz is part of the normal suite."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
    )


# -- building conversations -----------------------------------------------------------------------


def frame(payload: bytes, seq: int) -> tuple[bytes, int]:
    """A logical packet split into chunks; returns (bytes, next sequence id)."""
    out = bytearray()
    pos = 0
    while True:
        chunk = payload[pos : pos + MAX_CHUNK]
        out += len(chunk).to_bytes(3, "little") + bytes((seq & 0xFF,)) + chunk
        seq = (seq + 1) & 0xFF
        pos += len(chunk)
        if len(chunk) < MAX_CHUNK:
            return bytes(out), seq




@dataclass
class Exchange:
    """One command and its response: alternating client/server segments of bytes."""

    kind: str
    segments: list[tuple[str, bytes]] = field(default_factory=list)
    status: int | None = None  # the status flags the response leaves (None: unchanged)
    pipelinable: bool = True
    packets: list[tuple[str, bytes, int]] = field(default_factory=list)  # side, payload, seq


class Builder:
    """Packets of one exchange, with the sequence ids running on across both directions."""

    def __init__(self, draw, deprecate_eof: bool, big: bool = True):
        self.draw = draw
        self.deprecate_eof = deprecate_eof
        self.big = big
        self.seq = 0
        self.segments: list[tuple[str, bytes]] = []
        self.packets: list[tuple[str, bytes, int]] = []

    def add(self, side: str, payload: bytes) -> None:
        self.packets.append((side, payload, self.seq))
        data, self.seq = frame(payload, self.seq)
        if self.segments and self.segments[-1][0] == side:
            self.segments[-1] = (side, self.segments[-1][1] + data)
        else:
            self.segments.append((side, data))

    def client(self, payload: bytes) -> None:
        self.add("c", payload)

    def server(self, payload: bytes) -> None:
        self.add("s", payload)

    # server packets
    def status(self) -> int:
        return self.draw(st.sampled_from([AUTOCOMMIT, AUTOCOMMIT | IN_TRANS, IN_TRANS, 0,
                                          AUTOCOMMIT | 0x0020, IN_TRANS | 0x4000]))

    def ok(self, status: int, header: int = 0x00) -> bytes:
        affected = self.draw(st.sampled_from([0, 1, 250, 251, 70000, 1 << 24, 1 << 40]))
        info = self.draw(st.sampled_from([b"", b"Rows matched: 1  Changed: 1  Warnings: 0"]))
        return bytes((header,)) + lenenc(affected) + lenenc(7) + struct.pack("<HH", status, 0) + info

    def eof(self, status: int) -> bytes:
        return b"\xfe" + struct.pack("<HH", 0, status)

    def terminator(self, status: int) -> bytes:
        return self.ok(status, 0xFE) if self.deprecate_eof else self.eof(status)

    def err(self) -> bytes:
        return b"\xff\x7a\x04#42S02Table 'x' doesn't exist"

    def coldef(self, many: bool = False) -> bytes:
        name = b"c" if many else self.draw(st.binary(min_size=1, max_size=12))
        return (b"\x03def\x01d\x01t\x01t" + lenenc(len(name)) + name + lenenc(len(name)) + name
                + b"\x0c\x2d\x00\x14\x00\x00\x00\xfd\x00\x00\x00\x00\x00")

    def text_row(self, columns: int) -> bytes:
        if columns > 3:
            return b"\x01a\xfb" * (columns // 2) + b"\x00" * (columns % 2)
        out = b""
        for _ in range(columns):
            value = self.draw(st.one_of(st.none(), st.binary(max_size=300)))
            out += b"\xfb" if value is None else lenenc(len(value)) + value
        return out

    def binary_row(self, columns: int) -> bytes:
        bitmap = bytes((columns + 9) // 8)
        if columns > 3:
            return b"\x00" + bitmap + b"\x01b" * columns
        return b"\x00" + bitmap + b"".join(
            lenenc(len(v)) + v for v in
            (self.draw(st.binary(max_size=40)) for _ in range(columns)))

    def big_row(self) -> bytes:
        """A text row of 16 MiB or more, or of exactly 0xFFFFFF bytes (then an empty chunk)."""
        size = self.draw(st.sampled_from([MAX_CHUNK - 4, MAX_CHUNK - 5, MAX_CHUNK, 1 << 24]))
        return lenenc(size) + b"\xfe" * size

    def result_set(self, status: int, binary: bool = False) -> None:
        """Column count, definitions, (EOF), rows, terminator carrying ``status``."""
        columns = self.draw(st.sampled_from([1, 2, 3, 251]))
        self.server(lenenc(columns))
        for _ in range(columns):
            self.server(self.coldef(many=columns > 3))
        if not self.deprecate_eof:
            self.server(self.eof(self.status() & ~MORE_RESULTS))
        for _ in range(self.draw(st.integers(0, 4))):
            if self.big and not binary and columns == 1 and self.draw(st.integers(0, 40)) == 0:
                self.server(self.big_row())
            else:
                self.server(self.binary_row(columns) if binary else self.text_row(columns))
        self.server(self.terminator(status))

    def results(self, binary: bool = False) -> int:
        """Results of COM_QUERY / COM_STMT_EXECUTE, chained by SERVER_MORE_RESULTS_EXISTS;
        returns the final status (or -1 when an ERR ended it)."""
        for _ in range(self.draw(st.integers(0, 3)) if not binary else 0):
            more = self.status() | MORE_RESULTS
            if self.draw(st.booleans()):
                self.server(self.ok(more))
            else:
                self.result_set(more, binary)
        last = self.draw(st.sampled_from(["ok", "rows", "err"]))
        status = self.status()
        if last == "ok":
            self.server(self.ok(status))
        elif last == "rows":
            self.result_set(status, binary)
        else:
            self.server(self.err())
            return -1
        return status


@st.composite
def exchanges(draw, deprecate_eof: bool, big: bool = True) -> Exchange:
    """One command with a valid server response; ``big``: packets of 16 MiB and more too."""
    b = Builder(draw, deprecate_eof, big)
    kind = draw(st.sampled_from([
        "query", "query", "query", "infile", "prepare", "execute", "cursor", "fetch", "close",
        "long_data", "field_list", "simple", "statistics", "set_option", "change_user",
        "process_info", *(["big_query"] if big else []),
    ]))
    status: int | None = None
    pipelinable = True
    if kind == "query":
        b.client(b"\x03" + draw(st.sampled_from([b"SELECT 1", b"USE shop", b"x" * 600])))
        status = b.results()
    elif kind == "big_query":
        b.client(b"\x03" + b"q" * draw(st.sampled_from([MAX_CHUNK - 1, MAX_CHUNK, 1 << 24])))
        status = b.status()
        b.server(b.ok(status))
    elif kind == "infile":
        pipelinable = False
        b.client(b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t")
        b.server(b"\xfbf")
        for _ in range(draw(st.integers(0, 3))):
            b.client(draw(st.binary(min_size=1, max_size=2000)))
        b.client(b"")
        status = b.status()
        if draw(st.booleans()):
            b.server(b.ok(status))
        else:
            b.server(b.err())
            status = None
    elif kind == "prepare":
        b.client(b"\x16SELECT ?, ?")
        if draw(st.booleans()):
            b.server(b.err())
        else:
            columns, params = draw(st.integers(0, 3)), draw(st.integers(0, 3))
            b.server(b"\x00" + struct.pack("<IHHBH", 1, columns, params, 0, 0))
            for count in (params, columns):
                for _ in range(count):
                    b.server(b.coldef())
                if count and not deprecate_eof:
                    b.server(b.eof(b.status()))
    elif kind == "execute":
        b.client(b"\x17" + struct.pack("<IBI", 1, 0, 1))
        status = b.results(binary=True)
    elif kind == "cursor":  # COM_STMT_EXECUTE opening a read-only cursor
        b.client(b"\x17" + struct.pack("<IBI", 1, 1, 1))
        columns = draw(st.integers(1, 3))
        b.server(lenenc(columns))
        for _ in range(columns):
            b.server(b.coldef())
        status = b.status() | CURSOR_EXISTS
        b.server(b.terminator(status))
    elif kind == "fetch":
        b.client(b"\x1c" + struct.pack("<II", 1, 5))
        if draw(st.booleans()):
            b.server(b.err())
        else:
            for _ in range(draw(st.integers(0, 5))):
                b.server(b.binary_row(2))
            status = b.status() | draw(st.sampled_from([CURSOR_EXISTS, LAST_ROW_SENT]))
            b.server(b.terminator(status))
    elif kind == "close":
        b.client(b"\x19" + struct.pack("<I", 1))
    elif kind == "long_data":
        b.client(b"\x18" + struct.pack("<IH", 1, 0) + draw(st.binary(max_size=100)))
    elif kind == "field_list":
        b.client(b"\x04t\x00")
        if draw(st.booleans()):
            b.server(b.err())
        else:
            for _ in range(draw(st.integers(0, 3))):
                b.server(b.coldef())
            status = b.status()
            b.server(b.terminator(status))
    elif kind == "simple":  # OK or ERR: COM_PING, COM_INIT_DB, COM_RESET_CONNECTION, ...
        b.client(draw(st.sampled_from([b"\x0e", b"\x02shop", b"\x1f", b"\x1a\x01\x00\x00\x00",
                                       b"\x0c\x07\x00\x00\x00", b"\x07\x00", b"\x00"])))
        status = b.status()
        if draw(st.booleans()):
            b.server(b.ok(status))
        else:
            b.server(b.err())
            status = None
    elif kind == "statistics":
        b.client(b"\x09")
        b.server(b"Uptime: 5  Threads: 1  Questions: 2  Slow queries: 0  Opens: 17")
    elif kind == "set_option":
        b.client(b"\x1b" + struct.pack("<H", draw(st.integers(0, 1))))
        status = b.status()
        b.server(b.terminator(status))
    elif kind == "process_info":
        b.client(b"\x0a")
        status = b.status()
        b.result_set(status)
    elif kind == "change_user":
        pipelinable = False
        b.client(b"\x11bob\x00\x14" + b"\x01" * 20 + b"shop\x00\x2d\x00mysql_native_password\x00")
        if draw(st.booleans()):  # auth switch to another plugin, the client answers
            b.server(b"\xfeclient_ed25519\x00" + b"\x02" * 32)
            b.client(b"\x03" * 64)
        if draw(st.booleans()):  # auth-more-data (e.g. caching_sha2 fast auth success)
            b.server(b"\x01\x03")
        status = b.status()
        if draw(st.booleans()):
            b.server(b.ok(status))
        else:
            b.server(b.err())
            status = None
    if status == -1:
        status = None
    return Exchange(kind, b.segments, status, pipelinable, b.packets)


def new_session(deprecate_eof: bool) -> SessionTracker:
    """A tracker past a real MariaDB handshake and a successful login."""
    tracker = SessionTracker()
    handshake, _ = frame(HANDSHAKE_PAYLOAD, 0)
    assert tracker.feed_server(handshake)[:4] == handshake[:4]
    caps = CLIENT_CAPS | (DEPRECATE_EOF if deprecate_eof else 0)
    response = (struct.pack("<IIB23s", caps, 1 << 24, 45, b"") + b"app\x00\x14" + b"\x05" * 20
                + b"mysql_native_password\x00")
    data, _ = frame(response, 1)
    assert tracker.feed_client(data) == data
    ok, _ = frame(b"\x00\x00\x00\x02\x00\x00\x00", 2)
    assert tracker.feed_server(ok) == ok
    assert tracker.phase == COMMAND and not tracker.busy
    assert tracker.deprecate_eof is deprecate_eof
    return tracker


def cut_points(draw, size: int, must: tuple[int, ...] = ()) -> list[int]:
    """Sorted positions in (0, size) where a byte stream is cut, including ``must``."""
    cuts = set(draw(st.lists(st.integers(1, max(1, size - 1)), max_size=6)))
    cuts.update(p for p in must if 0 < p < size)
    return sorted(c for c in cuts if 0 < c < size)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# -- properties ------------------------------------------------------------------------------------


@fuzz_settings(80)
@given(data=st.data(), deprecate_eof=st.booleans())
def test_busy_exactly_until_each_response_ends(data, deprecate_eof):
    tracker = new_session(deprecate_eof)
    conversation = data.draw(st.lists(exchanges(deprecate_eof), min_size=1, max_size=5))
    for exchange in conversation:
        before = tracker.status_flags
        segments = exchange.segments
        for index, (side, stream) in enumerate(segments):
            last_segment = index == len(segments) - 1
            cuts = cut_points(data.draw, len(stream), must=(len(stream) - 1,))
            parts = pieces(stream, cuts)
            for number, part in enumerate(parts):
                feed = tracker.feed_client if side == "c" else tracker.feed_server
                feed(part)
                is_end = last_segment and number == len(parts) - 1
                assert tracker.busy is not is_end, (exchange.kind, side, number, len(parts))
        if exchange.status is not None:
            assert tracker.status_flags == exchange.status
            assert tracker.in_transaction is bool(exchange.status & IN_TRANS)
        elif exchange.kind in ("close", "long_data", "statistics"):
            assert tracker.status_flags == before
        assert not tracker.pending


@fuzz_settings(60)
@given(data=st.data(), deprecate_eof=st.booleans())
def test_every_byte_is_forwarded_unchanged(data, deprecate_eof):
    tracker = new_session(deprecate_eof)
    conversation = data.draw(st.lists(exchanges(deprecate_eof), min_size=1, max_size=4))
    for exchange in conversation:
        for side, stream in exchange.segments:
            feed = tracker.feed_client if side == "c" else tracker.feed_server
            out = b"".join(feed(p) for p in pieces(stream, cut_points(data.draw, len(stream))))
            assert out == stream, exchange.kind
    assert not tracker.busy


@fuzz_settings(100)
@given(data=st.data(), deprecate_eof=st.booleans())
def test_pipelined_commands_complete_exactly_at_each_response_end(data, deprecate_eof):
    tracker = new_session(deprecate_eof)
    batch = data.draw(st.lists(
        exchanges(deprecate_eof).filter(lambda e: e.pipelinable), min_size=2, max_size=5))
    client = b"".join(e.segments[0][1] for e in batch)
    out = b"".join(tracker.feed_client(p) for p in pieces(client, cut_points(data.draw,
                                                                            len(client))))
    assert out == client
    answered = [e for e in batch if len(e.segments) > 1]
    assert len(tracker.pending) == len(answered)
    server = b""
    ends = []
    for exchange in answered:
        server += exchange.segments[1][1]
        ends.append(len(server))
    cuts = cut_points(data.draw, len(server), must=tuple(e - 1 for e in ends) + tuple(ends))
    fed = 0
    for part in pieces(server, cuts):
        assert tracker.feed_server(part) == part
        fed += len(part)
        assert len(tracker.pending) == sum(1 for end in ends if end > fed), (fed, ends)
    assert not tracker.busy


# -- bad bytes ------------------------------------------------------------------------------------


def _feed_all(tracker: SessionTracker, items: list[tuple[str, bytes]]) -> None:
    for side, chunk in items:
        if side == "c":
            tracker.feed_client(chunk)
        else:
            tracker.feed_server(chunk)


@fuzz_settings(300)
@given(data=st.data(), deprecate_eof=st.booleans(), phase=st.sampled_from(
    ["handshake", "auth", "command", "pending"]))
def test_random_bytes_only_raise_protocol_error(data, deprecate_eof, phase):
    """Whatever either peer sends, in any phase, the tracker answers or raises ProtocolError."""
    if phase == "handshake":
        tracker = SessionTracker()
    elif phase == "auth":
        tracker = SessionTracker()
        tracker.feed_server(frame(HANDSHAKE_PAYLOAD, 0)[0])
    else:
        tracker = new_session(deprecate_eof)
        if phase == "pending":
            exchange = data.draw(exchanges(deprecate_eof, big=False))
            tracker.feed_client(exchange.segments[0][1])
    items = data.draw(st.lists(st.tuples(st.sampled_from("cs"), st.binary(max_size=64)),
                               min_size=1, max_size=8))
    try:
        _feed_all(tracker, items)
    except ProtocolError:
        pass


@st.composite
def framed_packets(draw, first_seq: int) -> bytes:
    """Well-framed packets with consecutive sequence ids and short, hostile payloads: they get
    past the framing into the parsers of every state."""
    out = b""
    seq = first_seq
    for _ in range(draw(st.integers(1, 8))):
        head = draw(st.sampled_from([0x00, 0x01, 0x02, 0x03, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF]))
        payload = bytes((head,)) + draw(st.binary(max_size=14))
        if draw(st.integers(0, 9)) == 0:
            payload = payload[:0]
        data, seq = frame(payload, seq)
        out += data
    return out


@fuzz_settings(400)
@given(data=st.data(), deprecate_eof=st.booleans())
def test_framed_hostile_packets_only_raise_protocol_error(data, deprecate_eof):
    """A valid command (or a prefix of a valid response), then well-framed hostile packets from
    the server and the client."""
    tracker = new_session(deprecate_eof)
    exchange = data.draw(exchanges(deprecate_eof, big=False))
    segments = exchange.segments
    keep = data.draw(st.integers(1, len(segments)))
    try:
        for side, stream in segments[:keep]:
            (tracker.feed_client if side == "c" else tracker.feed_server)(stream)
        seq = tracker.pending[0].next_seq if tracker.pending else 0
        for _ in range(data.draw(st.integers(1, 3))):
            side = data.draw(st.sampled_from("cs"))
            packets = data.draw(framed_packets(seq if side == "s" or tracker.busy else 0))
            (tracker.feed_client if side == "c" else tracker.feed_server)(packets)
    except ProtocolError:
        pass


@fuzz_settings(300)
@given(data=st.data(), deprecate_eof=st.booleans())
def test_damaged_packets_only_raise_protocol_error(data, deprecate_eof):
    """Valid conversations where some packets are cut short or get another first byte, then
    framed again correctly: every parser meets packets too short for what they announce."""
    tracker = new_session(deprecate_eof)
    conversation = data.draw(st.lists(exchanges(deprecate_eof, big=False), min_size=1,
                                      max_size=3))
    packets = [p for e in conversation for p in e.packets]
    small = [i for i, (_, payload, _) in enumerate(packets) if len(payload) < 100_000]
    # Short server packets (OK, EOF, ERR, counts) are where a parser may read too far.
    short = [i for i in small if packets[i][0] == "s" and len(packets[i][1]) < 16] or small
    chosen = data.draw(st.lists(st.one_of(st.sampled_from(short), st.sampled_from(small)),
                                min_size=1, max_size=3))
    for index in chosen:
        side, payload, seq = packets[index]
        if data.draw(st.booleans()):
            payload = payload[: data.draw(st.integers(0, max(0, min(8, len(payload) - 1))))]
        else:
            head = data.draw(st.sampled_from([0x00, 0x01, 0xFB, 0xFC, 0xFE, 0xFF]))
            payload = bytes((head,)) + payload[1 : data.draw(st.integers(1, 9))]
        packets[index] = (side, payload, seq)
    try:
        for side, payload, seq in packets:
            stream = frame(payload, seq)[0]
            for part in pieces(stream, cut_points(data.draw, len(stream))):
                (tracker.feed_client if side == "c" else tracker.feed_server)(part)
    except ProtocolError:
        pass


@st.composite
def mutated_conversation(draw, deprecate_eof: bool) -> list[tuple[str, bytes]]:
    """A valid conversation with a few bytes flipped, dropped or inserted."""
    conversation = draw(st.lists(exchanges(deprecate_eof, big=False), min_size=1, max_size=3))
    items = [(side, bytearray(stream)) for e in conversation for side, stream in e.segments]
    small = [i for i, (_, stream) in enumerate(items) if len(stream) < 100_000]
    for _ in range(draw(st.integers(1, 4))):
        if not small:
            break
        index = draw(st.sampled_from(small))
        stream = items[index][1]
        pos = draw(st.integers(0, max(0, len(stream) - 1)))
        action = draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip" and stream:
            stream[pos] = draw(st.integers(0, 255))
        elif action == "drop" and stream:
            del stream[pos]
        else:
            stream[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    out = []
    for side, stream in items:
        cuts = cut_points(draw, len(stream))
        out += [(side, bytes(p)) for p in pieces(bytes(stream), cuts)]
    return out


@fuzz_settings(200)
@given(data=st.data(), deprecate_eof=st.booleans())
def test_mutated_conversations_only_raise_protocol_error(data, deprecate_eof):
    tracker = new_session(deprecate_eof)
    items = data.draw(mutated_conversation(deprecate_eof))
    try:
        _feed_all(tracker, items)
    except ProtocolError:
        pass


@pytest.mark.parametrize("deprecate_eof", [True, False])
def test_fuzz_generator_sanity(deprecate_eof):
    """The generator's packets are what the protocol says (guards the fuzz itself)."""
    payload = b"\x00" * (MAX_CHUNK + 2)
    data, seq = frame(payload, 3)
    assert data[:4] == b"\xff\xff\xff\x03" and data[4 + MAX_CHUNK : 8 + MAX_CHUNK] == (
        b"\x02\x00\x00\x04") and seq == 5
    assert frame(b"", 255) == (b"\x00\x00\x00\xff", 0)
    assert new_session(deprecate_eof).deprecate_eof is deprecate_eof
