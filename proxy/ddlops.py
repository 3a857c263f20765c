"""Held tables: the journalled swap operations behind a held DROP/TRUNCATE and their undo.

DESIGN.md decision 12. A table a statement would destroy is not destroyed: it moves, in one atomic
``RENAME TABLE``, to a reserved name in the reserved schema ``auroratrack_hold`` (out of the
user's ``SHOW TABLES`` and ``information_schema`` rows of their schema). Every such move is an
*op*: a list of swaps on live names (``db.t``), each taking the live table out to a hold name,
bringing a hold table in under the live name, or both at once (TRUNCATE: the old table out, an
empty copy in). Undoing an op is the op with ``out`` and ``in`` exchanged, run the same way, so
the undo of the undo (a backtrack forward) needs nothing new.

What a held table keeps, and what stops being live: a table in the hold schema constrains
nothing. Its triggers are dropped before it moves (the server refuses a cross-schema RENAME of a
table with triggers, ER_TRG_IN_WRONG_SCHEMA) and its foreign keys right after (foreign keys
follow a renamed table; a live one would keep checking, or cascading into, the held rows). Both
are kept as definitions in the journal, with ``SHOW CREATE TABLE``, and come back with the table.

The steps of an op, each SQL tagged ``/* auroratrack ddl op=ID ... */`` (the RENAME carries the
bare tag: it is the op's own binlog event, which the change store keeps and the planner finds):
  1. (TRUNCATE) ``CREATE TABLE hold.new LIKE db.t``            on the ``pre`` executor
  2. ``DROP TRIGGER`` of every table going out                  on ``pre``
  3. the one ``RENAME TABLE``                                    on ``pre``   <- the op happens here
  4. drop the foreign keys of the tables now held; re-create the triggers and foreign keys of
     the tables now live again; (a whole-table swap of a referenced table, proxy.ddlsave) point
     the other tables' keys that followed it out at the table now live   on ``post`` (idempotent)
DROP DATABASE adds to an op its schema (its definition, views, routines, events: ``read_schema``):
the schema is dropped for real after step 4, and made again before step 1 of the undo, its
objects after step 4 (``Op.schema_action``).
``pre`` is the client's own session for a held statement (its temporary tables, transaction,
locks and privileges count) and auroratrack's connection for an undo; ``post`` is always
auroratrack's own connection (it sets the session the definitions need).

The journal (``ddl.db``, SQLite, in the data directory) records each op before step 1 and marks
it ``done`` after step 4; ``recover`` finishes (RENAME done) or rolls back (not done) an op a
crash left ``started``. Reads and writes the server through the executors it is given.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from proxy.ddllink import Executor, Result

log = logging.getLogger(__name__)

HOLD_SCHEMA = "auroratrack_hold"
# The tag on every statement of an op; group 1 the op id, group 2 the step (absent: the RENAME).
TAG_RE = re.compile(r"/\* auroratrack ddl op=([0-9a-z]+)(?: step=([a-z_]+))? \*/")
_FK_LINE = re.compile(r"^\s*(CONSTRAINT `(?:[^`]|``)+` FOREIGN KEY .*?),?$")
_UNQUALIFIED_REF = re.compile(r"REFERENCES (`(?:[^`]|``)+`) \(")
_counter = 0
_counter_lock = threading.Lock()


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def qname(db: str, name: str) -> str:
    return f"{quote(db)}.{quote(name)}"


def sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def new_op_id() -> str:
    """Unique across restarts: the time in microseconds (base 36) and a per-process counter."""
    global _counter
    with _counter_lock:
        _counter = (_counter + 1) % 1296
        n = time.time_ns() // 1000 * 1296 + _counter
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


def tag(op_id: str, step: str | None = None) -> str:
    return f"/* auroratrack ddl op={op_id}{' step=' + step if step else ''} */ "


def op_of_statement(text: str) -> tuple[str, str | None] | None:
    """(op id, step) if ``text`` was sent by an op; step None for the op's RENAME."""
    found = TAG_RE.search(text[:200])
    return (found.group(1), found.group(2)) if found else None


