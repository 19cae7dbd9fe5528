"""How the ``[fit]`` energies of the default hardware file were obtained (and re-derived).

Four energies are not in the paper: ``dac_pJ_per_row``, ``array_fJ_per_mac_lsb``,
``adc_fJ_per_conversion_lsb`` and ``digital_pJ_per_word``. Energy per inference is linear in
them (``cost.py``), so four Table 2 energies determine them exactly: a 4 × 4 linear solve.
The targets (paper values, ``paper.TABLE2``):

- AnalogNet-KWS, 8 bit: Table 2's 8.22 µJ and 8.58 TOPS/W disagree by 9.7 % for any one op count
  (77.4 Mops, from the 991-cycle layer list, gives 9.02 µJ at 8.58 TOPS/W). Target: their
  geometric mean, sqrt(8.22 · 9.02) µJ, the energy that misses both by the same ratio (±4.7 %).
- AnalogNet-VWW, 8 bit: the same for 15.6 µJ and ops / 4.37 TOPS/W (3.5 % apart).
- 4 bit: ops / 57.39 TOPS/W (KWS) and ops / 25.69 TOPS/W (VWW) (no µJ given).

SRAM energy and static power are assumed (``[asm]`` in the file) and enter the fit as known
terms. Run ``python -m harness.accel.fit`` to print the solved values in TOML form; the
default file holds them rounded to 4 significant digits.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from harness.accel.cost import evaluate
from harness.accel.hardware import Hardware, load_hardware
from harness.accel.paper import TABLE2, paper_workload
from harness.accel.tiler import tile

FITTED = ("dac_pJ_per_row", "array_fJ_per_mac_lsb", "adc_fJ_per_conversion_lsb", "digital_pJ_per_word")
_COMPONENT = {"dac_pJ_per_row": "dac", "array_fJ_per_mac_lsb": "array", "adc_fJ_per_conversion_lsb": "adc",
              "digital_pJ_per_word": "digital"}


def energy_targets_J(model: str, bits: int, ops: int) -> float:
    """The energy per inference the fit aims at (see the module docstring)."""
    row = TABLE2[(model, bits)]
    from_tops_w = ops / (row["tops_per_w"] * 1e12)
    if "uJ_per_inference" in row:
        return math.sqrt(row["uJ_per_inference"] * 1e-6 * from_tops_w)
    return from_tops_w


#: The four Table 2 targets the fit solves, in the order of :func:`fit_system`'s rows.
FIT_CASES: tuple[tuple[str, int], ...] = (("analognet-kws", 8), ("analognet-vww", 8), ("analognet-kws", 4), ("analognet-vww", 4))


def fit_energies(hw: Hardware | None = None) -> dict[str, float]:
    """Solve for the four fitted energies (file units) given ``hw``'s other constants."""
    A, b = fit_system(hw)
    x = np.linalg.solve(A, b)
    return dict(zip(FITTED, (float(v) for v in x), strict=True))


def fit_system(hw: Hardware | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The linear system behind the fit: ``A @ energies = b``, one row per :data:`FIT_CASES`
    target (J per inference), one column per :data:`FITTED` energy (file units); ``b`` is the
    target less the known (SRAM, static) terms."""
    hw = hw or load_hardware()
    cases = FIT_CASES
    unit_hw = {}
    for key in FITTED:
        energies = dataclasses.replace(
            hw.energy, **{k: (1.0 if k == key else 0.0) for k in FITTED}
        )
        unit_hw[key] = dataclasses.replace(hw, energy=energies)
    zero_hw = dataclasses.replace(hw, energy=dataclasses.replace(hw.energy, **dict.fromkeys(FITTED, 0.0)))
    A = np.zeros((4, 4))
    b = np.zeros(4)
    for i, (model, bits) in enumerate(cases):
        wl = paper_workload(model)
        placement = tile(wl, hw)
        known = evaluate(placement, zero_hw, bits).energy_total_J
        for j, key in enumerate(FITTED):
            A[i, j] = evaluate(placement, unit_hw[key], bits).energy_J[_COMPONENT[key]]
        b[i] = energy_targets_J(model, bits, wl.macs * 2) - known
    return A, b


def main() -> None:
    values = fit_energies()
    for key, value in values.items():
        print(f"{key} = {value:.4g}")


if __name__ == "__main__":
    main()
