"""Two recordings of the same layout side by side: drift, read noise and write-verify
convergence per target level (``harness compare``) — e.g. a real chip and the virtual chip
fitted to it by ``harness calibrate``.

Per level (equal width in ln x over the programmed targets of A, shared by both), for each
recording: devices, converged fraction, mean iterations, verify error std (final read −
target); the drift exponent as the mean and spread of each device's log-log slope of G vs t
over all readouts (times since programming, from the first readout on); the mean
G(last)/G(first); the relative read noise σ_read/G (from the repeats when the session took
several reads per time, else from the residuals of the per-device drift lines, as
``harness calibrate`` does). With the same timetable, a two-sample KS distance of the
programmed devices' readouts at every time says how far the two distributions are apart.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from harness.errors import RecordingError
from harness.recording import Recording
from harness.calibration.data import CalibrationData, load_data
from harness.calibration.fits import loglog_lines
from harness.calibration.goodness import KS_C_ALPHA01, ks_two_sample
from harness.calibration.result import finite_list

#: Target levels of the comparison (fewer than calibrate uses: a table for people).
COMPARE_LEVELS = 8
_MIN_DEVICES = 5


def _edges(x: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
    lo, hi = math.log(float(x.min())), math.log(float(x.max()))
    e = np.linspace(lo, hi, n + 1)
    e[-1] += 1e-9
    return e


def _one(rec: Recording, d: CalibrationData, edges: npt.NDArray[np.float64]) -> dict[str, Any]:
    prog = rec.programming
    n_lv = edges.size - 1
    x = d.target_uS / d.g_max_uS
    programmed = d.target_uS > 0
    lvl = np.full(x.size, -1)
    lvl[programmed] = np.clip(np.searchsorted(edges, np.log(x[programmed]), side="right") - 1, 0, n_lv - 1)
    conv = d.converged
    err = d.final_uS - d.target_uS
    lm = np.log(np.maximum(d.mean, d.lsb_uS / 2))
    u = np.log(d.t_g / d.t_g[0])
    uc = u - u.mean()
    suu = float(uc @ uc)
    nu, _a, rss = loglog_lines(lm, uc, float(u.mean()), suu) if suu > 0 else (np.full(x.size, np.nan),) * 3
    if d.var is not None:
        method = "repeats"
        with np.errstate(invalid="ignore", divide="ignore"):
            rel2 = np.nanmean(d.var / np.maximum(d.mean, d.lsb_uS) ** 2, axis=0)
    else:
        method = "residuals" if d.t_g.size >= 3 else "none"
        rel2 = rss / max(d.t_g.size - 2, 1) if d.t_g.size >= 3 else np.full(x.size, np.nan)
    ratio = d.mean[-1] / np.maximum(d.mean[0], d.lsb_uS)
    rows = []
    for j in range(n_lv):
        m = lvl == j
        mc = m & conv
        n = int(m.sum())
        row: dict[str, Any] = {"devices": n}
        if n >= _MIN_DEVICES:
            row.update(
                converged_fraction=float(conv[m].mean()),
                mean_iterations=float(d.iterations[m].mean()),
                verify_error_std_uS=float(err[mc].std()) if mc.sum() > 1 else None,
                nu_mean=float(np.nanmean(nu[mc])) if mc.any() else None,
                nu_std=float(np.nanstd(nu[mc])) if mc.any() else None,
                ratio_last_first=float(np.nanmean(ratio[mc])) if mc.any() else None,
                read_noise_rel=float(math.sqrt(max(float(np.nanmean(rel2[mc])), 0.0))) if mc.any() else None,
            )
        rows.append(row)
    return {
        "path": str(rec.path),
        "chip": rec.provenance.get("chip_identity") or rec.provenance.get("chip_uri"),
        "personality": rec.provenance.get("personality"),
        "readouts": int(rec.n_readouts),
        "repeats": d.repeats,
        "read_noise_method": method,
        "converged_fraction": float(conv[programmed].mean()) if programmed.any() else None,
        "mean_iterations": float(np.mean(prog.iterations)) if prog.iterations.size else None,
        "levels": rows,
    }


def compare_recordings(a: Recording, b: Recording, *, levels: int = COMPARE_LEVELS) -> dict[str, Any]:
    """Side-by-side statistics of two recordings of the same layout (see the module docstring).

    Raises:
        RecordingError: the layouts differ (other cells or other targets).
        CalibrationError: a recording has fewer than 2 readouts or no programming outcome.
    """
    la, lb = a.layout, b.layout
    if la.cells.shape != lb.cells.shape or not np.array_equal(la.cells, lb.cells) or not np.allclose(
        la.target_uS, lb.target_uS, rtol=0, atol=1e-9
    ):
        raise RecordingError(
            f"{a.path} and {b.path} are not recordings of the same layout (other cells or targets); "
            "compare a chip with the virtual chip running the same session"
        )
    da, db = load_data(a), load_data(b)
    x = da.target_uS / da.g_max_uS
    programmed = da.target_uS > 0
    if not programmed.any():
        raise RecordingError(f"{a.path} has no programmed device to compare")
    edges = _edges(x[programmed], levels)
    sa, sb = _one(a, da, edges), _one(b, db, edges)
    centers = np.exp((edges[:-1] + edges[1:]) / 2) * da.g_max_uS
    out: dict[str, Any] = {"a": sa, "b": sb, "level_target_uS": finite_list(centers)}
    same_times = da.t_g.size == db.t_g.size and np.allclose(da.t_g, db.t_g, rtol=1e-3, atol=1e-3)
    p = np.flatnonzero(programmed & da.converged & db.converged)
    if same_times and p.size:  # no device converged in both: no distribution to compare
        ks = [ks_two_sample(da.mean[g, p], db.mean[g, p]) for g in range(da.t_g.size)]
        out["ks"] = {
            "times_s": finite_list(da.t_g),
            "distance": ks,
            "critical_alpha_0.01": KS_C_ALPHA01 * math.sqrt(2.0 / max(p.size, 1)),
            "devices": int(p.size),
        }
    else:
        out["ks"] = None
    return out
