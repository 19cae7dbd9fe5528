"""Stage-2 converter-range initialisation at the target precision (``range_init="mse"``) and the
relative learning rate of the range parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.errors import ConfigError
from harness.train.engine import TrainOptions, _optimizer, _set_lrs
from harness.evaluation.ranges import MSE_FRACTIONS, mse_optimal_fraction
from harness.train.layers import HardwareConfig, convert
from harness.train.recipes import RANGE_LR_START, make_recipe


def _relative_mse(v: np.ndarray, f: float, bits: int) -> float:
    n = 2 ** (bits - 1) - 1
    q = np.clip(np.round(v / (f / n)), -n, n) * (f / n)
    return float(np.mean((q - v) ** 2) / np.mean(v * v))


def test_gaussian_clip_at_4_bits_is_near_the_known_optimum() -> None:
    """For a Gaussian, the MSE-optimal clip of a 4-bit symmetric quantizer (15 levels) is about
    2.5 σ (Banner et al. 2019, ACIQ: 2.55 σ for 16 bins); the grid's spacing is 8 %, and
    200,000 samples pin the error curve far more tightly than that."""
    v = np.random.default_rng(0).standard_normal(200_000)
    unit = 6.0  # values in units of a 6σ range
    clip = mse_optimal_fraction([v / unit], 4) * unit
    assert 2.2 < clip < 2.9


def test_the_chosen_fraction_minimises_the_summed_relative_error_over_the_grid() -> None:
    rng = np.random.default_rng(1)
    groups = [rng.laplace(size=50_000) / 12.0, rng.standard_normal(50_000) / 3.0]
    best = mse_optimal_fraction(groups, 5)
    errors = [sum(_relative_mse(g, f, 5) for g in groups) for f in MSE_FRACTIONS]
    # the refinement between the best grid point's neighbours can only lower the error
    assert sum(_relative_mse(g, best, 5) for g in groups) <= min(errors) * (1 + 1e-12)
    # at high precision nothing is gained by clipping values that fill the range uniformly
    assert mse_optimal_fraction([rng.uniform(-1, 1, 50_000)], 12) == 1.0


def test_mse_init_narrows_the_shared_gain_at_low_bits() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    x = torch.randn(512, 64)
    config = make_recipe("analognets", bits=4).stages[1].hardware
    gains = {}
    for bits in (None, 4):
        hw = convert(net, config)
        hw.refresh_clip()
        hw.init_ranges(x, percentile=99.995, bits=bits)
        gains[bits] = float(hw.gain.detach().abs())
    assert gains[4] < gains[None]  # the percentile range leaves 4-bit outputs in the zero bin


def test_range_init_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="range_init"):
        TrainOptions(epochs=1, seed=0, range_init="median")


def test_range_learning_rates_are_relative_to_each_range() -> None:
    """Each range parameter has its own Adam group whose LR is the schedule times |parameter|."""
    net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    stage = make_recipe("analognets", bits=6).stages[1]
    hw = convert(net, HardwareConfig(clip_sigma=2.5, bits=6))
    with torch.no_grad():
        hw.gain.fill_(-20.0)
        for i, (_, layer) in enumerate(hw.layers()):
            layer.dac.fill_(0.5 * (i + 1))
    opt = _optimizer(hw, stage, 1e-3)
    _set_lrs(opt, stage, 1e-3, 0, 100)
    lrs = [g["lr"] for g in opt.param_groups[1:]]
    assert lrs == pytest.approx([RANGE_LR_START * 20.0, RANGE_LR_START * 0.5, RANGE_LR_START * 1.0])
