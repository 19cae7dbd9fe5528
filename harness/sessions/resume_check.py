"""Is this the chip that was recorded? The check read ``session resume`` makes before appending.

A sample of programmed cells is read and compared with the last committed readout (or,
before any readout, with the programming outcome) under the drift law of Nandakumar 2019; Joshi 2020:
``G(t) = G(t_ref) · (max(t, t0)/max(t_ref, t0))^−ν`` with ``ν ≥ 0``, so a cell may only
have lost conductance since the reference, by at most the factor ``ν = NU_MAX`` allows,
give or take read noise at both reads and one ADC step. Two tests must both pass:

* per cell: at least ``MIN_AGREE`` of the sample lies in that band (catches a chip
  programmed differently, whatever the gap);
* for the sample: the median log ratio ``ln(G_now/G_ref)`` lies in
  ``[−NU_MEDIAN_MAX·ln(T) − LOG_SLACK, +LOG_SLACK]``, ``T`` the drift time ratio: the
  median device drifts with μ_ν ≤ 0.1, so a blank chip (every cell near RESET, a ratio of
  ~0.01) fails even after a gap of years, when the per-cell band alone is too wide.

The same chip passes both on all but a few cells.

Constants come from the chip's personality (a virtual chip's own, else the default
``pcm-90nm``: Nandakumar 2019; Joshi 2020, aihwkit ``PCMLikeNoiseModel``): t0 = 20 s, μ_ν ≤ 0.1 and
σ_ν ≤ 0.045, so ``NU_MAX = 0.4`` (μ + 6.7σ) bounds every device's exponent (for another
personality: its μ_ν ceiling + 6.7 × its σ_ν ceiling); the read noise
``σ_read = G·Q_s(x)·sqrt(ln((t + t_read)/(2 t_read)))`` is allowed ``NOISE_SIGMAS = 5`` times
at each read. ``MIN_AGREE = 0.9``: at most a tenth of the sample may fall outside the band
(5σ bands leave ~1e-6 of honest cells outside; weak devices are 0.3 %).
``NU_MEDIAN_MAX = 0.15`` is μ_ν's ceiling 0.1 plus the fold of |N(μ, σ)| and margin;
``LOG_SLACK = 0.3`` covers the median's read noise (σ/G ≤ 0.13 at 1 day above 5 µS,
derived from Nandakumar 2019, docs/references.md, over ≥ 16 cells), an ADC step and post-programming relaxation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.virtual import physics as ph
from harness.virtual.personality import Personality, default_personality

#: Largest drift exponent a programmed device can have (see module docstring).
NU_MAX = 0.4
#: Read-noise allowance, in standard deviations, at each of the two reads.
NOISE_SIGMAS = 5.0
#: Fraction of the sampled cells that must lie in the band for the chip to agree.
MIN_AGREE = 0.9
#: Ceiling of the sample's median drift exponent, and the slack (natural log) of its test.
NU_MEDIAN_MAX = 0.15
LOG_SLACK = 0.3
#: Cells sampled (evenly spaced over the programmed cells), and the least that is a check.
SAMPLE_CELLS = 256
MIN_SAMPLE = 16
#: Reference conductance (µS) a cell needs to be sampled: well above RESET (≈0.05 µS),
#: so a blank chip cannot agree.
MIN_REF_US = 2.0


@dataclass(frozen=True)
class ChipCheck:
    """Outcome of one check read (all conductances µS, times s since programming)."""

    n_checked: int
    n_agree: int
    median_ratio: float
    median_lo: float
    median_hi: float
    t_ref_s: float
    t_now_s: float
    reference: str

    @property
    def agrees(self) -> bool:
        if self.n_checked < MIN_SAMPLE:
            return True
        return self.n_agree >= MIN_AGREE * self.n_checked and self.median_lo <= self.median_ratio <= self.median_hi

    def summary(self) -> dict[str, Any]:
        return {
            "cells_checked": self.n_checked,
            "cells_agreeing": self.n_agree,
            "median_ratio_now_to_ref": self.median_ratio,
            "median_ratio_allowed": [self.median_lo, self.median_hi],
            "t_ref_s": self.t_ref_s,
            "t_now_s": self.t_now_s,
            "reference": self.reference,
            "agrees": self.agrees,
        }

    def explain(self) -> str:
        """One line: what was compared and how it disagreed."""
        return (
            f"{self.n_agree} of {self.n_checked} programmed cells read within drift and read noise of the "
            f"{self.reference} at t = {self.t_ref_s:.6g} s, median G now/then = {self.median_ratio:.4g} "
            f"(drift allows {self.median_lo:.3g}..{self.median_hi:.3g} at t = {max(self.t_now_s, self.t_ref_s):.6g} s)"
        )


def sample_positions(g_ref_uS: npt.ArrayLike, k: int = SAMPLE_CELLS) -> npt.NDArray[np.int64]:
    """Up to ``k`` positions of ``g_ref_uS`` at or above :data:`MIN_REF_US`, evenly spaced."""
    ok = np.flatnonzero(np.asarray(g_ref_uS, dtype=np.float64) >= MIN_REF_US)
    if ok.size <= k:
        return ok.astype(np.int64)
    return ok[np.linspace(0, ok.size - 1, k).round().astype(np.int64)].astype(np.int64)


def _noise_std(g_uS: npt.NDArray[np.float64], t_s: float, p: Personality) -> npt.NDArray[np.float64]:
    x = ph.normalized(g_uS, p.g_max_uS)
    return ph.read_noise_std(g_uS, x, max(t_s, p.t0_s), p)


def check_against(
    g_ref_uS: npt.ArrayLike,
    g_now_uS: npt.ArrayLike,
    t_ref_s: float,
    t_now_s: float,
    *,
    lsb_uS: float,
    reference: str,
    personality: Personality | None = None,
) -> ChipCheck:
    """Compare a check read ``g_now_uS`` at ``t_now_s`` with ``g_ref_uS`` read at ``t_ref_s``.

    ``t_now_s`` earlier than ``t_ref_s`` (a clock that cannot tell, e.g. a simulated one
    after a reconnect) is taken as ``t_ref_s``: no drift, only noise. ``personality``:
    the chip's physical constants (default ``pcm-90nm``).
    """
    p = default_personality() if personality is None else personality
    scale = max(p.nu_mean.max / 0.1, 1.0)  # NU_* are stated for pcm-90nm's μ_ν ceiling 0.1
    nu_max = max(NU_MAX, p.nu_mean.max + 6.7 * p.nu_std.max)
    ref = np.asarray(g_ref_uS, dtype=np.float64)
    now = np.asarray(g_now_uS, dtype=np.float64)
    t_now = max(t_now_s, t_ref_s)
    ln_t = math.log(max(t_now, p.t0_s) / max(t_ref_s, p.t0_s))
    factor = math.exp(-nu_max * ln_t)
    tol = NOISE_SIGMAS * np.hypot(_noise_std(ref, t_ref_s, p), _noise_std(ref, t_now, p)) + lsb_uS
    ok = (now >= ref * factor - tol) & (now <= ref + tol)
    ratio = float(np.exp(np.median(np.log(np.maximum(now, 1e-6) / ref)))) if ref.size else math.nan
    return ChipCheck(
        n_checked=int(ref.size),
        n_agree=int(ok.sum()),
        median_ratio=ratio,
        median_lo=math.exp(-NU_MEDIAN_MAX * scale * ln_t - LOG_SLACK),
        median_hi=math.exp(LOG_SLACK),
        t_ref_s=float(t_ref_s),
        t_now_s=float(t_now_s),
        reference=reference,
    )


__all__ = ["MIN_AGREE", "NU_MAX", "ChipCheck", "check_against", "sample_positions"]
