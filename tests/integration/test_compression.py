"""Protocol compression (CLIENT_COMPRESS) through the proxy: real clients, the real server.

Clients that compress (mysql-connector-python pure and C extension, the mariadb command-line
client with ``--compress``) run the shared client script of tests/clients/clientscript.py
through the proxy (result sets, prepared statements, a 20 MiB BLOB both ways, multi-statements,
LOAD DATA LOCAL, an error); the server must say ``Compression ON`` for their sessions, and the
proxy's tracker must follow them (idle / in transaction after each step, the gate holding,
dropping and releasing their commands). A malformed compressed packet ends its session only.
PyMySQL does not compress (``compress`` raises NotImplementedError), so it is not among them.
"""

from __future__ import annotations

import subprocess

import mysql.connector
import pytest

from tests.clients import external, mariadbcli
from tests.clients.clientscript import comparable_all, expected, infile_text, steps_for
from tests.clients.pyclients import ADAPTERS, Target, run_script
from tests.integration.test_clients import (
    SessionProbe,
    assert_server_state,
    expected_probe,
    proxy_counters,
    wait_sessions_closed,
)

pytestmark = pytest.mark.timeout(180)


def compressed_sessions(proxy) -> int:
    relay = proxy.service.proxy
    return proxy.call_soon(lambda: relay.compressed_sessions)


def connect(port: int, server, database: str | None = None, **kwargs):
    """mysql-connector (pure Python) with protocol compression."""
    kwargs.setdefault("autocommit", True)
    return mysql.connector.connect(host="127.0.0.1", port=port, user=server.user,
                                   password=server.password, database=database, compress=True,
                                   use_pure=True, **kwargs)


def status_compression(conn) -> str:
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS LIKE 'Compression'")
    (row,) = cur.fetchall()
    cur.close()
    return row[1]


@pytest.mark.parametrize("client", ["connector-pure-compressed", "connector-cext-compressed",
                                    "mariadb-cli --compress"])
def test_compressed_client_runs_the_script(client, proxy, mysql_server, database, tmp_path):
    infile = tmp_path / "infile.csv"
    infile.write_text(infile_text(), encoding="utf-8")
    target = Target("127.0.0.1", proxy.port, mysql_server.user, mysql_server.password, database)
    steps = steps_for(str(infile))
    probe = SessionProbe(proxy, database)
    sessions_before, errors_before = proxy_counters(proxy)
    compressed_before = compressed_sessions(proxy)

    if client == "connector-pure-compressed":
        observed = run_script(ADAPTERS[client](target), steps, probe)
        log = ""
    elif client == "connector-cext-compressed":
        run = external.run_python_process(client, target, steps, tmp_path)
        observed, log = run.observed, run.log
    else:
        if mariadbcli.client_binary() is None:
            pytest.skip("neither mariadb nor mysql (the command-line client) is on PATH")
        run = mariadbcli.run_cli(target, steps, options=("--compress",))
        observed, log = run.observed, run.log

    assert comparable_all(steps, observed) == expected(), log
    assert_server_state(mysql_server, database)
    sessions_after, errors_after = proxy_counters(proxy)
    assert sessions_after > sessions_before, "the client did not go through the proxy"
    assert errors_after == errors_before, "the proxy ended a session with a protocol error"
    assert compressed_sessions(proxy) - compressed_before == sessions_after - sessions_before
    if client == "connector-pure-compressed":
        assert probe.seen == expected_probe(client, steps)
    assert wait_sessions_closed(probe) == [], "the client left, its proxy session did not"


def test_session_status_says_compression_on(proxy, mysql_server):
    with connect(proxy.port, mysql_server) as conn:
        assert status_compression(conn) == "ON"
    if (binary := mariadbcli.client_binary()) is not None:
        out = subprocess.run(
            [binary, "--no-defaults", "--skip-ssl", "-h127.0.0.1", f"-P{proxy.port}",
             f"-u{mysql_server.user}", f"-p{mysql_server.password}", "--compress", "-N", "-e",
             "SHOW SESSION STATUS LIKE 'Compression'"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
        assert out.split() == ["Compression", "ON"]
    # A client that does not ask gets a plain session, as before.
    with mysql.connector.connect(host="127.0.0.1", port=proxy.port, user=mysql_server.user,
                                 password=mysql_server.password, use_pure=True) as conn:
        assert status_compression(conn) == "OFF"
