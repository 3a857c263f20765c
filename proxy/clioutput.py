"""What the CLI prints: the admin API's JSON turned into readable tables (rich) or plain JSON.

Pure functions from the API's documents (``/v1/status``, backtrack records) to rich
renderables or text; no I/O except ``print_*``, which write to a console. The JSON shapes are
those of proxy/admin.py and ``BacktrackRecord.to_json`` in proxy/backtrack.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from proxy.sqldisplay import readable_sql
from proxy.timeparse import format_both_clocks, parse_target
from proxy.units import format_duration

TERMINAL_STATUSES = ("completed", "failed")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_view(renderable: RenderableType) -> None:
    """Print a table: at a terminal's width and in colour there; otherwise (a pipe, a file) at
    COLUMNS when it is set, else wide, without colour and without trailing blanks. The tables
    are laid out to fit 80 columns without cutting an ID or a time.

    Every string printed is data (a fingerprint, an error, SQL), never rich markup: with emoji
    on, a fingerprint's ``:AB:`` became an emoji, and markup would eat an error's ``[...]``."""
    out = Console(highlight=False, markup=False, emoji=False)
    if out.is_terminal:
        out.print(renderable)
        return
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 200
    wide = Console(highlight=False, markup=False, emoji=False, width=width, color_system=None)
    with wide.capture() as captured:
        wide.print(renderable)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


# -- small formats ------------------------------------------------------------------------------------
def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def format_seconds(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def utc_text(time_us: int | None, fraction: bool = False) -> str:
    """``2026-12-06 14:08:43`` (``.123456`` with ``fraction``) in UTC: the tables' time columns
    say (UTC) in their heading, and a time is one unbreakable cell."""
    if time_us is None:
        return "-"
    moment = dt.datetime.fromtimestamp(time_us // 1_000_000, dt.UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{time_us % 1_000_000:06d}" if fraction else text


def short_id(backtrack_id: str) -> str:
    """The first 8 characters: enough to tell backtracks apart (``describe-backtracks`` takes
    any unique prefix), and the list then fits 80 columns."""
    return backtrack_id[:8]


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")  # a long value (a certificate fingerprint) folds, never cut
    return grid


# -- status ---------------------------------------------------------------------------------------------
def status_view(status: dict) -> RenderableType:
    """``auroratrack status`` as a two-column table."""
    grid = _grid()
    state = status["state"]
    grid.add_row("State", Text(state, style="green" if state == "available" else "yellow bold"))
    upstream = status["upstream"]
    grid.add_row("Upstream", " ".join(filter(None, [upstream["address"], upstream.get("server_version")])))
    if (status.get("tls") or {}).get("client", {}).get("sha256_fingerprint"):  # TLS: what clients pin
        grid.add_row("TLS certificate", "SHA-256 " + status["tls"]["client"]["sha256_fingerprint"])
    grid.add_row("Proxy", status.get("listen") or "-")
    grid.add_row("Admin API", f"{status.get('admin') or '-'} (serve pid {status.get('pid')}, "
                              f"auroratrack {status.get('auroratrack_version')})")
    grid.add_row("Sessions", sessions_text(status["sessions"]))
    if not status.get("capture"):
        grid.add_row("Capture", "off (serve runs with --no-capture: no backtracks possible)")
    else:
        _add_store_rows(grid, status.get("store"))
        streamer = status.get("streamer")
        text = streamer_text(streamer)
        grid.add_row("Streamer", Text(text, style="red bold") if streamer and streamer.get("down_since") else text)
    last = status.get("last_backtrack")
    grid.add_row("Last backtrack", backtrack_line(last) if last else "none")
    return grid


def sessions_text(sessions: dict) -> str:
    parts = [f"{sessions.get(k, 0)} {k}" for k in ("idle", "busy", "held", "connecting")]
    return f"{sessions['total']} ({', '.join(parts)}); {sessions['in_transaction']} in a transaction"


def _add_store_rows(grid: Table, store: dict | None) -> None:
    if store is None:
        grid.add_row("Store", "not created yet")
        return
    window = (f"target {format_seconds(store['target_window_s'])}, "
              f"actual {format_seconds(store['actual_window_s'])}")
    if store.get("window_alert"):
        window = Text(window + "  ALERT: shorter than the target (raise --max-store-bytes?)", style="red")
    grid.add_row("Backtrack window", window)
    grid.add_row("Earliest backtrack", clocks(store.get("earliest_backtrack_time_us")))
    grid.add_row("Change store", f"{store['transactions']:,} transactions, {store['change_records']:,} change "
                                 f"records, {format_bytes(store['stored_bytes'])} stored "
                                 f"({format_bytes(store['file_bytes'])} on disk), "
                                 f"{store['evicted_transactions']:,} evicted, {store['gaps']} gap(s)")
    grid.add_row("Checkpoint", store.get("checkpoint") or "-")
    if store.get("backfill"):
        grid.add_row("Backfill", backfill_text(store["backfill"]))


def backfill_text(history: dict) -> str:
    """The history read from before capture started: how far, and up to which commit."""
    share = history["bytes_read"] / history["bytes_total"] if history["bytes_total"] else float(
        history["state"] == "done")
    text = (f"{history['state']}, {share:.0%} of {format_bytes(history['bytes_total'])}, "
            f"at {history['position'] or '-'}, read up to {utc_text(history.get('reached_time_us'))} UTC")
    # Read beside the live stream: the earliest backtrack time moves back once all of it is in.
    if history["state"] in ("starting", "reading"):
        return text + " (the earliest backtrack time moves back when it is done)"
    return text + f" ({history['lost']})" if history["state"] == "lost" else text


def streamer_text(streamer: dict | None) -> str:
    if not streamer:
        return "-"
    text = f"{streamer['status']} (pid {streamer.get('pid')}), at {streamer.get('position') or '-'}"
    if streamer.get("last_event_time"):
        text += f", last event {streamer['last_event_time']}"
    if streamer.get("last_error"):
        text += f"; last error: {streamer['last_error']}"
    if streamer.get("down_since"):
        text = (f"DOWN since {streamer['down_since']} ({streamer.get('down_for_s')} s, "
                f"{streamer.get('restarts', 0)} restarts): the backtrack window is not growing; {text}")
    return text


# -- backtrack records --------------------------------------------------------------------------------
def backtrack_line(record: dict) -> str:
    kind = "dry run" if record.get("dry_run") else "backtrack"
    point = (record.get("point") or {}).get("time", "-")
    return f"{kind} {record['id']} {record['status']}: to {point} (asked {record.get('requested_to')}), " \
           f"created {record.get('created', '-')}"


def backtracks_table(records: list[dict]) -> RenderableType:
    """``describe-backtracks`` without an ID: one line per backtrack, oldest first, in 80
    columns (short IDs, times to the second; ``describe-backtracks ID`` has everything).
    Errors follow the table, one line each, rather than squeezing a column."""
    if not records:
        return Text("No backtracks.")
    table = Table(box=None, pad_edge=False)
    for name, justify in (("ID", "left"), ("STATUS", "left"), ("KIND", "left"), ("CREATED (UTC)", "left"),
                          ("POINT (UTC)", "left"), ("TOOK", "right")):
        table.add_column(name, no_wrap=True, justify=justify)
    errors = []
    for record in records:
        point = record.get("point") or {}
        table.add_row(short_id(record["id"]), status_text(record["status"]),
                      "dry run" if record.get("dry_run") else "backtrack", utc_text(record.get("created_us")),
                      utc_text(point.get("time_us")), format_took(record))
        if record.get("error"):
            errors.append(Text(f"{short_id(record['id'])}: {record['error'].splitlines()[0]}", style="red"))
    return Group(table, *([Text("")] + errors if errors else []))


def status_text(status: str) -> Text:
    style = {"completed": "green", "failed": "red bold"}.get(status, "yellow")
    return Text(status, style=style)


def format_took(record: dict) -> str:
    total = (record.get("durations") or {}).get("total_s")
    if total is None:
        return "-"  # at most 6 characters, so the list fits 80 columns
    return f"{total:.2f} s" if total < 10 else f"{total:.1f} s" if total < 100 else format_duration(total)


# Readable names of a record's durations, in the order shown (its JSON keys stay as they are,
# for scripts).
DURATION_NAMES = {
    "total_s": "total",
    "paused_s": "clients paused",
    "applying_s": "apply, in the pause",
    "apply_prepare_load_temp_s": "load images, before the pause",
    "prepare_missing_s": "load images, in the pause",
    "apply_load_temp_s": "load images",
    "extend_plan_s": "fold in late changes",
    "check_s": "drift check",
    "detailed_check_s": "detailed drift check",
    "write_s": "write rows",
    "apply_delete_s": "delete rows",
    "apply_update_s": "update rows",
    "apply_insert_s": "insert rows",
    "write_marker_s": "write marker",
    "commit_s": "commit",
}


def duration_name(key: str) -> str:
    """``apply_prepare_load_temp_s`` -> ``load images, before the pause``; a key not known here
    (a newer serve) still reads as words."""
    return DURATION_NAMES.get(key) or key.removesuffix("_s").replace("_", " ")


def durations_view(durations: dict[str, float]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    order = list(DURATION_NAMES)
    for key in sorted(durations, key=lambda k: order.index(k) if k in order else len(order)):
        grid.add_row(duration_name(key), f"{durations[key]:.3f} s")
    return grid


def print_backtrack(record: dict, show_sql: bool = False) -> None:
    """One backtrack in full, then (``show_sql``) its dry run's statements as plain lines: a
    line break inside a string literal would change its value in a copied statement, so they
    are never wrapped by us (the terminal still wraps long lines on screen)."""
    print_view(backtrack_view(record))
    lines = sql_block(record.get("plan") or {}) if show_sql else []
    if lines:
        sys.stdout.write("\n" + "\n".join(lines) + "\n")


def backtrack_view(record: dict) -> RenderableType:
    """One backtrack in full: what was asked, the point, steps, rows, conflicts, the plan."""
    grid = _grid()
    grid.add_row("ID", record["id"])
    grid.add_row("Status", status_text(record["status"]))
    grid.add_row("Kind", ("dry run (nothing written)" if record.get("dry_run") else "backtrack")
                 + (", forced" if record.get("force") else ""))
    grid.add_row("Asked", asked_text(record))
    grid.add_row("Point", point_text(record.get("point")))
    grid.add_row("Created", clocks(record.get("created_us")))
    if record.get("backtracked_from_us"):
        grid.add_row("Backtracked from", clocks(record["backtracked_from_us"]))
    if record.get("durations"):
        grid.add_row("Durations", durations_view(record["durations"]))
    if record.get("fence"):
        grid.add_row("Fence", record["fence"])
    if record.get("steps"):
        grid.add_row("Steps", ", ".join(step_text(step) for step in record["steps"]))
    if record.get("error"):
        grid.add_row("Error", Text(record["error"], style="red"))
    parts: list[RenderableType] = [grid]
    if record.get("rows"):
        parts += [Text("\nRows written back", style="bold"), rows_table(record["rows"])]
    if record.get("plan"):
        parts += plan_parts(record["plan"])
    elif record.get("conflicts"):
        parts += [Text("\nConflicts", style="bold"), conflicts_table(record["conflicts"])]
    if record.get("forced"):
        parts += [Text("\nForced", style="bold"), Text(json.dumps(record["forced"], indent=2, default=str))]
    return Group(*parts)


def clocks(time_us: int | None) -> str:
    """An instant in UTC and on the user's clock, side by side."""
    return "-" if time_us is None else format_both_clocks(time_us)


