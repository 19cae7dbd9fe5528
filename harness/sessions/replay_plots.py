"""Plots of recordings (matplotlib, off-screen Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import RecordingError
from harness.recording import Recording
from harness.units import format_duration

#: How many readouts get a histogram panel (first, last, and evenly between).
HISTOGRAM_READOUTS = 4

#: Candidate major ticks of a time axis (s): round durations, labelled 1s, 1min, 1h, 1d, …
_TIME_TICKS_S = (1.0, 10.0, 60.0, 600.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0, 365 * 86400.0)


def time_axis(ax: Any, t_s: np.ndarray, *, label: str = "time since programming") -> None:
    """A log time axis with round, readable ticks (``25s``-style labels from
    :func:`harness.units.format_duration`, two significant digits; no ``6.497min``)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    t = np.asarray(t_s, dtype=np.float64)
    t = t[np.isfinite(t) & (t > 0)]
    if t.size:
        lo, hi = float(t.min()), float(t.max())
        ticks = [v for v in _TIME_TICKS_S if lo / 1.5 <= v <= hi * 1.5]
        ticks = sorted({lo, hi, *ticks}) if len(ticks) < 3 else ticks
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_duration(v, digits=2)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def plot_recording(rec: Recording, summary: dict[str, Any], path: str | Path) -> Path:
    """Draw mean conductance vs time per target level on log–log axes (a power-law drift
    G ∝ t^−ν is a straight line; ±1 std as a band) and, as small multiples sharing their axes,
    histograms of the programmed devices' conductance at a few readout times into ``path``
    (PNG). ``summary`` is :func:`harness.sessions.replay.summarize_recording` of ``rec``.

    Raises:
        RecordingError: the plot file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, width_ratios=(2.3, 1, 1))
    ax_t = fig.add_subplot(grid[:, 0])
    t = np.asarray(summary["t_s"], dtype=np.float64)
    t_plot = np.where(t > 0, t, np.nan)
    for lv in summary["levels"]:
        m = np.asarray(lv["mean_uS"], dtype=np.float64)
        s = np.asarray(lv["std_uS"], dtype=np.float64)
        nu = lv["nu_fit"]
        label = f"{lv['lo_uS']:.1f}–{lv['hi_uS']:.1f} µS (n={lv['n']}" + (f", ν={nu:.3f})" if nu is not None else ")")
        m_pos = np.where(m > 0, m, np.nan)  # log axis: a non-positive mean has no place on it
        (line,) = ax_t.plot(t_plot, m_pos, marker="o", ms=2.5, lw=1.2, label=label)
        lo = np.where(m - s > 0, m - s, np.nan)
        ax_t.fill_between(t_plot, lo, m_pos + s, color=line.get_color(), alpha=0.15, lw=0)
    ax_t.set_yscale("log")
    time_axis(ax_t, t_plot)
    ax_t.set_ylabel("conductance (µS), mean ± std")
    ax_t.set_title(f"{summary.get('session') or rec.path.name}: conductance vs time (log–log)")
    ax_t.grid(True, which="both", alpha=0.3)
    # Below the axes: inside, it would cover a level's line wherever it went.
    ax_t.legend(fontsize=7.5, title="target level (devices, fitted ν)", title_fontsize=8, loc="upper center",
                bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)

    n = rec.n_readouts
    picks = sorted(set(np.linspace(0, n - 1, min(HISTOGRAM_READOUTS, n)).round().astype(int).tolist()))
    lay = rec.layout
    target = np.full(rec.geometry.n_cells, np.nan)
    target[lay.cells] = lay.target_uS
    programmed = np.nan_to_num(target[rec.readout_cells], nan=0.0) > 0.5
    geom = rec.geometry
    # Bin edges between ADC codes (two codes per bin), so quantized reads do not alias.
    lsb = geom.adc_lsb_uS
    bins = geom.adc_min_uS - lsb / 2 + 2 * lsb * np.arange(2 ** (geom.adc_bits - 1) + 1)
    hist_axes = []
    for k, i in enumerate(picks):
        ax = fig.add_subplot(grid[k // 2, 1 + k % 2], sharex=hist_axes[0] if hist_axes else None,
                             sharey=hist_axes[0] if hist_axes else None)
        hist_axes.append(ax)
        g = rec.readout(i)[programmed]
        ax.hist(g, bins=bins, histtype="stepfilled", color="C0", alpha=0.8, lw=0)
        ax.axvline(float(np.median(g)) if g.size else 0.0, color="k", lw=0.8, ls="--", label="median")
        if k == 0:
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"t = {format_duration(t[i], digits=2)}", fontsize=9)
        ax.grid(True, alpha=0.3)
        if k // 2 == 1 or len(picks) <= 2:
            ax.set_xlabel("conductance (µS)")
        if k % 2 == 0:
            ax.set_ylabel(f"devices (of {int(programmed.sum())})")
    if hist_axes:
        hi = float(np.percentile(rec.readout(picks[0])[programmed], 99.5)) if programmed.any() else geom.adc_max_uS
        hist_axes[0].set_xlim(geom.adc_min_uS, max(hi * 1.1, 1.0))
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise RecordingError(f"cannot write plot {out}: {exc}") from exc
    return out
