"""Discrete weight levels (issue 23) from training to the chip: the level quantizer, the model
file (format 3, refused by older readers), mapping onto exactly the levels, the separation
check against the chip's programming noise, write-verify onto the levels, and the recording."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from harness.chip.protocol import Geometry
from harness.errors import ConfigError, MappingError, ModelError
from harness.models import format as model_format
from harness.models.format import default_model_path, load_model, save_model
from harness.models.model import Model
from harness.programming.levels import (
    MIN_SPACING_SIGMAS,
    check_layout_levels,
    device_levels_uS,
    level_report,
)
from harness.programming.mapping import map_model, map_weights
from harness.programming.write_verify import ProgrammingParams, program_layout
from harness.recording import open_recording
from harness.train.layers import HardwareConfig, convert
from harness.train.recipes import make_recipe
from harness.train.weight_quant import check_weight_levels, exported_levels, mse_step, quantize_weight
from harness.virtual.chip import VirtualPCMChip
from tests.clikit import assert_one_line_error, invoke

CHIP = "virtual?rows=64&cols=160"
GEOM = Geometry(rows=64, cols=160)


def _levelled(model: Model, n: int, *, unipolar: bool, name: str = "lv") -> Model:
    """``model`` with every analog weight snapped to ``n`` levels at its MSE step."""
    new, levels = {}, {}
    for layer in model.analog_layers():
        w = model.weights()[f"{layer.name}.weight"]
        if unipolar:
            w = np.maximum(w, 0)
        step = mse_step(w, n, unipolar=unipolar)
        values, _ = exported_levels(step, n, unipolar=unipolar)
        idx = np.abs(w[..., None] - values).argmin(axis=-1)
        new[f"{layer.name}.weight"] = values[idx]
        levels[layer.name] = values.tolist()
    return Model(
        name=name, architecture=model.architecture, weights={**model.weights(), **new},
        input_shape=model.input_shape, n_classes=model.n_classes, dataset=model.dataset,
        unipolar_layers=[a.name for a in model.analog_layers()] if unipolar else (), weight_levels=levels,
    )


# -- training ---------------------------------------------------------------------------------
def test_a_ternary_layer_holds_exactly_three_values_with_straight_through_gradients() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))
    hw = convert(net, HardwareConfig(weight_levels=3, eta=0.03, bits=4, dac_levels=7), level_steps=True)
    hw.init_level_steps()
    x = torch.randn(64, 16)
    hw.init_ranges(x, percentile=99.9, bits=4)
    hw.train()
    hw(x).pow(2).sum().backward()
    for name, layer in hw.layers():
        # straight through: the latent weights get a gradient, and so does the learned step
        assert layer.inner.weight.grad is not None and layer.inner.weight.grad.abs().sum() > 0
        assert layer.level_step is not None and layer.level_step.grad is not None
        assert float(layer.level_step.grad) != 0.0
    plain = hw.to_plain()
    levels = hw.learned_levels()
    for (name, _), module in zip(hw.layers(), (plain[0], plain[2])):
        values = np.unique(module.weight.detach().numpy())
        assert values.size == 3, values  # exactly ternary: −a, 0, +a
        assert values[1] == 0.0 and values[0] == -values[2]
        np.testing.assert_array_equal(values, np.asarray(levels[name], dtype=np.float32))
    # The DAC at 7 levels: the first layer's quantized input takes at most 7 values.
    hw.eval()
    first = next(layer for _, layer in hw.layers())
    first.record = []
    hw(x)
    assert np.unique(first.record[0][0].numpy()).size <= 7
    first.record = None


def test_weight_quantizer_gradients_are_lsq_and_straight_through() -> None:
    w = torch.tensor([-2.0, -0.6, -0.2, 0.3, 0.9, 5.0], requires_grad=True)
    s = torch.tensor(0.5, requires_grad=True)
    q = quantize_weight(w, s, 5, unipolar=False)  # codes −2..2
    np.testing.assert_allclose(q.detach().numpy(), [-1.0, -0.5, 0.0, 0.5, 1.0, 1.0])
    q.sum().backward()
    # ∂q/∂w: 1 inside, 0 where the code saturates (−2.0 → −4 clipped, 5.0 → 10 clipped)
    np.testing.assert_allclose(w.grad.numpy(), [0, 1, 1, 1, 1, 0])
    # ∂q/∂s = round(w/s) − w/s inside, k_lo/k_hi outside (Esser et al. 2020)
    v = np.array([-0.6, -0.2, 0.3, 0.9]) / 0.5
    expected = float(np.sum(np.round(v) - v)) + (-2) + 2
    assert float(s.grad) == pytest.approx(expected, abs=1e-6)


def test_level_counts_are_checked() -> None:
    with pytest.raises(ConfigError, match="--weight-levels 1"):
        check_weight_levels(1, unipolar=False)
    with pytest.raises(ConfigError, match="odd number of levels"):
        check_weight_levels(4, unipolar=False)
    assert check_weight_levels(4, unipolar=True) == 4
    with pytest.raises(ConfigError, match="odd number of levels"):
        make_recipe("analognets", weight_levels=16)
    with pytest.raises(ConfigError, match="dac_levels=8"):
        make_recipe("analognets", dac_levels=8)
    with pytest.raises(ConfigError, match="need a recipe with converters"):
        make_recipe("noise", adc_levels=15)
    r = make_recipe("analognets", weight_levels=3, bits=4, dac_levels=7, adc_levels=15)
    assert r.stages[0].hardware.weight_levels is None and r.stages[-1].hardware.weight_levels == 3
    assert r.stages[-1].hardware.converter_levels() == (3, 7)


def test_train_cli_writes_a_levelled_model_and_refuses_bad_level_counts(tmp_path: Path) -> None:
    out = tmp_path / "t.h5"
    common = ["train", "--model", str(default_model_path()), "--data", "digits", "--epochs", "1",
              "--checkpoint-steps", "0", "--out", str(out)]
    assert_one_line_error(invoke(*common, "--recipe", "analognets", "--weight-levels", "1"), "--weight-levels 1")
    assert_one_line_error(invoke(*common, "--recipe", "analognets", "--weight-levels", "4"), "odd number of levels")
    assert not out.exists()
    result = invoke(*common, "--recipe", "uniform", "--unipolar", "--weight-levels", "4", "--bits", "6", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["weight_levels"] == {"fc1": 4, "fc2": 4}
    model = load_model(out)
    for layer in model.analog_layers():
        levels = model.weight_levels[layer.name]
        assert len(levels) == 4 and levels[0] == 0.0
        assert set(np.unique(layer.weight).tolist()) <= set(np.float32(levels).tolist())
    assert model.metadata["weight_levels"] == 4


# -- the model file ---------------------------------------------------------------------------
def test_levelled_model_file_is_format_3_and_older_readers_refuse_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = load_model(default_model_path())
    model = _levelled(base, 3, unipolar=False)
    path = tmp_path / "t.h5"
    save_model(model, path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 3
        assert set(json.loads(f.attrs["weight_levels"])) == {"fc1", "fc2"}
    assert load_model(path).weight_levels == model.weight_levels
    # A continuous model stays format 2 without the attribute (older files unchanged).
    save_model(base, tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f.attrs["format_version"] == 2 and "weight_levels" not in f.attrs
    # A reader that predates levels reads versions 1 and 2 only: one line, never continuous.
    monkeypatch.setattr(model_format, "READABLE_FORMAT_VERSIONS", (1, 2))
    with pytest.raises(ModelError, match="format_version 3; this harness reads versions 1, 2") as info:
        load_model(path)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    # Levels smuggled into a version-2 file are refused too.
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(ModelError, match="needs format_version 3"):
        load_model(path)


def test_model_refuses_weights_off_their_levels_and_negative_unipolar_levels() -> None:
    base = load_model(default_model_path())
    model = _levelled(base, 3, unipolar=False)
    kwargs = dict(architecture=model.architecture, input_shape=model.input_shape, n_classes=model.n_classes,
                  dataset=model.dataset)
    with pytest.raises(ModelError, match="not on its 3 levels"):
        Model(name="x", weights=base.weights(), weight_levels=model.weight_levels, **kwargs)
    with pytest.raises(ModelError, match="negative levels"):
        Model(name="x", weights=model.weights(), weight_levels=model.weight_levels, unipolar_layers=["fc1"], **kwargs)
    with pytest.raises(ModelError, match="not on its 3 levels"):
        model.with_weights({"fc1.weight": base.weights()["fc1.weight"]})


# -- mapping ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "unipolar"), [(3, False), (7, False), (4, True), (16, True)])
def test_mapping_a_level_set_round_trips_to_the_same_levels(n: int, unipolar: bool) -> None:
    model = _levelled(load_model(default_model_path()), n, unipolar=unipolar)
    layout = map_model(model, GEOM)
    for i, p in enumerate(layout.layers):
        levels = np.asarray(model.weight_levels[p.name])
        assert p.levels == tuple(levels) and p.unipolar == unipolar
        assert p.weight_max == pytest.approx(np.abs(levels).max())  # scaled by the level set
        targets = np.unique(layout.target_uS[layout.layer_slice(i)])
        # Exactly the level conductances (a subset: a layer need not use every level).
        allowed = device_levels_uS(levels, GEOM)
        assert allowed.size == (n if unipolar else n // 2 + 1)
        assert np.all(np.min(np.abs(targets[:, None] - allowed[None, :]), axis=1) < 1e-9)
    back = layout.to_weights(layout.target_uS)
    for layer in model.analog_layers():
        levels = np.asarray(model.weight_levels[layer.name])
        np.testing.assert_allclose(back[layer.name], layer.weight, rtol=0, atol=1e-6 * np.abs(levels).max())
        snapped = levels[np.abs(back[layer.name][..., None] - levels).argmin(axis=-1)]
        np.testing.assert_array_equal(snapped.astype(np.float32), layer.weight)


def test_a_ternary_weight_maps_onto_a_pair_of_binary_devices() -> None:
    w = np.array([[-0.5, 0.0, 0.5]], dtype=np.float32)
    layout = map_weights({"fc": w}, GEOM, levels={"fc": [-0.5, 0.0, 0.5]})
    g_pos, g_neg = layout.pair_conductances(layout.target_uS, 0)
    assert g_pos.tolist() == [[GEOM.g_min_uS, GEOM.g_min_uS, GEOM.g_max_uS]]
    assert g_neg.tolist() == [[GEOM.g_max_uS, GEOM.g_min_uS, GEOM.g_min_uS]]
    # The top level is g_max even when no weight uses it.
    half = map_weights({"fc": np.array([[0.0, 0.5]], dtype=np.float32)}, GEOM, levels={"fc": [-1.0, 0.0, 0.5, 1.0]})
    assert half.target_uS.max() == pytest.approx(GEOM.g_min_uS + 0.5 * (GEOM.g_max_uS - GEOM.g_min_uS))


def test_mapping_refuses_bad_level_sets() -> None:
    w = np.array([[0.0, 0.5]], dtype=np.float32)
    with pytest.raises(MappingError, match="unipolar .* negative level"):
        map_weights({"fc": w}, GEOM, unipolar=["fc"], levels={"fc": [-0.5, 0.0, 0.5]})
    with pytest.raises(MappingError, match="off its 3 levels"):
        map_weights({"fc": np.array([[0.1, 0.5]], dtype=np.float32)}, GEOM, levels={"fc": [-0.5, 0.0, 0.5]})
    with pytest.raises(MappingError, match="not among the mapped layers"):
        map_weights({"fc": w}, GEOM, levels={"fc9": [-0.5, 0.0, 0.5]})


def test_levels_closer_than_the_programming_noise_are_refused_in_one_line(tmp_path: Path) -> None:
    chip = VirtualPCMChip(seed=1, geometry=GEOM)
    # 32 levels on one device (a 5-bit device): 25/31 = 0.81 µS apart, σ_prog of pcm-90nm up to ~1.09 µS.
    model = _levelled(load_model(default_model_path()), 32, unipolar=True)
    layout = map_model(model, GEOM)
    with pytest.raises(MappingError) as info:
        program_layout(chip, layout)
    message = str(info.value)
    assert "\n" not in message and "0.806 µS apart" in message and "σ_prog of personality pcm-90nm" in message
    assert MIN_SPACING_SIGMAS == 1.0
    # A 4-bit device (16 levels, 1.67 µS apart) passes; so does a tolerance-only failure get named.
    check_layout_levels(map_model(_levelled(load_model(default_model_path()), 16, unipolar=True), GEOM), chip, 0.2)
    with pytest.raises(MappingError, match="write-verify tolerance ±1"):
        check_layout_levels(map_model(_levelled(load_model(default_model_path()), 16, unipolar=True), GEOM), chip, 1.0)
    path = tmp_path / "m32.h5"
    save_model(model, path)
    assert_one_line_error(
        invoke("program", "--chip", CHIP, "--model", str(path), "--out", str(tmp_path / "p.h5")),
        "cannot separate levels closer than",
    )
    assert not (tmp_path / "p.h5").exists()


# -- write-verify and the recording ----------------------------------------------------------
@pytest.mark.parametrize(("n", "unipolar"), [(3, False), (7, False), (4, True)])
def test_write_verify_lands_each_device_within_its_levels_tolerance(n: int, unipolar: bool) -> None:
    model = _levelled(load_model(default_model_path()), n, unipolar=unipolar)
    chip = VirtualPCMChip(seed=3, geometry=GEOM)
    layout = map_model(model, GEOM)
    params = ProgrammingParams()
    result = program_layout(chip, layout, params)
    report = level_report(layout, result.final_uS, params.tolerance_uS)
    assert {r["layer"] for r in report} == {"fc1", "fc2"}
    assert sum(int(r["devices"]) for r in report) == layout.n_devices
    for r in report:
        # Converged means within tolerance of the level: every level converges almost fully
        # (the loop gives up on weak devices, 0.3 % of the chip, that cannot reach g_max).
        assert int(r["within_tolerance"]) >= 0.97 * int(r["devices"]), r
    ok = result.converged
    assert np.all(np.abs(result.final_uS[ok] - layout.target_uS[ok]) <= params.tolerance_uS)
    # Devices sit at exactly the level conductances' targets, nothing in between.
    allowed = np.concatenate([device_levels_uS(np.asarray(p.levels), GEOM) for p in layout.layers])
    assert np.all(np.min(np.abs(layout.target_uS[:, None] - allowed[None, :]), axis=1) < 1e-9)


def test_the_recording_knows_the_level_set(tmp_path: Path) -> None:
    base = load_model(default_model_path())
    model = _levelled(base, 3, unipolar=False)
    path = tmp_path / "t.h5"
    save_model(model, path)
    result = invoke("program", "--chip", CHIP, "--model", str(path), "--out", str(tmp_path / "p.h5"), "--json")
    assert result.exit_code == 0, result.output
    with open_recording(tmp_path / "p.h5") as rec:
        assert {p.name: p.levels for p in rec.layout.layers} == model.weight_levels
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert all("levels" in d for d in json.loads(f["layout"].attrs["layers_json"]))
    # A continuous recording's layer list has no "levels" key: older readers read it unchanged.
    result = invoke("program", "--chip", CHIP, "--out", str(tmp_path / "c.h5"), "--json")
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert not any("levels" in d for d in json.loads(f["layout"].attrs["layers_json"]))
    # Evaluating the levelled recording with a continuous model is refused in one line.
    save_model(base.with_weights(model.weights()), tmp_path / "cont.h5")
    assert_one_line_error(
        invoke("evaluate", "--recording", str(tmp_path / "p.h5"), "--model", str(tmp_path / "cont.h5"), "--bits", "8"),
        "weight levels",
    )


# -- accelerator model ------------------------------------------------------------------------
def test_cells_per_weight_follow_the_mapping() -> None:
    from harness.accel.cells import cells_summary, model_cells

    base = load_model(default_model_path())
    ternary = model_cells(_levelled(base, 3, unipolar=False))
    assert [(c.devices_per_weight, c.weight_levels, c.device_levels) for c in ternary] == [(2, 3, 2), (2, 3, 2)]
    two_bit = cells_summary(_levelled(base, 4, unipolar=True))
    assert two_bit["devices"] == two_bit["weights"] == base.n_array_weights()
    assert two_bit["weight_storage_bits"] == 2 * base.n_array_weights()
    cont = cells_summary(base)
    assert cont["devices"] == 2 * base.n_array_weights() and cont["weight_storage_bits"] is None
    pair_2bit = model_cells(_levelled(base, 7, unipolar=False))
    assert {c.device_levels for c in pair_2bit} == {4}  # a pair of 2-bit devices gives 7 levels


def test_a_noise_probe_of_a_levelled_model_is_continuous() -> None:
    from harness.train.noise import perturb_weights

    model = _levelled(load_model(default_model_path()), 3, unipolar=False)
    noisy = perturb_weights(model, 0.05, np.random.default_rng(0))
    assert noisy.weight_levels == {} and model.weight_levels
    assert np.unique(noisy.weights()["fc1.weight"]).size > 3
