"""Drift compensation methods (harness.evaluation.compensation): exactness of each method where
its answer is known, the calibration data's split, the CLI's method comparison and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clikit import assert_one_line_error, invoke
from harness.chip.protocol import Geometry
from harness.data import load_dataset
from harness.errors import EvaluationError
from harness.evaluation import compensation as comp
from harness.evaluation.cim import CimSimulator, ConverterRanges, converter_ranges
from harness.evaluation.compensation import (
    AdaptiveBatchNorm,
    ColumnCalibration,
    calibration_examples,
    fit_column_affine,
    make_compensations,
)
from harness.evaluation.evaluate import evaluate_recording
from harness.evaluation.live import read_live_chip
from harness.models.format import default_model_path, load_model
from harness.models.model import Model
from harness.models.torch_convert import from_torch
from harness.programming.mapping import Layout, map_weights
from harness.virtual.chip import VirtualPCMChip

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "fixtures" / "recordings" / "demo.h5"
SMALL = Geometry(rows=64, cols=160)  # the default digits MLP fits
YEAR_S = 365 * 86400.0


def _pair_conductances(layout: Layout, weights: list[np.ndarray]) -> np.ndarray:
    """Conductances (layout order) whose ``(G+ − G−)/s`` are exactly ``weights`` per layer."""
    g = np.zeros(layout.n_devices)
    for k, (p, w) in enumerate(zip(layout.layers, weights)):
        sl = layout.layer_slice(k)
        gw = (w * p.scale_uS).ravel()
        n = gw.size
        block = np.concatenate([np.maximum(gw, 0.0), np.maximum(-gw, 0.0)])
        assert block.size == sl.stop - sl.start == 2 * n
        g[sl] = block
    return g


# ----------------------------------------------------------------------------- column


def test_column_fit_recovers_gain_and_offset_exactly() -> None:
    rng = np.random.default_rng(0)
    y_t = torch.from_numpy(rng.normal(size=(500, 7)))
    gain = torch.from_numpy(rng.uniform(0.3, 1.5, size=(3, 7)))
    offset = torch.from_numpy(rng.normal(size=(3, 7)))
    y = gain.unsqueeze(1) * y_t.unsqueeze(0) + offset.unsqueeze(1)  # the chip: y = g·y_T + o
    mean = y_t.mean(0)
    a, b = fit_column_affine(y, y_t - mean, mean)
    torch.testing.assert_close(a, 1.0 / gain, rtol=1e-12, atol=0)
    torch.testing.assert_close(b, -offset / gain, rtol=1e-10, atol=1e-12)


def test_column_calibration_recovers_injected_column_gain_and_offset_on_a_noise_free_chip() -> None:
    """One linear layer whose calibration inputs carry a constant feature: a per-column gain
    g_i (rows of G+ − G− scaled) and offset o_i (added on the constant feature's weight) give
    y_i = g_i·y_T,i + o_i exactly; the fitted correction undoes both, and the compensated
    outputs equal the programmed model's (ideal converters, no noise)."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 9)).astype(np.float32)
    net = Model(name="one_layer", architecture=[{"type": "linear", "name": "fc", "in_features": 9, "out_features": 6,
                                                 "bias": True}],
                weights={"fc.weight": w, "fc.bias": rng.normal(size=6).astype(np.float32)},
                input_shape=(9,), n_classes=6, dataset="digits")
    layout = map_weights([("fc", w)], Geometry(rows=16, cols=16))
    x = rng.uniform(0, 1, size=(300, 9)).astype(np.float32)
    x[:, 0] = 1.0  # the constant input: an output offset is a weight on it
    sim = CimSimulator(net, layout, converter_ranges(net, x))
    gain = rng.uniform(0.5, 1.2, size=6)
    offset = rng.normal(scale=0.3, size=6)
    w_chip = gain[:, None] * w
    w_chip[:, 0] += offset
    g = torch.from_numpy(_pair_conductances(layout, [w_chip]).astype(np.float32)).unsqueeze(0)
    method = ColumnCalibration(x)
    corr = method.correction(sim, g, g, None)
    assert corr is not None and corr.gain is not None and corr.offset is not None
    # float32 conductances: the recovered factors carry float32 rounding (1e-5 relative).
    np.testing.assert_allclose(corr.gain[0][0].numpy(), 1.0 / gain, rtol=2e-5)
    np.testing.assert_allclose(corr.offset[0][0].numpy(), -offset / gain, rtol=1e-4, atol=1e-5)
    target = torch.from_numpy(layout.target_uS.astype(np.float32)).unsqueeze(0)
    want = sim.logits(x, target, bits=None)
    plain = sim.logits(x, g, bits=None)
    got = sim.logits(x, g, bits=None, correction=corr)
    assert float((plain - want).abs().max()) > 0.1  # the injected error is visible …
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(want.abs().max()))  # … and removed


