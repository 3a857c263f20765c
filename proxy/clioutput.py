"""What the CLI prints: the admin API's JSON turned into readable tables (rich) or plain JSON.

Pure functions from the API's documents (``/v1/status``, backtrack records) to rich
renderables or text; no I/O except ``print_*``, which write to a console. The JSON shapes are
those of proxy/admin.py and ``BacktrackRecord.to_json`` in proxy/backtrack.py.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from proxy.units import format_duration

TERMINAL_STATUSES = ("completed", "failed")


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_view(renderable: RenderableType) -> None:
    """Print a table: at a terminal's width and in colour there; otherwise (a pipe, a file) wide,
    so IDs and times are never cut, without colour and without trailing blanks."""
    out = Console(highlight=False)
    if out.is_terminal:
        out.print(renderable)
        return
    wide = Console(highlight=False, width=200, color_system=None)
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


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
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
        grid.add_row("Streamer", streamer_text(status.get("streamer")))
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
    grid.add_row("Earliest backtrack", store.get("earliest_backtrack_time") or "-")
    grid.add_row("Change store", f"{store['transactions']:,} transactions, {store['change_records']:,} change "
                                 f"records, {format_bytes(store['stored_bytes'])} stored "
                                 f"({format_bytes(store['file_bytes'])} on disk), "
                                 f"{store['evicted_transactions']:,} evicted, {store['gaps']} gap(s)")
    grid.add_row("Checkpoint", store.get("checkpoint") or "-")


def streamer_text(streamer: dict | None) -> str:
    if not streamer:
        return "-"
    text = f"{streamer['status']} (pid {streamer.get('pid')}), at {streamer.get('position') or '-'}"
    if streamer.get("last_event_time"):
        text += f", last event {streamer['last_event_time']}"
    if streamer.get("last_error"):
        text += f"; last error: {streamer['last_error']}"
    return text


# -- backtrack records --------------------------------------------------------------------------------
def backtrack_line(record: dict) -> str:
    kind = "dry run" if record.get("dry_run") else "backtrack"
    point = (record.get("point") or {}).get("time", "-")
    return f"{kind} {record['id']} {record['status']}: to {point} (asked {record.get('requested_to')}), " \
           f"created {record.get('created', '-')}"


def backtracks_table(records: list[dict]) -> RenderableType:
    """``describe-backtracks`` without an ID: one line per backtrack, oldest first."""
    if not records:
        return Text("No backtracks.")
    table = Table(box=None, pad_edge=False)
    table.add_column("ID", min_width=36, overflow="fold")  # whole: it is what describe-backtracks ID takes
    table.add_column("STATUS", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("CREATED", min_width=27, overflow="fold")
    table.add_column("POINT", min_width=27, overflow="fold")
    table.add_column("TOOK", no_wrap=True, justify="right")
    table.add_column("ERROR")
    for record in records:
        table.add_row(
            record["id"], status_text(record["status"]), "dry run" if record.get("dry_run") else "backtrack",
            record.get("created", "-"), (record.get("point") or {}).get("time", "-"), format_took(record),
            (record.get("error") or "").splitlines()[0] if record.get("error") else "",
        )
    return table


def status_text(status: str) -> Text:
    style = {"completed": "green", "failed": "red bold"}.get(status, "yellow")
    return Text(status, style=style)


def format_took(record: dict) -> str:
    total = (record.get("durations") or {}).get("total_s")
    return "-" if total is None else f"{total:.3f} s"


def backtrack_view(record: dict, show_sql: bool = False) -> RenderableType:
    """One backtrack in full: what was asked, the point, steps, rows, conflicts, the plan."""
    grid = _grid()
    grid.add_row("ID", record["id"])
    grid.add_row("Status", status_text(record["status"]))
    grid.add_row("Kind", ("dry run (nothing written)" if record.get("dry_run") else "backtrack")
                 + (", forced" if record.get("force") else ""))
    grid.add_row("Asked", f"{record.get('requested_to')} -> {record.get('target')}")
    grid.add_row("Point", point_text(record.get("point")))
    grid.add_row("Created", record.get("created", "-"))
    if record.get("backtracked_from_us"):
        grid.add_row("Backtracked from", record.get("backtracked_from", "-"))
    if record.get("durations"):
        grid.add_row("Durations", ", ".join(f"{k} {v:.3f} s" for k, v in record["durations"].items()))
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
        parts += plan_parts(record["plan"], show_sql)
    elif record.get("conflicts"):
        parts += [Text("\nConflicts", style="bold"), conflicts_table(record["conflicts"])]
    if record.get("forced"):
        parts += [Text("\nForced", style="bold"), Text(json.dumps(record["forced"], indent=2, default=str))]
    return Group(*parts)


def point_text(point: dict | None) -> str:
    if not point:
        return "-"
    text = f"{point.get('time', '-')} (after transaction {point.get('txn_id')}, LSN {point.get('lsn')}"
    return text + (f", GTID {point['gtid']})" if point.get("gtid") else ")")


def step_text(step: Any) -> str:
    """``drain 0.012 s``, or ``drain ...`` while it runs."""
    if not isinstance(step, dict):
        return str(step)
    duration = step.get("duration_s")
    return f"{step.get('name', '?')} " + ("..." if duration is None else f"{duration:.3f} s")


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


def plan_parts(plan: dict, show_sql: bool) -> list[RenderableType]:
    parts: list[RenderableType] = [
        Text(f"\nPlan: undo {plan.get('transactions_undone', '?')} transaction(s)", style="bold"),
        rows_table(plan.get("tables") or {}) if plan.get("tables") else Text("no rows to change"),
        Text("\nConflicts", style="bold"), conflicts_table(plan.get("conflicts") or []),
    ]
    if show_sql and "sql" in plan:
        shown, total = len(plan["sql"]), plan.get("sql_total", len(plan["sql"]))
        note = f" (the first {shown} of {total})" if total > shown else ""
        parts += [Text(f"\nSQL{note}", style="bold"), Text("\n".join(sql_lines(plan["sql"])))]
    return parts


def sql_lines(statements: list[str]) -> list[str]:
    return [s if s.rstrip().endswith(";") else s + ";" for s in statements]


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
    """``auroratrack changes``: one line per transaction, newest first."""
    if not transactions:
        return Text("no transaction matches")
    table = Table(show_lines=False)
    for column in ("txn", "committed (UTC)", "LSN", "GTID", "rows", "statement"):
        table.add_column(column, overflow="fold")
    for txn in transactions:
        rows = "; ".join(f"{name} " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items()))
                         for name, ops in txn["rows"].items()) or ", ".join(txn["operations"]) or "-"
        statement = (txn["statements"][0] if txn["statements"] else "")[:120]
        origin = " (backtrack)" if txn["origin"] == "backtrack" else ""
        table.add_row(str(txn["txn_id"]), txn["commit_time"], f"{txn['first_lsn']}-{txn['last_lsn']}",
                      txn["gtid"] or "-", rows + origin, statement)
    return table


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
