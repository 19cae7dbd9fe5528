"""The CiM inference simulator: exactness without non-idealities, each non-ideality's
direction, GDC against a drifted virtual chip, batching, converters and the read-noise law."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.evaluation import cim
from harness.chip.protocol import Geometry
from harness.evaluation.cim import CimSimulator, ConverterRanges, check_bits, converter_ranges, top1_correct
from harness.data import load_dataset
from harness.errors import EvaluationError
from harness.evaluation.live import read_live_chip
from harness.programming.mapping import Layout, map_weights
from harness.models.format import default_model_path, load_model
from harness.models.model import LayerRanges, Model
from harness.virtual import physics as ph
from harness.virtual.chip import VirtualPCMChip

#: The smallest array the default digits MLP fits on (64 rows x 2·(64+10) columns).
SMALL = Geometry(rows=64, cols=160)
YEAR_S = 365 * 86400.0


@pytest.fixture(scope="module")
def model() -> Model:
    return load_model(default_model_path())


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return load_dataset("digits")


@pytest.fixture(scope="module")
def layout(model: Model) -> Layout:
    return map_weights([(a.name, a.weight) for a in model.analog_layers()], SMALL)


@pytest.fixture(scope="module")
def sim(model: Model, layout: Layout) -> CimSimulator:
    return CimSimulator(model, layout, converter_ranges(model))


def _torch_logits(model: Model, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.to_torch()(torch.from_numpy(np.array(x, dtype=np.float32)))


# ----------------------------------------------------------------------------- exactness


def test_ideal_chip_reproduces_digital_outputs(model: Model, layout: Layout, sim: CimSimulator, data) -> None:  # type: ignore[no-untyped-def]
    """Targets read back exactly, ideal converters, no noise: the digital model's outputs."""
    ref = _torch_logits(model, data.x_test)
    out = sim.logits(data.x_test, np.stack([layout.target_uS] * 3), bits=None)
    assert out.shape == (3, len(data.x_test), model.n_classes)
    # float32 re-association only: 1e-5 of the logits' scale.
    assert torch.allclose(out, ref.expand_as(out), rtol=0, atol=1e-5 * float(ref.abs().max()))
    # GDC of an undrifted chip is exactly 1 and changes nothing.
    with_gdc = sim.logits(data.x_test, layout.target_uS, bits=None, g_ref_uS=layout.target_uS)
    assert torch.equal(with_gdc[0], out[0])


def test_high_bitwidth_converters_are_transparent(model: Model, layout: Layout, sim: CimSimulator, data) -> None:  # type: ignore[no-untyped-def]
    """16-bit converters: outputs within a few ADC steps except the rare ones beyond the
    calibrated ranges (99.9th percentile: they saturate, by design), same predictions."""
    ref = _torch_logits(model, data.x_test)
    out = sim.logits(data.x_test, layout.target_uS, bits=16)[0]
    adc_step = max(sim.ranges.adc(p.name, p.weight_max) for p in layout.layers) / (2**15 - 1)
    close = (out - ref).abs() < 20 * adc_step
    assert float(close.float().mean()) > 0.95  # measured 0.97: one clipped hidden unit moves 10 logits
    assert float((out.argmax(1) == ref.argmax(1)).float().mean()) > 0.99


