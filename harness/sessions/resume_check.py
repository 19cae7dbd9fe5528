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

The same chip passes both on all but a few cells. Both look only at the level of each
cell, so a chip reprogrammed with the same model (the same targets, and so the same levels)
passes them. A third test, the **fingerprint**, compares the programming noise itself:

* for each checked cell its deviation from its target, minus the median deviation of the
  cells with similar targets (``FINGERPRINT_BINS`` quantile bins of the target: drift and
  relaxation shift every level by its own amount), is taken in the reference readout
  ("then") and in two back-to-back check reads ("now", "now again");
* the correlation across cells of then with now, ``ρ_then,now``, must reach
  ``FINGERPRINT_FRACTION · k · ρ_now,now − FINGERPRINT_SIGMAS / √n``: ``ρ_now,now``
  measures how much of the deviation is the chip's own (not read noise) on the chip being
  checked, so the bound needs no noise model; ``k = sqrt(1 − V_drift/V_now)`` discounts
  the part drift added since then (per-cell spread ``G·σ_ν·ln T``, ``σ_ν`` the
  personality's ceiling), so a long gap makes it inconclusive instead of refusing. The same chip gives a ratio ``ρ_then,now / ρ_now,now``
  near 1 (0.88–1.05 measured on the 64×256 emulator at interruptions from 62 s to 9.7 h,
  ~2,500 cells); another chip of the same design programmed alike ~0 (|ρ| < 0.03). A chip
  reprogrammed with the same model and read before it has aged as long as the recording
  gives 0.35–0.55; once it has aged as long, 0.9–1.05: in the virtual chip's model a
  cell's deviation at a given age is mostly its own (drift exponent and relaxation are
  drawn per device at fabrication), and write-verify leaves only its ±tolerance, too
  little to see under read noise. With ``n ≥ 1,000`` cells, ``1/√n ≤ 0.03``.
  Fewer than ``FINGERPRINT_MIN_CELLS`` checked cells, or a chip whose deviations are
  all read noise (the bound ≤ 0), make the fingerprint inconclusive; it then passes and
  the summary says so.

