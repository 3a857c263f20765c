"""MariaDB's extended capabilities through the real proxy: PROGRESS, STMT_BULK_OPERATIONS and
CACHE_METADATA are offered as the server offers them, and what each changes in a response
reaches the client intact: bulk ``executemany`` (MariaDB Connector/Python and Connector/C), the
progress reports of a long ALTER TABLE, result sets whose column definitions are skipped.
Everything is compared with the same client connected directly.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from types import SimpleNamespace

import pytest

from proxy import wire
from tests.integration import rawmysql as raw
from tests.integration.test_protocol import (
    assert_idle,
    mariadb_child,  # noqa: F401  (fixture)
)

PROGRESS = wire.Capability.MARIADB_CLIENT_PROGRESS
STMT_BULK = wire.Capability.MARIADB_CLIENT_STMT_BULK_OPERATIONS
CACHE_METADATA = wire.Capability.MARIADB_CLIENT_CACHE_METADATA
RELAYED = PROGRESS | STMT_BULK | CACHE_METADATA


class MariaDBRawConnection(raw.RawConnection):
    """The raw client, asking for MariaDB extended capabilities: no CLIENT_LONG_PASSWORD, the
    extended flags in the last 4 bytes of the handshake response's filler."""

    def __init__(self, host: str, port: int, extended: int, timeout: float = 60.0):
        super().__init__(host, port, timeout)
        self.extended = extended

    def handshake_response(self, user: str, auth: bytes, database: str | None,
                           capabilities: int) -> bytes:
        out = super().handshake_response(user, auth, database,
                                         capabilities & ~raw.CLIENT_LONG_PASSWORD)
        return out[:28] + struct.pack("<I", self.extended >> 32) + out[32:]


def raw_mariadb(port: int, server, database: str | None, extended: int,
                deprecate_eof: bool = True) -> MariaDBRawConnection:
    conn = MariaDBRawConnection("127.0.0.1", port, extended)
    conn.login(server.user, server.password, database, deprecate_eof=deprecate_eof)
    return conn


def targets(proxy, mysql_server):
    return (("direct", SimpleNamespace(port=mysql_server.port)), ("proxy", proxy))


def test_extended_capabilities_are_offered_as_the_server_offers_them(proxy, mysql_server):
    offered = {}
    for name, target in targets(proxy, mysql_server):
        with raw.RawConnection("127.0.0.1", target.port) as conn:
            conn.read_handshake()
            offered[name] = wire.parse_initial_handshake(conn.handshake_payload).capabilities
    assert offered["direct"] & RELAYED == RELAYED  # MariaDB 10.11 offers all three
    assert offered["proxy"] >> 32 == offered["direct"] >> 32


EXECUTEMANY = """
cur = conn.cursor()
cur.execute("CREATE TABLE {table} (id INT PRIMARY KEY, v VARCHAR(40), n DOUBLE NULL, d DATE)")
cur.execute("SHOW SESSION STATUS LIKE 'Com_stmt_execute'")
before = int(cur.fetchone()[1])
rows = [(i, f"value {{i}}", None if i % 3 else i / 7, f"2026-01-{{i % 28 + 1:02d}}")
        for i in range({count})]
cur.executemany("INSERT INTO {table} VALUES (?, ?, ?, ?)", rows)
inserted = cur.rowcount
cur.execute("SHOW SESSION STATUS LIKE 'Com_stmt_execute'")
executes = int(cur.fetchone()[1]) - before
cur.executemany("UPDATE {table} SET v = ? WHERE id = ?", [("changed", i) for i in range(0, {count}, 10)])
updated = cur.rowcount
try:
    cur.executemany("INSERT INTO {table} VALUES (?, ?, ?, ?)", [(1, "dup", None, None)] * 2)
    duplicate = None
except mariadb.Error as exc:
    duplicate = exc.errno
cur.execute("SELECT id, v, n, d FROM {table} ORDER BY id")
result = [inserted, updated, duplicate, executes, [list(map(str, r)) for r in cur.fetchall()]]
"""


def test_executemany_bulk_same_rows_as_direct(proxy, mysql_server, database, mariadb_child):  # noqa: F811
    outcome = {}
    for name, target in targets(proxy, mysql_server):
        cid = mariadb_child.connect(target, mysql_server, database)
        outcome[name] = mariadb_child.run(EXECUTEMANY.format(table=f"bulk_{name}", count=1000))
        if name == "proxy":
            assert_idle(proxy, cid)
        mariadb_child.works()
        mariadb_child.run("conn.close()")
    assert outcome["proxy"] == outcome["direct"]
    inserted, updated, duplicate, executes, rows = outcome["proxy"]
    assert (inserted, updated, duplicate, len(rows)) == (1000, 100, 1062, 1000)
    # Bulk: a handful of executions for 1,000 rows (one per row without it).
    assert executes < 10, executes


CLIENT_TEST_CASES = [
    "test_bulk_autoinc", "test_bulk_delete", "test_bulk_replace", "test_bulk_insert_returning",
    "test_bulk_delete_returning", "test_mdev_34718_bu", "test_mdev_34718_au",
    "test_mdev_34718_bd", "test_mdev_34718_ad", "test_mdev_34958", "test_mdev35953",
    "test_mdev_24411", "test_mdev_32086", "test_progress_reporting", "test_cache_metadata",
]


