"""Hardware-aware training parts: quantizers, noise, clipping, shared ADC gain, recipes, resume."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from harness.evaluation.cim import converter_ranges
from harness.data import Dataset
from harness.errors import ConfigError, DatasetError, TrainingError
from harness.models.torch_convert import model_from_torch
from harness.train.engine import TrainOptions, train_model
from harness.train.layers import CLIP_UPDATE_STEPS, HardwareConfig, convert
from harness.train.quant import (
    fake_quantize,
    fake_quantize_reference,
    levels,
    quantize_with_noise,
)
from harness.train.recipes import Recipe, Stage, make_recipe

# -- fixtures: a tiny synthetic task (generated here, no files) ------------------------------


def _task(n_train: int = 240, n_test: int = 120, seed: int = 0) -> Dataset:
    """Three Gaussian blobs in [0, 1]^8 (features clipped), labels 0..2."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, size=(3, 8))
    y = rng.integers(0, 3, size=n_train + n_test).astype(np.int64)
    x = np.clip(centers[y] + 0.15 * rng.normal(size=(y.size, 8)), 0.0, 1.0).astype(np.float32)
    return Dataset(
        x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
        name="blobs", n_classes=3, input_shape=(8,),
    )


def _mlp(seed: int = 0, n_in: int = 8, hidden: int = 16, n_out: int = 3):
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(n_in, hidden), relu1=nn.ReLU(), fc2=nn.Linear(hidden, n_out)))
    return model_from_torch(net, name="tiny", input_shape=(n_in,), n_classes=n_out, dataset="blobs")


@pytest.fixture(scope="module")
def task() -> Dataset:
    return _task()


@pytest.fixture(scope="module")
def tiny():
    return _mlp()


def _same(a, b) -> bool:
    wa, wb = a.weights(), b.weights()
    return wa.keys() == wb.keys() and all(wa[k].tobytes() == wb[k].tobytes() for k in wa)


OPTS = TrainOptions(epochs=2, seed=3, lr=1e-2, batch_size=32, checkpoint_steps=0)


# -- quantizers --------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantizer_forward_is_symmetric_enob_grid(bits: int) -> None:
    r = torch.tensor(1.7)
    x = torch.linspace(-3, 3, 2001)
    q = fake_quantize(x, r, bits)
    n = levels(bits)
    step = 1.7 / n
    codes = q / step
    np.testing.assert_allclose(codes.numpy(), np.round(codes.numpy()), atol=1e-4)  # on the grid
    assert codes.abs().max().item() == pytest.approx(n, abs=1e-4)  # ±n levels, no more
    assert len(np.unique(np.round(codes.numpy()))) == 2 * n + 1
    inside = x.abs() <= 1.7
    assert (q[inside] - x[inside]).abs().max().item() <= step / 2 + 1e-5
    torch.testing.assert_close(q[~inside], torch.sign(x[~inside]) * 1.7)
    torch.testing.assert_close(fake_quantize(-x, r, bits), -q)


