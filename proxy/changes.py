"""Browsing the changelog: how a user finds "the bad one" before backtracking to just before it.

Pure over a read-only change store (never opens a socket): committed transactions newest first,
filtered by time range, table, operation, GTID or statement text, each with its commit time,
LSN range, GTID, origin, rows per table and operation, and the statement text where the server
logged it; and, for one transaction, its decoded before- and after-images.

auroratrack's own bookkeeping (its schema, ``auroratrack``: the backtrack marker, the DDL that
creates it) is left out of the list unless asked for (``ChangeFilter.internal``): a backtrack's
transaction is listed with the user's tables only.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from proxy.changelog import binlog as bl
from proxy.changelog.decoder import (
    DateTimeValue,
    DateValue,
    EnumValue,
    JsonValue,
    SetValue,
    TimestampValue,
    TimeValue,
    charset_name,
    decode_rows,
    parse_table_map,
)
from proxy.changelog.store import ChangeStore, StoredTransaction
from proxy.rewind import ORIGIN_SCHEMA
from proxy.timeparse import format_time_us

OPERATIONS = ("insert", "update", "delete", "ddl", "statement")
_EVENT_OPERATION = {
    bl.WRITE_ROWS_V1: "insert", bl.WRITE_ROWS_V2: "insert",
    bl.UPDATE_ROWS_V1: "update", bl.UPDATE_ROWS_V2: "update", bl.PARTIAL_UPDATE_ROWS_EVENT: "update",
    bl.DELETE_ROWS_V1: "delete", bl.DELETE_ROWS_V2: "delete",
}


@dataclass(frozen=True)
class ChangeFilter:
    since_us: int | None = None
    until_us: int | None = None
    table: str | None = None  # "db.table" or "db.*"
    operation: str | None = None  # one of OPERATIONS
    gtid: str | None = None
    grep: str | None = None  # a substring of a statement text (case-insensitive)
    limit: int = 50
    internal: bool = False  # also auroratrack's own bookkeeping (its schema)


def list_changes(store: ChangeStore, flt: ChangeFilter, flavor: str | None = None) -> list[dict]:
    """Transactions matching ``flt``, newest first, as JSON-ready dicts."""
    found: list[dict] = []
    before = None
    # Asking for a table of auroratrack's own schema by name is asking to see it.
    internal = flt.internal or (flt.table is not None and is_internal(flt.table))
    while len(found) < flt.limit:
        batch = _newest(store, flt, before)
        if not batch:
            break
        for txn in batch:
            if _matches_text(txn, flt):
                summary = summarize(store, txn, flavor)
                if not internal:
                    summary = without_internal(summary)
                if summary is not None and (flt.operation is None or flt.operation in summary["operations"]):
                    found.append(summary)
                    if len(found) >= flt.limit:
                        break
        before = batch[-1].txn_id
    return found


def _newest(store: ChangeStore, flt: ChangeFilter, before: int | None) -> list[StoredTransaction]:
    sql = "SELECT * FROM transactions WHERE 1"
    args: list[Any] = []
    if before is not None:
        sql += " AND txn_id < ?"
        args.append(before)
    if flt.since_us is not None:
        sql += " AND commit_time_us >= ?"
        args.append(flt.since_us)
    if flt.until_us is not None:
        sql += " AND commit_time_us <= ?"
        args.append(flt.until_us)
    if flt.gtid is not None:
        sql += " AND gtid = ?"
        args.append(flt.gtid)
    sql += " ORDER BY txn_id DESC LIMIT 500"
    return [store._txn_from_row(row) for row in store.db.execute(sql, args)]


def _matches_text(txn: StoredTransaction, flt: ChangeFilter) -> bool:
    if flt.table is not None:
        wanted = flt.table.lower()
        tables = [t.lower() for t in txn.tables]
        if wanted.endswith(".*"):
            if not any(t.startswith(wanted[:-1]) for t in tables):
                return False
        elif wanted not in tables:
            return False
    if flt.grep is not None:
        needle = flt.grep.lower()
        if not any(needle in statement.lower() for statement in txn.statements):
            return False
    return True


def summarize(store: ChangeStore, txn: StoredTransaction, flavor: str | None = None) -> dict:
    """One transaction: where and when, and rows per table and operation."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    operations: set[str] = set()
    for flag in ("ddl", "statement"):
        if flag in txn.flags:
            operations.add(flag)
    schemas: dict[int, Any] = {}
    if txn.n_changes:
        for change in store.changes(txn.first_lsn, txn.last_lsn):
            if change.kind != "rows":
                continue
            name, table = _table(store, change.table_map_id, schemas, flavor)
            operation = _EVENT_OPERATION.get(change.event_type, "rows")
            operations.add(operation)
            counts[name][operation] += len(decode_rows(change.event_type, change.body, table))
    return {
        "txn_id": txn.txn_id,
        "commit_time": format_time_us(txn.commit_time_us),
        "commit_time_us": txn.commit_time_us,
        "time_precision": txn.time_precision,
        "first_lsn": txn.first_lsn,
        "last_lsn": txn.last_lsn,
        "gtid": txn.gtid,
        "binlog_end": f"{txn.end_file}:{txn.end_pos}",
        "origin": txn.origin,
        "flags": list(txn.flags),
        "tables": list(txn.tables),
        "operations": sorted(operations),
        "rows": {name: dict(c) for name, c in sorted(counts.items())},
        "statements": list(txn.statements),
    }


