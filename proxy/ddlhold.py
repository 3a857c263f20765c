"""Keep instead of destroy: DROP TABLE, TRUNCATE and DROP DATABASE from clients become held tables.

The relay hands this module a COM_QUERY or COM_STMT_PREPARE only when its first byte could start
``DROP``, ``TRUNCATE``, ``CREATE``, ``ALTER`` or ``RENAME`` (``FIRST_BYTES``, a byte test on the
hot path; CREATE TABLE, ALTER TABLE and RENAME TABLE are recorded ops of proxy.ddlrecord), and a COM_STMT_EXECUTE
only of a statement prepared so; ``DdlHolder.claims`` then decides off that path (a regex on the
prefix, then sqlglot, ~0.2 ms, DDL only) whether it is a statement it holds. If so it takes the
session over until the answer is sent: it runs the checks and the hold on the client's own
server connection (proxy.ddllink.SessionLink) and writes the answer the real statement would
have given. Several statements in one query (ddlscript) are run one by one, the held ones held;
a prepared DROP/TRUNCATE gets a stand-in prepared on the server and is held at each execute.
SQL-level PREPARE / EXECUTE / DEALLOCATE / EXECUTE IMMEDIATE (first byte p/P, e/E, d/D) are read
by proxy.ddlprepare: a name prepared from a held DDL is held at each EXECUTE, in the database of
its PREPARE. Compressed sessions (CLIENT_COMPRESS) come here with the inflated packet; the link
and the answer are compressed for them (proxy.relay, proxy.ddllink).

What the client sees is what the server would have said (MariaDB semantics, which drop what they
can and report the rest):
  * the tables that exist as base tables, are not the session's TEMPORARY tables, and are not a
    parent still referenced by a foreign key from outside the statement (with
    foreign_key_checks on) are held in one op (proxy.ddlops); with the checks off a referenced
    parent is held too, its children's keys left naming it, as the server's DROP leaves them;
  * the others (missing, temporary, views, referenced parents) are dropped for real with the
    same statement limited to them: nothing is destroyed that the server keeps, and the server
    itself writes the error or the Note 1051 warnings;
  * DROP DATABASE: every base table held, the views, routines and events kept as definitions,
    then the real DROP DATABASE of what is left; its affected-rows count includes the held ones;
  * when nothing can be held, the original statement goes to the server unchanged.
The first DDL the hold sends commits the session's open transaction implicitly, as the DROP would.

Not held (the statement runs for real, and a backtrack over it reports a DDL conflict, as
before): DROP TEMPORARY TABLE, statements with options sqlglot does not parse (WAIT n), scripts
that start with neither a held statement nor a PREPARE/EXECUTE/DEALLOCATE (in them a PREPARE or
DEALLOCATE is not seen either), non-ASCII statements, TRUNCATE of a table (DROP DATABASE of a
schema) referenced by foreign keys from outside with foreign_key_checks on (the server's own
error), a hold the session's privileges refuse (no
CREATE, INSERT on ``auroratrack_hold``: a warning is logged), an EXECUTE the proxy cannot see
(inside a stored procedure or trigger, or a query pipelined in one read with others: the server
runs the DDL it prepared), EXECUTE IMMEDIATE of an expression other than a literal or a user
variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pymysql
import sqlglot
from sqlglot import exp

from proxy import (
    ddlops,
    ddlprepare,
    ddlrecord,
    ddlretention,
    ddlroutines,
    ddlschemas,
    ddlscript,
    execcomments,
    wire,
)
from proxy.ddllink import PyMySQLExecutor, Result, SessionExecutor, SessionLink, reframe
from proxy.ddlops import HOLD_SCHEMA, Journal, Op, Swap, qname, quote, sql_string
from proxy.ddlretention import HeldTable
from proxy.gate import BACKTRACKING_ERRNO, BACKTRACKING_SQLSTATE, backtracking_message
from proxy.serveradmin import UpstreamCredentials
from proxy.tracker import parse_use_statement, starts_with_use

log = logging.getLogger(__name__)

# First payload byte after COM_QUERY that may start a statement this module holds (checked by
# the relay before it calls ``claims``): d/D, t/T, whitespace, or a comment.
# Also c/C, a/A, r/R: CREATE/ALTER/RENAME TABLE are recorded (proxy.ddlrecord).
# Also p/P, e/E: SQL-level PREPARE / EXECUTE of a held DDL (proxy.ddlprepare).
FIRST_BYTES = frozenset(b"dDtTcCaArRpPeE \t\r\n/")
# (with what proxy.ddlrecord records: CREATE INDEX, DROP INDEX, views... its PREFIX; and stored
# programs, proxy.ddlroutines)
_PREFIX = re.compile(rb"\s*(?:/\*.*?\*/\s*)*(drop\s+(?:table|database|schema)|truncate|create\s+table|"
                     rb"rename\s+tables?|alter\s+(?:online\s+)?table)\b|" + ddlrecord.PREFIX.pattern + rb"|"
                     + ddlroutines.PREFIX.pattern, re.IGNORECASE | re.DOTALL)
# Never held: the server's own schemas and auroratrack's.
_SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys", HOLD_SCHEMA, "auroratrack"})
_IN_TRANS = int(wire.ServerStatus.SERVER_STATUS_IN_TRANS)
# What a DROP TABLE of these names leaves as it was (a view: Note 1965; missing: Note 1051).
_NOTHING_DROPPED = frozenset({"missing", "view", "temporary"})
_MULTI_STATEMENTS = int(wire.Capability.CLIENT_MULTI_STATEMENTS)
_COM_CHANGE_USER, _COM_RESET_CONNECTION = 0x11, 0x1F


@dataclass(frozen=True)
class Statement:
    kind: str  # drop | truncate | drop_database
    text: str
    tables: list[tuple[str | None, str]]  # (schema or None for the session's, table)
    if_exists: bool = False


def parse_statement(query: bytes) -> Statement | ddlrecord.Recorded | None:
    """The DROP TABLE / TRUNCATE this module holds, the DDL proxy.ddlrecord records, or None
    (relay it unchanged)."""
    recorded = ddlrecord.parse(query)
    if recorded is not None:
        return recorded
    if not _PREFIX.match(query, 0, 200) or not query.isascii() or execcomments.present(query):
        return None
    text = query.decode("ascii")
    try:
        parsed = [e for e in sqlglot.parse(text, read="mysql") if e is not None]
    except sqlglot.errors.SqlglotError:
        return None
    if len(parsed) != 1:
        return None
    node = parsed[0]
    if isinstance(node, exp.TruncateTable):
        tables = node.expressions
        if len(tables) != 1 or node.args.get("exists"):
            return None
        return Statement("truncate", text, [(tables[0].db or None, tables[0].name)])
    if isinstance(node, exp.Drop) and node.args.get("kind") in ("DATABASE", "SCHEMA"):
        tables = node.args.get("tables") or []
        if len(tables) != 1:
            return None
        name = tables[0].name or tables[0].db  # sqlglot puts a quoted schema name in ``db``
        if not name or name.lower() in _SYSTEM_SCHEMAS:
            return None
        return Statement("drop_database", text, [(name, "")], bool(node.args.get("exists")))
    if isinstance(node, exp.Drop) and node.args.get("kind") == "TABLE" and not node.args.get("temporary"):
        tables = node.args.get("tables") or ([node.this] if node.this is not None else [])
        if not tables or any(not isinstance(t, exp.Table) or t.catalog for t in tables):
            return None
        return Statement("drop", text, [(t.db or None, t.name) for t in tables], bool(node.args.get("exists")))
    return None


class DdlHolder:
    """Holds what DROP TABLE / TRUNCATE would destroy, for every session of one proxy."""

    def __init__(self, control: UpstreamCredentials, data_dir: Path):
        self.control_credentials = control
        self.journal = Journal(data_dir / "ddl.db")
        self.holds = 0  # statements answered by a hold
        self.passed = 0  # statements claimed but run unchanged (nothing to hold)
        self.recorded = 0  # CREATE/RENAME/ALTER TABLE run as recorded ops (proxy.ddlrecord)
        self.held: list[HeldTable] = []  # as of the last sweep (status, metrics)
        self._control: pymysql.Connection | None = None  # reused: a connect costs ~10 ms
        self._control_lock = threading.Lock()

    def start(self) -> list[str]:
        """At service start: the hold schema exists; ops a crash interrupted are settled."""
        conn = self.control_credentials.connect()
        try:
            control = PyMySQLExecutor(conn)
            ddlops.ensure_hold_schema(control)
            return ddlops.recover(self.journal, control) + ddlrecord.recover(self.journal, control)
        finally:
            conn.close()

    def close(self) -> None:
        self.journal.close()
        if self._control is not None:
            with contextlib.suppress(Exception):
                self._control.close()

    # -- retention (proxy.ddlretention) ---------------------------------------------------------------
    async def sweep_forever(self, store_path: Path, interval: float = 5.0) -> None:
        """Held tables leave with their transaction; ``held`` kept fresh for status."""
        while True:
            try:
                await asyncio.to_thread(self.sweep, store_path)
            except Exception:  # the server is away: next time
                log.exception("sweep of held tables failed")
            await asyncio.sleep(interval)

    def sweep(self, store_path: Path) -> list[HeldTable]:
        conn = self.control_credentials.connect()
        try:
            self.held = ddlretention.sweep(self.journal, PyMySQLExecutor(conn), store_path)
            return self.held
        finally:
            conn.close()

    # -- from the relay -----------------------------------------------------------------------------
    def claims(self, session, data: bytes) -> bool:
        """Whether this whole COM_QUERY packet is a statement to hold; if so the session is
        taken over until its answer is written (``session.ddl_done`` gives it back)."""
        length = data[0] | data[1] << 8 | data[2] << 16
        if data[4] == _COM_RESET_CONNECTION or data[4] == _COM_CHANGE_USER:
            if session.ddl_statements:  # the server deallocates every prepared statement
                session.ddl_statements.clear()
            return False
        if data[4] == 3 and len(data) == 4 + length and ddlprepare.COMMAND.match(data, 5, 205):
            return self._claims_sql_prepared(session, bytes(data[5:]))  # PREPARE, EXECUTE, ...
        if len(data) != 4 + length or length >= 0xFFFFFF or data[3] != 0:
            return False
        unwrapped = None  # a dump's /*!40000 ALTER TABLE ... */: the statement it spells
        if data[4] != 0x17 and not _PREFIX.match(data, 5, 205):
            # (most comment-led queries stop at the regexes, nothing copied)
            unwrapped = execcomments.unwrap(data, session.tracker.server_version, 5) if data[4] == 3 else None
            if unwrapped is None or not _PREFIX.match(unwrapped, 0, 200):
                return False
        tracker = session.tracker
        if tracker.busy or tracker.phase != "command" or session.upstream is None:
            return False
        if data[4] == 0x17:  # COM_STMT_EXECUTE of a statement prepared as a held DDL
            prepared = session.ddl_statements.get(int.from_bytes(data[5:9], "little"))
            if prepared is None:
                return False
            session.ddl_begin()
            statement = prepared.statement
            asyncio.get_running_loop().create_task(self._serve(session, statement, statement.text.encode(),
                                                               prepared.database))
            return True
        query = unwrapped or bytes(data[5:])
        if data[4] == 0x16:  # COM_STMT_PREPARE: a stand-in is prepared, the DDL runs at execute
            statement = parse_statement(query)
            if statement is None:
                return False
            session.ddl_begin()
            asyncio.get_running_loop().create_task(self._serve_prepare(session, statement))
            return True
        # Stored-program DDL: a plain query only (the server prepares none of it).
        statement = ddlrecord.parse_routine(query, bool(tracker.capabilities & _MULTI_STATEMENTS)) \
            or parse_statement(query)
        if statement is None:
            script = ddlscript.split(query) if b";" in query and tracker.capabilities & _MULTI_STATEMENTS else None
            if script is None or parse_statement(script[0]) is None:
                return False
            session.ddl_begin()
            asyncio.get_running_loop().create_task(self._serve_script(session, script))
            return True
        if statement.kind != "drop_database" and any(db is None for db, _ in statement.tables) and not tracker.database:
            return False  # the server's own "No database selected"
        session.ddl_begin()
        # (run as sent when not held: the client's own bytes, executable comments and all)
        asyncio.get_running_loop().create_task(self._serve(session, statement, bytes(data[5:]), tracker.database))
        return True

    def _claims_sql_prepared(self, session, query: bytes) -> bool:
        """SQL-level PREPARE / EXECUTE / DEALLOCATE / EXECUTE IMMEDIATE (proxy.ddlprepare), alone
        or first in a multi-statement query."""
        tracker = session.tracker
        if tracker.busy or tracker.phase != "command" or session.upstream is None:
            return False
        command = ddlprepare.parse(query, tracker.server_version)
        if command is None:
            script = ddlscript.split(query) if b";" in query and tracker.capabilities & _MULTI_STATEMENTS else None
            if script is None or ddlprepare.parse(script[0], tracker.server_version) is None:
                return False
            session.ddl_begin()
            asyncio.get_running_loop().create_task(self._serve_script(session, script))
            return True
        prepared = session.ddl_statements
        if command.kind == "deallocate" or command.kind == "prepare":
            if prepared:  # (a PREPARE replaces the name even when it fails)
                prepared.pop(command.name, None)
            if command.kind == "deallocate" or not command.evaluate and (
                    command.text is None or parse_statement(command.text) is None):
                return False
        elif command.kind == "execute":
            entry = prepared.get(command.name) if prepared and not command.using else None
            if entry is None or not _has_database(entry.statement, entry.database):
                return False
            session.ddl_begin()
            asyncio.get_running_loop().create_task(self._serve(session, entry.statement, query, entry.database))
            return True
        elif command.using:  # EXECUTE IMMEDIATE ... USING: a DDL takes no parameters
            return False
        elif not command.evaluate:
            statement = parse_statement(command.text) if command.text is not None else None
            if statement is None or not _has_database(statement, tracker.database):
                return False
            session.ddl_begin()
            asyncio.get_running_loop().create_task(self._serve(session, statement, query, tracker.database))
            return True
        session.ddl_begin()
        asyncio.get_running_loop().create_task(self._serve_sql_prepared(session, command, query))
        return True

    async def _serve_sql_prepared(self, session, command: ddlprepare.SqlCommand, query: bytes) -> None:
        """A PREPARE run on the server as sent, its name remembered when it prepares a held DDL;
        an EXECUTE IMMEDIATE whose text had to be read from the session: held, or given back."""
        answer: bytes | None = None
        give_back = False
        try:
            answer = await _refused_by_gate(session)
            if answer is not None:
                return
            session.ddl_running = True  # a command given back is then in flight for the gate's drain
            link = _link(session)
            try:
                database = session.tracker.database
                if command.kind == "prepare":
                    result = await self._run_sql_prepared(session, link, command, query, database)
                    if result.kind == "ok":
                        session.tracker.status_flags = wire.ok_status_flags(result.payload)
                    answer = reframe(result.payload, 1)
                    return
                statement = await _text_statement(link, command)
            finally:
                link.release()
            if statement is None or not _has_database(statement, database):
                give_back = True  # not a held DDL: the relay forwards it as it came
                return
            await self._serve(session, statement, query, database)
        except Exception as exc:
            log.exception("%s of a prepared statement failed", command.kind)
            answer = wire.make_err_packet(1, 1105, "HY000", f"auroratrack: {command.kind} failed: {exc}")
        finally:
            if give_back:
                session.ddl_done(None, passed=wire.make_packets(b"\x03" + query, 0))
            elif command.kind == "prepare" or answer is not None:
                session.ddl_done(answer)

    async def _run_sql_prepared(self, session, link: SessionLink, command: ddlprepare.SqlCommand, piece: bytes,
                                database: str | None) -> Result:
        """One PREPARE / EXECUTE / DEALLOCATE / EXECUTE IMMEDIATE on the link, the prepared
        names kept up to date; the DDL it runs held. Returns the answer."""
        prepared = session.ddl_statements
        statement = None
        if command.kind in ("prepare", "deallocate") and prepared:
            prepared.pop(command.name, None)
        if command.kind == "execute":
            entry = prepared.get(command.name) if prepared and not command.using else None
            if entry is not None:
                statement, database = entry.statement, entry.database
        elif command.kind != "deallocate" and not command.using:
            statement = await _text_statement(link, command)
        if command.kind == "prepare":
            result = await link.query_bytes(piece)
            if result.kind == "ok" and statement is not None:
                if session.ddl_statements is None:
                    session.ddl_statements = {}
                session.ddl_statements[command.name] = ddlprepare.PreparedDdl(statement, database)
            return result
        result = None
        if statement is not None and _has_database(statement, database):
            result = await asyncio.to_thread(self._hold, SessionExecutor(link, asyncio.get_running_loop()),
                                             statement, database)
        return result if result is not None else await link.query_bytes(piece)

    async def _serve(self, session, statement: Statement, query: bytes, database: str | None) -> None:
        answer: bytes | None = None
        try:
            answer = await _refused_by_gate(session)
            if answer is not None:
                return
            session.ddl_running = True  # from here the gate's drain waits for it
            link = _link(session)
            try:
                loop = asyncio.get_running_loop()
                result = await asyncio.to_thread(self._hold, SessionExecutor(link, loop), statement, database)
                if result is None:
                    self.passed += 1
                    result = await link.query_bytes(query)
                else:
                    self.holds += 1
            finally:
                link.release()
            answer = reframe(result.payload, 1)
            flags = wire.ok_status_flags(result.payload) if result.kind == "ok" else \
                session.tracker.status_flags & ~_IN_TRANS
            session.tracker.status_flags = flags
        except Exception as exc:  # the session cannot go on in an unknown state
            log.exception("held %s failed", statement.kind)
            answer = wire.make_err_packet(1, 1105, "HY000", f"auroratrack: {statement.kind} failed: {exc}")
        finally:
            session.ddl_done(answer)

    async def _serve_prepare(self, session, statement: Statement) -> None:
        """Prepare ``DO 0`` in the DDL's place (the same answer: no parameters, no columns) and
        remember its statement id: its executes run the hold (``claims``)."""
        answer: bytes | None = None
        try:
            link = _link(session)
            try:
                payload = await link.prepare_stand_in()
            finally:
                link.release()
            if payload[:1] == b"\x00":
                if session.ddl_statements is None:
                    session.ddl_statements = {}
                session.ddl_statements[int.from_bytes(payload[1:5], "little")] = ddlprepare.PreparedDdl(
                    statement, session.tracker.database)  # an execute runs in the prepare's database
            answer = reframe(payload, 1)
        except Exception as exc:
            log.exception("prepare of a held %s failed", statement.kind)
            answer = wire.make_err_packet(1, 1105, "HY000", f"auroratrack: prepare failed: {exc}")
        finally:
            session.ddl_done(answer)

    async def _serve_script(self, session, script: list[bytes]) -> None:
        """Several statements: each held or sent as it is, one multi-result answer (ddlscript)."""
        answer: bytes | None = None
        try:
            answer = await _refused_by_gate(session)
            if answer is not None:
                return
            session.ddl_running = True
            tracker = session.tracker
            link = _link(session)
            results: list[list[bytes]] = []
            database = tracker.database
            try:
                for piece in script:
                    command = ddlprepare.parse(piece, tracker.server_version)  # PREPARE, EXECUTE, ...
                    statement = parse_statement(piece) if command is None else None
                    result = None
                    if command is not None:
                        result = await self._run_sql_prepared(session, link, command, piece, database)
                    elif statement is not None and (database or all(db for db, _ in statement.tables)):
                        result = await asyncio.to_thread(self._hold, SessionExecutor(link, asyncio.get_running_loop()),
                                                         statement, database)
                    if result is None:
                        result = await link.query_bytes(piece)
                    results.append(result.packets or [result.payload])
                    if result.kind == "err":
                        break
                    if starts_with_use(piece, 0, len(piece)):
                        database = parse_use_statement(piece) or database
            finally:
                link.release()
            answer, status = ddlscript.compose(results, tracker.deprecate_eof)
            tracker.status_flags = status if status is not None else tracker.status_flags & ~_IN_TRANS
            tracker.database = database
        except Exception as exc:
            log.exception("held script failed")
            answer = wire.make_err_packet(1, 1105, "HY000", f"auroratrack: script failed: {exc}")
        finally:
            session.ddl_done(answer)

    # -- the decision (worker thread) ------------------------------------------------------------------
    def _hold(self, session: SessionExecutor, statement: Statement, current_db: str | None) -> Result | None:
        """Run the hold; returns the answer for the client, or None to run the statement as is."""
        with self._control_lock:  # one hold at a time on the control connection
            if self._control is not None:
                try:
                    self._control.ping()
                except pymysql.MySQLError:
                    with contextlib.suppress(Exception):
                        self._control.close()
                    self._control = None
            if self._control is None:
                self._control = self.control_credentials.connect()
            try:
                control = PyMySQLExecutor(self._control)
                if isinstance(statement, ddlrecord.Recorded):
                    self.recorded += 1
                    return ddlrecord.record(session, control, self.journal, statement, current_db)
                if statement.kind == "truncate":
                    return self._truncate(session, control, statement, current_db)
                if statement.kind == "drop_database":
                    return self._drop_database(session, control, statement)
                return self._drop(session, control, statement, current_db)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._control.close()
                self._control = None
                raise

    def _drop(self, session: SessionExecutor, control: PyMySQLExecutor, statement: Statement,
              current_db: str | None) -> Result | None:
        names = [(db or current_db, name) for db, name in statement.tables]
        shown = {n: _show_create(session, *n) for n in dict.fromkeys(names)}
        candidates = [n for n in dict.fromkeys(names) if shown[n][0] == "base" and n[0] != HOLD_SCHEMA]
        children = _children(control, candidates)
        referenced = {n for n, kids in children.items() if kids - set(candidates)}
        checked = bool(children) and _checks_foreign_keys(session)
        held = []
        for n in candidates:
            # The checks on: the server drops the tables in order and refuses (1451) one that
            # a table still there references, one listed later in the statement too.
            if not (checked and children.get(n, set()) - set(held)):
                held.append(n)
        rest = [n for n in names if n not in held]
        if not held:
            return self._drop_for_real(session, statement, rest, shown)
        # A parent refused for a child listed after it is dropped for real before the hold takes
        # that child out (after it, the server would find nothing referencing the parent). Else
        # after the hold, as the statement's last word: its warnings are the ones SHOW WARNINGS
        # reads (the hold's statements would clear them; here they do, a known difference).
        first = any(children[n] & set(held) for n in candidates if n not in held)
        refused = self._drop_for_real(session, statement, rest, shown) if first else None
        op = Op(ddlops.new_op_id(), "drop", statement.text, [], created_us=ddlops.now_us(),
                repoint_children=any(n in referenced for n in held))
        for i, (db, name) in enumerate(held):
            hold_name = _hold_name(op.op_id, i, name)
            op.swaps.append(Swap(db, name, hold_name, None))
            op.defs[hold_name] = ddlops.read_defs(control, db, name, shown[(db, name)][1], size=False)
        renamed = ddlops.run_op(op, session, control, self.journal)
        if op.state == "failed":
            log.warning("DROP TABLE not held (%s %s): running it as sent", renamed.errno, renamed.message)
            return None
        if refused is not None:
            return refused
        return self._drop_for_real(session, statement, rest, shown) if rest else renamed

    def _drop_for_real(self, session: SessionExecutor, statement: Statement, names: list[tuple[str, str]],
                       shown: dict) -> Result:
        """The names nothing is held for (missing, views, the session's temporary tables,
        parents the server refuses to drop, sequences), dropped by the server itself with the
        statement limited to them: its own errors and Notes. The server logs a DROP TABLE IF
        EXISTS even when it dropped no base table, rebuilt ("generated by server", the tag
        lost): when none of them was one (missing, views, temporary), that log entry becomes a
        no-op op known by its GTID, so a backtrack over it sees no user DDL."""
        if_exists = "IF EXISTS " if statement.if_exists else ""
        sql = f"DROP TABLE {if_exists}{', '.join(qname(db, name) for db, name in names)}"
        if all(shown[n][0] in _NOTHING_DROPPED for n in names):
            return _run_as_noop(session, self.journal, sql, names)
        return session.run(sql)

    def _truncate(self, session: SessionExecutor, control: PyMySQLExecutor, statement: Statement,
                  current_db: str | None) -> Result | None:
        db, name = statement.tables[0]
        db = db or current_db
        kind, create = _show_create(session, db, name)
        if db == HOLD_SCHEMA or kind != "base":
            return None
        referenced = _referenced_from_outside(control, [(db, name)])
        if referenced and _checks_foreign_keys(session):
            return None  # the server refuses (1701)
        op = Op(ddlops.new_op_id(), "truncate", statement.text, [], created_us=ddlops.now_us(),
                repoint_children=bool(referenced))
        out, into = _hold_name(op.op_id, 0, name), _hold_name(op.op_id, 1, name)
        op.swaps.append(Swap(db, name, out, into))
        op.new_tables.append(into)
        defs = ddlops.read_defs(control, db, name, create, size=False)
        op.defs[out] = defs
        op.defs[into] = ddlops.TableDefs(defs.create, defs.triggers, defs.foreign_keys, 0)
        renamed = ddlops.run_op(op, session, control, self.journal)
        if op.state == "failed":
            log.warning("TRUNCATE not held (%s %s): running it as sent", renamed.errno, renamed.message)
            return None
        return renamed


    def _drop_database(self, session: SessionExecutor, control: PyMySQLExecutor,
                       statement: Statement) -> Result | None:
        """Every base table held (one op), the schema's views, routines and events kept as
        definitions, then the real DROP DATABASE of what is left; its answer counts the held
        tables among the tables it dropped, as the server would have."""
        db = statement.tables[0][0]
        shown = session.run(f"/* auroratrack ddl */ SHOW CREATE DATABASE {quote(db)}")
        if shown.errno == 1049:  # missing: the server's own error, or Note 1008 and a log entry of nothing
            return _run_as_noop(session, self.journal, statement.text, [(db, "")])
        if not shown.ok:
            return None
        listed = ddlops._must(control.run(
            "/* auroratrack ddl */ SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE "
            f"TABLE_SCHEMA = {sql_string(db)} AND TABLE_TYPE <> 'VIEW' ORDER BY TABLE_NAME")).rows
        if any(kind not in ("BASE TABLE", "SYSTEM VERSIONED", "SEQUENCE") for _, kind in listed):
            return None  # a kind not known to be held by a RENAME: the statement runs as sent
        tables = [name for name, _ in listed]
        if not tables:  # nothing to hold: its definition and objects kept, the server drops it
            return ddlschemas.record(session, control, self.journal, statement.text, db, objects=True)
        names = [(db, t) for t in tables]
        referenced = _referenced_from_outside(control, names)
        if referenced and _checks_foreign_keys(session):
            return None  # the server refuses (a parent of another schema's table)
        op = Op(ddlops.new_op_id(), "drop_database", statement.text, [], created_us=ddlops.now_us(),
                schema_action="drop", schema=ddlops.read_schema(control, db), repoint_children=bool(referenced))
        for i, (_, name) in enumerate(names):
            hold_name = _hold_name(op.op_id, i, name)
            op.swaps.append(Swap(db, name, hold_name, None))
            op.defs[hold_name] = ddlops.read_defs(control, db, name, size=False)
        answer = ddlops.run_op(op, session, control, self.journal)
        if op.state == "failed":
            log.warning("DROP DATABASE not held (%s %s): running it as sent", answer.errno, answer.message)
            return None
        if answer.kind != "ok":
            return answer
        affected, pos = wire.read_length_encoded_integer(answer.payload, 1)
        payload = b"\x00" + wire.length_encoded_integer((affected or 0) + len(tables)) + answer.payload[pos:]
        return Result("ok", payload)


def _run_as_noop(session: SessionExecutor, journal: Journal, sql: str, names: list[tuple[str, str]]) -> Result:
    """Run a statement that destroys nothing, journalling it as a ``noop`` op when the server
    logged it (by its GTID, MariaDB's @@last_gtid; elsewhere it stays a DDL conflict)."""
    op = Op(ddlops.new_op_id(), "noop", sql, [], created_us=ddlops.now_us(),
            change={"tables": [list(n) for n in names]})
    prior = ddlops.last_gtid(session)
    result = session.run(ddlops.tag(op.op_id) + sql)
    if result.ok:
        ddlops.note_gtid(session, op, prior)
        if op.gtids:
            op.state = "done"
            journal.save(op)
    return result


async def _text_statement(link: SessionLink, command: ddlprepare.SqlCommand) -> Statement | ddlrecord.Recorded | None:
    """The held DDL a PREPARE or EXECUTE IMMEDIATE carries, its text read from the client's own
    session when the query alone does not say it (a user variable, escapes)."""
    text = command.text
    if command.evaluate:
        value = await link.query_bytes(b"/* auroratrack ddl */ SELECT HEX(" + command.source + b")")
        text = bytes.fromhex(value.rows[0][0]) if value.kind == "rows" and value.rows[0][0] else None
    return parse_statement(text) if text else None


def _has_database(statement: Statement | ddlrecord.Recorded, database: str | None) -> bool:
    """Every table the statement names has a schema (else the server's "No database selected")."""
    return (database is not None or statement.kind == "drop_database"
            or all(db is not None for db, _ in statement.tables))


async def _refused_by_gate(session) -> bytes | None:
    """Wait (at most the gate's hold timeout) until the gate lets a command start; the error
    packet a held command gets when it does not, else None."""
    gate = session.gate
    if gate.is_open or await gate.wait_open(gate.hold_timeout):
        return None
    return wire.make_err_packet(1, BACKTRACKING_ERRNO, BACKTRACKING_SQLSTATE, backtracking_message(gate.hold_timeout))


def _link(session) -> SessionLink:
    """The session's server connection, borrowed (compressed if the session is)."""
    return SessionLink(session.upstream, session.tracker.deprecate_eof, session.compressed is not None,
                       "mariadb" in session.tracker.server_version.lower())


def _hold_name(op_id: str, index: int, name: str) -> str:
    return f"{op_id}_{index}_{name}"[:64]


def _show_create(session: SessionExecutor, db: str, name: str) -> tuple[str, str | None]:
    """(kind, SHOW CREATE TABLE) as the client's own session sees the name: kind base |
    temporary | missing | view | other (a sequence, an error; a TEMPORARY table shadows a base
    table only there). The text
    is kept when it is ASCII (the session's character set cannot have changed it)."""
    shown = session.run(f"/* auroratrack ddl */ SHOW CREATE TABLE {qname(db, name)}")
    if not shown.ok:
        return ("missing" if shown.errno in (1146, 1049) else "other"), None
    if shown.rows and len(shown.rows[0]) == 4:  # View, Create View, character set, collation
        return "view", None
    create = shown.rows[0][1] if shown.rows and len(shown.rows[0]) == 2 else ""
    if create.startswith("CREATE TEMPORARY TABLE"):
        return "temporary", None
    if not create.startswith("CREATE TABLE"):
        return "other", None
    return "base", create if create.isascii() else None


def _checks_foreign_keys(session: SessionExecutor) -> bool:
    """The session's foreign_key_checks: on, the server refuses to drop or truncate a parent
    still referenced (1451, 1701), and the statement is left to it for its own error."""
    checks = session.run("/* auroratrack ddl */ SELECT @@foreign_key_checks")
    return not (checks.ok and checks.rows and checks.rows[0][0] == "0")


def _referenced_from_outside(control: PyMySQLExecutor, tables: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Tables among ``tables`` that a foreign key of a table not among them references. Held
    with foreign_key_checks off (a mysqldump script's DROP TABLE), their children's keys would
    follow them into the hold schema: the op points those back at the live name, where the
    server's own DROP leaves them (``Op.repoint_children``)."""
    inside = set(tables)
    return {n for n, kids in _children(control, tables).items() if kids - inside}


def _children(control: PyMySQLExecutor, tables: list[tuple[str, str]]) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """For each of ``tables`` that other tables' foreign keys reference: those tables."""
    if not tables:
        return {}
    wanted = " OR ".join(f"(REFERENCED_TABLE_SCHEMA = {sql_string(db)} AND REFERENCED_TABLE_NAME = {sql_string(t)})"
                         for db, t in tables)
    found = control.run("/* auroratrack ddl */ SELECT DISTINCT TABLE_SCHEMA, TABLE_NAME, REFERENCED_TABLE_SCHEMA, "
                        f"REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE {wanted}")
    children: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for child_db, child, db, name in found.rows:
        if (child_db, child) != (db, name):
            children.setdefault((db, name), set()).add((child_db, child))
    return children


__all__ = ["FIRST_BYTES", "DdlHolder", "Statement", "parse_statement", "quote"]
