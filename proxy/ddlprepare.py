"""SQL-level prepared statements of held DDL: PREPARE, EXECUTE, DEALLOCATE, EXECUTE IMMEDIATE.

``PREPARE s FROM 'DROP TABLE t'`` (or ``FROM @var``) then ``EXECUTE s`` runs a DROP the relay's
first-keyword test never sees. This module reads those commands (pure functions over the query
bytes) and keeps, per session, which statement names hold a DDL that proxy.ddlhold holds or
records; proxy.ddlhold acts on it:

  * PREPARE name FROM <text>: the text is a string literal or a user variable. A literal without
    backslashes is read here (no round trip); otherwise the holder asks the client's own session
    for ``HEX(<text>)`` (the server applies its own escapes, sql_mode and character set). The
    PREPARE itself always runs on the server as the client sent it (the server checks the
    syntax and gives its own answer); if it succeeds and the text is a held DDL, the name is
    remembered with the database current at PREPARE time (EXECUTE runs a prepared statement in
    that database, not the current one). Any PREPARE of a name forgets it first: the server
    deallocates the old statement even when the new one fails.
  * EXECUTE name (no USING: a DDL has no parameters, and the server answers 1210 to USING):
    a remembered name is held like the DDL itself; when nothing is held the client's EXECUTE
    runs, so the server's real prepared statement answers.
  * EXECUTE IMMEDIATE <text> (MariaDB), no USING: its text read as PREPARE's; a held DDL is
    held, anything else is given back to the relay unchanged (after a variable was read, the
    relay forwards the client's command as it would have).
  * DEALLOCATE PREPARE / DROP PREPARE name: forgotten. COM_RESET_CONNECTION and
    COM_CHANGE_USER forget every prepared statement, protocol-level ones too (the server
    deallocates them all: an EXECUTE of one afterwards is the server's error, not a hold).

The server's prepared statement stays the real DDL: an EXECUTE the proxy cannot see (inside a
stored procedure, or not first in a multi-statement query) runs it for real, as before (a
backtrack over it reports a DDL conflict), rather than silently doing nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy import execcomments

# What ``parse`` reads: one of the four commands, then a statement name or the text.
COMMAND = re.compile(rb"\s*(?:/\*.*?\*/\s*)*(prepare|execute\s+immediate|execute|deallocate\s+prepare|drop\s+prepare)"
                      rb"\s+", re.IGNORECASE | re.DOTALL)
_NAME = rb"([A-Za-z0-9_$]+|`(?:[^`]|``)+`)"
_TEXT = rb"('(?:[^'\\]|''|\\.)*'|\"(?:[^\"\\]|\"\"|\\.)*\"|@[A-Za-z0-9_$.]+|@`(?:[^`]|``)+`)"
_END = rb"\s*;?\s*\Z"
_PREPARE = re.compile(_NAME + rb"\s+from\s+" + _TEXT + _END, re.IGNORECASE | re.DOTALL)
_EXECUTE = re.compile(_NAME + rb"(\s+using\b.*)?" + _END, re.IGNORECASE | re.DOTALL)
_IMMEDIATE = re.compile(_TEXT + rb"(\s+using\b.*)?" + _END, re.IGNORECASE | re.DOTALL)
_FORGET = re.compile(_NAME + _END, re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class SqlCommand:
    """One SQL-level prepared-statement command."""

    kind: str  # prepare | execute | immediate | deallocate
    name: str | None = None  # the statement name, lowercased (names are case-insensitive)
    text: bytes | None = None  # the statement text when it could be read from the query itself
    source: bytes | None = None  # the text's expression as written (literal or @var), to evaluate
    using: bool = False  # EXECUTE ... USING

    @property
    def evaluate(self) -> bool:
        """The text must be read from the client's session (a user variable, or escapes)."""
        return self.source is not None and self.text is None


@dataclass(frozen=True)
class PreparedDdl:
    """What a prepared statement name or id stands for: a held DDL and the database it runs in."""

    statement: object  # proxy.ddlhold.Statement or proxy.ddlrecord.Recorded
    database: str | None


def parse(query: bytes, server_version: str = "MariaDB") -> SqlCommand | None:
    """The prepared-statement command ``query`` is, or None. EXECUTE IMMEDIATE only when the
    server's greeting says MariaDB (MySQL answers it with a syntax error: nothing to hold)."""
    head = COMMAND.match(query, 0, 200)
    if head is None or execcomments.present(query):
        return None
    keyword = head.group(1).lower()
    rest = query[head.end():]
    if keyword == b"prepare":
        found = _PREPARE.match(rest)
        if found is None:
            return None
        return SqlCommand("prepare", _name(found.group(1)), _literal(found.group(2)), found.group(2))
    if keyword == b"execute":
        found = _EXECUTE.match(rest)
        return None if found is None else SqlCommand("execute", _name(found.group(1)), using=bool(found.group(2)))
    if keyword.startswith(b"execute"):
        found = _IMMEDIATE.match(rest) if "MariaDB" in server_version else None
        if found is None:
            return None
        return SqlCommand("immediate", None, _literal(found.group(1)), found.group(1), bool(found.group(2)))
    found = _FORGET.match(rest)
    return None if found is None else SqlCommand("deallocate", _name(found.group(1)))


def _name(raw: bytes) -> str:
    if raw.startswith(b"`"):
        raw = raw[1:-1].replace(b"``", b"`")
    return raw.decode("utf-8", "replace").lower()


def _literal(raw: bytes) -> bytes | None:
    """A quoted literal's content when no escape can change it (no backslash); else None (a
    user variable too: the session evaluates those)."""
    if raw[:1] not in (b"'", b'"') or b"\\" in raw:
        return None
    quote = raw[:1]
    return raw[1:-1].replace(quote + quote, quote)


__all__ = ["COMMAND", "PreparedDdl", "SqlCommand", "parse"]
