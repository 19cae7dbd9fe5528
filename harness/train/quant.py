"""Differentiable converter models: STE rounding, symmetric ENOB quantizers, quantization noise.

AnalogNets §4.2 Eq. 4 (after Jain et al. 2019, "Trained quantization thresholds"): a
symmetric ``b``-bit quantizer over ``±r`` with ``n = 2^(b−1) − 1`` positive levels is

    q(x; r, b) = s · round(clamp(x, −r, r) / s),    s = r / n,

with ``round`` passed straight through in the backward pass (Bengio et al. 2013). Its
gradients are then, in closed form (what the unit tests check):

- ``∂q/∂x = 1`` inside ``(−r, r)``, ``0`` outside;
- ``∂q/∂r = (round(x/s) − x/s) / n`` inside, ``sign(x)`` outside.

"Quantization noise" (Fan et al. 2020): in training only a random fraction ``p`` of the
elements is quantized per forward pass; the rest pass through unchanged (and give no
gradient to ``r``). ``p = 1`` is plain quantization; evaluation always uses ``p = 1``.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError

#: Supported ADC precisions (the DAC gets one bit more; REFERENCE §7, AnalogNets Eq. 3).
MIN_BITS, MAX_BITS = 2, 16


def check_bits(bits: int) -> int:
    """``bits`` if it is an int in ``MIN_BITS..MAX_BITS``; ConfigError otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits={bits!r} must be an integer in {MIN_BITS}..{MAX_BITS} (e.g. 8, 6, 4)")
    return bits


def levels(bits: int) -> int:
    """Positive levels ``n = 2^(bits−1) − 1`` of a symmetric ``bits``-bit quantizer."""
    return 2 ** (bits - 1) - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def fake_quantize(x: torch.Tensor, r: torch.Tensor, bits: int) -> torch.Tensor:
    """Eq. 4: symmetric ``bits``-bit quantization of ``x`` over ``±r`` (``r`` > 0, a scalar tensor),
    differentiable in ``x`` and ``r`` through the straight-through rounding (closed forms above)."""
    n = levels(bits)
    clamped = torch.minimum(torch.maximum(x, -r), r)
    step = r / n
    return round_ste(clamped / step) * step


def quantization_noise(
    x: torch.Tensor, quantized: torch.Tensor, p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Fan et al. 2020: ``quantized`` on a random fraction ``p`` of the elements, ``x`` elsewhere.

    ``p >= 1`` returns ``quantized`` without drawing (no generator use), ``p <= 0`` returns ``x``.
    """
    if p >= 1.0:
        return quantized
    if p <= 0.0:
        return x
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) < p
    return torch.where(mask, quantized, x)
