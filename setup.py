"""Build hook: compile auroratrack's hot loops with mypyc, when a C compiler is there.

Why: the per-session protocol tracker runs for every packet the proxy relays, and in pure
Python it was most of the proxy's user time (about 10 us per point select on the benchmark
machine; the event loop and the kernel are the rest); the decoder's row loop
(``proxy/changelog/_scan.py``) reads every row image a backtrack plans with (a million rows:
seconds in pure Python). Compiled by mypyc from the same annotated sources they cost a fraction
of that. Everything else is declared in pyproject.toml; this file only adds the extensions.

How: each source in ``NATIVE`` stays the one source, and stays importable as plain Python. The
build compiles a copy of it named ``<module>_native`` (``proxy._tracker_native``,
``proxy.changelog._scan_native``), stamped with the SHA-256 of the source it was made from; the
importing module uses the compiled code only when that stamp matches its own source, so an
edited source is never shadowed by a stale build (an editable install puts the extensions next
to the sources; ``pip install -e .`` rebuilds them).

Optional by design: without mypy, a C compiler or the Python headers, or when compiling fails
for any reason, the build goes on without that extension (with a warning) and auroratrack runs
the pure-Python code. Each module is compiled on its own, so one failing costs only its own
speed. ``AURORATRACK_PURE_PYTHON=1`` at build time skips the compile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# mypyc reads the copies from here and writes its C files under build/ (both gitignored).
NATIVE_SRC = Path("build") / "native-src"


@dataclass(frozen=True)
class Native:
    """One module compiled from a stamped copy: its source, and the modules its copy imports
    (copied beside it to be type-checked, not compiled)."""

    source: Path
    imports: tuple[Path, ...]

    @property
    def module(self) -> str:  # proxy/tracker.py -> proxy._tracker_native
        return ".".join([*self.source.parent.parts, f"_{self.source.stem.lstrip('_')}_native"])


NATIVE = (
    Native(Path("proxy") / "tracker.py", (Path("proxy") / "__init__.py", Path("proxy") / "wire.py")),
    Native(Path("proxy") / "changelog" / "_scan.py",
           (Path("proxy") / "__init__.py", Path("proxy") / "changelog" / "__init__.py")),
)


def native_source(native: Native) -> Path:
    """The stamped copy that mypyc compiles, in a tree of its own (one per module, so that each
    is type-checked and compiled alone) with the modules it imports."""
    tree = NATIVE_SRC / native.module.replace(".", "-")
    if tree.exists():
        shutil.rmtree(tree)
    for name in native.imports:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tree / name)
    source = (ROOT / native.source).read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    target = tree / Path(*native.module.split(".")).with_suffix(".py")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source + f'\n_SOURCE_DIGEST: Final = "{digest}"\n'.encode())
    return target


def native_extensions() -> list:
    if os.environ.get("AURORATRACK_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("auroratrack: mypy is not installed; the pure-Python modules will be used",
              file=sys.stderr)
        return []
    os.environ.setdefault("MYPY_CACHE_DIR", str(Path("build") / "mypy-cache"))  # not in the tree
    extensions = []
    for native in NATIVE:
        try:
            # A C directory of its own: mypyc names the C files of a one-module build the same
            # for every module, so two builds in one directory would overwrite each other.
            extensions += mypycify([str(native_source(native))], opt_level="3",
                                   target_dir=str(Path("build") / "mypyc" / native.module))
        except BaseException as exc:  # mypy's type errors end in SystemExit
            print(f"auroratrack: mypyc could not compile {native.source} ({exc!r}); "
                  "its pure-Python code will be used", file=sys.stderr)
    return extensions


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: the compiled modules are an optimisation."""

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
        print(f"auroratrack: building a compiled module failed ({exc}); "
              "its pure-Python code will be used", file=sys.stderr)


setup(ext_modules=native_extensions(), cmdclass={"build_ext": OptionalBuildExt})
