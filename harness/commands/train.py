"""``harness train``: hardware-aware training of a model on a dataset by a named recipe."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Optional

import typer

from harness.commands.common import check_output, emit_json, err_console, progress_bar, user_errors
from harness.errors import ConfigError


def resolve_model(text: str, seed: int, dataset: str) -> Any:
    """A model file (``.h5``), a zoo name (:func:`harness.models.get_model`, initialised under
    ``seed``), or ``digits-mlp`` (the 64 → 64 → 10 MLP of the bundled digits task)."""
    import torch

    from harness.models import get_model, list_models, model_info
    from harness.models.format import load_model
    from harness.models.torch_convert import model_from_torch

    path = Path(text)
    if path.suffix in (".h5", ".hdf5") or path.exists():
        return load_model(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if text == "digits-mlp":
            from harness.train.digits import DEFAULT_HIDDEN, build_mlp

            return model_from_torch(
                build_mlp(64, DEFAULT_HIDDEN, 10), name=text, input_shape=(64,), n_classes=10, dataset=dataset
            )
        if text not in list_models():
            raise ConfigError(
                f"unknown model {text!r}: give a model file (.h5) or one of digits-mlp, {', '.join(list_models())}"
            )
        info = model_info(text)
        return model_from_torch(
            get_model(text), name=text, input_shape=info.input_shape, n_classes=info.n_classes, dataset=dataset
        )


def train_command(
    model: str = typer.Option(..., "--model", help="Model name (zoo) or model file (.h5) to start from."),
    data: str = typer.Option(..., "--data", help="Dataset name or dataset file (.h5)."),
    recipe: str = typer.Option(..., "--recipe", help="baseline | noise | hasgd | analognets | uniform."),
    out: Path = typer.Option(..., "--out", help="Where to write the trained model (.h5)."),
    eta: float = typer.Option(0.03, "--eta", help="Weight-noise coefficient η (std = η·W_max)."),
    bits: int = typer.Option(8, "--bits", help="ADC bits (the DAC gets one more), 2..16."),
    epochs: int = typer.Option(10, "--epochs", help="Epochs per stage."),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, shuffling and noise."),
    lr: float = typer.Option(1e-3, "--lr", help="Stage-1 learning rate (Adam, cosine decay)."),
    batch_size: int = typer.Option(100, "--batch-size", help="Minibatch size."),
    samples: int = typer.Option(4, "--samples", help="HA-SGD: weight perturbations per step (L)."),
    unipolar: bool = typer.Option(False, "--unipolar", help="uniform: push weights positive (single devices)."),
    weight_levels: Optional[int] = typer.Option(
        None, "--weight-levels", help="Discrete weight levels N per layer (3 ternary; 7/31: pairs of 2-/4-bit devices)."
    ),
    dac_levels: Optional[int] = typer.Option(
        None, "--dac-levels", help="DAC levels 2n+1 instead of --bits' (imec: 7)."
    ),
    adc_levels: Optional[int] = typer.Option(
        None, "--adc-levels", help="ADC levels 2n+1 instead of --bits' (imec: 15)."
    ),
    from_stage: int = typer.Option(1, "--from-stage", help="Start at this stage (2: --model is a trained stage 1)."),
    to_stage: Optional[int] = typer.Option(None, "--to-stage", help="Stop after this stage (1: train stage 1 only)."),
    checkpoint_steps: int = typer.Option(200, "--checkpoint-steps", help="Checkpoint every N steps (and every epoch)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the trained model (default: the --out stem)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT's checkpoint (OUT.ckpt.h5)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Train MODEL on DATA with RECIPE; checkpoints go to OUT.ckpt.h5 (removed on success)."""
    with user_errors():
        check_output(out, option="--out", suffixes=(".h5", ".hdf5"), overwrite=overwrite)
        from harness.data import load_dataset
        from harness.models.format import save_model
        from harness.train.engine import TrainOptions, check_shapes, train_model
        from harness.train.recipes import make_recipe

        the_recipe = make_recipe(
            recipe, eta=eta, bits=bits, samples=samples, unipolar=unipolar, weight_levels=weight_levels,
            dac_levels=dac_levels, adc_levels=adc_levels,
        )
        options = TrainOptions(
            epochs=epochs, seed=seed, lr=lr, batch_size=batch_size, checkpoint_steps=checkpoint_steps,
            first_stage=from_stage - 1, last_stage=None if to_stage is None else to_stage - 1,
        )
        dataset = load_dataset(data)
        start = resolve_model(model, seed, dataset.name)
        check_shapes(start, dataset)
        checkpoint = out.with_name(out.name + ".ckpt.h5")
        with contextlib.ExitStack() as stack:
            bar: list[Any] = []  # the progress bar starts with the first step (errors come first)

            def on_progress(event: dict[str, Any]) -> None:
                if not bar:
                    bar.append(stack.enter_context(progress_bar(the_recipe.name, total=None, unit="steps")))
                acc = "" if event["accuracy"] is None else f" acc {event['accuracy'] * 100:.1f}%"
                gain = "" if event["gain"] is None else f" gain {event['gain']:.3g}"
                last = len(the_recipe.stages) if options.last_stage is None else options.last_stage + 1
                # Integer training steps over the stages this run trains (each stage has the
                # same number of steps: epochs x batches).
                stages_done = event["stage_index"] - options.first_stage
                bar[0](
                    stages_done * event["steps"] + event["step"],
                    total=(last - options.first_stage) * event["steps"],
                    description=(
                        f"{event['stage']} ep {event['epoch']}/{event['epochs']} loss {event['loss']:.3f}{acc}{gain}"
                    ),
                )

            result = train_model(
                start, dataset, the_recipe, options, name=name or out.stem, checkpoint_path=checkpoint,
                resume=resume, progress=on_progress,
            )
        save_model(result.model, out)
        checkpoint.unlink(missing_ok=True)
        meta = result.model.metadata
        summary = {
            "model": result.model.name,
            "out": str(out),
            "recipe": the_recipe.name,
            "float_test_accuracy": meta["float_test_accuracy"],
            "hardware_aware_test_accuracy": meta["hardware_aware_test_accuracy"],
            "adc_gain": meta["adc_gain"],
            "ranges": {k: {"dac": v.dac_range, "adc": v.adc_range} for k, v in result.model.ranges.items()},
            "resumed_from": result.resumed_from,
            "epochs_run": len(result.history),
            "weight_levels": {k: len(v) for k, v in result.model.weight_levels.items()},
        }
        if json_out:
            emit_json(summary)
        else:
            err_console.print(
                f"wrote {out}: float test accuracy {meta['float_test_accuracy'] * 100:.2f}%, "
                f"hardware-aware {meta['hardware_aware_test_accuracy'] * 100:.2f}%"
                + ("" if meta["adc_gain"] is None else f", shared ADC gain {meta['adc_gain']:.4g}")
            )
