"""The ``auroratrack`` command line.

``serve`` runs the service in this process; every other command is a thin client of the running
service's admin API, found through ``--data-dir`` (DESIGN.md, "Command-line contract"). Exit code
0 means success.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

from proxy.serveradmin import UpstreamCredentials
from proxy.service import ServeConfig, Service, new_event_loop
from proxy.units import parse_duration, parse_size


def parse_host_port(value: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``HOST`` or ``:PORT`` (IPv6 as ``[::1]:PORT``)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, ""
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise click.BadParameter(f"{value!r} is not HOST:PORT") from None


def read_password(password_file: Path | None) -> str:
    if password_file is not None:
        return password_file.read_text().rstrip("\r\n")
    return os.environ.get("AURORATRACK_UPSTREAM_PASSWORD", "")


@click.group()
@click.version_option(package_name="auroratrack")
def main() -> None:
    """auroratrack: Aurora-style Backtrack for stock MySQL and MariaDB."""


@main.command()
@click.option("--upstream", required=True, envvar="AURORATRACK_UPSTREAM", show_default=True,
              help="The MySQL/MariaDB server, HOST:PORT.")
@click.option("--user", required=True, envvar="AURORATRACK_USER",
              help="auroratrack's own account on the server (never a relayed client's).")
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="AURORATRACK_PASSWORD_FILE",
              help="File holding that account's password (or set AURORATRACK_UPSTREAM_PASSWORD).")
@click.option("--listen", default="127.0.0.1:3307", show_default=True, envvar="AURORATRACK_LISTEN",
              help="Where applications connect, HOST:PORT.")
@click.option("--admin", "admin_listen", default="127.0.0.1:3308", show_default=True,
              envvar="AURORATRACK_ADMIN", help="Admin API address, HOST:PORT (loopback by default).")
@click.option("--data-dir", default=".auroratrack/data", show_default=True, envvar="AURORATRACK_DATA_DIR",
              type=click.Path(file_okay=False, path_type=Path), help="The change store and run files.")
@click.option("--hold-timeout", default=30.0, show_default=True, envvar="AURORATRACK_HOLD_TIMEOUT",
              help="Seconds a paused client waits before it gets an ERR.")
@click.option("--max-allowed-packet", type=int, default=None, envvar="AURORATRACK_MAX_ALLOWED_PACKET",
              help="Largest client packet relayed [default: the server's max_allowed_packet].")
@click.option("--backtrack-window", default="24h", show_default=True, envvar="AURORATRACK_BACKTRACK_WINDOW",
              help="Target window: how far back backtracks can go (e.g. 24h; at most 72h unless "
                   "--allow-long-window).")
@click.option("--allow-long-window", is_flag=True, envvar="AURORATRACK_ALLOW_LONG_WINDOW",
              help="Allow a window beyond Aurora's 72h.")
@click.option("--max-store-bytes", default=None, envvar="AURORATRACK_MAX_STORE_BYTES",
              help="Size cap of the change store (e.g. 10GiB); oldest transactions leave first.")
@click.option("--streamer-server-id", type=int, default=0, envvar="AURORATRACK_STREAMER_SERVER_ID",
              help="Replica server_id the changelog streamer uses [default: derived from --data-dir].")
@click.option("--no-capture", is_flag=True, envvar="AURORATRACK_NO_CAPTURE",
              help="Run the proxy only, without the changelog (no backtracks possible).")
@click.option("--log-level", default="info", show_default=True, envvar="AURORATRACK_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(upstream, user, password_file, listen, admin_listen, data_dir, hold_timeout, max_allowed_packet,
          backtrack_window, allow_long_window, max_store_bytes, streamer_server_id, no_capture,
          log_level) -> None:
    """Run the proxy in front of the server (and, as they land, the changelog and admin API)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    up_host, up_port = parse_host_port(upstream, 3306)
    listen_host, listen_port = parse_host_port(listen, 3307)
    window_s = _parse_option(parse_duration, backtrack_window, "--backtrack-window")
    if window_s > 72 * 3600 and not allow_long_window:
        raise click.BadParameter("at most 72h (Aurora's limit); add --allow-long-window to go beyond",
                                 param_hint="--backtrack-window")
    config = ServeConfig(
        upstream=UpstreamCredentials(up_host, up_port, user, read_password(password_file)),
        listen_host=listen_host, listen_port=listen_port, data_dir=data_dir,
        hold_timeout=hold_timeout, max_allowed_packet=max_allowed_packet,
        capture=not no_capture, backtrack_window_s=window_s,
        max_store_bytes=_parse_option(parse_size, max_store_bytes, "--max-store-bytes")
        if max_store_bytes else None,
        streamer_server_id=streamer_server_id, log_level=log_level.upper(),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio_run(_serve(config)))


async def _serve(config: ServeConfig) -> int:
    service = Service(config)
    try:
        await service.start()
    except Exception as exc:  # the first contact with the server: say what is wrong and stop
        click.echo(f"auroratrack: cannot start: {exc}", err=True)
        return 1
    host, port = service.listen_address
    click.echo(f"auroratrack: proxy on {host}:{port} -> {config.upstream.host}:{config.upstream.port}",
               err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    return 0


def _parse_option(parser, value: str, name: str):
    try:
        return parser(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def asyncio_run(coro) -> int:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


if __name__ == "__main__":
    main()
