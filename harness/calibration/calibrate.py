"""Fit a chip personality to a recording: the physics behind ``harness calibrate``.

From one recording (targets, write-verify outcome, timed readouts; any backend) this fits
the constants of :mod:`harness.virtual.physics` that the data identify, with confidence
intervals, and writes them as a :class:`~harness.virtual.personality.Personality` that
``virtual?personality=PATH`` loads. The method (docs/calibration.md):

1. **Devices and levels.** Programmed devices are those with a target above the RESET
   level that converged in write-verify; RESET partners (target 0) give the RESET
   level. Programmed devices are grouped into levels of equal width in ln x (x = G_T/g_max).
2. **t0** by profile least squares of every device's log-log drift line over candidate t0;
   when all readouts come after t0 the profile is flat and t0 is not identified (kept).
3. **Drift**: per device ν̂ = −slope of ln G vs ln(t/t0) over the readouts at t ≥ t0
   (means of the repeats), with a second-order correction of the log's bias from the
   read-noise law; per level, the spread of ν̂ minus its known estimation variance gives
   var(ν), and (mean, second moment) are inverted for the folded normal ν = |N(μ_ν, σ_ν)|.
   μ_ν(x) and σ_ν(x) are then fitted in the published clipped-log form (Nandakumar 2019).
4. **Read noise**: from the repeats (within-time variance) when the session took k ≥ 2
   reads per time, else from the residuals of the drift lines; per level Q_s, then the
   power law Q_s = q_coef / x^q_exp.
5. **Programming noise**: per level, the spread at t0 of the first readout (drift-corrected)
   around each device's last verify read, minus the read-noise and drift-spread terms the
   virtual chip adds separately, plus the read noise at t0 the published σ_prog includes;
   then a polynomial σ_prog(x) (degree by BIC, 1..3).
6. **Goodness of fit**: a seeded 20 % of the devices is held out of every fit; their
   readouts are compared with draws from the fitted model's predictive distribution
   (two-sample Kolmogorov-Smirnov, per readout time and per level).

Constants the data cannot identify (pulse response, weak devices, t_read, clip bounds never
reached in the observed x range) are taken from a base personality and flagged.
Everything is vectorized over devices (no Python loop per device).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.chip.protocol import Geometry
from harness.errors import CalibrationError
from harness.recording import Recording
from harness.virtual import physics as ph
from harness.virtual.personality import ClippedLog, Personality, load_personality

FloatArray = npt.NDArray[np.float64]

#: Targets at or below this (µS) are RESET partners of differential pairs (the mapping gives
#: them exactly 0; any positive target is programmed by write-verify).
RESET_TARGET_MAX_US = 0.0
#: Smallest x whose devices enter the log-domain drift fit: below it the relative read noise
#: (Q_s ≥ 0.1 at 90 nm) and the ADC step make ln G too noisy and biased to fit a slope.
X_DRIFT_MIN = 0.05
#: Read-noise levels enter the Q_s law only while Q_s·f(t_last) stays below this.
MAX_REL_READ_NOISE = 0.3
#: Levels: equal width in ln x; a level needs this many devices to be reported.
N_LEVELS = 20
MIN_LEVEL_DEVICES = 30
#: A clipped segment of a drift law must hold at least this many levels (one or two
#: outlying levels at the edge of the observed range never define a clip bound).
MIN_CLIP_LEVELS = 3
#: Share of devices held out of the fit for the goodness-of-fit test.
HOLDOUT_FRACTION = 0.2
#: Parametric-bootstrap replicates for the confidence intervals (95 %).
N_BOOTSTRAP = 400
#: Held-out devices compared per readout time (a seeded subsample beyond this: the KS
#: critical distance at 20,000 devices is 0.016, finer than any misfit worth reporting).
KS_MAX_DEVICES = 20_000
#: Kolmogorov-Smirnov critical coefficient at α = 0.01 (two-sample: c·sqrt((n+m)/(n·m))).
KS_C_ALPHA01 = 1.628
#: Candidate t0 values per decade of the profile scan.
T0_GRID_PER_DECADE = 24
#: Devices used for the t0 profile (a seeded subsample: the profile is a sum over devices).
T0_PROFILE_DEVICES = 30_000


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


def _finite_list(a: npt.ArrayLike) -> Any:
    """``a.tolist()`` with NaN/inf as None (JSON has no NaN)."""
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        return arr.tolist()
    if arr.ndim > 1:
        return [_finite_list(row) for row in arr]
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
        return {k: _finite_list(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate_recording` returns; ``personality`` is ready to save."""

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


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class _Data:
    """Readouts of the layout's devices, grouped by scheduled time (repeats averaged)."""

    t_g: FloatArray  # (G,) time of each group (s since programming)
    count_g: FloatArray  # (G,) reads in each group
    mean: FloatArray  # (G, n) mean of the repeats, µS
    var: FloatArray | None  # (G, n) within-group variance (None without repeats)
    target_uS: FloatArray  # (n,)
    final_uS: FloatArray  # (n,) last verify read
    converged: npt.NDArray[np.bool_]
    iterations: npt.NDArray[np.int64]
    lsb_uS: float
    g_max_uS: float
    repeats: int
    geometry: Geometry