# The server logs CREATE TRIGGER / VIEW / PROCEDURE / FUNCTION / EVENT rebuilt from the
# definition, without the tag: what ops re-created is known by its text instead (this process's
# journal fills it).
_op_trigger_statements: set[str] = set()
# The same, surer, by the GTID the server gave each (MariaDB's @@last_gtid; views are logged
# with their names qualified, not as SHOW CREATE VIEW gives them).
_op_gtids: set[str] = set()
_new_gtids: list[str] = []  # taken by ``finish`` into the op's journal entry


def is_op_statement(text: str, gtid: str | None = None) -> bool:
    """Whether a logged statement is one an op sent (not DDL of the user's)."""
    return (op_of_statement(text) is not None or text[:200] in _op_trigger_statements
            or (gtid is not None and gtid in _op_gtids))


def last_gtid(ex: Executor) -> str | None:
    """The GTID of the last transaction the session ``ex`` logged (MariaDB's @@last_gtid; None
    elsewhere, never asked: on the client's session MySQL's error would replace its warnings)."""
    if not getattr(ex, "mariadb", True):
        return None
    found = ex.run("/* auroratrack ddl */ SELECT @@last_gtid")
    return (found.rows[0][0] or None) if found.ok and found.rows else None


def note_gtid(ex: Executor, op: Op, prior: str | None) -> None:
    """Remember the GTID the server gave the statement ``ex`` just ran for recorded op ``op``
    (``prior``: ``last_gtid`` before it; the same: nothing was logged): a statement the server
    logs rebuilt (CREATE ... SELECT, views) has lost the op's tag, and is known by it instead
    (``ops_by_gtid``, ``is_op_statement``)."""
    gtid = last_gtid(ex)
    if gtid is not None and gtid != prior:
        op.change["gtid"] = gtid
        op.gtids.append(gtid)
        _op_gtids.add(gtid)


def run_recorded(session: Executor, journal: Journal, op: Op, statement: str, read_after: Callable[[], object],
                 unreadable: tuple[type[Exception], ...] = ()) -> Result:
    """Run the client's ``statement`` on its own session as recorded op ``op``: journalled first,
    tagged, known by its GTID too. When it ran, ``change["after"]`` is what ``read_after``
    reads and the op is done (one of ``unreadable`` raised: failed, a conflict at backtrack);
    when the server refused it, failed. Returns the server's answer."""
    journal.save(op)
    prior = last_gtid(session)
    result = session.run(tag(op.op_id) + statement)
    op.state = "failed"
    if result.ok:
        try:
            op.change["after"] = read_after()
            op.state = "done"
        except unreadable:
            pass
        note_gtid(session, op, prior)
    journal.save(op)
    return result


def ops_by_gtid(journal: Journal) -> dict[str, str]:
    """GTID -> op id of the recorded ops known by their GTID (``note_gtid``)."""
    return {op.change["gtid"]: op.op_id for op in journal.ops() if op.change and op.change.get("gtid")}


# -- what an op is ------------------------------------------------------------------------------------


@dataclass
class TriggerDef:
    name: str
    statement: str  # SHOW CREATE TRIGGER's "SQL Original Statement"
    sql_mode: str
    character_set_client: str
    collation_connection: str


@dataclass
class TableDefs:
    """What a table was when it went out: kept with it while it is held."""

    create: str  # SHOW CREATE TABLE
    triggers: list[TriggerDef] = field(default_factory=list)
    foreign_keys: list[str] = field(default_factory=list)  # "CONSTRAINT `x` FOREIGN KEY ... REFERENCES `db`.`p` ..."
    bytes: int = 0


@dataclass
class Swap:
    db: str
    name: str
    out: str | None  # hold name the live table goes to
    into: str | None  # hold name of the table that comes in under the live name


