"""Converter ranges per bit width (harness.evaluation.ranges): the minimum-MSE calibration under
the shared ADC gain, the policies, the calibration data (training split only) and the one
implementation shared with the training code's range initialisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from harness.data import load_dataset
from harness.errors import EvaluationError
from harness.evaluation import evaluator as evaluator_module
from harness.evaluation.evaluator import ReadoutEvaluator
from harness.evaluation.ranges import (
    RangeCalibrator,
    calibration_inputs,
    converter_ranges,
    layer_signals,
    shared_gain_ranges,
)
from harness.models.format import default_model_path, load_model
from harness.models.model import Model
from harness.models.torch_convert import model_from_torch
from harness.train.layers import HardwareConfig, convert


def _exact_gaussian_mse(clip: float, n: int) -> float:
    """MSE of the symmetric quantizer with codes −n…n and step clip/n on N(0, 1), by quadrature
    on a fine grid (independent of the implementation under test)."""
    x = np.linspace(-8.0, 8.0, 64_001)
    pdf = np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    step = clip / n
    q = np.clip(np.round(x / step), -n, n) * step
    return float(np.sum((q - x) ** 2 * pdf) * (x[1] - x[0]))


def _exact_optimal_clip(n: int) -> float:
    coarse = np.linspace(1.5, 4.5, 151)  # 0.02 σ, then 0.001 σ around the best
    best = float(coarse[np.argmin([_exact_gaussian_mse(c, n) for c in coarse])])
    fine = np.linspace(best - 0.02, best + 0.02, 41)
    return float(fine[np.argmin([_exact_gaussian_mse(c, n) for c in fine])])


def _identity_model() -> Model:
    """One analog layer y = (x, x) (1 → 2, no bias): its input and its outputs are the same signal."""
    net = nn.Sequential(nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    return model_from_torch(net, name="identity", input_shape=(1,), n_classes=2, dataset="digits")


def test_calibrated_range_of_a_gaussian_at_4_bits_is_the_mse_optimal_clip() -> None:
    """A unit Gaussian through one layer: at 4 bits the ADC (codes −7…7) and the 5-bit DAC
    (codes −15…15) are calibrated to the clips that minimise the exact quantization MSE — 2.47 σ
    and 2.90 σ, by quadrature here. Banner et al. 2019 (ACIQ) give 2.55 σ for 4 bits: 2⁴ bins
    over ±α, a step of α/8 (codes −8…8 give 2.55 σ by the same quadrature, checked below); our
    symmetric 4-bit converter has 2⁴ − 1 levels, a step of α/7, hence a slightly smaller clip. 2¹⁸ samples pin the optimum to ~0.3 %; the
    search's final grid spacing is 0.5 %."""
    assert _exact_optimal_clip(8) == pytest.approx(2.55, abs=0.01)  # ACIQ's 4-bit figure
    adc_opt, dac_opt = _exact_optimal_clip(7), _exact_optimal_clip(15)
    x = np.random.default_rng(0).standard_normal((1 << 18, 1)).astype(np.float32)
    model = _identity_model()
    r = converter_ranges(model, x, bits=4, policy="calibrated")
    assert r.source == "calibrated"
    (name,) = [n for n, _ in r.dac_range]
    assert r.dac(name) == pytest.approx(dac_opt, rel=0.012)
    assert r.adc(name, 1.0) == pytest.approx(adc_opt, rel=0.012)
    # the percentile heuristic is blind to the bit width and far wider (99.995th pct ≈ 4.06 σ)
    p = converter_ranges(model, x, bits=4, policy="percentile")
    assert p.source == "percentile" and p.adc(name, 1.0) > 1.5 * r.adc(name, 1.0)
    assert converter_ranges(model, x, bits=8, policy="percentile") == p


def test_shared_gain_is_one_rho_for_all_layers_and_narrower_at_low_bits() -> None:
    rng = np.random.default_rng(1)
    ins = {"a": rng.standard_normal(50_000), "b": np.abs(rng.standard_normal(50_000))}
    outs = {"a": 3.0 * rng.standard_normal(50_000), "b": 0.5 * rng.laplace(size=50_000)}
    wmax = {"a": 0.8, "b": 0.3}
    dac_p, rho_p = shared_gain_ranges(ins, outs, wmax, bits=None)
    dac_4, rho_4 = shared_gain_ranges(ins, outs, wmax, bits=4)
    dac_8, rho_8 = shared_gain_ranges(ins, outs, wmax, bits=8)
    assert rho_4 < rho_8 <= rho_p  # calibration only narrows the percentile ranges, more at fewer bits
    for n in ins:
        assert dac_4[n] < dac_8[n] <= dac_p[n]


def _bare(model: Model) -> Model:
    return Model(name="bare", architecture=model.architecture, weights=model.weights(), input_shape=model.input_shape,
                 n_classes=model.n_classes, dataset=model.dataset)


