"""What ``harness models`` reports about a model: size, work per inference, and where it fits.

Two arrays are checked:

- the **AON-CiM array** of the AnalogNets paper (1024 rows × 512 columns of differential unit cells,
  AnalogNets Table 2): a compute array, so every layer's ``fan_in × out`` block keeps its orientation
  (inputs on rows); all layers must be resident at once (the paper's KWS and VWW models are
  sized to fit it: AnalogNet-KWS needs at most 1008 rows and 460 columns). Blocks are packed
  by the accelerator model's tiler (:func:`harness.accel.tiler.tile`, bottom-left skyline), so
  ``harness models`` and ``harness accel`` agree on what fits;
- the harness's **default virtual chip** (the 90 nm chip: 512 × 2048 devices, two devices per
  weight), which only stores the weights: :func:`harness.programming.mapping.place_layers_anyhow` decides
  whether and how (normal, transposed, split into row pieces) they go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.chip.protocol import Geometry
from harness.errors import MappingError
from harness.programming.mapping import place_layers_anyhow
from harness.models.model import Model

#: The default virtual chip (the AnalogNets paper's 90 nm chip), in devices.
CHIP_90NM = Geometry(rows=512, cols=2048)


@dataclass(frozen=True)
class ModelSummary:
    """Figures of one model (see the module docstring for the two fit checks).

    Attributes:
        n_parameters: trainable parameters (weights, biases, batch-norm scale/shift).
        n_array_weights: weights on the array (dense blocks, depthwise expanded).
        macs, array_macs: multiply-accumulates per inference, needed / performed by the array.
        mvms: matrix-vector products per inference.
        min_utilization: smallest fraction of a layer's block holding weights (1/groups).
        max_rows, n_cols: tallest block (fan-in) and total outputs over all layers.
        aon_fits, aon_how: fits the 1024×512 AON-CiM array with all layers resident; how/why.
        chip_fits, chip_how: fits the 512×2048 virtual chip (storage); how/why.
    """

    n_parameters: int
    n_array_weights: int
    macs: int
    array_macs: int
    mvms: int
    min_utilization: float
    max_rows: int
    n_cols: int
    aon_fits: bool
    aon_how: str
    chip_fits: bool
    chip_how: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(model: Model) -> ModelSummary:
    """The :class:`ModelSummary` of ``model``."""
    layers = model.analog_layers()
    blocks = [(a.weight.shape[1], a.weight.shape[0]) for a in layers]  # (fan_in rows, out columns)
    max_rows = max(h for h, _ in blocks)
    n_cols = sum(w for _, w in blocks)
    aon_fits, aon_how = _aon_fit(model.name, [(a.name, h, w) for a, (h, w) in zip(layers, blocks, strict=True)])
    try:
        placed = place_layers_anyhow([(a.name, a.weight.shape[0], a.weight.shape[1]) for a in layers], CHIP_90NM)
    except MappingError as exc:
        chip_fits, chip_how = False, f"no: {exc}"
    else:
        chip_fits = True
        special = [p for p in placed if p.how != "normal"]
        chip_how = "yes"
        if special:
            kinds = sorted({p.how.split(" into")[0] for p in special})
            names = ", ".join(p.name for p in special) if len(special) <= 6 else f"{len(special)} of {len(placed)} blocks"
            chip_how = f"yes ({' / '.join(kinds)}: {names})"
    return ModelSummary(
        n_parameters=model.n_parameters(),
        n_array_weights=model.n_array_weights(),
        macs=model.n_macs(),
        array_macs=sum(a.array_macs for a in layers),
        mvms=model.n_mvms(),
        min_utilization=min(a.utilization for a in layers),
        max_rows=max_rows,
        n_cols=n_cols,
        aon_fits=aon_fits,
        aon_how=aon_how,
        chip_fits=chip_fits,
        chip_how=chip_how,
    )


def _aon_fit(name: str, blocks: list[tuple[str, int, int]]) -> tuple[bool, str]:
    """Place every ``(layer, fan_in rows, out columns)`` block on the AON-CiM array with the
    accelerator model's tiler (``harness.accel.tiler``: the same packer ``harness accel`` uses)."""
    from harness.accel.hardware import load_hardware
    from harness.accel.tiler import tile
    from harness.accel.workload import LayerWork, Workload
    from harness.errors import TilingError

    hw = load_hardware()
    layers = tuple(LayerWork(name=n, kind="linear", rows=h, cols=w, pixels=1) for n, h, w in blocks)
    try:
        placement = tile(Workload(name=name, input_shape=(1,), layers=layers), hw)
    except TilingError as exc:
        return False, f"no: {exc} (needs tiling / weight reloads)"
    max_rows = max(h for _, h, _ in blocks)
    n_cols = sum(w for *_, w in blocks)
    return True, (
        f"yes: all {len(blocks)} layers resident, {100 * placement.area_fraction:.0f} % of the array "
        f"(tallest {max_rows} rows, {n_cols} outputs)"
    )


def zoo_model(name: str, seed: int = 0) -> Model:
    """Zoo model ``name`` with freshly initialised weights (seeded), as a :class:`Model`."""
    import torch

    from harness.models.registry import get_model, model_info
    from harness.models.torch_convert import from_torch

    info = model_info(name)
    torch.manual_seed(seed)
    return from_torch(get_model(name).eval(), info.input_shape, name=name, n_classes=info.n_classes, dataset=info.task)