@dataclass
class Op:
    op_id: str
    kind: str  # drop | truncate | undo
    statement: str  # what the client sent, or what the op undoes
    swaps: list[Swap]
    defs: dict[str, TableDefs] = field(default_factory=dict)  # hold name -> its definitions
    new_tables: list[str] = field(default_factory=list)  # hold names created by the op (TRUNCATE)
    undoes: str | None = None
    state: str = "started"  # started | done | failed | evicted
    created_us: int = 0
    # DROP DATABASE: "drop" = after the tables are held, the schema itself (its views, routines,
    # events) is dropped for real; "create" (its undo) = the schema is made again first and its
    # objects after. ``schema``: {"db", "create", "objects": [SchemaObject as dict]}.
    schema_action: str | None = None
    schema: dict | None = None
    gtids: list[str] = field(default_factory=list)  # of the untagged statements it sent
    # A recorded DDL (proxy.ddlrecord, kinds create | rename | alter | noop): the tables it names
    # and, for an ALTER, SHOW CREATE TABLE before and after.
    change: dict | None = None
    # A table other tables' foreign keys reference goes out (a whole-table swap of proxy.ddlsave,
    # a held DROP/TRUNCATE with foreign_key_checks off): those keys follow it and are pointed at
    # the live name again (step 4); ``repointed``: [db, table, clause] of each, journalled before
    # its key is dropped.
    repoint_children: bool = False
    repointed: list[list[str]] = field(default_factory=list)

    def inverse(self, op_id: str, defs: dict[str, TableDefs]) -> Op:
        """The op that undoes this one (``defs``: what the tables now going out are)."""
        swaps = [Swap(s.db, s.name, s.into, s.out) for s in self.swaps]
        flipped = {"drop": "create", "create": "drop"}.get(self.schema_action or "")
        return Op(op_id, "undo", self.statement, swaps, defs=defs, undoes=self.op_id, created_us=now_us(),
                  schema_action=flipped, schema=self.schema, repoint_children=self.repoint_children)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict) -> Op:
        data = dict(data)
        data["swaps"] = [Swap(**s) for s in data["swaps"]]
        data["defs"] = {k: TableDefs(**{**v, "triggers": [TriggerDef(**t) for t in v["triggers"]]})
                        for k, v in data["defs"].items()}
        return Op(**data)


def now_us() -> int:
    return time.time_ns() // 1000


# -- the journal ----------------------------------------------------------------------------------------


class Journal:
    """Every op, from before its first step; survives restarts (SQLite in the data directory)."""

    def __init__(self, path: Path):
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives the process being killed (the crash the journal is
        # for), not a power cut; FULL would add an fsync (~ms) to every held statement.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS ops (op_id TEXT PRIMARY KEY, kind TEXT NOT NULL,"
                        " state TEXT NOT NULL, created_us INTEGER NOT NULL, body TEXT NOT NULL)")
        self._lock = threading.Lock()
        for op in self.ops():
            for defs in op.defs.values():
                _op_trigger_statements.update(t.statement[:200] for t in defs.triggers)
            for obj in (op.schema or {}).get("objects", []):
                _op_trigger_statements.add(obj["statement"][:200])
            _op_gtids.update(op.gtids)

    def save(self, op: Op) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO ops (op_id, kind, state, created_us, body) VALUES (?,?,?,?,?)",
                            (op.op_id, op.kind, op.state, op.created_us, json.dumps(op.to_json())))

    def get(self, op_id: str) -> Op | None:
        with self._lock:
            row = self.db.execute("SELECT body FROM ops WHERE op_id = ?", (op_id,)).fetchone()
        return Op.from_json(json.loads(row[0])) if row else None

    def ops(self, state: str | None = None) -> list[Op]:
        with self._lock:
            if state is None:
                rows = self.db.execute("SELECT body FROM ops ORDER BY created_us").fetchall()
            else:
                rows = self.db.execute("SELECT body FROM ops WHERE state = ? ORDER BY created_us", (state,)).fetchall()
        return [Op.from_json(json.loads(r[0])) for r in rows]

    def defs_of(self, hold_name: str) -> TableDefs | None:
        """The definitions a hold table had when it went out (the latest op that moved it out)."""
        for op in reversed(self.ops()):
            if op.state in ("done", "evicted") and hold_name in op.defs:
                return op.defs[hold_name]
        return None

    def close(self) -> None:
        self.db.close()


