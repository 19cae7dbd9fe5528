"""Small torch modules the zoo needs beyond ``torch.nn`` (kept minimal and plain).

Hardware-aware training swaps ``Conv1d`` / ``Conv2d`` / ``Linear`` children for its own layers;
these wrappers hold their bodies as ordinary child modules so such a swap reaches inside them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Residual(nn.Module):
    """``y = x + body(x)``: a residual block (inverted bottleneck, fused-MBConv).

    The body must return a tensor of the input's shape; the model format checks this when a
    network is saved (:func:`harness.models.torch_convert.from_torch`).
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ExplicitSamePadding:
    """``padding="same"`` done as an explicit zero pad, then an unpadded convolution.

    torch pads an even kernel's ``'same'`` by making a zero-padded copy of the input itself
    and warns about it ("Using padding='same' with even kernel lengths …") on every call; the
    pad here is the same (``total = dilation·(k−1)``, ``total // 2`` before, the rest after),
    so outputs are identical and the module (its ``padding`` attribute, parameters and
    ``state_dict``) stays an ordinary ``'same'`` convolution for tracing and conversion."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        conv: Any = self
        if conv.padding != "same" or conv.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)  # type: ignore[misc,no-any-return]
        pads: list[int] = []
        for k, d in zip(reversed(conv.kernel_size), reversed(conv.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]  # F.pad order: last dimension first
        x = torch.nn.functional.pad(input, pads)
        f = torch.nn.functional.conv1d if len(conv.kernel_size) == 1 else torch.nn.functional.conv2d
        return f(x, weight, bias, conv.stride, 0, conv.dilation, conv.groups)


class SameConv1d(_ExplicitSamePadding, nn.Conv1d):
    """``nn.Conv1d`` whose ``padding="same"`` pads explicitly (no torch warning; same output)."""


class SameConv2d(_ExplicitSamePadding, nn.Conv2d):
    """``nn.Conv2d`` whose ``padding="same"`` pads explicitly (no torch warning; same output)."""
