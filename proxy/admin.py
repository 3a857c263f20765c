"""The admin API: HTTP JSON inside ``auroratrack serve``, the one door the CLI uses.

Served by aiohttp on the service's own event loop (127.0.0.1 by default). It owns the two run
files that let clients find it in the data directory: ``admin.token`` (a fresh bearer token per
start, owner-only, mode 0600) and ``admin.json`` (address and pid, written last, so its presence
means "ready"). Every request must carry ``Authorization: Bearer <token>``; anything else gets
401 before routing, so even the route table stays private.

What it reads: the proxy's sessions and gate (directly: handlers run on the service's loop),
the change store (read-only, in a worker thread), the streamer's status file. It never talks to
the MySQL server itself; the only route that changes anything, ``POST /v1/backtracks``, hands a
``BacktrackRequest`` to the service's backtracker (``proxy/backtrack.py``).

Times in requests (a backtrack's ``to``, ``/v1/changes?since=&until=``) carry a zone or are
relative (``-15m``): one without a zone is refused with 400, because the service cannot know
whose local time was meant (the CLI resolves such times on the user's clock and sends them
absolute).

Errors are JSON ``{"error": message[, "details": {...}]}``; an unexpected exception in a handler
becomes a 500 with its message, and the server goes on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from aiohttp import web

from proxy import changes, metrics
from proxy.adminclient import ADDRESS_FILE, TOKEN_FILE
from proxy.backtrack import BacktrackRefused, BacktrackRequest
from proxy.changelog import backfill
from proxy.changelog.store import ChangeStore
from proxy.timeparse import parse_target

log = logging.getLogger(__name__)

API_PREFIX = "/v1"

SERVICE = web.AppKey("auroratrack_service", object)
TOKEN = web.AppKey("auroratrack_admin_token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Fields of POST /v1/backtracks and their JSON types (BacktrackRequest in proxy/backtrack.py).
BACKTRACK_FIELDS: dict[str, tuple[type, ...]] = {
    "to": (str,), "force": (bool,), "use_earliest": (bool,), "dry_run": (bool,),
    "with_sql": (bool,), "drain_timeout": (int, float),
}
RUNNING_STATUSES = ("pending", "applying")


class BadRequest(ValueError):
    """A request body the API cannot accept; the message says what to fix."""


# -- the application ---------------------------------------------------------------------------------
def make_admin_app(service: Any, token: str | None = None) -> web.Application:
    """The admin application for ``service`` (a ``proxy.service.Service``)."""
    app = web.Application(middlewares=[errors_as_json, require_token])
    app[SERVICE] = service
    app[TOKEN] = token or secrets.token_urlsafe(32)
    app.router.add_get(f"{API_PREFIX}/status", get_status)
    app.router.add_get(f"{API_PREFIX}/backtracks", list_backtracks)
    app.router.add_post(f"{API_PREFIX}/backtracks", post_backtrack)
    app.router.add_get(f"{API_PREFIX}/backtracks/{{id}}", get_backtrack)
    app.router.add_get(f"{API_PREFIX}/changes", get_changes)
    app.router.add_get("/metrics", get_metrics)
    return app


async def start_admin(service: Any, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the admin API on ``host:port`` (0 picks a free port) and write the run files.

    Returns the runner (give it to ``stop_admin``) and the bound port."""
    app = make_admin_app(service)
    # No access log: the CLI polls every 0.2 s during a backtrack.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"the admin API cannot listen on {host}:{port}: {exc.strerror}; "
                                 f"choose another with --admin HOST:PORT (port 0 picks a free one)") from exc
    bound_port = runner.addresses[0][1]
    write_run_files(service.config.data_dir, app[TOKEN], host, bound_port)
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("admin API listens on %s, beyond loopback: the token in %s is its only protection",
                    host, Path(service.config.data_dir) / TOKEN_FILE)
    return runner, bound_port


async def stop_admin(runner: web.AppRunner) -> None:
    """Stop serving and remove the run files (only if they are still this server's)."""
    data_dir = Path(runner.app[SERVICE].config.data_dir)
    ports = {address[1] for address in runner.addresses}
    await runner.cleanup()
    remove_run_files(data_dir, ports)


