"""Held DROP TABLE / TRUNCATE (proxy.ddlhold): the client sees what the server itself answers.

Each scenario runs twice on the real server, once directly and once through the proxy, in two
databases built the same way; the raw answer packets (OK: affected rows, status flags, warning
count; ERR: code, SQLSTATE, message), the warnings and the tables left must be equal byte for
byte (the database name replaced). Through the proxy, what was dropped must be held."""

from __future__ import annotations

import time

import pytest

from proxy.ddlops import HOLD_SCHEMA
from tests.integration.ddl_support import raw_script_answers
from tests.integration.rawmysql import COM_QUERY, RawConnection

SETUP = [
    "CREATE TABLE p (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE c (id INT PRIMARY KEY, pid INT, FOREIGN KEY (pid) REFERENCES p (id)) ENGINE=InnoDB",
    "INSERT INTO p VALUES (1), (2)",
    "INSERT INTO c VALUES (10, 1)",
    "CREATE TABLE a (id INT PRIMARY KEY)",
    "CREATE TABLE a2 (id INT PRIMARY KEY)",
    "CREATE TABLE a3 (id INT PRIMARY KEY)",
    "CREATE TABLE s (id INT PRIMARY KEY)",
    "INSERT INTO s VALUES (7)",
    "CREATE TABLE k (id INT PRIMARY KEY)",
    "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
    "INSERT INTO t (v) VALUES (1), (2), (3)",
    "CREATE TABLE t2 (id INT PRIMARY KEY)",
]

# (statement, whether to read SHOW WARNINGS after it)
SCENARIO = [
    "DROP TABLE missing",
    "DROP TABLE IF EXISTS missing, a",
    "SHOW WARNINGS",
    "DROP TABLE p",
    "DROP TABLE a2, p",
    "SHOW WARNINGS",
    "DROP TABLE IF EXISTS a2, p",
    "SHOW WARNINGS",
    "CREATE TEMPORARY TABLE s (x INT)",
    "DROP TABLE s",
    "SELECT * FROM s",
    "DROP TABLE s",
    "BEGIN",
    "INSERT INTO k VALUES (1)",
    "DROP TABLE a3",
    "ROLLBACK",
    "SELECT * FROM k",
    "TRUNCATE TABLE t",
    "INSERT INTO t (v) VALUES (9)",
    "SELECT * FROM t",
    "TRUNCATE p",
    "TRUNCATE missing",
    "drop   table /* x */ t2",
    "SHOW TABLES",
]


# With foreign_key_checks off (as a mysqldump script runs) a referenced parent is truncated and
# dropped; the children's keys go on naming it, and check against it once the checks are back.
FK_OFF_SETUP = [
    "CREATE TABLE p (id INT PRIMARY KEY)",
    "CREATE TABLE c (id INT PRIMARY KEY, pid INT, CONSTRAINT c_p FOREIGN KEY (pid) REFERENCES p (id))",
    "CREATE TABLE q (id INT PRIMARY KEY)",
    "CREATE TABLE d (id INT PRIMARY KEY, qid INT, CONSTRAINT d_q FOREIGN KEY (qid) REFERENCES q (id))",
    "INSERT INTO p VALUES (1), (2)", "INSERT INTO c VALUES (10, 1)", "INSERT INTO q VALUES (1)",
]
FK_OFF_SCENARIO = [
    "TRUNCATE p", "DROP TABLE p",  # the checks on: the server refuses (1701, 1451)
    "SET foreign_key_checks = 0",
    "TRUNCATE p", "SELECT * FROM p", "SHOW CREATE TABLE c", "INSERT INTO p VALUES (3)",
    "DROP TABLE p", "SHOW CREATE TABLE c",
    "DROP TABLE IF EXISTS q",
    "SET foreign_key_checks = 1",
    "INSERT INTO c VALUES (11, 1)", "INSERT INTO d VALUES (2, 1)",  # 1452 naming the dropped parents
    "SHOW CREATE TABLE d", "SHOW TABLES",
]


def _answers(host: str, port: int, user: str, password: str, db: str, setup: list[str] = SETUP,
             scenario: list[str] = SCENARIO) -> list[tuple[str, bytes]]:
    conn = RawConnection(host, port)
    try:
        conn.login(user, password, db)
        for sql in setup:
            conn.query(sql)
        out = []
        for sql in scenario:
            conn.send_command(COM_QUERY, sql.encode())
            first = conn.read_packet()
            packets = [first]
            if first[0] not in (0x00, 0xFF):  # a result set: read it all, keep every packet
                while True:
                    packet = conn.read_packet()
                    packets.append(packet)
                    if packet[0] == 0xFE and len(packet) < 0xFFFFFF and len(packets) > 2:
                        break
            out.append((sql, b"|".join(packets).replace(db.encode(), b"D" * len(db))))
        return out
    finally:
        conn.close()


