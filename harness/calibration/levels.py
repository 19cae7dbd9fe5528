"""Levels of a calibration and the per-level estimates the laws are fitted to.

Programmed devices are grouped into ``N_LEVELS`` levels of equal width in ln x (x = G_T/g_max);
per level: the read noise as a ratio of unbiased sums, the drift exponent's (μ_ν, σ_ν) by the
moments of ν̂ inverted for the folded normal, and a spread (σ_prog). Levels with fewer than
``MIN_LEVEL_DEVICES`` devices report NaN. Everything is vectorized over devices.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Levels: equal width in ln x; a level needs this many devices to be reported.
N_LEVELS = 20
MIN_LEVEL_DEVICES = 30



def level_index(x: FloatArray, prog: npt.NDArray[np.bool_]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Level edges (N_LEVELS, equal width in ln x over the programmed devices) and each
    device's level (−1 for devices that are not programmed)."""
    xp = x[prog]
    edges = np.linspace(np.log(xp.min()), 0.0 if xp.max() <= 1 else np.log(xp.max()), N_LEVELS + 1)
    edges[-1] += 1e-9
    level = np.clip(np.searchsorted(edges, np.log(np.maximum(x, 1e-12)), side="right") - 1, 0, N_LEVELS - 1)
    level[~prog] = -1
    return edges, level


def _erfc(a: FloatArray) -> FloatArray:
    """Elementwise erfc (arrays here are one value per level: a few dozen)."""
    return np.array([math.erfc(float(v)) for v in np.ravel(a)]).reshape(np.shape(a))


def _folded_normal_params(m1: FloatArray, m2: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(μ, σ) of N(μ, σ) whose absolute value has mean ``m1`` and second moment ``m2``.

    E|X| = σ·sqrt(2/π)·exp(−r²/2) + μ·(1 − 2Φ(−r)), E X² = μ² + σ², r = μ/σ; the ratio
    m1/sqrt(m2) rises monotonically in r from sqrt(2/π), solved by bisection (vectorized)."""
    m1 = np.asarray(m1, dtype=np.float64)
    m2 = np.maximum(np.asarray(m2, dtype=np.float64), m1 * m1 * (1 + 1e-12))
    target = np.clip(m1 / np.sqrt(m2), math.sqrt(2 / math.pi) + 1e-9, 1.0)

    def ratio(r: FloatArray) -> FloatArray:
        phi_neg = 0.5 * _erfc(r / math.sqrt(2))  # Φ(−r)
        e1 = math.sqrt(2 / math.pi) * np.exp(-r * r / 2) + r * (1 - 2 * phi_neg)
        return e1 / np.sqrt(1 + r * r)

    lo, hi = np.zeros_like(target), np.full_like(target, 50.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        up = ratio(mid) < target
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    r = (lo + hi) / 2
    sigma = np.sqrt(m2 / (1 + r * r))
    return r * sigma, sigma


def level_ratio(
    num: FloatArray, den: FloatArray, level: npt.NDArray[np.int64], use: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Per level sqrt(Σ num / Σ den) (a ratio of unbiased sums), its SE, device count."""
    m = use & (level >= 0) & np.isfinite(num) & np.isfinite(den)
    lv = level[m]
    n = np.bincount(lv, minlength=N_LEVELS)
    sn = np.bincount(lv, weights=num[m], minlength=N_LEVELS)
    sd = np.bincount(lv, weights=den[m], minlength=N_LEVELS)
    with np.errstate(invalid="ignore", divide="ignore"):
        q2 = sn / sd
        # SE of a ratio estimator: the spread of num − q²·den per device
        r = num[m] - q2[lv] * den[m]
        var_r = np.bincount(lv, weights=r * r, minlength=N_LEVELS) / np.maximum(n - 1, 1)
        se_q2 = np.sqrt(var_r * n) / sd
        q = np.sqrt(np.maximum(q2, 0.0))
        se_q = se_q2 / (2 * np.maximum(q, 1e-12))
    q[n < MIN_LEVEL_DEVICES] = np.nan
    se_q[n < MIN_LEVEL_DEVICES] = np.nan
    return q, se_q, n


def level_nu(
    nu_hat: FloatArray, se2: FloatArray, level: npt.NDArray[np.int64], use: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Per level (μ_ν, SE, σ_ν, SE, n): moments of ν̂ minus the estimation variance, inverted
    for the folded normal."""
    m = use & (level >= 0) & np.isfinite(nu_hat)
    lv = level[m]
    n = np.bincount(lv, minlength=N_LEVELS)
    nn = np.maximum(n, 1)
    m1 = np.bincount(lv, weights=nu_hat[m], minlength=N_LEVELS) / nn
    m2_raw = np.bincount(lv, weights=nu_hat[m] ** 2, minlength=N_LEVELS) / nn
    var_raw = (m2_raw - m1 * m1) * nn / np.maximum(n - 1, 1)
    e2 = np.bincount(lv, weights=se2[m], minlength=N_LEVELS) / nn
    var_nu = np.maximum(var_raw - e2, 1e-12)
    mu, sigma = _folded_normal_params(m1, var_nu + m1 * m1)
    mu_se = np.sqrt(var_raw / nn)
    sigma_se = var_raw * np.sqrt(2.0 / np.maximum(n - 1, 1)) / (2 * np.maximum(sigma, 1e-9))
    few = n < MIN_LEVEL_DEVICES
    for a in (mu, mu_se, sigma, sigma_se):
        a[few] = np.nan
    return mu, mu_se, sigma, sigma_se, n


def level_sigma(
    dev: FloatArray, extra: FloatArray, level: npt.NDArray[np.int64], use: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64], FloatArray]:
    """Per level sqrt(var(dev) + mean(extra)), its SE, the device count and the mean of ``dev``.

    The SE uses the level's own fourth moment, var(s²) ≈ (m₄ − s⁴)/n, plus the sampling
    error of mean(extra): ``dev`` is not normal (the write-verify loop leaves a tolerance
    window under the relaxation), and the normal-theory s²·sqrt(2/(n−1)) understated the
    spread of the level values by 10-50 % (measured over simulated re-recordings of
    pcm-90nm), which made BIC pick a cubic σ_prog for a quadratic truth too often."""
    m = use & (level >= 0) & np.isfinite(dev)
    lv = level[m]
    n = np.bincount(lv, minlength=N_LEVELS)
    nn = np.maximum(n, 1)
    m1 = np.bincount(lv, weights=dev[m], minlength=N_LEVELS) / nn
    r = dev[m] - m1[lv]
    var = np.bincount(lv, weights=r * r, minlength=N_LEVELS) / np.maximum(n - 1, 1)
    m4 = np.bincount(lv, weights=r**4, minlength=N_LEVELS) / nn
    ex = np.bincount(lv, weights=extra[m], minlength=N_LEVELS) / nn
    ex_var = np.bincount(lv, weights=(extra[m] - ex[lv]) ** 2, minlength=N_LEVELS) / np.maximum(n - 1, 1)
    with np.errstate(invalid="ignore"):
        s = np.sqrt(np.maximum(var + ex, 0.0))
        se_var = np.sqrt(np.maximum(m4 - var * var, 0.0) / nn + ex_var / nn)
        se = se_var / np.maximum(2 * s, 1e-9)
    s[n < 2] = np.nan
    return s, se, n, m1
