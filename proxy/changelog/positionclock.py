"""When did the server write a binlog position? Samples that bound MariaDB commit times.

MariaDB's binlog events carry whole seconds, and for an autocommit statement the second it
*started*. The streamer's own receive time is only an upper bound: when capture lags (a busy
machine, a burst of writes), it can be seconds later than the commit, and a backtrack to a
moment between the two would undo a transaction that was committed before it.

So a sampler reads the server's binlog position every ``interval`` seconds, noting the local
clock right after each read. Once a sample at time t shows the log at or past a transaction's
end, the transaction had committed by t. ``written_by(position)`` returns the earliest such t:
an upper bound on the commit, late by at most about one interval however far capture lags.
(An upper bound rather than a lower one: a mistake made just after a chosen moment is then
always undone, and work committed more than one interval before it never is.)

A sample is only worth taking when the log may have moved. With ``wake_on_activity``, the
sampler samples again after ``interval`` while the last sample found the log moved; once it
finds it still, it sleeps until the stream brings bytes (the streamer calls ``note_activity``
on each read) or ``idle_interval`` passes (an idle streamer used to wake twenty times a second
here only to skip its turn). Nothing is lost by waiting: bytes reach the socket when the server
writes them, and the streamer reads them within 50 ms, so the first sample after a quiet spell
comes at most about one read pace after the commit, and meanwhile the streamer's own receive
time bounds it just as well; a log that keeps moving is sampled every interval whether or not
the streamer is reading (say, inside a long write to its store). A read-only load costs the
server one SHOW MASTER STATUS a second instead of twenty.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Callable

import pymysql

log = logging.getLogger(__name__)


class PositionClock:
    """Samples (binlog position, local time) in a thread; ``written_by`` answers lookups."""

    def __init__(self, read_position: Callable[[], tuple[str, int]], clock_us: Callable[[], int],
                 interval: float = 0.05, keep: int = 20000, wake_on_activity: bool = False,
                 idle_interval: float = 1.0):
        self.read_position = read_position
        self.clock_us = clock_us
        self.interval = interval
        self.keep = keep
        # Without activity notices, sample every interval; with them, when bytes arrived.
        self.idle_interval = idle_interval if wake_on_activity else interval
        self._positions: list[tuple[str, int]] = []
        self._times: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._activity = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PositionClock:
        self._thread = threading.Thread(target=self._run, name="auroratrack-position-clock", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._activity.set()
        if self._thread is not None:
            self._thread.join(5)

    def note_activity(self) -> None:
        """The stream brought bytes: the log may have moved (cheap; called on every read)."""
        self._activity.set()

    def sample(self) -> bool:
        """Take one sample now; True if the log moved since the previous one (or there was none)."""
        position = self.read_position()
        after = self.clock_us()
        with self._lock:
            if self._positions and position < self._positions[-1]:
                return False  # a restarted server may report an older file briefly; keep order
            moved = not self._positions or position != self._positions[-1]
            self._positions.append(position)
            self._times.append(after)
            if len(self._positions) > self.keep:
                del self._positions[: len(self._positions) - self.keep]
                del self._times[: len(self._times) - self.keep]
        return moved

    def written_by(self, end_position: tuple[str, int]) -> int | None:
        """The earliest sample time at which the log had reached ``end_position``; None if no
        sample has seen it yet, or if the first sample already had (written before sampling
        began, e.g. read while catching up after a restart: no bound but the event's second)."""
        with self._lock:
            index = bisect.bisect_left(self._positions, end_position)
            if index == 0 or index == len(self._times):
                return None
            return self._times[index]

    def sampled_beyond(self, end_position: tuple[str, int]) -> bool:
        """True when the first sample already showed the log at or past ``end_position``."""
        with self._lock:
            return bool(self._positions) and self._positions[0] >= end_position

    def _run(self) -> None:
        activity, stop = self._activity, self._stop
        while not stop.is_set():
            moved = self._take_sample()
            if stop.wait(self.interval):
                return
            if not moved:
                activity.wait(self.idle_interval - self.interval)

    def _take_sample(self) -> bool:
        # Cleared before the read: bytes arriving during it earn the next turn.
        self._activity.clear()
        try:
            return self.sample()
        except (pymysql.MySQLError, OSError) as exc:
            log.debug("position clock: %s", exc)
            self._stop.wait(1.0)
            return False
