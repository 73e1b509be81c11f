"""The README and docs/ point only to files that exist (a reader following them must not hit a dead end)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A path inside the repository (`src/…`, `tests/…`, `docs/x.md`, …) or a conventional top-level file.
PATH = re.compile(
    r"(?<![\w/.:-])((?:src|tests|docs|scripts|bench)/[\w./-]*\w"
    r"|\b(?:ROADMAP|CHANGELOG|CONTRIBUTING|LICENSE|SECURITY|STYLE|TODO|NOTICE)(?:\.md)?\b)"
)


def _references(doc: Path) -> list[str]:
    return PATH.findall(doc.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_file_the_docs_name_exists(doc: Path) -> None:
    missing = [ref for ref in _references(doc) if not (ROOT / ref).exists() and not (ROOT / f"{ref}.md").exists()]
    assert not missing, f"{doc.name} points to files that do not exist: {missing}"


def test_the_threat_model_names_its_sources() -> None:
    refs = _references(ROOT / "docs" / "threat-model.md")
    assert any(r.startswith("src/") for r in refs) and "docs/protocol.md" in refs
