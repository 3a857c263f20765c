"""auroratrack's own control connection to the upstream server.

Runs the few control statements the proxy needs (``KILL QUERY``, ``KILL CONNECTION``, reading
the process list and ``max_allowed_packet``), each tagged ``/* auroratrack ... */`` so the
process list shows who sent it. PyMySQL is blocking, so every call runs in a worker thread;
these are rare statements, never on the relay's hot path. The credentials here are
auroratrack's own, never a relayed client's.

Every connection auroratrack opens itself goes through ``open_connection`` here: it sends the
connection attributes ``program_name=auroratrack`` and ``auroratrack_role=<role>`` (``ROLES``), so
the server (``performance_schema.session_connect_attrs``) and its operators can tell
auroratrack's own sessions from the clients it relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import pymysql

ER_NO_SUCH_THREAD = 1094
PROGRAM_NAME = "auroratrack"
ROLE_ATTRIBUTE = "auroratrack_role"
# Who opens which connection (the README lists them):
ROLES = {
    "control": "serve's control connection: KILL, the process list, max_allowed_packet (kept open)",
    "inspector": "the server checks at start (closed after)",
    "capture": "the streamer's replication connection, COM_BINLOG_DUMP (kept open)",
    "capture_control": "the streamer's questions: start position, generated columns, engines (kept open)",
    "position_clock": "the streamer's binlog position samples for commit times (kept open)",
    "apply": "a backtrack's writes, in one transaction (while a backtrack runs)",
    "fence": "a backtrack's read_only fence and catch-up (while a backtrack runs)",
    "status": "capture lag for status and /metrics (per request)",
}


def open_connection(role: str, connection_class: type[pymysql.connections.Connection] = pymysql.connections.Connection,
                    **kwargs) -> pymysql.Connection:
    """A connection of ``connection_class`` that tells the server who opened it (connection
    attributes ``program_name`` and ``auroratrack_role``)."""
    kwargs.pop("defer_connect", None)
    kwargs.setdefault("program_name", PROGRAM_NAME)
    conn = connection_class(defer_connect=True, **kwargs)
    # PyMySQL sends ``_connect_attrs`` in its handshake response but takes only program_name as a
    # parameter; the role is added to the same dict before it connects.
    conn._connect_attrs[ROLE_ATTRIBUTE] = role
    conn.connect()
    return conn


@dataclass(frozen=True)
class UpstreamCredentials:
    """Where the server is and how auroratrack logs in to it."""

    host: str
    port: int
    user: str
    password: str = ""
    # TLS to the server (--upstream-tls / --upstream-ca), for every connection auroratrack makes.
    # Names, not an ssl.SSLContext: the streamer's process gets these credentials pickled.
    tls_mode: str = "preferred"
    tls_ca: str | None = None

    def tls_kwargs(self) -> dict:
        """PyMySQL connect() arguments for the TLS policy."""
        from proxy.tls import pymysql_tls_kwargs

        return pymysql_tls_kwargs(self.tls_mode, self.tls_ca)

    def connect(self, role: str = "control", **kwargs) -> pymysql.Connection:
        """A connection as auroratrack, telling the server its ``role`` (one of ``ROLES``)."""
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 10)
        for key, value in self.tls_kwargs().items():
            kwargs.setdefault(key, value)
        return open_connection(role, host=self.host, port=self.port, user=self.user, password=self.password,
                               **kwargs)


class ServerAdmin:
    """Implements the gate's ``ServerControl`` on one lazily (re)opened connection."""

    def __init__(self, credentials: UpstreamCredentials):
        self.credentials = credentials
        self._conn: pymysql.Connection | None = None
        self._lock = threading.Lock()

    def execute(self, sql: str, args=None) -> list[tuple]:
        """Run one statement (blocking), reconnecting once if the connection was lost."""
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None:
                        self._conn = self.credentials.connect(role="control")
                    with self._conn.cursor() as cur:
                        cur.execute(sql, args)
                        return list(cur.fetchall())
                except pymysql.OperationalError as exc:
                    if exc.args and exc.args[0] in (2006, 2013, 2003) and attempt == 1:
                        self._close_quietly()
                        continue
                    raise
        raise AssertionError("unreachable")

    def max_allowed_packet(self) -> int:
        return int(self.execute("/* auroratrack */ SELECT @@GLOBAL.max_allowed_packet")[0][0])

    async def kill_query(self, connection_id: int) -> None:
        await asyncio.to_thread(self._kill, "QUERY", connection_id)

    async def kill_connection(self, connection_id: int) -> None:
        await asyncio.to_thread(self._kill, "CONNECTION", connection_id)

    async def connections_alive(self, connection_ids: Iterable[int]) -> set[int]:
        ids = set(connection_ids)
        if not ids:
            return set()
        placeholders = ",".join(["%s"] * len(ids))
        rows = await asyncio.to_thread(
            self.execute,
            "/* auroratrack gate */ SELECT ID FROM information_schema.PROCESSLIST "
            f"WHERE ID IN ({placeholders})",
            sorted(ids),
        )
        return {int(row[0]) for row in rows}

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def _kill(self, what: str, connection_id: int) -> None:
        try:
            self.execute(f"/* auroratrack gate */ KILL {what} {int(connection_id)}")
        except pymysql.MySQLError as exc:
            if not (exc.args and exc.args[0] == ER_NO_SUCH_THREAD):
                raise

    def _close_quietly(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
