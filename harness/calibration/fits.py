"""The law fits of a calibration and their numerical helpers.

- :func:`fit_clipped_log`: a drift-exponent law clip(a·ln x + b, lo, hi) to per-level values.
- :func:`poly_fit`: weighted polynomial (the read-noise power law in logs, σ_prog(x)).
- :func:`loglog_lines`: every device's line of ln G vs ln(t/t0) at once.
- :func:`fit_t0`: t0 by profile least squares over those lines.
- :func:`fit_sigma_prog`: the σ_prog polynomial, its degree by BIC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from harness.errors import CalibrationError
from harness.virtual.personality import ClippedLog

FloatArray = npt.NDArray[np.float64]

#: A clipped segment of a drift law must hold at least this many levels (one or two
#: outlying levels at the edge of the observed range never define a clip bound).
MIN_CLIP_LEVELS = 3
#: Candidate t0 values per decade of the profile scan.
T0_GRID_PER_DECADE = 24
#: Devices used for the t0 profile (a seeded subsample: the profile is a sum over devices).
T0_PROFILE_DEVICES = 30_000



def fit_clipped_log(
    ln_x: FloatArray, y: FloatArray, se: FloatArray, base: ClippedLog, n_boot: int, rng: np.random.Generator
) -> tuple[ClippedLog, dict[str, tuple[float, float, bool, str]]]:
    """Weighted fit of clip(a·ln x + b, lo, hi) to per-level values.

    The levels (sorted by ln x) are split into [clipped | linear | clipped] by enumerating
    both breakpoints (each segment fitted in closed form; the split with the least BIC
    wins; a clipped segment needs MIN_CLIP_LEVELS levels). A clip bound with no level in its segment is not identified: it is set to the
    base value, moved outward if needed so that it does not cut the fitted line over the
    observed range. CIs: parametric bootstrap of the level values, split held fixed.
    ``n_boot`` = 0: no bootstrap (NaN intervals). Returns the law and ``{name: (ci_low,
    ci_high, identified, note)}``; a bound not identified says whether its value is the
    base's or the line's end.
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
    if n_boot > 0:
        boot = np.array([law(v + rng.standard_normal(k) / np.sqrt(w)) for _ in range(n_boot)])
        q = np.percentile(boot, [2.5, 97.5], axis=0)
    else:
        q = np.full((2, 4), math.nan)
    falling = a <= 0
    id_lo = (j < k) if falling else (i > 0)
    id_hi = (i > 0) if falling else (j < k)
    line_ends = (a * u[0] + b, a * u[-1] + b)

    def unreached(key: str, value: float, base_value: float) -> str:
        """The note of a clip bound not reached: say where its value comes from."""
        if value == base_value:
            return "clip not reached in the observed x range: base value"
        edge = min(line_ends) if key == "min" else max(line_ends)
        return (f"clip not reached in the observed x range: the base value {base_value:.4g} would cut the fitted "
                f"line, so the bound sits at the line's end of the observed range ({max(edge, 0.0):.4g})")

    # The line is identified only where the data show it: a linear segment of MIN_CLIP_LEVELS
    # levels or more whose slope differs from 0 by 3 SE (scaled by its excess scatter). A law
    # clipped over nearly all the observed range otherwise fits as a flat "line" at the clip.
    uu, ww = u[i:j], w[i:j]
    s_uw = float(np.sum(ww * (uu - np.average(uu, weights=ww)) ** 2)) if j - i >= 2 else 0.0
    resid = float(np.sum(ww * (v[i:j] - (a * uu + b)) ** 2))
    se_a = math.sqrt(max(1.0, resid / max(j - i - 2, 1)) / s_uw) if s_uw > 0 else math.inf
    id_line = j - i >= MIN_CLIP_LEVELS and abs(a) >= 3 * se_a
    line_note = "" if id_line else (
        f"the observed levels show no slope ({j - i} level(s) on the line, slope {a:.3g} ± {se_a:.2g}): the law is "
        "flat over the observed range, so its line is not identified (value: the fit's flat line, not the base's)")
    cis = {
        "ln_coef": (float(q[0, 0]), float(q[1, 0]), id_line, line_note),
        "offset": (float(q[0, 1]), float(q[1, 1]), id_line, line_note),
        "min": (float(q[0, 2]), float(q[1, 2]), id_lo, "" if id_lo else unreached("min", lo, base.min)),
        "max": (float(q[0, 3]), float(q[1, 3]), id_hi, "" if id_hi else unreached("max", hi, base.max)),
    }
    return ClippedLog(ln_coef=a, offset=b, min=lo, max=hi), cis


