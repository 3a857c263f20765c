"""The running service: the proxy, the gate, the server control, and the changelog streamer.

``auroratrack serve`` runs a ``Service`` on the main thread (uvloop when installed); the
streamer runs in a child process of its own (it is CPU work and must not take the GIL from the
relay), kept running by ``CaptureSupervisor`` (restarted from its checkpoint whenever it
stops). Tests and benchmarks run the same ``Service`` on a background thread with
``BackgroundService`` and reach its parts (the gate above all) with ``call``. Components get
what they need, not the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from proxy.backtrack import Backtracker
from proxy.changelog.inspector import InspectionReport, require_ready
from proxy.changelog.store import ChangeStore
from proxy.changelog.streamer import StreamerConfig, stable_server_id
from proxy.changelog.supervisor import CaptureHealth, CaptureSupervisor
from proxy.ddlhold import DdlHolder
from proxy.ddlundo import DdlUndo, resume_interrupted
from proxy.gate import Gate
from proxy.relay import ProxyServer
from proxy.serveradmin import ServerAdmin, UpstreamCredentials
from proxy.tls import CertificateFiles, ClientTls, TlsPolicy, ensure_self_signed
from proxy.tlslogin import probe_upstream_tls

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``auroratrack serve`` is told."""

    upstream: UpstreamCredentials
    listen_host: str = "127.0.0.1"
    listen_port: int = 3307
    data_dir: Path = Path(".auroratrack/data")
    hold_timeout: float = 30.0
    max_allowed_packet: int | None = None  # None: read the server's at start
    connect_timeout: float = 10.0
    capture: bool = True  # run the changelog streamer (tests of the bare proxy turn it off)
    backtrack_window_s: float = 24 * 3600
    max_store_bytes: int | None = None
    streamer_server_id: int = 0  # 0: derived from the data directory
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"
    admin_host: str = "127.0.0.1"  # the admin API (proxy/admin.py); loopback by default
    admin_port: int = 3308  # 0: pick a free port (serve writes the bound one to <data_dir>/admin.json)
    capture_restart_backoff_s: float = 1.0  # first wait before a stopped streamer is started again
    hold_ddl: bool | None = None  # hold DROP TABLE / TRUNCATE (proxy.ddlhold); None: when capturing
    backfill: bool = True  # empty store: capture the server's binlogs within the window (backfill.py)
    backfill_pause_s: float = 0.0  # the history reader rests this long after each transaction
    # TLS on the client leg (the upstream leg's policy is in ``upstream``): --client-tls,
    # --tls-cert/--tls-key (None: a self-signed pair made in data_dir at first start).
    client_tls: str = "preferred"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_handshake_timeout: float = 10.0

    @property
    def store_path(self) -> Path:
        return self.data_dir / "changes.db"

    @property
    def streamer_status_path(self) -> Path:
        return self.data_dir / "streamer.json"

    def streamer_config(self) -> StreamerConfig:
        return StreamerConfig(
            upstream=self.upstream, store_path=self.store_path,
            server_id=self.streamer_server_id or stable_server_id(self.store_path),
            window_s=self.backtrack_window_s, max_store_bytes=self.max_store_bytes,
            status_path=self.streamer_status_path, backfill=self.backfill, backfill_pause_s=self.backfill_pause_s,
        )


