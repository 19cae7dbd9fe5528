"""Accuracy-vs-time plots of evaluations (matplotlib, off-screen Agg canvas, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.errors import EvaluationError
from harness.evaluation.result import EvaluationResult


def plot_accuracy(results: EvaluationResult | Sequence[EvaluationResult], path: str | Path) -> Path:
    """Draw mean accuracy vs time since programming (log time axis), one line per bit-width
    (and per result when several are given, e.g. two models or GDC on/off), with its 95 %
    interval as a band (:meth:`EvaluationResult.interval`: chip-to-chip spread and test-set
    sampling), points at the actual (mean) read times, each result's float baseline (dashed)
    and the chance level (dotted: always the most frequent test class), into ``path`` (PNG).
    The legend sits outside the axes so it never covers data.

    Raises:
        EvaluationError: no results, or the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = [results] if isinstance(results, EvaluationResult) else list(results)
    if not items:
        raise EvaluationError("nothing to plot: no evaluation results")
    out = Path(path)
    fig = Figure(figsize=(10, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    markers = "osD^v<>p"
    several = len(items) > 1
    all_t: list[float] = []
    chance_drawn: set[float] = set()
    for k, res in enumerate(items):
        # the actual readout times (mean over runs), which may differ from the requested ones
        t = np.asarray(res.read_times_s, dtype=np.float64).mean(axis=0)
        t_plot = np.where(t > 0, t, np.nan)  # t = 0 has no place on a log axis
        all_t += [float(x) for x in np.asarray(res.times_s) if x > 0]
        mean, ci = res.mean() * 100, res.interval() * 100
        how = res.compensation or f"GDC {'on' if res.gdc else 'off'}"  # the drift compensation method, if named
        tag = f"{res.model}, {how}: " if several else ""
        for i, b in enumerate(res.bits):
            label = f"{tag}{'ideal converters' if b is None else f'{b}-bit'}"
            (line,) = ax.plot(t_plot, mean[i], marker=markers[i % len(markers)], ms=4, label=label,
                              ls="-" if k == 0 else "--")
            ax.fill_between(t_plot, ci[i, :, 0], ci[i, :, 1], color=line.get_color(), alpha=0.15, lw=0)
        ax.axhline(res.digital_accuracy * 100, color="k", ls=":" if k else "--", lw=1,
                   label=f"{res.model if several else ''} float baseline ({res.digital_accuracy:.1%})".strip())
        chance = res.chance_accuracy
        if chance is not None and round(chance, 6) not in chance_drawn:
            chance_drawn.add(round(chance, 6))
            ax.axhline(chance * 100, color="grey", ls=(0, (1, 3)), lw=1, label=f"chance ({chance:.1%})")
    ax.set_xscale("log")
    ticks = sorted(set(all_t))
    if 0 < len(ticks) <= 12:
        from matplotlib.ticker import NullFormatter

        from harness.units import format_duration

        ax.set_xticks(ticks, [format_duration(x) for x in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("time since programming (points at the actual read times)")
    ax.set_ylabel("top-1 accuracy (%), mean and 95 % interval")
    first = items[0]
    where = Path(first.location).name if first.source == "recording" else first.location
    ax.set_title(
        f"{first.model if not several else 'models'} on {where}: {first.runs} run(s)"
        + ("" if several else f", GDC {'on' if first.gdc else 'off'}")
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    try:
        fig.savefig(out, dpi=120)
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"cannot write plot {out}: {exc}") from exc
    return out
