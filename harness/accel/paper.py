"""The AnalogNets paper's published accelerator figures, and the model-vs-paper comparison.

Sources: AnalogNets (Zhou et al., arXiv:2111.06503): Table 2 (AON-CiM, 14 nm; 8-bit throughput and
energy), the abstract and §6.4 (4-bit TOPS/W), §6.5 (MCU baseline: MicroNets on an STM32,
Banbury et al. 2021: KWS 48.6 mJ/inf at 95.3 %, VWW 196.2 mJ/inf at 86.4 %).

Table 2 is not self-consistent (derived from AnalogNets Table 2 and MicroNets Table 5): for KWS, 0.6 TOPS / 7,762 inf/s = 77.3 Mops per
inference but 8.22 µJ · 8.58 TOPS/W = 70.5 Mops; for VWW 70.6 vs 68.2 Mops. The model counts
ops once (2 per MAC of the layer list), so it cannot match both µJ/inf and TOPS/W; the energy
fit (``fit.py``) aims between them and the comparison shows both errors.
"""

from __future__ import annotations

import functools
from typing import Any

from harness.accel.workload import Workload, extract_workload

#: Paper values keyed by (zoo model, activation bits) — the EXPECTED table of the Table 2 test.
TABLE2: dict[tuple[str, int], dict[str, float]] = {
    ("analognet-kws", 8): {"inferences_per_s": 7762.0, "tops": 0.6, "tops_per_w": 8.58, "uJ_per_inference": 8.22},
    ("analognet-vww", 8): {"inferences_per_s": 1063.0, "tops": 0.075, "tops_per_w": 4.37, "uJ_per_inference": 15.6},
    ("analognet-kws", 4): {"tops_per_w": 57.39},
    ("analognet-vww", 4): {"tops_per_w": 25.69},
}

#: MicroNets on an MCU (AnalogNets §6.5, citing Banbury et al. 2021), µJ per inference, by task.
MCU_BASELINE_UJ: dict[str, float] = {"kws": 48_600.0, "vww": 196_200.0}

#: Zoo models whose task has an MCU baseline.
MODEL_TASK: dict[str, str] = {"analognet-kws": "kws", "analognet-vww": "vww", "micronet-kws-s": "kws"}

METRICS = ("inferences_per_s", "tops", "tops_per_w", "uJ_per_inference")


@functools.lru_cache(maxsize=8)
def paper_workload(name: str) -> Workload:
    """The workload of zoo model ``name`` at its registered input shape (traced once, cached)."""
    from harness.models import get_model, model_info

    info = model_info(name)
    return extract_workload(get_model(name), info.input_shape, name=name)


def comparison(hw: Any = None) -> list[dict[str, Any]]:
    """Rows ``{model, bits, metric, paper, model_value, error_pct}`` for every TABLE2 entry."""
    from harness.accel.cost import evaluate
    from harness.accel.hardware import load_hardware
    from harness.accel.tiler import tile

    hw = hw or load_hardware()
    rows = []
    for (name, bits), expected in TABLE2.items():
        cost = evaluate(tile(paper_workload(name), hw), hw, bits)
        for metric in METRICS:
            if metric not in expected:
                continue
            got = float(getattr(cost, metric))
            rows.append({
                "model": name, "bits": bits, "metric": metric, "paper": expected[metric],
                "model_value": got, "error_pct": 100.0 * (got / expected[metric] - 1.0),
            })
    return rows


def comparison_markdown(hw: Any = None) -> str:
    """The paper-vs-model table of ``docs/accel.md`` (``python -m harness.accel.paper``)."""
    lines = ["| model | bits | metric | paper | model | error |", "|---|---|---|---|---|---|"]
    for r in comparison(hw):
        lines.append(
            f"| {r['model']} | {r['bits']} | {r['metric']} | {r['paper']:g} | {r['model_value']:.4g} | "
            f"{r['error_pct']:+.1f} % |"
        )
    return "\n".join(lines)


def tradeoff_markdown(hw: Any = None, model: str = "micronet-kws-s", bits: int = 8) -> str:
    """Appendix D / Table 3 for ``model``'s depthwise layers: splitting each into GEMMs of at most
    N columns, the whole model's effective utilization and inferences/s."""
    from harness.accel.cost import evaluate
    from harness.accel.hardware import load_hardware
    from harness.accel.tiler import tile

    hw = hw or load_hardware()
    wl = paper_workload(model)
    lines = [
        f"| max GEMM columns ({model}, {bits}-bit) | tiles | effective utilization | inferences/s | latency × |",
        "|---|---|---|---|---|",
    ]
    base = None
    for limit in (None, 56, 28, 14, 7):
        pl = tile(wl, hw, max_gemm_cols=limit)
        cost = evaluate(pl, hw, bits)
        base = cost.latency_s if base is None else base
        lines.append(
            f"| {'unsplit' if limit is None else limit} | {len(pl.tiles)} | {100 * pl.effective_utilization:.1f} % | "
            f"{cost.inferences_per_s:,.0f} | {cost.latency_s / base:.2f} |"
        )
    return "\n".join(lines)


def peak_markdown(hw: Any = None) -> str:
    """Peak TOPS and TOPS/W (every cell of the array, 100 % utilization) per bit-width."""
    from harness.accel.cost import peak
    from harness.accel.hardware import load_hardware

    hw = hw or load_hardware()
    lines = ["| bits | CiM cycle | peak TOPS | peak TOPS/W |", "|---|---|---|---|"]
    for b in hw.bits:
        p = peak(hw, b)
        lines.append(f"| {b} | {hw.cim_cycle_ns(b):g} ns | {p.tops:.3g} | {p.tops_per_w:.3g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(comparison_markdown())
    print()
    print(peak_markdown())
    print()
    print(tradeoff_markdown())
