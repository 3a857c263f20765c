"""Capture comes back by itself, and says loudly while it is down.

Through a real serve (proxy, streamer process, admin API) on the session's server: the streamer
process is killed with SIGKILL, or its replication connection is killed from SQL while its
account is locked (so the outage lasts long enough to be seen). Either way the status says
``capture_down`` and /metrics ``auroratrack_capture_up 0`` while it lasts, the log says so, and
afterwards every write made before, during and after the outage is in the store exactly once,
with no gap.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid

import pytest
from click.testing import CliRunner

from proxy.adminclient import AdminClient
from proxy.backtrack import BacktrackRefused, BacktrackRequest
from proxy.changelog.store import ChangeStore
from proxy.cli import main
from proxy.serveradmin import UpstreamCredentials
from tests.integration.backtrack_support import capturing_service, connect_via, wait_captured


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _insert(svc, server, database: str, ids: range) -> None:
    with connect_via(svc, server, database) as client, client.cursor() as cur:
        for i in ids:
            cur.execute(f"INSERT INTO t VALUES ({i}, 'row {i}')")


def _assert_each_insert_stored_once(svc, database: str, ids: range) -> None:
    store = ChangeStore(svc.service.config.store_path, readonly=True)
    try:
        assert store.gaps() == []
        ours = [t for t in store.transactions() if f"{database}.t" in t.tables]
        gtids = [t.gtid for t in ours]
        assert len(gtids) == len(set(gtids))  # no duplicate
        statements = sorted(s for t in ours for s in t.statements if s.startswith("INSERT"))
        assert statements == sorted(f"INSERT INTO t VALUES ({i}, 'row {i}')" for i in ids)  # no gap
        assert all(t.n_changes == 1 for t in ours)
    finally:
        store.close()


def _outage_seen(admin: AdminClient, want_state: str) -> dict:
    status = admin.get("/v1/status")
    if status["state"] != "capture_down":
        return {}
    assert status["streamer"]["up"] is False and status["streamer"]["down_since"]
    assert status["streamer"]["status"] == want_state
    assert _metric(admin.get_text("/metrics"), "auroratrack_capture_up") == 0
    return status


def _back_up(admin: AdminClient) -> dict:
    status = admin.get("/v1/status")
    return status if status["state"] == "available" and status["streamer"]["up"] else {}


def test_sigkilled_streamer_is_restarted_from_its_checkpoint(make_proxy, tmp_path, mysql_server, database, caplog):
    caplog.set_level(logging.WARNING)
    # A first backoff long enough for the outage to be watched.
    svc = capturing_service(make_proxy, tmp_path / "data", capture_restart_backoff_s=3.0)
    admin = AdminClient.from_data_dir(tmp_path / "data")
    with connect_via(svc, mysql_server, database) as client, client.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    _insert(svc, mysql_server, database, range(0, 20))
    wait_captured(svc, mysql_server)
    assert _metric(admin.get_text("/metrics"), "auroratrack_capture_up") == 1
    first = svc.service.streamer_process.pid

    os.kill(first, signal.SIGKILL)
    _insert(svc, mysql_server, database, range(20, 40))  # the proxy goes on relaying meanwhile
    status = _wait(lambda: _outage_seen(admin, "restarting"), 10, "status to show the outage")
    assert "exited" in status["streamer"]["last_error"]
    shown = CliRunner().invoke(main, ["status", "--data-dir", str(tmp_path / "data")], catch_exceptions=False)
    assert "capture_down" in shown.stdout and "the backtrack window is not growing" in " ".join(shown.stdout.split())

    _wait(lambda: _back_up(admin), 60, "capture to come back")
    _insert(svc, mysql_server, database, range(40, 60))
    wait_captured(svc, mysql_server)
    assert svc.service.streamer_process.pid != first
    metrics = admin.get_text("/metrics")
    assert _metric(metrics, "auroratrack_capture_up") == 1
    assert _metric(metrics, "auroratrack_capture_restarts_total") == 1
    _assert_each_insert_stored_once(svc, database, range(0, 60))
    logged = caplog.text
    assert "capture is DOWN" in logged and "backtrack window is not growing" in logged
    assert "capture is back" in logged


@pytest.fixture
def capture_user(mysql_server):
    """A server account of auroratrack's own, so that it alone can be locked out."""
    name, password = f"cap_{uuid.uuid4().hex[:8]}", "cap_pw"
    mysql_server.query(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'")
    mysql_server.query(f"GRANT ALL PRIVILEGES ON *.* TO '{name}'@'%'")
    yield UpstreamCredentials(mysql_server.host, mysql_server.port, name, password)
    mysql_server.query(f"DROP USER IF EXISTS '{name}'@'%'")


def test_killed_replication_connection_reconnects_by_itself(make_proxy, tmp_path, mysql_server, database,
                                                            capture_user, caplog):
    caplog.set_level(logging.WARNING)
    svc = capturing_service(make_proxy, tmp_path / "data", upstream=capture_user)
    admin = AdminClient.from_data_dir(tmp_path / "data")
    with connect_via(svc, mysql_server, database) as client, client.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
    _insert(svc, mysql_server, database, range(0, 20))
    wait_captured(svc, mysql_server)
    pid = svc.service.streamer_process.pid

    user = capture_user.user
    mysql_server.query(f"ALTER USER '{user}'@'%' ACCOUNT LOCK")  # it cannot reconnect until unlocked
    try:
        dump = mysql_server.query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s "
                                  "AND COMMAND LIKE 'Binlog Dump%%'", (user,))
        assert len(dump) == 1
        mysql_server.query(f"KILL CONNECTION {dump[0][0]}")
        _insert(svc, mysql_server, database, range(20, 40))
        status = _wait(lambda: _outage_seen(admin, "reconnecting"), 15, "status to show the outage")
        assert status["streamer"]["last_error"]
        time.sleep(1.0)  # an outage that lasts: still down, still said
        assert _outage_seen(admin, "reconnecting")
        # a backtrack cannot catch up with the server now: refused before anything is paused
        with pytest.raises(BacktrackRefused, match="capture is down"):
            svc.call(lambda: svc.service.backtracker.request(BacktrackRequest(to="-1s")))
    finally:
        mysql_server.query(f"ALTER USER '{user}'@'%' ACCOUNT UNLOCK")

    _wait(lambda: _back_up(admin), 30, "capture to come back")
    _insert(svc, mysql_server, database, range(40, 60))
    wait_captured(svc, mysql_server)
    assert svc.service.streamer_process.pid == pid  # the same process reconnected
    metrics = admin.get_text("/metrics")
    assert _metric(metrics, "auroratrack_capture_up") == 1
    assert _metric(metrics, "auroratrack_capture_reconnects_total") >= 1
    assert _metric(metrics, "auroratrack_capture_restarts_total") == 0
    _assert_each_insert_stored_once(svc, database, range(0, 60))
    assert "capture is DOWN" in caplog.text
