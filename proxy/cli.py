"""The ``auroratrack`` command line.

``serve`` runs the service in this process; every other command is a thin client of the running
service's admin API, found through ``--data-dir`` (DESIGN.md, "Command-line contract"). Exit code
0 means success.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import tomllib
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import click

from proxy import clioutput
from proxy.adminclient import AdminClient, AdminError, AdminUnavailable
from proxy.logs import configure_logging
from proxy.serveradmin import UpstreamCredentials
from proxy.timeparse import FORMS, LOCAL, Target, format_both_clocks, format_time_us, parse_target
from proxy.units import parse_duration, parse_size

if TYPE_CHECKING:
    # proxy.service (relay, decoder, backtrack) takes ~0.3 s to import: only ``serve`` imports it,
    # so the client commands start quickly.
    from proxy.service import ServeConfig


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


def load_config_file(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """``--config FILE``: a TOML file whose keys (or its [serve] table) are serve's options.
    Precedence: command line, then AURORATRACK_* environment variables, then the file."""
    if value is not None:
        with open(value, "rb") as handle:
            data = tomllib.load(handle)
        section = data.get("serve", data)
        ctx.default_map = {**(ctx.default_map or {}), **{k.replace("-", "_"): v for k, v in section.items()}}
    return value


@main.command()
@click.option("--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), is_eager=True,
              expose_value=False, callback=load_config_file, envvar="AURORATRACK_CONFIG",
              help="TOML file of serve options (e.g. backtrack-window = \"24h\").")
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
@click.option("--backfill/--no-backfill", default=True, show_default=True, envvar="AURORATRACK_BACKFILL",
              help="At the first start (empty store), capture the server's binlogs back to the "
                   "window's start, so a backtrack can reach before auroratrack was started.")
@click.option("--client-tls", default="preferred", show_default=True, envvar="AURORATRACK_CLIENT_TLS",
              type=click.Choice(["disabled", "preferred", "required"]),
              help="TLS for applications: offered (preferred), or demanded of every client (required).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="AURORATRACK_TLS_CERT",
              help="The proxy's certificate (chain), PEM [default: a self-signed one made in --data-dir]. "
                   "SIGHUP reloads it.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="AURORATRACK_TLS_KEY", help="The key of --tls-cert, PEM.")
@click.option("--upstream-tls", default="preferred", show_default=True, envvar="AURORATRACK_UPSTREAM_TLS",
              type=click.Choice(["disabled", "preferred", "required", "verify-ca", "verify-identity"]),
              help="TLS to the server, for every connection auroratrack makes (like the MySQL clients' --ssl-mode).")
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="AURORATRACK_UPSTREAM_CA", help="CA file that verifies the server's certificate "
                                                     "[default: the system's CAs].")
@click.option("--log-format", default="text", show_default=True, envvar="AURORATRACK_LOG_FORMAT",
              type=click.Choice(["text", "json"]), help="Log lines for people, or JSON for log shippers.")
@click.option("--log-level", default="info", show_default=True, envvar="AURORATRACK_LOG_LEVEL",
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve(upstream, user, password_file, listen, admin_listen, data_dir, hold_timeout, max_allowed_packet,
          backtrack_window, allow_long_window, max_store_bytes, streamer_server_id, no_capture,
          backfill, client_tls, tls_cert, tls_key, upstream_tls, upstream_ca, log_format, log_level) -> None:
    """Run the proxy, the changelog streamer and the admin API in front of the server.

    Every option can also be set with an environment variable named after it
    (AURORATRACK_BACKTRACK_WINDOW, AURORATRACK_LISTEN, ...) or in a TOML file given with
    --config; the command line wins over the variables, which win over the file."""
    configure_logging(log_level, log_format)
    up_host, up_port = parse_host_port(upstream, 3306)
    listen_host, listen_port = parse_host_port(listen, 3307)
    admin_host, admin_port = parse_host_port(admin_listen, 3308)
    window_s = _parse_option(parse_duration, backtrack_window, "--backtrack-window")
    if window_s > 72 * 3600 and not allow_long_window:
        raise click.BadParameter("at most 72h (Aurora's limit); add --allow-long-window to go beyond",
                                 param_hint="--backtrack-window")
    if (tls_cert is None) != (tls_key is None):
        raise click.BadParameter("give both --tls-cert and --tls-key, or neither", param_hint="--tls-cert")
    from proxy.service import ServeConfig

    config = ServeConfig(
        upstream=UpstreamCredentials(up_host, up_port, user, read_password(password_file),
                                     tls_mode=upstream_tls, tls_ca=str(upstream_ca) if upstream_ca else None),
        listen_host=listen_host, listen_port=listen_port, data_dir=data_dir,
        hold_timeout=hold_timeout, max_allowed_packet=max_allowed_packet,
        capture=not no_capture, backtrack_window_s=window_s,
        max_store_bytes=_parse_option(parse_size, max_store_bytes, "--max-store-bytes")
        if max_store_bytes else None,
        streamer_server_id=streamer_server_id, log_level=log_level.upper(), log_format=log_format,
        admin_host=admin_host, admin_port=admin_port, backfill=backfill,
        client_tls=client_tls, tls_cert=tls_cert, tls_key=tls_key,
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio_run(_serve(config)))


async def _serve(config: ServeConfig) -> int:
    from proxy.service import Service

    service = Service(config)
    try:
        await service.start()
    except Exception as exc:  # the first contact with the server: say what is wrong and stop
        click.echo(f"auroratrack: cannot start: {exc}", err=True)
        return 1
    host, port = service.listen_address
    click.echo(f"auroratrack: proxy on {host}:{port} -> {config.upstream.host}:{config.upstream.port}, "
               f"admin API on {service.admin_address[0]}:{service.admin_address[1]}", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload_tls)  # a renewed certificate, nobody dropped
    await stop.wait()
    await service.stop()
    return 0


def _parse_option(parser, value: str, name: str):
    try:
        return parser(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def asyncio_run(coro) -> int:
    from proxy.service import new_event_loop

    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()



# -- client commands: thin clients of serve's admin API (proxy/admin.py), found through --data-dir ------
POLL_INTERVAL_S = 0.2

data_dir_option = click.option(
    "--data-dir", default=".auroratrack/data", show_default=True, envvar="AURORATRACK_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path), help="The data directory of the running serve.")
output_option = click.option(
    "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="A readable table, or JSON for scripts.")


class NeedsConfirmation(click.ClickException):
    """A backtrack asked for without a terminal to confirm it on, and without ``--yes``."""

    exit_code = 2


def admin_request(data_dir: Path, method: str, path: str, body: dict | None = None):
    """One admin API call; no serve or an error answer ends the command with exit code 1."""
    try:
        client = AdminClient.from_data_dir(data_dir)
        return client.post(path, body) if method == "POST" else client.get(path)
    except AdminUnavailable as exc:
        raise click.ClickException(str(exc)) from None  # the message says it all
    except AdminError as exc:
        raise click.ClickException(str(exc) + window_lines(exc.details)) from None


def window_lines(details: dict) -> str:
    """A refused backtrack's window on the user's clock too (serve's message says UTC)."""
    lines = [f"\n  {name} possible: {format_both_clocks(details[key])}"
             for name, key in (("earliest", "earliest"), ("latest", "latest")) if isinstance(details.get(key), int)]
    return "".join(lines)


@main.command()
@data_dir_option
@output_option
def status(data_dir: Path, output: str) -> None:
    """State, sessions, backtrack window and change store of the running serve."""
    document = admin_request(data_dir, "GET", "/v1/status")
    if output == "json":
        clioutput.print_json(document)
    else:
        clioutput.print_view(clioutput.status_view(document))


@main.command("describe-backtracks")
@click.argument("backtrack_id", required=False)
@data_dir_option
@output_option
def describe_backtracks(backtrack_id: str | None, data_dir: Path, output: str) -> None:
    """Every backtrack (oldest first), or one in full with its ID (or the start of it)."""
    if backtrack_id:
        backtrack_id = full_backtrack_id(data_dir, backtrack_id)
    path = f"/v1/backtracks/{urllib.parse.quote(backtrack_id, safe='')}" if backtrack_id else "/v1/backtracks"
    document = admin_request(data_dir, "GET", path)
    if output == "json":
        clioutput.print_json(document)
    elif backtrack_id:
        clioutput.print_backtrack(document, show_sql=True)
    else:
        clioutput.print_view(clioutput.backtracks_table(document))


def full_backtrack_id(data_dir: Path, given: str) -> str:
    """The backtrack ID that ``given`` starts (the list shows 8 characters); a whole ID as it is."""
    if len(given) >= 36:
        return given
    matches = [r["id"] for r in admin_request(data_dir, "GET", "/v1/backtracks") if r["id"].startswith(given)]
    if len(matches) > 1:
        raise click.BadParameter(f"{given!r} starts {len(matches)} backtrack IDs: {', '.join(matches)}; "
                                 "give more of it", param_hint="BACKTRACK_ID")
    return matches[0] if matches else given  # none: serve's answer says it is unknown


@main.command()
@click.option("--since", help="Only transactions committed at or after this time (same forms as --to).")
@click.option("--until", help="Only transactions committed at or before this time.")
@click.option("--table", help="Only those touching this table (db.table, or db.* for a whole schema).")
@click.option("--operation", type=click.Choice(["insert", "update", "delete", "ddl", "statement"]),
              help="Only those with this kind of change.")
@click.option("--gtid", help="Only the transaction with this GTID.")
@click.option("--grep", help="Only those whose statement text contains this (case-insensitive).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--rows", "rows_txn", type=int, help="Decode the row images (before/after) of this transaction id.")
@click.option("--all", "show_all", is_flag=True,
              help="Also auroratrack's own bookkeeping (its schema `auroratrack`: the backtrack marker).")
@data_dir_option
@output_option
def changes(since, until, table, operation, gtid, grep, limit, rows_txn, show_all, data_dir: Path,
            output: str) -> None:
    """Browse committed transactions, newest first, to find the one to go back before.
    Times are UTC; --since/--until without a zone are your local time."""
    since, until = (resolve_time(value, name) for value, name in ((since, "--since"), (until, "--until")))
    params = {"since": since, "until": until, "table": table, "operation": operation, "gtid": gtid,
              "grep": grep, "limit": limit, "rows": rows_txn, "all": "1" if show_all else None}
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    document = admin_request(data_dir, "GET", f"/v1/changes?{query}")
    if output == "json":
        clioutput.print_json(document)
    elif rows_txn is not None:
        clioutput.print_view(clioutput.transaction_rows_view(document))
    else:
        clioutput.print_view(clioutput.changes_table(document))


@main.command("inspect-binlog")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rows", is_flag=True, help="Also decode every row change (before and after images).")
@output_option
def inspect_binlog(files: tuple[Path, ...], rows: bool, output: str) -> None:
    """The transactions of binlog files, read from disk: no server, no running serve."""
    from proxy.inspectbinlog import InspectError, inspect_binlogs, print_documents  # the decoder: only here

    try:
        print_documents(inspect_binlogs(files, rows=rows), output, rows)
    except InspectError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--to", "to", required=True, help=f"Where to go back to: {FORMS}.")
@click.option("--force", is_flag=True, help="Go ahead despite binlog conflicts (each one is recorded).")
@click.option("--use-earliest-time-on-point-in-time-unavailable", "use_earliest", is_flag=True,
              help="If --to is before the earliest backtrack time, go to the earliest instead of failing.")
@click.option("--dry-run", is_flag=True, help="Plan only: the point, rows per table, conflicts. Writes nothing.")
@click.option("--sql", "with_sql", is_flag=True, help="With --dry-run: also print the inverse SQL.")
@click.option("--yes", "-y", is_flag=True,
              help="Do not ask for confirmation (required when stdin is not a terminal: scripts, cron).")
@click.option("--drain-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds in-flight commands get to finish before their queries are killed.")
@data_dir_option
@output_option
def backtrack(to: str, force: bool, use_earliest: bool, dry_run: bool, with_sql: bool, yes: bool,
              drain_timeout: float, data_dir: Path, output: str) -> None:
    """Rewind the database to --to; waits for the outcome. Exit 0 only on success.

    Asks for confirmation at a terminal; without one it refuses (exit 2) unless --yes is given.
    A time without a zone is your local time (TZ); times are shown in UTC and local."""
    if with_sql and not dry_run:
        raise click.UsageError("--sql goes with --dry-run")
    send_to, description = resolve_to(to)
    require_serve(data_dir)
    if not (yes or dry_run):
        confirm_backtrack(description, force)
    body = {"to": send_to, "force": force, "use_earliest": use_earliest, "dry_run": dry_run,
            "with_sql": with_sql, "drain_timeout": drain_timeout}
    record = admin_request(data_dir, "POST", "/v1/backtracks", body)
    record = follow_backtrack(data_dir, record)
    show_outcome(record, output, with_sql)
    sys.exit(0 if clioutput.succeeded(record) else 1)


def resolve_to(to: str) -> tuple[str, str]:
    """What to send for ``--to`` and how to describe it. Every time is sent as an absolute
    instant in UTC: one without a zone is read on the user's clock (this process's TZ), never
    the service's; a relative one is fixed now, so the point confirmed at the prompt is the
    point used, however long the prompt waited. A future time is refused here, before the
    prompt and before anything is paused."""
    target = _parse_time_option(to, "--to")
    if target.kind != "time":
        return to, target.describe()
    now_us = int(time.time() * 1_000_000)
    if target.time_us > now_us + 1_000_000:  # the service's own tolerance (backtrack.resolve_point)
        raise click.BadParameter(f"{to!r} ({format_both_clocks(target.time_us)}) is in the future: a backtrack "
                                 f"goes back in time (now is {format_both_clocks(now_us)})", param_hint="--to")
    note = "; --to had no zone: read as your local time" if target.assumed_local else ""
    return format_time_us(target.time_us), format_both_clocks(target.time_us) + note


def resolve_time(value: str | None, option: str) -> str | None:
    """``changes --since/--until``: a time on the user's clock, sent as an absolute instant."""
    if value is None:
        return None
    target = _parse_time_option(value, option)
    if target.kind != "time":
        raise click.BadParameter(f"{value!r} is not a time", param_hint=option)
    return format_time_us(target.time_us)


def _parse_time_option(value: str, option: str) -> Target:
    try:
        return parse_target(value, zone=LOCAL)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def require_serve(data_dir: Path) -> None:
    """Fail before the prompt when no serve runs: nobody should confirm a backtrack that cannot start."""
    try:
        AdminClient.from_data_dir(data_dir)
    except AdminUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def confirm_backtrack(description: str, force: bool) -> None:
    """Ask at the terminal. Without one (a script, cron, ssh without a tty) nobody can answer,
    and a rewind nobody confirmed must not happen: refuse, exit 2, unless ``--yes`` was given."""
    if not sys.stdin.isatty():
        raise NeedsConfirmation(f"Nothing was done: there is no terminal to confirm a backtrack at (to {description}). "
                                f"Pass --yes to backtrack without confirmation, or --dry-run to see the plan.")
    click.echo(f"Backtrack the database to {description}?", err=True)
    click.echo("  Every client of the proxy is paused and disconnected (their uncommitted work is lost),\n"
               "  and every transaction committed after that point is undone"
               + (",\n  overwriting rows changed outside the log (--force)." if force else "."), err=True)
    if not click.confirm("Proceed?", default=False, err=True):
        click.echo("Nothing was done.", err=True)
        sys.exit(1)


def follow_backtrack(data_dir: Path, record: dict) -> dict:
    """Poll the record until it is completed or failed, telling its progress on stderr."""
    progress = clioutput.ProgressLines()
    try:
        while True:
            for line in progress.new_lines(record):
                click.echo(line, err=True)
            if record["status"] in clioutput.TERMINAL_STATUSES:
                return record
            time.sleep(POLL_INTERVAL_S)
            record = admin_request(data_dir, "GET", f"/v1/backtracks/{record['id']}")
    except KeyboardInterrupt:
        click.echo(f"\nStopped following; the backtrack goes on in serve. Follow it with: "
                   f"auroratrack describe-backtracks {record['id']}", err=True)
        sys.exit(130)


def show_outcome(record: dict, output: str, with_sql: bool) -> None:
    if output == "json":
        clioutput.print_json(record)
    else:
        clioutput.print_backtrack(record, show_sql=with_sql)
    blocking = clioutput.blocking_conflicts(record) if record.get("dry_run") else []
    if record["status"] == "failed":
        click.echo(f"backtrack {record['id']} failed: {record.get('error') or 'no reason given'}", err=True)
    elif blocking:
        click.echo(f"dry run: {len(blocking)} conflict(s) would stop this backtrack; --force would go ahead "
                   "and overwrite them.", err=True)


if __name__ == "__main__":
    main()
