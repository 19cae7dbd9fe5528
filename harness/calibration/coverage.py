"""Coverage of the calibration's intervals: synthetic chips with known constants, calibrated blind.

A *study* draws ``n_chips`` personalities at random around a centre (each published constant
scaled by its own uniform factor in [1 − spread, 1 + spread], t0 and the RESET level drawn
log-uniformly), records a calibration-pattern session on a small virtual chip of each, fits
each recording with :func:`~harness.calibration.calibrate.calibrate_recording` knowing nothing
of the truth (base ``pcm-90nm``), and compares every identified constant with its truth: bias,
RMSE, the share of 95 % intervals that contain the truth, and the median interval width.
``benchmarks/calibration_coverage.py`` prints the full study; ``tests/test_calibration_coverage.py``
runs a reduced one (docs/calibration.md, "Coverage").
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.virtual import physics as ph
from harness.virtual.personality import ClippedLog, Personality, load_personality

#: Constants compared with the truth (those a calibration-pattern session identifies).
COMPARED = (
    "t0_s", "programming_noise.c0", "programming_noise.c1", "programming_noise.c2", "programming_noise.c3",
    "drift.nu_mean.ln_coef", "drift.nu_mean.offset", "drift.nu_mean.min",
    "drift.nu_std.ln_coef", "drift.nu_std.offset", "drift.nu_std.min",
    "read_noise.q_coef", "read_noise.q_exp", "reset.g_mean_uS",
)


def true_value(p: Personality, name: str) -> float:
    """The value of constant ``name`` (as calibration names it) in personality ``p``."""
    if name.startswith("programming_noise.c"):
        k = int(name.rsplit("c", 1)[1])
        return p.prog_noise_coeffs_uS[k] if k < len(p.prog_noise_coeffs_uS) else 0.0
    if name.startswith("drift.nu_"):
        _, law, key = name.split(".")
        return float(getattr(getattr(p, law), key))
    simple = {"t0_s": "t0_s", "read_noise.q_coef": "q_coef", "read_noise.q_exp": "q_exp",
              "read_noise.q_max": "q_max", "reset.g_mean_uS": "reset_g_mean_uS", "reset.g_std_uS": "reset_g_std_uS"}
    return float(getattr(p, simple[name]))


def random_personality(
    rng: np.random.Generator, *, centre: str | Personality = "pcm-90nm", spread: float = 0.3,
    t0_range_s: tuple[float, float] = (12.0, 60.0), reset_range_uS: tuple[float, float] = (0.05, 0.4),
) -> Personality:
    """A personality whose published constants are each ``centre``'s times an independent
    uniform factor in [1 − spread, 1 + spread] (σ_prog coefficients, both drift laws' four
    terms, q_coef, q_exp, q_max), t0 and the RESET mean log-uniform in the given ranges.

    A draw is kept only if σ_prog exceeds the read noise it holds (verify read and read at t0)
    by a margin at every x: otherwise the chip's relaxation is floored at 0 and the chip does
    not show the σ_prog of its file (docs/virtual-chip.md)."""
    base = load_personality(centre)
    x = np.linspace(0.0, 1.0, 101)
    for _ in range(1000):
        def f() -> float:
            return float(rng.uniform(1 - spread, 1 + spread))

        def law(c: ClippedLog) -> ClippedLog:
            lo, hi = c.min * f(), c.max * f()
            return ClippedLog(c.ln_coef * f(), c.offset * f(), min(lo, hi), max(lo, hi))

        try:
            p = base.with_updates(
                name="random",
                prog_noise_coeffs_uS=tuple(c * f() for c in base.prog_noise_coeffs_uS),
                nu_mean=law(base.nu_mean), nu_std=law(base.nu_std),
                q_coef=base.q_coef * f(), q_exp=base.q_exp * f(), q_max=base.q_max * f(),
                t0_s=float(math.exp(rng.uniform(*np.log(t0_range_s)))),
                reset_g_mean_uS=float(math.exp(rng.uniform(*np.log(reset_range_uS)))),
            )
        except ConfigError:  # σ_prog(x) < 0 somewhere on [0, 1]: draw again
            continue
        g_q = x * p.g_max_uS * ph.read_noise_q(x, p)
        var_read = g_q**2 * (ph.read_noise_time_factor(p.t0_s, p) ** 2 + ph.read_noise_time_factor(ph.T_VERIFY_S, p) ** 2)
        s_prog = ph.programming_noise_std(x, p)
        if np.all(var_read < 0.8 * s_prog**2):
            return p
    raise RuntimeError("no valid random personality in 1000 draws; reduce the spread")


def session_text(model: Path, *, points: int, repeats: int, start_s: float, stop_s: float) -> str:
    """A log-spaced calibration session of the pattern ``model``."""
    return (f'[session]\nname = "coverage"\n[program]\nmodel = "{model}"\n[readout]\nrepeats = {repeats}\n'
            f'[schedule]\nkind = "log"\nstart_s = {start_s}\nstop_s = {stop_s}\npoints = {points}\n')


@dataclass(frozen=True)
class ChipOutcome:
    """One synthetic chip: its truth and the fitted constants (value, 95 % CI, identified)."""

    truth: Personality
    fitted: dict[str, tuple[float, float, float, bool]]
    degree: int


def run_chip(
    truth: Personality, workdir: Path, *, seed: int, rows: int, cols: int, points: int, repeats: int,
    start_s: float, stop_s: float, pattern: Path, calibrate_kwargs: dict[str, Any] | None = None,
) -> ChipOutcome:
    """Record the pattern session on a virtual chip of ``truth`` and calibrate it blind."""
    from harness.calibration.calibrate import calibrate_recording
    from harness.chip.protocol import Geometry
    from harness.recording import open_recording
    from harness.sessions.runner import run_session
    from harness.sessions.schedule import parse_session
    from harness.virtual.chip import VirtualPCMChip, personality_geometry

    geo: Geometry = personality_geometry(truth, rows, cols)
    chip = VirtualPCMChip(geo, seed=seed, personality=truth)
    rec_path = workdir / f"chip-{seed}.h5"
    run_session(parse_session(session_text(pattern, points=points, repeats=repeats, start_s=start_s, stop_s=stop_s)),
                chip, rec_path, overwrite=True)
    with open_recording(rec_path) as rec:
        res = calibrate_recording(rec, seed=seed, **(calibrate_kwargs or {}))
    rec_path.unlink()
    fitted = {c.name: (c.value, c.ci_low, c.ci_high, c.identified) for c in res.constants}
    return ChipOutcome(truth=truth, fitted=fitted, degree=len(res.personality.prog_noise_coeffs_uS) - 1)


def coverage_study(
    n_chips: int, *, seed: int = 0, rows: int = 128, cols: int = 256, points: int = 20, repeats: int = 3,
    start_s: float = 10.0, stop_s: float = 72000.0, spread: float = 0.3,
    progress: Callable[[int, ChipOutcome], None] | None = None, calibrate_kwargs: dict[str, Any] | None = None,
) -> tuple[list[ChipOutcome], dict[str, dict[str, float]]]:
    """Run ``n_chips`` synthetic chips (see the module docstring); returns the outcomes and
    per constant: ``n`` (chips where it was identified), ``bias``, ``rmse``, ``coverage``
    (share of identified chips whose 95 % CI holds the truth), ``median_width``, and the same
    bias relative to the truth (``rel_bias``). σ_prog coefficients are compared term by term,
    a term absent from a polynomial being 0: a cubic fit of a quadratic truth covers c3 if
    its interval holds 0, and a term of the truth that the fitted degree lacks is a miss."""
    from harness.calibration.pattern import save_calibration_pattern

    rng = np.random.default_rng(seed)
    outcomes: list[ChipOutcome] = []
    with tempfile.TemporaryDirectory(prefix="harness-coverage-") as tmp:
        work = Path(tmp)
        pattern = save_calibration_pattern(work / "pattern.h5", rows, cols, seed=seed)
        for i in range(n_chips):
            truth = random_personality(rng, spread=spread)
            out = run_chip(truth, work, seed=seed * 1000 + i, rows=rows, cols=cols, points=points, repeats=repeats,
                           start_s=start_s, stop_s=stop_s, pattern=pattern, calibrate_kwargs=calibrate_kwargs)
            outcomes.append(out)
            if progress:
                progress(i, out)
    return outcomes, summarize(outcomes)


def summarize(outcomes: list[ChipOutcome]) -> dict[str, dict[str, float]]:
    """Per compared constant: n (chips scored), bias, rel_bias (NaN where a truth is 0), rmse,
    coverage, median_width (see coverage_study)."""
    table: dict[str, dict[str, float]] = {}
    for name in COMPARED:
        err, rel, hit, width = [], [], [], []
        for o in outcomes:
            truth = true_value(o.truth, name)
            if name not in o.fitted:
                if name.startswith("programming_noise.c") and truth != 0.0:
                    hit.append(False)  # a term of the truth that the fitted degree lacks
                continue
            value, lo, hi, ident = o.fitted[name]
            if not ident:
                continue
            err.append(value - truth)
            rel.append((value - truth) / truth if truth else math.nan)
            hit.append(lo <= truth <= hi)
            width.append(hi - lo)
        n = len(err)
        table[name] = {
            "n": float(len(hit)),
            "bias": float(np.mean(err)) if n else math.nan,
            "rel_bias": float(np.mean(rel)) if n else math.nan,
            "rmse": float(np.sqrt(np.mean(np.square(err)))) if n else math.nan,
            "coverage": float(np.mean(hit)) if hit else math.nan,
            "median_width": float(np.median(width)) if n else math.nan,
        }
    return table


def reset_relative_errors(outcomes: list[ChipOutcome]) -> list[tuple[float, float]]:
    """(true RESET mean, relative error of the fitted one) per chip."""
    out = []
    for o in outcomes:
        if "reset.g_mean_uS" in o.fitted:
            t = o.truth.reset_g_mean_uS
            out.append((t, (o.fitted["reset.g_mean_uS"][0] - t) / t))
    return out