def asked_text(record: dict) -> str:
    """What ``--to`` the service got: an absolute time (the CLI resolves local ones) shown on
    both clocks, or an exact point (LSN, GTID, binlog position) as it was given."""
    asked = record.get("requested_to") or "-"
    if asked.startswith(("-", "+")):  # relative to when it was asked: the service's reading says when
        return f"{asked} -> {record.get('target')}"
    try:
        target = parse_target(asked)
    except ValueError:  # an older record, or a client that sent something else: as it is
        return f"{asked} -> {record.get('target')}"
    return clocks(target.time_us) if target.kind == "time" else target.describe()


def point_text(point: dict | None) -> str:
    if not point:
        return "-"
    when = clocks(point["time_us"]) if point.get("time_us") is not None else point.get("time", "-")
    text = f"{when}, after transaction {point.get('txn_id')} (LSN {point.get('lsn')}"
    return text + (f", GTID {point['gtid']})" if point.get("gtid") else ")")


def step_text(step: Any) -> str:
    """``drain 0.012 s``, or ``drain ...`` while it runs."""
    if not isinstance(step, dict):
        return str(step)
    duration = step.get("duration_s")
    name = str(step.get("name", "?")).replace("_", " ")
    return f"{name} " + ("..." if duration is None else f"{duration:.3f} s")