# -- reading definitions ------------------------------------------------------------------------------------


def read_defs(control: Executor, db: str, name: str, create: str | None = None, size: bool = True) -> TableDefs:
    """SHOW CREATE TABLE (unless given), triggers and foreign keys of ``db.name`` (auroratrack's
    connection); ``size``: its bytes too (a hold leaves that to the retention sweep)."""
    if create is None:
        create = _must(control.run(f"/* auroratrack ddl */ SHOW CREATE TABLE {qname(db, name)}")).rows[0][1]
    triggers = []
    listed = _must(control.run(
        "/* auroratrack ddl */ SELECT TRIGGER_NAME, SQL_MODE, CHARACTER_SET_CLIENT, COLLATION_CONNECTION "
        f"FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = {sql_string(db)} "
        f"AND EVENT_OBJECT_TABLE = {sql_string(name)} ORDER BY EVENT_MANIPULATION, ACTION_TIMING, ACTION_ORDER"))
    for trigger, sql_mode, charset, collation in listed.rows:
        shown = _must(control.run(f"/* auroratrack ddl */ SHOW CREATE TRIGGER {qname(db, trigger)}")).rows[0]
        triggers.append(TriggerDef(trigger, shown[2], sql_mode, charset, collation))
    n_bytes = 0
    if size:
        found = _must(control.run(
            "/* auroratrack ddl */ SELECT COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) FROM "
            f"information_schema.TABLES WHERE TABLE_SCHEMA = {sql_string(db)} AND TABLE_NAME = {sql_string(name)}"))
        n_bytes = int(found.rows[0][0]) if found.rows else 0
    return TableDefs(create, triggers, foreign_keys(create, db), n_bytes)


def foreign_keys(create: str, db: str) -> list[str]:
    """The FOREIGN KEY clauses of a SHOW CREATE TABLE, their parent table qualified with ``db``
    where the server left it implicit (it omits the schema when it is the table's own)."""
    clauses = []
    for line in create.splitlines():
        found = _FK_LINE.match(line)
        if found:
            clauses.append(_UNQUALIFIED_REF.sub(lambda m: f"REFERENCES {quote(db)}.{m.group(1)} (", found.group(1)))
    return clauses


def _fk_name(clause: str) -> str:
    return re.match(r"CONSTRAINT `((?:[^`]|``)+)`", clause).group(1).replace("``", "`")


def _must(result: Result) -> Result:
    if not result.ok:
        raise DdlError(result)
    return result


class DdlError(Exception):
    """A statement of an op failed; carries the server's answer."""

    def __init__(self, result: Result):
        super().__init__(f"{result.errno}: {result.message}")
        self.result = result


# -- running an op ----------------------------------------------------------------------------------------


def _test_pause(point: str) -> None:
    """Test hook: AURORATRACK_DDL_TEST_PAUSE=<point>:<seconds> sleeps there (crash tests kill
    the process in the middle of an op)."""
    spec = os.environ.get("AURORATRACK_DDL_TEST_PAUSE", "")
    if spec.startswith(point + ":"):
        time.sleep(float(spec.split(":", 1)[1]))