def test_policies() -> None:
    model = load_model(default_model_path())  # carries trained ranges
    bare = _bare(model)
    data = load_dataset(model.dataset)
    assert RangeCalibrator(model, data.x_train).at(4).source == "trained"  # auto
    auto = RangeCalibrator(bare, data.x_train)
    assert auto.at(4).source == "calibrated" and auto.at(8).source == "calibrated"
    assert auto.at(4).adc_norm_range < auto.at(8).adc_norm_range
    assert auto.at(4) is auto.at(4)  # cached per bit width
    signals = auto._signals
    auto.at(6)
    assert auto._signals is signals  # the layer signals are measured once per model and data
    assert RangeCalibrator(bare, data.x_train, policy="percentile").at(4).source == "percentile"
    with pytest.raises(EvaluationError, match="no trained"):
        RangeCalibrator(bare, data.x_train, policy="trained")
    with pytest.raises(EvaluationError, match="unknown converter-range policy"):
        RangeCalibrator(bare, data.x_train, policy="best")
    used = auto.used([8, 4]).to_dict()
    assert used["policy"] == "auto" and used["source"] == "calibrated"
    assert used["calibration"] == {"split": "train", "samples": 512, "seed": 0, "percentile": 99.995}
    assert set(used["bits"]) == {"8", "4"} and set(used["bits"]["4"]["adc_range"]) == {"fc1", "fc2"}


def test_calibration_uses_the_training_split_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluator hands the calibrator the training split alone: test inputs scaled by 10⁶
    leave every range unchanged, and the calibration rows are training rows (budget 512, seed 0)."""
    model = _bare(load_model(default_model_path()))
    data = load_dataset(model.dataset)
    clean = ReadoutEvaluator(model)
    poisoned = dataclasses.replace(data, x_test=(data.x_test * 1e6).astype(np.float32))
    monkeypatch.setattr(evaluator_module, "load_dataset", lambda _name: poisoned)
    dirty = ReadoutEvaluator(model)
    assert float(dirty.x.abs().max()) > 1e5  # the poisoned test split is what it evaluates
    for bits in (8, 6, 4):
        assert dirty.calibrator.at(bits) == clean.calibrator.at(bits)
    x, idx = calibration_inputs(data.x_train)
    assert idx.shape == (512,) and np.unique(idx).size == 512 and idx.max() < data.x_train.shape[0]
    np.testing.assert_array_equal(x, data.x_train[idx])
    assert np.array_equal(dirty.calibrator.calibration_indices, idx)
    assert converter_ranges(model, x, bits=4, policy="calibrated") == dirty.calibrator.at(4)


def test_layer_signals_are_magnitudes_of_a_strided_subsample() -> None:
    model = load_model(default_model_path())
    x = load_dataset(model.dataset).x_train[:300]
    sig = layer_signals(model, x)
    # batch 1: 256 × 64 inputs kept whole; batch 2: the 44 remaining rows
    np.testing.assert_array_equal(sig.inputs["fc1"], np.abs(x).reshape(-1))
    assert (sig.outputs["fc2"] >= 0).all()


def test_training_range_init_is_the_same_implementation() -> None:
    """HardwareAwareNet.init_ranges (harness.train) and the evaluation's calibration give the
    same ranges for the same network and data (no clipping: the deployed weights are the weights)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    x = torch.randn(500, 64)
    hw = convert(net, HardwareConfig(clip_sigma=None, bits=4))
    hw.init_ranges(x, percentile=99.995, bits=4)
    model = model_from_torch(net, name="mlp", input_shape=(64,), n_classes=10, dataset="digits")
    r = converter_ranges(model, x.numpy(), bits=4, policy="calibrated")
    trained = hw.learned_ranges()
    names = [name for name, _ in hw.layers()]  # the same layers, in the same order
    assert len(r.dac_range) == len(names) == 2
    for n, (_, r_dac) in zip(names, r.dac_range):
        assert trained[n][0] == pytest.approx(r_dac, rel=1e-5)
    assert float(hw.gain.detach().abs()) == pytest.approx(r.adc_norm_range, rel=1e-5)


def test_cli_repeats_the_library_defaults() -> None:
    from harness.commands import evaluate as cmd
    from harness.evaluation import ranges

    assert cmd.RANGE_POLICIES == ranges.RANGE_POLICIES
    assert cmd.DEFAULT_CALIBRATION_SAMPLES == ranges.DEFAULT_CALIBRATION_SAMPLES


def test_sweep_spec_takes_one_range_policy() -> None:
    from harness.errors import ConfigError
    from harness.sweeps.spec import parse_sweep

    grid = '[grid]\nmodels = ["default"]\ntimes = ["25s"]\n'
    auto = parse_sweep(grid)
    pct = parse_sweep('[sweep]\nranges = "percentile"\n' + grid)
    assert auto.ranges == "auto" and pct.ranges == "percentile"
    assert auto.digest() != pct.digest()  # another policy is another results folder
    with pytest.raises(ConfigError, match="ranges"):
        parse_sweep('[sweep]\nranges = "best"\n' + grid)
