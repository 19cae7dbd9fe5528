"""The public imports keep working: the package faces, the names docs show, the old flat paths."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import harness
from harness._compat import MOVED

ROOT = Path(__file__).resolve().parents[1]
FACES = [
    "harness",
    "harness.chip",
    "harness.programming",
    "harness.sessions",
    "harness.recording",
    "harness.evaluation",
    "harness.calibration",
    "harness.sweeps",
    "harness.models",
    "harness.data",
]


@pytest.mark.parametrize("face", FACES)
def test_every_name_a_package_face_exports_resolves(face: str) -> None:
    package = importlib.import_module(face)
    missing = [name for name in package.__all__ if getattr(package, name, None) is None and name != "__version__"]
    assert missing == []


def test_the_top_level_names_are_the_library_functions() -> None:
    from harness.chip.registry import open_chip
    from harness.evaluation.evaluate import evaluate_chip
    from harness.models.format import load_model

    assert harness.open_chip is open_chip
    assert harness.load_model is load_model
    assert harness.evaluate_chip is evaluate_chip


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        harness.nosuch  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        harness.sessions.nosuch  # noqa: B018


def doc_imports() -> list[str]:
    """Every ``from harness… import …`` line in the README and docs/ (code blocks and prose)."""
    found: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in re.finditer(r"from (harness[\w.]*) import ([\w, ]+)", path.read_text()):
            names = ", ".join(n.strip() for n in match.group(2).split(",") if n.strip())
            found.add(f"from {match.group(1)} import {names}")
    return sorted(found)


@pytest.mark.parametrize("statement", doc_imports())
def test_every_import_the_docs_show_works_without_a_deprecation(statement: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        exec(statement, {})  # noqa: S102 - the statement is one of our own docs' import lines


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_flat_module_path_still_imports_with_a_warning(old: str, new: str) -> None:
    """Round-2 scripts (``from harness.evaluate import evaluate_chip``) keep running, told where to look."""
    code = (
        "import importlib, warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        "assert old is new, (old, new)\n"
        f"assert any('moved to {new}' in str(w.message) for w in caught), [str(w.message) for w in caught]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def doc_references() -> list[str]:
    """Every dotted ``harness.…`` name the README and docs/ show in backticks.

    The old flat paths that docs/architecture.md lists under "Where things moved" are named as
    old paths on purpose; the test of ``MOVED`` below covers them.
    """
    found: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found.update(re.findall(r"`(harness(?:\.\w+)+)", path.read_text()))
    old = tuple(MOVED)
    return sorted(name for name in found if not any(name == o or name.startswith(o + ".") for o in old))


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then follow attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", doc_references())
def test_every_name_the_docs_mention_exists_at_its_new_path(dotted: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        resolve(dotted)
