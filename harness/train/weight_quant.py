"""Discrete weight levels in training: a per-layer, learned-scale weight quantizer (issue 23).

Two seed works deploy weights as a few levels, not as continuous conductances: imec's 1-D KWS
CNN with ternary weights (Debacker, imec talk, "Line conductor technologies for
energy-efficient intelligence") and Garcia-Redondo, Das, Rosendale, "Training DNN IoT
applications for deployment on analog NVM crossbars" (IJCNN 2020, arXiv:1910.13850) with 2- and
4-bit devices. ``N`` counts the distinct *weight* values of a layer:

- a signed layer (differential pair, ``W ∝ G+ − G−``): ``N = 2m + 1`` odd, levels
  ``{−m, …, m}·s``; each device of the pair needs ``m + 1`` conductance levels (the other one
  of the pair stays RESET). Ternary ``N = 3``: binary devices. A pair of 2-bit (4-level)
  devices gives ``N = 7``, of 4-bit devices ``N = 31``. An even ``N`` has no zero level and
  no such pair mapping: refused (use ``--unipolar`` for 4 or 16 levels on one device);
- a unipolar layer (one device, ``G = g_min + s·W``): any ``N >= 2``, levels
  ``{0, 1, …, N − 1}·s`` — ``N = 4`` is a 2-bit device, ``N = 16`` a 4-bit one.

The quantizer is ``q(w) = s·clip(round(w/s), k_lo, k_hi)`` with ``round`` passed straight
through (Bengio et al. 2013) and a learned per-layer step ``s``; its gradient is LSQ's (Esser et
al., "Learned step size quantization", ICLR 2020): ``∂q/∂s = round(w/s) − w/s`` inside,
``k_lo`` or ``k_hi`` outside, and ``∂q/∂w = 1`` inside, 0 outside. The step starts at the value
with the least mean squared error on the layer's weights (a grid search, as the converter ranges
start, :func:`harness.evaluation.ranges.mse_optimal_fraction`), which for ``N = 3`` is the
least-squares ternary fit (Li & Liu, "Ternary weight networks", 2016, fit it in closed form).
"""

from __future__ import annotations

import numpy as np
import torch

from harness.errors import ConfigError
from harness.train.quant import round_ste

#: Largest level count (a 4-bit pair: 31; a 6-bit device: 64; more is continuous in practice).
MAX_WEIGHT_LEVELS = 256
#: Candidate steps for the initial MSE fit, as fractions of ``max|W| / k_hi`` (geometric).
STEP_FRACTIONS = np.geomspace(1.0 / 32.0, 1.0, 97)


def check_weight_levels(n: object, *, unipolar: bool) -> int:
    """``n`` if it is a valid level count for a signed (``unipolar=False``) or unipolar layer.

    Raises:
        ConfigError: (one line) not an int, ``n < 2`` (one level is no weight at all), more than
            :data:`MAX_WEIGHT_LEVELS`, or an even ``n`` on differential pairs.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2 or n > MAX_WEIGHT_LEVELS:
        raise ConfigError(
            f"--weight-levels {n!r}: need an integer in 2..{MAX_WEIGHT_LEVELS} (3 = ternary; a single weight level "
            "carries no information)"
        )
    if not unipolar and n % 2 == 0:
        raise ConfigError(
            f"--weight-levels {n}: a signed layer on a differential pair takes an odd number of levels "
            f"(2m+1: a pair of (m+1)-level devices; 7 = 2-bit devices, 31 = 4-bit devices); "
            f"{n} levels fit single devices only (--recipe uniform --unipolar)"
        )
    return n


def level_codes(n: int, *, unipolar: bool) -> tuple[int, int]:
    """``(k_lo, k_hi)``: the integer codes of the lowest and highest level (levels = ``k·s``)."""
    return (0, n - 1) if unipolar else (-(n // 2), n // 2)


def quantize_weight(w: torch.Tensor, step: torch.Tensor, n: int, *, unipolar: bool) -> torch.Tensor:
    """``s·clip(round(w/s), k_lo, k_hi)`` with ``s = |step|``; straight-through in ``w``, LSQ
    gradient in ``step`` (autograd of this composition yields exactly the closed forms above)."""
    k_lo, k_hi = level_codes(n, unipolar=unipolar)
    s = step.abs().clamp_min(1e-12)
    return torch.clamp(round_ste(w / s), k_lo, k_hi) * s


def exported_levels(step: float, n: int, *, unipolar: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(levels, codes)``: the float32 level values ``float32(k·s)`` a layer's exported weights
    take (bit-exact: the weights are computed the same way), with their integer codes."""
    k_lo, k_hi = level_codes(n, unipolar=unipolar)
    codes = np.arange(k_lo, k_hi + 1)
    return (codes.astype(np.float32) * np.float32(abs(step))).astype(np.float32), codes


def export_weight(w: np.ndarray, step: float, n: int, *, unipolar: bool) -> np.ndarray:
    """The deployed weight: each ``w`` replaced by its level value (exactly one of
    :func:`exported_levels`)."""
    k_lo, k_hi = level_codes(n, unipolar=unipolar)
    s = np.float32(abs(step))
    codes = np.clip(np.round(np.asarray(w, dtype=np.float64) / float(s)), k_lo, k_hi).astype(np.int64)
    return (codes.astype(np.float32) * s).astype(np.float32)


def mse_step(w: np.ndarray, n: int, *, unipolar: bool) -> float:
    """The step ``s`` from :data:`STEP_FRACTIONS` of ``max|W|/k_hi`` with the least mean squared
    quantization error on ``w`` (the largest wins ties). ConfigError for an all-zero ``w``."""
    v = np.asarray(w, dtype=np.float64).ravel()
    k_lo, k_hi = level_codes(n, unipolar=unipolar)
    top = float(np.abs(v).max()) if v.size else 0.0
    if not top > 0.0:
        raise ConfigError("cannot quantize an all-zero weight tensor to levels")
    steps = STEP_FRACTIONS * top / k_hi
    errors = np.array([np.mean((np.clip(np.round(v / s), k_lo, k_hi) * s - v) ** 2) for s in steps])
    best = np.flatnonzero(errors <= errors.min() * (1 + 1e-12))
    return float(steps[best[-1]])