def _positions(cells: npt.NDArray[np.int64], among: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    order = np.argsort(among, kind="stable")
    i = np.searchsorted(among, cells, sorter=order)
    i = np.minimum(i, among.size - 1)
    found = among[order[i]] == cells if among.size else np.zeros(cells.size, bool)
    return np.where(found, order[i], -1)


def load_data(rec: Recording, readouts: FloatArray | None = None) -> _Data:
    """Group the recording's readouts by scheduled time; checks the bad inputs.

    Raises:
        CalibrationError: fewer than two readouts, no programming outcome for the layout.
    """
    where = str(rec.path)
    n_read = rec.n_readouts
    if n_read < 2:
        raise CalibrationError(f"{where} holds {n_read} readout(s); calibration needs at least 2 (a drift needs two times)")
    lay = rec.layout
    prog = rec.programming
    if prog.cells.size == 0:
        raise CalibrationError(f"{where} has no programming outcome (no device was programmed); record a session")
    pos = _positions(lay.cells, rec.readout_cells)
    ppos = _positions(lay.cells, prog.cells)
    keep = (pos >= 0) & (ppos >= 0)
    if not keep.any():
        raise CalibrationError(f"{where}: no device of the layout has both a programming outcome and readouts")
    y = rec.readouts() if readouts is None else readouts
    cols = pos[keep]
    y = np.take(y, cols, axis=1) if cols.size != y.shape[1] or np.any(cols != np.arange(cols.size)) else y
    sched = rec.extra("schedule_index") if "schedule_index" in rec.extra_names else np.arange(n_read)
    if np.any(sched < 0):
        sched = np.arange(n_read)
    starts = np.flatnonzero(np.r_[True, np.diff(sched) != 0])
    counts = np.diff(np.r_[starts, n_read]).astype(np.float64)
    t = rec.times_s
    t_g = np.add.reduceat(t, starts) / counts
    repeats = int(counts.max())
    # one read per time (the usual session): the readouts are the means, no copy
    mean = y if repeats == 1 else np.add.reduceat(y, starts, axis=0) / counts[:, None]
    var = None
    if repeats >= 2:
        sq = np.add.reduceat(y * y, starts, axis=0) / counts[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(counts[:, None] >= 2, (sq - mean * mean) * (counts / np.maximum(counts - 1, 1))[:, None], np.nan)
    geo = rec.geometry
    return _Data(
        t_g=t_g, count_g=counts, mean=mean, var=var,
        target_uS=np.asarray(lay.target_uS, dtype=np.float64)[keep],
        final_uS=np.asarray(prog.final_uS, dtype=np.float64)[ppos[keep]],
        converged=np.asarray(prog.converged, dtype=bool)[ppos[keep]],
        iterations=np.asarray(prog.iterations, dtype=np.int64)[ppos[keep]],
        lsb_uS=geo.adc_lsb_uS, g_max_uS=geo.g_max_uS, repeats=repeats, geometry=geo,
    )


# ----------------------------------------------------------------------------- statistics helpers


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


def fit_clipped_log(
    ln_x: FloatArray, y: FloatArray, se: FloatArray, base: ClippedLog, n_boot: int, rng: np.random.Generator
) -> tuple[ClippedLog, dict[str, tuple[float, float, bool]]]:
    """Weighted fit of clip(a·ln x + b, lo, hi) to per-level values.

    The levels (sorted by ln x) are split into [clipped | linear | clipped] by enumerating
    both breakpoints (each segment fitted in closed form; the split with the least BIC
    wins; a clipped segment needs MIN_CLIP_LEVELS levels). A clip bound with no level in its segment is not identified: it is set to the
    base value, moved outward if needed so that it does not cut the fitted line over the
    observed range. CIs: parametric bootstrap of the level values, split held fixed.
    Returns the law and ``{name: (ci_low, ci_high, identified)}``.
    """
    order = np.argsort(ln_x)
    u, v, w = ln_x[order], y[order], 1.0 / np.maximum(se[order], 1e-12) ** 2
    k = u.size
    if k < 2:
        raise CalibrationError("a drift-exponent law needs at least 2 levels with enough devices")

    def seg_fit(vv: FloatArray, i: int, j: int) -> tuple[float, float, float, float, float]:
        """(a, b, c_left, c_right, chi²) for split [0,i) clipped, [i,j) linear, [j,k) clipped."""
        chi = 0.0
        cl = cr = math.nan
        if i > 0:
            cl = float(np.average(vv[:i], weights=w[:i]))
            chi += float(np.sum(w[:i] * (vv[:i] - cl) ** 2))
        if j < k:
            cr = float(np.average(vv[j:], weights=w[j:]))
            chi += float(np.sum(w[j:] * (vv[j:] - cr) ** 2))
        uu, ww, yy = u[i:j], w[i:j], vv[i:j]
        um = np.average(uu, weights=ww)
        ym = np.average(yy, weights=ww)
        suu = float(np.sum(ww * (uu - um) ** 2))
        a = float(np.sum(ww * (uu - um) * (yy - ym)) / suu) if suu > 0 else 0.0
        b = float(ym - a * um)
        chi += float(np.sum(ww * (yy - (a * uu + b)) ** 2))
        return a, b, cl, cr, chi

    best: tuple[float, int, int] | None = None
    for i in range(k - 1):
        for j in range(i + 2, k + 1):
            if 0 < i < MIN_CLIP_LEVELS or k - MIN_CLIP_LEVELS < j < k:  # a clip needs several levels
                continue
            a, b, cl, cr, chi = seg_fit(v, i, j)
            # the clipped values must sit where the line would cross them (continuity within a step)
            if i > 0 and not (min(a * u[i - 1] + b, a * u[i] + b) - 3 / math.sqrt(w[i - 1]) <= cl):
                continue
            if j < k and not (cr <= max(a * u[j - 1] + b, a * u[j] + b) + 3 / math.sqrt(w[j])):
                continue
            n_par = 2 + 2 * (i > 0) + 2 * (j < k)  # a clip costs its value and its breakpoint
            bic = chi + n_par * math.log(k)
            if best is None or bic < best[0]:
                best = (bic, i, j)
    if best is None:
        best = (0.0, 0, k)
    _, i, j = best

    def law(vv: FloatArray) -> tuple[float, float, float, float]:
        a, b, cl, cr, _ = seg_fit(vv, i, j)
        line_lo, line_hi = a * u[0] + b, a * u[-1] + b  # line at both ends of the observed range
        left = cl if i > 0 else None
        right = cr if j < k else None
        # the clip on the small-x side is the max for a falling law (the published form)
        if a <= 0:
            hi = left if left is not None else max(base.max, line_lo)
            lo = right if right is not None else min(base.min, line_hi)
        else:
            lo = left if left is not None else min(base.min, line_lo)
            hi = right if right is not None else max(base.max, line_hi)
        return a, b, max(lo, 0.0), max(hi, lo, 0.0)

    a, b, lo, hi = law(v)
    boot = np.array([law(v + rng.standard_normal(k) / np.sqrt(w)) for _ in range(n_boot)])
    q = np.percentile(boot, [2.5, 97.5], axis=0)
    falling = a <= 0
    id_lo = (j < k) if falling else (i > 0)
    id_hi = (i > 0) if falling else (j < k)
    cis = {
        "ln_coef": (float(q[0, 0]), float(q[1, 0]), True),
        "offset": (float(q[0, 1]), float(q[1, 1]), True),
        "min": (float(q[0, 2]), float(q[1, 2]), id_lo),
        "max": (float(q[0, 3]), float(q[1, 3]), id_hi),
    }
    return ClippedLog(ln_coef=a, offset=b, min=lo, max=hi), cis


def _poly_fit(x: FloatArray, y: FloatArray, se: FloatArray, degree: int) -> tuple[FloatArray, FloatArray, float]:
    """Weighted least squares polynomial (ascending coefficients), its covariance, χ²."""
    w = 1.0 / np.maximum(se, 1e-12)
    a = np.vander(x, degree + 1, increasing=True)
    coef, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    resid = (a @ coef - y) * w
    cov = np.linalg.pinv((a * w[:, None]).T @ (a * w[:, None]))
    return np.asarray(coef, dtype=np.float64), np.asarray(cov, dtype=np.float64), float(resid @ resid)


def ks_two_sample(a: FloatArray, b: FloatArray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (max gap between the empirical CDFs)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


def _ks_critical(n: int, m: int) -> float:
    return KS_C_ALPHA01 * math.sqrt((n + m) / (n * m)) if n and m else math.nan


# ----------------------------------------------------------------------------- the fit


def calibrate_recording(
    rec: Recording,
    *,
    base: Personality | str | None = None,
    name: str | None = None,
    seed: int = 0,
    prog_degree: int | None = None,
    readouts: FloatArray | None = None,
    progress: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Fit a personality to ``rec`` (see the module docstring for the method).

    Args:
        base: personality that supplies the constants the data cannot identify
            (default ``pcm-90nm``).
        name: the fitted personality's name (default ``fitted-<recording stem>``).
        seed: seeds the hold-out split and the bootstrap.
        prog_degree: degree of the σ_prog polynomial (None: chosen by BIC among 1..3).
        readouts: the recording's readouts if already in memory (``rec.readouts()``).
        progress: called with a short message before each stage.

    Raises:
        CalibrationError: fewer than two readouts, no programming outcome, all programmed
            devices at one level, too few devices, no readout after t0.
    """
    say = progress or (lambda _msg: None)
    base_p = load_personality(base)
    rng = np.random.default_rng(seed)
    where = str(rec.path)
    say("reading readouts")
    d = load_data(rec, readouts)
    warnings: list[str] = []

    n_all = d.target_uS.size
    holdout = rng.random(n_all) < HOLDOUT_FRACTION
    is_reset = d.target_uS <= RESET_TARGET_MAX_US
    prog_mask = ~is_reset & d.converged
    if not prog_mask.any():
        raise CalibrationError(
            f"{where}: no programmed device converged in write-verify; there is no programming outcome to fit"
        )
    x_all = d.target_uS / d.g_max_uS
    ln_x_all = np.log(np.maximum(x_all, 1e-12))
    xp = x_all[prog_mask]
    if np.ptp(np.log(xp)) < 0.2 or np.unique(np.round(d.target_uS[prog_mask], 9)).size < 3:
        raise CalibrationError(
            f"{where}: all {int(prog_mask.sum())} programmed devices are at one level "
            f"(targets {d.target_uS[prog_mask].min():.4g}..{d.target_uS[prog_mask].max():.4g} µS); the laws in x need "
            "targets spread over the conductance range (e.g. a calibration pattern, docs/calibration.md)"
        )

    # -- levels: equal width in ln x over the programmed range
    edges, level_all = _level_index(x_all, prog_mask)

    # -- t0 by profile least squares
    say("fitting t0")
    t_g = d.t_g
    lsb = d.lsb_uS
    idx_d = np.flatnonzero(prog_mask & (x_all >= X_DRIFT_MIN))  # devices of the drift fit
    # np.take keeps C order (a fancy column gather does not, and products over it are slow)
    ln_mean = np.log(np.maximum(np.take(d.mean, idx_d, axis=1), lsb / 2))  # (G, n_drift)
    t0, t0_ci, t0_identified = _fit_t0(t_g, ln_mean, ~holdout[idx_d], base_p.t0_s, rng)
    after = t_g >= t0 * (1 - 1e-9)
    if after.sum() < 2:
        raise CalibrationError(
            f"{where}: only {int(after.sum())} readout time(s) at or after t0 = {t0:g} s; a drift fit needs 2 "
            "(schedule readouts later, or give a base personality with a smaller t0)"
        )
    u = np.log(t_g[after] / t0)
    c_after = d.count_g[after]
    ubar = u.mean()
    uc = u - ubar
    suu = float(uc @ uc)

    # -- drift pass 1 (uncorrected logs)
    say("fitting drift")
    lm = np.ascontiguousarray(ln_mean[after]) if not after.all() else ln_mean
    nu_hat, a_hat, rss = _loglog(lm, uc, ubar, suu)
    n_after = int(after.sum())

    # -- read noise: from repeats or from residuals
    say("fitting read noise")
    f2 = ph.read_noise_time_factor(t_g[after], base_p) ** 2  # (G',)
    lvl_d = level_all[idx_d]
    fit_d = ~holdout[idx_d]
    if d.var is not None:
        method = "repeats"
        var_after = np.take(d.var, idx_d, axis=1)[after]
        m_after = np.take(d.mean, idx_d, axis=1)[after]
        ok = (c_after >= 2)[:, None] & np.isfinite(var_after)
        num = np.where(ok, var_after - lsb * lsb / 12, 0.0)
        den = np.where(ok, (m_after * m_after - var_after / c_after[:, None]) * f2[:, None], 0.0)
        num_dev, den_dev = num.sum(axis=0), den.sum(axis=0)
    else:
        method = "residuals"
        if n_after < 3:
            raise CalibrationError(
                f"{where}: without repeated reads the read noise comes from drift-fit residuals, which need at least 3 "
                f"readout times after t0 (have {n_after}); record with [readout] repeats = 2 or more"
            )
        # the ADC step's relative variance, at each device's mean level (a small correction)
        quant = (lsb * lsb / 12) * float(np.mean(1 / c_after)) * np.exp(-2 * lm.mean(axis=0))
        s2 = rss / (n_after - 2)
        # var(ln(1+ε)) ≈ v + 2.5·v² for relative noise ε of variance v: invert to first order
        s2 = (np.sqrt(1 + 10 * s2) - 1) / 5
        num_dev = s2 - quant
        den_dev = np.full(idx_d.size, float(np.mean(f2 / c_after)))
    q_lvl, q_se, q_n = _level_ratio(num_dev, den_dev, lvl_d, fit_d)

    # Q_s law: ln Q = ln q_coef − q_exp·ln x over the levels
    x_lvl = np.exp((edges[:-1] + edges[1:]) / 2)
    for lv in range(N_LEVELS):  # level x: mean x of its devices
        m = prog_mask & (level_all == lv)
        if m.any():
            x_lvl[lv] = float(np.exp(ln_x_all[m].mean()))
    # levels whose relative read noise stays below MAX_REL_READ_NOISE (where the small-noise
    # approximations of both estimators hold)
    with np.errstate(invalid="ignore"):
        okq = (q_n >= MIN_LEVEL_DEVICES) & (q_lvl > 0) & (q_lvl * math.sqrt(float(f2.max())) < MAX_REL_READ_NOISE)
    if okq.sum() < 2:
        raise CalibrationError(f"{where}: too few devices above x = {X_DRIFT_MIN} to fit the read-noise law")
    lq = np.log(q_lvl[okq])
    lq_se = q_se[okq] / q_lvl[okq]
    coef, cov, _ = _poly_fit(np.log(x_lvl[okq]), lq, lq_se, 1)
    q_coef, q_exp = float(math.exp(coef[0])), float(-coef[1])
    draws = rng.multivariate_normal(coef, cov, N_BOOTSTRAP)
    q_coef_ci = np.percentile(np.exp(draws[:, 0]), [2.5, 97.5])
    q_exp_ci = np.percentile(-draws[:, 1], [2.5, 97.5])
    x_min_obs = float(x_lvl[okq].min())
    q_at_min = q_coef / max(x_min_obs**q_exp, base_p.q_x_floor)
    q_max = max(base_p.q_max, q_at_min)
    pers_q = base_p.with_updates(q_coef=q_coef, q_exp=q_exp, q_max=q_max, t0_s=t0)

    # -- drift pass 2: correct ln of the mean for its bias −v/2, v = relative variance
    # v_gi = Q_i²·w_g is rank one, so the corrected line is the first one plus Q_i²/2 times the
    # line through w: O(devices), no new (times × devices) array
    q_dev = ph.read_noise_q(x_all[idx_d], pers_q)
    q2 = q_dev * q_dev
    w = f2 / c_after
    w_slope = float(uc @ w) / suu
    nu_hat = nu_hat - q2 / 2 * w_slope
    a_hat = a_hat + q2 / 2 * (float(w.mean()) - w_slope * ubar)
    # estimation variance of each ν̂ from the read-noise law: Σ (u−ū)² var_g / Suu²
    quant_rel = (lsb * lsb / 12) / np.maximum(np.exp(a_hat), lsb) ** 2
    se2 = (q2 * float(uc * uc @ w) + quant_rel * float(uc * uc @ (1 / c_after))) / (suu * suu)
    say("fitting drift-exponent laws")
    nu_m, nu_m_se, nu_s, nu_s_se, nu_n = _level_nu(nu_hat, se2, lvl_d, fit_d)
    ok_nu = nu_n >= MIN_LEVEL_DEVICES
    if ok_nu.sum() < 2:
        raise CalibrationError(f"{where}: fewer than 2 levels with {MIN_LEVEL_DEVICES}+ devices above x = {X_DRIFT_MIN}")
    lnx_nu = np.log(x_lvl[ok_nu])
    nu_mean_law, nu_mean_ci = fit_clipped_log(lnx_nu, nu_m[ok_nu], nu_m_se[ok_nu], base_p.nu_mean, N_BOOTSTRAP, rng)
    nu_std_law, nu_std_ci = fit_clipped_log(lnx_nu, nu_s[ok_nu], nu_s_se[ok_nu], base_p.nu_std, N_BOOTSTRAP, rng)
    pers_nu = pers_q.with_updates(nu_mean=nu_mean_law, nu_std=nu_std_law)

    # -- programming noise at t0 (relative to each device's last verify read)
    say("fitting programming noise")
    g1 = int(np.flatnonzero(after)[0])
    t1, c1 = float(t_g[g1]), float(d.count_g[g1])
    idx_p = np.flatnonzero(prog_mask)
    xp_dev = x_all[idx_p]
    mu_p, sd_p = ph.drift_exponent_stats(xp_dev, pers_nu)
    l1 = math.log(t1 / t0)
    y1 = d.mean[g1, idx_p]
    dev = y1 * np.exp(mu_p * l1) - d.final_uS[idx_p]
    qp = ph.read_noise_q(xp_dev, pers_nu)
    f_t1 = float(ph.read_noise_time_factor(t1, pers_nu))
    f_t0 = float(ph.read_noise_time_factor(t0, pers_nu))
    extra = ((qp * y1) ** 2) * (f_t0**2 - f_t1**2 / c1) - (sd_p * l1 * y1) ** 2 - lsb * lsb / 12 * (1 + 1 / c1)
    lvl_p, fit_p = level_all[idx_p], ~holdout[idx_p]
    sp, sp_se, sp_n, verify_bias = _level_sigma(dev, extra, lvl_p, fit_p)
    ok_p = (sp_n >= MIN_LEVEL_DEVICES) & np.isfinite(sp)
    if ok_p.sum() < 3:
        raise CalibrationError(f"{where}: fewer than 3 levels with {MIN_LEVEL_DEVICES}+ programmed devices")
    degrees = [prog_degree] if prog_degree else [d_ for d_ in (1, 2, 3) if d_ < ok_p.sum()]
    fits = {deg: _poly_fit(x_lvl[ok_p], sp[ok_p], sp_se[ok_p], deg) for deg in degrees}
    deg = min(fits, key=lambda dg: fits[dg][2] + (dg + 1) * math.log(ok_p.sum()))
    p_coef, p_cov, _ = fits[deg]
    p_draws = rng.multivariate_normal(p_coef, p_cov, N_BOOTSTRAP)
    p_ci = np.percentile(p_draws, [2.5, 97.5], axis=0)
    grid = np.linspace(0, 1, 201)
    if np.any(np.polynomial.polynomial.polyval(grid, p_coef) < 0):
        warnings.append("the fitted σ_prog(x) polynomial goes negative on [0, 1]; floored at its minimum level value")
        p_coef = p_coef.copy()
        p_coef[0] -= min(0.0, float(np.polynomial.polynomial.polyval(grid, p_coef).min()))
    pers_p = pers_nu.with_updates(prog_noise_coeffs_uS=tuple(float(c) for c in p_coef))

    # -- RESET level
    say("fitting RESET level")
    idx_r = np.flatnonzero(is_reset)
    constants_reset: list[FittedConstant] = []
    reset_mean, reset_std = base_p.reset_g_mean_uS, base_p.reset_g_std_uS
    if idx_r.size >= MIN_LEVEL_DEVICES:
        yr = d.mean[g1, idx_r]
        p_reset = pers_p.with_updates(g_max_uS=d.g_max_uS)
        reset_mean, se_m = _fit_reset_mean(yr, p_reset, t1, c1, d.geometry, base_p.reset_g_std_uS, rng)
        constants_reset = [
            FittedConstant("reset.g_mean_uS", reset_mean, max(reset_mean - 1.96 * se_m, 0.0), reset_mean + 1.96 * se_m,
                           True, f"forward model matched to the mean and spread of {idx_r.size} RESET partners at "
                           f"t1 = {t1:g} s"),
            FittedConstant("reset.g_std_uS", reset_std, reset_std, reset_std, False,
                           "hidden under the post-programming relaxation σ_prog(0) and the ADC step: kept from base"),
        ]
    else:
        warnings.append("fewer than 30 RESET devices: RESET level kept from the base personality")
    geo = rec.geometry
    fitted = pers_p.with_updates(
        name=name or f"fitted-{Path(where).stem}",
        description=f"fitted by harness calibrate to {Path(where).name} ({method} read noise)",
        source=f"harness calibrate {Path(where).name}; base {base_p.label()}; docs/calibration.md",
        g_max_uS=geo.g_max_uS,
        reset_g_mean_uS=reset_mean,
        reset_g_std_uS=reset_std,
        adc_bits=geo.adc_bits,
        adc_min_uS=geo.adc_min_uS,
        adc_max_uS=geo.adc_max_uS,
    )

    # -- goodness of fit on held-out devices, and data vs fit per level
    say("goodness of fit")
    per_time, goodness = _goodness(d, fitted, level_all, holdout, prog_mask, verify_bias, rng)
    levels = LevelTable(
        verify_bias_uS=verify_bias,
        x=x_lvl, n_devices=np.bincount(level_all[prog_mask], minlength=N_LEVELS).astype(np.int64),
        sigma_prog_uS=sp, sigma_prog_se=sp_se, nu_mean=nu_m, nu_mean_se=nu_m_se, nu_std=nu_s, nu_std_se=nu_s_se,
        q_s=q_lvl, q_s_se=q_se, **per_time,
    )

    consts: list[FittedConstant] = [
        FittedConstant("t0_s", t0, t0_ci[0], t0_ci[1], t0_identified,
                       "" if t0_identified else f"all readouts after t0: t0 <= first readout ({t_g[0]:g} s), kept"),
    ]
    for i, c in enumerate(p_coef):
        consts.append(FittedConstant(f"programming_noise.c{i}", float(c), float(p_ci[0, i]), float(p_ci[1, i]), True,
                                     f"σ_prog polynomial degree {deg}"))
    for label, law, cis in (("nu_mean", nu_mean_law, nu_mean_ci), ("nu_std", nu_std_law, nu_std_ci)):
        for key in ("ln_coef", "offset", "min", "max"):
            lo_, hi_, ident = cis[key]
            consts.append(FittedConstant(f"drift.{label}.{key}", float(getattr(law, key)), lo_, hi_, ident,
                                         "" if ident else "clip not reached in the observed x range"))
    consts += [
        FittedConstant("read_noise.q_coef", q_coef, float(q_coef_ci[0]), float(q_coef_ci[1]), True, f"from {method}"),
        FittedConstant("read_noise.q_exp", q_exp, float(q_exp_ci[0]), float(q_exp_ci[1]), True, f"from {method}"),
        FittedConstant("read_noise.q_max", q_max, q_max, q_max, False,
                       f"not reached above x = {x_min_obs:.3g}: base value or the law at the smallest level"),
        *constants_reset,
    ]
    data = {
        "recording": where, "devices": int(n_all), "programmed_converged": int(prog_mask.sum()),
        "reset_devices": int(is_reset.sum()), "held_out_devices": int(holdout.sum()),
        "drift_devices": int(idx_d.size), "readouts": int(rec.n_readouts), "times": int(t_g.size),
        "repeats": d.repeats, "times_after_t0": n_after, "t_first_s": float(t_g[0]), "t_last_s": float(t_g[-1]),
        "x_drift_min": X_DRIFT_MIN, "fixed_from_base": ["t_read_s", "pulse.*", "q_x_floor"],
    }
    return CalibrationResult(
        personality=fitted, base=base_p, constants=tuple(consts), levels=levels, read_noise_method=method,
        goodness=goodness, data=data, warnings=tuple(warnings),
    )


def _level_index(x: FloatArray, prog: npt.NDArray[np.bool_]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Level edges (N_LEVELS, equal width in ln x over the programmed devices) and each
    device's level (−1 for devices that are not programmed)."""
    xp = x[prog]
    edges = np.linspace(np.log(xp.min()), 0.0 if xp.max() <= 1 else np.log(xp.max()), N_LEVELS + 1)
    edges[-1] += 1e-9
    level = np.clip(np.searchsorted(edges, np.log(np.maximum(x, 1e-12)), side="right") - 1, 0, N_LEVELS - 1)
    level[~prog] = -1
    return edges, level


def goodness_of_fit(rec: Recording, personality: Personality | str, *, seed: int = 0) -> dict[str, Any]:
    """How well any personality (fitted, shipped, or another chip's) predicts ``rec``'s readouts:
    the held-out KS of :func:`calibrate_recording` with that personality's laws. The per-level
    verify-read bias is measured on the non-held-out devices with the personality's drift law.

    Raises:
        CalibrationError: as :func:`load_data`, or nothing programmed converged.
    """
    p = load_personality(personality)
    rng = np.random.default_rng(seed)
    d = load_data(rec)
    holdout = rng.random(d.target_uS.size) < HOLDOUT_FRACTION
    prog = (d.target_uS > RESET_TARGET_MAX_US) & d.converged
    if not prog.any():
        raise CalibrationError(f"{rec.path}: no programmed device converged in write-verify")
    x = d.target_uS / d.g_max_uS
    _, level = _level_index(x, prog)
    g1 = int(np.flatnonzero(d.t_g >= p.t0_s)[0]) if np.any(d.t_g >= p.t0_s) else 0
    mu = ph.drift_exponent_stats(x, p)[0]
    dev = d.mean[g1] * np.exp(mu * math.log(max(float(d.t_g[g1]), p.t0_s) / p.t0_s)) - d.final_uS
    use = prog & ~holdout
    n = np.bincount(level[use], minlength=N_LEVELS)
    bias = np.bincount(level[use], weights=dev[use], minlength=N_LEVELS) / np.maximum(n, 1)
    return _goodness(d, p, level, holdout, prog, bias, rng)[1]


def _loglog(lm: FloatArray, uc: FloatArray, ubar: float, suu: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-device OLS of ``lm`` (G', n) on u: (ν̂ = −slope, intercept at u = 0, RSS)."""
    slope = np.einsum("g,gn->n", uc, lm) / suu
    mean = lm.mean(axis=0)
    intercept = mean - slope * ubar
    rss = np.einsum("gn,gn->n", lm, lm) - lm.shape[0] * mean * mean - slope * slope * suu
    return -slope, intercept, np.maximum(rss, 0.0)


def _fit_t0(
    t_g: FloatArray, ln_mean: FloatArray, devices: npt.NDArray[np.bool_], t0_base: float, rng: np.random.Generator
) -> tuple[float, tuple[float, float], bool]:
    """t0 by profile least squares: for each candidate, fit every device's line of ln G vs
    ln(max(t, t0)/t0) and sum the residuals. Returns (t0, 95 % CI, identified)."""
    idx = np.flatnonzero(devices)
    if idx.size > T0_PROFILE_DEVICES:
        idx = np.sort(rng.choice(idx, T0_PROFILE_DEVICES, replace=False))
    if idx.size < 2 or t_g.size < 3:
        return min(t0_base, float(t_g[0])), (math.nan, math.nan), False
    lm = np.take(ln_mean, idx, axis=1)
    lo, hi = float(t_g[0]), float(t_g[-2])  # at least two times must drift
    n_grid = max(int(math.log10(hi / lo) * T0_GRID_PER_DECADE), 2) if hi > lo else 2
    cands = np.unique(np.r_[np.geomspace(lo, hi, n_grid), t_g[:-1]])
    total = np.sum(lm * lm) - lm.shape[0] * np.sum(lm.mean(axis=0) ** 2)
    # Σ_i slope_i²·S_uu = u_cᵀ (Σ_i l_i l_iᵀ) u_c / S_uu: one G × G Gram matrix serves every
    # candidate (u_c is centred, so the devices' own means drop out)
    gram = np.einsum("gn,hn->gh", lm, lm)
    uu = np.log(np.maximum(t_g[None, :], cands[:, None]) / cands[:, None])  # (C, G)
    ucc = uu - uu.mean(axis=1, keepdims=True)
    s = np.einsum("cg,cg->c", ucc, ucc)
    rss = total - np.einsum("cg,gh,ch->c", ucc, gram, ucc) / s
    dof = idx.size * (t_g.size - 2)
    sigma2 = rss.min() / dof
    best = int(np.argmin(rss))
    inside = cands[(rss - rss.min()) / sigma2 <= 3.84]  # likelihood-ratio 95 % interval
    # flat profile up to the first readout: any t0 <= t_first gives the same fit
    if best == 0 or (rss[0] - rss.min()) / sigma2 <= 3.84:
        return min(t0_base, float(t_g[0])), (0.0, float(inside.max())), False
    # the profile is sampled on a grid: the interval is never narrower than the neighbours
    lo_ci = min(float(inside.min()), float(cands[max(best - 1, 0)]))
    hi_ci = max(float(inside.max()), float(cands[min(best + 1, cands.size - 1)]))
    return float(cands[best]), (lo_ci, hi_ci), True


def _level_ratio(
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


def _level_nu(
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


def _level_sigma(
    dev: FloatArray, extra: FloatArray, level: npt.NDArray[np.int64], use: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.int64], FloatArray]:
    """Per level sqrt(var(dev) + mean(extra)), its SE (normal approximation), the device
    count and the mean of ``dev``."""
    m = use & (level >= 0) & np.isfinite(dev)
    lv = level[m]
    n = np.bincount(lv, minlength=N_LEVELS)
    nn = np.maximum(n, 1)
    m1 = np.bincount(lv, weights=dev[m], minlength=N_LEVELS) / nn
    var = (np.bincount(lv, weights=dev[m] ** 2, minlength=N_LEVELS) / nn - m1 * m1) * nn / np.maximum(n - 1, 1)
    ex = np.bincount(lv, weights=extra[m], minlength=N_LEVELS) / nn
    with np.errstate(invalid="ignore"):
        s = np.sqrt(np.maximum(var + ex, 0.0))
        se = np.sqrt(np.maximum(var, 0.0)) * np.sqrt(np.maximum(var, 0.0)) / np.maximum(s, 1e-9) / np.sqrt(2 * np.maximum(n - 1, 1))
    s[n < 2] = np.nan
    return s, se, n, m1


def _fit_reset_mean(
    y_obs: FloatArray, p: Personality, t1_s: float, reads: float, geometry: Geometry, g_std_uS: float,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """RESET mean m such that the forward model reproduces the RESET partners' readouts at t1.

    Forward model (the virtual chip's): |N(m, s)| plus a relaxation N(0, s_r²) floored at 0,
    drifted to t1, read ``reads`` times through the ADC. The relaxation of a RESET device
    (σ_prog near x = 0) dominates its spread and pushes the floored mean up, so m and s_r
    are solved together from the readouts' mean and variance (bisection in s_r outside, in
    m inside, with common random numbers). Returns (m, SE of m)."""
    n = int(min(max(4 * y_obs.size, 20_000), 50_000))
    z = rng.standard_normal((3, n))
    z_read = rng.standard_normal((max(int(reads), 1), n))
    f_t1 = float(ph.read_noise_time_factor(t1_s, p))

    def moments(m: float, s_r: float) -> tuple[float, float]:
        g_r = np.abs(m + g_std_uS * z[0])
        x = g_r / p.g_max_uS
        g = np.maximum(g_r + z[1] * s_r, 0.0)
        mu, sd = ph.drift_exponent_stats(x, p)
        g = g * ph.drift_factor(t1_s, np.abs(mu + sd * z[2]), p)
        sig = g * ph.read_noise_q(x, p) * f_t1
        y = np.mean([geometry.codes_to_uS(geometry.to_codes(g + sig * zr)) for zr in z_read], axis=0)
        return float(y.mean()), float(y.var())

    target_m, target_v = float(y_obs.mean()), float(y_obs.var())

    def m_for(s_r: float) -> float:
        lo, hi = 0.0, max(1.0, 4 * target_m)
        if moments(lo, s_r)[0] >= target_m:
            return 0.0
        for _ in range(14):  # 1e-4 of the bracket: far below the SE of m
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if moments(mid, s_r)[0] < target_m else (lo, mid)
        return (lo + hi) / 2

    s_lo, s_hi = 0.0, max(2.0 * math.sqrt(target_v), 0.05)
    for _ in range(11):
        s_mid = (s_lo + s_hi) / 2
        if moments(m_for(s_mid), s_mid)[1] < target_v:
            s_lo = s_mid
        else:
            s_hi = s_mid
    s_r = (s_lo + s_hi) / 2
    m = m_for(s_r)
    # SE from the sampling error of the observed mean and variance, propagated numerically
    se_mean = math.sqrt(target_v / y_obs.size)
    se_var = target_v * math.sqrt(2.0 / max(y_obs.size - 1, 1))
    h = max(0.05 * s_r, 1e-3)
    dm_ds = (m_for(s_r + h) - m_for(max(s_r - h, 0.0))) / (s_r + h - max(s_r - h, 0.0))
    dv_ds = (moments(m_for(s_r + h), s_r + h)[1] - moments(m_for(max(s_r - h, 0.0)), max(s_r - h, 0.0))[1]) / (
        s_r + h - max(s_r - h, 0.0))
    dmean_dm = max((moments(m + 0.01, s_r)[0] - moments(max(m - 0.01, 0.0), s_r)[0]) / (m + 0.01 - max(m - 0.01, 0.0)), 1e-6)
    se = math.sqrt((se_mean / dmean_dm) ** 2 + (dm_ds * se_var / max(abs(dv_ds), 1e-9)) ** 2)
    return m, se


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


def _goodness(
    d: _Data, p: Personality, level: npt.NDArray[np.int64], holdout: npt.NDArray[np.bool_],
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
    crit_t = _ks_critical(n, n)
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
            crit_l[j] = _ks_critical(int(m.sum()), int(m.sum()))
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