def _held(mysql_server) -> list[str]:
    # Hold names are "<op>_<i>_<table>": the tables each op took out of ``db``'s statements.
    rows = mysql_server.query(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s", (HOLD_SCHEMA,))
    return sorted(r[0] for r in rows)


def test_client_sees_what_the_server_answers(mysql_server, make_proxy, twin):
    direct_db, proxied_db = twin
    server = mysql_server
    service = make_proxy(hold_ddl=True)
    before = set(_held(server))
    direct = _answers(server.host, server.port, server.user, server.password, direct_db)
    proxied = _answers("127.0.0.1", service.port, server.user, server.password, proxied_db)
    for (sql, want), (_, got) in zip(direct, proxied, strict=True):
        assert got == want, f"{sql}: proxy {got!r} != server {want!r}"
    # Each table the scenario dropped or truncated for real is held through the proxy.
    new = sorted(set(_held(server)) - before)
    held_tables = sorted(name.split("_", 2)[2] for name in new)
    assert held_tables == ["a", "a2", "a3", "s", "t", "t2"]
    # The held rows are all there.
    by_table = {name.split("_", 2)[2]: name for name in new}
    assert server.query(f"SELECT * FROM `{HOLD_SCHEMA}`.`{by_table['s']}`") == [(7,)]
    assert server.query(f"SELECT id, v FROM `{HOLD_SCHEMA}`.`{by_table['t']}` ORDER BY id") == [(1, 1), (2, 2), (3, 3)]
    for name in new:
        server.query(f"DROP TABLE `{HOLD_SCHEMA}`.`{name}`")


def test_referenced_parents_with_foreign_key_checks_off_answer_as_the_server_does(mysql_server, make_proxy, twin):
    """Held, and the children's keys name the parent as after the server's own DROP/TRUNCATE
    (not the hold schema, where InnoDB's RENAME would have taken them)."""
    server = mysql_server
    service = make_proxy(hold_ddl=True)
    before = set(_held(server))
    direct = _answers(server.host, server.port, server.user, server.password, twin[0], FK_OFF_SETUP, FK_OFF_SCENARIO)
    proxied = _answers("127.0.0.1", service.port, server.user, server.password, twin[1], FK_OFF_SETUP,
                       FK_OFF_SCENARIO)
    for (sql, want), (_, got) in zip(direct, proxied, strict=True):
        assert got == want, f"{sql}: proxy {got!r} != server {want!r}"
    new = sorted(set(_held(server)) - before)
    assert sorted(name.split("_", 2)[2] for name in new) == ["p", "p", "q"]
    assert not server.query("SELECT TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE "
                            "UNIQUE_CONSTRAINT_SCHEMA = %s AND CONSTRAINT_SCHEMA <> %s", (HOLD_SCHEMA, HOLD_SCHEMA))



# With foreign_key_checks on, MariaDB drops the listed tables in order and refuses each one some
# table still there references: a parent listed before its child is refused (1451) and kept,
# though the child goes after it; listed after its child, it goes too.
IN_ORDER_SETUP = [
    "CREATE TABLE p (id INT PRIMARY KEY)",
    "CREATE TABLE c (id INT PRIMARY KEY, pid INT, CONSTRAINT c_p FOREIGN KEY (pid) REFERENCES p (id))",
    "CREATE TABLE q (id INT PRIMARY KEY)",
    "CREATE TABLE d (id INT PRIMARY KEY, qid INT, CONSTRAINT d_q FOREIGN KEY (qid) REFERENCES q (id))",
    "INSERT INTO p VALUES (1)", "INSERT INTO c VALUES (10, 1)",
]
IN_ORDER_SCENARIO = ["DROP TABLE p, c", "SHOW TABLES", "DROP TABLE d, q", "SHOW TABLES", "SELECT * FROM p"]


def test_parent_dropped_before_its_child_in_one_statement_is_refused_as_the_server_does(mysql_server, make_proxy,
                                                                                        twin):
    """``DROP TABLE p, c`` with the checks on: the server keeps p (1451) and drops c; the proxy
    counted only keys from tables outside the statement, and held both."""
    server = mysql_server
    service = make_proxy(hold_ddl=True)
    direct = _answers(server.host, server.port, server.user, server.password, twin[0], IN_ORDER_SETUP,
                      IN_ORDER_SCENARIO)
    proxied = _answers("127.0.0.1", service.port, server.user, server.password, twin[1], IN_ORDER_SETUP,
                       IN_ORDER_SCENARIO)
    for (sql, want), (_, got) in zip(direct, proxied, strict=True):
        assert got == want, f"{sql}: proxy {got!r} != server {want!r}"

def test_held_table_constrains_nothing_and_loses_triggers(mysql_server, make_proxy, database):
    service = make_proxy(hold_ddl=True)
    with service_conn(service, mysql_server, database) as cur:
        cur.execute("CREATE TABLE parent (id INT PRIMARY KEY)")
        cur.execute("CREATE TABLE child (id INT PRIMARY KEY, pid INT, CONSTRAINT fk_p FOREIGN KEY (pid) "
                    "REFERENCES parent (id) ON DELETE CASCADE)")
        cur.execute("CREATE TRIGGER child_bi BEFORE INSERT ON child FOR EACH ROW SET NEW.pid = NEW.pid")
        cur.execute("INSERT INTO parent VALUES (1)")
        cur.execute("INSERT INTO child VALUES (1, 1)")
        cur.execute("DROP TABLE child")
        # The parent's rows may go: the held child neither refuses nor cascades.
        cur.execute("DELETE FROM parent")
        cur.execute("DROP TABLE parent")
        cur.execute("SHOW TABLES")
        assert cur.fetchall() == ()
    held = mysql_server.query(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME LIKE %s",
        (HOLD_SCHEMA, "%_child"))
    name = held[-1][0]
    assert mysql_server.query(f"SELECT * FROM `{HOLD_SCHEMA}`.`{name}`") == [(1, 1)]
    assert mysql_server.query("SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS "
                              "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s", (HOLD_SCHEMA, name)) == [(0,)]
    assert mysql_server.query("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
                              (database,)) == [(0,)]


class service_conn:
    """A PyMySQL cursor through the proxy, in ``database``."""

    def __init__(self, service, server, database: str):
        import pymysql

        self.conn = pymysql.connect(host="127.0.0.1", port=service.port, user=server.user,
                                    password=server.password, database=database, autocommit=True)

    def __enter__(self):
        return self.conn.cursor()

    def __exit__(self, *exc) -> None:
        self.conn.close()


def test_drop_database_answers_as_the_server_does(mysql_server, make_proxy, twin):
    service = make_proxy(hold_ddl=True)
    server = mysql_server
    answers = []
    for db, port in ((twin[0], server.port), (twin[1], service.port)):
        for sql in ("CREATE TABLE a (id INT PRIMARY KEY)", "CREATE TABLE b (id INT PRIMARY KEY)",
                    "CREATE VIEW v AS SELECT * FROM a", "CREATE PROCEDURE p() SELECT 1"):
            server.query(sql, database=db)
        conn = RawConnection(server.host if port == server.port else "127.0.0.1", port)
        try:
            conn.login(server.user, server.password, None)
            got = []
            for sql in (f"DROP DATABASE `{db}`", f"DROP DATABASE IF EXISTS `{db}`", "SHOW WARNINGS",
                        f"DROP DATABASE `{db}`"):
                conn.send_command(COM_QUERY, sql.encode())
                packets = [conn.read_packet()]
                while packets[0][0] not in (0x00, 0xFF) and not (packets[-1][0] == 0xFE and len(packets) > 2):
                    packets.append(conn.read_packet())
                got.append(b"|".join(packets).replace(db.encode(), b"D" * len(db)))
            answers.append(got)
        finally:
            conn.close()
    assert answers[0] == answers[1]
    held = server.query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                        "AND (TABLE_NAME LIKE %s OR TABLE_NAME LIKE %s)", (HOLD_SCHEMA, "%\\_0\\_a", "%\\_1\\_b"))
    assert len(held) >= 2  # the proxied schema's tables are held
    server.query(f"CREATE DATABASE `{twin[0]}`")  # for the fixture's clean-up
    server.query(f"CREATE DATABASE `{twin[1]}`")


