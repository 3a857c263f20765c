"""Build hook: compile the per-session protocol tracker with mypyc, when a C compiler is there.

Why: the tracker runs for every packet the proxy relays, and in pure Python it was most of the
proxy's user time (about 10 us per point select on the benchmark machine; the event loop and
the kernel are the rest). Compiled by mypyc from the same annotated source it costs a fraction
of that. Everything else is declared in pyproject.toml; this file only adds the extension.

How: ``proxy/tracker.py`` stays the one source, and stays importable as plain Python. The build
compiles a copy of it named ``proxy._tracker_native``, stamped with the SHA-256 of the source it
was made from; ``proxy.tracker`` swaps in the compiled classes at import only when that stamp
matches its own source, so an edited tracker is never shadowed by a stale build (an editable
install puts the extension next to the source; ``pip install -e .`` rebuilds it).

Optional by design: without mypy, a C compiler or the Python headers, or when compiling fails
for any reason, the build goes on without the extension (with a warning) and auroratrack runs
the pure-Python tracker. ``AURORATRACK_PURE_PYTHON=1`` at build time skips the compile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SOURCE = Path("proxy") / "tracker.py"
NATIVE_MODULE = "_tracker_native"
# mypyc reads the copy from here and writes its C files under build/ (both gitignored).
NATIVE_SRC = Path("build") / "native-src"


def native_source() -> Path:
    """The stamped copy of the tracker that mypyc compiles, in a tree of its own with the
    modules it imports (type-checked, not compiled)."""
    package = NATIVE_SRC / "proxy"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for name in ("__init__.py", "wire.py"):
        shutil.copyfile(ROOT / "proxy" / name, package / name)
    source = (ROOT / SOURCE).read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    target = package / f"{NATIVE_MODULE}.py"
    target.write_bytes(source + f'\n_SOURCE_DIGEST: Final = "{digest}"\n'.encode())
    return target


def native_extensions() -> list:
    if os.environ.get("AURORATRACK_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("auroratrack: mypy is not installed; the pure-Python tracker will be used",
              file=sys.stderr)
        return []
    os.environ.setdefault("MYPY_CACHE_DIR", str(Path("build") / "mypy-cache"))  # not in the tree
    try:
        return mypycify([str(native_source())], opt_level="3")
    except BaseException as exc:  # mypy's type errors end in SystemExit
        print(f"auroratrack: mypyc could not compile the tracker ({exc!r}); "
              "the pure-Python tracker will be used", file=sys.stderr)
        return []


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: the compiled tracker is an optimisation."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._skip(exc)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        print(f"auroratrack: building the compiled tracker failed ({exc}); "
              "the pure-Python tracker will be used", file=sys.stderr)


setup(ext_modules=native_extensions(), cmdclass={"build_ext": OptionalBuildExt})
