"""The report of accuracy results: one evaluation (``harness evaluate --json``) or a sweep."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.report.html import Section, figure_png
from harness.units import DAY_S, format_duration

#: The ablation table's time: the AnalogNets paper's Table 1 reports accuracy after one day.
ABLATION_TIME_S = DAY_S


def evaluation_section(path: Path, doc: dict[str, Any]) -> Section:
    """An evaluation JSON object (``harness evaluate --json``); several models evaluated on the
    same chips (``{"models": [...], "differences": [...]}``) give one section with each model
    and the paired differences."""
    if "models" in doc and "differences" in doc:
        return _comparison_section(path, doc)
    s = _new_section(path, doc)
    _evaluation_body(s, path, doc)
    return s


def _new_section(path: Path, doc: dict[str, Any]) -> Section:
    where = doc.get("chip") or doc.get("recording") or ""
    return Section(
        title=f"Evaluation {path.name}",
        anchor=f"eval-{abs(hash(str(path))) % 10**8}",
        lead=f"model {doc.get('model')!r} on {where}: {doc.get('runs')} run(s), GDC {'on' if doc.get('gdc') else 'off'}",
        provenance={k: doc[k] for k in ("model", "model_path", "source", "chip", "recording", "runs", "seed", "gdc", "read_noise") if k in doc},
    )


def _evaluation_body(s: Section, path: Path, doc: dict[str, Any]) -> None:
    try:
        bits = list(doc["bits"])
        times_s = [float(t) for t in doc["times_s"]]
        labels = list(doc["times"])
        table = doc["accuracy"]
        curves = {
            b: (np.array([table[b][lab]["mean"] for lab in labels]), np.array([table[b][lab]["std"] for lab in labels]))
            for b in bits
        }
        # the 95 % intervals (older files without them: mean ± std)
        bands = {
            b: np.array([table[b][lab].get("ci95") or [table[b][lab]["mean"] - table[b][lab]["std"],
                                                       table[b][lab]["mean"] + table[b][lab]["std"]] for lab in labels])
            for b in bits
        }
        digital = float(doc["digital_accuracy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not an evaluation result of harness evaluate --json ({exc!r} missing or malformed)") from exc
    has_ci = all("ci95" in table[b][lab] for b in bits for lab in labels)
    runs = int(doc.get("runs") or 0)
    ranges = doc.get("ranges") or {}
    if ranges:
        s.paragraph(_ranges_text(ranges))
    s.figure(
        _accuracy_figure(times_s, {f"{b}-bit" if b != "ideal" else "ideal": (curves[b][0], bands[b]) for b in bits}, digital,
                         str(doc.get("model")), chance=doc.get("chance_accuracy")),
        "Top-1 accuracy vs time since programming: mean, "
        + ("95 % interval (chip-to-chip spread and test-set sampling)" if has_ci else "± std over runs")
        + " as bands; dashed: float baseline; dotted: chance.",
        "accuracy vs time per bit-width",
    )

    def cell(b: str, j: int) -> str:
        c = table[b][labels[j]]
        text = f"{c['mean'] * 100:.2f}"
        if runs > 1:
            text += f" ± {c['std'] * 100:.2f}"
        if "ci95" in c:
            text += f" [{c['ci95'][0] * 100:.1f}, {c['ci95'][1] * 100:.1f}]"
        return text

    rows = [[lab] + [cell(b, j) for b in bits] for j, lab in enumerate(labels)]
    what = ("mean ± std " if runs > 1 else "mean ") + ("[95 % interval]" if has_ci else "")
    s.table(["time"] + [f"{b}-bit" if b != "ideal" else "ideal" for b in bits], rows,
            f"{doc.get('model')}: accuracy (%), {what.strip()}; float baseline {digital * 100:.2f} %")


def _ranges_text(ranges: dict[str, Any]) -> str:
    """The converter-range policy and, per bit width, the shared ADC gain and DAC ranges."""
    cal = ranges.get("calibration")
    data = f" from {cal['samples']} training examples (seed {cal['seed']})" if cal else ""
    parts = []
    for b, r in (ranges.get("bits") or {}).items():
        dac = ", ".join(f"{n} {v:.3g}" for n, v in r.get("dac_range", {}).items())
        parts.append(f"{b}-bit: {r.get('source')}, ρ {r.get('adc_norm_range', float('nan')):.3g}, r_DAC {dac}")
    return f"DAC/ADC ranges: policy {ranges.get('policy', '?')} → {ranges.get('source')}{data}. " + "; ".join(parts)


def _comparison_section(path: Path, doc: dict[str, Any]) -> Section:
    models = doc["models"]
    s = _new_section(path, models[0])
    s.lead = f"{len(models)} models on the same chips: " + ", ".join(str(m.get("model")) for m in models)
    for m in models:
        s.heading(str(m.get("model")))
        _evaluation_body(s, path, m)
    for diff in doc["differences"]:
        s.heading(f"{diff['model']} − {diff['baseline']}")
        table = diff["difference"]
        bits = list(table)
        labels = list(next(iter(table.values()))) if table else []
        rows = [[lab] + [f"{table[b][lab]['mean'] * 100:+.2f} [{table[b][lab]['ci95'][0] * 100:+.2f}, "
                         f"{table[b][lab]['ci95'][1] * 100:+.2f}]" for b in bits] for lab in labels]
        s.table(["time"] + [f"{b}-bit" if b != "ideal" else "ideal" for b in bits], rows,
                "paired accuracy difference (points) on the same chips and test examples, 95 % paired-bootstrap interval")
    return s


def sweep_section(path: Path) -> Section:
    """A sweep results folder (``harness sweep --out``)."""
    from harness.sweeps.runner import load_results, summarize

    meta = json.loads((path / "_sweep.json").read_text())
    df = load_results(path)
    summary = summarize(df)
    s = Section(
        title=f"Sweep {meta.get('name', path.name)}",
        anchor=f"sweep-{abs(hash(str(path))) % 10**8}",
        lead=(
            f"{df['task_id'].nunique()} simulated chip(s) of {df['model'].nunique()} model(s); "
            "mean over runs with its 95 % interval (chip-to-chip spread and test-set sampling)"
        ),
        provenance={"folder": str(path), "digest": meta.get("digest"), "seed": meta.get("spec", {}).get("seed"),
                    "source": meta.get("source"), "grid": json.dumps(meta.get("spec", {}), indent=1)},
    )
    how = "compensate" if "compensate" in summary else "gdc"  # a compensate grid has several methods with GDC
    options = summary[["chip", how, "read_noise"]].drop_duplicates().itertuples(index=False)
    # One y-range for every sweep figure, so that panels (and GDC on vs off) compare by eye.
    lo = float(np.nanmin(summary["ci95_lo"])) * 100
    hi = max(float(np.nanmax(summary["ci95_hi"])), float(summary["digital_accuracy"].max())) * 100
    ylim = (max(0.0, lo - 0.05 * (hi - lo)), min(100.0, hi + 0.05 * (hi - lo)))
    for chip, gdc, rn in options:
        sub = summary[(summary.chip == chip) & (summary[how] == gdc) & (summary.read_noise == rn)]
        method = {"gdc": "GDC on", "none": "GDC off"}.get(gdc, gdc) if how == "compensate" else f"GDC {'on' if gdc else 'off'}"
        tag = f"{chip}, {method}{', read noise' if rn else ''}"
        s.figure(_sweep_overlay(sub, ylim, tag),
                 f"{tag}: the compared models overlaid, one panel per activation precision (same y-range in every "
                 f"sweep figure); mean over {int(sub['count'].max())} chips and its 95 % interval (bands: chip-to-chip "
                 "spread and test-set sampling), dashed: each model's float "
                 "baseline.", f"models compared, {tag}")
        s.heading(f"Ablation at {format_duration(_nearest(sub['t_s'].unique(), ABLATION_TIME_S))} — {tag}")
        s.table(*_ablation(sub))
    return s


def _sweep_overlay(sub: Any, ylim: tuple[float, float], tag: str) -> bytes:
    """Accuracy vs time with every model of the sweep overlaid, one panel per bit-width."""
    from matplotlib.figure import Figure

    bits = sorted(sub["bits"].unique(), key=lambda b: -b if b else -1e9)
    fig = Figure(figsize=(4.2 * len(bits) + 1.5, 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(bits), sharey=True))
    models = sorted(sub["model"].unique())
    colors = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for ax, b in zip(axes, bits, strict=True):
        at = sub[sub.bits == b]
        times = sorted(at["t_s"].unique())
        t = np.asarray(times, dtype=np.float64)
        for model in models:
            mdf = at[at.model == model].set_index("t_s").reindex(times)
            mean = mdf["mean"].to_numpy() * 100
            ax.plot(t, mean, "o-", ms=3.5, color=colors[model], label=str(model))
            ax.fill_between(t, mdf["ci95_lo"].to_numpy() * 100, mdf["ci95_hi"].to_numpy() * 100,
                            color=colors[model], alpha=0.18, lw=0)
            ax.axhline(float(at[at.model == model]["digital_accuracy"].iloc[0]) * 100, ls="--", lw=0.8,
                       color=colors[model])
        ax.set_xscale("log")
        ax.set_xticks(t, [format_duration(float(x), digits=2) for x in t])
        ax.minorticks_off()
        ax.set_ylim(*ylim)
        ax.set_xlabel("time since programming")
        ax.set_title("ideal converters" if b == 0 else f"{b}-bit activations", fontsize=10)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle(tag, fontsize=10)
    return figure_png(fig)


def _nearest(times: Sequence[float], t: float) -> float:
    arr = np.asarray(sorted(times), dtype=np.float64)
    return float(arr[np.argmin(np.abs(np.log1p(arr) - np.log1p(t)))])


def _ablation(sub: Any) -> tuple[list[str], list[list[str]]]:
    """Rows: models; columns: float and each bit-width (Table 1 layout), at ~1 day."""
    t = _nearest(sub["t_s"].unique(), ABLATION_TIME_S)
    at = sub[sub.t_s == t]
    bits = sorted(at["bits"].unique(), key=lambda b: -b if b else -1e9)
    header = ["model", "float"] + ["ideal" if b == 0 else f"{b}-bit" for b in bits]
    rows = []
    for model, mdf in at.groupby("model", sort=True):
        by_b = mdf.set_index("bits")
        row = [str(model), f"{mdf['digital_accuracy'].iloc[0] * 100:.2f}"]
        for b in bits:
            r = by_b.loc[b]
            row.append(f"{r['mean'] * 100:.2f} [{r['ci95_lo'] * 100:.1f}, {r['ci95_hi'] * 100:.1f}]")
        rows.append(row)
    return header, rows


def _accuracy_figure(
    times_s: Sequence[float],
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    digital: float,
    title: str,
    *,
    chance: float | None = None,
) -> bytes:
    """``curves``: label → (mean, band ``(T, 2)``: low, high), fractions."""
    from matplotlib.figure import Figure

    t = np.asarray(times_s, dtype=np.float64)
    fig = Figure(figsize=(9.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, (mean, band) in curves.items():
        (line,) = ax.plot(t, mean * 100, "o-", ms=4, label=label)
        ax.fill_between(t, band[:, 0] * 100, band[:, 1] * 100, color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(digital * 100, ls="--", color="grey", lw=1, label=f"float {digital * 100:.1f} %")
    if chance is not None:
        ax.axhline(chance * 100, ls=":", color="grey", lw=1, label=f"chance {chance * 100:.1f} %")
    ax.set_xscale("log")
    ax.set_xticks(t, [format_duration(float(x)) for x in t])
    ax.minorticks_off()
    ax.set_xlabel("time since programming")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return figure_png(fig)