def test_column_is_identity_on_an_undrifted_chip() -> None:
    model = load_model(default_model_path())
    layout = map_weights([(a.name, a.weight) for a in model.analog_layers()], SMALL)
    sim = CimSimulator(model, layout, converter_ranges(model))
    target = torch.from_numpy(layout.target_uS.astype(np.float32)).unsqueeze(0)
    corr = ColumnCalibration(calibration_examples(model, 64)).correction(sim, target, target, 4)
    assert corr is not None and corr.gain is not None and corr.offset is not None
    for a, b in zip(corr.gain, corr.offset):
        torch.testing.assert_close(a, torch.ones_like(a), rtol=0, atol=1e-5)
        assert float(b.abs().max()) < 1e-4 * 10  # float32 rounding of sums of ~64 unit terms


# ----------------------------------------------------------------------------- adabs


@pytest.fixture(scope="module")
def bn_model() -> Model:
    """A small digits MLP with batch norm, trained briefly; its running statistics are set to
    the exact statistics of the whole training split (what AdaBS re-estimates)."""
    data = load_dataset("digits")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 24), torch.nn.BatchNorm1d(24), torch.nn.ReLU(),
                              torch.nn.Linear(24, 10))
    x = torch.from_numpy(np.array(data.x_train, dtype=np.float32))
    y = torch.from_numpy(np.array(data.y_train, dtype=np.int64))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        h = net[0](x)
        net[1].running_mean.copy_(h.mean(0))
        net[1].running_var.copy_(h.var(0, unbiased=False))
    net.eval()
    return from_torch(net, (64,), name="digits_bn", dataset="digits")


def _bn_sim(model: Model) -> tuple[CimSimulator, torch.Tensor]:
    layout = map_weights([(a.name, a.weight) for a in model.analog_layers()], Geometry(rows=64, cols=96))
    sim = CimSimulator(model, layout, converter_ranges(model, load_dataset("digits").x_train))
    return sim, torch.from_numpy(layout.target_uS.astype(np.float32)).unsqueeze(0)


def test_adabs_with_the_whole_training_split_on_an_ideal_chip_changes_nothing(bn_model: Model) -> None:
    """No drift, no noise, ideal converters, every training example: the re-estimated statistics
    are the model's own, so the outputs are the float model's (float32 rounding only)."""
    sim, target = _bn_sim(bn_model)
    x_train = load_dataset("digits").x_train
    corr = AdaptiveBatchNorm(x_train).correction(sim, target, target, None)
    assert corr is not None and corr.batchnorm is not None and len(corr.batchnorm) == 1
    x_test = load_dataset("digits").x_test
    plain = sim.logits(x_test, target, bits=None)
    got = sim.logits(x_test, target, bits=None, correction=corr)
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-4 * float(plain.abs().max()))


def test_adabs_without_drift_changes_nothing_beyond_sampling(bn_model: Model) -> None:
    """256 examples: each channel's re-estimated mean lies within 4 standard errors of the
    true one (σ/√256; 24 channels, so a false alarm has probability < 24·6e-5), and the test
    accuracy moves by less than 2 points (measured: 0.3)."""
    sim, target = _bn_sim(bn_model)
    data = load_dataset("digits")
    x_cal = calibration_examples(bn_model, 256, seed=3)
    (mean, var), = sim.batchnorm_statistics(x_cal, target, bits=None)
    bn = bn_model.weights()
    true_mean, true_var = bn["bn1.running_mean"], bn["bn1.running_var"]
    se = np.sqrt(true_var) / np.sqrt(256)
    assert np.all(np.abs(mean[0].numpy() - true_mean) < 4 * se)
    assert np.all(np.abs(var[0].numpy() / true_var - 1) < 4 * np.sqrt(2 / 256) + 0.1)  # kurtosis slack
    corr = AdaptiveBatchNorm(x_cal).correction(sim, target, target, 8)
    before = float(sim.accuracy(data.x_test, data.y_test, target, bits=8)[0])
    after = float(sim.accuracy(data.x_test, data.y_test, target, bits=8, correction=corr)[0])
    assert abs(after - before) < 0.02