class ProgressLines:
    """What to print as a backtrack record evolves between polls: a status when it changes
    (the final one after the last steps), each step when it starts and when it ends."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.status: str | None = None

    def new_lines(self, record: dict) -> list[str]:
        status = record["status"]
        status_line = [f"{record['id']}: {status}"] if status != self.status else []
        steps = ["  " + step_text(step) for step in record.get("steps") or []]
        changed = [line for i, line in enumerate(steps) if i >= len(self.steps) or self.steps[i] != line]
        self.steps, self.status = steps, status
        if status in TERMINAL_STATUSES:
            return changed + status_line
        return status_line + changed


def rows_table(rows: dict[str, dict]) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("TABLE")
    for column in ("DELETE", "REINSERT", "RESTORE"):
        table.add_column(column, justify="right")
    for name, counts in sorted(rows.items()):
        table.add_row(name, *(f"{counts.get(k, 0):,}" for k in ("delete", "reinsert", "restore")))
    return table


def conflicts_table(conflicts: list[dict]) -> RenderableType:
    if not conflicts:
        return Text("none")
    table = Table(box=None, pad_edge=False)
    for column in ("KIND", "TABLE", "KEY", "REASON"):
        table.add_column(column, no_wrap=column != "REASON")
    for c in conflicts:
        table.add_row(c.get("kind", "?"), c.get("table") or "*", c.get("key") or "", c.get("reason", ""))
    return table


def plan_parts(plan: dict) -> list[RenderableType]:
    parts: list[RenderableType] = [
        Text(f"\nPlan: undo {plan.get('transactions_undone', '?')} transaction(s)", style="bold"),
        rows_table(plan.get("tables") or {}) if plan.get("tables") else Text("no rows to change"),
        Text("\nConflicts", style="bold"), conflicts_table(plan.get("conflicts") or []),
    ]
    return parts


def sql_block(plan: dict) -> list[str]:
    """The dry run's statements under a heading, with a note per table (empty without SQL)."""
    if "sql" not in plan:
        return []
    shown, total = len(plan["sql"]), plan.get("sql_total", len(plan["sql"]))
    note = f" (the first {shown} of {total})" if total > shown else ""
    return [f"SQL{note}", *statement_notes(plan.get("tables") or {}), *sql_lines(plan["sql"])]


