"""The report of an accelerator estimate (``harness accel --json``): per-layer table,
the Figure 8 scatter of the AnalogNets paper and the placement map of the array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.accel.plots import label_points, plain_log_ticks
from harness.errors import ConfigError
from harness.report.html import Section, figure_png


def accel_section(path: Path, doc: dict[str, Any]) -> Section:
    """``doc``: the JSON object of ``harness accel --json``."""
    try:
        results = list(doc["results"])
        tiles = list(doc["placement"]["tiles"])
        hw = dict(doc["hardware"])
        rows_hw, cols_hw = int(hw["rows"]), int(hw["cols"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not an estimate of harness accel --json ({exc!r} missing or malformed)") from exc
    s = Section(
        title=f"Accelerator estimate {path.name}",
        anchor=f"accel-{abs(hash(str(path))) % 10**8}",
        lead=f"model {doc.get('model')!r} on {hw.get('name')} ({rows_hw} × {cols_hw} array); ops = 2 per MAC",
        provenance={"model": doc.get("model"), "hardware": hw.get("name"), "hardware file": hw.get("path")},
    )
    s.table(
        ["bits", "latency (µs)", "inferences/s", "µJ/inference", "TOPS", "TOPS/W", "MCU energy ratio"],
        [[r["bits"], f"{r['latency_s'] * 1e6:.2f}", f"{r['inferences_per_s']:,.0f}", f"{r['uJ_per_inference']:.3f}",
          f"{r['tops']:.3f}", f"{r['tops_per_w']:.2f}",
          "—" if r.get("mcu_energy_ratio") is None else f"{r['mcu_energy_ratio']:,.0f}×"] for r in results],
        "whole model, per activation bit-width",
    )
    s.figure(_figure8(results), "Per-layer TOPS and TOPS/W against layer size on the array (rows × columns); "
             "marker area ∝ MACs; star: whole model (AnalogNets Figure 8).", "figure 8 scatter")
    s.figure(_placement(tiles, rows_hw, cols_hw), "Placement of every analog layer on the array (AnalogNets Figure 6).",
             "placement map")
    first = results[0]
    s.heading(f"Per layer at {first['bits']}-bit")
    s.table(
        ["layer", "rows", "cols", "MVMs", "CiM cycles", "MACs", "latency (µs)", "energy (nJ)", "TOPS", "TOPS/W", "utilization"],
        [[x["name"], x["rows"], x["cols"], x["pixels"], x["cim_cycles"], f"{x['macs']:,}", f"{x['latency_s'] * 1e6:.3f}",
          f"{x['energy_total_J'] * 1e9:.3f}", f"{x['tops']:.3f}", f"{x['tops_per_w']:.2f}", f"{x['utilization'] * 100:.1f} %"]
         for x in first["layers"]],
    )
    return s


def _figure8(results: list[dict[str, Any]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2), layout="constrained")
    ax_t, ax_e = fig.subplots(1, 2)
    for r in results:
        layers = r["layers"]
        size = np.array([x["rows"] * x["cols"] for x in layers], dtype=float)
        macs = np.array([x["macs"] for x in layers], dtype=float)
        area = 8 + 110 * macs / max(macs.max(), 1.0)
        for ax, key in ((ax_t, "tops"), (ax_e, "tops_per_w")):
            values = [x[key] for x in layers]
            pts = ax.scatter(size, values, s=area, alpha=0.7, label=f"{r['bits']}-bit layers")
            if r is results[0]:  # names once: the layers sit at the same sizes at every bit-width
                label_points(ax, size, values, [layer["name"] for layer in layers])
            # The whole model holds all its layers' cells at once (layer-serial), as `harness accel --png`
            # draws it; the largest layer's size (the old x here, ~9e4 for KWS vs ~3e5) was not the model's.
            ax.scatter([size.sum()], [r[key]], marker="*", s=160, color=pts.get_facecolor()[0], edgecolor="black",
                       label=f"{r['bits']}-bit model (x: all its cells)")
    for ax, label in ((ax_t, "TOPS"), (ax_e, "TOPS/W")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_xlabel("layer size on the array (rows × columns)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax_e.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return figure_png(fig)


def _placement(tiles: list[dict[str, Any]], rows: int, cols: int) -> bytes:
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    ax = fig.subplots()
    ax.add_patch(Rectangle((0, 0), cols, rows, facecolor="#f2f4f7", edgecolor="black"))
    cmap = __import__("matplotlib").colormaps["tab20"]
    n_small = 0
    for i, t in enumerate(tiles):
        ax.add_patch(Rectangle((t["col0"], t["row0"]), t["cols"], t["rows"], facecolor=cmap(i % 20), alpha=0.8, edgecolor="black", lw=0.6))
        name = str(t["layer"]) + (f" {t['part'] + 1}/{t['n_parts']}" if t.get("n_parts", 1) > 1 else "")
        if t["rows"] * t["cols"] > 0.01 * rows * cols:
            ax.text(t["col0"] + t["cols"] / 2, t["row0"] + t["rows"] / 2, f"{name}\n{t['rows']}×{t['cols']}",
                    ha="center", va="center", fontsize=8)
        else:  # too small to hold its name (conv1 of KWS): label it beside, with a leader line
            ax.annotate(f"{name} {t['rows']}×{t['cols']}", (t["col0"] + t["cols"] / 2, t["row0"] + t["rows"] / 2),
                        xytext=(0.62 * cols, (0.80 + 0.06 * n_small) * rows), textcoords="data", fontsize=8,
                        arrowprops={"arrowstyle": "-", "lw": 0.6, "color": "0.3"},
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.9})
            n_small += 1
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.set_xlabel("column (output)")
    ax.set_ylabel("row (fan-in)")
    ax.set_aspect("auto")
    return figure_png(fig)
