"""The README and docs/*.md point only inside the repository: every relative link resolves to a
file that exists, every anchor to a heading, and no path climbs out with ``../`` (the design the
project follows lives in docs/design.md, not in a directory beside the checkout)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CLIMBING_PATH = re.compile(r"(?:\.\./)+[^\s`)\"'>]*")
WEB = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors: headings lower-cased, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(document: Path):
    text = document.read_text()
    for target in LINK.findall(text):
        if WEB.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        assert path.is_relative_to(ROOT), f"{document.name}: {target} points outside the repository"
        assert path.exists(), f"{document.name}: {target} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in heading_anchors(path.read_text()), f"{document.name}: no heading for {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_climbs_out_of_the_repository(document: Path):
    for found in CLIMBING_PATH.findall(document.read_text()):
        assert (document.parent / found).resolve().is_relative_to(ROOT), f"{document.name}: {found}"


def test_the_docs_are_there():
    names = {p.name for p in DOCUMENTS}
    assert {"README.md", "design.md", "benchmarks.md"} <= names
