"""The packaging metadata builds without deprecation warnings: pyproject.toml is read by the
setuptools that builds the wheel, with every warning recorded. (A full ``pip wheel`` run
compiles the native modules and takes minutes; the metadata is what can go stale.)"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_reads_without_warnings():
    setuptools = pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip(f"setuptools {setuptools.__version__} predates SPDX license strings (the build needs >= 77)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert [str(w.message) for w in caught] == []
    assert dist.get_name() == "auroratrack" and dist.metadata.license_expression == "Apache-2.0"
