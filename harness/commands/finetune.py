"""``harness finetune``: progressive chip-in-the-loop fine-tuning (Wan et al., Nature 608, 2022, NeuRRAM)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

import typer

from harness.commands.common import RECORDING_SUFFIXES, check_output, emit_json, err_console, user_errors


def _say(text: str) -> None:
    err_console.print(text, markup=False, highlight=False)


def finetune_command(
    chip: str = typer.Option(..., "--chip", help="Chip URI to program layer by layer: virtual[?…], serial://…, visa://…"),
    model: Optional[str] = typer.Option(None, "--model", help="Zoo model name (its shipped baseline) or model file. Default: the bundled model."),
    out: Path = typer.Option(..., "--out", help="The fine-tuned model file (.h5), tied to the chip in its metadata."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset name or file (its training split only). Default: the model's dataset."),
    recording: Optional[Path] = typer.Option(None, "--recording", help="Recording of the programming, read-backs and --times reads. Default: OUT with .reads.h5."),
    times: Optional[str] = typer.Option(None, "--times", help="After the last layer, read the chip at these times since programming (e.g. 25s,1d,1mo,1y)."),
    bits: Optional[int] = typer.Option(None, "--bits", help="ADC bits of the hardware-aware forward (DAC one more). Default: the model's trained bits, else 8."),
    eta: Optional[float] = typer.Option(None, "--eta", help="Weight noise of the layers not yet programmed. Default: the model's, else 0.03."),
    epochs: int = typer.Option(1, "--epochs", help="Fine-tuning epochs after each programmed layer (0: program only)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate of the fine-tuning."),
    batch_size: int = typer.Option(64, "--batch-size", help="Minibatch size."),
    max_train: Optional[int] = typer.Option(None, "--max-train", help="Fine-tune on N training examples (seeded draw). Default: all."),
    seed: int = typer.Option(0, "--seed", help="Seed of the example order, the noise and the --max-train draw."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT's checkpoint (OUT.ckpt.h5) on the same chip."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out and --recording if they exist."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Program MODEL onto CHIP layer by layer, fine-tuning the rest on the measured weights; write OUT.

    Checkpoints go to OUT.ckpt.h5 after every layer (removed on success)."""
    with user_errors():
        out = check_output(out, option="--out", suffixes=(".h5", ".hdf5"), overwrite=overwrite)
        rec = recording if recording is not None else out.with_name(f"{out.stem}.reads.h5")
        # a checkpoint means the run did not finish: a recording at --recording is its unfinished one
        rec = check_output(rec, option="--recording", suffixes=RECORDING_SUFFIXES, overwrite=overwrite or resume)
        from harness.units import parse_durations

        times_s = parse_durations(times) if times is not None else ()
        from harness.chip.registry import check_uri, open_chip
        from harness.data import load_dataset
        from harness.evaluation.evaluate import resolve_model
        from harness.models.format import default_model_path, load_model, save_model
        from harness.programming.mapping import map_model
        from harness.train.finetune import FinetuneOptions, progressive_finetune
        from harness.train.finetune_record import naming_recording, record_finetune

        check_uri(chip)
        options = FinetuneOptions(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, bits=bits, eta=eta,
                                  max_train=max_train)
        the_model = resolve_model(model) if model is not None else load_model(default_model_path())
        dataset = load_dataset(data if data is not None else the_model.dataset)
        checkpoint = out.with_name(out.name + ".ckpt.h5")
        with contextlib.closing(open_chip(chip)) as the_chip:
            map_model(the_model, the_chip.geometry)  # a chip that cannot hold the model: one line, no pulse

            def on_progress(event: dict[str, Any]) -> None:
                where = f"layer {event['index'] + 1}/{event['layers']} {event['layer']}"
                if event["phase"] == "program":
                    _say(f"{where}: programming (write-verify)")
                else:
                    _say(f"{where}: fine-tuning epoch {event['epoch']}/{event['epochs']} loss {event['loss']:.4f}")

            result = progressive_finetune(the_chip, the_model, dataset, options, checkpoint_path=checkpoint,
                                          resume=resume, progress=on_progress)
            if result.resumed_from is not None:
                _say(f"resumed after layer {result.resumed_from} of {len(result.stages)} (not re-programmed)")
            model_out = naming_recording(result.model, rec)

            def on_read(done: int, total: int) -> None:
                _say(f"read {done}/{total} of the --times")

            recorded = record_finetune(rec, the_chip, result, chip_uri=chip, model_path=out, times_s=times_s,
                                       overwrite=overwrite or resume, progress=on_read)
        save_model(model_out, out)
        checkpoint.unlink(missing_ok=True)
        summary: dict[str, Any] = {
            "model": model_out.name, "out": str(out), "recording": str(rec), "chip": chip,
            "readout_times_s": recorded, "resumed_from": result.resumed_from,
            **{k: v for k, v in model_out.metadata["finetune"].items() if k not in ("method", "recording")},
        }
        if json_out:
            emit_json(summary)
            return
        for s in result.stages:
            _say(f"{s.layer}: {s.devices} devices, {s.converged:.2%} converged, weight error "
                 f"{s.weight_error_rel_rms:.2%} of max|W|"
                 + ("" if s.train_loss is None else f", loss after fine-tuning {s.train_loss:.4f}"))
        _say(f"wrote {out} and {rec}")

