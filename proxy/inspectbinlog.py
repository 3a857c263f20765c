"""``auroratrack inspect-binlog``: the transactions of binlog files, read from disk.

Reads MySQL 5.0-9.x and MariaDB binlog (and relay-log) files with no server and no running
``serve``, through exactly the path capture takes: the file reader (changelog/binlogfile.py)
frames the events, the streamer's ``TransactionAssembler`` groups them into committed
transactions in a throw-away change store, and ``changes.summarize`` / ``transaction_rows``
print them. Each transaction comes out in the shape of ``auroratrack changes --output json``
(``--rows``: of ``changes --rows``), oldest first, with the file it was read from.

Reads only the files it is given; writes only a temporary directory, removed at the end.
Unreadable input raises ``InspectError`` naming the file, the offset and the event.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from proxy.changelog.binlogfile import BinlogFile, BinlogReadError
from proxy.changelog.decoder import DecodeError, parse_table_map
from proxy.changelog.events import GtidEventError
from proxy.changelog.jsondiff import JsonDiffError
from proxy.changelog.store import ChangeStore
from proxy.changelog.streamer import CaptureRefused, TransactionAssembler
from proxy.changes import summarize, transaction_rows

TABLE_MAP_EVENT = 19
MAX_ROWS_PER_TRANSACTION = 100_000
_UNREADABLE = (DecodeError, CaptureRefused, GtidEventError, JsonDiffError, IndexError, ValueError)


class InspectError(ValueError):
    """A binlog that cannot be read through; the message names the file, offset and event."""


@contextmanager
def _scratch_store() -> Iterator[ChangeStore]:
    with tempfile.TemporaryDirectory(prefix="auroratrack-inspect-") as tmp:
        store = ChangeStore(Path(tmp) / "inspect.db")
        try:
            yield store
        finally:
            store.close()


def inspect_binlogs(paths: Sequence[str | Path], rows: bool = False,
                    max_rows: int = MAX_ROWS_PER_TRANSACTION) -> list[dict]:
    """Every committed transaction of ``paths`` (read in the order given), oldest first."""
    documents: list[dict] = []
    # DDL table names are read with sqlglot (streamer.ddl_tables), which warns on every statement
    # it only half parses (CREATE TRIGGER, ALTER USER): noise on a terminal, not a problem here.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    with _scratch_store() as store:
        assembler = TransactionAssembler(store, generated_columns=lambda schema, table: [])
        for path in paths:
            binlog = BinlogFile(path)
            last_txn = store.transactions(newest_first=True, limit=1)
            after = last_txn[0].txn_id if last_txn else 0
            feed_file(binlog, assembler)
            store.commit_pending()
            flavor = binlog.format.flavor if binlog.format else None
            for txn in store.transactions(after_txn_id=after):
                documents.append(_document(store, txn, flavor, rows, max_rows, str(path)))
            if assembler.txn is not None:
                documents.append({"file": str(path), "incomplete": True,
                                  "binlog_start": f"{assembler.txn.start_file}:{assembler.txn.start_pos}",
                                  "gtid": assembler.txn.gtid,
                                  "note": "the file ends inside this transaction (it goes on in the next file, "
                                          "or the file was cut)"})
                assembler.reset_stream()
    return documents


def feed_file(binlog: BinlogFile, assembler: TransactionAssembler) -> None:
    """Every event of ``binlog`` into ``assembler`` (and so into its store), in order."""
    name = str(binlog.path)
    events = binlog.events()
    while True:
        try:
            event = next(events)
        except StopIteration:
            return
        except BinlogReadError as exc:
            raise InspectError(str(exc)) from exc
        try:
            if event.type == TABLE_MAP_EVENT:  # read here, where its offset is known
                parse_table_map(event.body, binlog.format.flavor if binlog.format else None)
            assembler.feed(event)
        except _UNREADABLE as exc:
            raise InspectError(f"{name}: at offset {event.start_pos}, event type {event.type}: {exc}") from exc


def _document(store: ChangeStore, txn, flavor: str | None, rows: bool, max_rows: int, path: str) -> dict:
    try:
        document = (transaction_rows(store, txn.txn_id, flavor, limit=max_rows) if rows
                    else summarize(store, txn, flavor))
    except _UNREADABLE as exc:
        raise InspectError(f"{path}: the transaction at offsets {txn.start_pos}-{txn.end_pos} "
                           f"(GTID {txn.gtid or '-'}): a rows event cannot be decoded: {exc}") from exc
    document["file"] = path
    document["binlog_start"] = f"{txn.start_file}:{txn.start_pos}"
    return document


def print_documents(documents: list[dict], output: str, rows: bool) -> None:
    """What ``inspect-binlog`` prints: JSON, or the tables ``changes`` prints (oldest first)."""
    from proxy import clioutput

    if output == "json":
        clioutput.print_json(documents)
        return
    complete = [d for d in documents if not d.get("incomplete")]
    if rows:
        for document in complete:
            clioutput.print_view(clioutput.transaction_rows_view(document))
    else:
        clioutput.print_view(clioutput.changes_table(complete))
    for document in documents:
        if document.get("incomplete"):
            print(f"{document['file']}: {document['binlog_start']}: {document['note']}")
