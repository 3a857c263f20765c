"""Helpers for changelog tests: the streamer as a real process, and waiting for it to catch up."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from proxy.changelog.store import ChangeStore
from proxy.changelog.streamer import current_binlog_position
from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer


class StreamerProcess:
    """``python -m proxy.changelog.streamer`` against a private server, killable at will."""

    def __init__(self, server: PrivateServer, store_path: Path, *extra: str):
        self.server = server
        self.store_path = store_path
        self.extra = extra
        self.process: subprocess.Popen | None = None
        self.log_path = store_path.with_suffix(".log")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "proxy.changelog.streamer", "--upstream",
                f"127.0.0.1:{self.server.port}", "--user", ADMIN_USER, "--store", str(self.store_path),
                *self.extra]

    @staticmethod
    def environment() -> dict[str, str]:
        return dict(os.environ, AURORATRACK_UPSTREAM_PASSWORD=ADMIN_PASSWORD)

    def start(self) -> StreamerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), env=self.environment(), stdout=log,
                                            stderr=subprocess.STDOUT)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def peak_rss_bytes(self) -> int:
        """The process's peak resident memory so far (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_caught_up(server: PrivateServer, store_path: Path, timeout: float = 60.0,
                   process: StreamerProcess | None = None) -> None:
    """Wait until the store's checkpoint reaches the server's current binlog position."""
    with server.connect() as conn:
        target = current_binlog_position(conn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.process is not None and process.process.poll() is not None:
            raise AssertionError(f"streamer exited:\n{process.log_text()[-3000:]}")
        if store_path.exists():
            try:
                store = ChangeStore(store_path, readonly=True)
                try:
                    ck = store.checkpoint()
                finally:
                    store.close()
            except sqlite3.OperationalError:  # the streamer is still creating the store
                ck = None
            if ck is not None and (ck.log_file, ck.log_pos) >= target:
                return
        time.sleep(0.05)
    log = process.log_text()[-3000:] if process else ""
    raise AssertionError(f"streamer did not reach {target} within {timeout}s\n{log}")


def gtid_seqs(store_path: Path) -> list[int]:
    """MariaDB GTID sequence numbers of the stored transactions, in store order."""
    store = ChangeStore(store_path, readonly=True)
    try:
        return [int(t.gtid.rsplit("-", 1)[1]) for t in store.transactions() if t.gtid]
    finally:
        store.close()


def server_gtid_seq(server: PrivateServer) -> int:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        return int(cur.fetchone()[0].rsplit("-", 1)[1])


def signal_name(sig: int) -> str:
    return signal.Signals(sig).name


def wait_caught_up_dir(server: PrivateServer, store_path: Path, timeout: float = 120.0) -> None:
    """``wait_caught_up`` for a store written by another process (no handle on it)."""
    wait_caught_up(server, store_path, timeout)
