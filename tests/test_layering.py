"""The import-layering rule of docs/architecture.md, checked by parsing every import.

The layers run bottom → top in the order data flows; a module may import its own layer's
package and any layer below it, never one above. Packages that share a layer are siblings and
must not import each other. Every import counts: module level, inside functions, and under
``TYPE_CHECKING`` (a type-only import still ties the lower stage to the higher one's names).
Import-linter's "layers" contract is the model; an ``ast`` walk is all it takes here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Bottom → top. Each entry is one layer: the packages (or modules) in it. Packages sharing a
#: layer are independent siblings, except in the layers named in ``SHARED_LAYERS``. The longest
#: matching prefix decides a module's layer.
LAYERS: list[tuple[str, ...]] = [
    ("harness", "harness._exports", "harness._compat", "harness.errors", "harness.units", "harness.h5files", "harness.provenance"),
    ("harness.chip",),
    ("harness.virtual", "drivers"),
    ("harness.data",),
    ("harness.models",),
    ("harness.programming",),
    # The session *definition* is a value the recording stores; the runner sits above the recording.
    ("harness.sessions.refresh_spec",),
    ("harness.sessions.schedule",),
    ("harness.recording",),
    ("harness.sessions",),
    ("harness.evaluation", "harness.calibration"),
    ("harness.train", "harness.accel"),
    ("harness.sweeps",),
    ("harness.report",),
    ("harness.commands", "harness.cli"),
]

#: Layers whose members may import one another: the shared basics, and the CLI with its commands.
SHARED_LAYERS = {0, len(LAYERS) - 1}

#: The one place harness imports a driver directly: ``harness emulate`` serves the chip emulator.
DRIVER_IMPORTERS = {"harness.commands.emulate"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: str) -> set[str]:
    """Every harness/drivers module ``path`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # kept only if a module
    return {m for m in found if m.split(".")[0] in ("harness", "drivers")}


def source_modules() -> dict[str, Path]:
    """Every module of harness/ and drivers/ by dotted name."""
    files = sorted((ROOT / "harness").rglob("*.py")) + sorted((ROOT / "drivers").rglob("*.py"))
    return {module_name(p): p for p in files}


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer index, the matching package) for ``module``, by longest matching prefix."""
    best: tuple[int, str] | None = None
    for index, members in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and (best is None or len(member) > len(best[1])):
                best = (index, member)
    return best


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run upward, across siblings, or from harness into drivers."""
    found = []
    for importer, targets in sorted(graph.items()):
        here = layer_of(importer)
        assert here is not None, f"{importer} is in no layer: add it to LAYERS and docs/architecture.md"
        for target in sorted(targets):
            there = layer_of(target)
            if there is None:
                continue
            if importer.startswith("harness") and target.startswith("drivers") and importer not in DRIVER_IMPORTERS:
                found.append(f"{importer} imports {target}: harness reaches drivers only through the chip registry")
            elif there[0] > here[0]:
                found.append(f"{importer} (layer {here[1]}) imports {target} (higher layer {there[1]})")
            elif there[0] == here[0] and there[1] != here[1] and here[0] not in SHARED_LAYERS:
                found.append(f"{importer} ({here[1]}) imports its sibling {target} ({there[1]})")
    return found


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: {m for m in imported_modules(path, name) if m != name and m in modules} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over the known modules."""
    known = set(graph)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v] & known:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_every_module_has_a_layer() -> None:
    missing = [m for m in source_modules() if layer_of(m) is None]
    assert not missing, f"modules outside every layer: {missing}"


def test_no_import_runs_up_a_layer_or_across_siblings() -> None:
    assert violations(import_graph()) == []


def test_no_import_cycle_between_modules() -> None:
    """Package faces are lazy (harness/_exports.py), so they take part like any module."""
    graph = import_graph()
    # A package face names its submodules only to re-export them; the submodules importing the
    # face's package (``from harness.chip import …``) is not a cycle in what runs at import time.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    assert cycles(graph) == []


@pytest.mark.parametrize(
    ("importer", "target"),
    [
        ("harness.models.format", "harness.accel.tiler"),  # models may not ask accel how it fits
        ("harness.recording.writer", "harness.sessions.runner"),  # the recording below the runner
        ("harness.chip.protocol", "harness.virtual.chip"),  # the seam knows no backend
        ("harness.evaluation.cim", "harness.calibration.calibrate"),  # siblings stay independent
        ("harness.chip.registry", "drivers.serial_backend"),  # drivers only by URI string
    ],
)
def test_the_checker_catches_an_added_upward_import(importer: str, target: str) -> None:
    graph = import_graph()
    graph[importer] = graph[importer] | {target}
    assert any(v.startswith(importer) and target in v for v in violations(graph))


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
