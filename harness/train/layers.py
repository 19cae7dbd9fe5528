"""Hardware-aware layers: the chip's non-idealities injected into torch conv/linear layers.

In the spirit of Brevitas' quantized layers, the hardware model is a set of parts inside a
layer wrapper, not a fork of the network: :func:`convert` deep-copies any ``nn.Module`` and
swaps every ``nn.Linear``, ``nn.Conv1d`` and ``nn.Conv2d`` for a :class:`HardwareAwareLayer`
that keeps the original layer (its weight and bias) and adds, per AnalogNets §4.2
(AnalogNets §4.2; equation numbers are the paper's):

- **weight clipping** to ``±c`` with ``c = α·σ_W`` (Eq. 2), ``σ_W`` the std of the unclipped
  (latent) weights, refreshed every :data:`CLIP_UPDATE_STEPS` optimizer steps (stage 1) or
  fixed (stage 2); ``W_max`` of Eq. 1 is ``min(c, max|W|)``, the largest deployed weight;
- **weight noise** ``N(0, (η·W_max)²)`` drawn afresh per forward pass (Eq. 1); clipping and
  noise are passed straight through (the paper: "we treat the entire clipping and noise
  injection operation with a straight-through estimator"), so the gradient computed at the
  clipped, noisy weights is applied to the latent weights;
- **DAC** on the layer input and **ADC** on its pre-bias output, symmetric quantizers
  (:func:`~harness.train.quant.fake_quantize`, Eq. 4) with ``b_DAC = b_ADC + 1`` (Eq. 3),
  each with the Fan et al. quantization noise of probability ``p`` in training;
- **one ADC gain shared by all layers** (Eq. 5): the trainable parameters are one ``g`` for
  the whole network and one ``d_l`` per layer; ``r_DAC,l = |d_l|`` and
  ``r_ADC,l = |g| · |d_l| · W_max,l`` (the absolute-value parameterization of Eq. 6), so the
  constraint ``r_ADC,l / (r_DAC,l · W_max,l) = |g|`` holds exactly for every layer at every
  step; autograd gives Eq. 6's gradient of ``g`` (sum over layers of the ADC-range gradient
  times ``sign(g)·|d_l|·W_max,l``).

Biases are digital: never clipped, noised or quantized (added after the ADC, as
:mod:`harness.evaluation.cim` does). ``global_ranges=True`` ties every layer's DAC range and clip bound
to one set (Garcia-Redondo et al.: one global range set for inputs, outputs and weights).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ConfigError
from harness.train.quant import (
    attach_range_gradient,
    check_bits,
    check_converter_levels,
    levels,
    quantize_with_noise,
    quantize_with_range_tangent,
)
from harness.train.weight_quant import (
    check_weight_levels,
    export_weight,
    exported_levels,
    level_codes,
    mse_step,
    quantize_weight,
)

#: AnalogNets §4.2: stage-1 clip ranges follow σ_W, updated every 10 steps.
CLIP_UPDATE_STEPS = 10
#: Layer types the converter swaps (the analog ones).
SUPPORTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class HardwareConfig:
    """What a :class:`HardwareAwareLayer` models in the current training stage.

    Attributes:
        clip_sigma: ``α`` of the clip ``±α·σ_W``; ``None``: no clipping (``W_max = max|W|``).
        fixed_clip: keep the clip bound as it is (stage 2) instead of refreshing it every
            :data:`CLIP_UPDATE_STEPS` steps (stage 1).
        eta: relative weight-noise std ``η`` (0: none).
        bits: ADC bits (the DAC gets ``bits + 1``); ``None``: no converters.
        quant_noise_p: Fan et al. probability that an element is quantized in training.
        global_ranges: one DAC range and one clip bound for all layers (``uniform`` recipe).
        unipolar: the forward pass uses the weights projected to ``>= 0`` (straight through
            to the latent weights, which the recipe's penalty pulls positive) and they are
            exported so (single-device mapping): training and its hardware-aware accuracy see
            the weights that get deployed.
        weight_levels: ``N`` discrete weight levels per layer with a learned per-layer step
            (:mod:`harness.train.weight_quant`; odd ``N`` for signed layers); ``None``: continuous.
        dac_levels, adc_levels: level counts ``2n + 1`` of the DAC and ADC that override the ones
            ``bits`` gives (imec: 7-level activations, 15-level accumulation); need ``bits``.
    """

    clip_sigma: float | None = None
    fixed_clip: bool = False
    eta: float = 0.0
    bits: int | None = None
    quant_noise_p: float = 1.0
    global_ranges: bool = False
    unipolar: bool = False
    weight_levels: int | None = None
    dac_levels: int | None = None
    adc_levels: int | None = None

    def __post_init__(self) -> None:
        if self.clip_sigma is not None and not (math.isfinite(self.clip_sigma) and self.clip_sigma > 0):
            raise ConfigError(f"clip_sigma={self.clip_sigma} must be a finite number > 0 (or None)")
        if not (math.isfinite(self.eta) and self.eta >= 0.0):
            raise ConfigError(f"eta={self.eta} must be a finite number >= 0")
        if self.bits is not None:
            check_bits(self.bits)
        if not 0.0 <= self.quant_noise_p <= 1.0:
            raise ConfigError(f"quant_noise_p={self.quant_noise_p} must be in [0, 1]")
        if self.weight_levels is not None:
            check_weight_levels(self.weight_levels, unipolar=self.unipolar)
        for key in ("dac_levels", "adc_levels"):
            if getattr(self, key) is not None:
                if self.bits is None:
                    raise ConfigError(f"{key} needs converters (a stage with bits)")
                check_converter_levels(getattr(self, key), key)

    def converter_levels(self) -> tuple[int, int]:
        """Positive levels ``(n_DAC, n_ADC)`` of the converters (``bits`` must be set)."""
        assert self.bits is not None
        return _converter_levels(self.bits, self.dac_levels, self.adc_levels)


class HardwareAwareLayer(nn.Module):
    """A Linear/Conv1d/Conv2d with clipping, weight noise, DAC/ADC and the shared ADC gain.

    Not built directly: :func:`convert` creates these and wires the shared parameters.
    ``inner`` is the wrapped layer (it owns ``weight`` and ``bias``); ``dac`` is the layer's
    DAC-range parameter ``d_l`` (shared by every layer under ``global_ranges``); ``gain`` is
    the network's one ADC-gain parameter ``g``; ``clip`` (a buffer) is ``W_max`` when clipping.
    """

    inner: nn.Linear | nn.Conv1d | nn.Conv2d
    clip: torch.Tensor

    def __init__(
        self,
        inner: nn.Linear | nn.Conv1d | nn.Conv2d,
        *,
        gain: nn.Parameter,
        dac: nn.Parameter,
        config: HardwareConfig,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.gain = gain
        self.dac = dac
        self.register_buffer("clip", torch.tensor(math.inf))
        # the learned step of the weight levels (weight_quant); registered by convert(level_steps=True)
        self.level_step: nn.Parameter | None = None
        self.config = config
        self._generator = generator
        self.record: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # calibration capture

    # -- the parts ----------------------------------------------------------------------------
    def weight_max(self) -> torch.Tensor:
        """``W_max`` (Eq. 1–2): the largest deployed ``|W|``, i.e. ``min(c, max|W|)`` with the
        clip bound ``c`` (= ``c`` whenever the clip bites, as the paper assumes), no gradient.
        It is what :mod:`harness.programming.mapping` maps to ``g_max``, so the ranges stored in the
        model file satisfy ``r_ADC = |g|·r_DAC·max|W_deployed|`` exactly for the CiM.
        With weight levels it is the top level's magnitude ``|s|·k_hi``: the mapping scales the
        level set, not the weights that happen to use it, to ``g_max``."""
        if self._levels_on():
            assert self.level_step is not None and self.config.weight_levels is not None
            _, k_hi = level_codes(self.config.weight_levels, unipolar=self.config.unipolar)
            return self.level_step.detach().abs() * k_hi
        w_max = self.inner.weight.detach().abs().max()
        if self.config.clip_sigma is not None:
            w_max = torch.minimum(w_max, self.clip)
        return w_max

    def _levels_on(self) -> bool:
        return self.config.weight_levels is not None and self.level_step is not None

    def effective_weight(self, w_max: torch.Tensor | None = None) -> torch.Tensor:
        """Clipped (+ noisy in training) weight, passed straight through to the latent weight.
        With weight levels: the quantized weight (its own clip at the top level; LSQ gradient
        to the step), plus the weight noise in training."""
        w = self.inner.weight
        if self._levels_on():
            assert self.level_step is not None and self.config.weight_levels is not None
            q = quantize_weight(w, self.level_step, self.config.weight_levels, unipolar=self.config.unipolar)
            if self.training and self.config.eta > 0.0:
                sigma = self.config.eta * (self.weight_max() if w_max is None else w_max)
                q = q + sigma * torch.randn(w.shape, generator=self._generator, dtype=w.dtype)
            return q
        clipping = self.config.clip_sigma is not None
        noisy = self.training and self.config.eta > 0.0
        unipolar = self.config.unipolar
        if not (clipping or noisy or unipolar):
            return w
        if w_max is None:
            w_max = self.weight_max()
        target = w.detach()
        if clipping:
            target = torch.clamp(target, -w_max, w_max)
        if unipolar:  # the forward pass sees the deployed (projected) weight, not the latent one
            target = torch.clamp(target, min=0.0)
        if noisy:
            sigma = self.config.eta * w_max
            target = target + sigma * torch.randn(w.shape, generator=self._generator, dtype=w.dtype)
        return w + (target - w.detach())

    def dac_range(self) -> torch.Tensor:
        return self.dac.abs()

    def adc_range(self, w_max: torch.Tensor | None = None) -> torch.Tensor:
        """``r_ADC,l = |g| · |d_l| · W_max,l`` (Eq. 5 with the Eq. 6 parameterization)."""
        return self.gain.abs() * self.dac.abs() * (self.weight_max() if w_max is None else w_max)

    def _converter(self, x: torch.Tensor, r: torch.Tensor, bits: int, n: int | None = None) -> torch.Tensor:
        p = self.config.quant_noise_p if self.training else 1.0
        return quantize_with_noise(x, r, bits, p, self._generator, n=n)

    def _linear_op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if isinstance(self.inner, nn.Linear):
            return F.linear(x, w)
        return self.inner._conv_forward(x, w, None)

    def _attach_dac_gradient(
        self, y: torch.Tensor, r_dac: torch.Tensor, tangent: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        """``y = W·q(x; r_DAC)`` made differentiable in ``r_DAC`` by the forward product
        ``W·∂q/∂r`` (:func:`~harness.train.quant.quantize_with_range_tangent`), computed only for
        the samples whose tangent is not all zero (under quantization noise, a 1-channel
        input's unquantized samples)."""
        rows = tangent.reshape(tangent.shape[0], -1).any(dim=1).nonzero().reshape(-1)
        if rows.numel() == tangent.shape[0]:
            return attach_range_gradient(y, r_dac, self._linear_op(tangent, w))
        return attach_range_gradient(y, r_dac, self._linear_op(tangent.index_select(0, rows), w), rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.config.bits
        w_max = self.weight_max()
        tangent = None
        if bits is not None:
            n_dac, n_adc = self.config.converter_levels()
            r_dac = self.dac_range()
            if x.requires_grad or not (torch.is_grad_enabled() and r_dac.requires_grad):
                x = self._converter(x, r_dac, bits + 1, n_dac)
            else:  # first analog layer: r_DAC's gradient by a forward product, not an input gradient
                p = self.config.quant_noise_p if self.training else 1.0
                x, tangent = quantize_with_range_tangent(x, r_dac.detach(), bits + 1, p, self._generator, n=n_dac)
        w = self.effective_weight(w_max)
        y = self._linear_op(x, w)
        if tangent is not None:
            y = self._attach_dac_gradient(y, r_dac, tangent, w.detach())
        if self.record is not None:
            self.record.append((x.detach(), y.detach()))
        if bits is not None:
            y = self._converter(y, self.adc_range(w_max), bits, n_adc)
        bias = self.inner.bias
        if bias is not None:
            y = y + bias.view(1, -1, *([1] * (y.dim() - 2)))
        return y

    def exported_weight(self) -> torch.Tensor:
        """The weight that gets deployed: clipped, no noise (projected to >= 0 if unipolar)."""
        with torch.no_grad():
            w = self.inner.weight.detach().clone()
            if self._levels_on():
                assert self.level_step is not None and self.config.weight_levels is not None
                step, n, uni = float(self.level_step.detach()), self.config.weight_levels, self.config.unipolar
                return torch.from_numpy(export_weight(w.numpy(), step, n, unipolar=uni))
            if self.config.clip_sigma is not None and math.isfinite(float(self.clip)):
                w.clamp_(-float(self.clip), float(self.clip))
            if self.config.unipolar:
                w.clamp_(min=0.0)
            return w


class HardwareAwareNet(nn.Module):
    """A converted network: ``net`` (with :class:`HardwareAwareLayer` s), the shared ``gain``,
    the DAC-range parameters, and the noise generator every layer draws from."""

    net: nn.Module

    def __init__(
        self, net: nn.Module, config: HardwareConfig, generator: torch.Generator, *, level_steps: bool = False
    ) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.generator = generator
        self.config = config
        shared_dac = nn.Parameter(torch.tensor(1.0)) if config.global_ranges else None
        self.net = copy.deepcopy(net)
        swapped = 0
        for parent in list(self.net.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, SUPPORTED_LAYERS):
                    dac = shared_dac if shared_dac is not None else nn.Parameter(torch.tensor(1.0))
                    setattr(
                        parent,
                        child_name,
                        HardwareAwareLayer(child, gain=self.gain, dac=dac, config=config, generator=generator),
                    )
                    swapped += 1
        if level_steps:  # one learned weight-level step per layer (weight_quant); trained with the ranges
            for _, layer in self.layers():
                layer.level_step = nn.Parameter(torch.tensor(1.0))
        if swapped == 0:
            raise ConfigError(
                f"{type(net).__name__} has no layer of a supported type "
                f"({', '.join(t.__name__ for t in SUPPORTED_LAYERS)}) to make hardware-aware"
            )
        self._steps = 0
        self.refresh_clip()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def layers(self) -> Iterator[tuple[str, HardwareAwareLayer]]:
        """``(name, layer)`` in module order; ``name`` is the original layer's dotted path."""
        for name, module in self.net.named_modules():
            if isinstance(module, HardwareAwareLayer):
                yield name, module

    def set_config(self, config: HardwareConfig) -> None:
        """Switch every layer to ``config`` (a new stage); the clip bounds stay as they are
        (call :meth:`refresh_clip` to recompute them from the current weights)."""
        if config.global_ranges != self.config.global_ranges:
            raise ConfigError("global_ranges cannot change after conversion")
        if config.weight_levels is not None and not self.has_level_steps:
            raise ConfigError("weight levels need a network converted with level_steps=True")
        self.config = config
        for _, layer in self.layers():
            layer.config = config

    def refresh_clip(self) -> None:
        """``c = α·σ_W`` of the latent weights, per layer (one pooled σ under ``global_ranges``)."""
        alpha = self.config.clip_sigma
        with torch.no_grad():
            if alpha is None:
                for _, layer in self.layers():
                    layer.clip.fill_(math.inf)
                return
            if self.config.global_ranges:
                pooled = torch.cat([m.inner.weight.detach().reshape(-1) for _, m in self.layers()])
                c = alpha * float(pooled.std())
                for _, layer in self.layers():
                    layer.clip.fill_(c)
                return
            for _, layer in self.layers():
                layer.clip.fill_(alpha * float(layer.inner.weight.detach().std()))

    def step_done(self) -> None:
        """Call after every optimizer step: stage 1 refreshes the clip every 10 steps."""
        self._steps += 1
        if not self.config.fixed_clip and self._steps % CLIP_UPDATE_STEPS == 0:
            self.refresh_clip()

    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, value: int) -> None:
        self._steps = int(value)

    @property
    def has_level_steps(self) -> bool:
        return any(layer.level_step is not None for _, layer in self.layers())

    def range_parameters(self) -> list[nn.Parameter]:
        """The converter parameters ``[g, d_1, …]`` (each once), then the weight-level steps
        if the network has them (trained like ranges: relative steps, in stages that train ranges)."""
        seen: dict[int, nn.Parameter] = {id(self.gain): self.gain}
        for _, layer in self.layers():
            seen.setdefault(id(layer.dac), layer.dac)
        for _, layer in self.layers():
            if layer.level_step is not None:
                seen.setdefault(id(layer.level_step), layer.level_step)
        return list(seen.values())

    @torch.no_grad()
    def init_level_steps(self) -> None:
        """Each layer's weight-level step to the least squared error on its current weights
        (clipped to its clip bound; :func:`harness.train.weight_quant.mse_step`)."""
        n = self.config.weight_levels
        if n is None or not self.has_level_steps:
            return
        for _, layer in self.layers():
            assert layer.level_step is not None
            w = layer.inner.weight.detach()
            if math.isfinite(float(layer.clip)):
                w = w.clamp(-float(layer.clip), float(layer.clip))
            layer.level_step.fill_(mse_step(w.numpy(), n, unipolar=self.config.unipolar))

    def learned_levels(self) -> dict[str, tuple[float, ...]]:
        """``{layer: level values}`` the exported weights take (empty without weight levels)."""
        n = self.config.weight_levels
        if n is None or not self.has_level_steps:
            return {}
        out = {}
        for name, layer in self.layers():
            assert layer.level_step is not None
            values, _ = exported_levels(float(layer.level_step.detach()), n, unipolar=self.config.unipolar)
            out[name] = tuple(float(v) for v in values)
        return out

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every other trainable parameter (weights, biases, batch-norm…)."""
        ranges = {id(p) for p in self.range_parameters()}
        return [p for p in self.parameters() if id(p) not in ranges]

    @torch.no_grad()
    def init_ranges(self, x: torch.Tensor, *, percentile: float, bits: int | None = None, batch: int = 1024) -> None:
        """Initialise ``d_l`` and ``g`` from calibration inputs ``x`` (stage 2 starts at the
        evaluation heuristic of Appendix C): ``r_DAC,l`` = the ``percentile`` of ``|input|``,
        and ``|g| = max_l P(|W·x|)_l / (r_DAC,l · W_max,l)`` (no layer's ADC starts narrower
        than its percentile range). Converters are bypassed while measuring.

        With ``bits`` (the ADC bits; the DAC gets one more), the ranges are then narrowed to
        minimise the quantization error at that precision
        (:func:`harness.evaluation.ranges.shared_gain_ranges`, shared with the evaluation):
        each ``r_DAC,l`` to the fraction of its percentile range with the least mean squared
        DAC error, then the shared ``|g|`` to the fraction of its percentile value with the
        least ADC error summed over layers (each layer's error relative to its output's mean
        square). At 4 bits the percentile ranges leave most outputs in the zero bin."""
        from harness.evaluation.ranges import shared_gain_ranges

        saved = self.config
        self.set_config(replace(saved, bits=None, eta=0.0, dac_levels=None, adc_levels=None))
        was_training = self.training
        self.eval()
        layers = list(self.layers())
        for _, layer in layers:
            layer.record = []
        try:
            for start in range(0, x.shape[0], batch):
                self.net(x[start : start + batch])
        finally:
            records = {name: layer.record or [] for name, layer in layers}
            for _, layer in layers:
                layer.record = None
            self.train(was_training)
            self.set_config(saved)
        # One implementation with the evaluation's post-training calibration
        # (harness.evaluation.ranges): the percentile start, then minimum-MSE narrowing.
        dac, gain = shared_gain_ranges(
            {name: np.concatenate([a.reshape(-1).numpy() for a, _ in records[name]]) for name, _ in layers},
            {name: np.concatenate([b.reshape(-1).numpy() for _, b in records[name]]) for name, _ in layers},
            {name: float(layer.weight_max()) for name, layer in layers},
            bits=bits, percentile=percentile, global_dac=self.config.global_ranges,
            **self._converter_level_overrides(saved, bits),
        )
        for name, layer in layers:
            layer.dac.fill_(dac[name])
        self.gain.fill_(gain)

    @staticmethod
    def _converter_level_overrides(config: HardwareConfig, bits: int | None) -> dict[str, int]:
        """``n_dac``/``n_adc`` keywords of :func:`harness.evaluation.ranges.shared_gain_ranges` for
        converter level counts that differ from what ``bits`` gives (none without overrides)."""
        if bits is None or (config.dac_levels is None and config.adc_levels is None):
            return {}
        n_dac, n_adc = _converter_levels(bits, config.dac_levels, config.adc_levels)
        return {"n_dac": n_dac, "n_adc": n_adc}

    def learned_ranges(self) -> dict[str, tuple[float, float]]:
        """``{layer: (r_DAC, r_ADC)}`` as the model file stores them."""
        with torch.no_grad():
            return {name: (float(m.dac_range()), float(m.adc_range())) for name, m in self.layers()}

    def to_plain(self) -> nn.Module:
        """A deep copy of the original network with the exported (clipped) weights."""
        out = copy.deepcopy(self.net)
        for parent in list(out.modules()):
            for child_name, child in list(parent.named_children()):
                if isinstance(child, HardwareAwareLayer):
                    inner = child.inner
                    with torch.no_grad():
                        inner.weight.copy_(child.exported_weight())
                    setattr(parent, child_name, inner)
        return out


def convert(
    net: nn.Module, config: HardwareConfig, *, generator: torch.Generator | None = None, level_steps: bool = False
) -> HardwareAwareNet:
    """A hardware-aware copy of ``net``: every Linear/Conv1d/Conv2d wrapped (``net`` unchanged);
    ``level_steps``: with a weight-level step per layer (for stages with ``weight_levels``).

    Raises:
        ConfigError: ``net`` has no supported layer.
    """
    gen = generator if generator is not None else torch.Generator()
    return HardwareAwareNet(net, config, gen, level_steps=level_steps)


def _converter_levels(bits: int, dac_levels: int | None, adc_levels: int | None) -> tuple[int, int]:
    """Positive levels ``(n_DAC, n_ADC)``: from ``bits`` (DAC ``bits + 1``) unless a count overrides."""
    n_dac = levels(bits + 1) if dac_levels is None else check_converter_levels(dac_levels, "dac_levels")
    n_adc = levels(bits) if adc_levels is None else check_converter_levels(adc_levels, "adc_levels")
    return n_dac, n_adc

