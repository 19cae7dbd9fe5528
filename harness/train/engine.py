"""The training loop behind ``harness train``: stages, schedules, checkpoints, resume.

One run = the stages of a :class:`~harness.train.recipes.Recipe` on a converted copy of a
model (:func:`harness.train.layers.convert`), ``epochs`` epochs each, Adam, minibatches
drawn by a seeded permutation per epoch:

- weights: cosine decay from ``lr · stage.lr_factor`` to 0 over the stage;
- converter ranges (stages that train them): own Adam groups, a relative LR (the parameter's
  magnitude times a rate decaying exponentially from
  :data:`~harness.train.recipes.RANGE_LR_START` to ``RANGE_LR_END``), gradient norm
  clipped to ``RANGE_GRAD_CLIP``; initialised at the stage's start from the Appendix C
  percentile heuristic on training data, narrowed to the least quantization error at the
  stage's bits (``TrainOptions.range_init``, :meth:`HardwareAwareNet.init_ranges`);
- HA-SGD: the gradient handed to Adam is the mean over ``L`` forward/backward passes.

Deterministic on CPU: the run executes inside :func:`deterministic_torch` (one thread,
deterministic kernels) and every draw comes from two seeded generators (shuffle, noise)
whose states, like the optimizer's and the network's, are checkpointed (HDF5,
:mod:`harness.train.checkpoint`) at the end of every epoch and every ``checkpoint_steps``
steps. A resumed run continues bit-identically: an interrupted run loses at most the
steps since its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import harness
from harness.data import Dataset, check_dataset_fits
from harness.errors import ConfigError, TrainingError
from harness.models.model import LayerRanges, Model
from harness.models.torch_convert import model_from_torch
from harness.train.checkpoint import load_checkpoint, save_checkpoint
from harness.train.common import EVAL_BATCH, deterministic_torch, float_accuracy
from harness.train.layers import HardwareAwareNet, convert
from harness.train.recipes import (
    RANGE_GRAD_CLIP,
    RANGE_LR_END,
    RANGE_LR_START,
    Recipe,
    Stage,
)

#: Floor of the magnitude that scales a range parameter's relative LR (a range near 0 still moves).
RANGE_MIN_SCALE = 1e-3
#: Calibration inputs (the first ones of the training split) for the stage-2 range init.
CALIBRATION_SAMPLES = 2048

#: ``progress(event)``; event keys: stage, stage_index, n_stages, epoch, epochs, step,
#: steps, loss, accuracy (None until an epoch ends), gain (None without converters).
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainOptions:
    """Hyper-parameters of a run that are not part of the recipe.

    Attributes:
        epochs: epochs per stage (>= 1).
        seed: seeds shuffling and noise.
        lr: stage-1 initial learning rate (later stages scale it by their ``lr_factor``).
        batch_size: minibatch size.
        checkpoint_steps: also checkpoint every this many steps within an epoch (0: only at
            epoch ends).
        first_stage: 0-based index of the first stage to run (1 starts stage 2 from an
            already-trained stage-1 model).
        last_stage: 0-based index of the last stage to run (None: the recipe's last); e.g. 0
            trains only stage 1, to share it between several stage-2 runs.
        range_percentile: percentile of the stage-2 range initialisation.
        range_init: ``"mse"``: the percentile ranges narrowed to the least quantization error at
            the stage's bits (:meth:`HardwareAwareNet.init_ranges`); ``"percentile"``: as they are.
    """

    epochs: int
    seed: int
    lr: float = 1e-3
    batch_size: int = 100
    checkpoint_steps: int = 200
    first_stage: int = 0
    last_stage: int | None = None
    range_percentile: float = 99.995
    range_init: str = "mse"

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}={value!r} must be an int >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be an int >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr={self.lr} must be a finite number > 0")
        if self.range_init not in ("mse", "percentile"):
            raise ConfigError(f"range_init={self.range_init!r} must be 'mse' or 'percentile'")
        if self.checkpoint_steps < 0:
            raise ConfigError(f"checkpoint_steps={self.checkpoint_steps} must be >= 0")


@dataclass
class TrainResult:
    model: Model
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: dict[str, Any] | None = None


def _weights_digest(model: Model) -> str:
    h = hashlib.sha256()
    for key, value in sorted(model.weights().items()):
        h.update(key.encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()[:16]


def _identity(model: Model, data: Dataset, recipe: Recipe, options: TrainOptions) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "model": model.name,
                "architecture": list(model.architecture),
                "weights": _weights_digest(model),
                "dataset": data.name,
                "input_shape": list(data.input_shape),
                "n_classes": data.n_classes,
                "n_train": int(np.shape(data.x_train)[0]),
                "recipe": asdict(recipe),
                "options": asdict(options),
            },
            default=str,
        )
    )


def _describe_mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if "model" in keys or "architecture" in keys or "weights" in keys:
        return f"it was made for model {saved.get('model')!r}, not {wanted.get('model')!r} (or other starting weights)"
    return "it differs in " + ", ".join(keys)


def check_shapes(model: Model, data: Dataset) -> None:
    """DatasetError unless ``data`` fits ``model`` (input shape and number of classes)."""
    check_dataset_fits(data, input_shape=model.input_shape, n_classes=model.n_classes, model_name=model.name)


def _optimizer(hw: HardwareAwareNet, stage: Stage, lr: float) -> torch.optim.Adam:
    groups: list[dict[str, Any]] = [{"params": hw.weight_parameters(), "lr": lr * stage.lr_factor}]
    if stage.train_ranges:  # one group per range (scalar) parameter: each gets its own relative LR
        groups.extend({"params": [p], "lr": RANGE_LR_START} for p in hw.range_parameters())
    return torch.optim.Adam(groups)


def _set_lrs(opt: torch.optim.Adam, stage: Stage, lr: float, t: int, total: int) -> None:
    frac = t / max(total, 1)
    opt.param_groups[0]["lr"] = lr * stage.lr_factor * 0.5 * (1.0 + math.cos(math.pi * frac))
    if stage.train_ranges:
        # Relative steps: each range parameter's LR is the schedule times its own magnitude, so
        # Adam moves it by about that fraction of itself per step whatever its scale (the gain
        # is ~20, a DAC range ~5). This is training in the log domain, as Jain et al. 2019 (the
        # paper's Eq. 4 reference) train log2 of their thresholds; an absolute LR of 1e-2 could
        # move a gain of 25 by only a few units in a short stage 2, too little at 4 bits.
        rate = RANGE_LR_START * (RANGE_LR_END / RANGE_LR_START) ** frac
        for group in opt.param_groups[1:]:
            group["lr"] = rate * max(float(group["params"][0].detach().abs()), RANGE_MIN_SCALE)


def _unipolar_penalty(hw: HardwareAwareNet) -> torch.Tensor:
    terms = []
    for _, layer in hw.layers():
        w = layer.inner.weight
        terms.append(torch.relu(-w).pow(2).mean() / w.detach().pow(2).mean().clamp_min(1e-12))
    return torch.stack(terms).sum()


def _accuracy(hw: HardwareAwareNet, x: torch.Tensor, y: torch.Tensor) -> float:
    was = hw.training
    hw.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], EVAL_BATCH):
            correct += int((hw(x[start : start + EVAL_BATCH]).argmax(dim=1) == y[start : start + EVAL_BATCH]).sum())
    hw.train(was)
    return correct / max(int(x.shape[0]), 1)


def train_model(
    model: Model,
    data: Dataset,
    recipe: Recipe,
    options: TrainOptions,
    *,
    name: str | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``recipe``; the result carries the trained model.

    The returned model has the exported weights (clipped, no noise; projected to >= 0 for
    a unipolar recipe), the learned DAC/ADC ranges when the recipe trains converters
    (``r_ADC = |g|·r_DAC·W_max`` for every layer), and metadata: recipe, stages,
    hyper-parameters, the shared ADC gain, clip bounds, per-epoch history, accuracies. A
    unipolar recipe marks every analog layer in ``Model.unipolar_layers`` (deployed on
    single devices by ``harness program`` / ``session run`` / ``evaluate``). With weight levels
    the exported weights are exactly on each layer's levels, recorded in ``Model.weight_levels``.

    Raises:
        ConfigError: data/model shape mismatch, a bad option.
        TrainingError: ``resume`` without a checkpoint, a corrupt one, or one made for a
            different model, data, recipe or options.
    """
    check_shapes(model, data)
    if not 0 <= options.first_stage < len(recipe.stages):
        raise ConfigError(
            f"first stage {options.first_stage + 1} does not exist: recipe {recipe.name!r} has {len(recipe.stages)}"
        )
    if options.last_stage is not None:
        if not options.first_stage <= options.last_stage < len(recipe.stages):
            raise ConfigError(
                f"last stage {options.last_stage + 1} must be between the first stage ({options.first_stage + 1}) "
                f"and {len(recipe.stages)}"
            )
        recipe = replace(recipe, stages=recipe.stages[: options.last_stage + 1])
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and ckpt is None:
        raise TrainingError("resume needs a checkpoint path")
    identity = _identity(model, data, recipe, options)
    state: dict[str, Any] | None = None
    if resume:
        assert ckpt is not None
        saved_identity, state = load_checkpoint(ckpt)
        if saved_identity != identity:
            raise TrainingError(f"cannot resume from {ckpt}: {_describe_mismatch(saved_identity, identity)}")
    elif ckpt is not None and ckpt.exists():
        raise TrainingError(f"checkpoint {ckpt} exists: pass --resume to continue that run, or delete it")

    x = torch.from_numpy(np.array(data.x_train, dtype=np.float32))
    y = torch.from_numpy(np.array(data.y_train, dtype=np.int64))
    x_test = torch.from_numpy(np.array(data.x_test, dtype=np.float32))
    y_test = torch.from_numpy(np.array(data.y_test, dtype=np.int64))
    n = int(x.shape[0])
    n_batches = math.ceil(n / options.batch_size)
    stages = recipe.stages
    history: list[dict[str, Any]] = []

    with deterministic_torch(options.seed):
        shuffle_gen = torch.Generator().manual_seed(options.seed)
        noise_gen = torch.Generator().manual_seed(options.seed + 1_000_003)
        level_steps = any(st.hardware.weight_levels is not None for st in stages[options.first_stage :])
        first_hw = stages[options.first_stage].hardware
        hw = convert(model.to_torch(), first_hw, generator=noise_gen, level_steps=level_steps)
        hw.train()
        pos = {"stage": options.first_stage, "epoch": 0, "batch": 0, "started": False, "steps": 0}
        order: torch.Tensor | None = None
        opt_state = None
        if state is not None:
            try:
                hw.load_state_dict(state["net"])
                shuffle_gen.set_state(state["rng"]["shuffle"])
                noise_gen.set_state(state["rng"]["noise"])
                torch.set_rng_state(state["rng"]["torch"])
                pos = dict(state["pos"])
                order = state["order"]
                opt_state = state["optimizer"]
                history = list(state["history"])
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                raise TrainingError(f"checkpoint {ckpt} is corrupt: {type(exc).__name__}: {exc}") from exc
        resumed_from = dict(pos) if state is not None else None

        running, seen = 0.0, 0  # this epoch's summed loss and sample count (checkpointed)

        def save(stage_i: int, epoch: int, batch: int, started: bool, opt: torch.optim.Adam) -> None:
            if ckpt is None:
                return
            save_checkpoint(
                ckpt,
                identity=identity,
                state={
                    "net": hw.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": {
                        "shuffle": shuffle_gen.get_state(),
                        "noise": noise_gen.get_state(),
                        "torch": torch.get_rng_state(),
                    },
                    "pos": {"stage": stage_i, "epoch": epoch, "batch": batch, "started": started, "steps": hw.steps},
                    "running": [running if batch else 0.0, seen if batch else 0],
                    "order": order if order is not None else torch.zeros(0, dtype=torch.int64),
                    "history": history,
                },
            )

        for si in range(int(pos["stage"]), len(stages)):
            stage = stages[si]
            hw.set_config(stage.hardware)
            continuing = si == pos["stage"] and bool(pos["started"])
            if continuing:
                hw.steps = int(pos["steps"])
                start_epoch, start_batch = int(pos["epoch"]), int(pos["batch"])
            else:
                hw.steps = 0
                hw.refresh_clip()
                hw.init_level_steps()  # no-op without weight levels; before the ranges see the weights
                if stage.train_ranges:
                    hw.init_ranges(
                        x[:CALIBRATION_SAMPLES],
                        percentile=options.range_percentile,
                        bits=stage.hardware.bits if options.range_init == "mse" else None,
                    )
                start_epoch, start_batch = 0, 0
            opt = _optimizer(hw, stage, options.lr)
            if continuing and opt_state is not None:
                opt.load_state_dict(opt_state)
            total = options.epochs * n_batches
            for epoch in range(start_epoch, options.epochs):
                if not (continuing and epoch == start_epoch and start_batch > 0):
                    order = torch.randperm(n, generator=shuffle_gen)
                    first_batch = 0
                    running, seen = 0.0, 0
                else:
                    first_batch = start_batch
                    assert state is not None
                    running, seen = float(state["running"][0]), int(state["running"][1])
                assert order is not None
                for b in range(first_batch, n_batches):
                    t = epoch * n_batches + b
                    _set_lrs(opt, stage, options.lr, t, total)
                    idx = order[b * options.batch_size : (b + 1) * options.batch_size]
                    xb, yb = x[idx], y[idx]
                    opt.zero_grad(set_to_none=True)
                    loss_sum = 0.0
                    for _ in range(stage.perturbations):
                        loss = F.cross_entropy(hw(xb), yb)
                        if stage.unipolar_penalty > 0.0:
                            loss = loss + stage.unipolar_penalty * (t + 1) / total * _unipolar_penalty(hw)
                        (loss / stage.perturbations).backward()
                        loss_sum += float(loss.detach())
                    if stage.train_ranges:
                        torch.nn.utils.clip_grad_norm_(hw.range_parameters(), RANGE_GRAD_CLIP)
                    opt.step()
                    hw.step_done()
                    running += loss_sum / stage.perturbations * int(idx.shape[0])
                    seen += int(idx.shape[0])
                    if progress is not None:
                        progress(_event(stage, si, len(stages), epoch, options.epochs, t + 1, total, running / seen, None, hw))
                    if options.checkpoint_steps and (t + 1) % options.checkpoint_steps == 0 and b + 1 < n_batches:
                        save(si, epoch, b + 1, True, opt)
                accuracy = _accuracy(hw, x_test, y_test)
                gain = float(hw.gain.detach().abs()) if stage.hardware.bits is not None else None
                history.append(
                    {
                        "stage": stage.name,
                        "epoch": epoch + 1,
                        "train_loss": running / max(seen, 1),
                        "test_accuracy": accuracy,
                        "adc_gain": gain,
                    }
                )
                if progress is not None:
                    progress(_event(stage, si, len(stages), epoch, options.epochs, (epoch + 1) * n_batches, total,
                                    running / max(seen, 1), accuracy, hw))
                last_stage_epoch = epoch + 1 == options.epochs
                if last_stage_epoch and si + 1 < len(stages):
                    save(si + 1, 0, 0, False, opt)
                elif not last_stage_epoch:
                    save(si, epoch + 1, 0, True, opt)
            pos = {"stage": si + 1, "epoch": 0, "batch": 0, "started": False, "steps": 0}

        hw.eval()
        final_config = stages[-1].hardware
        plain = hw.to_plain()
        ranges = None
        if recipe.trains_converters:
            ranges = {layer: LayerRanges(dac_range=d, adc_range=a) for layer, (d, a) in hw.learned_ranges().items()}
        clip = {name_: float(layer.clip) for name_, layer in hw.layers() if math.isfinite(float(layer.clip))}
        metadata: dict[str, Any] = {
            "trainer": "harness.train.engine.train_model",
            "recipe": recipe.name,
            "stages": [asdict(s) for s in stages[options.first_stage :]],
            "start_model": model.name,
            "seed": options.seed,
            "epochs_per_stage": options.epochs,
            "lr": options.lr,
            "batch_size": options.batch_size,
            "optimizer": "adam",
            "eta": final_config.eta,
            "bits": final_config.bits,
            "adc_gain": float(hw.gain.detach().abs()) if recipe.trains_converters else None,
            "range_init": f"{options.range_init} (from the {options.range_percentile}th percentile)"
            if recipe.trains_converters
            else None,
            "clip_ranges": clip,
            "unipolar_layers": [n_ for n_, _ in hw.layers()] if final_config.unipolar else [],
            "weight_levels": final_config.weight_levels,
            "dac_levels": final_config.dac_levels,
            "adc_levels": final_config.adc_levels,
            "history": history,
            "hardware_aware_test_accuracy": _accuracy(hw, x_test, y_test),
            "torch_version": torch.__version__,
            "harness_version": harness.__version__,
        }
        metadata = json.loads(json.dumps(metadata, default=str))
    out_name = name or f"{model.name}-{recipe.name}"
    trained = model_from_torch(
        plain, name=out_name, input_shape=model.input_shape, n_classes=model.n_classes, dataset=data.name,
        ranges=ranges, metadata=metadata, unipolar_layers=metadata["unipolar_layers"],
        weight_levels=hw.learned_levels(),
    )
    metadata["float_test_accuracy"] = float_accuracy(trained, data.x_test, data.y_test)
    trained = model_from_torch(
        plain, name=out_name, input_shape=model.input_shape, n_classes=model.n_classes, dataset=data.name,
        ranges=ranges, metadata=metadata, unipolar_layers=metadata["unipolar_layers"],
        weight_levels=hw.learned_levels(),
    )
    return TrainResult(trained, history, resumed_from)


def _event(
    stage: Stage, si: int, n_stages: int, epoch: int, epochs: int, step: int, steps: int, loss: float,
    accuracy: float | None, hw: HardwareAwareNet,
) -> dict[str, Any]:
    return {
        "stage": stage.name,
        "stage_index": si,
        "n_stages": n_stages,
        "epoch": epoch + 1,
        "epochs": epochs,
        "step": step,
        "steps": steps,
        "loss": loss,
        "accuracy": accuracy,
        "gain": float(hw.gain.detach().abs()) if stage.hardware.bits is not None else None,
    }
