"""A session killed in the middle of a statement, through the real proxy and directly.

MariaDB's ``main.lock_kill``: a connection holding ``LOCK TABLE ... WRITE`` runs ``ALTER TABLE``
and is killed from another connection. The server closes that connection, with or without an ERR 1927
first (a race inside the server); without one, the client's library reports its own
lost-connection error. Through the proxy the client must see
the same: the proxy used to add an ERR with CR_SERVER_LOST (2013), a client-side error number
that MariaDB Connector/C rejects as "Received malformed packet".
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.integration import rawmysql as raw
from tests.integration.test_protocol import (
    mariadb_child,  # noqa: F401  (fixture)
    raw_login,
    wait_gone,
)

MARIADB_TESTS = Path("/usr/share/mysql/mysql-test")


def wait_running(mysql_server, connection_id: int, prefix: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = mysql_server.query(
            "SELECT /* auroratrack test */ COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE ID = %s AND INFO LIKE %s", (connection_id, prefix + "%"))
        if rows[0][0]:
            return
        time.sleep(0.01)
    raise AssertionError(f"connection {connection_id} never ran {prefix}")


def killed_during_alter_raw(target, mysql_server, database: str) -> str:
    """What a raw client reads after its ALTER TABLE under LOCK TABLE is killed."""
    mysql_server.query("CREATE OR REPLACE TABLE k (a INT) ENGINE=InnoDB", database=database)
    mysql_server.query("INSERT INTO k SELECT seq FROM seq_1_to_1000000", database=database)
    with raw_login(target, mysql_server, database) as conn:
        conn.query("LOCK TABLE k WRITE")
        conn.send_command(raw.COM_QUERY, b"ALTER TABLE k ADD COLUMN b INT, FORCE")
        wait_running(mysql_server, conn.connection_id, "ALTER TABLE k")
        mysql_server.query(f"KILL CONNECTION {conn.connection_id}")
        try:
            payload = conn.read_packet()
        except raw.ConnectionClosed:
            return "closed"
        if payload[0] == 0xFF:
            return f"ERR {raw.parse_err(payload)[0]}"
        return f"packet 0x{payload[0]:02x}"


def test_killed_alter_under_lock_tables_raw(proxy, mysql_server, database):
    # KILL shuts the victim's socket while the victim may still be writing its ERR 1927: which
    # of the two a client gets is a race inside the server, directly as through the proxy.
    for target in (SimpleNamespace(port=mysql_server.port), proxy):
        assert killed_during_alter_raw(target, mysql_server, database) in ("closed", "ERR 1927")


KILLED_ALTER = """
import threading
conn.cursor().execute("CREATE OR REPLACE TABLE k (a INT) ENGINE=InnoDB")
conn.cursor().execute("INSERT INTO k SELECT seq FROM seq_1_to_1000000")
conn.cursor().execute("LOCK TABLE k WRITE")
outcome = {}
def alter():
    try:
        conn.cursor().execute("ALTER TABLE k ADD COLUMN b INT, FORCE")
        outcome['error'] = None
    except mariadb.Error as exc:
        outcome['error'] = [exc.errno, str(exc)]
worker = threading.Thread(target=alter)
worker.start()
result = conn.connection_id
"""


def test_killed_alter_under_lock_tables_connector_c(proxy, mysql_server, database,
                                                    mariadb_child):  # noqa: F811
    """MariaDB Connector/C reports the server's lost connection, as directly (it said
    "Received malformed packet" through the proxy)."""
    errors = {}
    for name, target in (("direct", SimpleNamespace(port=mysql_server.port)), ("proxy", proxy)):
        mariadb_child.connect(target, mysql_server, database)
        cid = mariadb_child.run(KILLED_ALTER)
        wait_running(mysql_server, cid, "ALTER TABLE k")
        mysql_server.query(f"KILL CONNECTION {cid}")
        errors[name] = mariadb_child.run("worker.join(30)\nresult = outcome['error']")
        if name == "proxy":
            wait_gone(proxy, cid)
    for errno, message in errors.values():  # the same race as above, on both paths
        assert errno in (2013, 1927), errors
        assert "malformed" not in message


def test_mariadb_lock_kill(proxy, mysql_server, database, tmp_path):
    """MariaDB's own ``main.lock_kill`` test through the proxy, its connections pointed at the
    proxy, recording the same output as directly."""
    binary = shutil.which("mariadb-test")
    source = MARIADB_TESTS / "main" / "lock_kill.test"
    if binary is None or not source.exists():
        pytest.skip("needs mariadb-test and its main suite (Debian: mariadb-test, "
                    "mariadb-test-data)")
    outputs = {}
    for name, port in (("direct", mysql_server.port), ("proxy", proxy.port)):
        script = tmp_path / f"{name}.test"
        script.write_text(source.read_text().replace(
            "--connect (con1,localhost,root,,test)",
            f"--connect (con1,127.0.0.1,{mysql_server.user},{mysql_server.password},"
            f"{database},{port})"))
        result = tmp_path / f"{name}.result"
        run = subprocess.run(
            [binary, "--host=127.0.0.1", f"--port={port}", f"--user={mysql_server.user}",
             f"--password={mysql_server.password}", f"--database={database}",
             f"--basedir={MARIADB_TESTS}/", f"--tmpdir={tmp_path}", f"--test-file={script}",
             "--record", f"--result-file={result}"],
            capture_output=True, text=True, timeout=180, cwd=MARIADB_TESTS)
        assert run.returncode == 0, (name, run.stdout[-2000:], run.stderr[-2000:])
        outputs[name] = result.read_text().replace(str(port), "PORT")  # the echoed connect
    assert outputs["proxy"] == outputs["direct"]
