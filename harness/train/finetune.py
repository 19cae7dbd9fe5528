"""Progressive chip-in-the-loop fine-tuning: Wan et al., "A compute-in-memory chip based on
resistive random-access memory", Nature 608, 504–512 (2022), doi:10.1038/s41586-022-04992-8
(NeuRRAM). Program a model onto a chip layer by layer; after each layer is on the chip, read it
back and fine-tune every layer not yet programmed (and all digital parameters: biases, batch
norm) with the **measured** weights of the programmed layers frozen in a hardware-aware forward
at the target bits (:mod:`harness.train.finetune_forward`), so the later layers learn to absorb
the earlier layers' programming errors.

Per analog layer ``k`` in forward order:

1. map the current model (``programming.map_model``: the placement never changes, only the
   scales of layers whose weights were fine-tuned) and program layer ``k``'s devices with
   write-verify (``programming.program_cells``);
2. its read-back is write-verify's last verify read of each device (``ProgrammingResult.final_uS``,
   one read per device after its last pulse), turned into weights ``(G+ − G−)/s``;
3. fine-tune the model in the hardware-aware forward with those weights (and the earlier
   layers' measured ones) frozen, ``epochs`` passes over the training split, unless nothing is
   left to train;
4. checkpoint (atomic HDF5, :mod:`harness.train.checkpoint`): the model so far, every layer's
   programming outcome (targets, read-backs), the RNG states and, for a chip that can save its
   state (the virtual chip), that state. ``resume=True`` continues after the last checkpointed
   layer without re-programming the layers already on the chip, bit-identically on the virtual
   chip; a checkpoint of another model, data, options or chip is refused in one line.

Deterministic on CPU as ``harness train`` (:func:`harness.train.common.deterministic_torch`).
The returned model holds the **programmed targets** of every analog layer (so ``harness
evaluate`` recognises the layout it was programmed with), the fine-tuned digital parameters and
the converter ranges the fine-tuning used; its metadata ties it to the chip (URI, identity,
per-layer outcome).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from harness.chip.protocol import Chip
from harness.data import Dataset, load_dataset
from harness.errors import ConfigError, TrainingError
from harness.evaluation.ranges import RangeCalibrator, calibration_inputs
from harness.models.model import Model
from harness.programming.mapping import Layout, map_model
from harness.programming.write_verify import ProgrammingParams, ProgrammingResult, program_cells
from harness.train.checkpoint import load_checkpoint, save_checkpoint
from harness.train.common import deterministic_torch
from harness.train.engine import _describe_mismatch, _weights_digest, check_shapes
from harness.train.finetune_forward import FinetuneHardware, exported, finetune_stage, hardware_net, pinned_ranges
from harness.train.quant import check_bits

#: ADC bits of the fine-tuning forward for a model that records none (``harness train``'s default).
DEFAULT_BITS = 8
#: Weight-noise coefficient of the layers not yet programmed (``harness train --eta``'s default).
DEFAULT_ETA = 0.03

#: ``progress(event)``; keys: phase (``"program"`` / ``"epoch"``), layer, index (0-based), layers,
#: and for ``"epoch"``: epoch, epochs, loss.
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class FinetuneOptions:
    """Hyper-parameters of one fine-tuning run.

    Attributes:
        epochs: fine-tuning epochs after each programmed layer (0: program only).
        lr, batch_size: Adam's constant learning rate and the minibatch size.
        seed: seeds the example order, the weight and quantization noise, the ``max_train`` draw.
        bits: ADC bits of the forward (the DAC gets one more); None: the model's trained bits,
            else :data:`DEFAULT_BITS`.
        eta: weight-noise coefficient of the layers not yet programmed; None: the model's, else
            :data:`DEFAULT_ETA`.
        max_train: fine-tune on this many training examples (a seeded draw); None: all.
        params: the write-verify loop's parameters.
    """

    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    bits: int | None = None
    eta: float | None = None
    max_train: int | None = None
    params: ProgrammingParams = field(default_factory=ProgrammingParams)

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or not 0 <= self.epochs <= 10_000:
            raise ConfigError(f"epochs={self.epochs!r} must be an int in 0..10000")
        if not (math.isfinite(self.lr) and self.lr > 0) or self.batch_size < 1:
            raise ConfigError(f"need lr > 0 and batch_size >= 1, got lr={self.lr!r}, batch_size={self.batch_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed={self.seed!r} must be an int >= 0")
        if self.max_train is not None and self.max_train < 1:
            raise ConfigError(f"max_train={self.max_train!r} must be >= 1 (or None: the whole training split)")
        if self.bits is not None:
            check_bits(self.bits)
        if self.eta is not None and not (math.isfinite(self.eta) and self.eta >= 0):
            raise ConfigError(f"eta={self.eta!r} must be a finite number >= 0")


@dataclass(frozen=True)
class FinetuneStage:
    """One programmed layer: its devices, the fraction that converged, the RMS error of the
    measured weights relative to the layer's largest programmed ``|W|``, and the mean training
    loss of the last fine-tuning epoch after it (None when nothing was trained)."""

    layer: str
    devices: int
    converged: float
    weight_error_rel_rms: float
    train_loss: float | None


@dataclass(frozen=True)
class FinetuneResult:
    """``model``: programmed targets + fine-tuned digital parameters (metadata ``finetune``);
    ``measured``: the same with the read-back weights (what the chip computes, ideal converters);
    ``layout``: the final mapping; ``programming``: every layer's write-verify outcome in
    layout order (its ``final_uS`` are the read-backs the fine-tuning used); ``resumed_from``:
    the number of layers taken from a checkpoint (None: a fresh run)."""

    model: Model
    measured: Model
    layout: Layout
    programming: ProgrammingResult
    stages: tuple[FinetuneStage, ...]
    resumed_from: int | None = None

    @property
    def g_read_uS(self) -> npt.NDArray[np.float64]:
        """Every device's read-back (layout order)."""
        return self.programming.final_uS


