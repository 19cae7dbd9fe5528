"""Old module paths of the flat layout (before the stage packages) keep importing.

``import harness.evaluate`` or ``from harness.session import run_session`` (the paths of
round-2 scripts) resolve to the module's new home with a ``DeprecationWarning`` naming it.
No file stays behind at the old path: a meta-path finder answers for the old names only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old dotted name → new dotted name (docs/architecture.md, "Where things moved").
MOVED: dict[str, str] = {
    "harness.registry": "harness.chip.registry",
    "harness.clock": "harness.chip.clock",
    "harness.mapping": "harness.programming.mapping",
    "harness.schedule": "harness.sessions.schedule",
    "harness.session": "harness.sessions",
    "harness.chip_check": "harness.sessions.resume_check",
    "harness.replay": "harness.sessions.replay",
    "harness.plots": "harness.sessions.replay_plots",
    "harness.cim": "harness.evaluation.cim",
    "harness.evaluate": "harness.evaluation",
    "harness.evaluation_plots": "harness.evaluation.plots",
    "harness.sweep": "harness.sweeps.runner",
    "harness.sweep_spec": "harness.sweeps.spec",
    "harness.model": "harness.models",
    "harness.models.summary": "harness.accel.model_fit",
    "harness.virtual.calibrate": "harness.calibration",
    "harness.virtual.calibration_plots": "harness.calibration.plots",
    "harness.virtual.compare": "harness.calibration.compare",
    "harness.virtual.pattern": "harness.calibration.pattern",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.target}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
