"""The README's first ten minutes, run as a new user would, so the documentation cannot rot.

* The walk-through block runs line by line against a real serve and the session's server, twice
  in a row on the same server, with the PATH a new user has: no ``.venv/bin`` on it unless the
  walk-through itself puts it there. Only addresses, credentials and the data directory are
  substituted; every command is the README's own.
* ``make up``'s script ends by printing the line that makes ``auroratrack`` reachable; run as
  printed, from another directory, it works. ``make down`` says what it stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_backtrack_crash import admin_client, start_serve

ROOT = Path(__file__).resolve().parents[2]


def walkthrough_block() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough:start -->", 1)[1].split("<!-- walkthrough:end -->", 1)[0]
    return block.split("```bash", 1)[1].rsplit("```", 1)[0]


def new_user_path() -> str:
    """The caller's PATH without any directory that holds an ``auroratrack`` command (the test
    runs from the virtualenv; a new user's shell has not activated it)."""
    venv_bin = str(Path(sys.executable).parent)
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and d != venv_bin and not (Path(d) / "auroratrack").exists()]
    path = os.pathsep.join(kept)
    assert shutil.which("auroratrack", path=path) is None
    return path


def test_readme_walkthrough_runs_twice_as_a_new_user(mysql_server, tmp_path):
    if shutil.which("mariadb") is None:
        pytest.skip("needs the mariadb command-line client")
    mysql_server.query("DROP DATABASE IF EXISTS shop")
    data_dir = tmp_path / "data"
    serve = start_serve(mysql_server, data_dir)
    try:
        admin_client(data_dir, serve)
        script = _substituted(walkthrough_block(), data_dir, _proxy_port(tmp_path / "serve.log"), mysql_server)
        env = dict(os.environ, PATH=new_user_path())
        env.pop("AURORATRACK_DATA_DIR", None)
        for run in (1, 2):
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", "set -x\n" + script], capture_output=True,
                                    text=True, env=env, timeout=300, cwd=ROOT)
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"run {run}:\n{output[-6000:]}"
            assert result.stdout.count("rows_left\n0") == 2, output[-6000:]  # the mistake, and the undo undone
            assert "DELETE FROM shop.orders" in result.stdout  # auroratrack changes found the mistake
            rows = mysql_server.query("SELECT id, customer FROM shop.orders ORDER BY id")
            assert rows == [(1, "ada"), (2, "grace"), (3, "linus")], f"run {run}"
            assert "completed" in result.stdout
    finally:
        serve.terminate()
        serve.wait(30)
        mysql_server.query("DROP DATABASE IF EXISTS shop")


def _substituted(script: str, data_dir: Path, proxy_port: int, server) -> str:
    script = script.replace("$PWD/.auroratrack/data", str(data_dir))
    if not (ROOT / ".venv" / "bin" / "auroratrack").exists():  # run from a virtualenv elsewhere
        script = script.replace("$PWD/.venv/bin", str(Path(sys.executable).parent))
    script = script.replace("-P 3307", f"-P {proxy_port}")
    return script.replace("-u at_admin -pat_admin", f"-u {server.user} -p{server.password}")


def _proxy_port(log_path: Path) -> int:
    match = re.search(r"proxy on [\d.]+:(\d+)", log_path.read_text())
    assert match, log_path.read_text()[-2000:]
    return int(match.group(1))


def test_make_up_prints_the_line_that_makes_auroratrack_reachable(mysql_server, tmp_path):
    if not (ROOT / ".venv" / "bin" / "auroratrack").exists():
        pytest.skip("scripts/up.sh runs auroratrack from the repository's .venv (make test builds it)")
    state = tmp_path / "state"
    env = dict(os.environ, AURORATRACK_STATE=str(state), AURORATRACK_USER=mysql_server.user,
               AURORATRACK_UPSTREAM_PASSWORD=mysql_server.password, PATH=new_user_path())
    env.pop("AURORATRACK_DATA_DIR", None)
    upstream = f"{mysql_server.host}:{mysql_server.port}"
    try:
        up = _run([ROOT / "scripts" / "up.sh", upstream, "127.0.0.1:0", "127.0.0.1:0"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        line = next(ln.strip() for ln in up.stdout.splitlines() if ln.strip().startswith("export PATH="))
        assert str(ROOT / ".venv" / "bin") in line and str(state / "data") in line, up.stdout
        # As a user would: paste the line, elsewhere than the repository, then use the command.
        status = _run(["bash", "-euc", f"{line}\nauroratrack status --output json"], env, cwd=tmp_path)
        assert status.returncode == 0, status.stdout + status.stderr
        assert '"state": "available"' in status.stdout
        pid = (state / "serve.pid").read_text().strip()
    finally:
        down = _run([ROOT / "scripts" / "down.sh"], env)
    assert f"stopped auroratrack serve (pid {pid})" in down.stdout, down.stdout + down.stderr
    again = _run([ROOT / "scripts" / "down.sh"], env)
    assert "nothing was running" in again.stdout, again.stdout + again.stderr


def _run(args: list, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
