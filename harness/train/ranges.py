"""Calibrated DAC/ADC ranges of the analog layers (AnalogNets Appendix C in spirit).

Each analog layer's DAC range is a high percentile of ``|input|`` over the calibration
set, its ADC range the same percentile of ``|W·x|`` (the pre-bias MVM result), so that
rare outliers saturate instead of stretching the converter's step for everybody.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from harness.errors import EvaluationError
from harness.models.format import ANALOG_LAYER_TYPES, LayerRanges, Model

#: Percentile of |value| a converter covers (AnalogNets calibrate ranges to clip rare outliers).
DEFAULT_RANGE_PERCENTILE = 99.9


def _robust_range(values: np.ndarray, percentile: float) -> float:
    """The percentile of ``|values|``; if that is 0 (mostly-zero data), the maximum; else 1."""
    mags = np.abs(values.ravel().astype(np.float64))
    for candidate in (np.percentile(mags, percentile), mags.max(initial=0.0)):
        if candidate > 0.0:
            return float(candidate)
    return 1.0  # an all-zero signal: any positive range represents it exactly


def calibrate_ranges(
    model: Model, x: npt.ArrayLike, *, percentile: float = DEFAULT_RANGE_PERCENTILE
) -> dict[str, LayerRanges]:
    """DAC and ADC ranges for every analog layer of ``model`` from calibration inputs ``x``.

    Args:
        model: the float model.
        x: calibration inputs ``(n, *input_shape)`` (the training set).
        percentile: in ``(0, 100]``; which percentile of ``|input|`` / ``|W·x|`` to cover.

    Returns:
        ``{layer name: LayerRanges}`` for every linear/conv layer. For a conv layer the
        input values are the layer's input activations (every patch element is one of
        them) and the MVM outputs are the conv outputs before bias.

    Raises:
        EvaluationError: bad percentile, empty or mis-shaped ``x``.
    """
    if not 0.0 < percentile <= 100.0:
        raise EvaluationError(f"percentile={percentile} must be in (0, 100]")
    xs = np.array(x, dtype=np.float32)  # writable copy: torch.from_numpy needs one
    if xs.shape[0] == 0 or xs.shape[1:] != model.input_shape:
        raise EvaluationError(f"calibration inputs {xs.shape} do not fit input shape {model.input_shape}")
    net = model.to_torch()
    analog = [spec["name"] for spec in model.architecture if spec["type"] in ANALOG_LAYER_TYPES]
    inputs: dict[str, list[np.ndarray]] = {name: [] for name in analog}
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in analog}
    h = torch.from_numpy(xs)
    with torch.no_grad():
        for child_name, child in net.named_children():
            if child_name in analog:
                inputs[child_name].append(h.numpy().copy())
                pre_bias = (
                    nn.functional.linear(h, child.weight)
                    if isinstance(child, nn.Linear)
                    else nn.functional.conv2d(h, child.weight, None, child.stride, child.padding)
                )
                outputs[child_name].append(pre_bias.numpy().copy())
            h = child(h)
    return {
        name: LayerRanges(
            dac_range=_robust_range(np.concatenate(inputs[name]), percentile),
            adc_range=_robust_range(np.concatenate(outputs[name]), percentile),
        )
        for name in analog
    }
