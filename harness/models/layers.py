"""Small torch modules the zoo needs beyond ``torch.nn`` (kept minimal and plain).

Hardware-aware training swaps ``Conv1d`` / ``Conv2d`` / ``Linear`` children for its own layers;
these wrappers hold their bodies as ordinary child modules so such a swap reaches inside them.
"""

from __future__ import annotations

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
