"""The report of a drift compensation comparison (``harness evaluate --compensate … --json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import ConfigError
from harness.evaluation.uncertainty import difference_text
from harness.report.html import Section
from harness.report.results_section import _accuracy_figure


def compensation_section(path: Path, doc: dict[str, Any]) -> Section:
    """One figure (a curve per method and bit-width), the accuracy table with a column group per
    method, and the per-run paired differences to ``gdc`` when it is among the methods."""
    try:
        methods = list(doc["compensate"])
        bits = list(doc["bits"])
        labels = list(doc["times"])
        times_s = [float(t) for t in doc["times_s"]]
        digital = float(doc["digital_accuracy"])
        def band(cell: dict[str, Any]) -> list[float]:
            """The cell's 95 % interval, or mean ± std from files written before intervals."""
            return cell.get("ci95") or [cell["mean"] - cell["std"], cell["mean"] + cell["std"]]

        curves = {
            (m, b): (np.array([doc["methods"][m]["accuracy"][b][t]["mean"] for t in labels]),
                     np.array([band(doc["methods"][m]["accuracy"][b][t]) for t in labels], dtype=np.float64))
            for m in methods for b in bits
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a comparison of harness evaluate --compensate --json ({exc!r} missing or malformed)") from exc
    where = doc.get("chip") or doc.get("recording") or ""
    s = Section(
        title=f"Drift compensation {path.name}",
        anchor=f"comp-{abs(hash(str(path))) % 10**8}",
        lead=(f"model {doc.get('model')!r} on {where}: {doc.get('runs')} run(s), methods {', '.join(methods)} on the same "
              f"reads; {doc.get('calibration_examples')} calibration examples ({doc.get('calibration_split')} split)"),
        provenance={k: doc[k] for k in ("model", "model_path", "source", "chip", "recording", "runs", "seed",
                                         "compensate", "calibration_examples") if k in doc},
    )
    s.figure(
        _accuracy_figure(times_s, {f"{m}, {b}-bit": c for (m, b), c in curves.items()}, digital, str(doc.get("model"))),
        "Top-1 accuracy vs time since programming per drift compensation method: mean, and its 95 % interval (band).",
        "accuracy vs time per method",
    )
    header = ["time"] + [f"{m} {b}-bit" for m in methods for b in bits]
    rows = [[lab] + [f"{curves[m, b][0][j] * 100:.2f} [{curves[m, b][1][j][0] * 100:.2f}, {curves[m, b][1][j][1] * 100:.2f}]" for m in methods for b in bits]
            for j, lab in enumerate(labels)]
    s.table(header, rows, f"float baseline {digital * 100:.2f} %")
    paired = doc.get("paired_vs_gdc")
    if isinstance(paired, dict):
        others = [m for m in methods if m != "gdc" and m in paired]
        rows = [[lab] + [difference_text(paired[m][b][lab]) for m in others for b in bits] for lab in labels]
        s.table(["time"] + [f"{m} − gdc {b}-bit" for m in others for b in bits], rows,
                "paired difference to gdc (points): mean [95 % paired bootstrap interval over chips and test "
                "examples]; ± standard error over runs where the file has no per-example results")
    return s

