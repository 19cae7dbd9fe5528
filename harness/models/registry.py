"""The model zoo's registry: builders by name, like torchvision's ``get_model`` / ``list_models``.

A builder is a function returning a float32 ``torch.nn.Module`` made only of the layer types the
model format stores (see :mod:`harness.models.spec` and ``docs/models.md``). It registers itself
with :func:`register_model`, which also records the metadata every command needs: the input shape
of one sample, the number of classes, the task and the published source of the architecture.

Every module of the package :mod:`harness.models` other than the infrastructure modules
(``spec``, ``model``, ``format``, ``torch_build``, ``torch_convert``, ``registry``, ``layers``,
``summary``) is a zoo module with one architecture; the registry imports them all on first use,
so a new architecture is one new file and needs no edit elsewhere.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from harness.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

_INFRASTRUCTURE = frozenset(
    {"spec", "model", "format", "torch_build", "torch_convert", "registry", "layers", "summary"}
)
_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

Builder = Callable[..., "nn.Module"]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one zoo architecture.

    Attributes:
        name: the zoo name (lower-case, dash-separated: ``"analognet-kws"``).
        builder: ``builder(**kw) -> torch.nn.Module`` (float32, CPU, train mode, randomly
            initialised from torch's global RNG; seed it with ``torch.manual_seed`` first).
        input_shape: shape of one input sample for the default builder arguments, e.g.
            ``(1, 49, 10)`` for 49 frames × 10 MFCCs.
        n_classes: number of output classes for the default builder arguments.
        task: the task the model solves (``"kws"``, ``"vww"``, ``"har"``…).
        source: the published source of the architecture and what was reconstructed.
        summary: one line describing the architecture.
    """

    name: str
    builder: Builder
    input_shape: tuple[int, ...]
    n_classes: int
    task: str
    source: str
    summary: str


_REGISTRY: dict[str, ModelInfo] = {}
_discovered = False


def register_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    n_classes: int,
    task: str,
    source: str,
    summary: str,
) -> Callable[[B], B]:
    """Decorator: register ``builder`` under ``name`` with its metadata.

    Raises:
        ModelError: a malformed name, a name registered twice, or malformed metadata.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelError(f"zoo model name {name!r} must be lower-case words joined by '-'")
    shape = tuple(input_shape)
    if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise ModelError(f"zoo model {name!r}: input_shape {input_shape!r} must be positive ints")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ModelError(f"zoo model {name!r}: n_classes {n_classes!r} must be an int >= 2")

    def decorate(builder: B) -> B:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.builder.__qualname__ != builder.__qualname__:
            raise ModelError(f"zoo model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            input_shape=shape,
            n_classes=n_classes,
            task=task,
            source=source,
            summary=summary,
        )
        return builder

    return decorate


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import harness.models as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if module.name in _INFRASTRUCTURE or module.name.startswith("_"):
            continue
        importlib.import_module(f"harness.models.{module.name}")
    _discovered = True


def list_models() -> list[str]:
    """The names of all registered zoo models, sorted."""
    _discover()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The metadata of zoo model ``name``.

    Raises:
        ModelError: ``name`` is not registered (the message lists the known names).
    """
    _discover()
    info = _REGISTRY.get(name)
    if info is None:
        raise ModelError(f"unknown zoo model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return info


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build zoo model ``name`` (a fresh, randomly initialised float32 ``torch.nn.Module``).

    ``kwargs`` go to the builder (e.g. ``n_classes``); a keyword the builder does not take
    is a :class:`ModelError`.
    """
    info = model_info(name)
    try:
        return info.builder(**kwargs)
    except TypeError as exc:
        raise ModelError(f"zoo model {name!r}: {exc}") from exc


def baseline_path(name: str) -> Path:
    """Where the shipped float baseline of zoo model ``name`` lives: ``fixtures/models/<name>.h5``
    (the file may not exist: not every zoo model ships trained weights)."""
    from harness.data import fixtures_dir

    return fixtures_dir() / "models" / f"{name}.h5"


def resolve_model_path(ref: str | os.PathLike[str]) -> Path:
    """The model file a ``--model`` argument names.

    ``"default"``: the bundled default digits MLP; an existing file: itself; a bare name (no
    ``/``, no suffix): the bundled ``fixtures/models/<name>.h5`` (a zoo model's shipped float
    baseline, :func:`baseline_path`, or ``digits_mlp``…); anything else: a file path.

    Raises:
        ModelError: a bare name that is neither bundled nor a zoo model, or a zoo model
            without a shipped baseline (the message says how to make one).
    """
    text = os.fspath(ref)
    if text == "default":
        from harness.models.format import default_model_path

        return default_model_path()
    path = Path(text)
    if path.is_file() or path.suffix or "/" in text or os.sep in text:
        return path
    bundled = baseline_path(text)
    if bundled.is_file():
        return bundled
    names = list_models()
    if text in names:
        raise ModelError(
            f"zoo model {text!r} ships no trained weights; train it first "
            f"(`harness train --model {text} ...`) and pass the file with --model"
        )
    raise ModelError(f"model {text!r} is neither a model file nor a zoo model; zoo models: {', '.join(names)}")
