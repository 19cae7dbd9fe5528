"""AON-CiM accelerator model: hardware file → layer-serial tiling → latency, energy, TOPS/W.

Timeloop/Accelergy style: the hardware is data (``hardware.py``, ``hw/*.toml``), the workload is
extracted once from a torch module (``workload.py``), the tiler places layers on the one array
(``tiler.py``) and the cost model (``cost.py``) is a small pure-Python function of both. See
``docs/accel.md``.
"""

from harness.accel.cost import (
    LayerCost,
    ModelCost,
    depthwise_tradeoff,
    evaluate,
    evaluate_bits,
    peak,
)
from harness.accel.hardware import Hardware, default_hardware_path, load_hardware
from harness.accel.tiler import Placement, Tile, tile
from harness.accel.workload import LayerWork, Workload, extract_workload

__all__ = [
    "Hardware", "LayerCost", "LayerWork", "ModelCost", "Placement", "Tile", "Workload",
    "default_hardware_path", "depthwise_tradeoff", "evaluate", "evaluate_bits", "extract_workload",
    "load_hardware", "peak", "tile",
]
