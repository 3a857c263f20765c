"""Binlog files read from disk, and events laid end to end: the same ``RawEvent``s as the stream.

Reads a binlog (or relay-log) file written by MySQL 5.0-9.x or MariaDB: the magic, the format
description event (which says whether a CRC32 follows each event), then every event, with its
checksum verified. Never talks to a server; never writes.

One framing code path: ``frame_events`` turns bytes holding whole events (a file after its
magic, or the decompressed body of a MySQL ``TRANSACTION_PAYLOAD_EVENT``) into ``RawEvent``s;
the file reader and ``payload_events`` (which ``binlog.BinlogSource`` also calls when the
replication stream brings a compressed transaction) both use it, so a compressed transaction
comes out as the same inner events whether it was read from a file or from the server. The
replication stream keeps its own inline header unpack for the per-packet hot path (binlog.py).

Positions: ``RawEvent.end_pos`` is the offset in *this file* after the event (``start_pos`` its
first byte). For a server's own binlog that is the header's ``log_pos``; relay logs carry the
source's positions in their headers, which is why they cannot be checked for contiguity by
``log_pos`` as the replication stream is. The inner events of a compressed transaction occupy
no position of their own: each has the payload event's position and size.

Unreadable input raises ``BinlogReadError`` naming the file, the offset and the event type.
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from proxy.changelog.binlog import (
    FORMAT_DESCRIPTION_EVENT,
    TRANSACTION_PAYLOAD_EVENT,
    RawEvent,
)
from proxy.changelog.decoder import read_packed_int

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event size, log_pos, flags
HEADER_LEN = 19
CHECKSUM_LEN = 4
START_EVENT_V3 = 1
LOG_EVENT_BINLOG_IN_USE_F = 0x1  # header flag of a format description: the file is still open
BINLOG_CHECKSUM_ALG_OFF = 0
BINLOG_CHECKSUM_ALG_CRC32 = 1
_FDE_VERSION_END = 2 + 50  # binlog_version(2), server_version(50)
# TRANSACTION_PAYLOAD_EVENT's header fields (MySQL's Transaction_payload_event), each a packed
# type, a packed length and a packed value; the compressed payload follows the end mark.
_PAYLOAD_END_MARK, _PAYLOAD_SIZE, _PAYLOAD_COMPRESSION, _PAYLOAD_UNCOMPRESSED_SIZE = 0, 1, 2, 3
COMPRESSION_ZSTD, COMPRESSION_NONE = 0, 255


class BinlogReadError(ValueError):
    """A binlog's bytes cannot be framed: says which file, at which offset, which event."""

    def __init__(self, source: str, offset: int, event_type: int | None, why: str):
        self.source, self.offset, self.event_type = source, offset, event_type
        event = "" if event_type is None else f", event type {event_type}"
        super().__init__(f"{source}: at offset {offset}{event}: {why}")


@dataclass(frozen=True, slots=True)
class FormatDescription:
    """What a FORMAT_DESCRIPTION_EVENT says about the events after it."""

    binlog_version: int
    server_version: str
    checksum: bool  # a CRC32 follows every event after this one

    @property
    def flavor(self) -> str:
        """'mariadb' or 'mysql': which server's table-map conventions apply."""
        return "mariadb" if "mariadb" in self.server_version.lower() else "mysql"


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else (0, 0, 0)


def _has_checksum_field(server_version: str) -> bool:
    """Whether this server writes the checksum-algorithm byte and a CRC field in its format
    description (MySQL 5.6.1+, MariaDB 5.3+): then the event's last 5 bytes are those."""
    version = _version_tuple(server_version)
    if "mariadb" in server_version.lower():
        return version >= (5, 3, 0)
    return version >= (5, 6, 1)


def parse_format_description(whole_event: bytes) -> FormatDescription:
    """The format description from a whole event (header included, checksum included)."""
    body = whole_event[HEADER_LEN:]
    binlog_version = struct.unpack_from("<H", body)[0]
    server_version = body[2:_FDE_VERSION_END].split(b"\0", 1)[0].decode("ascii", "replace")
    checksum = False
    if _has_checksum_field(server_version) and len(whole_event) >= HEADER_LEN + _FDE_VERSION_END + 5:
        checksum = whole_event[-5] == BINLOG_CHECKSUM_ALG_CRC32
    return FormatDescription(binlog_version, server_version, checksum)


