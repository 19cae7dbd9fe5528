"""The hardware-aware forward of progressive chip-in-the-loop fine-tuning (``harness finetune``).

Wan et al., "A compute-in-memory chip based on resistive random-access memory", Nature 608,
504–512 (2022), doi:10.1038/s41586-022-04992-8 (NeuRRAM): after each layer is programmed, its
measured weights replace the float ones and the layers not yet programmed are fine-tuned with a
forward pass that models the chip, so that they learn to absorb the earlier layers' errors.

The forward is ``harness train``'s, not a copy of it: :func:`harness.train.layers.convert` with
the hardware configuration of the ``analognets`` recipe's hardware-aware stage
(:func:`harness.train.recipes.make_recipe`: DAC/ADC at ``bits`` with Fan et al.'s quantization
noise, weight noise ``η·W_max``), with three differences that follow from the chip being
programmed:

- the converter ranges are **pinned**, not trained: ``r_DAC`` per layer and the shared ADC
  gain ``ρ`` come from :class:`harness.evaluation.ranges.ConverterRanges` (the model's trained
  ranges, else the evaluation's minimum-MSE calibration at ``bits`` on training data), so
  ``r_ADC = ρ·r_DAC·W_max`` exactly as ``harness evaluate`` computes it;
- a **programmed** layer's weight is its measured (read-back) weight, frozen, with no weight
  noise (the chip's noise is in the measurement) and no clipping;
- a layer **not yet programmed** is clipped to its largest ``|W|`` at the start of the stage
  (the weight that ``harness program`` maps to ``g_max``: fine-tuning cannot outgrow the
  mapping) and trained with weight noise, as train's stage 2.

Biases and batch norm are digital and always trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.evaluation.ranges import ConverterRanges
from harness.models.model import LayerRanges, Model
from harness.train.layers import HardwareAwareNet, HardwareConfig, convert
from harness.train.recipes import make_recipe

#: ``epoch_done(epoch, epochs, mean_loss)`` after each fine-tuning epoch.
EpochCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class FinetuneHardware:
    """What the fine-tuning forward models: ADC ``bits`` (the DAC gets one more, or the
    model's level counts), weight noise ``eta`` and the pinned converter ``ranges``."""

    bits: int
    eta: float
    ranges: ConverterRanges
    dac_levels: int | None = None
    adc_levels: int | None = None

    def config(self) -> HardwareConfig:
        """The ``analognets`` recipe's hardware-aware stage at these bits (raises ConfigError)."""
        recipe = make_recipe("analognets", eta=self.eta, bits=self.bits, dac_levels=self.dac_levels,
                             adc_levels=self.adc_levels)
        return recipe.stages[-1].hardware


def hardware_net(
    model: Model, hardware: FinetuneHardware, frozen: Mapping[str, np.ndarray], generator: torch.Generator
) -> HardwareAwareNet:
    """``model`` converted for one fine-tuning stage: the layers in ``frozen`` (name → measured
    weight, torch shape) fixed to those weights, every other analog layer trainable with noise."""
    config = hardware.config()
    unipolar = set(model.unipolar_layers)
    hw = convert(model.to_torch(), config, generator=generator)
    names = {name for name, _ in hw.layers()}
    unknown = sorted(set(frozen) - names)
    if unknown:
        raise ConfigError(f"no analog layer {unknown[0]!r} in model {model.name!r}")
    with torch.no_grad():
        hw.gain.fill_(hardware.ranges.adc_norm_range)
        hw.gain.requires_grad_(False)
        for name, layer in hw.layers():
            layer.dac.fill_(hardware.ranges.dac(name))
            layer.dac.requires_grad_(False)
            if name in frozen:
                layer.inner.weight.copy_(torch.from_numpy(np.asarray(frozen[name], dtype=np.float32)))
                layer.inner.weight.requires_grad_(False)
                layer.config = replace(config, eta=0.0, unipolar=name in unipolar)
                layer.clip.fill_(math.inf)
            else:
                layer.config = replace(config, unipolar=name in unipolar)
                layer.clip.fill_(float(layer.inner.weight.detach().abs().max()))
    return hw


def finetune_stage(
    hw: HardwareAwareNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    shuffle: torch.Generator,
    epoch_done: EpochCallback | None = None,
) -> float | None:
    """Train ``hw``'s trainable parameters (Adam, constant ``lr``, cross-entropy, a seeded
    permutation per epoch); returns the last epoch's mean loss (None: nothing to train)."""
    trainable = [p for p in hw.weight_parameters() if p.requires_grad]
    if not trainable or epochs < 1:
        return None
    opt = torch.optim.Adam(trainable, lr=lr)
    hw.train()
    loss_mean: float | None = None
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=shuffle)
        total, n = 0.0, 0
        for s in range(0, x.shape[0], batch_size):
            idx = order[s : s + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(hw(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
            n += idx.shape[0]
        loss_mean = total / max(n, 1)
        if epoch_done:
            epoch_done(epoch + 1, epochs, loss_mean)
    hw.eval()
    return loss_mean


def exported(model: Model, hw: HardwareAwareNet, keep: Mapping[str, np.ndarray]) -> Model:
    """``model`` with ``hw``'s trained parameters (clipped weights, no noise), except the
    weights of the layers in ``keep`` (name → weight), which are set to those."""
    stored = model.weights()
    plain = hw.to_plain().state_dict()
    new = {k: v.detach().numpy() for k, v in plain.items() if k in stored}
    new.update({f"{name}.weight": np.asarray(w, dtype=np.float32) for name, w in keep.items()})
    return model.with_weights(new)


def pinned_ranges(model: Model, ranges: ConverterRanges) -> dict[str, LayerRanges]:
    """The model-file ranges that make ``harness evaluate`` use ``ranges`` for ``model``:
    ``r_ADC = ρ·r_DAC·max|W|`` per layer, so every layer gives the same ``ρ``."""
    out = {}
    for layer in model.analog_layers():
        r_dac = ranges.dac(layer.name)
        out[layer.name] = LayerRanges(dac_range=r_dac, adc_range=ranges.adc(layer.name, float(np.abs(layer.weight).max())))
    return out


__all__ = ["FinetuneHardware", "exported", "finetune_stage", "hardware_net", "pinned_ranges"]