@pytest.mark.parametrize("bits", [3, 8])
@pytest.mark.parametrize("p", [1.0, 0.4])
def test_quantizer_gradients_match_closed_forms_and_the_autograd_reference(bits: int, p: float) -> None:
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(4000, generator=gen) * 1.5).requires_grad_(True)
    r = torch.tensor(2.0, requires_grad=True)
    upstream = torch.randn(4000, generator=gen)
    out = quantize_with_noise(x, r, bits, p, torch.Generator().manual_seed(5))
    (out * upstream).sum().backward()
    n = levels(bits)
    s = 2.0 / n
    xd = x.detach()
    quantized = out.detach() != xd if p < 1 else torch.ones_like(xd, dtype=torch.bool)
    codes = torch.round(xd / s)
    inside = codes.abs() <= n
    # dq/dx: 1 inside, 0 outside (straight-through rounding, Jain et al.); 1 where not quantized.
    torch.testing.assert_close(x.grad, torch.where(inside | ~quantized, upstream, torch.zeros_like(upstream)))
    # dq/dr: (round(x/s) − x/s)/n inside, sign(x) outside; 0 where not quantized.
    dr = torch.where(inside, (codes - xd / s) / n, torch.sign(xd)) * quantized
    assert r.grad.item() == pytest.approx(float((dr * upstream).sum()), rel=1e-4, abs=1e-4)
    if p == 1.0:  # the fused node equals the composition of differentiable torch ops
        x2, r2 = xd.clone().requires_grad_(True), torch.tensor(2.0, requires_grad=True)
        ref = fake_quantize_reference(x2, r2, bits)
        (ref * upstream).sum().backward()
        torch.testing.assert_close(out.detach(), ref.detach())
        torch.testing.assert_close(x.grad, x2.grad)
        assert r.grad.item() == pytest.approx(r2.grad.item(), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("bits", [3, 8, 9])
def test_quantizer_forward_is_torch_fake_quantize_bit_for_bit(bits: int) -> None:
    # The vectorised quantizer computes round(x·(1/s)) as torch's per-tensor fake quantizer
    # does, ties (codes k + 0.5) and saturation included.
    n = levels(bits)
    r = torch.tensor(1.37)
    s = 1.37 / n
    gen = torch.Generator().manual_seed(4)
    ties = (torch.arange(-n - 3, n + 3, dtype=torch.float32) + 0.5) * s
    x = torch.cat([torch.randn(20000, generator=gen) * 1.37, ties, torch.tensor([0.0, -0.0, 1.37, -1.37, 50.0, -50.0])])
    expected = torch.fake_quantize_per_tensor_affine(x, 1.37 / n, 0, -n, n)
    assert torch.equal(fake_quantize(x, r, bits), expected)
    xc = x[: 4 * 5 * 100].reshape(4, 5, 10, 10)
    out = quantize_with_noise(xc, r, bits, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(out, torch.where(out == xc, xc, torch.fake_quantize_per_tensor_affine(xc, 1.37 / n, 0, -n, n)))


@pytest.mark.parametrize("first", ["conv", "linear"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_first_layer_dac_range_gradient_by_forward_tangent_equals_the_input_gradient_path(first: str, p: float) -> None:
    # An input without gradient makes the first layer compute ∂L/∂r_DAC as ⟨∂L/∂y, W·∂q/∂r⟩
    # (a forward product) instead of through ∂L/∂q (an input-gradient product): same values,
    # same draws, the same gradients up to float rounding.
    torch.manual_seed(0)
    if first == "conv":
        net = nn.Sequential(nn.Conv2d(1, 6, (3, 2), padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 7, 3))
        x = torch.randn(16, 1, 6, 6)
    else:
        net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        x = torch.randn(16, 8)
    y = torch.randint(0, 3, (16,))
    config = HardwareConfig(clip_sigma=2.5, fixed_clip=True, eta=0.05, bits=4, quant_noise_p=p)
    grads = []
    for needs_input_grad in (False, True):
        hw = convert(net, config, generator=torch.Generator().manual_seed(3))
        hw.init_ranges(x, percentile=99.0)
        hw.train()
        out = hw(x.clone().requires_grad_(needs_input_grad))
        nn.functional.cross_entropy(out, y).backward()
        grads.append((out.detach(), {k: v.grad.clone() for k, v in hw.named_parameters()}))
    (out_a, grad_a), (out_b, grad_b) = grads
    assert torch.equal(out_a, out_b)
    assert grad_a.keys() == grad_b.keys()
    for key in grad_a:
        torch.testing.assert_close(grad_a[key], grad_b[key], rtol=1e-4, atol=1e-7)
    assert float(grad_a["net.0.dac"]) != 0.0


def test_quantizer_range_gradient_matches_finite_differences_where_saturated() -> None:
    # Saturated elements are a smooth function of r (q = ±r): the FD derivative is exact.
    x = torch.tensor([3.0, -4.0, 5.0])
    r = torch.tensor(1.3, requires_grad=True)
    fake_quantize(x, r, 6).sum().backward()
    h = 1e-2  # float32 quantizer: q = ±r to ~1e-7 relative; FD error ~1e-7/h
    fd = (fake_quantize(x, r.detach() + h, 6).sum() - fake_quantize(x, r.detach() - h, 6).sum()) / (2 * h)
    assert r.grad.item() == pytest.approx(fd.item(), rel=1e-4)
    assert r.grad.item() == pytest.approx(1.0)  # sign(3) + sign(−4) + sign(5)


def test_quantization_noise_quantizes_a_fraction_p_of_blocks() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(200, 100) * 2 - 1  # a linear activation: every element is a block
    r = torch.tensor(1.0)
    q = fake_quantize(x, r, 3)
    out = quantize_with_noise(x, r, 3, 0.3, gen)
    differs = q != x
    frac = ((out == q) & differs).float().sum() / differs.float().sum()
    assert torch.equal(out[~differs], x[~differs])
    assert bool(((out == q) | (out == x)).all())
    # Binomial fraction: SE = sqrt(0.3·0.7/N) ≈ 0.0033 for N ≈ 20000; allow 5 SE.
    assert frac.item() == pytest.approx(0.3, abs=5 * math.sqrt(0.21 / 20000))
    # A conv activation (N, C, H, W): whole (sample, channel) maps are quantized or not.
    xc = torch.rand(50, 40, 6, 5) * 2 - 1
    outc = quantize_with_noise(xc, r, 3, 0.3, gen)
    quantized_map = (outc == fake_quantize(xc, r, 3)).flatten(2).all(dim=2)
    untouched_map = (outc == xc).flatten(2).all(dim=2)
    assert bool((quantized_map | untouched_map).all())
    frac_c = quantized_map.float().mean().item()  # N = 2000 blocks: SE ≈ 0.010; allow 5 SE
    assert frac_c == pytest.approx(0.3, abs=5 * math.sqrt(0.21 / 2000))
    assert torch.equal(quantize_with_noise(x, r, 3, 1.0, None), q)
    assert torch.equal(quantize_with_noise(x, r, 3, 0.0, None), x)


# -- weight noise and clipping -------------------------------------------------------------------


def test_weight_noise_has_std_eta_times_wmax_and_is_straight_through() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(200, 100)
    nn.init.normal_(lin.weight, std=0.1)  # Gaussian weights: a 2σ clip bites
    eta = 0.05
    hw = convert(nn.Sequential(lin), HardwareConfig(clip_sigma=2.0, eta=eta), generator=torch.Generator().manual_seed(2))
    layer = next(m for _, m in hw.layers())
    w = layer.inner.weight.detach()
    c = float(layer.clip)
    assert c == pytest.approx(2.0 * float(w.std()), rel=1e-6)
    assert float(layer.weight_max()) == c
    hw.train()
    w_eff = layer.effective_weight()
    delta = (w_eff.detach() - w.clamp(-c, c)).double()
    n = delta.numel()
    # Sample std of n = 20000 normals: relative SE 1/sqrt(2n) = 0.5%; allow 4 SE.
    assert delta.std().item() == pytest.approx(eta * c, rel=4 / math.sqrt(2 * n))
    assert abs(delta.mean().item()) < 4 * eta * c / math.sqrt(n)
    v = torch.randn(w.shape)
    (w_eff * v).sum().backward()
    torch.testing.assert_close(layer.inner.weight.grad, v)  # clip + noise passed straight through
    hw.eval()
    torch.testing.assert_close(layer.effective_weight().detach(), w.clamp(-c, c))  # no noise in eval


def test_stage1_refreshes_clip_every_10_steps_and_stage2_keeps_it_fixed(task) -> None:
    gen = torch.Generator().manual_seed(0)
    hw = convert(_mlp().to_torch(), HardwareConfig(clip_sigma=2.0), generator=gen)
    opt = torch.optim.SGD(hw.weight_parameters(), lr=0.5)
    x, y = torch.tensor(task.x_train[:64]), torch.tensor(task.y_train[:64])

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(hw(x), y).backward()
        opt.step()
        hw.step_done()

    clips = {n: float(m.clip) for n, m in hw.layers()}
    for _ in range(CLIP_UPDATE_STEPS - 1):
        step()
    assert {n: float(m.clip) for n, m in hw.layers()} == clips  # not refreshed before step 10
    step()
    for _, m in hw.layers():
        assert float(m.clip) == pytest.approx(2.0 * float(m.inner.weight.detach().std()), rel=1e-6)
        assert float(m.clip) != clips[_]
    hw.set_config(HardwareConfig(clip_sigma=2.0, fixed_clip=True, eta=0.1, bits=4))
    hw.refresh_clip()
    hw.init_ranges(torch.tensor(task.x_train), percentile=99.9)
    fixed = {n: float(m.clip) for n, m in hw.layers()}
    opt = torch.optim.SGD(hw.weight_parameters(), lr=0.5)
    for _ in range(3 * CLIP_UPDATE_STEPS):
        step()
    assert {n: float(m.clip) for n, m in hw.layers()} == fixed


# -- the shared ADC gain ------------------------------------------------------------------------


def test_shared_gain_constraint_holds_exactly_after_every_step_and_eq6_gradient(task) -> None:
    gen = torch.Generator().manual_seed(0)
    hw = convert(_mlp().to_torch(), HardwareConfig(clip_sigma=2.5, fixed_clip=True, eta=0.05, bits=4), generator=gen)
    hw.init_ranges(torch.tensor(task.x_train), percentile=99.995)
    opt = torch.optim.Adam([{"params": hw.weight_parameters(), "lr": 1e-2}, {"params": hw.range_parameters(), "lr": 5e-2}])
    x, y = torch.tensor(task.x_train[:64]), torch.tensor(task.y_train[:64])
    gain_before = float(hw.gain.detach())
    for _ in range(15):
        opt.zero_grad()
        # Eq. 6: ∂L/∂g = Σ_l ∂L/∂r_ADC,l · sign(g)·|d_l|·W_max,l, checked against autograd.
        captured = {}
        for name, layer in hw.layers():
            r_adc = layer.adc_range()
            r_adc.retain_grad()
            captured[name] = r_adc
            layer.adc_range = (lambda r: (lambda *_: r))(r_adc)  # type: ignore[method-assign]
        nn.functional.cross_entropy(hw(x), y).backward()
        eq6 = sum(
            float(captured[n].grad) * math.copysign(1.0, float(hw.gain.detach())) * float(m.dac.abs()) * float(m.weight_max())
            for n, m in hw.layers()
        )
        assert float(hw.gain.grad) == pytest.approx(eq6, rel=1e-5, abs=1e-9)
        for _, layer in hw.layers():
            del layer.adc_range  # back to the class method
        opt.step()
        hw.step_done()
        g = abs(float(hw.gain))
        for _, layer in hw.layers():
            ratio = float(layer.adc_range()) / (float(layer.dac_range()) * float(layer.weight_max()))
            assert ratio == pytest.approx(g, rel=1e-6)
    assert float(hw.gain) != gain_before  # the gain did learn


def test_trained_model_file_carries_ranges_the_cim_recovers(task, tiny) -> None:
    result = train_model(tiny, task, make_recipe("analognets", eta=0.05, bits=4), OPTS)
    model = result.model
    gain = model.metadata["adc_gain"]
    assert set(model.ranges) == {"fc1", "fc2"}
    ranges = converter_ranges(model)  # no calibration data needed: trained ranges present
    assert ranges.source == "trained"
    assert ranges.adc_norm_range == pytest.approx(gain, rel=1e-5)
    for layer in model.analog_layers():
        stored = model.ranges[layer.name]
        assert ranges.dac(layer.name) == stored.dac_range
        w_max = float(np.abs(layer.weight).max())
        assert w_max <= model.metadata["clip_ranges"][layer.name] * (1 + 1e-6)
        assert ranges.adc(layer.name, w_max) == pytest.approx(stored.adc_range, rel=1e-5)


# -- recipes -------------------------------------------------------------------------------------


def test_training_is_bit_reproducible_under_a_seed(task, tiny) -> None:
    recipe = make_recipe("analognets", eta=0.05, bits=4)
    a = train_model(tiny, task, recipe, OPTS).model
    b = train_model(tiny, task, recipe, OPTS).model
    assert _same(a, b) and a.ranges == b.ranges and a.metadata == b.metadata
    c = train_model(tiny, task, recipe, replace(OPTS, seed=4)).model
    assert not _same(a, c)


def test_hasgd_with_one_sample_is_noise_injection(task, tiny) -> None:
    noise = train_model(tiny, task, make_recipe("noise", eta=0.1), OPTS).model
    hasgd1 = train_model(tiny, task, make_recipe("hasgd", eta=0.1, samples=1), OPTS).model
    hasgd4 = train_model(tiny, task, make_recipe("hasgd", eta=0.1, samples=4), OPTS).model
    assert _same(noise, hasgd1)
    assert not _same(noise, hasgd4)


def test_hasgd_without_noise_is_plain_sgd(task, tiny) -> None:
    plain = train_model(tiny, task, Recipe("plain", (Stage("float", HardwareConfig()),)), OPTS).model
    averaged = train_model(
        tiny, task, Recipe("hasgd0", (Stage("float", HardwareConfig(eta=0.0), perturbations=4),)), OPTS
    ).model
    for key, w in plain.weights().items():
        # The mean of 4 identical gradients equals the gradient up to float32 rounding of the sum.
        np.testing.assert_allclose(averaged.weights()[key], w, rtol=1e-5, atol=1e-6)


def test_baseline_carries_no_ranges_and_uniform_shares_one_range_set(task, tiny) -> None:
    base = train_model(tiny, task, make_recipe("baseline"), OPTS).model
    assert base.ranges == {} and base.metadata["adc_gain"] is None
    uni = train_model(tiny, task, make_recipe("uniform", eta=0.05, bits=4), OPTS).model
    dacs = {r.dac_range for r in uni.ranges.values()}
    clips = set(uni.metadata["clip_ranges"].values())
    assert len(dacs) == 1 and len(clips) == 1
    # One gain, one DAC range, one clip: the ADC ranges differ only through W_max = min(c, max|W_l|)
    # (equal whenever the global clip bites in every layer).
    gain = uni.metadata["adc_gain"]
    for layer in uni.analog_layers():
        r = uni.ranges[layer.name]
        assert r.adc_range == pytest.approx(gain * r.dac_range * float(np.abs(layer.weight).max()), rel=1e-5)


def test_unipolar_uniform_exports_non_negative_weights(task, tiny) -> None:
    uni = train_model(tiny, task, make_recipe("uniform", eta=0.05, bits=4, unipolar=True), OPTS).model
    assert uni.metadata["unipolar_layers"] == ["fc1", "fc2"]
    assert uni.unipolar_layers == ("fc1", "fc2")  # what program / session / evaluate deploy on single devices
    for layer in uni.analog_layers():
        assert layer.weight.min() >= 0.0


def test_unipolar_forward_uses_the_projected_weight_with_a_straight_through_gradient() -> None:
    # Training and the hardware-aware accuracy must see the weights that get deployed (>= 0),
    # not the latent ones: else the reported accuracy says nothing about the chip.
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(fc1=nn.Linear(6, 4)))
    with torch.no_grad():
        net.fc1.weight.copy_(torch.linspace(-1.0, 1.0, 24).reshape(4, 6))
    for unipolar in (False, True):
        hw = convert(net, HardwareConfig(clip_sigma=3.0, unipolar=unipolar))
        layer = hw.net.fc1
        hw.eval()
        w = layer.effective_weight()
        assert (w.min().item() >= 0.0) == unipolar
        torch.testing.assert_close(w.detach(), layer.exported_weight())
        w.sum().backward()  # straight through: every latent weight gets the gradient
        assert torch.all(layer.inner.weight.grad == 1.0)


# -- bad input, checkpoints, resume ------------------------------------------------------------


def test_bad_recipe_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown recipe"):
        make_recipe("magic")
    with pytest.raises(ConfigError, match="eta"):
        make_recipe("noise", eta=-0.1)
    for bits in (1, 17):
        with pytest.raises(ConfigError, match="bits"):
            make_recipe("analognets", bits=bits)
    with pytest.raises(ConfigError, match="unipolar"):
        make_recipe("analognets", unipolar=True)


def test_shape_mismatch_is_a_dataset_error(task) -> None:
    # the one data-meets-model check (harness.data.check_dataset_fits) raises DatasetError
    with pytest.raises(DatasetError, match="shape"):
        train_model(_mlp(n_in=9), task, make_recipe("baseline"), OPTS)
    with pytest.raises(DatasetError, match="classes"):
        train_model(_mlp(n_out=4), task, make_recipe("baseline"), OPTS)


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes_bit_identically_and_loses_only_work_since_checkpoint(tmp_path, task, tiny) -> None:
    recipe = make_recipe("analognets", eta=0.05, bits=4)
    opts = replace(OPTS, checkpoint_steps=3)  # 8 steps per epoch: mid-epoch checkpoints at 3, 6, …
    reference = train_model(tiny, task, recipe, opts).model
    ckpt = tmp_path / "run.ckpt.h5"
    seen = []

    def stop_at(event) -> None:
        seen.append(event["step"])
        if event["stage"] == "stage2" and event["step"] == 11 and event["accuracy"] is None:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_model(tiny, task, recipe, opts, checkpoint_path=ckpt, progress=stop_at)
    assert ckpt.exists()
    resumed = train_model(tiny, task, recipe, opts, checkpoint_path=ckpt, resume=True)
    pos = resumed.resumed_from
    # Interrupted after stage-2 step 11: the last checkpoint was at step 9 (3 · 3) in epoch 2.
    assert pos == {"stage": 1, "epoch": 1, "batch": 1, "started": True, "steps": 9}
    assert _same(resumed.model, reference) and resumed.model.ranges == reference.ranges
    assert resumed.model.metadata == reference.metadata


def test_resume_refuses_other_models_corrupt_files_and_stale_checkpoints(tmp_path, task, tiny) -> None:
    recipe = make_recipe("baseline")
    ckpt = tmp_path / "run.ckpt.h5"

    def stop(event) -> None:
        if event["step"] == 10:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_model(tiny, task, recipe, OPTS, checkpoint_path=ckpt, progress=stop)
    assert ckpt.exists()
    with pytest.raises(TrainingError, match="made for model"):
        train_model(_mlp(seed=5), task, recipe, OPTS, checkpoint_path=ckpt, resume=True)
    with pytest.raises(TrainingError, match="exists"):
        train_model(tiny, task, recipe, OPTS, checkpoint_path=ckpt)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train_model(tiny, task, recipe, OPTS, checkpoint_path=tmp_path / "none.h5", resume=True)
    data = bytearray(ckpt.read_bytes())
    ckpt.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(TrainingError, match="corrupt|not a training checkpoint"):
        train_model(tiny, task, recipe, OPTS, checkpoint_path=ckpt, resume=True)
    ckpt.write_bytes(b"\x00" * 100)
    with pytest.raises(TrainingError, match="corrupt"):
        train_model(tiny, task, recipe, OPTS, checkpoint_path=ckpt, resume=True)


# -- unipolar mapping ----------------------------------------------------------------------------


def test_unipolar_layer_uses_half_the_devices_and_reads_back_its_weights(task, tiny) -> None:
    from harness.chip.protocol import Geometry
    from harness.programming.mapping import map_weights

    uni = train_model(tiny, task, make_recipe("uniform", eta=0.05, bits=4, unipolar=True), OPTS).model
    geometry = Geometry(rows=64, cols=64)
    weights = [(layer.name, layer.weight) for layer in uni.analog_layers()]
    differential = map_weights(weights, geometry)
    single = map_weights(weights, geometry, unipolar=uni.metadata["unipolar_layers"])
    n_weights = sum(w.size for _, w in weights)
    assert differential.n_devices == 2 * n_weights
    assert single.n_devices == n_weights == differential.n_devices // 2
    for i, p in enumerate(single.layers):
        assert p.unipolar and p.n_devices == p.out_features * p.fan_in
        assert single.layer_slice(i).stop - single.layer_slice(i).start == p.out_features * p.fan_in
    assert len(np.unique(single.cells)) == single.n_devices  # no cell used twice
    back = single.to_weights(single.target_uS)
    for name, w in weights:
        np.testing.assert_allclose(back[name], w, rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match="negative"):
        map_weights([("fc1", np.array([[1.0, -0.5]]))], geometry, unipolar=["fc1"])


def test_cim_computes_a_unipolar_layout_like_the_differential_one(task, tiny) -> None:
    from harness.chip.protocol import Geometry
    from harness.evaluation.cim import CimSimulator
    from harness.programming.mapping import map_weights

    uni = train_model(tiny, task, make_recipe("uniform", eta=0.05, bits=4, unipolar=True), OPTS).model
    geometry = Geometry(rows=64, cols=64)
    weights = [(layer.name, layer.weight) for layer in uni.analog_layers()]
    x = np.array(task.x_test[:50])
    out = []
    for layout in (map_weights(weights, geometry), map_weights(weights, geometry, unipolar=["fc1", "fc2"])):
        sim = CimSimulator(uni, layout, converter_ranges(uni))
        g = torch.from_numpy(layout.target_uS[None, :].astype(np.float32))
        out.append(sim.logits(x, g, bits=4, g_ref_uS=g))
    torch.testing.assert_close(out[1], out[0], rtol=1e-4, atol=1e-4)


def test_stage1_alone_then_stage2_from_its_file(task, tiny) -> None:
    recipe = make_recipe("analognets", eta=0.05, bits=4)
    stage1 = train_model(tiny, task, recipe, replace(OPTS, last_stage=0)).model
    assert stage1.ranges == {} and [s["name"] for s in stage1.metadata["stages"]] == ["stage1"]
    for layer in stage1.analog_layers():  # exported clipped to the last ±α·σ_W
        assert np.abs(layer.weight).max() <= stage1.metadata["clip_ranges"][layer.name] * (1 + 1e-6)
    stage2 = train_model(stage1, task, recipe, replace(OPTS, first_stage=1)).model
    assert set(stage2.ranges) == {"fc1", "fc2"} and [s["name"] for s in stage2.metadata["stages"]] == ["stage2"]
    with pytest.raises(ConfigError, match="last stage"):
        train_model(tiny, task, recipe, replace(OPTS, first_stage=1, last_stage=0))
