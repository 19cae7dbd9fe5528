"""Cycle and energy model: a small pure-Python function of (placement, hardware, bit-width).

No torch here: the workload is extracted once (``workload.py``) and this runs in microseconds,
so it can sit inside an architecture-search loop. Per tile (a layer, or a chunk of one) at
``b``-bit activations, with ``P`` = pixels (matrix-vector products), ``r × c`` its rectangle:

- ADC phases per MVM ``φ = ceil(c / adcs)``: the 4:1 column mux gives 128 ADCs for 512 columns;
  ``c`` contiguous columns meet each ADC at most ``ceil(c / 128)`` times.
- CiM cycles ``P · φ``; array time ``P · φ · t_cyc(b)`` (Table 2: 130 / 34 / 10 ns).
- The digital datapath must finish ``c`` words per MVM (``ceil(c / words_per_clock)`` clocks)
  and IM2COL must fetch ``new_inputs_per_mvm · b`` bits through the SRAM read port
  (``ceil(bits / read_bits_per_clock)`` clocks). Everything is pipelined (§5.2), so an MVM takes
  ``max(φ · t_cyc, datapath clocks · t_clk, IM2COL clocks · t_clk)``; ``stall`` is the excess
  over the array time (zero on AON-CiM for both AnalogNets at 8/6/4 bits: the paper's claim).
- Energy (per inference):
  DAC ``P · φ · r · dac_pJ_per_row`` (the input is re-applied in every phase);
  array ``P · nonzero · 2^b · array_fJ_per_mac_lsb`` (cell current for the PWM pulse width);
  ADC ``P · c · 2^b · adc_fJ_per_conversion_lsb`` (counting window ∝ 2^b);
  digital ``P · c · digital_pJ_per_word``;
  SRAM ``P · (new_inputs · sram_pJ_per_byte_read + c · sram_pJ_per_byte_write) · b / 8``;
  static ``static_mW · latency``.
- Ops are counted as 2 per useful MAC (``P · nonzero``; the zero cells of a dense-expanded
  depthwise layer do no useful work). TOPS = ops / latency, TOPS/W = ops / energy.

Layers run one after another (layer-serial): model latency and energy are sums over tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.accel.hardware import Hardware
from harness.accel.tiler import Placement, Tile, tile
from harness.accel.workload import LayerWork, Workload

COMPONENTS = ("dac", "array", "adc", "digital", "sram", "static")


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer (all its tiles) at one bit-width. Energies in joules, times in seconds."""

    name: str
    rows: int
    cols: int
    pixels: int
    n_tiles: int
    phases: int
    cim_cycles: int
    macs: int
    latency_s: float
    array_time_s: float
    stall_s: float
    energy_J: dict[str, float]
    utilization: float
    depthwise: bool

    @property
    def ops(self) -> int:
        return 2 * self.macs

    @property
    def energy_total_J(self) -> float:
        return sum(self.energy_J.values())

    @property
    def tops(self) -> float:
        return self.ops / self.latency_s / 1e12

    @property
    def tops_per_w(self) -> float:
        return self.ops / self.energy_total_J / 1e12

    @property
    def size(self) -> int:
        """Cells the layer's weights occupy (Figure 8's "layer size")."""
        return self.rows * self.cols

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "rows": self.rows, "cols": self.cols, "pixels": self.pixels,
            "n_tiles": self.n_tiles, "phases": self.phases, "cim_cycles": self.cim_cycles,
            "macs": self.macs, "ops": self.ops, "latency_s": self.latency_s, "stall_s": self.stall_s,
            "energy_J": dict(self.energy_J), "energy_total_J": self.energy_total_J,
            "tops": self.tops, "tops_per_w": self.tops_per_w, "utilization": self.utilization,
            "depthwise": self.depthwise,
        }


@dataclass(frozen=True)
class ModelCost:
    """Whole-model cost at one bit-width (sums over layers, run one after another)."""

    model: str
    bits: int
    layers: tuple[LayerCost, ...]

    @property
    def cim_cycles(self) -> int:
        return sum(x.cim_cycles for x in self.layers)

    @property
    def macs(self) -> int:
        return sum(x.macs for x in self.layers)

    @property
    def ops(self) -> int:
        return 2 * self.macs

    @property
    def latency_s(self) -> float:
        return sum(x.latency_s for x in self.layers)

    @property
    def stall_s(self) -> float:
        return sum(x.stall_s for x in self.layers)

    @property
    def energy_J(self) -> dict[str, float]:
        return {k: sum(x.energy_J[k] for x in self.layers) for k in COMPONENTS}

    @property
    def energy_total_J(self) -> float:
        return sum(x.energy_total_J for x in self.layers)

    @property
    def inferences_per_s(self) -> float:
        return 1.0 / self.latency_s

    @property
    def uJ_per_inference(self) -> float:
        return self.energy_total_J * 1e6

    @property
    def tops(self) -> float:
        return self.ops / self.latency_s / 1e12

    @property
    def tops_per_w(self) -> float:
        return self.ops / self.energy_total_J / 1e12

    def summary(self) -> dict[str, object]:
        return {
            "model": self.model, "bits": self.bits, "cim_cycles": self.cim_cycles, "macs": self.macs,
            "ops": self.ops, "latency_s": self.latency_s, "stall_s": self.stall_s,
            "inferences_per_s": self.inferences_per_s, "uJ_per_inference": self.uJ_per_inference,
            "tops": self.tops, "tops_per_w": self.tops_per_w,
            "energy_J": self.energy_J,
        }


