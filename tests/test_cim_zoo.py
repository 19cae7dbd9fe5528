"""Every zoo model (and a small network using every other layer type) through mapping and the CiM
simulator: ideal CiM = torch, mapping round trip, MAC / MVM hand counts, depthwise utilization."""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from harness.chip.protocol import Geometry
from harness.evaluation.cim import CimSimulator, ConverterRanges, converter_ranges
from harness.programming.mapping import map_weights
from harness.models import get_model, list_models, model_info
from harness.models.model import Model
from harness.models.torch_convert import from_torch
from harness.models.layers import Residual

#: The 90 nm chip's array (the default virtual chip) and the AON-CiM array in devices:
#: 1024 rows × 512 differential columns = 1024 × 1024 devices.
CHIP_90NM = Geometry(rows=512, cols=2048)
AON_CIM = Geometry(rows=1024, cols=1024)
#: MicroNet-KWS-S's dense depthwise blocks (844,032 devices) need a bigger array.
LARGE = Geometry(rows=1024, cols=2048)


def _geometries(name: str) -> tuple[Geometry, ...]:
    return (LARGE,) if name == "micronet-kws-s" else (CHIP_90NM, AON_CIM)


def _randomize_batch_norm(net: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial eval-mode batch-norm statistics so the digital BN is really tested."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=gen) - 0.5)
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.data.copy_(0.2 * torch.rand(c, generator=gen) - 0.1)


def _capture(net: nn.Module, input_shape: tuple[int, ...], seed: int) -> Model:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _randomize_batch_norm(net, gen)
    return from_torch(net.eval(), input_shape, name="t", dataset="none")


def _zoo(name: str, seed: int = 3) -> Model:
    torch.manual_seed(seed)
    return _capture(get_model(name), model_info(name).input_shape, seed)


def _mixed_net() -> nn.Sequential:
    """Every layer type the zoo does not already cover: residual, depthwise conv1d with
    dilation, avgpool1d/2d, ReLU6, Flatten(start_dim=2), nested Sequential, linear bias."""
    return nn.Sequential(OrderedDict(
        stem=nn.Conv2d(2, 6, 3, stride=1, padding=1),
        bn0=nn.BatchNorm2d(6),
        act0=nn.ReLU6(),
        block=Residual(nn.Sequential(OrderedDict(
            expand=nn.Conv2d(6, 12, 3, padding=1, bias=False), bn=nn.BatchNorm2d(12), act=nn.ReLU6(),
            project=nn.Conv2d(12, 6, 1, bias=False),
        ))),
        pool=nn.AvgPool2d(2, stride=2),
        squash=nn.Conv2d(6, 4, (4, 1)),  # (4, 8, 6) -> (4, 5, 6)
        rows=nn.Flatten(start_dim=2),  # (4, 30)
        seq=nn.Sequential(OrderedDict(
            dw=nn.Conv1d(4, 8, 3, padding=2, dilation=2, groups=4, bias=False),
            bn=nn.BatchNorm1d(8),
            act=nn.ReLU(),
        )),
        pool1=nn.AvgPool1d(3, stride=2, padding=1),  # (8, 15)
        gap=nn.AdaptiveAvgPool1d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(8, 3),
    ))


MODELS = sorted(list_models())


@pytest.mark.parametrize("name", MODELS)
def test_ideal_cim_equals_torch_for_every_zoo_model(name: str) -> None:
    model = _zoo(name)
    layout = map_weights([(a.name, a.weight) for a in model.analog_layers()], _geometries(name)[0])
    ranges = ConverterRanges(tuple((a.name, 1.0) for a in model.analog_layers()), 1.0, "test")
    sim = CimSimulator(model, layout, ranges)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(3, *model.input_shape)).astype(np.float32))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: 'same' padding with an even kernel copies the input
        ref = model.to_torch()(x)
    out = sim.logits(x, np.stack([layout.target_uS] * 2), bits=None)
    assert out.shape == (2, 3, model.n_classes)
    # float32 re-association over fan-ins up to ~1000: 1e-4 of the logits' scale.
    torch.testing.assert_close(out, ref.expand_as(out), rtol=0, atol=1e-4 * float(ref.abs().max()))


