"""Stop a capture process on SIGTERM/SIGINT without taking a lock inside the signal handler.

Why not call ``request_stop`` from the handler: Python runs a handler in the main thread between
two bytecodes, possibly in the middle of ``threading.Event.set`` (the store's commit hook sets
one on every commit, and ``request_stop`` sets several). A handler that sets an Event then waits
for the Condition lock that the code it interrupted holds, forever. Seen in the suite: a
streamer orphaned by a SIGKILLed serve, its parent-death SIGTERM arriving inside
``request_stop``'s own ``Event.set``, hung with its replication connection and the change store
still open. So the handler only writes a byte to a pipe (async-signal-safe), and a thread of its
own reads it and calls ``request_stop`` in an ordinary thread context.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install(request_stop: Callable[[], None], signals: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
    """From now on each of ``signals`` makes a thread call ``request_stop`` (which must be
    idempotent: every signal calls it again)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)

    def on_signal(signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):  # a full pipe: stops are already on their way
            os.write(write_fd, b"\0")

    def relay() -> None:
        while os.read(read_fd, 1):
            request_stop()

    threading.Thread(target=relay, name="auroratrack-stop-signal", daemon=True).start()
    for signum in signals:
        signal.signal(signum, on_signal)
