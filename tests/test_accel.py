"""The AON-CiM accelerator model: hardware file, workload extraction, tiler, cost model.

Hand-computed cases use a hardware file with round numbers (``_HW``) so every expected value
below is arithmetic on the formulas of ``harness/accel/cost.py``; the paper comparison
(Table 2, Figure 8) lives in ``tests/test_accel_paper.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.accel import evaluate, extract_workload, load_hardware, peak, tile
from harness.accel.cost import depthwise_tradeoff
from harness.accel.hardware import hardware_from_dict
from harness.accel.tiler import check_fits
from harness.accel.workload import LayerWork, Workload
from harness.errors import AccelError, ConfigError, TilingError

_HW = {
    "accelerator": {"name": "toy", "technology": "test"},
    "array": {"rows": 256, "cols": 128, "adcs": 32},
    "timing": {"digital_clock_ns": 1.0, "cim_cycle_ns": {"8": 100.0, "4": 10.0}},
    "datapath": {"words_per_clock": 8},
    "sram": {"kib": 64, "banks": 2, "read_bits_per_clock": 64},
    "energy": {
        "dac_pJ_per_row": 1.0,
        "array_fJ_per_mac_lsb": 1.0,
        "adc_fJ_per_conversion_lsb": 100.0,
        "digital_pJ_per_word": 2.0,
        "sram_pJ_per_byte_read": 0.5,
        "sram_pJ_per_byte_write": 0.25,
        "static_mW": 1.0,
    },
}


def _toy(**changes: dict) -> object:
    doc = {k: dict(v) for k, v in _HW.items()}
    for table, values in changes.items():
        doc[table].update(values)
    return hardware_from_dict(doc, where="toy.toml")


def _single(layer: LayerWork) -> Workload:
    return Workload(name="one", input_shape=(layer.rows,), layers=(layer,))


# ---------------------------------------------------------------- hardware file


def test_default_hardware_file_is_table2() -> None:
    hw = load_hardware()
    assert (hw.array.rows, hw.array.cols, hw.array.adcs, hw.array.mux) == (1024, 512, 128, 4)
    assert hw.bits == (8, 6, 4)
    # AnalogNets Table 2: the CiM cycle is 2^b · 0.5 ns + 2 ns (PWM DAC), exactly Table 2's 130/34/10 ns.
    for b in hw.bits:
        assert hw.cim_cycle_ns(b) == pytest.approx(2**b * 0.5 + 2.0)
    assert hw.timing.digital_clock_ns == 1.25
    assert hw.sram.kib == 128 and hw.sram.banks == 2


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"array": {"rows": 0}}, "array.rows = 0 must be > 0"),
        ({"energy": {"adc_fJ_per_conversion_lsb": -1.0}}, "adc_fJ_per_conversion_lsb = -1.0 must be > 0"),
        ({"energy": {"static_mW": -0.1}}, "static_mW = -0.1 must be >= 0"),
        ({"array": {"bogus": 3}}, "unknown key array.bogus"),
        ({"array": {"cols": 100}}, "not a multiple of array.adcs"),
        ({"array": {"rows": 10.5}}, "array.rows must be an integer"),
        ({"timing": {"cim_cycle_ns": {"eight": 130.0}}}, "is not a bit-width"),
        ({"timing": {"cim_cycle_ns": {"8": 0.0}}}, "cim_cycle_ns.8 = 0.0 must be > 0"),
        ({"sram": {"kib": True}}, "sram.kib must be a number"),
    ],
)
def test_bad_hardware_is_one_clear_error(change: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        _toy(**change)
    assert fragment in str(info.value) and "toy.toml" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_table_and_missing_key(tmp_path: Path) -> None:
    doc = {k: dict(v) for k, v in _HW.items()}
    doc["extra"] = {}
    with pytest.raises(ConfigError, match=r"unknown table \[extra\]"):
        hardware_from_dict(doc)
    del doc["extra"]
    del doc["energy"]["static_mW"]
    with pytest.raises(ConfigError, match="missing key energy.static_mW"):
        hardware_from_dict(doc)
    bad = tmp_path / "bad.toml"
    bad.write_text("[array\nrows = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_hardware(bad)


def test_unsupported_bit_width_names_the_supported_ones() -> None:
    hw = _toy()
    layer = LayerWork(name="fc", kind="linear", rows=16, cols=8, pixels=1, new_inputs_per_mvm=16)
    with pytest.raises(AccelError, match=r"does not support 6-bit activations \(supported: 8, 4\)"):
        evaluate(tile(_single(layer), hw), hw, 6)


# ---------------------------------------------------------------- workload extraction


def test_analognet_kws_mvms_fall_out_of_the_layer_shapes() -> None:
    from harness.models import get_model, model_info

    wl = extract_workload(get_model("analognet-kws"), model_info("analognet-kws").input_shape)
    # derived from AnalogNets Table 2 and MicroNets Table 5: 490 (conv1, 49×10 map) + 4 × 125 (25×5 maps) + 1 (FC) = 991 MVMs.
    assert [x.pixels for x in wl.layers] == [490, 125, 125, 125, 125, 1]
    assert [(x.rows, x.cols) for x in wl.layers] == [(40, 84), (756, 112), (1008, 84), (756, 84), (756, 84), (84, 12)]
    assert wl.mvms == 991
    assert wl.macs == 490 * 40 * 84 + 125 * (756 * 112 + 1008 * 84 + 2 * 756 * 84) + 84 * 12


def test_depthwise_conv1d_and_sequence_linear() -> None:
    net = nn.Sequential(
        nn.Conv1d(8, 8, 3, groups=8, padding=1),   # depthwise: dense 24 × 8, 3 cells per column
        nn.Conv1d(8, 16, 3, stride=2),             # 10 → 4 outputs
        nn.Flatten(start_dim=0, end_dim=0),
    )

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = net
            self.head = nn.Linear(4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))  # Linear over (1, 16, 4): 16 MVMs of 4 → 5

    wl = extract_workload(Seq(), (8, 10))
    dw, conv, fc = wl.layers
    assert (dw.rows, dw.cols, dw.groups, dw.nonzero, dw.pixels) == (24, 8, 8, 24, 10)
    assert dw.macs == 10 * 8 * 3
    assert (conv.rows, conv.cols, conv.pixels, conv.new_inputs_per_mvm) == (24, 16, 4, 16)
    assert (fc.rows, fc.cols, fc.pixels) == (4, 5, 16)


def test_unsupported_layers_and_bad_shapes_are_refused() -> None:
    with pytest.raises(AccelError, match="ConvTranspose2d is not supported"):
        extract_workload(nn.Sequential(nn.ConvTranspose2d(1, 2, 3)), (1, 4, 4))
    with pytest.raises(AccelError, match="fails on input shape"):
        extract_workload(nn.Sequential(nn.Linear(10, 2)), (7,))
    with pytest.raises(AccelError, match="no Conv1d/Conv2d/Linear"):
        extract_workload(nn.Sequential(nn.ReLU()), (3,))


# ---------------------------------------------------------------- hand-computed costs


def test_single_small_layer_by_hand() -> None:
    """Linear 64 → 32 at 8 bits on the toy hardware: one MVM, one ADC phase, one 100 ns cycle."""
    hw = _toy()
    wl = extract_workload(nn.Sequential(nn.Linear(64, 32)), (64,))
    cost = evaluate(tile(wl, hw), hw, 8)
    (layer,) = cost.layers
    assert (layer.phases, layer.cim_cycles, layer.macs) == (1, 1, 64 * 32)
    # datapath: 32 words / 8 per clock = 4 clocks; IM2COL: 64·8 bits / 64 per clock = 8 clocks;
    # both below the 100 clocks of one cycle, so no stall.
    assert layer.latency_s == pytest.approx(100e-9) and layer.stall_s == 0
    e = layer.energy_J
    assert e["dac"] == pytest.approx(64 * 1.0e-12)                    # 64 rows × 1 pJ
    assert e["array"] == pytest.approx(64 * 32 * 256 * 1.0e-15)      # MACs × 2^8 × 1 fJ
    assert e["adc"] == pytest.approx(32 * 256 * 100e-15)             # 32 conversions × 2^8 × 100 fJ
    assert e["digital"] == pytest.approx(32 * 2.0e-12)
    assert e["sram"] == pytest.approx((64 * 0.5 + 32 * 0.25) * 1e-12)  # 1 byte per 8-bit word
    assert e["static"] == pytest.approx(1e-3 * 100e-9)
    assert cost.tops == pytest.approx(2 * 64 * 32 / 100e-9 / 1e12)
    assert cost.tops_per_w == pytest.approx(2 * 64 * 32 / sum(e.values()) / 1e12)


def test_layer_needing_several_mux_phases() -> None:
    """Conv 3×3, 2 → 100 channels on a 4×4 map: 16 MVMs; 100 columns over 32 ADCs = 4 phases."""
    hw = _toy()
    wl = extract_workload(nn.Sequential(nn.Conv2d(2, 100, 3, padding=1)), (2, 4, 4))
    cost = evaluate(tile(wl, hw), hw, 4)
    (layer,) = cost.layers
    assert (layer.rows, layer.cols, layer.pixels, layer.phases) == (18, 100, 16, 4)
    assert layer.cim_cycles == 64
    # datapath needs ceil(100/8) = 13 clocks = 13 ns per MVM < 4 phases × 10 ns: no stall.
    assert layer.latency_s == pytest.approx(64 * 10e-9) and layer.stall_s == 0
    assert layer.energy_J["dac"] == pytest.approx(64 * 18 * 1e-12)   # rows driven in every phase
    assert layer.energy_J["adc"] == pytest.approx(16 * 100 * 16 * 100e-15)


def test_slow_datapath_stalls_the_array() -> None:
    """With one word per clock, 100 outputs take 100 ns per MVM against 4 × 10 ns of array time."""
    hw = _toy(datapath={"words_per_clock": 1})
    wl = extract_workload(nn.Sequential(nn.Linear(16, 100)), (16,))
    (layer,) = evaluate(tile(wl, hw), hw, 4).layers
    assert layer.latency_s == pytest.approx(100e-9)
    assert layer.stall_s == pytest.approx(100e-9 - 40e-9)


def test_model_that_does_not_fit_and_split_on_request() -> None:
    hw = _toy()
    tall = extract_workload(nn.Sequential(nn.Linear(600, 10)), (600,))
    with pytest.raises(TilingError, match=r"needs 600 rows × 10 columns but the array has 256 × 128.*split"):
        tile(tall, hw)
    placed = tile(tall, hw, split=True)
    assert [t.rows for t in placed.tiles] == [200, 200, 200]
    check_fits(placed)
    cost = evaluate(placed, hw, 8)
    assert cost.cim_cycles == 3 and cost.macs == 6000
    # 200 × 200 is split into two 200 × 100 column chunks; with the rest that is 80,000 cells > 32,768.
    many = extract_workload(nn.Sequential(nn.Linear(200, 200), nn.Linear(200, 100),
                                          nn.Linear(100, 100), nn.Linear(100, 100)), (200,))
    with pytest.raises(TilingError, match="does not fit the 256 × 128 array"):
        tile(many, hw, split=True)


def test_placements_never_overlap() -> None:
    from harness.accel.paper import paper_workload

    hw = load_hardware()
    for name in ("analognet-kws", "analognet-vww", "micronet-kws-s"):
        pl = tile(paper_workload(name), hw)
        check_fits(pl)
        assert pl.nonzero_cells == sum(x.nonzero for x in pl.workload.layers)


def test_depthwise_split_trades_utilization_for_latency() -> None:
    """Appendix D / Table 3: a 64-channel depthwise 3×3 in dense form is 576 × 64 with 1/64 of
    its cells used; GEMMs of ≤ 16 columns hold only their diagonal blocks (4 × 144 × 16 cells,
    utilization 1/16) but run one after another (4× the MVMs)."""
    hw = load_hardware()
    (layer,) = extract_workload(nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64)), (64, 8, 8)).layers
    rows = depthwise_tradeoff(layer, hw, 8, [32, 16, 8])
    assert [r.n_gemms for r in rows] == [1, 2, 4, 8]
    assert rows[0].effective_utilization == pytest.approx(1 / 64)
    assert rows[2].effective_utilization == pytest.approx(1 / 16)
    assert [r.allocated_cells for r in rows] == [576 * 64, 2 * 288 * 32, 4 * 144 * 16, 8 * 72 * 8]
    assert [r.latency_factor for r in rows] == pytest.approx([1, 2, 4, 8])
    utils = [r.effective_utilization for r in rows]
    assert utils == sorted(utils)


def test_peak_is_the_full_array_through_the_mux() -> None:
    hw = load_hardware()
    p8 = peak(hw, 8)
    # 1024 × 512 MACs per 4 phases of 130 ns.
    assert p8.tops == pytest.approx(2 * 1024 * 512 / (4 * 130e-9) / 1e12)
    assert p8.stall_s == 0
    assert peak(hw, 4).tops_per_w > peak(hw, 6).tops_per_w > p8.tops_per_w


def test_workload_is_validated() -> None:
    with pytest.raises(AccelError, match="rows=0 must be a positive integer"):
        LayerWork(name="x", kind="linear", rows=0, cols=3, pixels=1)
    with pytest.raises(AccelError, match="kind 'conv3d'"):
        LayerWork(name="x", kind="conv3d", rows=3, cols=3, pixels=1)
    with pytest.raises(AccelError, match="max_gemm_cols"):
        tile(_single(LayerWork(name="x", kind="linear", rows=3, cols=3, pixels=1)), load_hardware(), max_gemm_cols=0)
    assert math.isfinite(load_hardware().cim_cycle_ns(8))
