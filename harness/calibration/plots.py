"""Plots of a calibration: per-level data vs the fitted laws (matplotlib Agg, no pyplot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import CalibrationError
from harness.virtual import physics as ph
from harness.calibration.result import CalibrationResult

#: Levels drawn in the conductance-vs-time panel (evenly picked; all would be unreadable).
TIME_PANEL_LEVELS = 7


def plot_calibration(result: CalibrationResult, path: str | Path) -> Path:
    """Six panels into ``path`` (PNG): σ_prog, μ_ν, σ_ν and Q_s per level with the fitted law
    (95 % error bars); mean conductance vs time per level, data vs fitted model; KS distance
    of the held-out readouts per time against its α = 0.01 critical value.

    Raises:
        CalibrationError: the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lv, p, base = result.levels, result.personality, result.base
    fig = Figure(figsize=(15, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    xs = np.geomspace(max(float(np.nanmin(lv.x)) / 1.5, 1e-3), 1.0, 200)
    ok = lv.n_devices > 0

    def panel(ax, y, se, law, base_law, title, ylabel, log_y=False):  # type: ignore[no-untyped-def]
        m = ok & np.isfinite(y) & (y > 0 if log_y else True)
        ax.errorbar(lv.x[m], y[m], yerr=1.96 * np.nan_to_num(se[m]), fmt="o", ms=4, capsize=2, label="levels (data)")
        ax.plot(xs, law, "-", label=f"fit ({p.name})")
        ax.plot(xs, base_law, ":", color="gray", label=f"base ({base.name})")
        ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("x = G_T / g_max")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    panel(axes[0, 0], lv.sigma_prog_uS, lv.sigma_prog_se, ph.programming_noise_std(xs, p),
          ph.programming_noise_std(xs, base), "programming noise σ_prog(x)", "σ_prog (µS)")
    panel(axes[0, 1], lv.nu_mean, lv.nu_mean_se, ph.drift_exponent_stats(xs, p)[0],
          ph.drift_exponent_stats(xs, base)[0], "drift exponent mean μ_ν(x)", "μ_ν")
    panel(axes[0, 2], lv.nu_std, lv.nu_std_se, ph.drift_exponent_stats(xs, p)[1],
          ph.drift_exponent_stats(xs, base)[1], "drift exponent spread σ_ν(x)", "σ_ν")
    panel(axes[1, 0], lv.q_s, lv.q_s_se, ph.read_noise_q(xs, p), ph.read_noise_q(xs, base),
          f"read noise Q_s(x) (from {result.read_noise_method})", "Q_s", log_y=True)

    ax = axes[1, 1]
    picks = np.flatnonzero(ok)
    picks = picks[np.unique(np.linspace(0, picks.size - 1, min(TIME_PANEL_LEVELS, picks.size)).round().astype(int))]
    for j in picks:
        # Log y: the levels span 0.05–25 µS; on a linear axis the low ones lie flat at 0.
        data = np.where(lv.mean_g_uS[j] > 0, lv.mean_g_uS[j], np.nan)
        shown = "" if np.isfinite(data).any() else " (mean ≤ 0: not shown)"
        (line,) = ax.plot(lv.times_s, data, "o", ms=3, label=f"x={lv.x[j]:.3g}{shown}")
        ax.plot(lv.times_s, np.where(lv.fit_g_uS[j] > 0, lv.fit_g_uS[j], np.nan), "-", color=line.get_color(), lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time since programming (s)")
    ax.set_ylabel("mean conductance (µS, log)")
    ax.set_title("held-out devices per level: data (o) vs fitted model (—)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)  # off the data

    ax = axes[1, 2]
    g = result.goodness
    ax.plot(g["times_s"], g["ks_per_time"], "o-", ms=3, label="KS distance")
    ax.axhline(g["ks_critical_alpha_0.01"], color="red", ls="--", label="critical (α = 0.01)")
    ax.set_xscale("log")
    ax.set_xlabel("time since programming (s)")
    ax.set_ylabel("two-sample KS distance")
    ax.set_title(f"held-out readouts vs predictive ({g['held_out_devices']} devices)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"calibration of {Path(result.data['recording']).name} → {p.name}")
    out = Path(path)
    try:
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise CalibrationError(f"cannot write plot {out}: {exc}") from exc
    return out