def test_ideal_cim_equals_torch_on_every_other_layer_type() -> None:
    torch.manual_seed(4)
    model = _capture(_mixed_net(), (2, 8, 6), 4)
    assert {s["type"] for s in model.architecture} >= {"residual", "sequential", "avgpool1d", "avgpool2d"}
    layout = map_weights([(a.name, a.weight) for a in model.analog_layers()], Geometry(rows=64, cols=256))
    x = np.random.default_rng(2).normal(size=(5, 2, 8, 6)).astype(np.float32)
    sim = CimSimulator(model, layout, converter_ranges(model, x))
    with torch.no_grad():
        ref = model.to_torch()(torch.from_numpy(x))
    out = sim.logits(x, layout.target_uS, bits=None)[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    # With 12-bit converters the outputs move, but only by about a converter step.
    coarse = sim.logits(x, layout.target_uS, bits=12)[0]
    assert 0 < float((coarse - ref).abs().max()) < 0.05 * float(ref.abs().max())


def test_chunking_over_sets_and_samples_gives_the_same_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.evaluation import cim

    torch.manual_seed(5)
    model = _capture(_mixed_net(), (2, 8, 6), 5)
    layout = map_weights([(a.name, a.weight) for a in model.analog_layers()], Geometry(rows=64, cols=256))
    x = np.random.default_rng(3).normal(size=(40, 2, 8, 6)).astype(np.float32)
    y = np.random.default_rng(4).integers(0, 3, 40)
    sim = CimSimulator(model, layout, converter_ranges(model, x))
    g = np.stack([layout.target_uS * f for f in (1.0, 0.9, 0.8)])
    whole = sim.accuracy(x, y, g, bits=6, g_ref_uS=layout.target_uS)
    monkeypatch.setattr(cim, "MAX_ACTIVATION_ELEMENTS", 7 * sim._width)  # 7 samples per chunk, 1 set
    torch.testing.assert_close(sim.accuracy(x, y, g, bits=6, g_ref_uS=layout.target_uS), whole, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_mapping_round_trips_weights(name: str) -> None:
    model = _zoo(name)
    dense = [(a.name, a.weight) for a in model.analog_layers()]
    for geometry in _geometries(name):
        layout = map_weights(dense, geometry)
        assert np.unique(layout.cells).size == layout.n_devices == 2 * model.n_array_weights()
        back = layout.to_weights(layout.target_uS)
        for layer_name, w in dense:
            np.testing.assert_allclose(back[layer_name], w, rtol=1e-6, atol=1e-7 * float(np.abs(w).max()))


def test_analognet_kws_counts_match_the_paper() -> None:
    """derived from AnalogNets Table 2 and MicroNets Table 5: 490 + 4·125 + 1 = 991 MVMs; 38.7 M MACs; max 1008 rows, 460 outputs."""
    model = _zoo("analognet-kws")
    layers = model.analog_layers()
    assert [(a.n_mvms, a.weight.shape[1], a.weight.shape[0]) for a in layers] == [
        (490, 40, 84), (125, 756, 112), (125, 1008, 84), (125, 756, 84), (125, 756, 84), (1, 84, 12)
    ]
    assert model.n_mvms() == 991
    hand = 490 * 40 * 84 + 125 * 756 * 112 + 125 * 1008 * 84 + 2 * 125 * 756 * 84 + 84 * 12
    assert model.n_macs() == hand == 38_691_408
    assert max(a.weight.shape[1] for a in layers) == 1008 and sum(a.weight.shape[0] for a in layers) == 460
    # The 90 nm chip (512 rows): the four blocks taller than 512 rows are stored transposed.
    layout = map_weights([(a.name, a.weight) for a in layers], CHIP_90NM)
    assert [p.how for p in layout.layers] == ["normal", "transposed", "transposed", "transposed", "transposed", "normal"]
    assert all(p.how == "normal" for p in map_weights([(a.name, a.weight) for a in layers], AON_CIM).layers)


def test_micronet_depthwise_layers_are_dense_block_diagonal() -> None:
    model = _zoo("micronet-kws-s")
    layers = {a.name: a for a in model.analog_layers()}
    stored = model.weights()
    for name, channels in [("dw2", 84), ("dw3", 112), ("dw4", 84), ("dw5", 84), ("dw6", 84)]:
        a = layers[name]
        assert a.groups == channels and a.weight.shape == (channels, channels * 9)
        assert a.utilization == pytest.approx(1 / channels)
        # Non-zeros of the dense expansion = the stored kernel; each row's 9 sit in its own channel.
        assert np.count_nonzero(a.weight) == stored[f"{name}.weight"].size == channels * 9
        rows, cols = np.nonzero(a.weight)
        np.testing.assert_array_equal(cols // 9, rows)
        assert a.macs * channels == a.array_macs
    assert model.n_mvms() == 490 + 125 * 10 + 1
    hand = 490 * 40 * 84 + 125 * 9 * (84 + 112 + 84 + 84 + 84) + 125 * (84 * 112 + 112 * 84 + 84 * 84 * 2 + 84 * 196) + 196 * 12
    assert model.n_macs() == hand


def test_imec_and_har_counts() -> None:
    imec = _zoo("imec-kws-1d")
    assert [a.n_mvms for a in imec.analog_layers()] == [49] * 8 + [1]
    assert imec.n_macs() == 49 * 39 * 100 + 49 * 300 * 45 + 6 * 49 * 135 * 45 + 45 * 12
    har = _zoo("har-fc")
    assert har.n_mvms() == 3 and har.n_macs() == 561 * 256 + 256 * 128 + 128 * 6