SCRIPTS = [
    "DROP TABLE IF EXISTS a; CREATE TABLE a (id INT PRIMARY KEY); INSERT INTO a VALUES (1), (2); SELECT * FROM a",
    "DROP TABLE missing; SELECT 1",
    "TRUNCATE t; SELECT COUNT(*) FROM t; DROP TABLE IF EXISTS nothing",
    "SHOW WARNINGS",
    "DROP TABLE a, t; SHOW TABLES",
]


def _script_answers(host: str, port: int, server, db: str, deprecate_eof: bool) -> list[bytes]:
    conn = RawConnection(host, port)
    try:
        conn.login(server.user, server.password, db, deprecate_eof=deprecate_eof)
        for sql in ("CREATE TABLE a (id INT PRIMARY KEY)", "CREATE TABLE t (id INT PRIMARY KEY)",
                    "INSERT INTO t VALUES (5)"):
            conn.query(sql)
        return raw_script_answers(conn, SCRIPTS, db)
    finally:
        conn.close()


@pytest.mark.parametrize("deprecate_eof", [True, False])
def test_multi_statement_scripts_answer_as_the_server_does(mysql_server, make_proxy, twin, deprecate_eof):
    server = mysql_server
    service = make_proxy(hold_ddl=True)
    before = set(_held(server))
    direct = _script_answers(server.host, server.port, server, twin[0], deprecate_eof)
    proxied = _script_answers("127.0.0.1", service.port, server, twin[1], deprecate_eof)
    for script, want, got in zip(SCRIPTS, direct, proxied, strict=True):
        assert got == want, f"{script}: proxy {got!r} != server {want!r}"
    new = sorted(name.split("_", 2)[2] for name in set(_held(server)) - before)
    assert new == ["a", "a", "t", "t"]  # DROP a (script 1), TRUNCATE t, DROP a, t (script 5)