def frame_events(data: bytes | mmap.mmap, start: int, stop: int, source: str, checksum: bool,
                 verify: bool = True, log_file: str | None = None) -> Iterator[RawEvent]:
    """Every event in ``data[start:stop]``, laid end to end, as ``RawEvent``s.

    ``checksum``: a CRC32 ends each event (checked when ``verify``). A format description
    event sets it for the events after it (a relay log holds the replica's and the source's).
    ``source`` names the input in errors; ``log_file`` is what the events say they came from."""
    log_file = source if log_file is None else log_file
    unpack = HEADER.unpack_from
    pos = start
    while pos < stop:
        if stop - pos < HEADER_LEN:
            raise BinlogReadError(source, pos, None, f"{stop - pos} bytes left, less than an event header")
        timestamp, event_type, server_id, size, _, flags = unpack(data, pos)
        if size < HEADER_LEN:
            raise BinlogReadError(source, pos, event_type, f"event size {size} is below the header's 19 bytes")
        end = pos + size
        if end > stop:
            raise BinlogReadError(source, pos, event_type,
                                  f"truncated: the event claims {size} bytes, {stop - pos} are left")
        whole = data[pos:end]
        if event_type == FORMAT_DESCRIPTION_EVENT:
            fde = parse_format_description(whole)
            checksum = fde.checksum
            # The format description carries the algorithm byte and a CRC field whenever its
            # server knows checksums, even when the algorithm is OFF.
            has_field = _has_checksum_field(fde.server_version)
            body_end = size - 5 if has_field else size
            if checksum and verify:
                _check_crc(_without_in_use_flag(whole), source, pos, event_type)
        else:
            body_end = size - CHECKSUM_LEN if checksum else size
            if checksum and verify:
                _check_crc(whole, source, pos, event_type)
        body = bytes(whole[HEADER_LEN:body_end])
        yield RawEvent(event_type, timestamp, server_id, log_file, end, body, flags, size)
        pos = end


def _without_in_use_flag(whole: bytes) -> bytes:
    """A format description as it was checksummed: the server sets LOG_EVENT_BINLOG_IN_USE_F in
    the header while the file is open and clears it at close, without a new CRC (MySQL's
    ``event_checksum_test`` clears it before checking, as here)."""
    if not whole[17] & LOG_EVENT_BINLOG_IN_USE_F:
        return whole
    return whole[:17] + bytes([whole[17] & ~LOG_EVENT_BINLOG_IN_USE_F & 0xFF]) + whole[18:]


def _check_crc(whole: bytes, source: str, offset: int, event_type: int) -> None:
    if zlib.crc32(whole[:-CHECKSUM_LEN]) != int.from_bytes(whole[-CHECKSUM_LEN:], "little"):
        raise BinlogReadError(source, offset, event_type, "CRC32 checksum mismatch (corrupt event)")


@dataclass(frozen=True, slots=True)
class PayloadHeader:
    compression: int  # COMPRESSION_ZSTD or COMPRESSION_NONE
    uncompressed_size: int
    payload_start: int  # offset of the payload in the event body


def parse_payload_header(body: bytes) -> PayloadHeader:
    """The fields before a TRANSACTION_PAYLOAD_EVENT's payload."""
    fields: dict[int, int] = {}
    pos = 0
    while True:
        kind, pos = read_packed_int(body, pos)
        if kind == _PAYLOAD_END_MARK:
            break
        length, pos = read_packed_int(body, pos)
        fields[kind], _ = read_packed_int(body[pos:pos + length], 0)
        pos += length
    return PayloadHeader(fields.get(_PAYLOAD_COMPRESSION, COMPRESSION_NONE),
                         fields.get(_PAYLOAD_UNCOMPRESSED_SIZE, 0), pos)


