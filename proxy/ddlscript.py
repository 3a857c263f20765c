"""Several statements in one COM_QUERY (CLIENT_MULTI_STATEMENTS) that start with a held DDL.

A migration often sends ``DROP TABLE IF EXISTS t; CREATE TABLE t (...)`` as one query. The relay
only sniffs the first keyword, so such a script reaches proxy.ddlhold when it starts with DROP
or TRUNCATE (or comments). ``split`` cuts it into statements at the top-level semicolons
(sqlglot's tokenizer: strings, quoted names and comments are respected); the holder runs them one
by one on the session's own connection, holding the DROP/TRUNCATE ones and sending the others as
they are, and ``compose`` makes the one multi-result answer the server would have sent: every
result but the last with SERVER_MORE_RESULTS_EXISTS, sequence ids running on, nothing after the
first error (the server stops there too).

Left to the server unchanged (``split`` returns None): scripts with compound statements
(BEGIN ... END, stored program bodies, whose semicolons are not statement ends), LOAD DATA
(its LOCAL INFILE exchange), or text the tokenizer rejects. Pure functions over bytes.
"""

from __future__ import annotations

import struct

from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from proxy import wire

_MORE_RESULTS = int(wire.ServerStatus.SERVER_MORE_RESULTS_EXISTS)
_COMPOUND = {TokenType.BEGIN, TokenType.LOAD}
_STORED_PROGRAMS = {"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"}


def split(query: bytes) -> list[bytes] | None:
    """The statements of a multi-statement query, or None if it is one statement or cannot be
    split safely (module docstring)."""
    try:
        text = query.decode("ascii")
        tokens = MySQL().tokenize(text)
    except (UnicodeDecodeError, SqlglotError):
        return None
    pieces, start, words = [], 0, 0
    for n, token in enumerate(tokens):
        if token.token_type in _COMPOUND:
            return None
        if token.token_type == TokenType.CREATE and n + 1 < len(tokens) and any(
                t.text.upper() in _STORED_PROGRAMS for t in tokens[n + 1 : n + 4]):
            return None
        if token.token_type == TokenType.SEMICOLON:
            if words:  # only comments or nothing between two semicolons: no statement
                pieces.append(text[start : token.start])
            start, words = token.end + 1, 0
        else:
            words += 1
    if words:
        pieces.append(text[start:])
    statements = [p.strip().encode("ascii") for p in pieces]
    return statements if len(statements) > 1 else None


def compose(results: list[list[bytes]], deprecate_eof: bool) -> tuple[bytes, int | None]:
    """The framed answer of a multi-statement query from each statement's response payloads;
    also the status flags of the last result (None after an error)."""
    out = []
    seq = 1
    status = None
    for n, payloads in enumerate(results):
        more = n < len(results) - 1
        for i, payload in enumerate(payloads):
            last = i == len(payloads) - 1
            if more and _carries_status(payload, last, len(payloads), deprecate_eof):
                payload = _with_flag(payload, deprecate_eof and last and len(payloads) > 1)
            packets = wire.make_packets(payload, seq)
            seq = (seq + len(payload) // 0xFFFFFF + 1) & 0xFF
            out.append(packets)
        final = payloads[-1]
        status = None if final[:1] == b"\xff" else _status(final, deprecate_eof and len(payloads) > 1)
    return b"".join(out), status


def _carries_status(payload: bytes, last: bool, count: int, deprecate_eof: bool) -> bool:
    if count == 1:
        return payload[:1] == b"\x00"  # an OK (an ERR ends everything anyway)
    if payload[:1] != b"\xfe" or len(payload) >= 0xFFFFFF:
        return False
    return last if deprecate_eof else len(payload) < 9  # the result's terminator / its EOFs


def _status_offset(payload: bytes, ok_form: bool) -> int:
    if payload[:1] == b"\x00" or ok_form:
        _, pos = wire.read_length_encoded_integer(payload, 1)
        _, pos = wire.read_length_encoded_integer(payload, pos)
        return pos
    return 3  # EOF: 0xFE, warnings(2), status(2)


def _status(payload: bytes, ok_form: bool) -> int:
    pos = _status_offset(payload, ok_form)
    return struct.unpack_from("<H", payload, pos)[0]


def _with_flag(payload: bytes, ok_form: bool) -> bytes:
    pos = _status_offset(payload, ok_form)
    flags = struct.unpack_from("<H", payload, pos)[0] | _MORE_RESULTS
    return payload[:pos] + struct.pack("<H", flags) + payload[pos + 2 :]
