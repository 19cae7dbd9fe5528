"""One accelerator analysis: resolve a model, tile it, cost it at several bit-widths.

``harness accel`` is a thin layer over :func:`analyze`; the benchmark times the same calls.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.accel.cost import LayerCost, ModelCost, evaluate_bits, peak
from harness.accel.hardware import Hardware
from harness.accel.paper import MCU_BASELINE_UJ, MODEL_TASK
from harness.accel.tiler import Placement, tile
from harness.accel.workload import Workload, extract_workload
from harness.errors import AccelError, ModelError


def load_workload(spec: str) -> tuple[Workload, str | None]:
    """``spec`` = a zoo name (``analognet-kws``) or a model file path → (workload, task or None).

    Raises :class:`ModelError` for an unknown name or unreadable file, :class:`AccelError`
    for a model the accelerator model cannot trace.
    """
    from harness.models import list_models, model_info

    path = Path(spec)
    if spec in list_models():
        from harness.models import get_model

        info = model_info(spec)
        return extract_workload(get_model(spec), info.input_shape, name=spec), info.task
    if path.suffix in (".h5", ".hdf5") or path.exists():
        from harness.models.format import load_model

        model = load_model(path)
        return extract_workload(model.to_torch(), model.input_shape, name=model.name), None
    raise ModelError(
        f"unknown model {spec!r}: not a zoo name ({', '.join(list_models())}) and no such model file"
    )


@dataclass(frozen=True)
class AccelReport:
    """Everything ``harness accel`` shows: placement, per-bit-width costs, peaks, MCU ratio."""

    workload: Workload
    hardware: Hardware
    placement: Placement
    costs: tuple[ModelCost, ...]
    peaks: tuple[LayerCost, ...]
    task: str | None
    model_time_s: float

    def mcu_ratio(self, cost: ModelCost) -> float | None:
        """MCU energy per inference (MicroNets, §6.5) over this model's, or None without a task."""
        base = MCU_BASELINE_UJ.get(self.task or "")
        return None if base is None else base / cost.uJ_per_inference

    def largest_activation_bytes(self, bits: int) -> int:
        """Largest layer input or output at ``bits`` bits: what one SRAM bank must hold, since the
        double buffer reads a layer's input from one bank and writes its output to the other
        (residual inputs kept alive are not counted)."""
        elems = max(max(x.in_elems, x.out_elems) for x in self.workload.layers)
        return -(-elems * bits // 8)

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.workload.name,
            "input_shape": list(self.workload.input_shape),
            "hardware": {"name": self.hardware.name, "path": self.hardware.path,
                         "rows": self.hardware.array.rows, "cols": self.hardware.array.cols,
                         "adcs": self.hardware.array.adcs},
            "ops_per_mac": 2,
            "placement": {
                "tiles": self.placement.as_dicts(),
                "area_fraction": self.placement.area_fraction,
                "effective_utilization": self.placement.effective_utilization,
            },
            "results": [
                {**c.summary(),
                 "mcu_baseline_uJ": MCU_BASELINE_UJ.get(self.task or ""),
                 "mcu_energy_ratio": self.mcu_ratio(c),
                 "largest_activation_bytes": self.largest_activation_bytes(c.bits),
                 "sram_bank_bytes": self.hardware.sram.bank_bytes,
                 "layers": [x.as_dict() for x in c.layers]}
                for c in self.costs
            ],
            "peak": [{"bits": c.bits, "tops": p.tops, "tops_per_w": p.tops_per_w}
                     for c, p in zip(self.costs, self.peaks, strict=True)],
            "model_time_s": self.model_time_s,
        }


def analyze(
    workload: Workload,
    hw: Hardware,
    bits: Sequence[int],
    *,
    split: bool = False,
    max_gemm_cols: int | None = None,
    task: str | None = None,
) -> AccelReport:
    """Tile ``workload`` on ``hw`` and cost it at each of ``bits`` (validated before any work)."""
    if not bits:
        raise AccelError("no bit-widths given")
    for b in bits:
        hw.cim_cycle_ns(b)
    t0 = time.perf_counter()
    placement = tile(workload, hw, split=split, max_gemm_cols=max_gemm_cols)
    costs = tuple(evaluate_bits(placement, hw, bits))
    elapsed = time.perf_counter() - t0
    peaks = tuple(peak(hw, b) for b in bits)
    return AccelReport(workload=workload, hardware=hw, placement=placement, costs=costs, peaks=peaks,
                       task=task or MODEL_TASK.get(workload.name), model_time_s=elapsed)