def statement_notes(tables: dict[str, dict]) -> list[str]:
    """How the plan's counts become the statements below, table by table. The dry run writes
    what --force would (delete the affected rows, insert their images at the point); without
    --force restored rows are updated in place instead, checked against their latest images.
    Either way a table's INSERT rows are its restored plus re-inserted rows."""
    notes = ["-- as --force writes them; without --force restored rows are updated in place"] if tables else []
    for name, counts in sorted(tables.items()):
        delete, reinsert, restore = (counts.get(k, 0) for k in ("delete", "reinsert", "restore"))
        notes.append(f"-- {name}: {delete} to delete, {restore} to restore, {reinsert} to re-insert: DELETE the "
                     f"affected rows, then INSERT {restore + reinsert} row(s) as they were at the point")
    return notes


def sql_lines(statements: list[str]) -> list[str]:
    """Statements as a person reads them: strings as text where exact (proxy/sqldisplay.py)."""
    lines = (readable_sql(s) for s in statements)
    return [s if s.rstrip().endswith(";") else s + ";" for s in lines]


def blocking_conflicts(record: dict) -> list[dict]:
    """Conflicts that would stop the real backtrack: all of them, unless it was forced."""
    if record.get("force"):
        return []
    plan = record.get("plan") or {}
    return list(plan.get("conflicts") or record.get("conflicts") or [])