def training_split(data: Dataset, options: FinetuneOptions) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(x, y, indices)`` of the examples the fine-tuning uses: the training split (never the
    test split), or ``max_train`` of it drawn under ``seed``."""
    if options.max_train is None:
        idx = np.arange(np.shape(data.x_train)[0], dtype=np.int64)
        x = np.array(data.x_train, dtype=np.float32)
    else:
        x, idx = calibration_inputs(data.x_train, options.max_train, options.seed)
    y = np.array(np.asarray(data.y_train)[idx], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y), idx


def finetune_hardware(model: Model, data: Dataset, options: FinetuneOptions) -> FinetuneHardware:
    """The forward's bits, noise and pinned ranges for ``model`` (module docstring)."""
    meta = model.metadata
    bits = options.bits if options.bits is not None else int(meta.get("bits") or DEFAULT_BITS)
    eta = options.eta if options.eta is not None else float(meta.get("eta") or DEFAULT_ETA)
    ranges = RangeCalibrator(model, data.x_train, policy="auto").at(bits)
    return FinetuneHardware(bits=bits, eta=eta, ranges=ranges, dac_levels=meta.get("dac_levels"),
                            adc_levels=meta.get("adc_levels"))


def _identity(model: Model, data: Dataset, options: FinetuneOptions, hardware: FinetuneHardware, chip: Chip) -> dict[str, Any]:
    opts = asdict(options)
    opts["bits"], opts["eta"] = hardware.bits, hardware.eta
    return {
        "model": model.name, "architecture": list(model.architecture), "weights": _weights_digest(model),
        "dataset": data.name, "n_train": int(np.shape(data.x_train)[0]), "options": opts,
        "geometry": asdict(chip.geometry), "chip_identity": chip.identity,
    }


