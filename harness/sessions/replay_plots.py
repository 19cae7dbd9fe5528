"""Plots of recordings (matplotlib, off-screen Agg canvas: no display, no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import RecordingError
from harness.recording import Recording
from harness.units import format_duration

#: How many readouts the histogram panel overlays (first, last, and evenly between).
HISTOGRAM_READOUTS = 4


def plot_recording(rec: Recording, summary: dict[str, Any], path: str | Path) -> Path:
    """Draw conductance vs time (log time axis; mean ± std per target level) and
    histograms of the programmed devices' conductance at a few readout times into ``path``
    (PNG). ``summary`` is :func:`harness.sessions.replay.summarize_recording` of ``rec``.

    Raises:
        RecordingError: the plot file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_h = fig.subplots(1, 2)
    t = np.asarray(summary["t_s"], dtype=np.float64)
    t_plot = np.where(t > 0, t, np.nan)
    for lv in summary["levels"]:
        m = np.asarray(lv["mean_uS"])
        s = np.asarray(lv["std_uS"])
        nu = lv["nu_fit"]
        label = f"{lv['lo_uS']:.1f}–{lv['hi_uS']:.1f} µS (n={lv['n']}" + (f", ν={nu:.3f})" if nu is not None else ")")
        (line,) = ax_t.plot(t_plot, m, marker="o", ms=3, label=label)
        ax_t.fill_between(t_plot, m - s, m + s, color=line.get_color(), alpha=0.2, lw=0)
    ax_t.set_xscale("log")
    ax_t.set_xlabel("time since programming (s)")
    ax_t.set_ylabel("conductance (µS), mean ± std")
    ax_t.set_title(f"{summary.get('session') or rec.path.name}: conductance vs time")
    ax_t.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=8, title="target level", loc="upper left", bbox_to_anchor=(1.01, 1.0))

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
    for i in picks:
        g = rec.readout(i)[programmed]
        ax_h.hist(g, bins=bins, histtype="step", lw=1.3, label=f"t = {format_duration(t[i])}")
    ax_h.set_xlabel("conductance (µS)")
    ax_h.set_ylabel("devices")
    ax_h.set_title(f"programmed devices (n={int(programmed.sum())})")
    ax_h.legend(fontsize=8)
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise RecordingError(f"cannot write plot {out}: {exc}") from exc
    return out
