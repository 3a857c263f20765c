"""The admin API and the CLI's client commands against a real serve (proxy, streamer, store) on the
session's real server: run files and token, refusals without the token, status that reflects real
sessions and real captured changes, the CLI's JSON, and the backtrack routes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pymysql
import pytest
from click.testing import CliRunner

from proxy.adminclient import ADDRESS_FILE, TOKEN_FILE, AdminClient, AdminError, AdminUnavailable
from proxy.cli import main
from proxy.service import BackgroundService

STATUS_KEYS = {"state", "auroratrack_version", "pid", "upstream", "listen", "admin", "sessions", "capture",
               "store", "streamer", "last_backtrack", "capture_lag", "creation_rate_per_s", "held_tables",
               "tls"}
SESSION_KEYS = {"total", "idle", "busy", "held", "connecting", "in_transaction"}
STORE_KEYS = {"transactions", "change_records", "stored_bytes", "file_bytes", "evicted_transactions",
              "oldest_commit_time", "newest_commit_time", "earliest_backtrack_time",
              "earliest_backtrack_time_us", "target_window_s", "actual_window_s", "window_alert", "checkpoint",
              "gaps", "backfill"}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def raw_request(service, path: str, headers: dict[str, str] | None = None, method: str = "GET",
                body: bytes | None = None) -> tuple[int, dict]:
    """An HTTP request without AdminClient, to see exactly what the server answers."""
    host, port = service.service.admin_address
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=body, method=method,
                                     headers=headers or {})
    try:
        with NO_PROXY.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def bearer(data_dir: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(data_dir / TOKEN_FILE).read_text().strip()}"}


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def bare(make_proxy, tmp_path):
    """A serve without capture (starts fast); its admin API on a free port (conftest: admin_port=0)."""
    return make_proxy(data_dir=tmp_path / "bare")


@pytest.fixture
def captured(make_proxy, tmp_path):
    """A serve with the changelog streamer and store, once capture has begun (the streamer has
    recorded its start position: writes before that are not captured)."""
    service = make_proxy(data_dir=tmp_path / "captured", capture=True)
    client = AdminClient.from_data_dir(service.service.config.data_dir)
    assert wait_for(lambda: client.get("/v1/status")["store"]["checkpoint"]), "capture did not begin"
    return service


def connect(service, mysql_server, database: str | None = None, **kwargs) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=service.port, user=mysql_server.user,
                           password=mysql_server.password, database=database, autocommit=True, **kwargs)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# -- run files and the token ---------------------------------------------------------------------------
def test_run_files_say_where_serve_is_and_the_token_is_owner_only(bare):
    data_dir = bare.service.config.data_dir
    token_path = data_dir / TOKEN_FILE
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    assert len(token_path.read_text().strip()) >= 32
    address = json.loads((data_dir / ADDRESS_FILE).read_text())
    assert address == {"host": "127.0.0.1", "port": bare.service.admin_address[1], "pid": os.getpid()}
    assert address["port"] not in (0, 3308)  # admin_port=0 (conftest) picked a free one


def test_requests_without_the_right_token_are_refused(bare):
    data_dir = bare.service.config.data_dir
    token = (data_dir / TOKEN_FILE).read_text().strip()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"},
                    {"Authorization": f"Bearer {token}x"}, {"Authorization": "Bearer"}):
        status, body = raw_request(bare, "/v1/status", headers)
        assert status == 401 and "token" in body["error"], headers
    # unknown routes are refused before routing: nothing leaks without the token
    assert raw_request(bare, "/v1/nothing-here")[0] == 401
    status, body = raw_request(bare, "/v1/nothing-here", bearer(data_dir))
    assert status == 404 and body == {"error": "Not Found"}
    status, body = raw_request(bare, "/v1/status", bearer(data_dir), method="DELETE")
    assert status == 405 and "error" in body
    assert raw_request(bare, "/v1/status", bearer(data_dir))[0] == 200


def test_a_restart_makes_a_new_token_and_stop_removes_the_run_files(bare, tmp_path):
    config = dataclasses.replace(bare.service.config, data_dir=tmp_path / "restarts")
    first = BackgroundService(config).start()
    old_token = (config.data_dir / TOKEN_FILE).read_text()
    first.stop()
    assert not (config.data_dir / ADDRESS_FILE).exists() and not (config.data_dir / TOKEN_FILE).exists()
    second = BackgroundService(config).start()
    try:
        assert (config.data_dir / TOKEN_FILE).read_text() != old_token
        status, _ = raw_request(second, "/v1/status", {"Authorization": f"Bearer {old_token.strip()}"})
        assert status == 401
    finally:
        second.stop()


# -- status ---------------------------------------------------------------------------------------------
def session_counts(service) -> dict:
    return AdminClient.from_data_dir(service.service.config.data_dir).get("/v1/status")["sessions"]


def test_status_counts_the_real_sessions(bare, mysql_server, database):
    assert session_counts(bare)["total"] == 0
    idle = connect(bare, mysql_server, database)
    in_txn = connect(bare, mysql_server, database)
    busy = connect(bare, mysql_server, database)
    try:
        with in_txn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")
        sleeper = threading.Thread(target=lambda: busy.cursor().execute("SELECT SLEEP(2)"))
        sleeper.start()
        counts = wait_for(lambda: (c := session_counts(bare))["busy"] == 1 and c)
        assert counts == {"total": 3, "idle": 2, "busy": 1, "held": 0, "connecting": 0, "in_transaction": 1}
        sleeper.join()
    finally:
        for conn in (idle, in_txn, busy):
            conn.close()
    assert wait_for(lambda: session_counts(bare)["total"] == 0)


def test_status_without_capture(bare, mysql_server):
    status = AdminClient.from_data_dir(bare.service.config.data_dir).get("/v1/status")
    assert set(status) == STATUS_KEYS
    assert status["state"] == "available" and status["capture"] is False
    assert status["store"] is None and status["streamer"] is None and status["last_backtrack"] is None
    assert status["upstream"]["address"] == f"{mysql_server.host}:{mysql_server.port}"
    assert status["listen"] == f"127.0.0.1:{bare.port}"


def test_status_reports_the_change_store_with_capture(captured, mysql_server, database):
    client = AdminClient.from_data_dir(captured.service.config.data_dir)
    before = client.get("/v1/status")
    assert before["upstream"]["server_version"]  # from the inspection at start
    with connect(captured, mysql_server, database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        for i in range(5):
            cur.execute("INSERT INTO t VALUES (%s, REPEAT('x', 20))", (i,))
    status = wait_for(lambda: (s := client.get("/v1/status"))["store"]["transactions"] >= 5 and s)
    assert status, "the streamer did not store the 5 inserts"
    store = status["store"]
    assert set(store) == STORE_KEYS
    assert store["change_records"] >= 5 and store["stored_bytes"] > 0 and store["file_bytes"] > 0
    assert store["target_window_s"] == captured.service.config.backtrack_window_s
    earliest_us = store["earliest_backtrack_time_us"]
    assert earliest_us <= time.time() * 1e6 and 0 <= store["actual_window_s"] < 600
    parsed = time.mktime(time.strptime(store["earliest_backtrack_time"], "%Y-%m-%dT%H:%M:%S.%fZ")) - time.timezone
    assert abs(parsed - earliest_us // 1_000_000) <= 1
    # The supervisor's word on the streamer is refreshed by its watch loop (every POLL_S), so it
    # may still say "starting" for a moment after the first transactions are stored.
    status = wait_for(lambda: (s := client.get("/v1/status"))["streamer"]["status"] == "streaming" and s)
    assert status, "the streamer never reported streaming"
    streamer = status["streamer"]
    assert streamer["position"] and streamer["pid"]
    assert status["state"] == "available"


# -- the CLI --------------------------------------------------------------------------------------------
def test_cli_status_json_has_a_stable_set_of_keys(captured):
    data_dir = str(captured.service.config.data_dir)
    code, out, _ = cli("status", "--output", "json", "--data-dir", data_dir)
    assert code == 0
    status = json.loads(out)
    assert set(status) == STATUS_KEYS and set(status["sessions"]) == SESSION_KEYS
    assert set(status["store"]) == STORE_KEYS
    assert status["tls"]["client"]["sha256_fingerprint"].count(":") == 31  # what clients pin
    code, out, _ = cli("status", "--data-dir", data_dir)
    assert code == 0 and "available" in out and "Backtrack window" in out
    # Whole, though folded at 80 columns: what a user pins must never be cut short.
    assert status["tls"]["client"]["sha256_fingerprint"] in "".join(out.split())


def test_cli_finds_serve_through_the_environment(bare, monkeypatch):
    monkeypatch.setenv("AURORATRACK_DATA_DIR", str(bare.service.config.data_dir))
    code, out, _ = cli("status", "--output", "json")
    assert code == 0 and json.loads(out)["listen"] == f"127.0.0.1:{bare.port}"


def test_describe_backtracks_with_none_prints_an_empty_list(captured):
    data_dir = str(captured.service.config.data_dir)
    code, out, _ = cli("describe-backtracks", "--output", "json", "--data-dir", data_dir)
    assert code == 0 and json.loads(out) == []
    code, out, _ = cli("describe-backtracks", "--data-dir", data_dir)
    assert code == 0 and "No backtracks" in out
    code, _, err = cli("describe-backtracks", "no-such-id", "--data-dir", data_dir)
    assert code == 1 and "no backtrack 'no-such-id'" in err


def test_no_serve_in_the_data_directory(tmp_path):
    with pytest.raises(AdminUnavailable, match="no auroratrack serve found in .*nothing-here"):
        AdminClient.from_data_dir(tmp_path / "nothing-here")
    code, out, err = cli("status", "--data-dir", str(tmp_path / "nothing-here"))
    assert code == 1 and out == ""
    assert "no auroratrack serve found in" in err and "--data-dir" in err
    code, _, err = cli("backtrack", "--to", "-1m", "--yes", "--data-dir", str(tmp_path))
    assert code == 1 and "no auroratrack serve found" in err


def test_serve_gone_without_cleaning_up(bare, tmp_path):
    """admin.json left behind by a serve that died: a clear message, not a traceback."""
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / TOKEN_FILE).write_text("x\n")
    (stale / ADDRESS_FILE).write_text(json.dumps({"host": "127.0.0.1", "port": 9, "pid": os.getpid()}))
    with pytest.raises(AdminUnavailable, match="refuses connections"):
        AdminClient.from_data_dir(stale).get("/v1/status")
    (stale / ADDRESS_FILE).write_text(json.dumps({"host": "127.0.0.1", "port": 9, "pid": 2**22 + 12345}))
    with pytest.raises(AdminUnavailable, match="no longer running"):
        AdminClient.from_data_dir(stale)


# -- errors ----------------------------------------------------------------------------------------------
def test_bad_backtrack_bodies_are_400(bare):
    headers = {**bearer(bare.service.config.data_dir), "Content-Type": "application/json"}
    for body, fragment in ((b"{not json", "not valid JSON"), (b"[]", "JSON object"), (b"{}", "'to' is required"),
                           (b'{"to": "-1m", "yolo": true}', "unknown field"),
                           (b'{"to": "-1m", "force": "yes"}', "'force' must be bool"),
                           (b'{"to": "-1m", "drain_timeout": -1}', "positive")):
        status, answer = raw_request(bare, "/v1/backtracks", headers, method="POST", body=body)
        assert status == 400 and fragment in answer["error"], (body, answer)


def test_without_capture_backtracks_are_503(bare):
    client = AdminClient.from_data_dir(bare.service.config.data_dir)
    with pytest.raises(AdminError) as caught:
        client.post("/v1/backtracks", {"to": "-1m"})
    assert caught.value.status == 503 and caught.value.message.startswith("backtrack not available")
    assert client.get("/v1/backtracks") == []


def test_an_unexpected_error_is_a_500_and_serve_goes_on(bare):
    class Broken:  # stands in for the backtracker only; the server side stays real
        def list(self):
            raise RuntimeError("the history is on fire")

    bare.call_soon(lambda: setattr(bare.service, "backtracker", Broken()))
    try:
        client = AdminClient.from_data_dir(bare.service.config.data_dir)
        with pytest.raises(AdminError) as caught:
            client.get("/v1/backtracks")
        assert caught.value.status == 500 and "RuntimeError: the history is on fire" in caught.value.message
    finally:
        bare.call_soon(lambda: setattr(bare.service, "backtracker", None))
    assert client.get("/v1/status")["state"] == "available"


# -- backtrack routes (need proxy/backtrack.py's Backtracker) -------------------------------------------------
@pytest.fixture
def with_backtracker(captured):
    if getattr(captured.service, "backtracker", None) is None:
        pytest.skip("this build's serve has no backtracker yet (proxy/backtrack.py)")
    return captured


def test_a_dry_run_through_the_api_and_the_cli(with_backtracker, mysql_server, database):
    service = with_backtracker
    data_dir = service.service.config.data_dir
    client = AdminClient.from_data_dir(data_dir)
    with connect(service, mysql_server, database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v INT)")
        time.sleep(1.1)  # commit times have second precision on some servers
        between = datetime.now(UTC).isoformat()
        time.sleep(1.1)
        stored = wait_for(lambda: client.get("/v1/status")["store"]["transactions"])
        cur.execute("INSERT INTO t VALUES (1, 1), (2, 2)")
    assert wait_for(lambda: client.get("/v1/status")["store"]["transactions"] > stored)
    record = client.post("/v1/backtracks", {"to": between, "dry_run": True, "with_sql": True})
    assert record["status"] in ("pending", "applying", "completed") and record["dry_run"]
    done = wait_for(lambda: (r := client.get(f"/v1/backtracks/{record['id']}"))["status"] in ("completed", "failed")
                    and r)
    assert done["status"] == "completed", done
    assert f"{database}.t" in done["plan"]["tables"] and done["plan"]["sql"]
    assert client.get("/v1/status")["last_backtrack"] is None  # dry runs are not backtracks
    code, out, err = cli("backtrack", "--to", between, "--dry-run", "--sql", "--output", "json",
                         "--data-dir", str(data_dir))
    assert code == 0, err
    assert json.loads(out)["plan"]["sql"]
    code, out, _ = cli("describe-backtracks", "--output", "json", "--data-dir", str(data_dir))
    assert code == 0 and len(json.loads(out)) == 2


def test_an_impossible_backtrack_is_refused_with_400(with_backtracker):
    client = AdminClient.from_data_dir(with_backtracker.service.config.data_dir)
    with pytest.raises(AdminError) as caught:
        client.post("/v1/backtracks", {"to": "2001-01-01T00:00:00Z"})
    assert caught.value.status == 400 and "earliest backtrack time" in caught.value.message
    assert "earliest" in caught.value.details
    with pytest.raises(AdminError) as caught:
        client.post("/v1/backtracks", {"to": "the day before yesterday"})
    assert caught.value.status == 400
    code, _, err = cli("backtrack", "--to", "2001-01-01T00:00:00Z", "--yes",
                       "--data-dir", str(with_backtracker.service.config.data_dir))
    assert code == 1 and "earliest backtrack time" in err
