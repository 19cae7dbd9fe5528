"""The report of a recording: programming convergence, verify error, histograms, drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.report.html import Section, figure_png

#: Readouts shown in the histogram panels (first, last and evenly between).
HISTOGRAM_READOUTS = 5
#: Fewest devices a level needs for its own histogram panel.
MIN_HISTOGRAM_DEVICES = 30


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
            few = [f"{lv['lo_uS']:.1f}–{lv['hi_uS']:.1f} µS (n={lv['n']})" for lv in summary["levels"]
                   if 0 < lv["n"] < MIN_HISTOGRAM_DEVICES]
            s.figure(_histograms(rec, lay, summary), "Conductance histograms per target level at readout times"
                     + (f"; levels with fewer than {MIN_HISTOGRAM_DEVICES} devices have no panel: {', '.join(few)}."
                        if few else "."), "conductance histograms per level")
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
        if rec.has_epochs:
            from harness.report.refresh_section import add_refresh_part

            add_refresh_part(s, rec)
    return s


def _level_index(target_uS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from harness.sessions.replay import LEVEL_EDGES_US

    edges = np.asarray(LEVEL_EDGES_US)
    idx = np.digitize(target_uS, edges) - 1
    idx[(idx < 0) | (idx >= edges.size - 1)] = -1
    return idx, edges


#: Largest map drawn cell by cell; a bigger cropped region is shown as block means.
MAP_MAX_CELLS = (256, 512)


def _convergence_map(prog: Any, geom: Any) -> bytes:
    """Iterations per device, cropped to the rows and columns that hold programmed devices
    (a small model on a 512 × 2048 chip is otherwise a grey field) and, when that is still
    larger than :data:`MAP_MAX_CELLS`, averaged over blocks (red: a block with a device that
    did not converge)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    img = np.full(geom.n_cells, np.nan)
    img[prog.cells] = prog.iterations
    img = img.reshape(geom.rows, geom.cols)
    bad = np.zeros(geom.n_cells)
    bad[prog.cells[~prog.converged]] = 1.0
    bad = bad.reshape(geom.rows, geom.cols)
    used_r = np.flatnonzero(np.isfinite(img).any(axis=1))
    used_c = np.flatnonzero(np.isfinite(img).any(axis=0))
    r0, r1 = (int(used_r[0]), int(used_r[-1]) + 1) if used_r.size else (0, geom.rows)
    c0, c1 = (int(used_c[0]), int(used_c[-1]) + 1) if used_c.size else (0, geom.cols)
    img, bad = img[r0:r1, c0:c1], bad[r0:r1, c0:c1]
    br = -(-img.shape[0] // MAP_MAX_CELLS[0])
    bc = -(-img.shape[1] // MAP_MAX_CELLS[1])
    if br > 1 or bc > 1:  # block means (NaN-aware); a block is red if any of its devices failed
        pr, pc = -img.shape[0] % br, -img.shape[1] % bc
        img = np.pad(img, ((0, pr), (0, pc)), constant_values=np.nan)
        bad = np.pad(bad, ((0, pr), (0, pc)))
        blocks = img.reshape(img.shape[0] // br, br, img.shape[1] // bc, bc)
        count = np.isfinite(blocks).sum(axis=(1, 3))
        total = np.nansum(blocks, axis=(1, 3))
        img = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        bad = bad.reshape(bad.shape[0] // br, br, bad.shape[1] // bc, bc).max(axis=(1, 3))
    bad = np.where(bad > 0, 1.0, np.nan)
    extent = (c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5)
    aspect = (c1 - c0) / max(r1 - r0, 1)
    fig = Figure(figsize=(min(12.0, 3.0 + 4.0 * aspect), 4.6), layout="constrained")
    ax = fig.subplots()
    ax.set_facecolor("#d0d0d0")
    im = ax.imshow(img, aspect="auto", interpolation="nearest", cmap="viridis", extent=extent)
    ax.imshow(bad, aspect="auto", interpolation="nearest", cmap=ListedColormap(["#e0242b"]), vmin=0, vmax=1,
              extent=extent)
    fig.colorbar(im, ax=ax, label="write-verify iterations" + (" (block mean)" if br > 1 or bc > 1 else ""))
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    where = f"rows {r0}–{r1 - 1}, columns {c0}–{c1 - 1} of the {geom.rows} × {geom.cols} array"
    blocks_note = f"; {br} × {bc}-cell blocks" if br > 1 or bc > 1 else ""
    ax.set_title(f"{where}{blocks_note}: {int((~prog.converged).sum())} device(s) not converged", fontsize=10)
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
        e_lo, e_hi = np.percentile(e, [0.1, 99.9]) if e.size else (0.0, 0.0)
        span = max(e_hi - e_lo, 1e-6)
        ax_e.hist2d(tgt, e, bins=(40, 60), cmap="Blues", cmin=1,
                    range=((0.0, max(float(tgt.max()), 1.0)), (e_lo - 0.2 * span, e_hi + 0.2 * span)))
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
    title = "verify error per device"
    e_all = err[programmed]
    if e_all.size:
        # Robust limits: the 0.1–99.9 percentile range (and ±δ), so one stray device does not
        # squash everyone else into a line; what falls outside is counted in the title.
        lo, hi = np.percentile(e_all, [0.1, 99.9])
        if tol is not None:
            lo, hi = min(lo, -float(tol)), max(hi, float(tol))
        pad = 0.15 * (hi - lo or 1.0)
        lo, hi = lo - pad, hi + pad
        ax_e.set_ylim(lo, hi)
        outside = int(((e_all < lo) | (e_all > hi)).sum())
        if outside:
            title += f"; {outside} outside the axis (from {e_all.min():+.2f} to {e_all.max():+.2f} µS)"
    ax_e.set_title(title, fontsize=10)
    return figure_png(fig)


def _histograms(rec: Any, lay: Any, summary: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    target = np.full(rec.geometry.n_cells, np.nan)
    target[lay.cells] = lay.target_uS
    tgt = target[rec.readout_cells]
    idx, edges = _level_index(np.nan_to_num(tgt, nan=-1.0))
    counts = {j: int(np.sum(idx == j)) for j in range(edges.size - 1)}
    # A level with a handful of devices gives a histogram of a few bars: not a panel.
    levels = [j for j, c in counts.items() if c >= MIN_HISTOGRAM_DEVICES]
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
            ax.hist(reads[i][sel], bins=bins, histtype="step", lw=1.2, label=f"t = {format_duration(float(t[i]), digits=2)}")
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
    from matplotlib.legend_handler import HandlerTuple

    handles: list[Any] = []
    labels: list[str] = []
    positive = False  # a dead chip's readouts (all zero) have no ratio a log axis can show
    for lv in summary["levels"]:
        if lv["reset_level"]:
            continue
        r = np.array([np.nan if v is None else v for v in lv["mean_ratio"]], dtype=np.float64)
        positive = positive or bool(np.any(r > 0))
        (pts,) = ax.plot(t, r, "o", ms=4)
        name = f"{lv['lo_uS']:.0f}–{lv['hi_uS']:.0f} µS"
        nu = lv["nu_fit"]
        if nu is not None and t0 > 0:
            tt = np.geomspace(t0, t.max(), 50)
            (line,) = ax.plot(tt, (tt / t0) ** (-nu), "-", color=pts.get_color(), lw=1)
            # One entry per level, its points and its fitted line together: which fit is whose.
            handles.append((pts, line))
            labels.append(f"{name}: data, fit ν = {nu:.3f}")
        else:
            handles.append(pts)
            labels.append(f"{name}: data (no fit)")
    from matplotlib.ticker import FuncFormatter

    from harness.sessions.replay_plots import time_axis

    ax.set_yscale("log" if positive else "linear")
    time_axis(ax, t)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 0.9, not 9×10⁻¹
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.set_ylabel("mean G(t) / G(t₀)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None)}, fontsize=8,
              title="level: points = data, line = fitted (t/t₀)^−ν", title_fontsize=8)
    return figure_png(fig)