def test_adabs_recovers_accuracy_after_a_year_of_drift(bn_model: Model) -> None:
    """On drifted virtual chips at 4 bits AdaBS is not worse than GDC, paired by chip."""
    sim, _ = _bn_sim(bn_model)
    data = load_dataset("digits")
    gdc, ada = [], []
    x_cal = calibration_examples(bn_model, 256)
    for seed in range(4):
        chip = VirtualPCMChip(Geometry(rows=64, cols=96), seed=seed)
        r = read_live_chip(chip, bn_model, (YEAR_S,))
        g = torch.from_numpy(r.g_uS.astype(np.float32))
        ref = torch.from_numpy(r.g_ref_uS.astype(np.float32)).unsqueeze(0)
        gdc.append(float(sim.accuracy(data.x_test, data.y_test, g, bits=4, g_ref_uS=ref)[0]))
        corr = AdaptiveBatchNorm(x_cal).correction(sim, g, ref, 4)
        ada.append(float(sim.accuracy(data.x_test, data.y_test, g, bits=4, correction=corr)[0]))
    assert np.mean(ada) >= np.mean(gdc) - 0.005, (ada, gdc)


def test_adabs_on_a_model_without_batch_norm_names_the_layers() -> None:
    with pytest.raises(EvaluationError, match=r"no batch norm.*after analog layer\(s\) fc1; use gdc or column"):
        make_compensations("gdc,adabs", load_model(default_model_path()))


# ----------------------------------------------------------------------------- gdc and calibration data


def test_gdc_method_is_bit_identical_to_the_gdc_switch() -> None:
    [plain] = [evaluate_recording(DEMO, bits=(8, 4), gdc=True)]
    from harness.evaluation.evaluate import evaluate_recording_compensated

    none, gdc = evaluate_recording_compensated(DEMO, None, make_compensations("none,gdc", plain_model()), bits=(8, 4))
    np.testing.assert_array_equal(gdc.accuracy, plain.accuracy)
    np.testing.assert_array_equal(none.accuracy, evaluate_recording(DEMO, bits=(8, 4), gdc=False).accuracy)
    assert gdc.gdc and not none.gdc and gdc.compensation == "gdc"


def plain_model() -> Model:
    from harness.evaluation.readouts import model_of_recording
    from harness.recording import open_recording

    with open_recording(DEMO) as rec:
        return model_of_recording(rec)


def test_calibration_never_touches_the_test_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """The methods see only the training split: a dataset whose test split cannot be read
    still gives calibration examples (all rows of x_train), and the fitted corrections."""
    real = load_dataset("digits")

    class TrainOnly:
        x_train = real.x_train

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            raise AssertionError(f"calibration read {name}")

    import harness.data

    monkeypatch.setattr(harness.data, "load_dataset", lambda name: TrainOnly())
    model = load_model(default_model_path())
    methods = make_compensations("none,gdc,column", model, calibration_examples_n=100, seed=5)
    x_cal = methods[2].x_cal.numpy()  # type: ignore[attr-defined]
    rows = {r.tobytes() for r in np.asarray(real.x_train, dtype=np.float32)}
    assert all(r.tobytes() in rows for r in x_cal) and len(x_cal) == 100
    layout = map_weights([(a.name, a.weight) for a in model.analog_layers()], SMALL)
    sim = CimSimulator(model, layout, ConverterRanges((("fc1", 1.0), ("fc2", 1.0)), 3.0, "trained"))
    g = torch.from_numpy(layout.target_uS.astype(np.float32)).unsqueeze(0)
    assert methods[2].correction(sim, g * 0.9, g, 4) is not None


