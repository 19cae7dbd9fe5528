"""The accelerator model against the AnalogNets paper (Zhou et al., arXiv:2111.06503): Table 2 and Figure 8.

CiMLoop style: the paper's values sit in an EXPECTED table keyed by (model, activation bits),
each test names the figure or table it replicates, and the docstrings say *why* each trend
happens in the model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from harness.accel import evaluate, load_hardware, tile
from harness.accel.fit import FITTED, fit_energies
from harness.accel.paper import TABLE2, comparison, paper_workload
from harness.accel.workload import LayerWork, Workload

#: AnalogNets Table 2 (8-bit) and abstract / §6.4 (4-bit TOPS/W). Same values as
#: harness.accel.paper.TABLE2, repeated here so a change there cannot silently move the test.
EXPECTED = {
    ("analognet-kws", 8): {"inferences_per_s": 7762.0, "tops": 0.6, "tops_per_w": 8.58, "uJ_per_inference": 8.22},
    ("analognet-vww", 8): {"inferences_per_s": 1063.0, "tops": 0.075, "tops_per_w": 4.37, "uJ_per_inference": 15.6},
    ("analognet-kws", 4): {"tops_per_w": 57.39},
    ("analognet-vww", 4): {"tops_per_w": 25.69},
}
#: The issue's acceptance tolerance. Table 2 itself is inconsistent by 9.7 % (KWS) between its
#: µJ/inf and TOPS/W, so no single op count can match both closer than ±4.7 %.
TOLERANCE = 0.05


def _cost(name: str, bits: int):  # type: ignore[no-untyped-def]
    hw = load_hardware()
    return evaluate(tile(paper_workload(name), hw), hw, bits)


def test_expected_table_is_the_library_table() -> None:
    assert EXPECTED == TABLE2


@pytest.mark.parametrize(("model", "bits"), list(EXPECTED))
def test_table2_within_5_percent(model: str, bits: int) -> None:
    """Table 2: throughput follows from CiM cycles alone (one MVM per output pixel, one ADC
    phase per ≤128 columns, 130 ns per cycle at 8 bits); energies from the fitted components."""
    cost = _cost(model, bits)
    for metric, paper in EXPECTED[(model, bits)].items():
        got = getattr(cost, metric)
        assert got == pytest.approx(paper, rel=TOLERANCE), f"{model} {bits}-bit {metric}: {got} vs {paper}"


def test_kws_cycles_are_exactly_the_paper_s_991() -> None:
    """AnalogNets Table 2: 1 / (7,762 inf/s · 130 ns) = 991 = 490 + 4 × 125 + 1, out of the tiler."""
    cost = _cost("analognet-kws", 8)
    assert [x.cim_cycles for x in cost.layers] == [490, 125, 125, 125, 125, 1]
    assert cost.cim_cycles == 991
    assert cost.latency_s == pytest.approx(991 * 130e-9)


def test_vww_reconstruction_matches_the_implied_cycles_and_ops() -> None:
    """Table 2 implies 1/(1,063 · 130 ns) ≈ 7,237 cycles and 0.075 TOPS/1,063 ≈ 70.6 Mops."""
    cost = _cost("analognet-vww", 8)
    assert cost.cim_cycles == pytest.approx(1 / (1063 * 130e-9), rel=0.01)
    assert cost.ops == pytest.approx(0.075e12 / 1063, rel=0.01)


def test_table2_inconsistency_is_split_evenly() -> None:
    """KWS: 8.22 µJ and 8.58 TOPS/W disagree for 77.4 Mops; the model errs by the same ratio on both."""
    rows = {(r["model"], r["bits"], r["metric"]): r["error_pct"] for r in comparison()}
    e_uj = rows[("analognet-kws", 8, "uJ_per_inference")]
    e_tw = rows[("analognet-kws", 8, "tops_per_w")]
    assert (1 + e_uj / 100) * (1 + e_tw / 100) * 8.22 * 8.58 == pytest.approx(_cost("analognet-kws", 8).ops / 1e6)
    assert abs(math.log1p(e_uj / 100) - math.log1p(e_tw / 100)) < 0.01


def test_no_stall_at_any_bit_width() -> None:
    """§5.2: activation processing, SRAM and IM2COL keep up, "even in the challenging 4-bit case"."""
    for name in ("analognet-kws", "analognet-vww"):
        for bits in (8, 6, 4):
            assert _cost(name, bits).stall_s == 0


def test_a_narrower_im2col_port_would_stall_at_4_bits() -> None:
    """The check can fail: with a 128-bit SRAM port, KWS conv2 (504 new 4-bit inputs per MVM,
    16 clocks) no longer fits the 8 clocks of a 10 ns cycle."""
    hw = load_hardware()
    narrow = dataclasses.replace(hw, sram=dataclasses.replace(hw.sram, read_bits_per_clock=128))
    cost = evaluate(tile(paper_workload("analognet-kws"), narrow), narrow, 4)
    stalled = {x.name for x in cost.layers if x.stall_s > 0}
    assert "conv2" in stalled
    assert evaluate(tile(paper_workload("analognet-kws"), narrow), narrow, 8).stall_s == 0


def _spearman(a: list[float], b: list[float]) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("model", ["analognet-kws", "analognet-vww"])
def test_figure8_larger_layers_reach_higher_tops_and_tops_per_w(model: str) -> None:
    """Figure 8, finding 1: DAC/ADC/digital cost per MVM is amortized over more MACs in a larger
    layer (rank correlation of size with TOPS and TOPS/W over the model's layers)."""
    cost = _cost(model, 8)
    size = [x.size for x in cost.layers]
    assert _spearman(size, [x.tops for x in cost.layers]) > 0.95
    assert _spearman(size, [x.tops_per_w for x in cost.layers]) > 0.8


def _shape_tops_w(rows: int, cols: int, bits: int) -> float:
    hw = load_hardware()
    layer = LayerWork(name="s", kind="linear", rows=rows, cols=cols, pixels=64, new_inputs_per_mvm=0)
    return evaluate(tile(Workload(name="s", input_shape=(rows,), layers=(layer,)), hw), hw, bits).tops_per_w


def test_figure8_taller_layers_of_equal_size_are_more_efficient() -> None:
    """Figure 8, finding 2: per MAC a layer pays one DAC drive per column and one ADC conversion
    per row; an 8-bit conversion (2^8 counting steps) costs ~60× a row drive, so at equal size
    the taller layer needs fewer conversions per MAC. The benefit ends near rows/cols ≈
    E_adc/E_dac (the dotted limit in Figure 8), which is much lower at 4 bits."""
    sizes = [(1024, 64), (512, 128), (256, 256), (128, 512)]
    effs = [_shape_tops_w(r, c, 8) for r, c in sizes]
    assert effs == sorted(effs, reverse=True)
    assert effs[0] > 2 * effs[-1]
    # Also true of the paper's models: AnalogNet-KWS (tall layers) beats AnalogNet-VWW.
    assert _cost("analognet-kws", 8).tops_per_w > _cost("analognet-vww", 8).tops_per_w
    assert _cost("analognet-kws", 8).tops > _cost("analognet-vww", 8).tops


def test_figure8_depthwise_layers_have_very_low_utilization() -> None:
    """Figure 8 / §4.1 / Appendix D: a depthwise layer in dense form uses 1/C of its rectangle,
    so MicroNet-KWS-S's depthwise layers sit far below its regular layers in TOPS and TOPS/W."""
    cost = _cost("micronet-kws-s", 8)
    dw = [x for x in cost.layers if x.depthwise]
    regular = [x for x in cost.layers if not x.depthwise]
    assert len(dw) == 5
    assert all(x.utilization <= 1 / 84 + 1e-12 for x in dw)
    assert all(x.utilization == 1.0 for x in regular)
    assert max(x.tops_per_w for x in dw) < min(x.tops_per_w for x in regular) / 4
    pl = tile(paper_workload("micronet-kws-s"), load_hardware())
    assert pl.effective_utilization < 0.2


def test_fitted_energies_in_the_file_come_from_the_documented_fit() -> None:
    """The [fit] constants of aon-cim-14nm.toml are `python -m harness.accel.fit`, rounded."""
    hw = load_hardware()
    fitted = fit_energies(hw)
    for key in FITTED:
        assert getattr(hw.energy, key) == pytest.approx(fitted[key], rel=2e-3), key
        assert fitted[key] > 0


def test_analognet_vww_builder() -> None:
    """The zoo entry: 1 × 100 × 100 → 2 logits; 50 × 50 also builds; nonsense resolutions refused."""
    import torch

    from harness.errors import ModelError
    from harness.models import get_model, model_info

    info = model_info("analognet-vww")
    assert (info.input_shape, info.n_classes, info.task) == ((1, 100, 100), 2, "vww")
    torch.manual_seed(0)
    net = get_model("analognet-vww").eval()
    with torch.no_grad():
        out = net(torch.randn(3, *info.input_shape))
        assert out.shape == (3, 2) and torch.isfinite(out).all()
        assert get_model("analognet-vww", resolution=50).eval()(torch.zeros(1, 1, 50, 50)).shape == (1, 2)
    with pytest.raises(ModelError, match="resolution"):
        get_model("analognet-vww", resolution=4)


@pytest.mark.parametrize("held_out", range(4))
def test_table2_held_out_energy_is_predicted_from_the_other_three(held_out: int) -> None:
    """Four fitted energies solve four Table 2 energies exactly, so the fit check above is
    circular for energy. Held out: fit on three targets and predict the fourth. Three
    equations leave one free direction in the four energies; every energy set that matches the
    three targets and is physical (all four ≥ 0) predicts the fourth, and the test bounds that
    whole range: its midpoint within 5 % of the paper's value and no prediction more than 15 %
    off (today: ±5 % for the 4-bit targets, ±14 % for the 8-bit ones, whose µJ and TOPS/W
    disagree by up to 9.7 % in the paper itself). A cost model whose energy did not scale
    with bits and layer shapes as the chip's does would need energies < 0 or miss by more."""
    from harness.accel.fit import FIT_CASES, fit_system

    A, b = fit_system()
    train = [i for i in range(4) if i != held_out]
    x_p = np.linalg.lstsq(A[train], b[train], rcond=None)[0]
    direction = np.linalg.svd(A[train])[2][-1]  # null space of the three training rows
    assert np.allclose(A[train] @ direction, 0, atol=1e-12 * np.abs(A).max())
    lo, hi = -np.inf, np.inf
    for x_i, n_i in zip(x_p, direction, strict=True):
        if n_i > 0:
            lo = max(lo, -x_i / n_i)
        elif n_i < 0:
            hi = min(hi, -x_i / n_i)
    assert lo <= hi, f"no physical energies fit the three targets other than {FIT_CASES[held_out]}"
    predictions = np.array([A[held_out] @ (x_p + t * direction) for t in (lo, hi)]) / b[held_out]
    assert abs(predictions.mean() - 1) < 0.05, (FIT_CASES[held_out], predictions)
    assert np.all(np.abs(predictions - 1) < 0.15), (FIT_CASES[held_out], predictions)