def succeeded(record: dict) -> bool:
    """Exit 0 only for a completed backtrack, or a completed dry run with no blocking conflicts."""
    if record.get("status") != "completed":
        return False
    return not (record.get("dry_run") and blocking_conflicts(record))


def changes_table(transactions: list[dict]) -> RenderableType:
    """``auroratrack changes``: one entry per transaction, newest first, in 80 columns. The
    commit time, LSN range and GTID are never broken (they are what ``--to`` takes); the
    rows per table and the statement share the last column and wrap there."""
    if not transactions:
        return Text("no transaction matches")
    table = Table(box=None, pad_edge=False)
    table.add_column("TXN", no_wrap=True, justify="right")
    table.add_column("COMMITTED (UTC)", no_wrap=True)
    table.add_column("LSN", no_wrap=True)
    table.add_column("GTID", overflow="fold")  # a MySQL GTID (UUID:N) may have to fold; MariaDB's are short
    table.add_column("CHANGES", overflow="fold", ratio=1, min_width=16)
    for txn in transactions:
        table.add_row(str(txn["txn_id"]), utc_text(txn["commit_time_us"], fraction=True), lsn_range(txn),
                      txn["gtid"] or "-", changes_text(txn))
    return table


# The comment auroratrack tags its own statements with: the (backtrack) mark says it already.
_AURORATRACK_TAG = re.compile(r"^/\* auroratrack [^*]*\*/ ")


def lsn_range(txn: dict) -> str:
    first, last = txn["first_lsn"], txn["last_lsn"]
    return str(first) if first == last else f"{first}-{last}"


def changes_text(txn: dict) -> Text:
    """Rows per table and operation, then the statement (its first line, shortened), dimmed."""
    rows = "; ".join(f"{name} " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))
                     for name, ops in txn["rows"].items()) or ", ".join(txn["operations"]) or "-"
    text = Text(rows + (" (backtrack)" if txn["origin"] == "backtrack" else ""))
    if txn["statements"]:
        first = _AURORATRACK_TAG.sub("", " ".join(txn["statements"][0].split()))
        text.append("\n" + (first if len(first) <= 100 else first[:99] + "…"), style="dim")
    return text


def transaction_rows_view(document: dict) -> RenderableType:
    """``auroratrack changes --rows TXN``: each row change with its before and after images."""
    header = Text(f"transaction {document['txn_id']} committed {document['commit_time']} "
                  f"(LSN {document['first_lsn']}-{document['last_lsn']}, GTID {document['gtid'] or '-'})")
    table = Table()
    for column in ("LSN", "table", "change", "before", "after"):
        table.add_column(column, overflow="fold")
    for change in document["changes"]:
        if "statement" in change:
            table.add_row(str(change["lsn"]), "-", change["kind"], change["statement"][:200], "")
            continue
        table.add_row(str(change["lsn"]), change["table"], change["operation"],
                      json.dumps(change["before"], default=str) if change["before"] else "-",
                      json.dumps(change["after"], default=str) if change["after"] else "-")
    parts: list[RenderableType] = [header, table]
    if document.get("truncated"):
        parts.append(Text("(more rows not shown)"))
    return Group(*parts)