class Service:
    """The proxy, its gate and auroratrack's control connection, started and stopped together."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.admin = ServerAdmin(config.upstream)
        self.gate: Gate | None = None
        self.proxy: ProxyServer | None = None
        self.listen_address: tuple[str, int] | None = None
        self.inspection: InspectionReport | None = None
        self.capture: CaptureSupervisor | None = None
        self.backtracker: Backtracker | None = None
        self.admin_runner = None  # aiohttp AppRunner of the admin API
        self.admin_address: tuple[str, int] | None = None
        self.ddl_holder: DdlHolder | None = None
        self._sweep_task: asyncio.Task | None = None
        self.tls: TlsPolicy | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # nothing half-started stays behind (the streamer process above all)
            raise

    async def _start(self) -> None:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        await self._start_tls()
        if config.capture:
            streamer_config = config.streamer_config()
            self.inspection = await asyncio.to_thread(
                require_ready, config.upstream, streamer_config.server_id, config.backtrack_window_s
            )
            for warning in self.inspection.warnings:
                log.warning("%s", warning.message)
            passed = [f.setting for f in self.inspection.findings if f.ok]
            log.info("server checks passed on %s (%s %s): %s", self.inspection.server, self.inspection.flavor.name,
                     self.inspection.flavor.version_text, ", ".join(passed),
                     extra={"checks": passed, "server": self.inspection.server})
            ChangeStore(config.store_path).close()  # create the schema before anyone reads it
            self.capture = CaptureSupervisor(streamer_config, config.log_level, config.log_format,
                                             min_backoff_s=config.capture_restart_backoff_s)
            self.capture.start()
            # Clients get in only once capture has fixed where it starts: a write before that
            # would never be captured, and nothing before it could be rewound.
            await asyncio.to_thread(self._wait_capture_started, 60.0)
        max_packet = config.max_allowed_packet
        if max_packet is None:
            max_packet = await asyncio.to_thread(self.admin.max_allowed_packet)
        self.gate = Gate(hold_timeout=config.hold_timeout, server=self.admin)
        self.proxy = ProxyServer(
            config.upstream.host, config.upstream.port, self.gate,
            max_allowed_packet=max_packet, connect_timeout=config.connect_timeout, tls=self.tls,
        )
        if config.capture:
            self.backtracker = Backtracker(config.upstream, self.gate, config.store_path, config.data_dir,
                                           flavor=self.inspection.flavor.name, capture_health=self.capture_health)
            await asyncio.to_thread(self.backtracker.startup_recovery)
        if self.capture is not None:
            self.capture.start_watching()  # from here on, a streamer that stops is started again
        if config.capture if config.hold_ddl is None else config.hold_ddl:
            self.ddl_holder = DdlHolder(config.upstream, config.data_dir)
            await asyncio.to_thread(self.ddl_holder.start)  # settles ops a crash interrupted
            self.proxy.ddl = self.ddl_holder
            if self.backtracker is not None:
                self.backtracker.ddl_undo = DdlUndo(self.ddl_holder.journal, self.inspection.flavor.name)
                self._sweep_task = asyncio.get_running_loop().create_task(
                    self.ddl_holder.sweep_forever(config.store_path))
                await asyncio.to_thread(self._resume_ddl_backtrack)  # before clients get in
        self.listen_address = await self.proxy.start(config.listen_host, config.listen_port)
        log.info("proxy listening on %s:%d, relaying to %s:%d (max_allowed_packet %d)",
                 *self.listen_address, config.upstream.host, config.upstream.port, max_packet)
        await self._start_admin()

    def _resume_ddl_backtrack(self) -> None:
        backtracker = self.backtracker
        resume_interrupted(backtracker.ddl_undo, self.config.store_path, backtracker.apply_connection,
                           backtracker.catch_up, backtracker.finish_resumed)

    async def _start_tls(self) -> None:
        """Both legs' TLS; refuses to start when the server's certificate fails verification."""
        config = self.config
        files = None
        if config.client_tls != "disabled":
            if config.tls_cert is not None:
                files = CertificateFiles(config.tls_cert, config.tls_key or config.tls_cert)
            else:
                files = await asyncio.to_thread(ensure_self_signed, config.data_dir)
        self.tls = TlsPolicy(ClientTls(config.client_tls, files), config.upstream.tls_mode,
                             config.upstream.tls_ca, config.tls_handshake_timeout)
        cipher = await asyncio.to_thread(probe_upstream_tls, config.upstream.host, config.upstream.port,
                                         self.tls, config.connect_timeout)
        log.info("TLS: clients %s%s; server %s%s", config.client_tls,
                 f" (certificate SHA-256 {self.tls.client.fingerprint})" if self.tls.client.offered else "",
                 config.upstream.tls_mode, f" ({cipher}, certificate verified)" if cipher else "")

    def reload_tls(self) -> None:
        """SIGHUP: read the certificate and key again; sessions keep their TLS, new ones get the new
        certificate. A file that does not load leaves the old certificate in use."""
        if self.tls is None:
            return
        try:
            self.tls.client.reload()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("TLS certificate not reloaded, the old one stays in use: %s", exc)
            return
        log.info("TLS certificate reloaded (SHA-256 %s)", self.tls.client.fingerprint)

    async def _start_admin(self) -> None:
        # Imported here: aiohttp takes ~0.4 s to import and the CLI's client commands never need it.
        from proxy.admin import start_admin

        self.admin_runner, port = await start_admin(self, self.config.admin_host, self.config.admin_port)
        self.admin_address = (self.config.admin_host, port)
        log.info("admin API on %s:%d (token in %s)", *self.admin_address, self.config.data_dir / "admin.token")

    def _wait_capture_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            store = ChangeStore(self.config.store_path, readonly=True)
            try:
                if store.checkpoint() is not None:
                    return
            finally:
                store.close()
            if self.streamer_process is not None and not self.streamer_process.is_alive():
                raise RuntimeError(f"the changelog streamer exited at start (code {self.streamer_process.exitcode})")
            time.sleep(0.02)
        raise TimeoutError(f"the changelog streamer did not start within {timeout:.0f} s")

    @property
    def streamer_process(self) -> multiprocessing.Process | None:
        """The streamer's current process (a new one after each restart)."""
        return self.capture.process if self.capture is not None else None

    def capture_health(self) -> CaptureHealth | None:
        """Whether capture is growing the window now; None when capture is off."""
        return self.capture.health() if self.capture is not None else None

    async def stop(self) -> None:
        if self.admin_runner is not None:  # first, so clients see at once that serve is gone
            from proxy.admin import stop_admin

            await stop_admin(self.admin_runner)
            self.admin_runner = None
        if self.proxy is not None:
            await self.proxy.close()
        if self.capture is not None:
            await self.capture.stop()
        await asyncio.to_thread(self.admin.close)
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweep_task
        if self.ddl_holder is not None:
            self.ddl_holder.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (about 10% more throughput here), else asyncio's own."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class BackgroundService:
    """A ``Service`` on its own thread and event loop, for tests and benchmarks."""

    def __init__(self, config: ServeConfig):
        self.service = Service(config)
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="auroratrack", daemon=True)

    def start(self) -> BackgroundService:
        self._thread.start()
        self.call(self.service.start)
        return self

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 120.0) -> T:
        """Run ``await fn()`` on the service's loop and wait for the result."""

        async def runner() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def call_soon(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run a plain function on the service's loop (where the gate and sessions live)."""

        async def runner() -> T:
            return fn()

        return self.call(runner, timeout)

    @property
    def gate(self) -> Gate:
        return self.service.gate

    @property
    def port(self) -> int:
        return self.service.listen_address[1]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.service.stop, timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
