"""Progressive chip-in-the-loop fine-tuning (Wan 2022, NeuRRAM): program a model onto a chip
layer by layer; after each layer is on the chip, read it back and fine-tune every layer not yet
programmed (and all digital parameters: biases, batch norm) with the **measured** weights of the
programmed layers frozen in the forward pass, so the later layers learn to absorb the earlier
layers' programming errors.

Per analog layer ``k`` in forward order:

1. map the current model (``programming.map_model``: the placement never changes, only the
   scales of layers whose weights were fine-tuned) and program layer ``k``'s devices with
   write-verify (``programming.program_cells``);
2. read them back and turn them into weights ``(G+ − G−)/s`` (``Layout.to_weights``);
3. fine-tune the float model with those weights in place of layer ``k``'s (and the earlier
   layers' measured ones), frozen, for ``epochs`` passes over the training split (Adam,
   cross-entropy), unless nothing is left to train.

The returned model holds the **programmed targets** of every analog layer (so ``harness
evaluate`` recognises the layout it was programmed with) and the fine-tuned digital parameters;
its metadata ties it to the chip (URI, identity, per-layer outcome). The forward pass here is
float (no DAC/ADC quantization): hardware-aware fine-tuning at the target bits is not done.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
import torch

from harness.chip.protocol import Chip
from harness.data import check_dataset_fits, load_dataset
from harness.errors import ModelError
from harness.models.model import Model
from harness.programming.mapping import Layout, map_model
from harness.programming.write_verify import ProgrammingParams, program_cells


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
    ``layout``: the final mapping; ``g_read_uS``: every device's read-back (layout order)."""

    model: Model
    measured: Model
    layout: Layout
    g_read_uS: npt.NDArray[np.float64]
    stages: tuple[FinetuneStage, ...]


def progressive_finetune(
    chip: Chip,
    model: Model,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 64,
    seed: int = 0,
    params: ProgrammingParams | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> FinetuneResult:
    """Program ``model`` onto ``chip`` layer by layer with fine-tuning in between (module docstring).

    Raises:
        MappingError: the chip cannot hold the model (before any pulse).
        ModelError: bad ``epochs``/``lr``/``batch_size``.
        HarnessError: from the chip or programming.
    """
    if isinstance(epochs, bool) or not 0 <= int(epochs) <= 10_000:
        raise ModelError(f"epochs={epochs!r} must be in 0..10000")
    if not (math.isfinite(lr) and lr > 0) or batch_size < 1:
        raise ModelError(f"need lr > 0 and batch_size >= 1, got lr={lr!r}, batch_size={batch_size!r}")
    layout = map_model(model, chip.geometry)  # raises before any pulse if the chip cannot hold it
    data = load_dataset(model.dataset)
    check_dataset_fits(data, input_shape=model.input_shape, n_classes=model.n_classes, model_name=model.name)
    x = torch.from_numpy(np.array(data.x_train, dtype=np.float32))
    y = torch.from_numpy(np.array(data.y_train, dtype=np.int64))
    params = params or ProgrammingParams()
    analog = [a.name for a in model.analog_layers()]
    current = model
    programmed: dict[str, np.ndarray] = {}  # layer → programmed weights (torch shape)
    measured: dict[str, np.ndarray] = {}  # layer → read-back weights (torch shape)
    g_read = np.zeros(layout.n_devices)
    stages = []
    generator = torch.Generator().manual_seed(int(seed))
    for k, name in enumerate(analog):
        if progress:
            progress(k, len(analog), name)
        layout = map_model(current, chip.geometry)
        sl = layout.layer_slice(k)
        result = program_cells(chip, layout.cells[sl], layout.target_uS[sl], params)
        g = layout.target_uS.astype(np.float64).copy()
        g[sl] = chip.read(layout.cells[sl])
        g_read[sl] = g[sl]
        shape = current.weights()[f"{name}.weight"].shape
        target_w = current.weights()[f"{name}.weight"]
        read_w = layout.to_weights(g)[name].reshape(shape).astype(np.float32)
        programmed[name], measured[name] = target_w, read_w
        wmax = float(np.abs(target_w).max()) or 1.0
        loss: float | None = None
        if epochs > 0:
            loss, current = _finetune(current, measured, x, y, int(epochs), lr, batch_size, generator)
        stages.append(FinetuneStage(
            layer=name, devices=int(sl.stop - sl.start), converged=float(np.mean(result.converged)),
            weight_error_rel_rms=float(np.sqrt(np.mean((read_w - target_w) ** 2)) / wmax), train_loss=loss,
        ))
    final = current.with_weights({f"{n}.weight": w for n, w in programmed.items()})
    meta = dict(final.metadata)
    meta["finetune"] = {
        "method": "progressive chip-in-the-loop fine-tuning (Wan 2022)", "chip_uri": chip.uri,
        "chip_identity": chip.identity, "epochs": int(epochs), "lr": lr, "batch_size": batch_size, "seed": int(seed),
        "from_model": model.name, "stages": [asdict(s) for s in stages],
    }
    out = Model(name=f"{model.name}-finetuned", architecture=final.architecture, weights=final.weights(),
                input_shape=final.input_shape, n_classes=final.n_classes, dataset=final.dataset, ranges=final.ranges,
                metadata=meta, unipolar_layers=final.unipolar_layers)
    return FinetuneResult(
        model=out, measured=out.with_weights({f"{n}.weight": w for n, w in measured.items()}),
        layout=map_model(out, chip.geometry), g_read_uS=g_read, stages=tuple(stages),
    )


def _finetune(
    model: Model,
    frozen: dict[str, np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[float | None, Model]:
    """Train every parameter but the frozen layers' weights (set to their measured values);
    returns the last epoch's mean loss and the model with the trained parameters (the frozen
    weights keep the values they had in ``model``)."""
    net = model.to_torch()
    with torch.no_grad():
        for name, w in frozen.items():
            net.get_submodule(name).weight.copy_(torch.from_numpy(w))
    for pname, p in net.named_parameters():
        p.requires_grad_(not (pname.endswith(".weight") and pname[: -len(".weight")] in frozen))
    trainable = [p for p in net.parameters() if p.requires_grad]
    loss_mean: float | None = None
    if trainable and epochs > 0:
        opt = torch.optim.Adam(trainable, lr=lr)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=generator)
            total, n = 0.0, 0
            for s in range(0, x.shape[0], batch_size):
                idx = order[s : s + batch_size]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.shape[0]
                n += idx.shape[0]
            loss_mean = total / n
        net.eval()
    stored = model.weights()
    state = {k: v.detach().numpy() for k, v in net.state_dict().items() if k in stored}
    keep = {f"{name}.weight" for name in frozen}
    return loss_mean, model.with_weights({k: v for k, v in state.items() if k not in keep})


__all__ = ["FinetuneResult", "FinetuneStage", "progressive_finetune"]