# -- run files ---------------------------------------------------------------------------------------
def write_run_files(data_dir: Path, token: str, host: str, port: int) -> None:
    """``admin.token`` (0600, created exclusively so it is never readable by others, not even
    for a moment) and then ``admin.json`` (atomically replaced)."""
    data_dir = Path(data_dir)
    token_path = data_dir / TOKEN_FILE
    token_path.unlink(missing_ok=True)
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the umask can only narrow it, but be explicit
        handle.write(token + "\n")
    address = {"host": host, "port": port, "pid": os.getpid()}
    tmp = data_dir / (ADDRESS_FILE + ".tmp")
    tmp.write_text(json.dumps(address) + "\n")
    tmp.replace(data_dir / ADDRESS_FILE)


def remove_run_files(data_dir: Path, ports: Iterable[int]) -> None:
    address_path = data_dir / ADDRESS_FILE
    try:
        address = json.loads(address_path.read_text())
    except (OSError, ValueError):
        return
    if address.get("pid") == os.getpid() and address.get("port") in set(ports):
        address_path.unlink(missing_ok=True)
        (data_dir / TOKEN_FILE).unlink(missing_ok=True)


# -- middlewares --------------------------------------------------------------------------------------
def json_error(status: int, message: str, details: dict | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if details:
        body["details"] = details
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    expected = request.app[TOKEN]
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        return json_error(401, "missing or wrong admin token: send 'Authorization: Bearer <token>' with the "
                               f"token from {TOKEN_FILE} in the data directory",
                          headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:  # aiohttp's own 404 / 405 / 413 ...
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_error(exc.status, exc.reason, headers=headers)
    except BadRequest as exc:
        return json_error(400, str(exc))
    except Exception as exc:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return json_error(500, f"{type(exc).__name__}: {exc}")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def ok(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


# -- status -------------------------------------------------------------------------------------------
async def get_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    config = service.config
    store = None
    if config.capture and config.store_path.exists():
        store = await asyncio.to_thread(store_status, config.store_path, config.backtrack_window_s)
    return ok({
        "state": service_state(service),
        "auroratrack_version": _version(),
        "pid": os.getpid(),
        "upstream": upstream_status(service),
        "listen": _address(service.listen_address),
        "admin": _address(getattr(service, "admin_address", None)),
        "sessions": session_counts(service.proxy.session_infos() if service.proxy else []),
        "capture": config.capture,
        "store": store,
        "streamer": with_health(streamer_status(config.streamer_status_path, service.streamer_process,
                                                store["checkpoint"] if store else None),
                                service.capture_health()) if config.capture else None,
        "last_backtrack": last_backtrack(service),
        "capture_lag": (await asyncio.to_thread(metrics.gather, service)).get("lag") if config.capture else None,
        "creation_rate_per_s": _creation_rate(config) if config.capture else None,
        "held_tables": _held_tables(service),
        "tls": service.tls.status() if getattr(service, "tls", None) else None,  # TLS (proxy/tls.py)
    })


def _creation_rate(config: Any) -> float | None:
    if not config.store_path.exists():
        return None
    return round(metrics.store_numbers(config.store_path)["creation_rate_per_s"], 3)


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (the token is required here too)."""
    service = request.app[SERVICE]
    numbers = await asyncio.to_thread(metrics.gather, service)
    body = metrics.render(service, numbers)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def get_changes(request: web.Request) -> web.Response:
    """Committed transactions, newest first, filtered; or one transaction's rows (?rows=TXN)."""
    service = request.app[SERVICE]
    if not service.config.capture:
        return json_error(503, "capture is off (serve --no-capture): no changelog to browse")
    query = request.query
    flavor = service.inspection.flavor.name if service.inspection else None
    store_path = service.config.store_path

    def run() -> Any:
        store = ChangeStore(store_path, readonly=True)
        try:
            if "rows" in query:
                return changes.transaction_rows(store, _int(query, "rows"), flavor, _int(query, "limit", 1000))
            return changes.list_changes(store, _change_filter(query), flavor)
        finally:
            store.close()

    try:
        return ok(await asyncio.to_thread(run))
    except KeyError as exc:
        return json_error(404, str(exc.args[0]))


def _change_filter(query: Any) -> changes.ChangeFilter:
    operation = query.get("operation")
    if operation is not None and operation not in changes.OPERATIONS:
        raise BadRequest(f"operation must be one of {', '.join(changes.OPERATIONS)}")
    return changes.ChangeFilter(
        since_us=_time(query, "since"), until_us=_time(query, "until"), table=query.get("table"),
        operation=operation, gtid=query.get("gtid"), grep=query.get("grep"), limit=_int(query, "limit", 50),
        internal=query.get("all", "").lower() in ("1", "true", "yes"),  # auroratrack's own schema too
    )


def _time(query: Any, name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        target = parse_target(text)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None
    if target.kind != "time":
        raise BadRequest(f"{name} must be a time, not {target.kind}")
    return target.time_us


def _int(query: Any, name: str, default: int | None = None) -> int:
    try:
        return int(query[name]) if name in query else int(default)
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a whole number") from None


def service_state(service: Any) -> str:
    """``backtracking`` while the gate is closed or a (non dry-run) backtrack runs;
    ``capture_down`` while capture is not growing the window (the streamer is restarting or
    reconnecting; proxy/changelog/supervisor.py); else ``available``."""
    if service.gate is not None and not service.gate.is_open:
        return "backtracking"
    backtracker = getattr(service, "backtracker", None)
    if backtracker is not None:
        for record in backtracker.list():
            data = record.to_json()
            if data.get("status") in RUNNING_STATUSES and not data.get("dry_run"):
                return "backtracking"
    health = service.capture_health() if hasattr(service, "capture_health") else None
    if health is not None and health.down_since is not None:
        return "capture_down"
    return "available"


def upstream_status(service: Any) -> dict[str, Any]:
    upstream = service.config.upstream
    flavor = service.inspection.flavor if service.inspection is not None else None
    return {
        "address": f"{upstream.host}:{upstream.port}",
        "server_version": flavor.version_text if flavor else None,
        "flavor": flavor.name if flavor else None,
    }


def session_counts(infos: Iterable[Any]) -> dict[str, int]:
    """Sessions by state (idle / busy / held / connecting), those in a transaction, and all."""
    counts = {"total": 0, "idle": 0, "busy": 0, "held": 0, "connecting": 0, "in_transaction": 0}
    for info in infos:
        counts["total"] += 1
        counts[info.state] = counts.get(info.state, 0) + 1
        counts["in_transaction"] += bool(info.in_transaction)
    return counts


def store_status(store_path: Path, target_window_s: float) -> dict[str, Any]:
    """The change store's numbers and the backtrack window (blocking: run it in a thread)."""
    store = ChangeStore(store_path, readonly=True)
    try:
        stats = store.stats()
        checkpoint = store.checkpoint()
        window_alert = store.get_meta("window_alert") == "1"
        gaps = len(store.gaps())
        history = backfill.progress(store)
    finally:
        store.close()
    earliest = stats["earliest_backtrack_time_us"]
    return {
        "transactions": stats["transactions"],
        "change_records": stats["change_records"],
        "stored_bytes": stats["stored_bytes"],
        "file_bytes": stats["store_file_bytes"],
        "evicted_transactions": stats["evicted_transactions"],
        "oldest_commit_time": iso_utc(stats["oldest_commit_time_us"]),
        "newest_commit_time": iso_utc(stats["newest_commit_time_us"]),
        "earliest_backtrack_time": iso_utc(earliest),
        "earliest_backtrack_time_us": earliest,
        "target_window_s": target_window_s,
        "actual_window_s": max(0.0, time.time() - earliest / 1e6) if earliest is not None else None,
        "window_alert": window_alert,
        "checkpoint": f"{checkpoint.log_file}:{checkpoint.log_pos}" if checkpoint else None,
        "gaps": gaps,
        "backfill": history and {**history, "reached_time": iso_utc(history["reached_time_us"])},
    }


def streamer_status(status_path: Path, process: Any, checkpoint: str | None = None) -> dict[str, Any]:
    """The streamer process and what it last wrote to ``streamer.json``. Its position is the
    store's checkpoint when there is one: that is written with every transaction, while the
    status file is refreshed at most every 0.5 s and only when events arrive."""
    alive = process is not None and process.is_alive()
    try:
        reported = json.loads(status_path.read_text())
    except (OSError, ValueError):
        reported = {}
    if not alive:
        status = "stopped"
    elif not reported:
        status = "starting"
    else:
        status = "streaming" if reported.get("connected") else "reconnecting"
    updated_at = reported.get("updated_at")
    return {
        "status": status,
        "pid": process.pid if process is not None else None,
        "exit_code": process.exitcode if process is not None and not alive else None,
        "position": checkpoint or reported.get("position"),
        "connected": reported.get("connected"),
        "last_error": reported.get("last_error"),
        "committed": reported.get("committed"),
        "last_event_time": iso_utc(reported["last_event_time"] * 1_000_000) if reported.get("last_event_time")
        else None,
        "status_age_s": round(time.time() - updated_at, 3) if updated_at else None,
    }


def with_health(streamer: dict[str, Any], health: Any) -> dict[str, Any]:
    """The streamer's status with the supervisor's word on it: up or down since when, restarts."""
    if health is None:
        return streamer
    data = health.to_json()
    # The supervisor's state: it knows a status file written by a process that is gone.
    return {**streamer, "status": data["state"], "last_error": data["last_error"] or streamer.get("last_error"),
            "up": data["up"], "down_since": iso_utc(int(data["down_since"] * 1e6))
            if data["down_since"] else None, "down_for_s": data["down_for_s"], "restarts": data["restarts"],
            "reconnects": data["reconnects"]}


def last_backtrack(service: Any) -> dict | None:
    """The newest backtrack that was not a dry run (records are listed oldest first)."""
    backtracker = getattr(service, "backtracker", None)
    records = [r.to_json() for r in backtracker.list()] if backtracker is not None else []
    real = [r for r in records if not r.get("dry_run")]
    return real[-1] if real else None


def iso_utc(epoch_us: int | None) -> str | None:
    """``2026-11-22T10:15:00.123456Z`` for epoch microseconds."""
    if epoch_us is None:
        return None
    moment = datetime.fromtimestamp(epoch_us / 1e6, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _held_tables(service) -> list[dict] | None:
    """Tables held by DROP/TRUNCATE (proxy.ddlhold), as of the last retention sweep."""
    holder = getattr(service, "ddl_holder", None)
    return [h.to_json() for h in holder.held] if holder is not None else None


def _address(address: tuple[str, int] | None) -> str | None:
    if address is None:
        return None
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _version() -> str:
    try:
        return metadata.version("auroratrack")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"


# -- backtracks ---------------------------------------------------------------------------------------
def parse_backtrack_fields(body: Any) -> dict[str, Any]:
    """The ``BacktrackRequest`` fields in a POST body, type-checked; ``BadRequest`` otherwise."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object, e.g. {\"to\": \"2026-11-22T10:15:00Z\"}")
    unknown = sorted(set(body) - set(BACKTRACK_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(BACKTRACK_FIELDS)}")
    if not isinstance(body.get("to"), str) or not body["to"].strip():
        raise BadRequest("'to' is required: the time to backtrack to, e.g. \"2026-11-22T10:15:00Z\" or \"-15m\"")
    for name, value in body.items():
        types = BACKTRACK_FIELDS[name]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise BadRequest(f"'{name}' must be {' or '.join(t.__name__ for t in types)}, not {value!r}")
    if body.get("drain_timeout", 1) <= 0:
        raise BadRequest("'drain_timeout' must be positive (seconds)")
    return dict(body)


async def post_backtrack(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None
    fields = parse_backtrack_fields(body)
    service = request.app[SERVICE]
    backtracker = getattr(service, "backtracker", None)
    if backtracker is None:
        return _backtrack_not_available(service)
    try:
        record = await backtracker.request(BacktrackRequest(**fields))
    except BacktrackRefused as exc:
        return json_error(409 if "running" in exc.details else 400, str(exc), exc.details)
    return ok(record.to_json(), status=202)


async def list_backtracks(request: web.Request) -> web.Response:
    """Every backtrack this serve knows (none when it has no backtracker: none ever ran)."""
    backtracker = getattr(request.app[SERVICE], "backtracker", None)
    records = backtracker.list() if backtracker is not None else []
    return ok([record.to_json() for record in records])


async def get_backtrack(request: web.Request) -> web.Response:
    backtrack_id = request.match_info["id"]
    backtracker = getattr(request.app[SERVICE], "backtracker", None)
    record = backtracker.get(backtrack_id) if backtracker is not None else None
    if record is None:
        return json_error(404, f"no backtrack {backtrack_id!r}; list them with: auroratrack describe-backtracks")
    return ok(record.to_json())


def _backtrack_not_available(service: Any) -> web.Response:
    if not service.config.capture:
        return json_error(503, "backtrack not available: this serve runs without capture (--no-capture)")
    return json_error(503, "backtrack not available in this version of auroratrack serve")