def test_conv_model_matches_torch() -> None:
    """Conv layers run through im2col on the array and reproduce torch's conv2d."""
    rng = np.random.default_rng(3)
    arch = [
        {"type": "conv2d", "name": "c1", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "stride": 1,
         "padding": 1, "bias": True},
        {"type": "relu"},
        {"type": "conv2d", "name": "c2", "in_channels": 4, "out_channels": 3, "kernel_size": [3, 2], "stride": 2,
         "padding": 0, "bias": False},
        {"type": "flatten"},
        {"type": "linear", "name": "fc", "in_features": 3 * 3 * 4, "out_features": 5, "bias": True},
    ]
    weights = {
        "c1.weight": rng.normal(size=(4, 1, 3, 3)), "c1.bias": rng.normal(size=4),
        "c2.weight": rng.normal(size=(3, 4, 3, 2)),
        "fc.weight": rng.normal(size=(5, 36)), "fc.bias": rng.normal(size=5),
    }
    net = Model(name="tiny_cnn", architecture=arch, weights=weights, input_shape=(1, 8, 8), n_classes=5, dataset="digits")
    lay = map_weights([(a.name, a.weight) for a in net.analog_layers()], Geometry(rows=64, cols=64))
    x = rng.uniform(0, 1, size=(7, 1, 8, 8)).astype(np.float32)
    ranges = converter_ranges(net, rng.uniform(0, 1, size=(50, 1, 8, 8)))
    assert ranges.source == "percentile"
    out = CimSimulator(net, lay, ranges).logits(x, np.stack([lay.target_uS] * 2), bits=None)
    ref = _torch_logits(net, x)
    assert torch.allclose(out, ref.expand_as(out), atol=1e-4 * float(ref.abs().max()))


