"""Executable comments: the DDL a dump or a migration tool wraps in ``/*!NNNNN ... */``.

mysqldump and mariadb-dump write version-guarded statements the server runs and other servers
skip: ``/*!40000 ALTER TABLE `t` DISABLE KEYS */``, a view as ``/*!50001 CREATE ALGORITHM=...
*/ /*!50013 DEFINER=... */ /*!50001 VIEW ... */``, a trigger likewise. MySQL and MariaDB run the
text of ``/*!NNNNN text */`` when their version is at least NNNNN (5 or 6 digits, or none: always),
and MariaDB also that of ``/*M!NNNNNN text */``. A query made only of such comments is, to the
server, the statement their texts spell: ``unwrap`` gives that statement, so proxy.ddlhold can
hold or record it like the same statement sent bare (else it would run unseen and a backtrack
over it would be a DDL conflict). Any other text around the comments, or a plain comment among
them, and the query is left as it is; ``present`` tells the parsers of proxy.ddlhold,
proxy.ddlrecord and proxy.ddlprepare to leave any other query holding one to the server (they
skip comments, the server does not skip these). Pure functions over bytes.
"""

from __future__ import annotations

import re

_LEADING = re.compile(rb"\s*/\*M?!")
_EXECUTABLE = re.compile(rb"\s*/\*(M?)!(\d{5,6})?(.*?)\*/", re.DOTALL)
_VERSION = re.compile(r"(?:5\.5\.5-)?(\d+)\.(\d+)\.(\d+)")


def present(query: bytes) -> bool:
    """Whether ``query`` holds an executable comment anywhere: then no reading of it that skips
    comments (sqlglot's, a regex's) is what the server runs."""
    return b"/*!" in query or b"/*M!" in query


def version_id(server_version: str) -> int | None:
    """``10.11.19-MariaDB-log`` (MariaDB's handshake may say ``5.5.5-10.11.19-MariaDB``) ->
    101119, the number executable comments are compared with; None when unreadable."""
    found = _VERSION.match(server_version)
    if found is None:
        return None
    major, minor, patch = (int(g) for g in found.groups())
    return major * 10000 + minor * 100 + patch


def unwrap(query: bytes, server_version: str, start: int = 0) -> bytes | None:
    """The statement a query of executable comments only (from ``start``) is to a server of
    ``server_version``, or None: not such a query, or nothing in it this server would run."""
    if not _LEADING.match(query, start, start + 64):
        return None
    server = version_id(server_version)
    mariadb = "mariadb" in server_version.lower()
    if server is None:
        return None
    query = bytes(query[start:])  # (a packet's bytearray or memoryview: copied once it is one)
    parts, pos = [], 0
    while (found := _EXECUTABLE.match(query, pos)) is not None:
        only_mariadb, guard, text = found.groups()
        if (not only_mariadb or mariadb) and (guard is None or int(guard) <= server):
            parts.append(text.strip())
        pos = found.end()
    rest = query[pos:].strip().rstrip(b";").strip()
    if rest or not any(parts):
        return None
    return b" ".join(p for p in parts if p)
