"""Goodness of fit: held-out devices' readouts against draws from a personality's predictive
distribution (two-sample Kolmogorov-Smirnov, per readout time and per level).

:func:`predictive_draw` is the forward model from each device's last verify read;
:func:`goodness_of_fit` scores any personality (fitted, shipped, or another chip's) on a
recording the way :func:`~harness.calibration.calibrate.calibrate_recording` scores its own fit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Geometry
from harness.errors import CalibrationError
from harness.recording import Recording
from harness.virtual import physics as ph
from harness.virtual.personality import Personality, load_personality
from harness.calibration.data import RESET_TARGET_MAX_US, CalibrationData, load_data
from harness.calibration.levels import N_LEVELS, level_index

FloatArray = npt.NDArray[np.float64]

#: Share of devices held out of the fit for the goodness-of-fit test.
HOLDOUT_FRACTION = 0.2
#: Held-out devices compared per readout time (a seeded subsample beyond this: the KS
#: critical distance at 20,000 devices is 0.016, finer than any misfit worth reporting).
KS_MAX_DEVICES = 20_000
#: Kolmogorov-Smirnov critical coefficient at α = 0.01 (two-sample: c·sqrt((n+m)/(n·m))).
KS_C_ALPHA01 = 1.628



def ks_two_sample(a: FloatArray, b: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (max gap between the empirical CDFs)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def ks_critical(n: int, m: int) -> float:
    return KS_C_ALPHA01 * math.sqrt((n + m) / (n * m)) if n and m else math.nan


def predictive_draw(
    p: Personality, final_uS: FloatArray, x: FloatArray, t_s: FloatArray, geometry: Geometry, rng: np.random.Generator,
    reads: int = 1, bias_uS: FloatArray | float = 0.0,
) -> FloatArray:
    """One draw per device and time, (G, n), of a readout (the mean of ``reads`` reads) under
    personality ``p`` given each device's last verify read: G(t) = final + b + N(0, σ_prog² −
    σ_read(t0)² − σ_relax²) + progress(t)·N(0, σ_relax²) (the verify read's own noise, then the
    virtual chip's relaxation, complete at t0), drift |N(μ_ν, σ_ν)|, read noise at t, ADC.
    ``bias_uS`` (b): mean of G(t0) − verify read (the loop stops on a read that noise pushed
    into tolerance, so devices sit slightly below their last read)."""
    s_prog = ph.programming_noise_std(x, p)
    q = ph.read_noise_q(x, p)
    g_q = final_uS * q
    s0 = np.sqrt(np.maximum(s_prog**2 - (g_q * ph.read_noise_time_factor(p.t0_s, p)) ** 2, 0.0))
    s_relax = np.minimum(ph.relaxation_std(x, p), s0)
    s_verify = np.sqrt(s0**2 - s_relax**2)
    g_base = final_uS + bias_uS + s_verify * rng.standard_normal(x.size)
    relax = s_relax * rng.standard_normal(x.size)
    g0 = np.maximum(g_base[None, :] + ph.relaxation_progress(t_s, p)[:, None] * relax[None, :], 0.0)
    nu = ph.draw_drift_exponents(x, rng, p)
    g_t = g0 * ph.drift_factor(t_s[:, None], nu[None, :], p)
    sig = g_t * q[None, :] * ph.read_noise_time_factor(t_s, p)[:, None]
    out = np.zeros_like(g_t)
    for _ in range(reads):
        out += geometry.codes_to_uS(geometry.to_codes(g_t + sig * rng.standard_normal(g_t.shape)))
    return out / reads


def held_out_goodness(
    d: CalibrationData, p: Personality, level: npt.NDArray[np.int64], holdout: npt.NDArray[np.bool_],
    prog: npt.NDArray[np.bool_], verify_bias: FloatArray, rng: np.random.Generator,
) -> tuple[dict[str, FloatArray], dict[str, Any]]:
    """KS of held-out devices' readouts (change since the verify read) vs predictive draws."""
    idx = np.flatnonzero(holdout & prog)
    if idx.size > KS_MAX_DEVICES:
        idx = np.sort(rng.choice(idx, KS_MAX_DEVICES, replace=False))
    x = d.target_uS[idx] / d.g_max_uS
    # the observations are means of the repeats: draw means of as many reads
    obs = np.take(d.mean, idx, axis=1)
    bias = np.nan_to_num(verify_bias)[level[idx]]
    draws = predictive_draw(p, d.final_uS[idx], x, d.t_g, d.geometry, rng, reads=int(d.count_g.max()), bias_uS=bias)
    diff_o = obs - d.final_uS[idx][None, :]
    diff_p = draws - d.final_uS[idx][None, :]
    n = idx.size
    ks_t = np.array([ks_two_sample(diff_o[g], diff_p[g]) for g in range(d.t_g.size)])
    crit_t = ks_critical(n, n)
    lv = level[idx]
    ks_l = np.full(N_LEVELS, np.nan)
    crit_l = np.full(N_LEVELS, np.nan)
    mean_g = np.full((N_LEVELS, d.t_g.size), np.nan)
    fit_g = np.full((N_LEVELS, d.t_g.size), np.nan)
    for j in range(N_LEVELS):  # a loop over ~20 levels, each vectorized over its devices
        m = lv == j
        if m.sum() >= 5:
            rel_o = diff_o[:, m] / np.maximum(d.final_uS[idx][m], d.lsb_uS)[None, :]
            rel_p = diff_p[:, m] / np.maximum(d.final_uS[idx][m], d.lsb_uS)[None, :]
            ks_l[j] = ks_two_sample(rel_o.ravel(), rel_p.ravel())
            crit_l[j] = ks_critical(int(m.sum()), int(m.sum()))
            mean_g[j] = obs[:, m].mean(axis=1)
            fit_g[j] = draws[:, m].mean(axis=1)
    goodness = {
        "method": "two-sample KS: held-out devices' readouts minus their verify read vs draws from the fitted model",
        "held_out_devices": int(n),
        "ks_per_time": ks_t.tolist(),
        "ks_critical_alpha_0.01": crit_t,
        "times_s": d.t_g.tolist(),
        "ks_max": float(np.nanmax(ks_t)),
        "times_passing": int(np.sum(ks_t <= crit_t)),
    }
    return {"times_s": d.t_g, "mean_g_uS": mean_g, "fit_g_uS": fit_g, "ks": ks_l, "ks_critical": crit_l}, goodness


def goodness_of_fit(rec: Recording, personality: Personality | str, *, seed: int = 0) -> dict[str, Any]:
    """How well any personality (fitted, shipped, or another chip's) predicts ``rec``'s readouts:
    the held-out KS of :func:`~harness.calibration.calibrate.calibrate_recording` with that personality's laws. The per-level
    verify-read bias is measured on the non-held-out devices with the personality's drift law.

    Raises:
        CalibrationError: as :func:`~harness.calibration.data.load_data`, or nothing programmed converged.
    """
    p = load_personality(personality)
    rng = np.random.default_rng(seed)
    d = load_data(rec)
    holdout = rng.random(d.target_uS.size) < HOLDOUT_FRACTION
    prog = (d.target_uS > RESET_TARGET_MAX_US) & d.converged
    if not prog.any():
        raise CalibrationError(f"{rec.path}: no programmed device converged in write-verify")
    x = d.target_uS / d.g_max_uS
    _, level = level_index(x, prog)
    g1 = int(np.flatnonzero(d.t_g >= p.t0_s)[0]) if np.any(d.t_g >= p.t0_s) else 0
    mu = ph.drift_exponent_stats(x, p)[0]
    dev = d.mean[g1] * np.exp(mu * math.log(max(float(d.t_g[g1]), p.t0_s) / p.t0_s)) - d.final_uS
    use = prog & ~holdout
    n = np.bincount(level[use], minlength=N_LEVELS)
    bias = np.bincount(level[use], weights=dev[use], minlength=N_LEVELS) / np.maximum(n, 1)
    return held_out_goodness(d, p, level, holdout, prog, bias, rng)[1]
