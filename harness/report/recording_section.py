"""The report of a recording: programming convergence, verify error, histograms, drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.report.html import Section, figure_png

#: Readouts shown in the histogram panels (first, last and evenly between).
HISTOGRAM_READOUTS = 5


def recording_section(path: Path) -> Section:
    """Read the recording at ``path`` once and describe it.

    Raises:
        RecordingError: not a readable recording.
    """
    from harness.recording import reading
    from harness.sessions.replay import summarize_recording

    with reading(path) as rec:
        info = rec.info()
        prog = rec.programming
        geom = rec.geometry
        lay = rec.layout
        s = Section(
            title=f"Recording {path.name}",
            anchor=f"rec-{abs(hash(str(path))) % 10**8}",
            lead=(
                f"{info['devices']:,} devices of model {info.get('model')!r} on {info.get('chip_uri')}, "
                f"{info['readouts_done']} readout(s)" + (" (complete)" if info["complete"] else "")
            ),
            provenance={k: v for k, v in rec.provenance.items() if not isinstance(v, (dict, list)) or k in ("packages", "personality")},
        )
        s.heading("Programming: write-read-verify")
        s.table(
            ["devices programmed", "converged", "mean iterations", "max iterations", "error std (µS)"],
            [[f"{prog.cells.size:,}", f"{prog.converged_fraction * 100:.2f} %", f"{prog.iterations.mean():.2f}",
              int(prog.iterations.max(initial=0)), f"{prog.error_std_uS:.3f}"]],
        )
        s.figure(_convergence_map(prog, geom), "Iterations per device over the array (grey: not programmed; "
                 "red: not converged).", "programming convergence map")
        s.figure(_verify_error(prog, geom), "Final verify error (last verify read − target) per target level, "
                 "against the loop's tolerance. The spread at the first readout (σ_prog, after relaxation) is in the "
                 "histograms below.", "verify error per level")
        if rec.n_readouts:
            summary = summarize_recording(rec)
            s.heading("Readouts")
            s.figure(_histograms(rec, lay, summary), "Conductance histograms per target level at readout times.",
                     "conductance histograms per level")
            s.figure(_drift(summary), "Mean G(t)/G(t₀) per level (points) and the fitted drift law "
                     "(t/t₀)^−ν (lines), log–log.", "drift per level with fitted law")
            rows = []
            for lv in summary["levels"]:
                rows.append([
                    f"{lv['lo_uS']:.1f}–{lv['hi_uS']:.1f}", lv["n"], f"{lv['target_mean_uS']:.2f}",
                    f"{lv['mean_uS'][-1]:.2f}", "—" if lv["nu_fit"] is None else f"{lv['nu_fit']:.4f}",
                ])
            s.table(["level (µS)", "devices", "mean target (µS)", "mean at last readout (µS)", "fitted ν"], rows)
        else:
            s.paragraph("This recording holds no readouts yet (programming only).", "note")
    return s


def _level_index(target_uS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from harness.sessions.replay import LEVEL_EDGES_US

    edges = np.asarray(LEVEL_EDGES_US)
    idx = np.digitize(target_uS, edges) - 1
    idx[(idx < 0) | (idx >= edges.size - 1)] = -1
    return idx, edges


def _convergence_map(prog: Any, geom: Any) -> bytes:
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    img = np.full(geom.n_cells, np.nan)
    img[prog.cells] = prog.iterations
    img = img.reshape(geom.rows, geom.cols)
    bad = np.zeros(geom.n_cells)
    bad[prog.cells[~prog.converged]] = 1.0
    bad = np.where(bad.reshape(geom.rows, geom.cols) > 0, 1.0, np.nan)
    aspect = geom.cols / geom.rows
    fig = Figure(figsize=(min(12.0, 3.0 + 4.0 * aspect), 4.6), layout="constrained")
    ax = fig.subplots()
    ax.set_facecolor("#d0d0d0")
    im = ax.imshow(img, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.imshow(bad, aspect="auto", interpolation="nearest", cmap=ListedColormap(["#e0242b"]), vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="write-verify iterations")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(f"{geom.rows} × {geom.cols} array: {int((~prog.converged).sum())} device(s) not converged")
    return figure_png(fig)


def _verify_error(prog: Any, geom: Any) -> bytes:
    """Std of (final verify read − target) per target level over the converged devices,
    against the loop's tolerance δ; and every device's error (non-converged ones in red)."""
    from matplotlib.figure import Figure

    err = prog.final_uS - prog.target_uS
    tol = prog.params.get("tolerance_uS")
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_s, ax_e = fig.subplots(1, 2)
    programmed = prog.target_uS > 0.5
    ok = programmed & prog.converged
    tgt, e = prog.target_uS[ok], err[ok]
    if tgt.size:
        bins = np.linspace(0.0, max(float(tgt.max()), 1.0), 13)
        k = np.clip(np.digitize(tgt, bins) - 1, 0, bins.size - 2)
        n = np.bincount(k, minlength=bins.size - 1)
        s1 = np.bincount(k, weights=e, minlength=bins.size - 1)
        s2 = np.bincount(k, weights=e * e, minlength=bins.size - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
        mid = 0.5 * (bins[1:] + bins[:-1])
        ax_s.plot(mid[n > 1], std[n > 1], "o-", label="converged devices")
        ax_e.hist2d(tgt, e, bins=(40, 60), cmap="Blues", cmin=1)
    bad = programmed & ~prog.converged
    if bad.any():
        ax_e.plot(prog.target_uS[bad], err[bad], "x", color="#e0242b", label=f"not converged ({int(bad.sum())})")
        ax_e.legend(fontsize=8)
    if tol is not None:
        ax_s.axhline(float(tol), ls="--", color="grey", label=f"tolerance δ = {float(tol):g} µS")
        for sign in (-1, 1):
            ax_e.axhline(sign * float(tol), ls="--", color="grey", lw=1)
    ax_s.set_xlabel("target (µS)")
    ax_s.set_ylabel("std of verify error (µS)")
    ax_s.set_ylim(bottom=0)
    ax_s.legend(fontsize=8)
    ax_s.grid(alpha=0.3)
    ax_e.set_xlabel("target (µS)")
    ax_e.set_ylabel("final − target (µS)")
    ax_e.set_title("verify error per device")
    return figure_png(fig)


def _histograms(rec: Any, lay: Any, summary: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    target = np.full(rec.geometry.n_cells, np.nan)
    target[lay.cells] = lay.target_uS
    tgt = target[rec.readout_cells]
    idx, edges = _level_index(np.nan_to_num(tgt, nan=-1.0))
    levels = [j for j in range(edges.size - 1) if np.any(idx == j)]
    n = rec.n_readouts
    picks = sorted(set(np.linspace(0, n - 1, min(HISTOGRAM_READOUTS, n)).round().astype(int).tolist()))
    reads = {i: rec.readout(i) for i in picks}
    t = np.asarray(summary["t_s"])
    cols = min(3, max(1, len(levels)))
    rows = -(-len(levels) // cols) if levels else 1
    fig = Figure(figsize=(4.0 * cols, 2.9 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    geom = rec.geometry
    lsb = geom.adc_lsb_uS
    from harness.units import format_duration

    for ax, j in zip(axes, levels):
        sel = idx == j
        g_all = np.concatenate([reads[i][sel] for i in picks])
        lo, hi = float(np.min(g_all)), float(np.max(g_all))
        bins = np.arange(lo - lsb / 2, hi + lsb, max(lsb, (hi - lo) / 40)) if hi > lo else 10
        for i in picks:
            ax.hist(reads[i][sel], bins=bins, histtype="step", lw=1.2, label=f"t = {format_duration(float(t[i]))}")
        ax.set_title(f"target {edges[j]:.1f}–{min(edges[j + 1], geom.g_max_uS):.1f} µS (n={int(sel.sum())})", fontsize=10)
        ax.set_xlabel("conductance (µS)")
    for ax in axes[len(levels):]:
        ax.set_visible(False)
    if levels:
        axes[0].legend(fontsize=7)
        axes[0].set_ylabel("devices")
    return figure_png(fig)


def _drift(summary: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    t = np.asarray(summary["t_s"], dtype=np.float64)
    t0 = float(summary["t0_s"])
    fig = Figure(figsize=(8.5, 4.4), layout="constrained")
    ax = fig.subplots()
    positive = False  # a dead chip's readouts (all zero) have no ratio a log axis can show
    for lv in summary["levels"]:
        if lv["reset_level"]:
            continue
        r = np.array([np.nan if v is None else v for v in lv["mean_ratio"]], dtype=np.float64)
        positive = positive or bool(np.any(r > 0))
        (pts,) = ax.plot(t, r, "o", ms=4, label=f"{lv['lo_uS']:.0f}–{lv['hi_uS']:.0f} µS")
        nu = lv["nu_fit"]
        if nu is not None and t0 > 0:
            tt = np.geomspace(t0, t.max(), 50)
            ax.plot(tt, (tt / t0) ** (-nu), "-", color=pts.get_color(), lw=1, label=f"  fit ν = {nu:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log" if positive else "linear")
    ax.set_xlabel("time since programming (s)")
    ax.set_ylabel("mean G(t) / G(t₀)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    return figure_png(fig)
