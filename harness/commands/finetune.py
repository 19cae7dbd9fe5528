"""``harness finetune``: progressive chip-in-the-loop fine-tuning (Wan 2022, NeuRRAM)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

import typer

from harness.commands.common import check_output, emit_json, err_console, progress_bar, user_errors


def finetune_command(
    chip: str = typer.Option(..., "--chip", help="Chip URI to program layer by layer: virtual[?…], serial://…, visa://…"),
    model: Optional[str] = typer.Option(None, "--model", help="Zoo model name (its shipped baseline) or model file. Default: the bundled model."),
    out: Path = typer.Option(..., "--out", help="The fine-tuned model file (.h5), tied to the chip in its metadata."),
    epochs: int = typer.Option(1, "--epochs", help="Fine-tuning epochs after each programmed layer (0: program only)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate of the fine-tuning."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training-example order."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Program MODEL onto CHIP layer by layer, fine-tuning the rest on the measured weights; write OUT."""
    with user_errors():
        out = check_output(out, option="--out", suffixes=(".h5", ".hdf5"), overwrite=overwrite)
        from harness.chip.registry import check_uri, open_chip
        from harness.evaluation.evaluate import resolve_model
        from harness.models.format import default_model_path, load_model, save_model
        from harness.programming.mapping import map_model
        from harness.train.finetune import progressive_finetune

        check_uri(chip)
        the_model = resolve_model(model) if model is not None else load_model(default_model_path())
        with contextlib.closing(open_chip(chip)) as the_chip:
            map_model(the_model, the_chip.geometry)  # a chip that cannot hold the model: one line, no pulse
            with progress_bar("finetune", total=len(the_model.analog_layers())) as update:

                def on_progress(done: int, total: int, layer: str) -> None:
                    update(done, description=f"programming {layer}, then fine-tuning", total=total)

                result = progressive_finetune(the_chip, the_model, epochs=epochs, lr=lr, seed=seed, progress=on_progress)
                update(len(result.stages), description="programmed and fine-tuned")
        save_model(result.model, out)
        summary: dict[str, Any] = {"model": result.model.name, "out": str(out), "chip": chip,
                                   **{k: v for k, v in result.model.metadata["finetune"].items() if k != "method"}}
        if json_out:
            emit_json(summary)
            return
        for s in result.stages:
            err_console.print(f"{s.layer}: {s.devices} devices, {s.converged:.2%} converged, weight error "
                              f"{s.weight_error_rel_rms:.2%} of max|W|"
                              + ("" if s.train_loss is None else f", loss after fine-tuning {s.train_loss:.4f}"),
                              markup=False, highlight=False)
        err_console.print(f"wrote {out}", markup=False, highlight=False)
