"""The compiled tracker (setup.py builds it with mypyc) and the pure-Python one behave alike, and a
stale build is never used.

The other tracker tests run whichever implementation ``proxy.tracker`` loaded (the compiled one
after ``pip install -e .`` with a C compiler); here the same tests run again on the other one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import tracker

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **env}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_pure_python_tracker_passes_the_tracker_tests_too():
    if tracker.IMPLEMENTATION != "compiled":
        pytest.skip(f"the tracker tests already ran on the {tracker.IMPLEMENTATION} tracker")
    tests = [str(ROOT / "tests" / "unit" / name) for name in (
        "test_tracker.py", "test_tracker_fuzz.py", "test_tracker_cursor.py",
        "test_tracker_replication.py", "test_tracker_mariadb_caps.py")]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "AURORATRACK_PURE_PYTHON": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_pure_python_can_be_forced():
    assert run_python("import proxy.tracker as t; print(t.IMPLEMENTATION, t.SessionTracker.__module__)",
                      AURORATRACK_PURE_PYTHON="1") == (
        "pure Python (AURORATRACK_PURE_PYTHON is set) proxy.tracker")


def test_a_build_from_another_version_of_the_source_is_ignored():
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('proxy._tracker_native')\n"
        "fake.__file__ = 'proxy/_tracker_native.so'\n"
        "fake._SOURCE_DIGEST = '0' * 64\n"
        "fake.SessionTracker = object\n"
        "sys.modules['proxy._tracker_native'] = fake\n"
        "import proxy.tracker as t\n"
        "print(t.IMPLEMENTATION, t.SessionTracker.__module__)\n"
    )
    assert run_python(code) == "pure Python (the compiled build is stale) proxy.tracker"
