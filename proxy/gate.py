"""The pause gate: hold, drain, drop and resume every client session of the proxy.

The backtrack uses it to get the database to itself (DESIGN.md decision 10):
  * ``pause()``: commands that arrive are held, not forwarded; new connections wait at the door;
  * ``drain(timeout)``: wait until no command is in flight; then kill the stragglers' queries;
  * ``drop_all()``: close every client session and its server connection, and make sure the
    server has ended them (it rolls back their open transactions);
  * ``resume()``: held commands and waiting connections go on.
A client held longer than ``hold_timeout`` gets an ERR saying the database is backtracking.

Concurrency: everything here runs on the proxy's event loop thread; nothing is thread-safe.
Other threads call in through ``asyncio.run_coroutine_threadsafe``. The relay knows only that
the gate is open or closed; the gate knows sessions only through the small ``GatedSession``
interface below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

BACKTRACKING_ERRNO = 1290  # ER_OPTION_PREVENTS_STATEMENT: "the server is running with ..."
BACKTRACKING_SQLSTATE = "HY000"


def backtracking_message(waited_s: float) -> str:
    return (
        f"auroratrack: the database is backtracking; your command was not run "
        f"(held {waited_s:.1f} s). Retry when the backtrack has finished."
    )


class GatedSession(Protocol):
    """What the gate needs from a relayed session."""

    server_connection_id: int | None

    @property
    def busy(self) -> bool: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class ServerControl(Protocol):
    """Control statements on the upstream server, on auroratrack's own connection."""

    async def kill_query(self, connection_id: int) -> None: ...

    async def kill_connection(self, connection_id: int) -> None: ...

    async def connections_alive(self, connection_ids: Iterable[int]) -> set[int]: ...


@dataclass
class DrainResult:
    """What ``drain`` had to do: sessions whose queries it killed, and any still busy."""

    waited_s: float
    killed: list[int] = field(default_factory=list)
    still_busy: list[int] = field(default_factory=list)


class Gate:
    """Open by default. See the module docstring."""

    def __init__(self, hold_timeout: float = 30.0, server: ServerControl | None = None):
        self.hold_timeout = hold_timeout
        self.server = server
        self.sessions: set[GatedSession] = set()
        self.is_open = True
        self.draining = False
        self.paused_at: float | None = None
        self._opened = asyncio.Event()
        self._opened.set()
        self._held: set[GatedSession] = set()
        self._idle_changed = asyncio.Event()

    # -- used by the relay ----------------------------------------------------------------------
    def may_start_command(self) -> bool:
        return self.is_open

    def register(self, session: GatedSession) -> None:
        self.sessions.add(session)

    def unregister(self, session: GatedSession) -> None:
        self.sessions.discard(session)
        self._held.discard(session)
        self.notify_idle()

    def hold(self, session: GatedSession) -> None:
        self._held.add(session)
        self.notify_idle()

    def unhold(self, session: GatedSession) -> None:
        self._held.discard(session)

    def notify_idle(self) -> None:
        """A session may have become idle; wakes a waiting ``drain``."""
        if self.draining:
            self._idle_changed.set()

    async def wait_open(self, timeout: float) -> bool:
        """For a connection at the door: True once the gate is open, False after ``timeout``."""
        if self.is_open:
            return True
        try:
            await asyncio.wait_for(self._opened.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- used by the backtrack -----------------------------------------------------------------
    def pause(self) -> None:
        """Hold new commands and new connections from now on."""
        if self.is_open:
            self.is_open = False
            self.paused_at = time.monotonic()
            self._opened.clear()
            log.info("gate closed: new commands and connections are held")

    def resume(self) -> None:
        """Let held commands and waiting connections go on."""
        if self.is_open:
            return
        self.is_open = True
        self._opened.set()
        held, self._held = self._held, set()
        for session in held:
            session.release()
        paused_for = time.monotonic() - (self.paused_at or time.monotonic())
        self.paused_at = None
        log.info("gate open after %.3f s; %d held sessions released", paused_for, len(held))

    def busy_sessions(self) -> list[GatedSession]:
        return [s for s in self.sessions if s.busy]

    async def drain(self, timeout: float, kill_grace: float = 5.0) -> DrainResult:
        """Wait until no command is in flight; after ``timeout`` kill the queries still running
        (``KILL QUERY``) and wait up to ``kill_grace`` more for their sessions to go idle."""
        started = time.monotonic()
        result = DrainResult(0.0)
        self.draining = True
        try:
            if not await self._wait_idle(timeout):
                for session in self.busy_sessions():
                    conn_id = session.server_connection_id
                    if conn_id is not None and self.server is not None:
                        await self.server.kill_query(conn_id)
                        result.killed.append(conn_id)
                await self._wait_idle(kill_grace)
        finally:
            self.draining = False
        result.still_busy = [
            s.server_connection_id for s in self.busy_sessions() if s.server_connection_id
        ]
        result.waited_s = time.monotonic() - started
        return result

    async def drop_all(self, wait_timeout: float = 10.0, disconnect_grace: float = 1.0
                       ) -> list[int]:
        """Close every session, then make sure the server has ended their connections (so their
        open transactions are rolled back and their locks released). Returns the connection ids.

        A connection still at the door (no server connection yet) is left waiting: it has nothing
        on the server to end, and it must get in after ``resume()``. An idle server connection
        ends by itself when its socket closes; only one still running a query (or not gone after
        ``disconnect_grace``) gets a ``KILL CONNECTION``: one statement per session would take
        seconds with hundreds of sessions."""
        sessions = [s for s in self.sessions if s.server_connection_id is not None]
        ids = [s.server_connection_id for s in sessions]
        running = [s.server_connection_id for s in sessions if s.busy]
        for session in sessions:
            session.close()
        if self.server is not None and ids:
            await self._kill_connections(running)
            alive = await self._wait_ended(set(ids), disconnect_grace)
            await self._kill_connections(alive)
            alive = await self._wait_ended(alive, wait_timeout)
            if alive:
                log.warning("server connections still alive after drop: %s", sorted(alive))
        return ids

    async def _kill_connections(self, connection_ids: Iterable[int]) -> None:
        for conn_id in sorted(connection_ids):
            await self.server.kill_connection(conn_id)

    async def _wait_ended(self, connection_ids: set[int], timeout: float) -> set[int]:
        """Poll the server until these connections are gone; returns those still alive."""
        deadline = time.monotonic() + timeout
        alive = await self.server.connections_alive(connection_ids) if connection_ids else set()
        while alive and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            alive = await self.server.connections_alive(alive)
        return alive

    async def _wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.busy_sessions():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._idle_changed.clear()
            try:
                await asyncio.wait_for(self._idle_changed.wait(), min(remaining, 0.25))
            except TimeoutError:
                pass
        return True
