"""Docs and code cite papers, never files a user of this repository does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Pointers into the project's private planning files, and the nicknames they gave the papers.
OUTSIDE = re.compile(r"REFERENCE ?§|REFERENCE\.md|shared/|seeds?/0\d\d|seed 0\d\d|seed paper", re.IGNORECASE)


def cited_files() -> list[Path]:
    patterns = ("*.py", "*.md", "*.toml")
    found = [p for pattern in patterns for p in ROOT.rglob(pattern)]
    skip = {".git", ".venv", "build", "runs"}
    return sorted(p for p in found if not skip & set(p.relative_to(ROOT).parts) and p.name != Path(__file__).name)


def outside_pointers(text: str) -> list[str]:
    return [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]


def test_no_citation_points_outside_the_repository() -> None:
    hits = {str(p.relative_to(ROOT)): found for p in cited_files() if (found := outside_pointers(p.read_text()))}
    assert hits == {}


@pytest.mark.parametrize("line", ["σ_prog (REFERENCE §1)", "see shared/REFERENCE.md", "(seed 001 §4.1)", "the seed paper's chip"])
def test_the_check_catches_each_old_pointer(line: str) -> None:
    assert outside_pointers(line)


def test_every_short_key_docs_use_is_in_the_bibliography() -> None:
    bibliography = (ROOT / "docs" / "references.md").read_text()
    keys = {"Nandakumar 2019", "Joshi 2020", "Nandakumar 2018", "Papandreou 2011", "Close 2010", "Khaddam-Aljameh 2021"}
    for key in keys:
        assert f"| {key} |" in bibliography, key
