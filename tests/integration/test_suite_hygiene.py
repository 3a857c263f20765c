"""The test suite cleans up after itself: a run leaves nothing in the temp directory.

A small pytest run in a subprocess, with a temp directory of its own (TMPDIR), through every
fixture that makes directories: the private server (started from the binaries on PATH, as the
suite does without a DSN), the session's proxy, ``make_proxy`` services with and without
capture, ``tmp_path``. Afterwards only pytest's per-user root may remain, empty of runs.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from proxy.sandbox import find_server_binary

ROOT = Path(__file__).resolve().parents[2]
TESTS = [
    "tests/unit/test_timeparse.py",
    "tests/integration/test_smoke.py::test_query_through_proxy",  # the session's proxy
    "tests/integration/test_admin.py::test_status_without_capture",  # make_proxy, tmp_path
    "tests/integration/test_cli_safety.py::test_the_service_never_guesses_a_zone",  # capture on
]


@pytest.fixture
def temp():
    """A temp directory for the run, with a short path (the server's socket lives below it)."""
    path = Path(tempfile.mkdtemp(prefix="at-hygiene-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_passing_run_leaves_nothing_in_the_temp_directory(temp):
    try:
        find_server_binary()
    except RuntimeError as exc:
        pytest.skip(f"needs a server binary for the run's private server: {exc}")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "AURORATRACK_TEST_DSN"))}
    env.update(TMPDIR=str(temp), AURORATRACK_TEST_NO_DOCKER="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    left = sorted(str(path.relative_to(temp)) for path in temp.rglob("*"))
    # pytest's own root for this user stays (pytest makes it once and shares it between runs);
    # the run's directory inside it, and everything the fixtures made, must be gone.
    pytest_root = f"pytest-of-{getpass.getuser()}"
    assert [entry for entry in left if entry != pytest_root and not entry.startswith(pytest_root + "/pytest-current")] \
        == [], left
