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
    """An evaluation JSON object (``harness evaluate --json``)."""
    try:
        bits = list(doc["bits"])
        times_s = [float(t) for t in doc["times_s"]]
        labels = list(doc["times"])
        table = doc["accuracy"]
        curves = {
            b: (np.array([table[b][lab]["mean"] for lab in labels]), np.array([table[b][lab]["std"] for lab in labels]))
            for b in bits
        }
        digital = float(doc["digital_accuracy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not an evaluation result of harness evaluate --json ({exc!r} missing or malformed)") from exc
    where = doc.get("chip") or doc.get("recording") or ""
    s = Section(
        title=f"Evaluation {path.name}",
        anchor=f"eval-{abs(hash(str(path))) % 10**8}",
        lead=f"model {doc.get('model')!r} on {where}: {doc.get('runs')} run(s), GDC {'on' if doc.get('gdc') else 'off'}",
        provenance={k: doc[k] for k in ("model", "model_path", "source", "chip", "recording", "runs", "seed", "gdc", "read_noise") if k in doc},
    )
    s.figure(
        _accuracy_figure(times_s, {f"{b}-bit" if b != "ideal" else "ideal": c for b, c in curves.items()}, digital, str(doc.get("model"))),
        "Top-1 accuracy vs time since programming, mean ± std over runs (bands); dashed: float baseline.",
        "accuracy vs time per bit-width",
    )
    rows = [[lab] + [f"{curves[b][0][j] * 100:.2f} ± {curves[b][1][j] * 100:.2f}" for b in bits] for j, lab in enumerate(labels)]
    s.table(["time"] + [f"{b}-bit" if b != "ideal" else "ideal" for b in bits], rows, f"float baseline {digital * 100:.2f} %")
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
            f"mean ± std over runs"
        ),
        provenance={"folder": str(path), "digest": meta.get("digest"), "seed": meta.get("spec", {}).get("seed"),
                    "source": meta.get("source"), "grid": json.dumps(meta.get("spec", {}))},
    )
    how = "compensate" if "compensate" in summary else "gdc"  # a compensate grid has several methods with GDC
    options = summary[["chip", how, "read_noise"]].drop_duplicates().itertuples(index=False)
    for chip, gdc, rn in options:
        sub = summary[(summary.chip == chip) & (summary[how] == gdc) & (summary.read_noise == rn)]
        method = {"gdc": "GDC on", "none": "GDC off"}.get(gdc, gdc) if how == "compensate" else f"GDC {'on' if gdc else 'off'}"
        tag = f"{chip}, {method}{', read noise' if rn else ''}"
        for model, mdf in sub.groupby("model", sort=True):
            times = sorted(mdf["t_s"].unique())
            curves = {}
            for b, bdf in sorted(mdf.groupby("bits"), key=lambda kv: -kv[0] if kv[0] else -1e9):
                bdf = bdf.set_index("t_s").loc[times]
                curves["ideal" if b == 0 else f"{b}-bit"] = (bdf["mean"].to_numpy(), np.nan_to_num(bdf["std"].to_numpy()))
            digital = float(mdf["digital_accuracy"].iloc[0])
            s.figure(_accuracy_figure(times, curves, digital, f"{model} — {tag}"),
                     f"{model} on {tag}: accuracy vs time, mean ± std over {int(mdf['count'].max())} chips.",
                     f"accuracy vs time for {model}")
        s.heading(f"Ablation at {format_duration(_nearest(sub['t_s'].unique(), ABLATION_TIME_S))} — {tag}")
        s.table(*_ablation(sub))
    return s


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
            std = 0.0 if r["std"] != r["std"] else r["std"]
            row.append(f"{r['mean'] * 100:.2f} ± {std * 100:.2f}")
        rows.append(row)
    return header, rows


def _accuracy_figure(times_s: Sequence[float], curves: dict[str, tuple[np.ndarray, np.ndarray]], digital: float, title: str) -> bytes:
    from matplotlib.figure import Figure

    t = np.asarray(times_s, dtype=np.float64)
    fig = Figure(figsize=(8.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, (mean, std) in curves.items():
        (line,) = ax.plot(t, mean * 100, "o-", ms=4, label=label)
        ax.fill_between(t, (mean - std) * 100, (mean + std) * 100, color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(digital * 100, ls="--", color="grey", lw=1, label=f"float {digital * 100:.1f} %")
    ax.set_xscale("log")
    ax.set_xticks(t, [format_duration(float(x)) for x in t])
    ax.minorticks_off()
    ax.set_xlabel("time since programming")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)
