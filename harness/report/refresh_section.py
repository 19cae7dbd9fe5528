"""The refresh part of a recording's report: the monitor accuracy's saw-tooth against session
time, the refreshes per simulated year, and one row per programming epoch."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.report.html import Section, figure_png
from harness.units import format_duration


def add_refresh_part(s: Section, rec: Any) -> None:
    """Append the refresh session's part to ``s`` (``rec``: an open Recording with epochs)."""
    from harness.sessions.status import refresh_summary

    r = refresh_summary(rec)
    epochs = rec.epochs
    acc = rec.monitor_accuracy
    s.heading("Refresh: programming epochs")
    per_year = r["refreshes_per_year"]
    s.paragraph(
        f"Rule: {r['rule'] or '—'}. {r['refreshes']} refresh(es) in {format_duration(r['span_s'])} of session time"
        + (f": {per_year:.3g} per simulated year" if per_year is not None else "")
        + (f"; monitor accuracy between {100 * r['monitor_min']:.1f} % and {100 * r['monitor_max']:.1f} %."
           if r["monitor_min"] is not None else ".")
    )
    if acc is not None and acc.size:
        s.figure(_sawtooth(rec.times_s, acc, rec.readout_epochs, [e.t_origin_s for e in epochs[1:]]),
                 "Monitor accuracy (training-split examples, CiM simulation of each read) against time since the "
                 "first programming, one line per programming epoch; dashed lines: refreshes. An epoch's first read "
                 "comes as long after its refresh as the schedule's next time: on a log-spaced schedule the devices "
                 "have drifted for a while by then.",
                 "monitor accuracy saw-tooth")
    ep = rec.readout_epochs
    rows = []
    for e in epochs:
        in_e = np.flatnonzero(ep == e.index)
        a = acc[in_e] if acc is not None and in_e.size else np.zeros(0)
        rows.append([
            e.index, format_duration(e.t_origin_s) if e.index else "start", e.rule,
            "—" if e.after_readout < 0 else e.after_readout + 1, f"{e.pulses:,}", f"{100 * e.converged_fraction:.2f} %",
            in_e.size, f"{100 * a[0]:.1f} %" if a.size else "—", f"{100 * a.min():.1f} %" if a.size else "—",
        ])
    s.table(["epoch", "programmed at", "rule", "after readout #", "pulses", "converged", "readouts",
             "monitor at first read", "monitor min"], rows)


def _sawtooth(t_s: np.ndarray, acc: np.ndarray, epoch: np.ndarray, refresh_s: list[float]) -> bytes:
    from matplotlib.figure import Figure

    from harness.sessions.replay_plots import time_axis

    fig = Figure(figsize=(8.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for e in np.unique(epoch):
        m = epoch == e
        ax.plot(t_s[m], 100 * acc[m], "o-", ms=4, lw=1, color="C0")
    for t in refresh_s:
        ax.axvline(t, color="grey", ls="--", lw=0.8)
    time_axis(ax, np.asarray(t_s, dtype=np.float64), label="time since the first programming")
    ax.set_ylabel("monitor accuracy (%)")
    ax.grid(True, alpha=0.3)
    return figure_png(fig)


__all__ = ["add_refresh_part"]
