"""Keeps capture running: the changelog streamer's child process, restarted whenever it stops.

``auroratrack serve`` runs the streamer in a process of its own (streamer.py says why). Whatever
stops it (a crash, SIGKILL, the OOM killer, a bug on some binlog content), the supervisor starts
a new one after a backoff (1 s doubling to 30 s, back to 1 s once a process has streamed for a
minute); the new one resumes from the store's checkpoint, which is written with every stored
transaction: no gap, no duplicate. Inside the process the streamer itself reconnects to the
server when its connection breaks (KILL, server restart), with a backoff of its own, and keeps
the backfill's history reader running beside it (a process of its own, started again when it
dies, stopped with the streamer: backfill.py).

While capture is down the backtrack window is not growing, and that is said loudly: ``health``
(read by the admin API's status and by /metrics) says down since when and why; the log says so
at ERROR when it happens, again every 30 s while it lasts, and when capture is back.

Talks to no server and writes nothing but its log: it reads the streamer's status file
(``streamer.json``) and watches the process. Its ``watch`` loop runs on the service's event loop
and wakes twice a second; nothing of it is on the relay's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from proxy.changelog.streamer import StreamerConfig, run_streamer_process

log = logging.getLogger(__name__)

POLL_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # a process that streamed this long resets the backoff
REMIND_EVERY_S = 30.0


@dataclass(frozen=True)
class CaptureHealth:
    """Whether capture is growing the window right now, and since when it is not."""

    up: bool
    state: str  # starting | streaming | reconnecting | restarting | stopped
    down_since: float | None  # epoch seconds; None while up (or before it first came up)
    restarts: int  # streamer processes started again after one stopped
    reconnects: int  # times the running process lost its server connection and reconnected
    last_error: str | None

    def to_json(self) -> dict:
        return {"up": self.up, "state": self.state, "down_since": self.down_since,
                "down_for_s": round(time.time() - self.down_since, 3) if self.down_since else None,
                "restarts": self.restarts, "reconnects": self.reconnects, "last_error": self.last_error}


class CaptureSupervisor:
    """Starts the streamer process, restarts it when it stops, and reports capture's health."""

    def __init__(self, config: StreamerConfig, log_level: str = "INFO", log_format: str = "text",
                 min_backoff_s: float = 1.0):
        self.config = config
        self.log_level = log_level
        self.log_format = log_format
        self.min_backoff_s = min_backoff_s
        self.process: multiprocessing.Process | None = None
        self.restarts = 0
        self._backoff = min_backoff_s
        self._started_at = 0.0
        self._stopping = False
        self._ever_up = False
        self._down_since: float | None = None
        self._down_reason: str | None = None
        self._last_reminder = 0.0
        self._last_down_started: float | None = None
        self._task: asyncio.Task | None = None
        # Held while a process is spawned or stopped: a restart that a stop interrupts (its
        # thread cannot be cancelled) must not leave a process behind.
        self._spawn_lock = threading.Lock()
        self._health = CaptureHealth(False, "starting", None, 0, 0, None)

    # -- the process ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the streamer process (blocking for the few ms a spawn takes); not once stopping."""
        with self._spawn_lock:
            if self._stopping:
                return
            # spawn, not fork: the parent has an event loop and threads that must not be copied.
            context = multiprocessing.get_context("spawn")
            self.process = context.Process(target=run_streamer_process,
                                           args=(self.config, self.log_level, self.log_format),
                                           name="auroratrack-streamer", daemon=True)
            self.process.start()
            self._started_at = time.monotonic()
        log.info("changelog streamer started (pid %d, server_id %d, store %s)",
                 self.process.pid, self.config.server_id, self.config.store_path)

    def start_watching(self) -> None:
        """From now on a stopped streamer is restarted (call on the service's event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="auroratrack-capture-watch")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._stop_process)

    def _stop_process(self) -> None:
        with self._spawn_lock:  # after any spawn under way; none starts after this
            process = self.process
            if process is not None and process.is_alive():
                process.terminate()
                process.join(10)
                if process.is_alive():
                    process.kill()

    # -- health ----------------------------------------------------------------------------------------------
    def health(self) -> CaptureHealth:
        """The latest health (refreshed by the watch loop; read anew when it does not run)."""
        if self._task is None:
            self._refresh()
        return self._health

    def _refresh(self) -> CaptureHealth:
        process = self.process
        alive = process is not None and process.is_alive()
        reported = _read_status(self.config.status_path)
        ours = alive and reported.get("pid") == process.pid
        if not alive:
            state = "stopped" if self._stopping or self._task is None else "restarting"
        elif not ours:
            state = "starting"
        else:
            state = "streaming" if reported.get("connected") else "reconnecting"
        up = state == "streaming"
        now = time.time()
        if up:
            self._ever_up = True
            self._down_since = None
        elif ours and reported.get("down_since"):  # the streamer's own word: its stream broke then
            self._down_since = self._down_since or reported["down_since"]
        elif not alive or self._ever_up:  # dead, or not streaming any more (a restart starting)
            self._down_since = self._down_since or now
        error = reported.get("last_error") if ours else None
        if not alive and process is not None:
            error = self._down_reason or f"the streamer process exited (code {process.exitcode})"
        self._health = CaptureHealth(up, state, self._down_since, self.restarts,
                                     int(reported.get("reconnects") or 0) if ours else 0, error)
        return self._health

    # -- the watch loop --------------------------------------------------------------------------------------
    async def _watch(self) -> None:
        while not self._stopping:
            try:
                await self._watch_loop()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end supervision for the rest of the run
                log.exception("the capture supervisor failed; watching again in %.1f s", POLL_S)
                await asyncio.sleep(POLL_S)

    async def _watch_loop(self) -> None:
        was_down = False
        while not self._stopping:
            health = self._refresh()
            down = health.down_since is not None  # not "starting" before the first connection
            if down != was_down:
                self._say_transition(health)
                was_down = down
            elif down and time.monotonic() - self._last_reminder >= REMIND_EVERY_S:
                self._remind(health)
            if health.up and time.monotonic() - self._started_at >= STABLE_S:
                self._backoff = self.min_backoff_s
            if self.process is not None and not self.process.is_alive():
                await self._restart()
                continue
            await asyncio.sleep(POLL_S)

    async def _restart(self) -> None:
        code = self.process.exitcode
        self._down_reason = f"the streamer process exited (code {code})"
        self._down_since = self._down_since or time.time()
        self._health = CaptureHealth(False, "restarting", self._down_since, self.restarts, 0, self._down_reason)
        log.error("capture is DOWN: %s; the backtrack window is not growing; restarting it from its "
                  "checkpoint in %.1f s", self._down_reason, self._backoff,
                  extra={"capture_up": False, "exit_code": code})
        self._last_reminder = time.monotonic()
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        if self._stopping:
            return
        self.restarts += 1
        try:
            await asyncio.to_thread(self.start)
        except (OSError, RuntimeError) as exc:  # the next pass sees the same dead process: again, later
            log.error("capture is DOWN: starting the streamer again failed (%s)", exc)
            return
        self._down_reason = None

    def _say_transition(self, health: CaptureHealth) -> None:
        if health.down_since is None:
            log.warning("capture is back: the streamer resumed from its checkpoint (down %.1f s, %d restarts so far)",
                        time.time() - (self._last_down_started or time.time()), health.restarts,
                        extra={"capture_up": True})
            self._last_down_started = None
            return
        self._last_down_started = health.down_since
        self._last_reminder = time.monotonic()
        log.error("capture is DOWN (%s: %s); the backtrack window is not growing until it is back",
                  health.state, health.last_error or "no reason given yet", extra={"capture_up": False})

    def _remind(self, health: CaptureHealth) -> None:
        self._last_reminder = time.monotonic()
        log.error("capture has been DOWN for %.0f s (%s: %s); the backtrack window is not growing",
                  time.time() - health.down_since, health.state, health.last_error or "-",
                  extra={"capture_up": False})


def _read_status(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
