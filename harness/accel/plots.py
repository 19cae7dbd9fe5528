"""Pictures of an accelerator analysis: the placement map (like the paper's Figure 6) and the
per-layer efficiency scatter (like Figure 8). matplotlib is imported lazily (Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.accel.cost import evaluate
from harness.accel.tiler import tile
from harness.accel.workload import LayerWork, Workload

if TYPE_CHECKING:
    from harness.accel.report import AccelReport


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def placement_png(report: AccelReport, path: str | Path) -> Path:
    """Draw every tile on the array (columns across, rows down) with its name; save ``path``."""
    plt = _pyplot()
    pl = report.placement
    fig, ax = plt.subplots(figsize=(5.2, 8.4))
    cmap = plt.get_cmap("tab20")
    n_small = 0
    for t in pl.tiles:
        color = cmap(t.layer % 20)
        ax.add_patch(plt.Rectangle((t.col0, t.row0), t.cols, t.rows, facecolor=color, edgecolor="black",
                                   linewidth=0.6, alpha=0.35 if t.nonzero < t.rows * t.cols else 0.85,
                                   hatch="//" if t.nonzero < t.rows * t.cols else None))
        big = t.rows * t.cols >= 0.01 * pl.rows * pl.cols
        if big:
            ax.text(t.col0 + t.cols / 2, t.row0 + t.rows / 2, f"{t.label}\n{t.rows}×{t.cols}",
                    ha="center", va="center", fontsize=6, rotation=90 if t.rows > 2 * t.cols else 0)
        else:  # too small for its name (an FC layer's 84×12 block): label it beside, with a leader line
            # Labels stack in the bottom-right corner, which layer-serial placement (left to
            # right, top down) fills last, with a leader line to the tile.
            ax.annotate(f"{t.label} {t.rows}×{t.cols}", (t.col0 + t.cols / 2, t.row0 + t.rows / 2),
                        xytext=(0.62 * pl.cols, (0.80 + 0.045 * n_small) * pl.rows), textcoords="data",
                        fontsize=7, arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.3"},
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.9})
            n_small += 1
    adc = report.hardware.array.adcs
    for x in range(adc, pl.cols, adc):
        ax.axvline(x, color="grey", linewidth=0.5, linestyle=":")
    ax.set_xlim(0, pl.cols)
    ax.set_ylim(pl.rows, 0)
    ax.set_aspect("equal")
    ax.set_xlabel(f"column (output); dotted: {adc}-column ADC blocks")
    ax.set_ylabel("row (input)")
    ax.set_title(
        f"{report.workload.name} on {report.hardware.name} {pl.rows}×{pl.cols}\n"
        f"area {100 * pl.area_fraction:.1f} %, effective utilization {100 * pl.effective_utilization:.1f} %"
        + (" (hatched: dense-expanded depthwise)" if pl.effective_utilization < 1 else ""),
        fontsize=8,
    )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def _shape_limit(report: AccelReport, bits: int) -> tuple[list[int], list[float], list[float]]:
    """Best TOPS and TOPS/W over layer shapes (rows, cols powers of two) at each size: the limit
    of the aspect-ratio benefit (Figure 8's dotted line). Per MAC a layer pays the DACs per column
    and the ADCs per row, so for a fixed size the best shape is about ``rows/cols ≈ E_adc/E_dac``
    (tall at 8 bits; less tall at 4 bits, where the ADC's 2^b window is short)."""
    hw = report.hardware
    best: dict[int, tuple[float, float]] = {}
    rows_list = [2**k for k in range(hw.array.rows.bit_length()) if 2**k <= hw.array.rows]
    cols_list = [2**k for k in range(hw.array.cols.bit_length()) if 2**k <= hw.array.cols]
    for rows in rows_list:
        for cols in cols_list:
            layer = LayerWork(name="shape", kind="linear", rows=rows, cols=cols, pixels=64, in_channels=rows,
                              in_elems=rows, out_elems=cols * 64, new_inputs_per_mvm=0)
            c = evaluate(tile(Workload(name="shape", input_shape=(rows,), layers=(layer,)), hw), hw, bits)
            t, e = best.get(rows * cols, (0.0, 0.0))
            best[rows * cols] = (max(t, c.tops), max(e, c.tops_per_w))
    sizes = sorted(best)
    return sizes, [best[s][0] for s in sizes], [best[s][1] for s in sizes]


def _plain(v: float) -> str:
    return f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"


def plain_log_ticks(ax) -> None:  # type: ignore[no-untyped-def]
    """Log axes labelled 0.1, 2, 5, 10k … instead of ``2×10⁰``-style mathtext: 1-2-5 steps on
    y, decades on x (layer sizes span four, so 1-2-5 labels would collide)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _pos: _plain(v))
    for axis, subs in ((ax.xaxis, (1.0,)), (ax.yaxis, (1.0, 2.0, 5.0))):
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())


def label_points(ax, xs, ys, names) -> None:  # type: ignore[no-untyped-def]
    """Name each point; points that coincide (within 3 % on both log axes) share one label
    ("conv4, conv5"), so labels do not print over one another."""
    groups: list[tuple[float, float, list[str]]] = []
    for x, y, name in zip(xs, ys, names, strict=True):
        for gx, gy, members in groups:
            if abs(x / gx - 1) < 0.03 and abs(y / gy - 1) < 0.03:
                members.append(name)
                break
        else:
            groups.append((float(x), float(y), [name]))
    for x, y, members in groups:
        ax.annotate(", ".join(members), (x, y), xytext=(5, -3 if len(members) > 1 else 3),
                    textcoords="offset points", fontsize=6.5)


def figure8_png(report: AccelReport, path: str | Path) -> Path:
    """Per-layer TOPS and TOPS/W vs layer size (cells), marker area ∝ MACs, colour = rows/cols
    (log), the whole model as a star, the best-shape limit dotted; one row per bit-width."""
    plt = _pyplot()
    import numpy as np

    n = len(report.costs)
    fig, axes = plt.subplots(n, 2, figsize=(11, 3.6 * n), squeeze=False, layout="constrained")
    max_macs = max(x.macs for c in report.costs for x in c.layers)
    sc = None
    for (ax_t, ax_e), cost in zip(axes, report.costs, strict=True):
        size = np.array([x.size for x in cost.layers], dtype=float)
        macs = np.array([x.macs for x in cost.layers], dtype=float)
        aspect = np.log2([x.rows / x.cols for x in cost.layers])
        marker = 8 + 110 * macs / max_macs  # small enough that neighbouring layers stay apart
        all_s, all_t, all_e = _shape_limit(report, cost.bits)
        keep = [i for i, v in enumerate(all_s) if v >= size.min() / 4]
        lim_s = [all_s[i] for i in keep]
        lim_t = [all_t[i] for i in keep]
        lim_e = [all_e[i] for i in keep]
        for ax, values, whole, lim, label in (
            (ax_t, [x.tops for x in cost.layers], cost.tops, lim_t, "TOPS"),
            (ax_e, [x.tops_per_w for x in cost.layers], cost.tops_per_w, lim_e, "TOPS/W"),
        ):
            sc = ax.scatter(size, values, s=marker, c=aspect, cmap="coolwarm", vmin=-6, vmax=6,
                            edgecolors="black", linewidths=0.4, alpha=0.85)
            dw = [i for i, x in enumerate(cost.layers) if x.depthwise]
            if dw:
                ax.scatter(size[dw], np.array(values)[dw], s=marker[dw] * 1.8, facecolors="none",
                           edgecolors="red", linewidths=0.9, label="depthwise (dense form)")
            label_points(ax, size, values, [layer.name for layer in cost.layers])
            # The whole model occupies every layer's cells at once (layer-serial: all stay placed).
            ax.scatter([size.sum()], [whole], marker="*", s=160, color="gold", edgecolors="black",
                       label=f"whole model: {whole:.3g} (x: all its cells)")
            ax.plot(lim_s, lim, linestyle=":", color="grey", label="best shape of that size")
            ax.set_xscale("log")
            ax.set_yscale("log")
            plain_log_ticks(ax)
            ax.set_xlabel("layer size (cells, rows × cols)", fontsize=8)
            ax.set_ylabel(label)
            ax.set_title(f"{report.workload.name}, {cost.bits}-bit activations: per-layer {label}", fontsize=9)
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(True, which="both", linewidth=0.3, alpha=0.5)
    if sc is not None:
        cb = fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.5)
        cb.set_label("log2(rows / cols): taller →")
    fig.suptitle("Per-layer throughput and efficiency on AON-CiM (cf. AnalogNets Fig. 8); "
                 "marker area ∝ MACs", fontsize=10)
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
