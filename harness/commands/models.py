"""``harness models``: the model zoo (or model files) with size, work per inference and fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from harness.commands.common import console_for, emit_json, user_errors


def models_command(
    files: Optional[list[Path]] = typer.Argument(None, help="Model files to describe instead of the zoo."),
    json_out: bool = typer.Option(False, "--json", help="Print only a JSON object on stdout."),
) -> None:
    """List the model zoo: parameters, MACs, MVMs per inference, and how each fits the array.

    Fit is checked on the 1024×512 AON-CiM array (all layers resident) and on the 512×2048
    virtual chip (weights stored, blocks transposed or split where needed)."""
    console = console_for(json_out)
    with user_errors():
        from harness.models import baseline_path, list_models, model_info
        from harness.models.format import load_model
        from harness.accel.model_fit import summarize, zoo_model

        rows: list[dict[str, Any]] = []
        if files:
            for path in files:
                model = load_model(path)
                rows.append({"name": model.name, "file": str(path), "task": model.dataset,
                             "input_shape": list(model.input_shape), "n_classes": model.n_classes,
                             "source": str(model.metadata.get("source", "")),
                             **summarize(model).to_dict()})
        else:
            for name in list_models():
                info = model_info(name)
                baseline = baseline_path(name)
                rows.append({"name": name, "file": str(baseline) if baseline.is_file() else None, "task": info.task,
                             "input_shape": list(info.input_shape), "n_classes": info.n_classes,
                             "source": info.source, **summarize(zoo_model(name)).to_dict()})
    if json_out:
        emit_json({"models": rows})
        return
    from rich.table import Table

    table = Table(title="Models (MACs and MVMs per inference; AON-CiM: 1024 rows x 512 differential columns)")
    for col in ("model", "task", "input", "classes", "params", "MACs", "MVMs", "min util.", "fits 1024x512",
                "512x2048 chip", "baseline"):
        table.add_column(col, justify="left" if col in ("model", "task", "fits 1024x512", "512x2048 chip") else "right")
    for r in rows:
        table.add_row(
            r["name"], r["task"], "x".join(map(str, r["input_shape"])), str(r["n_classes"]),
            f"{r['n_parameters']:,}", f"{r['macs'] / 1e6:.2f} M", f"{r['mvms']:,}", f"{100 * r['min_utilization']:.1f}%",
            r["aon_how"], r["chip_how"], "yes" if r["file"] else "no",
        )
    console.print(table)
    for r in rows:
        if r["source"]:
            console.print(f"[bold]{r['name']}[/]: {r['source']}")