def run_op(op: Op, pre: Executor, post: Executor, journal: Journal) -> Result:
    """Steps 1-4 of the module docstring. Returns the RENAME's answer; if a step before it
    fails, what was done is undone, the op is marked failed and the failing answer returned."""
    journal.save(op)
    created: list[str] = []
    dropped: list[tuple[str, TriggerDef]] = []
    try:
        if op.schema_action == "create":
            _must(pre.run(tag(op.op_id, "createdb") + op.schema["create"].replace(
                "CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1)))
        for swap in op.swaps:
            if swap.into in op.new_tables:
                _must(pre.run(f"{tag(op.op_id, 'create')}CREATE TABLE {qname(HOLD_SCHEMA, swap.into)} "
                              f"LIKE {qname(swap.db, swap.name)}"))
                created.append(swap.into)
        for swap in op.swaps:
            if swap.out is not None:
                for trigger in op.defs[swap.out].triggers:
                    _must(pre.run(f"{tag(op.op_id, 'trigger')}DROP TRIGGER {qname(swap.db, trigger.name)}"))
                    dropped.append((swap.db, trigger))
        _test_pause("before_rename")
        renamed = pre.run(tag(op.op_id) + rename_statement(op))
        if not renamed.ok:
            raise DdlError(renamed)
    except DdlError as exc:
        _roll_back(op, post, created, dropped, journal)
        return exc.result
    _test_pause("after_rename")
    return finish(op, post, journal, pre) or renamed


def rename_statement(op: Op) -> str:
    """The op's one atomic RENAME: every table out first, then every table in."""
    moves = [f"{qname(s.db, s.name)} TO {qname(HOLD_SCHEMA, s.out)}" for s in op.swaps if s.out is not None]
    moves += [f"{qname(HOLD_SCHEMA, s.into)} TO {qname(s.db, s.name)}" for s in op.swaps if s.into is not None]
    return "RENAME TABLE " + ", ".join(moves)


def finish(op: Op, post: Executor, journal: Journal, pre: Executor | None = None) -> Result | None:
    """Step 4, idempotent: held tables lose their foreign keys; live ones get theirs and their
    triggers back; a DROP DATABASE's schema goes (its answer returned) or an undone one's
    objects come back."""
    # Only foreign keys the definitions name are looked for (information_schema costs ms).
    if any(op.defs[s.out].foreign_keys for s in op.swaps if s.out is not None and s.out in op.defs) or any(
            op.defs[s.into].foreign_keys for s in op.swaps if s.into is not None and s.into in op.defs):
        _must(post.run("/* auroratrack ddl */ SET SESSION foreign_key_checks = 0"))
    for swap in op.swaps:
        if swap.out is not None and (swap.out not in op.defs or op.defs[swap.out].foreign_keys):
            _drop_foreign_keys(op.op_id, post, HOLD_SCHEMA, swap.out)
    for swap in op.swaps:
        if swap.into is None:
            continue
        defs = op.defs.get(swap.into) or op.defs.get(swap.out or "")
        if defs is None:
            continue
        _recreate_triggers(op.op_id, post, swap.db, swap.name, defs.triggers)
        _add_foreign_keys(op.op_id, post, swap.db, swap.name, defs.foreign_keys)
    if op.repoint_children:
        _repoint_children(op, post, journal)
    answer = None
    if op.schema_action == "drop":
        answer = (pre or post).run(f"{tag(op.op_id, 'dropdb')}DROP DATABASE IF EXISTS {quote(op.schema['db'])}")
    elif op.schema_action == "create":
        create_objects(op.op_id, post, op.schema["db"], op.schema["objects"])
    if op.schema_action is not None:
        _test_pause("after_schema")
    op.gtids.extend(_new_gtids)
    _new_gtids.clear()
    op.state = "done"
    journal.save(op)
    return answer


@dataclass
class SchemaObject:
    kind: str  # VIEW | PROCEDURE | FUNCTION | EVENT
    name: str
    statement: str
    sql_mode: str
    character_set_client: str
    collation_connection: str


def read_schema(control: Executor, db: str) -> dict:
    """What DROP DATABASE destroys besides its tables: the schema's definition, its views,
    routines and events (as SHOW CREATE gives them), for ``Op.schema``."""
    create = _must(control.run(f"/* auroratrack ddl */ SHOW CREATE DATABASE {quote(db)}")).rows[0][1]
    objects = []
    listed = [("VIEW", r[0]) for r in _must(control.run(
        "/* auroratrack ddl */ SELECT TABLE_NAME FROM information_schema.VIEWS WHERE "
        f"TABLE_SCHEMA = {sql_string(db)} ORDER BY TABLE_NAME")).rows]
    listed += [(r[0], r[1]) for r in _must(control.run(
        "/* auroratrack ddl */ SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE "
        f"ROUTINE_SCHEMA = {sql_string(db)} ORDER BY ROUTINE_TYPE, ROUTINE_NAME")).rows]
    listed += [("EVENT", r[0]) for r in _must(control.run(
        "/* auroratrack ddl */ SELECT EVENT_NAME FROM information_schema.EVENTS WHERE "
        f"EVENT_SCHEMA = {sql_string(db)} ORDER BY EVENT_NAME")).rows]
    for kind, name in listed:
        row = _must(control.run(f"/* auroratrack ddl */ SHOW CREATE {kind} {qname(db, name)}")).rows[0]
        if kind == "VIEW":  # View, Create View, character_set_client, collation_connection
            objects.append(SchemaObject(kind, name, row[1], "", row[2], row[3]))
        elif kind == "EVENT":  # Event, sql_mode, time_zone, Create Event, charset, collation, ...
            objects.append(SchemaObject(kind, name, row[3], row[1], row[4], row[5]))
        else:  # Name, sql_mode, Create ..., charset, collation, Database Collation
            objects.append(SchemaObject(kind, name, row[2], row[1], row[3], row[4]))
    return {"db": db, "create": create, "objects": [asdict(o) for o in objects]}


def create_objects(op_id: str, post: Executor, db: str, objects: list[dict]) -> None:
    """Views, routines and events of an undone DROP DATABASE, each as it was made; views that
    use views are retried until all are there (their order is not known)."""
    present = {(r[0], r[1]) for r in _must(post.run(
        "/* auroratrack ddl */ SELECT 'VIEW', TABLE_NAME FROM information_schema.VIEWS WHERE "
        f"TABLE_SCHEMA = {sql_string(db)} UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME FROM "
        f"information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {sql_string(db)} UNION ALL SELECT 'EVENT', "
        f"EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {sql_string(db)}")).rows}
    pending = [SchemaObject(**o) for o in objects if (o["kind"], o["name"]) not in present]
    for _ in range(len(pending) + 1):
        failed = []
        for obj in pending:
            trigger = TriggerDef(obj.name, obj.statement, obj.sql_mode or "DEFAULT", obj.character_set_client,
                                 obj.collation_connection)
            try:
                _create_trigger(op_id, post, db, trigger, step="object")
            except DdlError:
                failed.append(obj)
        if not failed or len(failed) == len(pending):
            if failed:
                raise DdlError(Result("err", errno=0, message=f"cannot re-create {[o.name for o in failed]}"))
            return
        pending = failed


def _roll_back(op: Op, post: Executor, created: list[str], dropped: list[tuple[str, TriggerDef]],
               journal: Journal) -> None:
    for db, trigger in dropped:
        _create_trigger(op.op_id, post, db, trigger)
    for name in created:
        post.run(f"{tag(op.op_id, 'rollback')}DROP TABLE IF EXISTS {qname(HOLD_SCHEMA, name)}")
    op.state = "failed"
    journal.save(op)


def _drop_foreign_keys(op_id: str, post: Executor, db: str, name: str) -> None:
    found = _must(post.run(
        "/* auroratrack ddl */ SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
        f"CONSTRAINT_SCHEMA = {sql_string(db)} AND TABLE_NAME = {sql_string(name)}"))
    if found.rows:
        drops = ", ".join(f"DROP FOREIGN KEY {quote(row[0])}" for row in found.rows)
        _must(post.run(f"{tag(op_id, 'fk')}ALTER TABLE {qname(db, name)} {drops}"))


def _repoint_children(op: Op, post: Executor, journal: Journal) -> None:
    """Foreign keys of live tables that followed a table out into the hold schema (InnoDB moves
    a child's reference with its renamed parent) name the live name again: the table that came
    in under it, or none (a held DROP with foreign_key_checks off leaves them naming the dropped
    table, as the server's own DROP does; when a table comes back under that name, InnoDB links
    them to it). Each is dropped and added back (one ALTER cannot drop and add a key of the same
    name), foreign_key_checks off as for every key an op adds; each clause is journalled before
    its key is dropped, so a crash in between adds it back at the next start."""
    _must(post.run("/* auroratrack ddl */ SET SESSION foreign_key_checks = 0"))
    live_names = {swap.out: (swap.db, swap.name) for swap in op.swaps if swap.out is not None}
    following = []
    if live_names:
        # Not indexed by the referenced table: it reads every schema's keys, hence the op's flag.
        listed = ", ".join(sql_string(out) for out in live_names)
        found = _must(post.run(
            "/* auroratrack ddl */ SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME FROM "
            f"information_schema.REFERENTIAL_CONSTRAINTS WHERE UNIQUE_CONSTRAINT_SCHEMA = {sql_string(HOLD_SCHEMA)} "
            f"AND REFERENCED_TABLE_NAME IN ({listed}) AND CONSTRAINT_SCHEMA <> {sql_string(HOLD_SCHEMA)}")).rows
        for db, table, name, out in found:
            held = f"REFERENCES {qname(HOLD_SCHEMA, out)} ("
            create = _must(post.run(f"/* auroratrack ddl */ SHOW CREATE TABLE {qname(db, table)}")).rows[0][1]
            following += [(db, table, name, clause.replace(held, f"REFERENCES {qname(*live_names[out])} ("))
                          for clause in foreign_keys(create, db) if _fk_name(clause) == name and held in clause]
    new = [[db, table, clause] for db, table, _, clause in following if [db, table, clause] not in op.repointed]
    if new:
        op.repointed += new
        journal.save(op)
    for db, table, name, _ in following:
        _must(post.run(f"{tag(op.op_id, 'fk')}ALTER TABLE {qname(db, table)} DROP FOREIGN KEY {quote(name)}"))
    for db, table, clause in op.repointed:
        _add_foreign_keys(op.op_id, post, db, table, [clause])


def _add_foreign_keys(op_id: str, post: Executor, db: str, name: str, clauses: list[str]) -> None:
    if not clauses:
        return
    found = _must(post.run(
        "/* auroratrack ddl */ SELECT CONSTRAINT_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
        f"CONSTRAINT_SCHEMA = {sql_string(db)} AND TABLE_NAME = {sql_string(name)}"))
    present = {row[0] for row in found.rows}
    indexes: dict[str, list[str]] = {}
    for index, column in _must(post.run(
            "/* auroratrack ddl */ SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE "
            f"TABLE_SCHEMA = {sql_string(db)} AND TABLE_NAME = {sql_string(name)} AND INDEX_NAME <> 'PRIMARY' "
            "ORDER BY INDEX_NAME, SEQ_IN_INDEX")).rows:
        indexes.setdefault(index, []).append(column)
    table = qname(db, name)
    for clause in clauses:
        if _fk_name(clause) in present:
            continue
        # The server replaces an index that serves the new foreign key by a new one at the end
        # of the table's index list (SHOW CREATE TABLE would change): renamed aside, the index
        # is reused where it stands, then gets its name back. All metadata-only ALTERs.
        columns = _fk_columns(clause)
        aside = {index: f"at_{op_id}_{n}"[:64] for n, index in enumerate(sorted(indexes))
                 if indexes[index][: len(columns)] == columns}
        renames = ", ".join(f"RENAME INDEX {quote(a)} TO {quote(b)}" for a, b in aside.items())
        if renames:
            _must(post.run(f"{tag(op_id, 'fk')}ALTER TABLE {table} {renames}"))
        # foreign_key_checks = 0: added in place, the rows are not checked again (they were
        # valid when the table went out, as far as the server's own rules went).
        _must(post.run(f"{tag(op_id, 'fk')}ALTER TABLE {table} ADD {clause}"))
        if renames:
            back = ", ".join(f"RENAME INDEX {quote(b)} TO {quote(a)}" for a, b in aside.items())
            _must(post.run(f"{tag(op_id, 'fk')}ALTER TABLE {table} {back}"))


def _fk_columns(clause: str) -> list[str]:
    listed = re.search(r"FOREIGN KEY \(((?:`(?:[^`]|``)+`(?:, )?)+)\)", clause).group(1)
    return [c.replace("``", "`") for c in re.findall(r"`((?:[^`]|``)+)`", listed)]


def _recreate_triggers(op_id: str, post: Executor, db: str, name: str, triggers: list[TriggerDef]) -> None:
    if not triggers:
        return
    found = _must(post.run(
        "/* auroratrack ddl */ SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE "
        f"TRIGGER_SCHEMA = {sql_string(db)}"))
    present = {row[0] for row in found.rows}
    for trigger in triggers:
        if trigger.name not in present:
            _create_trigger(op_id, post, db, trigger)


def _create_trigger(op_id: str, post: Executor, db: str, trigger: TriggerDef, step: str = "trigger") -> None:
    """Re-create a trigger as it was made: its schema, sql_mode and character set (the server
    stores those with it, and SHOW CREATE TRIGGER shows them)."""
    _must(post.run(f"/* auroratrack ddl */ USE {quote(db)}"))
    mode = "DEFAULT" if trigger.sql_mode == "DEFAULT" else sql_string(trigger.sql_mode)
    _must(post.run(f"/* auroratrack ddl */ SET SESSION sql_mode = {mode}"))
    charset = sql_string(trigger.character_set_client)
    _must(post.run(f"/* auroratrack ddl */ SET SESSION character_set_client = {charset}, "
                   f"collation_connection = {sql_string(trigger.collation_connection)}"))
    _op_trigger_statements.add(trigger.statement[:200])
    try:
        _must(post.run(tag(op_id, step) + trigger.statement))
        gtid = post.run("/* auroratrack ddl */ SELECT @@last_gtid")
        if gtid.ok and gtid.rows and gtid.rows[0][0]:
            _op_gtids.add(gtid.rows[0][0])
            _new_gtids.append(gtid.rows[0][0])
    finally:
        post.run("/* auroratrack ddl */ SET SESSION character_set_client = 'utf8mb4', "
                 "collation_connection = 'utf8mb4_general_ci', sql_mode = DEFAULT")


def table_exists(ex: Executor, db: str, name: str) -> bool:
    found = _must(ex.run("/* auroratrack ddl */ SELECT COUNT(*) FROM information_schema.TABLES WHERE "
                         f"TABLE_SCHEMA = {sql_string(db)} AND TABLE_NAME = {sql_string(name)}"))
    return int(found.rows[0][0]) > 0


def recover(journal: Journal, control: Executor) -> list[str]:
    """Finish or roll back every op a crash left ``started``; returns what was done, per op."""
    outcomes = []
    for op in journal.ops("started"):
        if op.change is not None:
            continue  # a recorded DDL: proxy.ddlrecord.recover
        first = op.swaps[0]
        if first.out is not None:
            renamed = table_exists(control, HOLD_SCHEMA, first.out)
        else:
            renamed = not table_exists(control, HOLD_SCHEMA, first.into)
        if renamed:
            finish(op, control, journal)  # (a DROP DATABASE's schema is dropped here too)
            outcomes.append(f"op {op.op_id} ({op.kind}) finished")
        else:
            dropped = [(s.db, t) for s in op.swaps if s.out is not None for t in op.defs[s.out].triggers]
            present = {(r[0], r[1]) for r in _must(control.run(
                "/* auroratrack ddl */ SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS")).rows}
            missing = [(db, t) for db, t in dropped if (db, t.name) not in present]
            _roll_back(op, control, op.new_tables, missing, journal)
            outcomes.append(f"op {op.op_id} ({op.kind}) rolled back")
        log.warning("ddl journal: %s after a restart", outcomes[-1])
    return outcomes


def ensure_hold_schema(control: Executor) -> None:
    found = _must(control.run("/* auroratrack ddl */ SELECT COUNT(*) FROM information_schema.SCHEMATA "
                              f"WHERE SCHEMA_NAME = {sql_string(HOLD_SCHEMA)}"))
    if not int(found.rows[0][0]):
        _must(control.run(f"/* auroratrack ddl */ CREATE DATABASE IF NOT EXISTS {quote(HOLD_SCHEMA)}"))
