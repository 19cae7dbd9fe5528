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
6. **Bias correction and intervals** (``bootstrap`` > 0): the recorded experiment is re-run
   on virtual chips of the fitted personality and of its one-step correction
   (:mod:`~harness.calibration.simulate`) and fitted the same way; each constant is moved to
   the value whose expected fit is the observed one, with a 95 % interval from the
   simulations' spread (a parametric bootstrap of the whole pipeline, Efron 1993).
7. **Goodness of fit**: a seeded 20 % of the devices is held out of every fit; their
   readouts are compared with draws from the fitted model's predictive distribution
   (two-sample Kolmogorov-Smirnov, per readout time and per level).

Constants the data cannot identify (pulse response, weak devices, t_read, clip bounds never
reached in the observed x range) are taken from a base personality and flagged.
Everything is vectorized over devices (no Python loop per device).

The pieces: :mod:`~harness.calibration.data` (the recording as arrays),
:mod:`~harness.calibration.levels` (levels and per-level estimates),
:mod:`~harness.calibration.fits` (the law fits), :mod:`~harness.calibration.goodness`
(hold-out KS, predictive draws), :mod:`~harness.calibration.result` (what is returned and
saved). This module runs them in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.chip.registry import parse_uri
from harness.errors import CalibrationError, ConfigError
from harness.recording import Recording
from harness.virtual import physics as ph
from harness.virtual.personality import Personality, load_personality, shipped_personalities
from harness.calibration.bootstrap import simulation_bootstrap
from harness.calibration.data import RESET_TARGET_MAX_US, CalibrationData, calibration_epoch, load_data
from harness.calibration.fits import fit_clipped_log, fit_sigma_prog, fit_t0, loglog_lines, poly_fit
from harness.calibration.goodness import HOLDOUT_FRACTION, held_out_goodness
from harness.calibration.levels import MIN_LEVEL_DEVICES, N_LEVELS, level_index, level_nu, level_ratio, level_sigma
from harness.calibration.reset import ResetLoop, fit_reset_mean
from harness.calibration.result import CalibrationResult, FittedConstant, LevelTable

FloatArray = npt.NDArray[np.float64]

#: Smallest x whose devices enter the log-domain drift fit: below it the relative read noise
#: (Q_s ≥ 0.1 at 90 nm) and the ADC step make ln G too noisy and biased to fit a slope.
X_DRIFT_MIN = 0.05
#: Read-noise levels enter the Q_s law only while Q_s·f(t_last) stays below this.
MAX_REL_READ_NOISE = 0.3
#: Parametric-bootstrap replicates of the per-stage intervals (level values → law).
N_BOOTSTRAP = 400
#: Default number of simulated re-recordings of the fitted chip (the whole-pipeline bootstrap
#: behind the bias correction and the reported intervals; ``--bootstrap``).
N_SIMULATIONS = 16
#: Devices of each simulated re-recording at most (a seeded subsample of the layout; the
#: spread is scaled back to the recording's device count).
SIM_MAX_DEVICES = 32_768
#: ``base="recorded"``: start from the personality the recording names.
RECORDED_BASE = "recorded"