def test_a_user_without_rights_on_the_hold_schema_drops_for_real(mysql_server, make_proxy, database):
    """The hold runs with the client's own privileges: RENAME into auroratrack_hold needs CREATE
    and INSERT there. Without them the statement runs as sent (and a backtrack over it reports
    DDL it cannot undo); with them the table is held."""
    import pymysql

    service = make_proxy(hold_ddl=True)
    user = f"u{database[-8:]}"
    mysql_server.query(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
    try:
        mysql_server.query(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
        conn = pymysql.connect(host="127.0.0.1", port=service.port, user=user, password="pw",
                               database=database, autocommit=True)
        before = set(_held(mysql_server))
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE a (id INT PRIMARY KEY)")
            cur.execute("CREATE TABLE b (id INT PRIMARY KEY)")
            assert cur.execute("DROP TABLE a") == 0
            cur.execute("SHOW TABLES")
            assert cur.fetchall() == (("b",),)
        assert set(_held(mysql_server)) == before  # dropped for real
        mysql_server.query(f"GRANT CREATE, INSERT ON `{HOLD_SCHEMA}`.* TO '{user}'@'%'")
        with conn.cursor() as cur:
            cur.execute("DROP TABLE b")
        assert [n.split("_", 2)[2] for n in set(_held(mysql_server)) - before] == ["b"]
        conn.close()
    finally:
        mysql_server.query(f"DROP USER '{user}'@'%'")


def test_drop_sent_while_the_gate_is_closed_waits_then_is_held(mysql_server, make_proxy, database):
    """A DROP that arrives during a pause waits like any command (it does not count as busy for
    the drain) and is held once the gate opens, not run for real."""
    import threading

    service = make_proxy(hold_ddl=True, hold_timeout=30)
    mysql_server.query("CREATE TABLE t (id INT PRIMARY KEY)", database=database)
    before = set(_held(mysql_server))
    with service_conn(service, mysql_server, database) as cur:
        service.call_soon(service.gate.pause)
        done = threading.Event()
        threading.Thread(target=lambda: (cur.execute("DROP TABLE t"), done.set()), daemon=True).start()
        time.sleep(0.5)
        assert not done.is_set()
        assert mysql_server.query(f"SHOW TABLES FROM `{database}`") == [("t",)]  # nothing ran yet
        busy = service.call_soon(lambda: [s.busy for s in service.service.proxy.sessions.values()])
        assert busy == [False]  # a drain would not wait for it
        service.call_soon(service.gate.resume)
        assert done.wait(10)
    assert mysql_server.query(f"SHOW TABLES FROM `{database}`") == []
    assert [n.split("_", 2)[2] for n in set(_held(mysql_server)) - before] == ["t"]
