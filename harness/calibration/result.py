"""What a calibration returns, and the personality file it writes.

:class:`FittedConstant` (one constant with its 95 % interval), :class:`LevelTable` (per-level
estimates and data vs fit), :class:`CalibrationResult` (all of it, JSON-ready through
``to_dict``), and :func:`save_personality`, which writes the TOML file that
``virtual?personality=PATH`` loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.errors import CalibrationError
from harness.virtual.personality import Personality

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FittedConstant:
    """One constant of the personality: value, 95 % CI, and whether the data identify it."""

    name: str
    value: float
    ci_low: float
    ci_high: float
    identified: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "ci95": [self.ci_low, self.ci_high],
                "identified": self.identified, "note": self.note}



def finite_list(a: npt.ArrayLike) -> Any:
    """``a.tolist()`` with NaN/inf as None (JSON has no NaN)."""
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        return arr.tolist()
    if arr.ndim > 1:
        return [finite_list(row) for row in arr]
    return [float(v) if math.isfinite(v) else None for v in arr]


@dataclass(frozen=True)
class LevelTable:
    """Per-level estimates (arrays of length L) and per-level data vs fit over time."""

    x: FloatArray
    n_devices: npt.NDArray[np.int64]
    sigma_prog_uS: FloatArray
    sigma_prog_se: FloatArray
    nu_mean: FloatArray
    nu_mean_se: FloatArray
    nu_std: FloatArray
    nu_std_se: FloatArray
    q_s: FloatArray
    q_s_se: FloatArray
    verify_bias_uS: FloatArray  # (L,) mean of G(t0) − last verify read: write-verify selection
    times_s: FloatArray  # (G,) readout times (means of repeats)
    mean_g_uS: FloatArray  # (L, G) observed mean conductance
    fit_g_uS: FloatArray  # (L, G) fitted model's mean conductance
    ks: FloatArray  # (L,) KS distance of held-out readouts (all times pooled) vs predictive
    ks_critical: FloatArray

    def to_dict(self) -> dict[str, Any]:
        return {k: finite_list(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`~harness.calibration.calibrate.calibrate_recording` returns; ``personality`` is ready to save."""

    personality: Personality
    base: Personality
    constants: tuple[FittedConstant, ...]
    levels: LevelTable
    read_noise_method: str
    goodness: dict[str, Any]
    data: dict[str, Any]
    warnings: tuple[str, ...] = field(default=())

    def constant(self, name: str) -> FittedConstant:
        for c in self.constants:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "personality": {"name": self.personality.name, "hash": self.personality.content_hash},
            "base": self.base.label(),
            "read_noise_method": self.read_noise_method,
            "constants": [c.to_dict() for c in self.constants],
            "goodness_of_fit": self.goodness,
            "data": self.data,
            "levels": self.levels.to_dict(),
            "warnings": list(self.warnings),
        }


def save_personality(p: Personality | None, path: str | Path, *, overwrite: bool = False, check_only: bool = False) -> Path:
    """Write ``p`` as TOML to ``path`` (atomically: a temporary file renamed into place).

    ``check_only`` only checks that ``path`` may be written (before a long fit).

    Raises:
        CalibrationError: ``path`` exists (without ``overwrite``) or its directory does not.
    """
    out = Path(path)
    if out.exists() and not overwrite:
        raise CalibrationError(f"{out} already exists; choose another --out or pass --overwrite")
    if not out.parent.is_dir():
        raise CalibrationError(f"directory {out.parent} does not exist; create it or choose another --out")
    if check_only or p is None:
        return out
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(p.to_toml(), encoding="utf-8")
    tmp.replace(out)
    return out
