"""The whole-pipeline parametric bootstrap of a calibration: bias correction and 95 % intervals.

The recorded experiment is re-run on virtual chips of the fitted personality
(:mod:`~harness.calibration.simulate`) and every simulated recording is fitted exactly like
the real one, so the simulations show what the whole fit does to a chip whose truth is known:
its bias (removed by an iterated bootstrap bias correction) and its spread (the intervals).
Efron & Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall 1993, ch. 6 (the
parametric bootstrap) and ch. 10 (bias estimation); Efron, "Estimation and accuracy after
model selection", JASA 109:991-1007, 2014 (doi:10.1080/01621459.2013.823775): the spread of an
estimate that follows a data-driven model choice must include that choice, so each
simulation chooses the σ_prog degree again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.calibration.data import CalibrationData
from harness.calibration.result import FittedConstant
from harness.errors import ConfigError
from harness.virtual.personality import ClippedLog, Personality

FloatArray = npt.NDArray[np.float64]

#: Constants that are never negative (their values and intervals are floored at 0).
NON_NEGATIVE = ("t0_s", "read_noise.q_coef", "read_noise.q_exp", "reset.g_mean_uS", "drift.nu_mean.min",
                "drift.nu_mean.max", "drift.nu_std.min", "drift.nu_std.max")
PROG_PREFIX = "programming_noise.c"
#: A constant identified on the recording counts as identified only if the simulated
#: re-recordings of the fitted chip identify it this often (a clip bound at the edge of the
#: observed range may be found on one recording and not on the next).
IDENTIFIED_SHARE = 0.75

#: One simulated re-recording of a personality (the index numbers it), fitted: every
#: constant's value with the recording's σ_prog degree held, and the σ_prog coefficients with
#: the degree chosen again (zero above the chosen degree); None where it could not be fitted.
SimulateAndFit = Callable[[Personality, int], "tuple[dict[str, float], dict[str, float], Any] | None"]
#: After round 1, from its payloads (the third item above): the constants and personality to
#: correct instead (a stage refitted with its bias removed), and the round-1 values of the
#: refitted constants re-derived the same way (held degree, chosen degree); those constants
#: are taken as free of bias at round 1 (no one-step correction).
Refine = Callable[[list[Any]], "tuple[tuple[FittedConstant, ...], Personality, dict[str, list[float]], dict[str, list[float]]]"]


def t975(dof: int) -> float:
    """Student-t 0.975 quantile (dof >= 1): the interval from a spread estimated on few simulations."""
    table = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
             2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
             2.045, 2.042)
    return table[dof - 1] if dof <= len(table) else 1.96 + 2.4 / dof


def with_constants(p: Personality, values: dict[str, float]) -> Personality:
    """``p`` with the named constants (as calibration names them) replaced.

    Raises:
        ConfigError: the result is not a valid personality (e.g. σ_prog < 0 somewhere)."""
    coeffs = list(p.prog_noise_coeffs_uS)
    laws = {"nu_mean": dict(p.nu_mean.__dict__), "nu_std": dict(p.nu_std.__dict__)}
    simple: dict[str, float] = {}
    keys = {"t0_s": "t0_s", "read_noise.q_coef": "q_coef", "read_noise.q_exp": "q_exp",
            "reset.g_mean_uS": "reset_g_mean_uS"}
    for name, v in values.items():
        if name.startswith(PROG_PREFIX):
            coeffs[int(name.rsplit("c", 1)[1])] = v
        elif name.startswith("drift.nu_"):
            _, law, key = name.split(".")
            laws[law][key] = v
        elif name in keys:
            simple[keys[name]] = v
    return p.with_updates(prog_noise_coeffs_uS=tuple(coeffs), nu_mean=ClippedLog(**laws["nu_mean"]),
                          nu_std=ClippedLog(**laws["nu_std"]), **simple)


def _group(name: str) -> str:
    """Constants corrected together (one law): σ_prog, each drift law; others alone."""
    if name.startswith(PROG_PREFIX):
        return "programming_noise"
    return name.rsplit(".", 1)[0] if name.startswith("drift.nu_") else name


def physical_subset(p: Personality, values: dict[str, float]) -> tuple[Personality, dict[str, float], list[str]]:
    """Apply ``values`` law by law, keeping each law's change only if the personality stays
    valid: (personality, the values applied, the laws left as in ``p``)."""
    groups: dict[str, dict[str, float]] = {}
    for name, v in values.items():
        groups.setdefault(_group(name), {})[name] = v
    applied: dict[str, float] = {}
    rejected: list[str] = []
    for label, vals in groups.items():
        try:
            with_constants(p, applied | vals)
        except ConfigError:
            rejected.append(label)
            continue
        applied |= vals
    return with_constants(p, applied), applied, rejected


def _pooled_sd(rounds: list[FloatArray]) -> tuple[float, int]:
    """Pooled within-round standard deviation and its degrees of freedom."""
    dev = np.concatenate([r - r.mean() for r in rounds if r.size])
    dof = max(dev.size - sum(1 for r in rounds if r.size), 1)
    return float(np.sqrt(np.sum(dev * dev) / dof)), dof


def simulation_bootstrap(
    constants: tuple[FittedConstant, ...], fitted: Personality, n_sim: int, simulate_and_fit: SimulateAndFit,
    *, ratio: float, select_degree: bool, refine: Refine | None = None,
) -> tuple[list[FittedConstant], Personality, list[str]]:
    """Iterated bias correction and 95 % intervals from ``n_sim`` simulated re-recordings.

    Round 1: ⌊n_sim/2⌋ simulations of the fitted personality θ̂, mean fit F₁, one-step
    correction θ₁ = θ̂ − (F₁ − θ̂). Round 2: the rest, of θ₁, mean fit F₂; the reported value
    is θ̂ − (F₂ − θ₁), the bias measured at θ₁ (a bias that changes with the constant is
    removed to second order). 95 % interval: value ± t(m − 2)·sqrt(r·s² + s_h²/m₂), s_h the
    pooled within-round spread of the fits and s the same for the spread of the estimate
    (for the σ_prog coefficients with ``select_degree``: of the fits that chose the degree
    again), r = simulated/recorded devices (``ratio``: the simulations' spread scaled to the
    recording's size), s_h²/m₂ the error of the estimated bias. ``refine`` (after round 1)
    replaces constants by refits whose bias round 1 measured (the σ_prog levels). t0 lives on the profile's
    grid: not corrected, its likelihood-ratio interval joined with ±t·s·sqrt(r + 1/m₂). A
    corrected law that is not physical keeps its uncorrected value (noted), the other laws
    their correction. Returns (constants, personality, warnings)."""
    notes: list[str] = []
    failed = 0

    def run(p: Personality, count: int, first: int) -> tuple[dict[str, list[float]], dict[str, list[float]], list[Any]]:
        nonlocal failed
        held: dict[str, list[float]] = {}
        chosen: dict[str, list[float]] = {}
        payloads: list[Any] = []
        for b in range(first, first + count):
            out = simulate_and_fit(p, b)
            if out is None:
                failed += 1
                continue
            for name, v in out[0].items():
                held.setdefault(name, []).append(v)
            for name, v in out[1].items():
                chosen.setdefault(name, []).append(v)
            payloads.append(out[2])
        return held, chosen, payloads

    n1 = n_sim // 2
    held1, chosen1, payloads1 = run(fitted, n1, 0)
    refined: set[str] = set()
    if refine is not None and payloads1:
        constants, fitted, h_new, c_new = refine(payloads1)
        refined = set(h_new)
        for name in [n for n in held1 if n.startswith(PROG_PREFIX)]:
            held1.pop(name)
        for name in [n for n in chosen1 if n.startswith(PROG_PREFIX)]:
            chosen1.pop(name)
        held1 |= h_new
        chosen1 |= c_new
    step1: dict[str, float] = {}
    for c in constants:
        v = np.asarray(held1.get(c.name, []), dtype=np.float64)
        if c.name in refined:
            step1[c.name] = c.value
        elif c.identified and c.name != "t0_s" and v.size >= 1:
            step1[c.name] = 2 * c.value - float(v.mean())
            if c.name in NON_NEGATIVE:
                step1[c.name] = max(step1[c.name], 0.0)
    p1, step1, _ = physical_subset(fitted, step1)
    held2, chosen2, _ = run(p1, n_sim - n1, n1)
    if failed:
        notes.append(f"{failed} of {n_sim} simulated re-recordings could not be fitted; intervals rest on the rest")

    corrected: dict[str, float] = {}
    halves: dict[str, float] = {}
    for c in constants:
        v1 = np.asarray(held1.get(c.name, []), dtype=np.float64)
        v2 = np.asarray(held2.get(c.name, []), dtype=np.float64)
        if not c.identified or v1.size + v2.size < max(3, IDENTIFIED_SHARE * (n_sim - failed)) or v2.size < 1:
            continue
        s_h, dof = _pooled_sd([v1, v2])
        s = s_h
        if select_degree and c.name.startswith(PROG_PREFIX):
            s, _ = _pooled_sd([np.asarray(chosen1.get(c.name, []), dtype=np.float64),
                               np.asarray(chosen2.get(c.name, []), dtype=np.float64)])
        halves[c.name] = t975(dof) * math.sqrt(ratio * s * s + s_h * s_h / v2.size)
        if c.name != "t0_s":
            corrected[c.name] = c.value - (float(v2.mean()) - step1.get(c.name, c.value))
            if c.name in NON_NEGATIVE:
                corrected[c.name] = max(corrected[c.name], 0.0)
    pers, applied, rejected = physical_subset(fitted, corrected)
    if rejected:
        notes.append(f"the bias-corrected {', '.join(rejected)} law is not physical; its uncorrected fit is kept")

    out: list[FittedConstant] = []
    m = {c.name: len(held1.get(c.name, [])) + len(held2.get(c.name, [])) for c in constants}
    n_fitted = n_sim - failed
    for c in constants:
        if c.identified and m[c.name] < IDENTIFIED_SHARE * n_fitted:
            out.append(FittedConstant(c.name, c.value, c.ci_low, c.ci_high, False, (
                f"identified on the recording but in only {m[c.name]} of {n_fitted} simulated re-recordings of the "
                "fitted chip, so neither its bias nor its spread can be measured: not identified (value: the "
                "recording's fit, per-stage interval)")))
            continue
        if c.name not in halves:
            out.append(c)
            continue
        half = halves[c.name]
        if c.name == "t0_s":
            # t0 lives on the profile's candidate grid: simulations often all return the same
            # candidate (zero spread), so its interval keeps the likelihood-ratio one as well
            note = f"{c.note}; interval: likelihood ratio joined with {m[c.name]} simulated re-recordings"
            out.append(FittedConstant(c.name, c.value, max(min(c.ci_low, c.value - half), 0.0),
                                      max(c.ci_high, c.value + half), True, note.lstrip("; ")))
            continue
        value = applied.get(c.name, c.value)
        how = (f"bias {c.value - value:+.3g} removed" if c.name in applied
               else "bias correction not applied (the corrected law is not physical)")
        note = (f"{c.note}; " if c.note else "") + f"{how}, 95 % interval from {m[c.name]} simulated re-recordings"
        lo = value - half
        out.append(FittedConstant(c.name, value, max(lo, 0.0) if c.name in NON_NEGATIVE else lo, value + half,
                                  True, note))
    return out, pers, notes
