"""The README's walk-through, run line by line against a real serve and the session's server,
so the documentation cannot rot. Only addresses, credentials and the data directory are
substituted; every command is the README's own."""

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


def test_readme_walkthrough(mysql_server, tmp_path):
    if shutil.which("mariadb") is None:
        pytest.skip("needs the mariadb command-line client")
    mysql_server.query("DROP DATABASE IF EXISTS shop")
    data_dir = tmp_path / "data"
    serve = start_serve(mysql_server, data_dir)
    try:
        admin_client(data_dir, serve)
        proxy_port = _proxy_port(tmp_path / "serve.log")
        script = walkthrough_block()
        script = script.replace("$PWD/.auroratrack/data", str(data_dir))
        script = script.replace("-P 3307", f"-P {proxy_port}")
        script = script.replace("-u at_admin -pat_admin", f"-u {mysql_server.user} -p{mysql_server.password}")
        bin_dir = Path(sys.executable).parent
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", "set -x\n" + script], capture_output=True,
                                text=True, env=env, timeout=300, cwd=tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert "rows_left\n0" in result.stdout
        assert "DELETE FROM shop.orders" in result.stdout  # auroratrack changes found the mistake
        rows = mysql_server.query("SELECT id, customer FROM shop.orders ORDER BY id")
        assert rows == [(1, "ada"), (2, "grace"), (3, "linus")]
        assert "completed" in result.stdout
    finally:
        serve.terminate()
        serve.wait(30)
        mysql_server.query("DROP DATABASE IF EXISTS shop")


def _proxy_port(log_path: Path) -> int:
    match = re.search(r"proxy on [\d.]+:(\d+)", log_path.read_text())
    assert match, log_path.read_text()[-2000:]
    return int(match.group(1))
