"""Open a chip backend from one URI.

``virtual``, ``virtual?seed=7&rows=512&cols=2048&clock=sim``, ``serial:///dev/ttyUSB0?baud=921600``,
``visa://TCPIP::127.0.0.1::5025::SOCKET``, ``replay:runs/x.h5``.

The registry maps a scheme to ``"module:function"`` and imports the module only when
that scheme is asked for, so ``harness`` never imports a driver module otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from harness.chip.protocol import Chip
from harness.errors import ConfigError

BACKENDS: dict[str, str] = {
    "virtual": "harness.virtual.chip:open_virtual",
    "replay": "harness.sessions.replay:open_replay",
    "serial": "drivers.serial_backend:open_serial",
    "visa": "drivers.visa_backend:open_visa",
}


#: Optional validators: scheme -> "module:function" taking a ChipURI, raising ConfigError for
#: anything :func:`open_chip` would refuse that can be known without touching a chip
#: (unknown or malformed parameters, a geometry the machine cannot hold, a missing path).
CHECKERS: dict[str, str] = {
    "virtual": "harness.virtual.chip:check_virtual_uri",
    "replay": "harness.sessions.replay:check_replay_uri",
    "serial": "drivers.serial_backend:check_serial_uri",
    "visa": "drivers.visa_backend:check_visa_uri",
}


@dataclass(frozen=True)
class ChipURI:
    """A parsed chip URI: ``scheme``, ``path`` (after ``scheme:`` / ``scheme://``), query ``params``."""

    raw: str
    scheme: str
    path: str
    params: Mapping[str, str] = field(default_factory=dict)


def parse_uri(uri: str) -> ChipURI:
    """Split a chip URI; raises ConfigError on an empty or unknown scheme."""
    text = uri.strip()
    if not text:
        raise ConfigError("empty chip URI; try 'virtual' or 'serial:///dev/ttyUSB0'")
    head, sep, query = text.partition("?")
    scheme, colon, path = head.partition(":")
    scheme = scheme.lower()
    if scheme not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(f"unknown chip URI scheme {scheme!r} in {uri!r}; known schemes: {known}")
    if path.startswith("//"):
        path = path[2:]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ConfigError(f"malformed query {query!r} in chip URI {uri!r}") from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise ConfigError(f"parameter {key!r} given twice in chip URI {uri!r}")
        params[key] = value
    return ChipURI(raw=text, scheme=scheme, path=path, params=params)


def take_params(
    uri: ChipURI, spec: Mapping[str, tuple[Callable[[str], Any], Any]]
) -> dict[str, Any]:
    """Convert ``uri.params`` by ``spec`` (name → (converter, default)); unknown names are errors."""
    unknown = sorted(set(uri.params) - set(spec))
    if unknown:
        allowed = ", ".join(sorted(spec)) or "none"
        raise ConfigError(f"unknown parameter {unknown[0]!r} for {uri.scheme} chip URI; allowed: {allowed}")
    out: dict[str, Any] = {}
    for name, (convert, default) in spec.items():
        if name in uri.params:
            raw = uri.params[name]
            try:
                out[name] = convert(raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"bad value {raw!r} for parameter {name!r} in chip URI {uri.raw!r}: {exc}") from exc
        else:
            out[name] = default
    return out


def with_seed(chip_uri: str, seed: int | None) -> str:
    """Put a ``--seed`` option into a virtual chip URI.

    Raises:
        ConfigError: a seed for a non-virtual chip (those are seeded where they run), or one
            that contradicts the URI's own ``seed=``.
    """
    if seed is None:
        return chip_uri
    parsed = parse_uri(chip_uri)
    if parsed.scheme != "virtual":
        raise ConfigError(f"--seed applies to the virtual chip only; {parsed.scheme!r} chips are seeded where they run")
    if "seed" in parsed.params:
        if chip_seed(chip_uri) != seed:
            raise ConfigError(f"--seed {seed} contradicts seed={parsed.params['seed']} in chip URI {chip_uri!r}")
        return chip_uri
    return f"{chip_uri}{'&' if '?' in chip_uri else '?'}seed={seed}"


def chip_seed(chip_uri: str) -> int | None:
    """The seed of a virtual chip URI (0 when unspecified); None for other backends or a bad seed."""
    parsed = parse_uri(chip_uri)
    if parsed.scheme != "virtual":
        return None
    try:
        return int(parsed.params.get("seed", "0"), 10)
    except ValueError:
        return None


#: Import name -> PyPI package, for messages about a missing backend dependency.
PACKAGE_OF_MODULE: dict[str, str] = {
    "serial": "pyserial",
    "pyvisa": "pyvisa",
    "pyvisa_py": "pyvisa-py",
    "pyvisa_sim": "pyvisa-sim",
    "h5py": "h5py",
    "numpy": "numpy",
}


def backend_unavailable(scheme: str, exc: ImportError) -> str:
    """One line naming the PyPI package whose absence broke the ``scheme`` backend."""
    module = (getattr(exc, "name", None) or "").split(".")[0]
    package = PACKAGE_OF_MODULE.get(module)
    if package is None:
        return f"backend {scheme!r} is not available ({exc}); reinstall the harness"
    return f"backend {scheme!r} needs the package {package} (import {module!r} failed); pip install {package}"


def check_uri(uri: str) -> ChipURI:
    """Validate ``uri`` as far as possible without opening a chip (commands call this before
    any chip operation, ``--dry-run`` included); returns the parsed URI.

    Raises:
        ConfigError: unknown scheme, malformed query, or whatever the scheme's checker
            (:data:`CHECKERS`) refuses.
    """
    parsed = parse_uri(uri)
    target = CHECKERS.get(parsed.scheme)
    if target is None:
        return parsed
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(backend_unavailable(parsed.scheme, exc)) from exc
    checker = getattr(module, func_name, None)
    if checker is not None:
        checker(parsed)
    return parsed


def open_chip(uri: str) -> Chip:
    """Open the backend named by ``uri``; raises ConfigError for unknown schemes/params."""
    parsed = parse_uri(uri)
    target = BACKENDS[parsed.scheme]
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(backend_unavailable(parsed.scheme, exc)) from exc
    opener: Callable[[ChipURI], Chip] = getattr(module, func_name)
    return opener(parsed)