def poly_fit(x: FloatArray, y: FloatArray, se: FloatArray, degree: int) -> tuple[FloatArray, FloatArray, float]:
    """Weighted least squares polynomial (ascending coefficients), its covariance, χ²."""
    w = 1.0 / np.maximum(se, 1e-12)
    a = np.vander(x, degree + 1, increasing=True)
    coef, *_ = np.linalg.lstsq(a * w[:, None], y * w, rcond=None)
    resid = (a @ coef - y) * w
    cov = np.linalg.pinv((a * w[:, None]).T @ (a * w[:, None]))
    return np.asarray(coef, dtype=np.float64), np.asarray(cov, dtype=np.float64), float(resid @ resid)


def loglog_lines(lm: FloatArray, uc: FloatArray, ubar: float, suu: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-device OLS of ``lm`` (G', n) on u: (ν̂ = −slope, intercept at u = 0, RSS)."""
    slope = np.einsum("g,gn->n", uc, lm) / suu
    mean = lm.mean(axis=0)
    intercept = mean - slope * ubar
    rss = np.einsum("gn,gn->n", lm, lm) - lm.shape[0] * mean * mean - slope * slope * suu
    return -slope, intercept, np.maximum(rss, 0.0)


def fit_t0(
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


@dataclass(frozen=True)
class ProgFit:
    """The σ_prog polynomial fitted to per-level values (ascending coefficients, µS)."""

    coef: FloatArray  # at ``degree``, c0 raised if needed so that σ_prog >= 0 on [0, 1]
    ci: FloatArray  # (2, degree + 1) per-stage 95 % intervals (NaN without draws)
    degree: int
    bic_degree: int  # the degree BIC chooses (``degree`` unless the caller fixed it)
    by_degree: dict[int, FloatArray]  # the unfloored coefficients at every degree tried
    floored: bool


def fit_sigma_prog(
    x: FloatArray, sp: FloatArray, se: FloatArray, prog_degree: int | None, n_boot: int, rng: np.random.Generator,
) -> ProgFit:
    """σ_prog(x) = Σ c_k x^k by weighted least squares over the levels (finite values only),
    degree 1..3 (fewer than the levels) by BIC unless ``prog_degree`` fixes it; per-stage
    intervals from ``n_boot`` draws of the fit's covariance."""
    ok = np.isfinite(sp) & np.isfinite(se)
    k = int(ok.sum())
    degrees = sorted({d for d in (1, 2, 3) if d < k} | ({prog_degree} if prog_degree else set()))
    fits = {deg: poly_fit(x[ok], sp[ok], se[ok], deg) for deg in degrees}
    bic_deg = min(fits, key=lambda dg: fits[dg][2] + (dg + 1) * math.log(k))
    deg = prog_degree or bic_deg
    coef, cov, _ = fits[deg]
    if n_boot > 0:
        ci = np.percentile(rng.multivariate_normal(coef, cov, n_boot), [2.5, 97.5], axis=0)
    else:
        ci = np.full((2, deg + 1), math.nan)
    grid = np.linspace(0, 1, 201)
    low = float(np.polynomial.polynomial.polyval(grid, coef).min())
    if low < 0:
        coef = coef.copy()
        coef[0] -= low
    return ProgFit(coef=coef, ci=ci, degree=deg, bic_degree=bic_deg, by_degree={d: fits[d][0] for d in fits},
                   floored=low < 0)