def is_internal(table: str) -> bool:
    """``db.table`` (or ``db.*``) in auroratrack's own schema."""
    return table.lower().startswith(ORIGIN_SCHEMA + ".")


def without_internal(summary: dict) -> dict | None:
    """``summary`` without auroratrack's tables; None when it touched nothing else."""
    tables = [t for t in summary["tables"] if not is_internal(t)]
    if summary["tables"] and not tables:
        return None
    rows = {name: ops for name, ops in summary["rows"].items() if not is_internal(name)}
    flagged = [op for op in summary["operations"] if op in ("ddl", "statement")]
    operations = sorted({op for ops in rows.values() for op in ops} | set(flagged))
    return {**summary, "tables": tables, "rows": rows, "operations": operations}


def transaction_rows(store: ChangeStore, txn_id: int, flavor: str | None = None, limit: int = 1000) -> dict:
    """The decoded before- and after-images of one transaction's row changes."""
    txn = store.transaction(txn_id)
    if txn is None:
        raise KeyError(f"transaction {txn_id} is not in the changelog")
    summary = summarize(store, txn, flavor)
    rows: list[dict] = []
    schemas: dict[int, Any] = {}
    for change in store.changes(txn.first_lsn, txn.last_lsn) if txn.n_changes else ():
        if change.kind != "rows":
            rows.append({"lsn": change.lsn, "kind": change.kind,
                         "statement": change.body.decode("utf-8", "replace")})
            continue
        name, table = _table(store, change.table_map_id, schemas, flavor)
        names = [c.name for c in table.columns]
        for row in decode_rows(change.event_type, change.body, table):
            if len(rows) >= limit:
                break
            rows.append({"lsn": change.lsn, "table": name, "operation": row.kind,
                         "before": _image(names, row.before, table), "after": _image(names, row.after, table)})
    summary["changes"] = rows
    summary["truncated"] = len(rows) >= limit
    return summary


def _table(store: ChangeStore, table_map_id: int, cache: dict, flavor: str | None):
    found = cache.get(table_map_id)
    if found is None:
        schema_name, table_name, body, generated = store.table_map(table_map_id)
        found = cache[table_map_id] = (f"{schema_name}.{table_name}",
                                       parse_table_map(body, flavor).with_generated(frozenset(generated)))
    return found


def _image(names: list, image: tuple | None, table) -> dict | None:
    if image is None:
        return None
    return {name or f"col{i}": display_value(value, table.columns[i]) for i, (name, value) in
            enumerate(zip(names, image, strict=True))}


def display_value(value: Any, column) -> Any:
    """A JSON-friendly rendering of a decoded value (text where it is text, hex otherwise)."""
    if value is None or isinstance(value, (int, float, bool)):
        return value
    if isinstance(value, bytes):
        charset = charset_name(column.charset)
        if charset and charset != "binary":
            codec = {"utf8mb4": "utf-8", "utf8mb3": "utf-8", "latin1": "cp1252"}.get(charset, "utf-8")
            try:
                return value.decode(codec)
            except UnicodeDecodeError:
                pass
        return "0x" + value.hex()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (DateValue, TimeValue, DateTimeValue, TimestampValue)):
        return str(value)
    if isinstance(value, EnumValue):
        return value.member.decode("utf-8", "replace") if value.member is not None else value.index
    if isinstance(value, SetValue):
        return [m.decode("utf-8", "replace") for m in value.members] if value.members else []
    if isinstance(value, JsonValue):
        return value.to_text()
    return str(value)
