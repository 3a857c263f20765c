"""A serve process killed with SIGKILL in the middle of applying a backtrack: the server rolls
the transaction back (the data is unchanged), the record is `failed` after the restart, and the
read_only fence the dead process left is lifted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.adminclient import AdminClient, AdminUnavailable
from tests.integration.backtrack_support import fingerprint, now_iso
from tests.integration.streamer_support import wait_caught_up_dir


def start_serve(server, data_dir: Path, env: dict | None = None) -> subprocess.Popen:
    """``auroratrack serve`` as its own process (``env``: extra variables, e.g. test pause points)."""
    password_file = data_dir.parent / "password"
    password_file.write_text(server.password)
    log = open(data_dir.parent / "serve.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--upstream", f"{server.host}:{server.port}",
         "--user", server.user, "--password-file", str(password_file), "--listen", "127.0.0.1:0",
         "--admin", "127.0.0.1:0", "--data-dir", str(data_dir), "--backtrack-window", "1h",
         "--no-backfill"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )


def admin_client(data_dir: Path, process: subprocess.Popen, timeout: float = 30.0) -> AdminClient:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (data_dir.parent / "serve.log").read_text()[-3000:]
        try:
            client = AdminClient.from_data_dir(data_dir)
            client.get("/v1/status")
            return client
        except AdminUnavailable:
            time.sleep(0.1)
    raise AssertionError("serve did not start")


def test_sigkill_during_apply_leaves_data_unchanged_and_record_failed(mysql_server, database, tmp_path):
    if mysql_server.private is None:
        pytest.skip("needs the server's binlog position helpers of a private server")
    data_dir = tmp_path / "data"
    serve = start_serve(mysql_server, data_dir)
    try:
        client = admin_client(data_dir, serve)
        with mysql_server.connect(database) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE big (id INT PRIMARY KEY, k INT, c CHAR(120))")
            cur.execute("INSERT INTO big SELECT seq, seq, SHA2(seq, 256) FROM seq_1_to_300000")
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        moment = now_iso()
        with mysql_server.connect(database) as conn, conn.cursor() as cur:
            cur.execute("UPDATE big SET k = k + 1, c = REVERSE(c)")
        wait_caught_up_dir(mysql_server.private, data_dir / "changes.db")
        mistaken = fingerprint(mysql_server, database)

        # Forced: the whole undo is written in the pause (a backtrack that is not forced writes
        # it before the pause and its apply step lasts only milliseconds; test_backtrack_early
        # kills serve during those early writes).
        record = client.post("/v1/backtracks", {"to": moment, "force": True})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            steps = client.get(f"/v1/backtracks/{record['id']}")["steps"]
            if steps and steps[-1]["name"] == "apply":
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the backtrack never reached its apply step")
        time.sleep(0.5)  # well inside the apply of 300,000 rows
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)

        assert fingerprint(mysql_server, database) == mistaken  # the server rolled it back
        serve = start_serve(mysql_server, data_dir)
        client = admin_client(data_dir, serve)
        after = client.get(f"/v1/backtracks/{record['id']}")
        assert after["status"] == "failed" and "stopped during the backtrack" in after["error"]
        assert mysql_server.query("SELECT @@GLOBAL.read_only")[0][0] == 0
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(30)
