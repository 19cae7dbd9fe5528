"""Training recipes by name: which stages run, with which hardware parts and learning rates.

- ``baseline``: plain float training (one stage).
- ``noise``: vanilla noise injection (Joshi et al. 2020): float stage, then a fine-tune with
  weight noise ``η`` and clipping to ``±α·σ_W`` that follows the weights (every 10 steps);
  no converter modelling.
- ``hasgd``: HA-SGD (the HA-SGD poster, Algorithm 1): as ``noise``, but every step's gradient is the
  average over ``L`` independent weight perturbations (``L = 1`` is exactly ``noise``).
- ``analognets``: the full AnalogNets §4.2 method: stage 1 float with clipping refreshed
  every 10 steps; stage 2 from stage 1 with the clip fixed, weight noise, DAC/ADC quantizers
  (learned ranges, one shared ADC gain, quantization noise) and a lower learning rate.
- ``uniform``: Garcia-Redondo et al.: as ``analognets`` but one global range set (DAC range,
  clip bound, hence ADC range) for all layers; with ``unipolar`` a penalty on negative
  weights that ramps up over stage 2, and weights projected to ``>= 0`` in the forward pass
  and on export (the model marks its layers ``unipolar_layers``; they map onto single
  devices, :func:`harness.programming.mapping.map_model`).

The paper's numeric hyper-parameters (stage-2 LR factor, range LRs, gradient-clip
threshold, quantization-noise probability, α) are not legible in our copy of the seed
(the numbers are images); the values below are ours and are recorded in every model file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from harness.errors import ConfigError
from harness.train.layers import HardwareConfig
from harness.train.quant import check_bits

#: Clip ``±α·σ_W`` (ours; Joshi et al. 2020 and AnalogNets use a few σ).
DEFAULT_CLIP_SIGMA = 2.5
#: Stage-2 (fine-tune) learning rate as a fraction of stage 1's.
STAGE2_LR_FACTOR = 0.1
#: Converter-range LR: exponential decay from START to END over stage 2 (Adam).
RANGE_LR_START, RANGE_LR_END = 1e-2, 1e-4
#: Gradient-norm clip on the converter-range parameters.
RANGE_GRAD_CLIP = 0.1
#: Fan et al. quantization-noise probability.
DEFAULT_QUANT_NOISE_P = 0.5
#: HA-SGD perturbations per step.
DEFAULT_HASGD_SAMPLES = 4
#: Final weight of the unipolar penalty ``λ · Σ_l mean(relu(−W_l)²) / mean(W_l²)`` (ramped from 0).
UNIPOLAR_PENALTY = 10.0

RECIPE_NAMES = ("baseline", "noise", "hasgd", "analognets", "uniform")


@dataclass(frozen=True)
class Stage:
    """One training stage.

    Attributes:
        name: shown in progress and metadata.
        hardware: what the layers model in this stage.
        lr_factor: this stage's initial weight LR as a fraction of the run's LR (cosine decay).
        train_ranges: the converter ranges (gain, DAC ranges) are trained (own LR schedule
            and gradient clipping) after being initialised from calibration data.
        perturbations: ``L`` of HA-SGD (gradients averaged over ``L`` noise draws per step).
        unipolar_penalty: final weight of the ramped unipolar penalty (0: none).
    """

    name: str
    hardware: HardwareConfig
    lr_factor: float = 1.0
    train_ranges: bool = False
    perturbations: int = 1
    unipolar_penalty: float = 0.0


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]

    @property
    def trains_converters(self) -> bool:
        return any(s.train_ranges for s in self.stages)


def make_recipe(
    name: str,
    *,
    eta: float = 0.03,
    bits: int = 8,
    clip_sigma: float = DEFAULT_CLIP_SIGMA,
    quant_noise_p: float = DEFAULT_QUANT_NOISE_P,
    samples: int = DEFAULT_HASGD_SAMPLES,
    unipolar: bool = False,
    weight_levels: int | None = None,
    dac_levels: int | None = None,
    adc_levels: int | None = None,
) -> Recipe:
    """The recipe ``name`` with its hyper-parameters.

    ``weight_levels`` (issue 23, :mod:`harness.train.weight_quant`) quantizes the weights to
    ``N`` levels in the recipe's last stage (the stage that trains for deployment; ``baseline``:
    its only stage); ``dac_levels``/``adc_levels`` set the converters' level counts in the
    stages that have converters (``analognets``, ``uniform``).

    Raises:
        ConfigError: unknown name, negative/non-finite ``eta``, ``bits`` outside 2..16,
            ``samples < 1``, ``unipolar`` on a recipe other than ``uniform``, a bad level
            count, converter levels on a recipe without converters.
    """
    if name not in RECIPE_NAMES:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(RECIPE_NAMES)}")
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not math.isfinite(eta) or eta < 0:
        raise ConfigError(f"eta={eta!r} must be a finite number >= 0")
    check_bits(bits)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples={samples!r} (HA-SGD perturbations per step) must be an int >= 1")
    if unipolar and name != "uniform":
        raise ConfigError("--unipolar applies to the 'uniform' recipe only")
    if (dac_levels is not None or adc_levels is not None) and name not in ("analognets", "uniform"):
        raise ConfigError(
            f"--dac-levels/--adc-levels need a recipe with converters (analognets, uniform), not {name!r}"
        )
    recipe = _make_recipe(name, eta, bits, clip_sigma, quant_noise_p, samples, unipolar)
    if weight_levels is None and dac_levels is None and adc_levels is None:
        return recipe
    stages = list(recipe.stages)
    for i, stage in enumerate(stages):
        hw = stage.hardware
        if hw.bits is not None:
            hw = replace(hw, dac_levels=dac_levels, adc_levels=adc_levels)
        if i == len(stages) - 1 and weight_levels is not None:
            hw = replace(hw, weight_levels=weight_levels)
        stages[i] = replace(stage, hardware=hw)
    return Recipe(recipe.name, tuple(stages))


def _make_recipe(
    name: str, eta: float, bits: int, clip_sigma: float, quant_noise_p: float, samples: int, unipolar: bool
) -> Recipe:
    """:func:`make_recipe` without levels (arguments checked there)."""
    plain = Stage("float", HardwareConfig())
    if name == "baseline":
        return Recipe(name, (plain,))
    if name in ("noise", "hasgd"):
        tune = Stage(
            "noise",
            HardwareConfig(clip_sigma=clip_sigma, eta=eta),
            lr_factor=STAGE2_LR_FACTOR,
            perturbations=1 if name == "noise" else samples,
        )
        return Recipe(name, (plain, tune))
    global_ranges = name == "uniform"
    stage1 = Stage("stage1", HardwareConfig(clip_sigma=clip_sigma, global_ranges=global_ranges))
    stage2 = Stage(
        "stage2",
        replace(
            stage1.hardware,
            fixed_clip=True,
            eta=eta,
            bits=bits,
            quant_noise_p=quant_noise_p,
            unipolar=unipolar,
        ),
        lr_factor=STAGE2_LR_FACTOR,
        train_ranges=True,
        unipolar_penalty=UNIPOLAR_PENALTY if unipolar else 0.0,
    )
    return Recipe(name, (stage1, stage2))