def calibrate_recording(
    rec: Recording,
    *,
    base: Personality | str | None = None,
    name: str | None = None,
    seed: int = 0,
    prog_degree: int | None = None,
    readouts: FloatArray | None = None,
    progress: Callable[[str], None] | None = None,
    bootstrap: int = N_SIMULATIONS,
    epoch: int | None = None,
) -> CalibrationResult:
    """Fit a personality to ``rec`` (see the module docstring for the method).

    ``epoch``: of a refresh session's recording, the programming epoch fitted (default: the
    one with the most readouts; :func:`~harness.calibration.data.calibration_epoch`), its
    times counted from its own programming.

    Args:
        base: personality that supplies the constants the data cannot identify
            (default ``pcm-90nm``); ``"recorded"``: the personality the recording names
            (see :func:`recorded_personality`).
        name: the fitted personality's name (default ``fitted-<recording stem>``).
        seed: seeds the hold-out split, the bootstrap and the simulations.
        prog_degree: degree of the σ_prog polynomial (None: chosen by BIC among 1..3).
        readouts: the recording's readouts if already in memory (``rec.readouts()``).
        progress: called with a short message before each stage.
        bootstrap: simulated re-recordings of the fitted chip (parametric bootstrap of the
            whole pipeline) behind the bias correction and the 95 % intervals; 0 gives the
            uncorrected fit with the per-stage intervals only (docs/calibration.md).

    Raises:
        CalibrationError: fewer than two readouts, no programming outcome, all programmed
            devices at one level, too few devices, no readout after t0; ``bootstrap`` < 0
            or 1; ``base="recorded"`` and the recorded personality cannot be found.
    """
    say = progress or (lambda _msg: None)
    if bootstrap < 0 or bootstrap == 1:
        raise CalibrationError(f"bootstrap = {bootstrap}: give 0 (off) or at least 2 simulations")
    base_p = recorded_personality(rec) if isinstance(base, str) and base == RECORDED_BASE else load_personality(base)
    rng = np.random.default_rng(seed)
    where = str(rec.path)
    say("reading readouts")
    d = load_data(rec, readouts, epoch)
    loop = ResetLoop.from_params(dict(getattr(rec.programming, "params", {}) or {}))
    fit = _fit_data(d, base_p, rng, where=where, prog_degree=prog_degree, say=say, n_boot=N_BOOTSTRAP, loop=loop)
    warnings = list(fit.warnings)
    if rec.n_epochs > 1:
        e = calibration_epoch(rec, epoch)
        warnings.append(f"{where} holds {rec.n_epochs} programming epochs (a refresh session): fitted epoch {e} "
                        f"({d.count_g.sum():.0f} readouts, times since its programming); choose another with --epoch")
    consts = list(fit.constants)
    pers = fit.personality
    if bootstrap:
        consts, pers, notes = _simulation_bootstrap(d, fit, base_p, bootstrap, rng, rec, say,
                                                    select_degree=prog_degree is None)
        warnings += notes
    geo = rec.geometry
    fitted = pers.with_updates(
        name=name or f"fitted-{Path(where).stem}",
        description=f"fitted by harness calibrate to {Path(where).name} ({fit.method} read noise)",
        source=f"harness calibrate {Path(where).name}; base {base_p.label()}; docs/calibration.md",
        g_max_uS=geo.g_max_uS,
        adc_bits=geo.adc_bits,
        adc_min_uS=geo.adc_min_uS,
        adc_max_uS=geo.adc_max_uS,
    )

    # -- goodness of fit on held-out devices, and data vs fit per level
    say("goodness of fit")
    per_time, goodness = held_out_goodness(d, fitted, fit.level_all, fit.holdout, fit.prog_mask, fit.verify_bias, rng)
    levels = LevelTable(**fit.levels, **per_time)
    data = dict(fit.data, readouts=int(d.count_g.sum()), recording=where, bootstrap_simulations=int(bootstrap),
                **({"epoch": calibration_epoch(rec, epoch)} if rec.n_epochs > 1 else {}))
    return CalibrationResult(
        personality=fitted, base=base_p, constants=tuple(consts), levels=levels, read_noise_method=fit.method,
        goodness=goodness, data=data, warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class _Fit:
    """One pass of the fit over a recording's data (no goodness of fit)."""

    personality: Personality
    constants: tuple[FittedConstant, ...]
    degree: int
    bic_degree: int  # the σ_prog degree BIC chooses (``degree`` unless the caller fixed it)
    prog_by_degree: dict[int, FloatArray]  # σ_prog coefficients fitted at each degree tried
    method: str
    level_all: npt.NDArray[np.int64]
    holdout: npt.NDArray[np.bool_]
    prog_mask: npt.NDArray[np.bool_]
    verify_bias: FloatArray
    levels: dict[str, Any]
    sigma_prog_used: npt.NDArray[np.bool_]  # the levels the σ_prog polynomial was fitted to
    data: dict[str, Any]
    warnings: tuple[str, ...]


def _fit_data(
    d: CalibrationData, base_p: Personality, rng: np.random.Generator, *, where: str, prog_degree: int | None,
    say: Callable[[str], None], n_boot: int, loop: ResetLoop, sp_bias: tuple[FloatArray, FloatArray] | None = None,
) -> _Fit:
    """Every stage of the fit but the goodness of fit (module docstring, steps 1-5);
    ``n_boot`` draws behind the per-stage intervals (0: none, the values only); ``loop``:
    the recorded write-verify loop (it selects the RESET partners' levels); ``sp_bias``: (bias,
    its SE) of each level's σ_prog estimate, removed before the polynomial fit."""
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
    edges, level_all = level_index(x_all, prog_mask)

    # -- t0 by profile least squares
    say("fitting t0")
    t_g = d.t_g
    lsb = d.lsb_uS
    idx_d = np.flatnonzero(prog_mask & (x_all >= X_DRIFT_MIN))  # devices of the drift fit
    # np.take keeps C order (a fancy column gather does not, and products over it are slow)
    ln_mean = np.log(np.maximum(np.take(d.mean, idx_d, axis=1), lsb / 2))  # (G, n_drift)
    t0, t0_ci, t0_identified = fit_t0(t_g, ln_mean, ~holdout[idx_d], base_p.t0_s, rng)
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
    nu_hat, a_hat, rss = loglog_lines(lm, uc, ubar, suu)
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
    q_lvl, q_se, q_n = level_ratio(num_dev, den_dev, lvl_d, fit_d)

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
    coef, cov, _ = poly_fit(np.log(x_lvl[okq]), lq, lq_se, 1)
    q_coef, q_exp = float(math.exp(coef[0])), float(-coef[1])
    draws = rng.multivariate_normal(coef, cov, max(n_boot, 2))
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
    nu_m, nu_m_se, nu_s, nu_s_se, nu_n = level_nu(nu_hat, se2, lvl_d, fit_d)
    ok_nu = nu_n >= MIN_LEVEL_DEVICES
    if ok_nu.sum() < 2:
        raise CalibrationError(f"{where}: fewer than 2 levels with {MIN_LEVEL_DEVICES}+ devices above x = {X_DRIFT_MIN}")
    lnx_nu = np.log(x_lvl[ok_nu])
    nu_mean_law, nu_mean_ci = fit_clipped_log(lnx_nu, nu_m[ok_nu], nu_m_se[ok_nu], base_p.nu_mean, n_boot, rng)
    nu_std_law, nu_std_ci = fit_clipped_log(lnx_nu, nu_s[ok_nu], nu_s_se[ok_nu], base_p.nu_std, n_boot, rng)
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
    y0 = y1 * np.exp(mu_p * l1)  # drift-corrected to t0, the scale of every term of dev
    extra = ((qp * y0) ** 2) * (f_t0**2 - f_t1**2 / c1) - (sd_p * l1 * y0) ** 2 - lsb * lsb / 12 * (1 + 1 / c1)
    lvl_p, fit_p = level_all[idx_p], ~holdout[idx_p]
    sp, sp_se, sp_n, verify_bias = level_sigma(dev, extra, lvl_p, fit_p)
    ok_p = (sp_n >= MIN_LEVEL_DEVICES) & np.isfinite(sp)
    if ok_p.sum() < 3:
        raise CalibrationError(f"{where}: fewer than 3 levels with {MIN_LEVEL_DEVICES}+ programmed devices")
    sp_fit, se_fit = np.where(ok_p, sp, np.nan), sp_se
    if sp_bias is not None:  # the estimator's bias per level, measured on simulations (bootstrap)
        sp_fit, se_fit = sp_fit - sp_bias[0], np.sqrt(sp_se**2 + sp_bias[1] ** 2)
    prog = fit_sigma_prog(x_lvl, sp_fit, se_fit, prog_degree, n_boot, rng)
    deg, p_coef, p_ci = prog.degree, prog.coef, prog.ci
    if prog.floored:
        warnings.append("the fitted σ_prog(x) polynomial goes negative on [0, 1]; floored at its minimum level value")
    pers_p = pers_nu.with_updates(prog_noise_coeffs_uS=tuple(float(c) for c in p_coef))

    # -- RESET level
    say("fitting RESET level")
    idx_r = np.flatnonzero(is_reset)
    constants_reset: list[FittedConstant] = []
    reset_mean, reset_std = base_p.reset_g_mean_uS, base_p.reset_g_std_uS
    if idx_r.size >= MIN_LEVEL_DEVICES:
        yr = d.mean[g1, idx_r]
        wr = d.var[g1, idx_r] if d.var is not None else None
        p_reset = pers_p.with_updates(g_max_uS=d.g_max_uS)
        reset_mean, se_m, read_scale = fit_reset_mean(yr, p_reset, t1, c1, d.geometry, base_p.reset_g_std_uS, rng,
                                                      within_var=wr, loop=loop, with_se=n_boot > 0)
        constants_reset = [
            FittedConstant("reset.g_mean_uS", reset_mean, max(reset_mean - 1.96 * se_m, 0.0), reset_mean + 1.96 * se_m,
                           True, f"forward model of the write-verify loop matched to the mean and spread of "
                           f"{idx_r.size} RESET partners at t1 = {t1:g} s"
                           + (f" (read noise x{read_scale:.3g} from their repeats)" if wr is not None else "")),
            FittedConstant("reset.g_std_uS", reset_std, reset_std, reset_std, False,
                           "hidden under the post-programming relaxation σ_prog(0) and the ADC step: kept from base"),
        ]
    else:
        warnings.append("fewer than 30 RESET devices: RESET level kept from the base personality")
    geo = d.geometry
    fitted = pers_p.with_updates(reset_g_mean_uS=reset_mean, reset_g_std_uS=reset_std, g_max_uS=geo.g_max_uS,
                                 adc_bits=geo.adc_bits, adc_min_uS=geo.adc_min_uS, adc_max_uS=geo.adc_max_uS)
    levels = dict(
        verify_bias_uS=verify_bias,
        x=x_lvl, n_devices=np.bincount(level_all[prog_mask], minlength=N_LEVELS).astype(np.int64),
        sigma_prog_uS=sp, sigma_prog_se=sp_se, nu_mean=nu_m, nu_mean_se=nu_m_se, nu_std=nu_s, nu_std_se=nu_s_se,
        q_s=q_lvl, q_s_se=q_se,
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
            lo_, hi_, ident, note = cis[key]
            consts.append(FittedConstant(f"drift.{label}.{key}", float(getattr(law, key)), lo_, hi_, ident, note))
    consts += [
        FittedConstant("read_noise.q_coef", q_coef, float(q_coef_ci[0]), float(q_coef_ci[1]), True, f"from {method}"),
        FittedConstant("read_noise.q_exp", q_exp, float(q_exp_ci[0]), float(q_exp_ci[1]), True, f"from {method}"),
        FittedConstant("read_noise.q_max", q_max, q_max, q_max, False,
                       f"not reached above x = {x_min_obs:.3g}: base value or the law at the smallest level"),
        *constants_reset,
    ]
    data = {
        "devices": int(n_all), "programmed_converged": int(prog_mask.sum()),
        "reset_devices": int(is_reset.sum()), "held_out_devices": int(holdout.sum()),
        "drift_devices": int(idx_d.size), "times": int(t_g.size),
        "repeats": d.repeats, "times_after_t0": n_after, "t_first_s": float(t_g[0]), "t_last_s": float(t_g[-1]),
        "x_drift_min": X_DRIFT_MIN, "fixed_from_base": ["t_read_s", "pulse.*", "q_x_floor"],
    }
    return _Fit(personality=fitted, constants=tuple(consts), degree=deg, bic_degree=prog.bic_degree,
                prog_by_degree=prog.by_degree, method=method, level_all=level_all,
                holdout=holdout, prog_mask=prog_mask, verify_bias=verify_bias, levels=levels,
                sigma_prog_used=ok_p, data=data, warnings=tuple(warnings))


def _simulation_bootstrap(
    d: CalibrationData, fit: _Fit, base_p: Personality, n_sim: int, rng: np.random.Generator, rec: Recording,
    say: Callable[[str], None], *, select_degree: bool,
) -> tuple[list[FittedConstant], Personality, list[str]]:
    """The whole-pipeline bootstrap (:func:`~harness.calibration.bootstrap.simulation_bootstrap`)
    of ``fit``: the recorded experiment re-run on virtual chips (at most SIM_MAX_DEVICES
    devices each, a seeded subsample) and fitted like the recording.

    The σ_prog level estimates carry a bias that changes with x (the write-verify loop stops
    on a read that noise pushed into its window, so the verify read inside σ_prog is not an
    unselected read; about −1.5 of their SEs at x ≈ 0.05-0.5, less at the ends), which a
    quadratic cannot follow: BIC took a cubic for a quadratic truth in ~20 % of simulated
    recordings. Round 1 (simulations of the fitted chip) measures that bias per level; the
    σ_prog polynomial and its degree are then refitted to the recording's levels without it,
    and every later fit (round 2) does the same, so the degree is chosen on bias-free levels."""
    from harness.calibration.simulate import simulate_data

    n = d.target_uS.size
    n_sub = min(n, SIM_MAX_DEVICES)
    devices = np.arange(n) if n_sub == n else np.sort(rng.choice(n, n_sub, replace=False))
    params = dict(getattr(rec.programming, "params", {}) or {})
    loop = ResetLoop.from_params(params)
    state: dict[str, Any] = {"degree": fit.degree, "bias": None}

    def coefficients(by_degree: dict[int, FloatArray], held: int, chosen: int) -> tuple[dict[str, float], dict[str, float]]:
        """σ_prog coefficients by name at the held degree, and at the chosen one (0 above it)."""
        h, c = by_degree[held], by_degree[chosen]
        return ({f"programming_noise.c{i}": float(h[i]) for i in range(held + 1)},
                {f"programming_noise.c{i}": float(c[i]) if i < c.size else 0.0 for i in range(max(held, chosen) + 1)})

    def simulate_and_fit(p: Personality, b: int) -> tuple[dict[str, float], dict[str, float], Any] | None:
        say(f"bootstrap: simulated recording {b + 1}/{n_sim}")
        sim = simulate_data(p, d, devices, int(rng.integers(2**31)), params)
        try:
            f = _fit_data(sim, base_p, rng, where=f"simulation {b + 1}", prog_degree=state["degree"],
                          say=lambda _msg: None, n_boot=0, loop=loop, sp_bias=state["bias"])
        except CalibrationError:
            return None
        _, chosen = coefficients(f.prog_by_degree, f.degree, f.bic_degree)
        held = {c.name: c.value for c in f.constants if c.identified}
        lv = f.levels
        # only the levels the fit used (enough devices): the others' values are not fitted
        return held, chosen, (p, lv["x"], np.where(f.sigma_prog_used, lv["sigma_prog_uS"], np.nan), lv["sigma_prog_se"])

    def refine(payloads: list[Any]) -> tuple[tuple[FittedConstant, ...], Personality, dict[str, list[float]],
                                             dict[str, list[float]]]:
        dev = np.array([sp - ph.programming_noise_std(x, p) for p, x, sp, _ in payloads])
        counts = np.isfinite(dev).sum(axis=0)
        with np.errstate(invalid="ignore"):
            bias = np.where(counts > 0, np.nansum(dev, axis=0) / np.maximum(counts, 1), 0.0)
        lv = fit.levels
        bias_se = np.where(counts > 0, lv["sigma_prog_se"] / np.sqrt(np.maximum(counts, 1)), 0.0)
        state["bias"] = (bias, bias_se)
        sp = np.where(fit.sigma_prog_used, lv["sigma_prog_uS"] - bias, np.nan)  # the levels the fit used
        se = np.sqrt(lv["sigma_prog_se"] ** 2 + bias_se**2)
        prog = fit_sigma_prog(lv["x"], sp, se, None if select_degree else fit.degree, N_BOOTSTRAP, rng)
        state["degree"] = prog.degree
        note = f"σ_prog polynomial degree {prog.degree}, fitted to levels without their bias ({len(payloads)} simulations)"
        consts = [c for c in fit.constants if not c.name.startswith("programming_noise.c")]
        consts[1:1] = [FittedConstant(f"programming_noise.c{i}", float(c), float(prog.ci[0, i]), float(prog.ci[1, i]),
                                      True, note) for i, c in enumerate(prog.coef)]
        pers = fit.personality.with_updates(prog_noise_coeffs_uS=tuple(float(c) for c in prog.coef))
        held1: dict[str, list[float]] = {}
        chosen1: dict[str, list[float]] = {}
        for p, x, sp_b, se_b in payloads:  # round 1's fits, redone on their levels without the bias
            pf = fit_sigma_prog(x, sp_b - bias, np.sqrt(se_b**2 + bias_se**2), prog.degree, 0, rng)
            h, c = coefficients(pf.by_degree, prog.degree, pf.bic_degree)
            for k, v in h.items():
                held1.setdefault(k, []).append(v)
            for k, v in c.items():
                chosen1.setdefault(k, []).append(v)
        return tuple(consts), pers, held1, chosen1

    return simulation_bootstrap(fit.constants, fit.personality, n_sim, simulate_and_fit, ratio=n_sub / n,
                                select_degree=select_degree, refine=refine)


def recorded_personality(rec: Recording) -> Personality:
    """The personality a recording names (provenance ``personality``: name and content hash):
    a shipped personality of that name, or the file its chip URI names (``personality=PATH``),
    whichever has the recorded content hash.

    Raises:
        CalibrationError: the recording names no personality (not a virtual chip), or neither
            candidate has the recorded hash (the file changed, or it is not on this machine).
    """
    prov = rec.provenance
    named = prov.get("personality") if isinstance(prov, dict) else None
    if not isinstance(named, dict) or "hash" not in named:
        raise CalibrationError(f"{rec.path} records no chip personality (not a virtual chip); pass --base NAME|PATH")
    want, name = str(named["hash"]), str(named.get("name", ""))
    candidates: list[str] = []
    if name in shipped_personalities():
        candidates.append(name)
    try:
        path = parse_uri(str(prov.get("chip_uri", ""))).params.get("personality")
    except ConfigError:
        path = None
    if path:
        candidates.append(path)
    for cand in candidates:
        try:
            p = load_personality(cand)
        except ConfigError:
            continue
        if p.content_hash == want:
            return p
    raise CalibrationError(
        f"{rec.path} was recorded with personality {name}@{want}, but {' nor '.join(candidates) or 'no candidate'} "
        "has that content hash (changed, or not on this machine); pass --base NAME|PATH"
    )