A seeded emulator restarted and reprogrammed with exactly the calls of the first
programming even reproduces the same draws. :func:`harness.sessions.resume.verify_chip`
therefore also checks the chip clock:
a chip whose clock reads less than the chip time of the last recorded readout restarted
since (emulator restart, power cycle, reprogramming).

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
SAMPLE_CELLS = 4096
MIN_SAMPLE = 16
#: Fingerprint (see module docstring): target quantile bins for the level trend, the
#: fraction of the now/now correlation the then/now correlation must reach, its allowance
#: in standard errors (1/√n), and the cells below which it is inconclusive.
FINGERPRINT_BINS = 16
FINGERPRINT_FRACTION = 0.7
FINGERPRINT_SIGMAS = 2.0
FINGERPRINT_MIN_CELLS = 256
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
    #: fingerprint: correlation then/now, now/now, and the least then/now allowed (nan: inconclusive)
    rho_then_now: float = math.nan
    rho_now_now: float = math.nan
    rho_min: float = math.nan

    @property
    def fingerprint_agrees(self) -> bool:
        """The programming noise matches (True when inconclusive: see module docstring)."""
        return not (self.rho_min > 0.0) or self.rho_then_now >= self.rho_min

    @property
    def levels_agree(self) -> bool:
        if self.n_checked < MIN_SAMPLE:
            return True
        return self.n_agree >= MIN_AGREE * self.n_checked and self.median_lo <= self.median_ratio <= self.median_hi

    @property
    def agrees(self) -> bool:
        return self.levels_agree and self.fingerprint_agrees

    def summary(self) -> dict[str, Any]:
        return {
            "cells_checked": self.n_checked,
            "cells_agreeing": self.n_agree,
            "median_ratio_now_to_ref": self.median_ratio,
            "median_ratio_allowed": [self.median_lo, self.median_hi],
            "t_ref_s": self.t_ref_s,
            "t_now_s": self.t_now_s,
            "reference": self.reference,
            "fingerprint": {
                "rho_then_now": _num(self.rho_then_now),
                "rho_now_now": _num(self.rho_now_now),
                "rho_min": _num(self.rho_min),
                "conclusive": bool(self.rho_min > 0.0),
                "agrees": self.fingerprint_agrees,
            },
            "agrees": self.agrees,
        }

    def explain(self) -> str:
        """One line: what was compared and how it disagreed."""
        if self.levels_agree and not self.fingerprint_agrees:
            return (
                f"its programming noise does not match the {self.reference}: deviations from target correlate "
                f"{self.rho_then_now:.3f} then/now across {self.n_checked} cells, {self.rho_now_now:.3f} between two "
                f"reads now (the same chip reaches at least {self.rho_min:.3f}; a reprogrammed or another chip does not)"
            )
        return (
            f"{self.n_agree} of {self.n_checked} programmed cells read within drift and read noise of the "
            f"{self.reference} at t = {self.t_ref_s:.6g} s, median G now/then = {self.median_ratio:.4g} "
            f"(drift allows {self.median_lo:.3g}..{self.median_hi:.3g} at t = {max(self.t_now_s, self.t_ref_s):.6g} s)"
        )


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def residuals(g_uS: npt.NDArray[np.float64], target_uS: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each cell's deviation from its target minus the median deviation of its target bin
    (:data:`FINGERPRINT_BINS` quantile bins): what is the cell's own, not its level's."""
    dev = g_uS - target_uS
    out = np.empty_like(dev)
    for part in np.array_split(np.argsort(target_uS, kind="stable"), FINGERPRINT_BINS):
        if part.size:
            out[part] = dev[part] - np.median(dev[part])
    return out


def _corr(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> float:
    sa, sb = float(a.std()), float(b.std())
    if sa == 0.0 or sb == 0.0:
        return 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def fingerprint(
    target_uS: npt.ArrayLike,
    g_ref_uS: npt.ArrayLike,
    g_now_uS: npt.ArrayLike,
    g_again_uS: npt.ArrayLike,
    drift_sd: float = 0.0,
) -> tuple[float, float, float]:
    """(ρ then/now, ρ now/now, least ρ then/now the same chip gives; nan where inconclusive).

    ``drift_sd``: spread of the drift between the two times, as a fraction of G
    (``σ_ν · ln T``): that much of the deviation now is new since then, so the bound is
    lowered by ``sqrt(1 − V_drift / V_now)`` (a long gap makes the fingerprint inconclusive
    rather than refuse the same chip)."""
    t = np.asarray(target_uS, dtype=np.float64)
    n = t.size
    if n < FINGERPRINT_MIN_CELLS:
        return math.nan, math.nan, math.nan
    ref = residuals(np.asarray(g_ref_uS, dtype=np.float64), t)
    now = residuals(np.asarray(g_now_uS, dtype=np.float64), t)
    again = residuals(np.asarray(g_again_uS, dtype=np.float64), t)
    rho_tn, rho_nn = _corr(ref, now), _corr(now, again)
    v_now = float(now.var())
    v_drift = float(np.mean((np.asarray(g_ref_uS, dtype=np.float64) * drift_sd) ** 2))
    kept = math.sqrt(max(0.0, 1.0 - v_drift / v_now)) if v_now > 0 else 0.0
    rho_min = FINGERPRINT_FRACTION * kept * rho_nn - FINGERPRINT_SIGMAS / math.sqrt(n)
    return rho_tn, rho_nn, (rho_min if rho_min > 0.0 else math.nan)


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
    target_uS: npt.ArrayLike | None = None,
    g_again_uS: npt.ArrayLike | None = None,
) -> ChipCheck:
    """Compare a check read ``g_now_uS`` at ``t_now_s`` with ``g_ref_uS`` read at ``t_ref_s``.

    With the cells' ``target_uS`` and a second check read ``g_again_uS`` (right after the
    first) the programming-noise fingerprint is compared too (module docstring).

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
    fp = (math.nan,) * 3
    if target_uS is not None and g_again_uS is not None:
        fp = fingerprint(target_uS, ref, now, g_again_uS, drift_sd=p.nu_std.max * ln_t)
    return ChipCheck(
        n_checked=int(ref.size),
        n_agree=int(ok.sum()),
        median_ratio=ratio,
        median_lo=math.exp(-NU_MEDIAN_MAX * scale * ln_t - LOG_SLACK),
        median_hi=math.exp(LOG_SLACK),
        t_ref_s=float(t_ref_s),
        t_now_s=float(t_now_s),
        reference=reference,
        rho_then_now=fp[0],
        rho_now_now=fp[1],
        rho_min=fp[2],
    )


__all__ = ["MIN_AGREE", "NU_MAX", "ChipCheck", "check_against", "fingerprint", "residuals", "sample_positions"]
