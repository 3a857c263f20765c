"""Readable SQL for people: the statements a dry run shows, with strings spelled as text.

The applier writes every string as hex with its charset introducer (``_utf8mb4 X'616263'``):
byte-exact whatever the bytes, and that is what the server gets. A person reading
``backtrack --dry-run --sql`` wants ``_utf8mb4'abc'``. ``readable_sql`` spells a hex string as
quoted text wherever that text means exactly the same bytes when the statement is pasted into a
UTF-8 client session: UTF-8 charsets whose bytes decode, and other ASCII-based charsets when
every byte is plain printable ASCII. Everything else (binary strings, control characters,
backslashes, whose meaning depends on sql_mode, other charsets' non-ASCII bytes) stays hex.
Numbers and dates are already written readably. Pure functions; display only: the statements
sent to the server are never rewritten.
"""

from __future__ import annotations

import re

# charset introducer followed by a hex literal, as proxy.changelog.decoder writes them
_HEX_STRING = re.compile(r"(?<![\w`])_(\w+) X'((?:[0-9a-fA-F]{2})*)'")
_UTF8 = {"utf8mb4", "utf8mb3", "utf8"}
# Charsets whose bytes 0x20-0x7e are ASCII: such text is the same bytes in UTF-8.
_ASCII_BASED = _UTF8 | {"latin1", "latin2", "latin5", "latin7", "ascii", "cp1250", "cp1251", "cp1256",
                        "cp1257", "cp850", "cp852", "cp866", "koi8r", "koi8u", "greek", "hebrew", "armscii8",
                        "geostd8", "keybcs2", "macce", "macroman", "swe7", "dec8", "hp8", "tis620"}


def readable_sql(statement: str) -> str:
    """``statement`` with its hex strings spelled as text where that is exact."""
    return _HEX_STRING.sub(_spell, statement)


def _spell(match: re.Match) -> str:
    charset, data = match.group(1).lower(), bytes.fromhex(match.group(2))
    text = spelled(data, charset)
    return match.group(0) if text is None else f"_{match.group(1)}'{text}'"


def spelled(data: bytes, charset: str) -> str | None:
    """The quoted-string body for ``data`` in ``charset`` (quotes doubled), or None when only
    hex says it exactly."""
    if charset not in _ASCII_BASED:
        return None
    try:
        text = data.decode("utf-8") if charset in _UTF8 else data.decode("ascii")
    except UnicodeDecodeError:
        return None
    if "\\" in text or not all(ch.isprintable() for ch in text):
        return None  # backslash escapes depend on NO_BACKSLASH_ESCAPES; control bytes are unreadable
    return text.replace("'", "''")
