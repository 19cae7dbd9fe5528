"""Lazy package faces: a package re-exports its public names without importing its modules.

Each package ``__init__`` names what it exports and the submodule that defines it; the
submodule is imported on first attribute access (PEP 562), so ``import harness.sessions`` stays
as cheap as before and ``harness session status`` keeps its start-up budget.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``.

    ``exports`` maps a public name to the module that defines it, relative to ``package``
    (``"runner"``) or absolute (``"harness.sessions.runner"``).
    """

    def module_of(name: str) -> str:
        where = exports[name]
        return where if where.startswith("harness.") else f"{package}.{where}"

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_of(name)), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