def test_mariadb_client_test_cases(proxy, mysql_server, database):
    """MariaDB's own Connector/C tests of these capabilities, through the proxy (they failed
    with "Server doesn't support function 'Bulk operation'", no progress, wrong metadata)."""
    binary = shutil.which("mariadb-client-test")
    if binary is None:
        pytest.skip("mariadb-client-test is not installed (Debian package mariadb-test)")
    run = subprocess.run(
        [binary, "-h127.0.0.1", f"-P{proxy.port}", f"-u{mysql_server.user}",
         f"-p{mysql_server.password}", f"-D{database}", "-s", *CLIENT_TEST_CASES],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout[-3000:], run.stderr[-3000:])


def read_with_progress(conn: raw.RawConnection) -> tuple[list[bytes], bytes]:
    """(progress reports, final packet) of the answer to the command just sent."""
    reports = []
    while True:
        payload = conn.read_packet()
        if payload[:3] == b"\xff\xff\xff":
            reports.append(payload)
            continue
        return reports, payload


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate_eof", "eof"])
def test_progress_reports_of_a_long_alter_reach_a_client_that_asked(proxy, mysql_server,
                                                                    database, deprecate_eof):
    mysql_server.query("CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(60))", database=database)
    mysql_server.query("INSERT INTO big SELECT seq, REPEAT('p', 50) FROM seq_1_to_600000",
                       database=database)
    with raw_mariadb(proxy.port, mysql_server, database, PROGRESS, deprecate_eof) as conn:
        conn.query("SET SESSION progress_report_time = 1")
        conn.query("SET SESSION alter_algorithm = COPY")  # a copy: slow enough to report on
        conn.send_command(raw.COM_QUERY, b"ALTER TABLE big ADD COLUMN w INT; SELECT 'after'")
        reports, final = read_with_progress(conn)
        assert final[0] == 0x00, final
        conn.parse_ok(final)
        assert conn.status & raw.SERVER_MORE_RESULTS_EXISTS
        assert [r.rows for r in [conn.read_result()]] == [[b"\x05after"]]
        assert_idle(proxy, conn.connection_id)
        raw_works_after = conn.query("SELECT COUNT(*) FROM big")
        assert raw_works_after[0].rows == [b"\x06600000"]
    assert reports, "no progress report reached the client"
    stage, max_stage = reports[0][4], reports[0][5]
    assert 1 <= stage <= max_stage
    assert b"copy to tmp table" in b"".join(reports)


def execute_rows(conn: raw.RawConnection, sid: int, param: bytes) -> tuple[int, list[bytes]]:
    """COM_STMT_EXECUTE read by hand with CACHE_METADATA: (metadata-follows byte, rows)."""
    body = struct.pack("<IBI", sid, 0, 1) + b"\x00\x01\xfe\x00" + raw.lenenc(len(param)) + param
    conn.send_command(raw.COM_STMT_EXECUTE, body)
    head = conn.read_packet()
    columns, pos = raw.read_lenenc(head, 0)
    follows = head[pos]
    if follows:
        conn.read_column_definitions(columns)
    elif not conn.deprecate_eof:
        assert conn.read_packet()[0] == 0xFE  # the EOF after the definitions not sent
    return follows, conn.read_rows(columns).rows


@pytest.mark.parametrize("deprecate_eof", [True, False], ids=["deprecate_eof", "eof"])
def test_cached_metadata_same_results_as_direct(proxy, mysql_server, database, deprecate_eof):
    mysql_server.query("CREATE TABLE m (id INT PRIMARY KEY, v VARCHAR(10))", database=database)
    mysql_server.query("INSERT INTO m SELECT seq, CONCAT('m', seq) FROM seq_1_to_50",
                       database=database)
    got = {}
    for name, target in targets(proxy, mysql_server):
        with raw_mariadb(target.port, mysql_server, database, CACHE_METADATA,
                         deprecate_eof) as conn:
            sid, _, _ = conn.prepare("SELECT id, v FROM m WHERE id <= ? ORDER BY id")
            got[name] = [execute_rows(conn, sid, str(k).encode()) for k in (3, 0, 50, 2)]
            if name == "proxy":
                assert_idle(proxy, conn.connection_id)
            assert conn.query("SELECT 'text'")[0].rows == [b"\x04text"]
    assert got["proxy"] == got["direct"]
    # The definitions came with the prepare: every execution skips them.
    assert [follows for follows, _ in got["proxy"]] == [0, 0, 0, 0]
    assert [len(rows) for _, rows in got["proxy"]] == [3, 0, 50, 2]


def test_prepared_statements_connector_c_with_cached_metadata(proxy, mysql_server, database,
                                                              mariadb_child):  # noqa: F811
    """Connector/C asks for CACHE_METADATA itself: the same prepared statement run again and
    again gets the same results through the proxy as directly."""
    mysql_server.query("CREATE TABLE c (id INT PRIMARY KEY, v VARCHAR(10), x DECIMAL(6,2))",
                       database=database)
    mysql_server.query("INSERT INTO c SELECT seq, CONCAT('c', seq), seq / 4 FROM seq_1_to_30",
                       database=database)
    code = ("cur = conn.cursor(prepared=True)\n"
            "result = []\n"
            "for k in (5, 1, 30, 0, 7):\n"
            "    cur.execute('SELECT id, v, x FROM c WHERE id <= ? ORDER BY id', (k,))\n"
            "    result.append([list(map(str, r)) for r in cur.fetchall()])\n")
    got = {}
    for name, target in targets(proxy, mysql_server):
        cid = mariadb_child.connect(target, mysql_server, database)
        got[name] = mariadb_child.run(code)
        if name == "proxy":
            assert_idle(proxy, cid)
        mariadb_child.run("conn.close()")
    assert got["proxy"] == got["direct"]
    assert [len(r) for r in got["proxy"]] == [5, 1, 30, 0, 7]
