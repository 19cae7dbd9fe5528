"""Differentiable converter models: STE rounding, symmetric ENOB quantizers, quantization noise.

AnalogNets §4.2 Eq. 4 (after Jain et al. 2019, "Trained quantization thresholds"): a
symmetric ``b``-bit quantizer over ``±r`` with ``n = 2^(b−1) − 1`` positive levels is

    q(x; r, b) = s · clip(round(x / s), −n, n),    s = r / n,

with ``round`` passed straight through in the backward pass (Bengio et al. 2013). Its
gradients are then, in closed form (what the unit tests check):

- ``∂q/∂x = 1`` inside (``|round(x/s)| ≤ n``, i.e. ``|x| ≲ r + s/2``), ``0`` outside;
- ``∂q/∂r = (round(x/s) − x/s) / n`` inside, ``sign(x)`` outside.

(Jain et al.'s convention: round, then clip the codes; the same forward as clip-then-round.)

"Quantization noise" (Fan et al. 2020): in training only a random fraction ``p`` of the
blocks (one ``(sample, channel)`` slice each) is quantized per forward pass; the rest pass
through unchanged (and give no gradient to ``r``). ``p = 1`` is plain quantization; evaluation always uses ``p = 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.errors import ConfigError

#: Supported ADC precisions (the DAC gets one bit more; AnalogNets §4.2, Eq. 3).
MIN_BITS, MAX_BITS = 2, 16


def check_bits(bits: int) -> int:
    """``bits`` if it is an int in ``MIN_BITS..MAX_BITS``; ConfigError otherwise."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits={bits!r} must be an integer in {MIN_BITS}..{MAX_BITS} (e.g. 8, 6, 4)")
    return bits


def levels(bits: int) -> int:
    """Positive levels ``n = 2^(bits−1) − 1`` of a symmetric ``bits``-bit quantizer."""
    return 2 ** (bits - 1) - 1


def check_converter_levels(count: object, what: str) -> int:
    """Positive levels ``n`` of a symmetric quantizer with ``count = 2n + 1`` levels (odd, >= 3:
    imec's 7-level activations and 15-level accumulation); ConfigError (one line) otherwise."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 3 or count % 2 == 0 or count > 2**MAX_BITS - 1:
        raise ConfigError(
            f"{what}={count!r}: a symmetric converter has an odd number of levels 2n+1 in 3..{2**MAX_BITS - 1} "
            "(e.g. 7 or 15)"
        )
    return (count - 1) // 2


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def _scales(r: torch.Tensor, n: int) -> tuple[float, float]:
    """``(s, 1/s)`` as float32 values (``s = r/n``), rounded as torch's per-tensor fake
    quantizer rounds them (``float(r/n)``, then ``1.0f / s``), so the forward is bit-identical."""
    s = np.float32(float(r) / n)
    return float(s), float(np.float32(1.0) / s)


class _FakeQuantize(torch.autograd.Function):
    """Eq. 4 with quantization noise as one autograd node with closed-form gradients.

    Forward: ``q = s·clip(round(x/s), −n, n)`` (computed as torch's per-tensor fake quantizer
    does, ``round(x · (1/s))`` in float32, half to even — bit-identical to it, but in a few
    vectorised in-place passes instead of its scalar loop) on the blocks where ``keep_x`` is
    False, ``x`` where it is True (quantization noise; None: quantize all).
    Backward (Jain et al. 2019, with ``g`` the upstream gradient):
    ``∂/∂x = g·m`` with the pass mask ``m`` = 1 where the element passed through unquantized
    or is inside (``|round(x/s)| ≤ n``), else 0; and ``∂/∂r = (⟨g, out⟩ − ⟨g·m, x⟩)/r`` — which
    is ``Σ g·(q − x)/r`` over quantized inside elements and ``Σ g·sign(x)`` over saturated
    ones (there ``q = ±r``), two dot products. ``m`` is saved as a float32 0/1 tensor: the
    backward is then one vectorised multiply (a bool mask costs a conversion pass more).
    A handful of passes over the activation instead of the ~20 of composing clamp and
    STE-round in autograd (see benchmarks/train.py)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, r: torch.Tensor, n: int, keep_x: torch.Tensor | None
    ) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        out, pass_grad = _quantize(x, r, n, keep_x, with_mask=needs_grad)
        if needs_grad:
            ctx.save_for_backward(x, r, out, pass_grad)
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (g,) = grads
        x, r, out, pass_grad = ctx.saved_tensors
        grad_x = g * pass_grad
        grad_r = None
        if ctx.needs_input_grad[1]:
            total = torch.dot(g.reshape(-1), out.reshape(-1)) - torch.dot(grad_x.reshape(-1), x.reshape(-1))
            grad_r = (total / float(r)).to(r.dtype).reshape(r.shape)
        return grad_x, grad_r, None, None