def payload_events(event: RawEvent, source: str | None = None) -> list[RawEvent]:
    """The events a TRANSACTION_PAYLOAD_EVENT holds (``binlog_transaction_compression=ON``),
    decompressed and framed by ``frame_events``; each takes the payload event's position (they
    have none of their own). Inner events carry no checksum: the payload event's covers them."""
    where = source or event.log_file
    try:
        header = parse_payload_header(event.body)
    except (IndexError, ValueError) as exc:
        raise BinlogReadError(where, event.start_pos, event.type, f"malformed payload header ({exc})") from exc
    payload = event.body[header.payload_start:]
    if header.compression == COMPRESSION_ZSTD:
        payload = _zstd_decompress(payload, header.uncompressed_size, where, event)
    elif header.compression != COMPRESSION_NONE:
        raise BinlogReadError(where, event.start_pos, event.type,
                              f"unknown transaction compression type {header.compression}")
    inner = list(frame_events(payload, 0, len(payload), f"{where} (compressed transaction at "
                              f"{event.start_pos})", checksum=False, log_file=event.log_file))
    for item in inner:
        item.end_pos, item.size = event.end_pos, event.size
    return inner


def _zstd_decompress(payload: bytes, size: int, where: str, event: RawEvent) -> bytes:
    import zstandard  # only a compressed transaction needs it

    try:
        data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=size or 1 << 30)
    except zstandard.ZstdError as exc:
        raise BinlogReadError(where, event.start_pos, event.type, f"zstd payload: {exc}") from exc
    if size and len(data) != size:
        raise BinlogReadError(where, event.start_pos, event.type,
                              f"zstd payload gave {len(data)} bytes, the header says {size}")
    return data


def expand_payloads(events: Iterator[RawEvent], source: str | None = None) -> Iterator[RawEvent]:
    """``events`` with every compressed transaction replaced by the events it holds."""
    for event in events:
        if event.type == TRANSACTION_PAYLOAD_EVENT:
            yield from payload_events(event, source)
        else:
            yield event


class BinlogFile:
    """One binlog file on disk: ``events()`` yields its events in order (compressed
    transactions expanded), ``format`` is its first format description."""

    def __init__(self, path: str | Path, verify_checksums: bool = True):
        self.path = Path(path)
        self.verify = verify_checksums
        self.format: FormatDescription | None = None

    def events(self, expand: bool = True) -> Iterator[RawEvent]:
        name = str(self.path)
        with open(self.path, "rb") as handle:
            size = self.path.stat().st_size
            if size < len(MAGIC):
                raise BinlogReadError(name, 0, None, "not a binlog file (shorter than the magic)")
            data: bytes | mmap.mmap = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                if data[:4] != MAGIC:
                    raise BinlogReadError(name, 0, None, f"not a binlog file (magic {bytes(data[:4]).hex()})")
                yield from self._framed(data, name, size, expand)
            finally:
                data.close()

    def _framed(self, data: mmap.mmap, name: str, size: int, expand: bool) -> Iterator[RawEvent]:
        events = frame_events(data, len(MAGIC), size, name, checksum=False, verify=self.verify,
                              log_file=self.path.name)
        first = True
        for event in events:
            if first:
                self._check_first(event, data, name)
                first = False
            if expand and event.type == TRANSACTION_PAYLOAD_EVENT:
                yield from payload_events(event, name)
            else:
                yield event

    def _check_first(self, event: RawEvent, data: mmap.mmap, name: str) -> None:
        if event.type == START_EVENT_V3:
            raise BinlogReadError(name, 4, event.type, "a binlog of format v1/v3 (MySQL 4.x or older) "
                                  "is not supported")
        if event.type != FORMAT_DESCRIPTION_EVENT:
            raise BinlogReadError(name, 4, event.type, "the first event is not a format description")
        self.format = parse_format_description(bytes(data[4:event.end_pos]))


def read_binlog(path: str | Path, verify_checksums: bool = True) -> Iterator[RawEvent]:
    """Every event of one binlog file (see ``BinlogFile``)."""
    return BinlogFile(path, verify_checksums).events()
