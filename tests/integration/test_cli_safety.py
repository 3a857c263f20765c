"""The CLI never surprises: the real ``auroratrack`` command, run as a subprocess against a real
capturing serve on the session's server.

* Without a terminal and without ``--yes`` a backtrack is refused (exit 2) and nothing changes,
  whatever is piped in; ``--dry-run`` needs no confirmation; ``--yes`` goes ahead.
* One clock: a time without zone is the user's (the CLI's TZ), sent as an absolute instant;
  the service, in another zone, targets the instant the user meant, and refuses to guess a zone.
* A future ``--to`` (``+1m`` too) is refused before anything is paused.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from proxy.adminclient import AdminClient, AdminError
from tests.integration.backtrack_support import connect_via, fingerprint, wait_captured

ROOT = Path(__file__).resolve().parents[2]
NEW_YORK = "America/New_York"


def run_cli(*args: str, stdin: str = "", tz: str | None = None, columns: int = 200) -> subprocess.CompletedProcess:
    """``auroratrack ARGS`` in a process of its own, stdin a pipe (never a terminal)."""
    env = {**os.environ, "COLUMNS": str(columns)}
    if tz is not None:
        env["TZ"] = tz
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], input=stdin, capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture
def deleted(svc, mysql_server, database):
    """Three rows, then a moment, then a DELETE of them all: a backtrack to the moment brings
    them back. Returns the moment (aware, UTC)."""
    with connect_via(svc, mysql_server, database) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        wait_captured(svc, mysql_server)
        time.sleep(1.1)  # commit times have second precision on some servers
        moment = dt.datetime.now(dt.UTC)
        time.sleep(1.1)
        cur.execute("DELETE FROM t")
    wait_captured(svc, mysql_server)
    return moment


def assert_nothing_started(svc) -> None:
    assert svc.gate.is_open and svc.gate.paused_at is None
    assert svc.service.backtracker.running is None and svc.service.backtracker.list() == []


@pytest.mark.parametrize("answer", ["n\n", "y\n", ""])
def test_without_a_terminal_and_without_yes_nothing_is_rewound(svc, mysql_server, database, deleted, answer):
    data_dir = str(svc.service.config.data_dir)
    before = fingerprint(mysql_server, database)
    result = run_cli("backtrack", "--to", deleted.isoformat(), "--data-dir", data_dir, stdin=answer)
    assert result.returncode == 2, result
    assert "--yes" in result.stderr and "Nothing was done" in result.stderr
    assert fingerprint(mysql_server, database) == before == {"t": []}
    assert_nothing_started(svc)


def test_a_dry_run_needs_no_confirmation_and_yes_goes_ahead(svc, mysql_server, database, deleted):
    data_dir = str(svc.service.config.data_dir)
    dry = run_cli("backtrack", "--to", deleted.isoformat(), "--dry-run", "--output", "json", "--data-dir", data_dir)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["plan"]["tables"][f"{database}.t"]["reinsert"] == 3
    assert fingerprint(mysql_server, database) == {"t": []}
    done = run_cli("backtrack", "--to", deleted.isoformat(), "--yes", "--data-dir", data_dir)
    assert done.returncode == 0, done.stderr
    assert len(fingerprint(mysql_server, database)["t"]) == 3  # the refusal above was no accident of setup


def local_clock(local: dt.datetime, utc: dt.datetime, clock: str) -> str:
    """The local side of both clocks: its date too when it is another day than UTC's (between
    00:00 and 05:00 UTC in New York, say)."""
    return local.strftime(clock if local.date() == utc.astimezone(dt.UTC).date() else f"%Y-%m-%d {clock}")


def test_a_local_time_in_another_zone_than_serve_targets_the_instant_meant(svc, mysql_server, database, deleted):
    assert time.tzname[0] != "EST"  # serve (this process) and the CLI (New York) are on different clocks
    local = deleted.astimezone(ZoneInfo(NEW_YORK))
    data_dir = str(svc.service.config.data_dir)
    result = run_cli("backtrack", "--to", local.strftime("%H:%M:%S"), "--dry-run", "--output", "json",
                     "--data-dir", data_dir, tz=NEW_YORK)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    meant_us = int(deleted.replace(microsecond=0).timestamp() * 1_000_000)
    assert record["requested_to"] == dt.datetime.fromtimestamp(meant_us / 1e6, dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z")  # sent as the absolute instant
    assert record["point"]["time_us"] <= meant_us
    assert record["plan"]["transactions_undone"] == 1  # the DELETE, and nothing before it
    assert record["plan"]["tables"][f"{database}.t"] == {"delete": 0, "reinsert": 3, "restore": 0}
    since = run_cli("changes", "--since", local.strftime("%H:%M:%S"), "--output", "json", "--data-dir", data_dir,
                    tz=NEW_YORK)
    assert since.returncode == 0, since.stderr
    assert [txn["operations"] for txn in json.loads(since.stdout)] == [["delete"]]  # the same instant, for changes
    table = run_cli("backtrack", "--to", local.strftime("%H:%M:%S"), "--dry-run", "--data-dir", data_dir, tz=NEW_YORK)
    utc_text = deleted.strftime("%Y-%m-%d %H:%M:%S") + "Z"
    assert f"{utc_text} ({local_clock(local, deleted, '%H:%M:%S')} {local.tzname()}, local)" in table.stdout, \
        table.stdout


def test_the_service_never_guesses_a_zone(svc):
    client = AdminClient.from_data_dir(svc.service.config.data_dir)
    with pytest.raises(AdminError) as refused:
        client.post("/v1/backtracks", {"to": "2026-12-06T09:08:43", "dry_run": True})
    assert refused.value.status == 400 and "no time zone" in refused.value.message
    with pytest.raises(AdminError) as refused:
        client.get("/v1/changes?since=09:08")
    assert refused.value.status == 400 and "no time zone" in refused.value.message
    with pytest.raises(AdminError) as refused:
        client.post("/v1/backtracks", {"to": "+1m"})  # an API client's future time, as the CLI's
    assert refused.value.status == 400 and "is in the future" in refused.value.message
    assert_nothing_started(svc)


def test_a_time_before_the_window_is_refused_with_the_window_on_both_clocks(svc, mysql_server, database, deleted):
    data_dir = str(svc.service.config.data_dir)
    result = run_cli("backtrack", "--to", "2001-01-01T00:00:00Z", "--yes", "--data-dir", data_dir, tz=NEW_YORK)
    assert result.returncode == 1 and "before the earliest backtrack time" in result.stderr
    assert re.search(r"earliest possible: \S+ \S+Z \(.* E[SD]T, local\)", result.stderr), result.stderr
    assert fingerprint(mysql_server, database) == {"t": []}
    assert_nothing_started(svc)


@pytest.mark.parametrize("to", ["+1m", "+2h", "2999-01-01T00:00:00Z"])
def test_a_future_time_is_refused_before_anything_is_paused(svc, mysql_server, database, deleted, to):
    result = run_cli("backtrack", "--to", to, "--yes", "--data-dir", str(svc.service.config.data_dir))
    assert result.returncode == 2 and "is in the future" in result.stderr, result
    assert fingerprint(mysql_server, database) == {"t": []}
    assert_nothing_started(svc)


def run_at_terminal(*args: str, answer: str) -> tuple[int, str]:
    """``auroratrack ARGS`` with a pseudo-terminal as stdin (a person at a keyboard), typing
    ``answer`` at the prompt; returns the exit code and stderr."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([sys.executable, "-m", "proxy.cli", *args], stdin=follower,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                   env={**os.environ, "TZ": NEW_YORK})
        os.write(leader, answer.encode())
        out, err = process.communicate(timeout=300)
    finally:
        os.close(leader)
        os.close(follower)
    return process.returncode, err


def test_at_a_terminal_the_prompt_shows_both_clocks_and_no_means_nothing(svc, mysql_server, database, deleted):
    data_dir = str(svc.service.config.data_dir)
    local = deleted.astimezone(ZoneInfo(NEW_YORK))
    code, err = run_at_terminal("backtrack", "--to", local.strftime("%Y-%m-%d %H:%M:%S.%f"), "--data-dir", data_dir,
                                answer="n\n")
    assert code == 1 and "Nothing was done" in err, err
    assert f"{deleted.strftime('%Y-%m-%d %H:%M:%S.%f')}Z ({local_clock(local, deleted, '%H:%M:%S.%f')} EST, local)" \
        in err, err
    assert "your local time" in err and "Proceed?" in err
    assert fingerprint(mysql_server, database) == {"t": []}
    assert_nothing_started(svc)
    code, err = run_at_terminal("backtrack", "--to", deleted.isoformat(), "--data-dir", data_dir, answer="y\n")
    assert code == 0, err
    assert len(fingerprint(mysql_server, database)["t"]) == 3