def test_batched_sets_equal_one_at_a_time(sim: CimSimulator, layout: Layout, data, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Many conductance sets in one batch (and in forced chunks) give each set's own result."""
    rng = np.random.default_rng(5)
    g = np.maximum(layout.target_uS * rng.uniform(0.4, 1.1, size=(6, layout.n_devices)), 0.0)
    ref = np.stack([layout.target_uS * 1.02] * 6)
    together = sim.accuracy(data.x_test, data.y_test, g, bits=4, g_ref_uS=ref)
    alone = torch.cat([sim.accuracy(data.x_test, data.y_test, g[i], bits=4, g_ref_uS=ref[i]) for i in range(6)])
    assert torch.equal(together, alone)
    monkeypatch.setattr(cim, "MAX_ACTIVATION_ELEMENTS", 1)  # one set per chunk
    assert torch.equal(sim.accuracy(data.x_test, data.y_test, g, bits=4, g_ref_uS=ref), together)


def test_top1_correct_is_argmax_including_ties() -> None:
    logits = torch.tensor([[[1.0, 3.0, 3.0], [2.0, 2.0, 1.0], [0.0, 0.0, 5.0]]])
    y = torch.tensor([2, 0, 2])
    assert torch.equal(top1_correct(logits, y), logits.argmax(-1) == y)
    rand = torch.randint(0, 4, (5, 40, 6)).float()  # many ties
    labels = torch.randint(0, 6, (40,))
    assert torch.equal(top1_correct(rand, labels), rand.argmax(-1) == labels)


# ----------------------------------------------------------------------------- non-idealities


def test_converter_quantization_alone_lowers_accuracy(sim: CimSimulator, layout: Layout, data) -> None:  # type: ignore[no-untyped-def]
    acc = {b: float(sim.accuracy(data.x_test, data.y_test, layout.target_uS, bits=b)) for b in (None, 8, 4, 3, 2)}
    assert abs(acc[8] - acc[None]) <= 0.01  # 8-bit is nearly transparent for this model
    assert acc[3] < acc[None] - 0.05
    assert acc[2] < acc[3] < acc[4] + 0.005


def test_programming_noise_alone_lowers_accuracy(sim: CimSimulator, layout: Layout, data) -> None:  # type: ignore[no-untyped-def]
    """σ_prog (Nandakumar 2019; Joshi 2020) perturbs the outputs; four times σ_prog costs accuracy clearly.

    20 draws (fixed seed); at 4·σ_prog the measured drop is ~5 points with a std of ~3
    points per draw, so a 2-point margin is > 4 standard errors."""
    tgt = layout.target_uS
    ideal_logits = sim.logits(data.x_test, tgt, bits=None)
    ideal = float(sim.accuracy(data.x_test, data.y_test, tgt, bits=None))
    rng = np.random.default_rng(11)
    z = rng.standard_normal((20, tgt.size))
    sigma = ph.programming_noise_std(tgt / SMALL.g_max_uS)
    errs = []
    for k in (1.0, 2.0, 4.0):
        g = np.maximum(tgt + k * sigma * z, 0.0)
        errs.append(float(((sim.logits(data.x_test, g, bits=None) - ideal_logits) ** 2).mean().sqrt()))
        if k == 1.0:
            assert float(sim.accuracy(data.x_test, data.y_test, g, bits=None).mean()) < ideal + 0.01
        if k == 4.0:
            assert float(sim.accuracy(data.x_test, data.y_test, g, bits=None).mean()) < ideal - 0.02
    assert 0 < errs[0] < errs[1] < errs[2]


def test_drift_alone_lowers_accuracy_and_gdc_restores_it(sim: CimSimulator, layout: Layout, data) -> None:  # type: ignore[no-untyped-def]
    """Drift (per-device ν, Nandakumar 2019; Joshi 2020) without GDC shrinks the outputs under fixed ADC
    ranges and digital biases; at 4 bits a year costs > 20 points, GDC wins most of it back."""
    tgt = layout.target_uS
    nu = ph.draw_drift_exponents(tgt / SMALL.g_max_uS, np.random.default_rng(2))
    g = tgt * ph.drift_factor(YEAR_S, nu)
    fresh = float(sim.accuracy(data.x_test, data.y_test, tgt, bits=4))
    drifted = float(sim.accuracy(data.x_test, data.y_test, g, bits=4))
    compensated = float(sim.accuracy(data.x_test, data.y_test, g, bits=4, g_ref_uS=tgt))
    assert drifted < fresh - 0.2
    assert compensated > drifted + 0.15
    alpha = sim.drift_compensation(g, tgt)
    expected = 1.0 / np.average(ph.drift_factor(YEAR_S, nu), weights=tgt)  # Σ G0 / Σ G(t), roughly
    assert alpha.shape == (1, 2) and np.allclose(alpha.numpy(), expected, rtol=0.1)


def test_read_noise_alone_matches_the_physics_law() -> None:
    """Per-read noise on a one-layer model: output std = sqrt(Σ x² (σ+² + σ−²)) / s with
    σ_read from Nandakumar 2019; Joshi 2020; accuracy-neutral in expectation, fresh on every call."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 16))
    net = Model(
        name="lin", architecture=[{"type": "linear", "name": "fc", "in_features": 16, "out_features": 3, "bias": False}],
        weights={"fc.weight": w}, input_shape=(16,), n_classes=3, dataset="digits",
        ranges={"fc": LayerRanges(1.0, 10.0)},
    )
    lay = map_weights([("fc", w)], Geometry(rows=16, cols=8))
    sim = CimSimulator(net, lay, converter_ranges(net))
    x = rng.uniform(0, 1, size=(4, 16)).astype(np.float32)
    n, t = 4000, 86400.0
    gen = torch.Generator().manual_seed(1)
    out = sim.logits(x, np.stack([lay.target_uS] * n), bits=None, read_noise_t_s=np.full(n, t), generator=gen)
    sigma = ph.read_noise_std(lay.target_uS, lay.target_uS / 25.0, t)
    gp, gn = lay.pair_conductances(sigma**2, 0)
    predicted = np.sqrt((x.astype(np.float64) ** 2) @ (gp + gn).T) / lay.layers[0].scale_uS
    clean = sim.logits(x, lay.target_uS, bits=None)[0]
    assert torch.allclose(out.mean(0), clean, atol=float(4 * predicted.max() / np.sqrt(n)))
    # std of a sample std over n draws is std/sqrt(2n): 5 % is > 4 standard errors.
    assert np.allclose(out.std(0).numpy(), predicted, rtol=0.05)
    kwargs = {"bits": None, "read_noise_t_s": np.full(8, t)}
    first = sim.logits(x, np.stack([lay.target_uS] * 8), generator=torch.Generator().manual_seed(7), **kwargs)
    again = sim.logits(x, np.stack([lay.target_uS] * 8), generator=torch.Generator().manual_seed(7), **kwargs)
    other = sim.logits(x, np.stack([lay.target_uS] * 8), generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # a fresh draw for every read
    with pytest.raises(EvaluationError, match="Generator"):
        sim.logits(x, lay.target_uS, bits=None, read_noise_t_s=[t])


def test_gdc_restores_output_scale_of_a_drifted_virtual_chip(model: Model, data) -> None:  # type: ignore[no-untyped-def]
    """Program a virtual chip, let it drift a year: without GDC the network's output scale
    falls to about (t/t0)^-2ν̄; with GDC it is back within a few percent of right after
    programming. Biases are zeroed so the output scale is the arrays' scale alone."""
    zero = {f"{a.name}.bias": np.zeros_like(a.bias) for a in model.analog_layers() if a.bias is not None}
    net = model.with_weights(zero)
    with VirtualPCMChip(SMALL, seed=4) as chip:
        r = read_live_chip(chip, net, [25.0, YEAR_S])
    sim = CimSimulator(net, r.layout, converter_ranges(net))
    scale = lambda out: float(out.abs().mean())  # noqa: E731
    at_t0 = scale(sim.logits(data.x_test, r.g_ref_uS, bits=None))
    year_raw = scale(sim.logits(data.x_test, r.g_uS[1], bits=None)) / at_t0
    year_gdc = scale(sim.logits(data.x_test, r.g_uS[1], bits=None, g_ref_uS=r.g_ref_uS)) / at_t0
    early_gdc = scale(sim.logits(data.x_test, r.g_uS[0], bits=None, g_ref_uS=r.g_ref_uS)) / at_t0
    assert year_raw < 0.4  # measured 0.24-0.25 over seeds 4-6 (two layers at ~0.5 each)
    assert abs(year_gdc - 1.0) < 0.05
    assert abs(early_gdc - 1.0) < 0.03


# ----------------------------------------------------------------------------- converters


def test_trained_ranges_give_one_shared_adc_gain(model: Model) -> None:
    r = converter_ranges(model)
    assert r.source == "trained"
    wmax = {a.name: float(np.abs(a.weight).max()) for a in model.analog_layers()}
    ratios = [model.ranges[n].adc_range / (model.ranges[n].dac_range * wmax[n]) for n in wmax]
    assert r.adc_norm_range == pytest.approx(max(ratios))
    for n in wmax:  # no layer's ADC covers less than its trained range
        assert r.adc(n, wmax[n]) >= model.ranges[n].adc_range * (1 - 1e-12)
        assert r.dac(n) == model.ranges[n].dac_range


def test_heuristic_ranges_without_trained_ones(model: Model, data) -> None:  # type: ignore[no-untyped-def]
    bare = Model(name="bare", architecture=model.architecture, weights=model.weights(), input_shape=model.input_shape,
                 n_classes=model.n_classes, dataset=model.dataset)
    with pytest.raises(EvaluationError, match="no DAC/ADC ranges"):
        converter_ranges(bare)
    r = converter_ranges(bare, data.x_train)
    assert r.source == "percentile"
    assert r.dac("fc1") == pytest.approx(np.percentile(np.abs(data.x_train), cim.HEURISTIC_RANGE_PERCENTILE))
    with pytest.raises(EvaluationError):
        ConverterRanges((("fc1", 0.0),), 1.0, "trained")


@pytest.mark.parametrize("bad", [0, 1, 17, 8.5, True, "8"])
def test_unknown_bitwidths_are_refused(bad: object) -> None:
    with pytest.raises(EvaluationError, match="bit-width"):
        check_bits(bad)  # type: ignore[arg-type]
    assert check_bits(None) is None and check_bits(np.int64(6)) == 6


def test_layout_model_mismatch_and_bad_shapes(model: Model, layout: Layout, sim: CimSimulator, data) -> None:  # type: ignore[no-untyped-def]
    other = map_weights([("fc1", np.ones((64, 64))), ("fc3", np.ones((10, 64)))], SMALL)
    with pytest.raises(EvaluationError, match="programmed for"):
        CimSimulator(model, other, converter_ranges(model))
    with pytest.raises(EvaluationError, match="layout of"):
        sim.logits(data.x_test, np.ones(10), bits=8)
    with pytest.raises(EvaluationError, match="input shape"):
        sim.logits(np.ones((2, 5)), layout.target_uS, bits=8)