def _quantize(
    x: torch.Tensor, r: torch.Tensor, n: int, keep_x: torch.Tensor | None, *, with_mask: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The forward of :class:`_FakeQuantize` (no autograd): ``(out, m)`` with the float32 0/1
    pass mask ``m`` (None unless ``with_mask``)."""
    s, inv_s = _scales(r, n)
    codes = torch.mul(x, inv_s).round_()
    out = codes.clamp(-n, n)
    # Pass mask m = (clamped code == code), written over the codes (a float 0/1 tensor).
    pass_grad = torch.eq(codes, out, out=codes) if with_mask else None
    out.mul_(s)
    if keep_x is not None:  # keep_x broadcasts: whole (sample, channel) blocks
        out = _keep_blocks(out, x, keep_x)
        if pass_grad is not None:
            pass_grad = torch.maximum(pass_grad, keep_x.to(pass_grad.dtype), out=pass_grad)
    return out, pass_grad


def _keep_blocks(out: torch.Tensor, x: torch.Tensor, keep_x: torch.Tensor) -> torch.Tensor:
    """``where(keep_x, x, out)``; for a contiguous ``(N, C, ...)`` activation with one flag per
    ``(sample, channel)`` block, done in place on ``out`` by copying the kept rows of ``x``."""
    blocks = keep_x.numel()
    if x.dim() > 2 and keep_x.shape == x.shape[:2] + (1,) * (x.dim() - 2) and x.is_contiguous():
        rows = keep_x.reshape(-1).nonzero().reshape(-1)
        if rows.numel():
            flat = out.view(blocks, -1)
            flat.index_copy_(0, rows, x.view(blocks, -1).index_select(0, rows))
        return out
    return torch.where(keep_x, x, out)


def fake_quantize(x: torch.Tensor, r: torch.Tensor, bits: int) -> torch.Tensor:
    """Eq. 4: symmetric ``bits``-bit quantization of ``x`` over ``±r`` (``r`` > 0, a scalar tensor),
    differentiable in ``x`` and ``r`` through the straight-through rounding (closed forms above)."""
    return _FakeQuantize.apply(x, r, levels(bits), None)


def fake_quantize_reference(x: torch.Tensor, r: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`fake_quantize` composed from differentiable torch ops (STE round, clip of the
    codes): the reference the fused version is tested against."""
    n = levels(bits)
    step = r / n
    return torch.clamp(round_ste(x / step), -n, n) * step


def _draw_keep(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor | None:
    """The quantization-noise flags of :func:`quantize_with_noise`: True = block passes unquantized
    (one Bernoulli draw per ``(sample, channel)`` block); None when ``p >= 1`` (no draw)."""
    if p >= 1.0:
        return None
    block = tuple(x.shape[:2]) + (1,) * (x.dim() - 2)
    return torch.empty(block, dtype=torch.bool, device=x.device).bernoulli_(1.0 - p, generator=generator)


def quantize_with_noise(
    x: torch.Tensor, r: torch.Tensor, bits: int, p: float, generator: torch.Generator | None, *, n: int | None = None
) -> torch.Tensor:
    """Fan et al. 2020: ``fake_quantize(x)`` on a random fraction ``p`` of blocks, ``x``
    elsewhere; ``p >= 1``: all quantized, no draw; ``p <= 0``: ``x`` unchanged.

    A block is one ``(sample, channel)`` slice — the whole feature map of a channel for a
    conv activation ``(N, C, ...)``, one element for a linear one ``(N, F)`` — as Fan et al.
    drop quantization on blocks, not scalars. One Bernoulli draw per block from
    ``generator``: per-element draws of a conv activation cost more than the rest of the
    quantizer (benchmarks/train.py). ``n`` (positive levels) overrides ``levels(bits)``: a
    quantizer of ``2n + 1`` levels that no bit width gives (imec's 7-level activations: ``n = 3``)."""
    if p <= 0.0:
        return x
    return _FakeQuantize.apply(x, r, levels(bits) if n is None else n, _draw_keep(x, p, generator))


def quantize_with_range_tangent(
    x: torch.Tensor, r: torch.Tensor, bits: int, p: float, generator: torch.Generator | None, *, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(q, ∂q/∂r)`` without autograd, for an input ``x`` that needs no gradient (the first
    analog layer's): ``q`` is exactly :func:`quantize_with_noise`'s value (same draws from
    ``generator``), ``∂q/∂r`` its elementwise range derivative (None where it is zero
    everywhere, ``p <= 0``). Per element ``∂q/∂r = (q − m·x)/r`` — ``(q − x)/r`` inside,
    ``q/r = sign(x)`` saturated, ``0`` unquantized — the terms :class:`_FakeQuantize` sums.

    A linear layer ``y = W·q`` then has ``∂L/∂r = ⟨∂L/∂y, W·(∂q/∂r)⟩`` (:func:`attach_range_gradient`):
    one forward product of the layer instead of its input-gradient product, which the layer
    would otherwise compute only for this scalar (for AnalogNet-KWS's 1-channel conv1 the
    input-gradient convolution costs ~6× its forward)."""
    if p <= 0.0:
        return x, None
    with torch.no_grad():
        n_pos = levels(bits) if n is None else n
        out, pass_grad = _quantize(x, r, n_pos, _draw_keep(x, p, generator), with_mask=True)
        assert pass_grad is not None
        tangent = torch.addcmul(out, pass_grad, x, value=-1.0).div_(float(r))
    return out, tangent


class _AttachRangeGradient(torch.autograd.Function):
    """Identity on ``y``; ``∂L/∂r = ⟨∂L/∂y[rows], y_dir⟩`` with ``y_dir = ∂y[rows]/∂r`` given."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, y: torch.Tensor, r: torch.Tensor, y_dir: torch.Tensor, rows: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(r, y_dir, rows)
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (g,) = grads
        r, y_dir, rows = ctx.saved_tensors
        grad_r = None
        if ctx.needs_input_grad[1]:
            g_rows = g if rows is None else g.index_select(0, rows)
            grad_r = torch.dot(g_rows.reshape(-1), y_dir.reshape(-1)).to(r.dtype).reshape(r.shape)
        return g, grad_r, None, None


def attach_range_gradient(
    y: torch.Tensor, r: torch.Tensor, y_dir: torch.Tensor, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """``y`` (same values), differentiable in ``r`` with ``∂y/∂r = y_dir`` (a tensor like ``y``,
    no gradient of its own): the backward adds ``⟨∂L/∂y, y_dir⟩`` to ``r``'s gradient. With
    ``rows`` (indices along dim 0), ``y_dir`` holds only those samples (the others' are zero)."""
    return _AttachRangeGradient.apply(y, r, y_dir, rows)