def tile_cost(t: Tile, hw: Hardware, bits: int) -> tuple[int, int, float, float, dict[str, float]]:
    """``(phases, cim_cycles, latency_s, array_time_s, energy_J by component)`` of one tile."""
    w = t.work
    e = hw.energy
    t_cyc_ns = hw.cim_cycle_ns(bits)
    t_clk_ns = hw.timing.digital_clock_ns
    phases = -(-t.cols // hw.array.adcs)
    cycles = w.pixels * phases
    # Inputs this tile needs per MVM: its own share of the layer's fetch (row chunks split it).
    new_inputs = -(-w.new_inputs_per_mvm * t.rows // w.rows)
    dp_ns = -(-t.cols // hw.datapath.words_per_clock) * t_clk_ns
    im_ns = -(-new_inputs * bits // hw.sram.read_bits_per_clock) * t_clk_ns
    mvm_ns = max(phases * t_cyc_ns, dp_ns, im_ns)
    latency_s = w.pixels * mvm_ns * 1e-9
    array_s = cycles * t_cyc_ns * 1e-9
    lsb = 1 << bits
    energy = {
        "dac": cycles * t.rows * e.dac_pJ_per_row * 1e-12,
        "array": w.pixels * t.nonzero * lsb * e.array_fJ_per_mac_lsb * 1e-15,
        "adc": w.pixels * t.cols * lsb * e.adc_fJ_per_conversion_lsb * 1e-15,
        "digital": w.pixels * t.cols * e.digital_pJ_per_word * 1e-12,
        "sram": w.pixels * (new_inputs * e.sram_pJ_per_byte_read + t.cols * e.sram_pJ_per_byte_write)
        * bits / 8 * 1e-12,
        "static": e.static_mW * 1e-3 * latency_s,
    }
    return phases, cycles, latency_s, array_s, energy


def evaluate(placement: Placement, hw: Hardware, bits: int) -> ModelCost:
    """Cost of a placed model at ``bits``-bit activations; AccelError if ``hw`` lacks ``bits``."""
    hw.cim_cycle_ns(bits)  # validate once, with the hardware's message
    by_layer: dict[int, list[Tile]] = {}
    for t in placement.tiles:
        by_layer.setdefault(t.layer, []).append(t)
    layers = []
    for i, layer in enumerate(placement.workload.layers):
        tiles = by_layer[i]
        phases = cycles = 0
        latency = array_s = 0.0
        energy = dict.fromkeys(COMPONENTS, 0.0)
        for t in tiles:
            ph, cy, lat, arr, en = tile_cost(t, hw, bits)
            phases = max(phases, ph)
            cycles += cy
            latency += lat
            array_s += arr
            for k, v in en.items():
                energy[k] += v
        allocated = sum(t.rows * t.cols for t in tiles)
        layers.append(LayerCost(
            name=layer.name, rows=layer.rows, cols=layer.cols, pixels=layer.pixels, n_tiles=len(tiles),
            phases=phases, cim_cycles=cycles, macs=layer.macs, latency_s=latency, array_time_s=array_s,
            stall_s=latency - array_s, energy_J=energy, utilization=layer.nonzero / allocated,
            depthwise=layer.depthwise,
        ))
    return ModelCost(model=placement.workload.name, bits=bits, layers=tuple(layers))


def peak(hw: Hardware, bits: int) -> LayerCost:
    """One MVM using every cell of the array (100 % utilization, all ``rows`` inputs fetched anew)."""
    R, C = hw.array.rows, hw.array.cols
    full = LayerWork(name="peak", kind="linear", rows=R, cols=C, pixels=1, in_channels=R,
                     in_elems=R, out_elems=C, new_inputs_per_mvm=R)
    wl = Workload(name="peak (100 % utilization)", input_shape=(R,), layers=(full,))
    return evaluate(tile(wl, hw), hw, bits).layers[0]


@dataclass(frozen=True)
class TradeoffRow:
    """One row of Appendix D / Table 3: a depthwise layer split into GEMMs of ≤ ``max_gemm_cols``."""

    max_gemm_cols: int
    n_gemms: int
    allocated_cells: int
    effective_utilization: float
    cim_cycles: int
    latency_s: float
    latency_factor: float


def depthwise_tradeoff(
    layer: LayerWork, hw: Hardware, bits: int, max_gemm_cols: Sequence[int]
) -> list[TradeoffRow]:
    """Utilization vs latency of splitting one grouped layer (first row: unsplit dense form)."""
    wl = Workload(name=layer.name, input_shape=(1,), layers=(layer,))
    rows: list[TradeoffRow] = []
    base = None
    for limit in (None, *max_gemm_cols):
        pl = tile(wl, hw, max_gemm_cols=limit)
        cost = evaluate(pl, hw, bits)
        base = cost.latency_s if base is None else base
        rows.append(TradeoffRow(
            max_gemm_cols=layer.cols if limit is None else int(limit), n_gemms=len(pl.tiles),
            allocated_cells=pl.used_cells, effective_utilization=pl.effective_utilization,
            cim_cycles=cost.cim_cycles, latency_s=cost.latency_s, latency_factor=cost.latency_s / base,
        ))
    return rows


def evaluate_bits(placement: Placement, hw: Hardware, bits: Sequence[int]) -> list[ModelCost]:
    """:func:`evaluate` at each bit-width in ``bits`` (validated first, all or nothing)."""
    for b in bits:
        hw.cim_cycle_ns(b)
    return [evaluate(placement, hw, b) for b in bits]

