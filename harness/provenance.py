"""Provenance: what made a result, recorded beside it."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from harness import __version__

#: Packages whose versions go into every recording.
TRACKED_PACKAGES = ("numpy", "torch", "h5py", "pyserial", "pyvisa", "pyvisa-py", "typer")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages results depend on ("absent" if not installed)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    # Read once per process: scanning package metadata costs ~30 ms, and a sweep worker
    # records a session per simulated chip. Versions cannot change under a running process.
    out = []
    for name in TRACKED_PACKAGES:
        try:
            out.append((name, version(name)))
        except PackageNotFoundError:
            out.append((name, "absent"))
    return tuple(out)


def personality_provenance(chip: Any) -> dict[str, Any]:
    """``{"personality": {"name", "hash"}}`` of a virtual chip (from its ``personality``), or of a
    chip whose identity names one (a virtual chip served over a link); ``{}`` otherwise."""
    pers = getattr(chip, "personality", None)
    if pers is not None:
        return {"personality": {"name": pers.name, "hash": pers.content_hash}}
    ident = str(getattr(chip, "identity", ""))
    for part in ident.split(","):
        key, _, value = part.partition("=")
        if key.strip() == "personality" and "@" in value:
            name, _, digest = value.strip().rpartition("@")
            return {"personality": {"name": name, "hash": digest}}
    return {}


def collect_provenance(*, chip_uri: str, chip_identity: str, seed: int | None, model: str, **extra: Any) -> dict[str, Any]:
    """Provenance dict: harness version, chip, seed, model, packages, python, UTC start time, extras."""
    return {
        "harness_version": __version__,
        "chip_uri": chip_uri,
        "chip_identity": chip_identity,
        "seed": seed,
        "model": model,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