def _check_resume(ckpt: Path, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    saved, wanted = json.loads(json.dumps(saved, default=str)), json.loads(json.dumps(wanted, default=str))
    if saved == wanted:
        return
    if saved.get("chip_identity") != wanted.get("chip_identity") or saved.get("geometry") != wanted.get("geometry"):
        raise TrainingError(
            f"cannot resume from {ckpt}: it was made on chip {saved.get('chip_identity')!r}, not "
            f"{wanted.get('chip_identity')!r}; resume on the chip the layers were programmed on"
        )
    raise TrainingError(f"cannot resume from {ckpt}: {_describe_mismatch(saved, wanted)}")


def progressive_finetune(
    chip: Chip,
    model: Model,
    data: Dataset | None = None,
    options: FinetuneOptions | None = None,
    *,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> FinetuneResult:
    """Program ``model`` onto ``chip`` layer by layer with fine-tuning in between (module docstring).

    ``data``: the fine-tuning data (its training split only); default: the model's dataset.

    Raises:
        MappingError: the chip cannot hold the model (before any pulse).
        ConfigError / DatasetError: bad options, data that does not fit the model.
        TrainingError: ``resume`` without a checkpoint, a corrupt one, one made for another
            model, data, options or chip; a checkpoint in the way of a fresh run.
        HarnessError: from the chip or programming.
    """
    options = options or FinetuneOptions()
    layout = map_model(model, chip.geometry)  # raises before any pulse if the chip cannot hold it
    data = data if data is not None else load_dataset(model.dataset)
    check_shapes(model, data)
    hardware = finetune_hardware(model, data, options)
    hardware.config()  # bad converter levels: ConfigError before any pulse
    identity = _identity(model, data, options, hardware, chip)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and ckpt is None:
        raise TrainingError("resume needs a checkpoint path")
    state: dict[str, Any] | None = None
    if resume:
        assert ckpt is not None
        saved, state = load_checkpoint(ckpt)
        _check_resume(ckpt, saved, identity)
    elif ckpt is not None and ckpt.exists():
        raise TrainingError(f"checkpoint {ckpt} exists: pass --resume to continue that run, or delete it")
    x, y, _ = training_split(data, options)
    analog = [a.name for a in model.analog_layers()]
    with deterministic_torch(options.seed):
        shuffle = torch.Generator().manual_seed(options.seed)
        noise = torch.Generator().manual_seed(options.seed + 1_000_003)
        run = _Run(model, [], {}, {}, [])
        if state is not None:
            run = _restore(model, state, shuffle, noise, chip, ckpt)
        resumed_from = len(run.results) if state is not None else None
        for k in range(len(run.results), len(analog)):
            name = analog[k]
            if progress:
                progress({"phase": "program", "layer": name, "index": k, "layers": len(analog)})
            layout = map_model(run.current, chip.geometry)
            sl = layout.layer_slice(k)
            result = program_cells(chip, layout.cells[sl], layout.target_uS[sl], options.params)
            g = layout.target_uS.astype(np.float64).copy()
            g[sl] = result.final_uS
            target_w = run.current.weights()[f"{name}.weight"]
            read_w = layout.to_weights(g)[name].reshape(target_w.shape).astype(np.float32)
            run.programmed[name], run.measured[name] = target_w, read_w
            run.results.append(result)
            loss = None
            if options.epochs > 0:
                hw = hardware_net(run.current, hardware, run.measured, noise)

                def on_epoch(epoch: int, epochs: int, loss_: float, k: int = k, name: str = name) -> None:
                    if progress:
                        progress({"phase": "epoch", "layer": name, "index": k, "layers": len(analog),
                                  "epoch": epoch, "epochs": epochs, "loss": loss_})

                loss = finetune_stage(hw, x, y, epochs=options.epochs, lr=options.lr, batch_size=options.batch_size,
                                      shuffle=shuffle, epoch_done=on_epoch)
                if loss is not None:
                    run.current = exported(run.current, hw, run.programmed)
            wmax = float(np.abs(target_w).max()) or 1.0
            run.stages.append(FinetuneStage(
                layer=name, devices=int(sl.stop - sl.start), converged=float(np.mean(result.converged)),
                weight_error_rel_rms=float(np.sqrt(np.mean((read_w - target_w) ** 2)) / wmax), train_loss=loss,
            ))
            if ckpt is not None:
                save_checkpoint(ckpt, identity=identity, state=_state(run, shuffle, noise, chip))
    return _result(chip, model, run, hardware, options, data, resumed_from)


@dataclass
class _Run:
    """The state of a run between layers (what a checkpoint holds)."""

    current: Model
    results: list[ProgrammingResult]
    programmed: dict[str, np.ndarray]
    measured: dict[str, np.ndarray]
    stages: list[FinetuneStage]


_RESULT_ARRAYS = ("cells", "target_uS", "final_uS", "iterations", "converged")


def _state(run: _Run, shuffle: torch.Generator, noise: torch.Generator, chip: Chip) -> dict[str, Any]:
    snapshot = getattr(chip, "snapshot", None)
    chip_state = None
    if callable(snapshot):  # a chip that can save its state (RestorableChip): the virtual chip
        chip_state = {k: torch.from_numpy(np.array(v)) for k, v in snapshot().items()}
    return {
        "weights": {k: torch.from_numpy(v) for k, v in run.current.weights().items()},
        "programmed": {k: torch.from_numpy(v) for k, v in run.programmed.items()},
        "measured": {k: torch.from_numpy(v) for k, v in run.measured.items()},
        "results": [
            {**{a: torch.from_numpy(np.array(getattr(r, a), dtype=np.uint8 if a == "converged" else None))
                for a in _RESULT_ARRAYS},
             "t_start_s": r.t_start_s, "t_end_s": r.t_end_s, "wall_s": r.wall_s}
            for r in run.results
        ],
        "stages": [asdict(s) for s in run.stages],
        "rng": {"shuffle": shuffle.get_state(), "noise": noise.get_state(), "torch": torch.get_rng_state()},
        "chip_state": chip_state,
    }


def _restore(model: Model, state: dict[str, Any], shuffle: torch.Generator, noise: torch.Generator,
             chip: Chip, ckpt: Path | None) -> _Run:
    try:
        current = model.with_weights({k: v.numpy() for k, v in state["weights"].items()})
        params = None
        results = []
        for r in state["results"]:
            arrays = {a: r[a].numpy() for a in _RESULT_ARRAYS}
            arrays["converged"] = arrays["converged"].astype(bool)
            params = params or ProgrammingParams()
            results.append(ProgrammingResult(**arrays, params=params, t_start_s=float(r["t_start_s"]),
                                             t_end_s=float(r["t_end_s"]), wall_s=float(r["wall_s"])))
        run = _Run(current, results, {k: v.numpy() for k, v in state["programmed"].items()},
                   {k: v.numpy() for k, v in state["measured"].items()},
                   [FinetuneStage(**s) for s in state["stages"]])
        shuffle.set_state(state["rng"]["shuffle"])
        noise.set_state(state["rng"]["noise"])
        torch.set_rng_state(state["rng"]["torch"])
        chip_state = state["chip_state"]
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise TrainingError(f"checkpoint {ckpt} is corrupt: {type(exc).__name__}: {exc}") from exc
    restore = getattr(chip, "restore", None)
    if chip_state is not None:
        if not callable(restore):
            raise TrainingError(f"checkpoint {ckpt} holds a virtual chip's state, but this chip cannot restore it; "
                                "resume with the same chip URI")
        restore({k: v.numpy() for k, v in chip_state.items()})
    return run


def _combined(results: list[ProgrammingResult], params: ProgrammingParams) -> ProgrammingResult:
    """One outcome for every layer, in layout order (the recording's programming group)."""
    return ProgrammingResult(
        cells=np.concatenate([r.cells for r in results]), target_uS=np.concatenate([r.target_uS for r in results]),
        final_uS=np.concatenate([r.final_uS for r in results]),
        iterations=np.concatenate([r.iterations for r in results]),
        converged=np.concatenate([r.converged for r in results]), params=params,
        t_start_s=results[0].t_start_s, t_end_s=results[-1].t_end_s, wall_s=float(sum(r.wall_s for r in results)),
    )


def _result(chip: Chip, model: Model, run: _Run, hardware: FinetuneHardware, options: FinetuneOptions,
            data: Dataset, resumed_from: int | None) -> FinetuneResult:
    final = run.current.with_weights({f"{n}.weight": w for n, w in run.programmed.items()})
    meta = dict(final.metadata)
    meta["bits"] = hardware.bits
    meta["finetune"] = {
        "method": "progressive chip-in-the-loop fine-tuning (Wan et al., Nature 608, 504-512, 2022)",
        "chip_uri": chip.uri, "chip_identity": chip.identity, "bits": hardware.bits, "eta": hardware.eta,
        "ranges_source": hardware.ranges.source, "adc_norm_range": hardware.ranges.adc_norm_range,
        "epochs": options.epochs, "lr": options.lr, "batch_size": options.batch_size, "seed": options.seed,
        "dataset": data.name, "max_train": options.max_train, "from_model": model.name,
        "stages": [asdict(s) for s in run.stages],
    }
    out = Model(name=f"{model.name}-finetuned", architecture=final.architecture, weights=final.weights(),
                input_shape=final.input_shape, n_classes=final.n_classes, dataset=final.dataset,
                ranges=pinned_ranges(final, hardware.ranges), metadata=meta, unipolar_layers=final.unipolar_layers)
    layout = map_model(out, chip.geometry)
    programming = _combined(run.results, options.params)
    if not np.array_equal(programming.cells, layout.cells):
        raise TrainingError("the layers were placed on other cells than the final mapping; this is a bug")
    return FinetuneResult(
        model=out, measured=out.with_weights({f"{n}.weight": w for n, w in run.measured.items()}),
        layout=layout, programming=programming, stages=tuple(run.stages), resumed_from=resumed_from,
    )


__all__ = ["DEFAULT_BITS", "FinetuneOptions", "FinetuneResult", "FinetuneStage", "progressive_finetune",
           "training_split"]