def test_unknown_method_and_bad_calibration_size() -> None:
    with pytest.raises(EvaluationError, match="unknown drift compensation 'gcd'; choose from none, gdc, adabs, column"):
        comp.parse_methods("gdc,gcd")
    with pytest.raises(EvaluationError, match="calibration examples 0"):
        make_compensations("column", load_model(default_model_path()), calibration_examples_n=0)


# ----------------------------------------------------------------------------- CLI


def test_cli_compensate_from_a_recording_json_table_and_plot(tmp_path: Path) -> None:
    r = invoke("evaluate", "--recording", str(DEMO), "--times", "25s,1h", "--bits", "4",
               "--compensate", "none,gdc,column", "--calibration-examples", "64", "--json",
               "--png", str(tmp_path / "c.png"))
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["compensate"] == ["none", "gdc", "column"] and out["calibration_examples"] == 64
    assert out["calibration_split"] == "train" and set(out["methods"]) == {"none", "gdc", "column"}
    plain = json.loads(invoke("evaluate", "--recording", str(DEMO), "--times", "25s,1h", "--bits", "4", "--json").stdout)
    assert out["methods"]["gdc"]["accuracy"] == plain["accuracy"]
    assert out["paired_vs_gdc"]["gdc"]["4"]["1h"]["mean"] == 0.0
    # gdc against itself: exactly 0 with a zero-width bootstrap interval; column: an interval
    # around its own paired mean.
    assert out["paired_vs_gdc"]["gdc"]["4"]["1h"]["ci95"] == [0.0, 0.0]
    col = out["paired_vs_gdc"]["column"]["4"]["1h"]
    assert col["ci95"][0] <= col["mean"] <= col["ci95"][1]
    assert (tmp_path / "c.png").stat().st_size > 0
    table = invoke("evaluate", "--recording", str(DEMO), "--times", "1h", "--bits", "4", "--compensate", "gdc,column")
    assert table.exit_code == 0, table.stderr
    assert "column" in table.stdout and "column − gdc (paired" in table.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--compensate", "gdc,magic"), "unknown drift compensation 'magic'"),
        (("--compensate", "adabs"), "has no batch norm: adabs re-estimates batch-norm statistics"),
        (("--compensate", "gdc", "--no-gdc"), "--no-gdc does not combine with --compensate"),
        (("--compensate", "column", "--calibration-examples", "0"), "calibration examples 0 must be in"),
    ],
)
def test_cli_compensate_bad_input_one_line(args: tuple[str, ...], fragment: str) -> None:
    assert_one_line_error(invoke("evaluate", "--recording", str(DEMO), "--times", "1h", *args), fragment)


def test_report_shows_a_comparison(tmp_path: Path) -> None:
    r = invoke("evaluate", "--recording", str(DEMO), "--times", "25s,1h", "--bits", "4", "--compensate", "gdc,column",
               "--calibration-examples", "64", "--json")
    assert r.exit_code == 0, r.stderr
    (tmp_path / "c.json").write_text(r.stdout)
    out = invoke("report", str(tmp_path / "c.json"), "--html", str(tmp_path / "c.html"))
    assert out.exit_code == 0, out.stderr
    html = (tmp_path / "c.html").read_text()
    assert "column 4-bit" in html and "column − gdc 4-bit" in html and "<img" in html


def test_cli_compensate_on_a_live_chip_with_a_named_model() -> None:
    # --model is a repeatable option: the comparison takes the one model given (a list of one
    # once failed inside the model lookup), and several models are refused in one line.
    chip = "virtual?rows=64&cols=160&seed=3"
    r = invoke("evaluate", "--chip", chip, "--runs", "2", "--model", "default", "--times", "1h", "--bits", "4",
               "--compensate", "gdc,column", "--calibration-examples", "32", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["runs"] == 2 and set(out["methods"]) == {"gdc", "column"}
    assert_one_line_error(
        invoke("evaluate", "--chip", chip, "--model", "default", "--model", "default", "--times", "1h",
               "--compensate", "gdc"),
        "--compensate compares methods on one model",
    )
