"""Prometheus metrics, and the capture lag and creation rate that status also shows.

Aurora's four Backtrack metrics under Prometheus names, plus the proxy's:
  auroratrack_change_records_created_total   counter  (BacktrackChangeRecordsCreationRate = rate())
  auroratrack_change_records_stored          gauge    (BacktrackChangeRecordsStored)
  auroratrack_backtrack_window_actual_seconds gauge   (BacktrackWindowActual)
  auroratrack_backtrack_window_alert         gauge 0/1 (BacktrackWindowAlert)
  auroratrack_backtrack_window_target_seconds, auroratrack_store_bytes,
  auroratrack_capture_lag_seconds, auroratrack_capture_lag_bytes,
  auroratrack_capture_up (gauge 0/1: 0 while the window is not growing),
  auroratrack_capture_down_seconds, auroratrack_capture_restarts_total (streamer processes
  started again), auroratrack_capture_reconnects_total (server connections re-opened by the
  running streamer; starts from 0 in each new process),
  auroratrack_proxy_sessions{state}, auroratrack_proxy_sessions_in_transaction,
  auroratrack_queries_relayed_total, auroratrack_gate_open,
  auroratrack_backtracks{status}, auroratrack_backtrack_duration_seconds (histogram),
  auroratrack_held_tables, auroratrack_held_bytes (tables kept by held DROP/TRUNCATE).
  auroratrack_backtrack_earliest_time_seconds (epoch seconds of the earliest backtrack time),
  auroratrack_backfill_reading (gauge 0/1), auroratrack_backfill_bytes_read and
  auroratrack_backfill_bytes_total (history in the server's binlogs; only after a backfill began).
Everything is read at scrape time from the service's parts; nothing is kept twice.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from proxy.changelog import backfill
from proxy.changelog.store import ChangeStore
from proxy.changelog.streamer import current_binlog_position

DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, float("inf"))
RATE_WINDOW_S = 300  # Aurora's creation rate is per five minutes


def store_numbers(store_path) -> dict[str, Any]:
    """Counts, the newest LSN and the creation rate over five minutes (blocking)."""
    store = ChangeStore(store_path, readonly=True)
    try:
        stats = store.stats()
        since = int((time.time() - RATE_WINDOW_S) * 1e6)
        recent = store.db.execute("SELECT COALESCE(SUM(n_changes), 0) FROM transactions WHERE commit_time_us >= ?",
                                  (since,)).fetchone()[0]
        last_lsn = store.db.execute("SELECT MAX(last_lsn) FROM transactions").fetchone()[0]
        checkpoint = store.checkpoint()
        alert = store.get_meta("window_alert") == "1"
        history = backfill.progress(store)
    finally:
        store.close()
    return {**stats, "created_total": last_lsn or 0, "creation_rate_per_s": recent / RATE_WINDOW_S,
            "checkpoint": checkpoint, "window_alert": alert, "backfill": history}


def capture_lag(upstream, checkpoint, last_commit_time_us: int | None) -> dict[str, Any]:
    """How far capture is behind the server: bytes of binlog not yet stored, and seconds since
    the newest stored commit when there is any (0 when caught up). Blocking."""
    if checkpoint is None:
        return {"bytes": None, "seconds": None, "server_position": None}
    with upstream.connect(role="status") as conn:
        server_file, server_pos = current_binlog_position(conn)
        behind = 0
        if (checkpoint.log_file, checkpoint.log_pos) < (server_file, server_pos):
            with conn.cursor() as cur:
                cur.execute("/* auroratrack status */ SHOW BINARY LOGS")
                sizes = {row[0]: int(row[1]) for row in cur.fetchall()}
            for name, size in sizes.items():
                if checkpoint.log_file < name < server_file:
                    behind += size
            behind += (sizes.get(checkpoint.log_file, checkpoint.log_pos) - checkpoint.log_pos
                       if checkpoint.log_file != server_file else server_pos - checkpoint.log_pos)
            if checkpoint.log_file != server_file:
                behind += server_pos
    seconds = 0.0
    if behind and last_commit_time_us:
        seconds = max(0.0, time.time() - last_commit_time_us / 1e6)
    return {"bytes": behind, "seconds": round(seconds, 3), "server_position": f"{server_file}:{server_pos}"}


class ServiceCollector:
    """A prometheus-client collector over a running ``Service``; ``numbers`` are gathered by
    ``gather`` (blocking calls, run in a thread) just before ``generate_latest``."""

    def __init__(self, service: Any, numbers: dict[str, Any]):
        self.service = service
        self.numbers = numbers

    def collect(self):
        yield from self._proxy()
        yield from self._store()
        yield from self._capture()
        yield from self._backtracks()
        yield from self._held()

    def _held(self):
        holder = getattr(self.service, "ddl_holder", None)  # proxy.ddlhold: held DROP/TRUNCATE
        if holder is not None:
            yield GaugeMetricFamily("auroratrack_held_tables", "Tables kept by held DROP/TRUNCATE.",
                                    value=len(holder.held))
            yield GaugeMetricFamily("auroratrack_held_bytes", "Bytes of the held tables.",
                                    value=sum(h.bytes for h in holder.held))

    def _capture(self):
        health = self.service.capture_health() if hasattr(self.service, "capture_health") else None
        if health is None:
            return
        # "starting" (before the first connection) counts as up: serve lets no client in before.
        up = health.up or health.down_since is None
        yield GaugeMetricFamily("auroratrack_capture_up", "1 while capture streams the binlog (the window grows).",
                                value=1 if up else 0)
        yield GaugeMetricFamily("auroratrack_capture_down_seconds", "How long capture has been down (0 while up).",
                                value=max(0.0, time.time() - health.down_since) if health.down_since else 0.0)
        yield CounterMetricFamily("auroratrack_capture_restarts", "Streamer processes started again after one stopped.",
                                  value=health.restarts)
        yield CounterMetricFamily("auroratrack_capture_reconnects",
                                  "Server connections the running streamer re-opened.", value=health.reconnects)

    def _proxy(self):
        proxy = self.service.proxy
        sessions = GaugeMetricFamily("auroratrack_proxy_sessions", "Client sessions by state.", labels=["state"])
        counts = {"idle": 0, "busy": 0, "held": 0, "connecting": 0}
        in_transaction = 0
        for info in proxy.session_infos() if proxy else []:
            counts[info.state] = counts.get(info.state, 0) + 1
            in_transaction += bool(info.in_transaction)
        for state, count in counts.items():
            sessions.add_metric([state], count)
        yield sessions
        yield GaugeMetricFamily("auroratrack_proxy_sessions_in_transaction", "Sessions inside a transaction.",
                                value=in_transaction)
        yield CounterMetricFamily("auroratrack_queries_relayed", "Commands relayed to the server.",
                                  value=proxy.commands_relayed if proxy else 0)
        gate = self.service.gate
        yield GaugeMetricFamily("auroratrack_gate_open", "1 while the gate lets commands through.",
                                value=1 if gate is None or gate.is_open else 0)

    def _store(self):
        numbers = self.numbers.get("store")
        if not numbers:
            return
        window = self.service.config.backtrack_window_s
        earliest = numbers.get("earliest_backtrack_time_us")
        actual = max(0.0, time.time() - earliest / 1e6) if earliest else 0.0
        yield CounterMetricFamily("auroratrack_change_records_created", "Change records created (the newest LSN).",
                                  value=numbers["created_total"])
        yield GaugeMetricFamily("auroratrack_change_records_stored", "Change records in the store.",
                                value=numbers["change_records"])
        yield GaugeMetricFamily("auroratrack_store_bytes", "Bytes of the change store on disk.",
                                value=numbers["store_file_bytes"])
        yield GaugeMetricFamily("auroratrack_backtrack_window_target_seconds", "The target window.", value=window)
        yield GaugeMetricFamily("auroratrack_backtrack_window_actual_seconds", "How far back a backtrack can go.",
                                value=actual)
        yield GaugeMetricFamily("auroratrack_backtrack_window_alert", "1 when the actual window fell short.",
                                value=1 if numbers["window_alert"] else 0)
        if earliest:
            yield GaugeMetricFamily("auroratrack_backtrack_earliest_time_seconds",
                                    "The earliest backtrack time (epoch seconds).", value=earliest / 1e6)
        yield from _backfill(numbers.get("backfill"))
        lag = self.numbers.get("lag") or {}
        if lag.get("bytes") is not None:
            yield GaugeMetricFamily("auroratrack_capture_lag_bytes", "Binlog bytes not yet captured.",
                                    value=lag["bytes"])
            yield GaugeMetricFamily("auroratrack_capture_lag_seconds", "Capture delay in seconds.",
                                    value=lag["seconds"])

    def _backtracks(self):
        backtracker = getattr(self.service, "backtracker", None)
        records = [r for r in backtracker.list() if not r.dry_run] if backtracker else []
        by_status = GaugeMetricFamily("auroratrack_backtracks", "Backtracks by status.", labels=["status"])
        for status in ("pending", "applying", "completed", "failed"):
            by_status.add_metric([status], sum(1 for r in records if r.status == status))
        yield by_status
        durations = [r.durations["total_s"] for r in records if r.durations.get("total_s") is not None]
        buckets = [(str(b) if b != float("inf") else "+Inf", sum(1 for d in durations if d <= b))
                   for b in DURATION_BUCKETS]
        yield HistogramMetricFamily("auroratrack_backtrack_duration_seconds", "Backtrack wall time.",
                                    buckets=buckets, sum_value=sum(durations))


def _backfill(history: dict | None):
    if not history:
        return
    yield GaugeMetricFamily("auroratrack_backfill_reading", "1 while history from before capture started is read.",
                            value=1 if history["state"] in ("starting", "reading") else 0)
    yield GaugeMetricFamily("auroratrack_backfill_bytes_read", "Binlog bytes of history read by the backfill.",
                            value=history["bytes_read"])
    yield GaugeMetricFamily("auroratrack_backfill_bytes_total", "Binlog bytes of history the backfill reads.",
                            value=history["bytes_total"])


def gather(service: Any) -> dict[str, Any]:
    """The blocking part of a scrape or a status: store numbers and the capture lag."""
    config = service.config
    if not (config.capture and config.store_path.exists()):
        return {}
    numbers = store_numbers(config.store_path)
    try:
        lag = capture_lag(config.upstream, numbers["checkpoint"], numbers["newest_commit_time_us"])
    except Exception as exc:  # the server is away: say so, do not fail the scrape
        lag = {"bytes": None, "seconds": None, "error": str(exc)}
    return {"store": numbers, "lag": lag}


def render(service: Any, numbers: dict[str, Any]) -> bytes:
    registry = CollectorRegistry()
    registry.register(ServiceCollector(service, numbers))
    return generate_latest(registry)
